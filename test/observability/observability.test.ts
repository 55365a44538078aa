// Observability and hygiene: Prometheus metrics, request ids (to the client, to Incode, on every log line),
// helmet headers, the OpenAPI document and UI, and a full flow at LOG_LEVEL=trace whose logs carry no secret
// and no personal data.
import request from 'supertest';
import type { EmulatorApp } from '../../src/emulator/app';
import { captureAll, sampleImages } from '../helpers/flow';
import { waitFor } from '../helpers/wait';
import {
  ADMIN_KEY,
  TEST_API_KEY,
  WEBHOOK_CLIENT_ID,
  WEBHOOK_CLIENT_SECRET,
  brokerEnv,
  freePort,
  startBroker,
  startEmulator,
  startSandbox,
  waitForResults,
  type Running,
  webhooksTo,
} from '../helpers/harness';
import { startRecordingProxy, type RecordingProxy } from './recording-proxy';

type Broker = Awaited<ReturnType<typeof startBroker>>;

let emu: Running<EmulatorApp>;
let proxy: RecordingProxy;
let broker: Broker;

const admin = (path: string) => request(broker.url).get(path).set('authorization', `Bearer ${ADMIN_KEY}`);
const ready = (id: string) => waitForResults(broker.url, id);
const logLines = () => broker.logs.lines.map((l) => JSON.parse(l) as Record<string, unknown>);
const basic = `Basic ${Buffer.from(`${WEBHOOK_CLIENT_ID}:${WEBHOOK_CLIENT_SECRET}`).toString('base64')}`;

beforeAll(async () => {
  const port = await freePort();
  emu = await startEmulator({
    processingDelayMs: 50,
    webhook: webhooksTo(`http://127.0.0.1:${port}`),
  });
  proxy = await startRecordingProxy(emu.url);
  broker = await startBroker(brokerEnv(proxy.url, { LOG_LEVEL: 'trace', RESULTS_MODE: 'both', CIRCUIT_FAILURE_THRESHOLD: '50', INCODE_ALLOWED_CONFIGURATION_IDS: 'flow-resume-a' }), {}, port);
});
afterAll(async () => {
  emu?.app.emulator.resetFaults();
  await broker?.close();
  await proxy?.close();
  await emu?.close();
});

describe('request ids', () => {
  it('echoes a client x-request-id, sends it on to Incode, and replaces an unsafe one', async () => {
    const res = await request(broker.url).post('/session').set('x-request-id', 'client-req-0001').send({}).expect(200);
    expect(res.headers['x-request-id']).toBe('client-req-0001');
    const starts = proxy.records.filter((r) => r.path.endsWith('/omni/start'));
    expect(starts[starts.length - 1].headers['x-request-id']).toBe('client-req-0001');

    const bad = await request(broker.url).post('/session').set('x-request-id', 'has spaces and "quotes"').send({}).expect(200);
    expect(bad.headers['x-request-id']).toMatch(/^[0-9a-f-]{36}$/);
    const last = proxy.records.filter((r) => r.path.endsWith('/omni/start')).pop()!;
    expect(last.headers['x-request-id']).toBe(bad.headers['x-request-id']);
    const long = await request(broker.url).get('/healthz').set('x-request-id', 'a'.repeat(200)).expect(200);
    expect(long.headers['x-request-id']).toMatch(/^[0-9a-f-]{36}$/);
    // A result job's form (job-<n>) is the jobs' own: a request cannot pass itself off as one.
    const jobLike = await request(broker.url).get('/healthz').set('x-request-id', 'Job-42').expect(200);
    expect(jobLike.headers['x-request-id']).toMatch(/^[0-9a-f-]{36}$/);
    // Without one, a fresh id per request.
    const a = await request(broker.url).get('/healthz');
    const b = await request(broker.url).get('/healthz');
    expect(a.headers['x-request-id']).toBeTruthy();
    expect(a.headers['x-request-id']).not.toBe(b.headers['x-request-id']);
    // Error bodies carry the same id.
    const nf = await request(broker.url).get('/nope').set('x-request-id', 'client-req-404').expect(404);
    expect(nf.body.requestId).toBe('client-req-404');
  });

  it('sends the request id on every Incode call of a server-side onboarding, the background wait included', async () => {
    const before = proxy.records.length;
    const onb = await request(broker.url)
      .post('/onboardings')
      .set('authorization', `Bearer ${ADMIN_KEY}`)
      .set('x-request-id', 'client-onb-0001')
      .send({ front: sampleImages().front, back: sampleImages().back, selfie: sampleImages().selfie })
      .expect(202);
    await ready(onb.body.interviewId);
    // Nothing else starts or captures meanwhile, so every such call is this onboarding's, and each must carry its id.
    const captures = proxy.records.slice(before).filter((r) => /^\/omni\/(start|add\/|process\/)/.test(r.path));
    expect(captures.map((r) => [r.path.split('?')[0], r.headers['x-request-id']])).toEqual(
      ['/omni/start', '/omni/add/front-id/v2', '/omni/add/back-id/v2', '/omni/process/id', '/omni/add/face/third-party', '/omni/process/face'].map((p) => [p, 'client-onb-0001']),
    );
    const calls = proxy.records.slice(before).filter((r) => r.headers['x-request-id'] === 'client-onb-0001').map((r) => r.path.split('?')[0]);
    // The status polls after the 202 belong to the same request: an operator follows the session to Incode by its id.
    expect(calls).toContain('/omni/get/onboarding/status');
  });

  it('sends the request id to Incode from every other route that calls it', async () => {
    const sent = (id: string) => proxy.records.filter((r) => r.headers['x-request-id'] === id).map((r) => r.path.split('?')[0]);
    const s = (await request(broker.url).post('/session').set('x-request-id', 'rid-start').send({}).expect(200)).body;
    expect(sent('rid-start')).toEqual(['/omni/start']);
    const resumed = (await request(broker.url).post('/session/resume').set('x-request-id', 'rid-resume').send({ resumeToken: s.resumeToken }).expect(200)).body;
    expect(sent('rid-resume')).toEqual(['/omni/start']);
    // The resumed token replaced the first one (the same string only when both were minted within one second).
    await request(broker.url).get('/session/onboarding-url').set('x-request-id', 'rid-url').set('x-incode-hardware-id', resumed.token).expect(200);
    expect(sent('rid-url')).toEqual(['/omni/onboarding-url']);
    // This broker's first readiness check (later ones within 5 s reuse its answer) probes Incode.
    await request(broker.url).get('/readyz').set('x-request-id', 'rid-ready');
    expect(sent('rid-ready')).toEqual(['/omni/get/onboarding/status']);
    // Timed like every Incode call: a 401 (no session token) is its answer when the key is taken.
    const metrics = (await request(broker.url).get('/metrics')).text;
    expect(metrics).toMatch(/^incode_call_duration_seconds_count\{operation="readinessProbe",outcome="http_401"\} 1$/m);
  });

  it("a resume's start names the session's own flow (configurationId), as its first start did", async () => {
    const s = (await request(broker.url).post('/session').set('x-request-id', 'rid-flow-1').send({ configurationId: 'flow-resume-a' }).expect(200)).body;
    await request(broker.url).post('/session/resume').set('x-request-id', 'rid-flow-2').send({ resumeToken: s.resumeToken }).expect(200);
    const bodies = (id: string) => proxy.records.filter((r) => r.headers['x-request-id'] === id && r.path === '/omni/start').map((r) => JSON.parse(r.body) as Record<string, unknown>);
    expect(bodies('rid-flow-1')).toEqual([expect.objectContaining({ configurationId: 'flow-resume-a' })]);
    expect(bodies('rid-flow-2')).toEqual([{ interviewId: s.interviewId, configurationId: 'flow-resume-a' }]);
  });

  it("names the job on the Incode calls of the results pipeline (job-<id>), so Incode's logs lead back to it", async () => {
    const before = proxy.records.length;
    const s = (await request(broker.url).post('/session').send({}).expect(200)).body;
    await captureAll(`${emu.url}/0/`, s.token);
    await ready(s.interviewId);
    const jobs = await broker.app.store.listJobs(s.interviewId);
    const reads = proxy.records.slice(before).filter((r) => /^\/omni\/get\/(score|ocr-data)/.test(r.path) && r.path.includes(s.interviewId));
    expect(reads.length).toBeGreaterThanOrEqual(2);
    const named = new Set(jobs.map((j) => `job-${j.id}`));
    for (const r of reads) expect(named.has(String(r.headers['x-request-id']))).toBe(true);
    // The job's own log lines carry that id too, not only the worker's: "results stored" is the pipeline's.
    const stored = await waitFor(() => logLines().find((l) => l.msg === 'results stored' && l.interviewId === s.interviewId) ?? null);
    expect(named.has(String(stored.reqId))).toBe(true);
  });

  it('names the job on the executive login it makes to read a session started elsewhere', async () => {
    broker.app.executiveTokens.invalidate();
    const before = proxy.records.length;
    // Started at Incode directly (not through this broker): the webhook's job reads it with an executive token.
    const res = await fetch(`${emu.url}/omni/start`, { method: 'POST', headers: { 'content-type': 'application/json', 'x-api-key': TEST_API_KEY, 'api-version': '1.0' }, body: '{}' });
    const started = (await res.json()) as { token: string; interviewId: string };
    await captureAll(`${emu.url}/0/`, started.token);
    await ready(started.interviewId);
    const logins = proxy.records.slice(before).filter((r) => r.path.startsWith('/executive/log-in'));
    expect(logins.length).toBeGreaterThanOrEqual(1);
    // Whichever job needed it first names the shared login.
    for (const l of logins) expect(String(l.headers['x-request-id'])).toMatch(/^job-\S+$/);
  });

  it('puts the reqId on every log line of a request, including failures', async () => {
    await request(broker.url).post('/session').set('x-request-id', 'log-req-ok').send({}).expect(200);
    emu.app.emulator.setFaults({ errorRate: 1 });
    await request(broker.url).post('/session').set('x-request-id', 'log-req-fail').send({}).expect(502);
    emu.app.emulator.resetFaults();
    await request(broker.url).post('/session').set('x-request-id', 'log-req-400').send({ countryCode: 1 }).expect(400);
    const lines = logLines();
    for (const id of ['log-req-ok', 'log-req-fail', 'log-req-400']) {
      const mine = lines.filter((l) => l.reqId === id).map((l) => l.msg);
      // One access line per request (Fastify's own pair or the broker's single line), with its reqId.
      expect(mine).toContain('request completed');
    }
    expect(lines.filter((l) => l.reqId === 'log-req-fail').map((l) => l.msg)).toContain('request failed');
    expect(lines.filter((l) => l.reqId === 'log-req-400').map((l) => l.msg)).toContain('request refused');
    // Every request-scoped line (it has req/res or an error of a request) names its request.
    const scoped = lines.filter((l) => 'req' in l || 'res' in l || ['request failed', 'request refused', 'webhook recorded', 'session erased'].includes(String(l.msg)));
    expect(scoped.length).toBeGreaterThan(10);
    for (const l of scoped) expect(typeof l.reqId).toBe('string');
  });
});

describe('log redaction', () => {
  it('never writes headers logged under req: the serializer keeps method, path and address only', async () => {
    broker.app.log.info(
      { req: { method: 'GET', url: '/x?token=leak-me-0', ip: '10.0.0.7', headers: { authorization: 'Bearer leak-me-1', 'x-app-key': 'leak-me-2' } } },
      'redaction probe',
    );
    const line = logLines().find((l) => l.msg === 'redaction probe');
    expect(line?.req).toEqual({ method: 'GET', url: '/x', remoteAddress: '10.0.0.7' });
    expect(JSON.stringify(logLines())).not.toContain('leak-me');
  });
});

describe('HTTP hygiene', () => {
  it('sends helmet security headers on API responses and no x-powered-by', async () => {
    for (const res of [await request(broker.url).post('/session').send({}), await request(broker.url).get('/healthz'), await request(broker.url).get('/nope')]) {
      expect(res.headers['x-content-type-options']).toBe('nosniff');
      expect(res.headers['x-frame-options']).toBe('DENY');
      expect(res.headers['strict-transport-security']).toMatch(/max-age=\d+/);
      expect(res.headers['referrer-policy']).toBe('no-referrer');
      expect(res.headers['x-dns-prefetch-control']).toBe('off');
      expect(res.headers['cross-origin-opener-policy']).toBe('same-origin');
      expect(res.headers['x-powered-by']).toBeUndefined();
    }
    // Results are never cached by intermediaries.
    expect((await admin('/sessions')).headers['cache-control']).toBe('no-store');
  });

  it('serves the OpenAPI document listing the routes, and an HTML UI at /docs', async () => {
    const doc = await request(broker.url).get('/docs/json').expect(200);
    expect(doc.body.openapi).toMatch(/^3\./);
    // The shared error body under its own name, which generated clients name their type after (not def-0).
    expect(doc.body.components.schemas).toHaveProperty('ErrorBody');
    expect(JSON.stringify(doc.body.paths['/session'].post.responses['400'])).toContain('#/components/schemas/ErrorBody');
    expect(Object.keys(doc.body.paths)).toEqual(
      expect.arrayContaining(['/session', '/session/resume', '/session/status', '/webhooks/incode', '/webhooks/incode/token', '/sessions', '/sessions/{interviewId}', '/sessions/{interviewId}/refresh', '/onboardings', '/healthz', '/readyz']),
    );
    expect(doc.body.paths['/session'].post.responses).toHaveProperty('429');
    // The customer callbacks: their bodies as named schemas, and how they are signed (the tests of the callbacks check
    // every body sent against these).
    expect(doc.body['x-webhooks']['session.results_ready'].post.requestBody.content['application/json'].schema).toEqual({ $ref: '#/components/schemas/ResultsReadyEvent' });
    expect(doc.body['x-webhooks']['session.results_failed'].post.parameters.map((h: { name: string }) => h.name)).toEqual(['webhook-id', 'webhook-timestamp', 'webhook-signature']);
    expect(doc.body.components.schemas.ResultsFailedEvent.properties.data.required).toEqual(expect.arrayContaining(['interviewId', 'code', 'updatedAt']));
    // OpenAPI 3.0 has neither `const` nor a null type (it has enum and nullable): none anywhere, callbacks included.
    expect(JSON.stringify(doc.body)).not.toMatch(/"const":|"type":"null"/);
    const ui = await request(broker.url).get('/docs').redirects(3).expect(200);
    expect(ui.headers['content-type']).toMatch(/text\/html/);
    expect(ui.text).toMatch(/swagger/i);
  });
});

describe('the OpenAPI document', () => {
  it('says how each route authenticates, the statuses it can give, and that POST /session may have no body', async () => {
    const b = await startSandbox({ CALLER_AUTH: 'app-keys', APP_API_KEYS: 'app-key-0123456789abcdefghijkl', WEBHOOK_SECRET: 'webhook-secret-0123456789abcdef' });
    try {
      const doc = (await request(b.url).get('/docs/json').expect(200)).body;
      const schemes = doc.components.securitySchemes;
      expect(schemes.appKey).toMatchObject({ type: 'apiKey', in: 'header', name: 'x-app-key' });
      expect(schemes.sessionToken).toMatchObject({ type: 'apiKey', in: 'header', name: 'x-incode-hardware-id' });
      const op = (path: string, method: string) => doc.paths[path][method];
      // The scrape is listed (open without METRICS_TOKENS: no 401, no scheme); the sandbox's emulator (Incode's API, not
      // this service's) is not.
      expect(Object.keys(op('/metrics', 'get').responses)).toContain('200');
      expect(Object.keys(op('/metrics', 'get').responses)).not.toContain('401');
      expect(op('/metrics', 'get').security).toBeUndefined();
      expect(Object.keys(doc.paths).filter((p) => p.startsWith('/sandbox/'))).toEqual([]);
      expect(op('/session', 'post').security).toEqual([{ appKey: [] }]);
      expect(op('/session/resume', 'post').security).toEqual([{ appKey: [] }]);
      expect(op('/session/status', 'get').security).toEqual([{ sessionToken: [] }]);
      expect(op('/sessions', 'get').security).toEqual([{ serviceKey: [] }]);
      expect(op('/webhooks/incode/token', 'post').security).toEqual([{ webhookClient: [] }]);
      expect(op('/webhooks/incode', 'post').security).toEqual(expect.arrayContaining([{ webhookSecret: [] }]));
      // The session token is the security scheme's header, not also a parameter.
      expect((op('/session/status', 'get').parameters ?? []).map((p: { name: string }) => p.name)).not.toContain('x-incode-hardware-id');
      expect(op('/session', 'post').requestBody.required).toBe(false);
      expect(op('/session/resume', 'post').requestBody.required).toBe(true);
      const statuses = (path: string, method: string) => Object.keys(op(path, method).responses);
      // Rate limits are on the session routes and the token endpoint only; 413 only where a body is read.
      expect(statuses('/session', 'post')).toEqual(expect.arrayContaining(['200', '413', '429', '502', '504']));
      expect(statuses('/onboardings', 'post')).toEqual(expect.arrayContaining(['202', '413', '422']));
      expect(statuses('/onboardings', 'post')).not.toContain('429');
      expect(statuses('/sessions', 'get')).toEqual(expect.arrayContaining(['200', '400', '401', '415', '500', '503']));
      expect(statuses('/sessions', 'get')).not.toContain('413');
      expect(statuses('/sessions', 'get')).not.toContain('429');
      expect(statuses('/healthz', 'get')).toEqual(expect.arrayContaining(['200', '400', '415', '500', '503']));
      expect(statuses('/sessions/{interviewId}', 'get')).toEqual(expect.arrayContaining(['200', '404', '414']));
      expect(statuses('/webhooks/incode', 'post')).toEqual(expect.arrayContaining(['200', '401', '408', '413']));
    } finally {
      await b.close();
    }
    // Without caller authentication POST /session names no scheme: it is open.
    const open = await startSandbox();
    try {
      expect((await request(open.url).get('/docs/json').expect(200)).body.paths['/session'].post.security).toBeUndefined();
    } finally {
      await open.close();
    }
  });
});

describe('the OpenAPI document, for generated clients', () => {
  it('describes every response and its headers, /metrics as text behind its token, and the bodies as sent', async () => {
    const b = await startSandbox({ METRICS_TOKENS: 'metrics-token-0123456789abcdefghij', WEBHOOK_CLIENT_ID: 'incode-hooks', WEBHOOK_CLIENT_SECRET: 'hook-secret-0123456789abcdef' });
    try {
      const doc = (await request(b.url).get('/docs/json').expect(200)).body;
      const schemes = doc.components.securitySchemes;
      const ops = Object.entries(doc.paths as Record<string, Record<string, any>>).flatMap(([path, item]) => Object.entries(item).map(([method, op]) => ({ path, method, op })));
      expect(ops.length).toBeGreaterThan(15);
      for (const { path, method, op } of ops) {
        // Every security requirement names a scheme the document defines.
        for (const req of op.security ?? []) for (const name of Object.keys(req)) expect([path, method, name, name in schemes]).toEqual([path, method, name, true]);
        for (const [status, res] of Object.entries(op.responses as Record<string, any>)) {
          const where = `${method.toUpperCase()} ${path} ${status}`;
          expect([where, res.description]).not.toEqual([where, 'Default Response']);
          expect([where, Object.keys(res.headers ?? {})]).toEqual([where, expect.arrayContaining(['x-request-id'])]);
          if (status === '429') expect([where, Object.keys(res.headers)]).toEqual([where, expect.arrayContaining(['retry-after', 'x-ratelimit-limit'])]);
          if (status === '503') expect([where, Object.keys(res.headers)]).toEqual([where, expect.arrayContaining(['retry-after'])]);
          if (status === '401') expect([where, Object.keys(res.headers)]).toEqual([where, expect.arrayContaining(['www-authenticate'])]);
        }
      }
      const op = (path: string, method: string) => doc.paths[path][method];
      // Prometheus text, not JSON, and behind the metrics token.
      const scrape = op('/metrics', 'get');
      expect(Object.keys(scrape.responses['200'].content)).toEqual(['text/plain']);
      expect(scrape.security).toEqual([{ metricsToken: [] }]);
      expect(schemes.metricsToken).toMatchObject({ type: 'http', scheme: 'bearer' });
      expect(Object.keys(scrape.responses)).toContain('401');
      // A session's steps as GET /sessions/:id sends them: code and message always there (null when empty), dates as dates.
      const step = JSON.stringify(op('/sessions/{interviewId}', 'get').responses['200']);
      expect(step).toMatch(/"required":\["step","outcome","code","message","at"\]/);
      expect(step).toMatch(/"at":\{"format":"date-time"/);
      // Image fields take a data: URL prefix: not declared as plain base64 (format byte), which a gateway would enforce.
      const upload = JSON.stringify(op('/onboardings', 'post').requestBody);
      expect(upload).not.toContain('"byte"');
      // The token endpoint's refusals carry RFC 6749's fields; it takes a form or JSON.
      const token = op('/webhooks/incode/token', 'post');
      expect(Object.keys(token.requestBody.content)).toEqual(expect.arrayContaining(['application/x-www-form-urlencoded', 'application/json']));
      expect(JSON.stringify(token.responses['401'])).toContain('"error_description"');
      // The app's own status and the results list share one set of results statuses and decisions.
      expect(JSON.stringify(op('/session/status', 'get').responses['200'])).toContain('"unprocessable"');
      expect(JSON.stringify(doc.components.schemas.ErrorBody)).toContain('"interviewId"');
    } finally {
      await b.close();
    }
  });
});

describe('GET /metrics with METRICS_TOKENS', () => {
  it('answers a scrape only with one of the tokens (either during a rotation), and says 401 with a code otherwise', async () => {
    const [TOKEN_OLD, TOKEN_NEW] = ['metrics-token-old-0123456789abcdef', 'metrics-token-new-0123456789abcdef'];
    const b = await startSandbox({ METRICS_TOKENS: `${TOKEN_NEW},${TOKEN_OLD}` });
    try {
      for (const auth of [undefined, 'Bearer wrong', `Bearer ${TOKEN_NEW}x`, `Basic ${TOKEN_NEW}`, `Bearer ${ADMIN_KEY}`]) {
        const req = request(b.url).get('/metrics');
        const res = await (auth ? req.set('authorization', auth) : req).expect(401);
        expect(res.body).toMatchObject({ code: 'UNAUTHORIZED' });
        expect(res.headers['www-authenticate']).toBe('Bearer');
        expect(res.text).not.toMatch(/process_cpu/);
      }
      for (const token of [TOKEN_OLD, TOKEN_NEW]) expect((await request(b.url).get('/metrics').set('authorization', `Bearer ${token}`).expect(200)).text).toMatch(/http_request_duration_seconds/);
    } finally {
      await b.close();
    }
  });
});

describe('metrics and a full flow with no secret or PII in the logs', () => {
  it('runs every route of a complete flow at LOG_LEVEL=trace, exposes the metrics, and logs no secret or PII', async () => {
    const secrets: string[] = [TEST_API_KEY, ADMIN_KEY, WEBHOOK_CLIENT_SECRET, basic.slice(6)];
    const ext = 'ext-customer-PII-7781';

    // Token flow with webhooks (OAuth) and a resume.
    const s = (await request(broker.url).post('/session').set('idempotency-key', 'obs-idem-1-0123456789abcdef').send({ externalCustomerId: ext, countryCode: 'USA' }).expect(200)).body;
    secrets.push(s.token, s.resumeToken);
    const resumed = (await request(broker.url).post('/session/resume').send({ resumeToken: s.resumeToken }).expect(200)).body;
    secrets.push(resumed.token, resumed.resumeToken);
    await request(broker.url).get('/session/status').set('x-incode-hardware-id', resumed.token).expect(200);
    await captureAll(s.apiUrl, resumed.token);
    const done = await ready(s.interviewId);
    secrets.push(done.ocr.name.fullName, done.ocr.documentNumber);

    // The OAuth token endpoint and a webhook sent by hand.
    const tok = (await request(broker.url).post('/webhooks/incode/token').set('authorization', basic).type('form').send({ grant_type: 'client_credentials' }).expect(200)).body;
    secrets.push(tok.access_token);
    await request(broker.url).post('/webhooks/incode').set('authorization', `Bearer ${tok.access_token}`).send({ interviewId: s.interviewId, onboardingStatus: 'ONBOARDING_FINISHED' }).expect(200);
    await request(broker.url).post('/webhooks/incode').set('authorization', 'Bearer wrong-token-value-123456').send({ interviewId: s.interviewId, onboardingStatus: 'ONBOARDING_FINISHED' }).expect(401);

    // Results API.
    await admin('/sessions?resultsStatus=ready&limit=5').expect(200);
    await request(broker.url).post(`/sessions/${s.interviewId}/refresh`).set('authorization', `Bearer ${ADMIN_KEY}`).expect(202);
    // A reviewer's verdict (the decision itself), sent by Incode's webhook: stored and served, never logged.
    await request(emu.url).post(`/__emulator/sessions/${s.interviewId}/status`).set('x-api-key', TEST_API_KEY).send({ onboardingStatus: 'MANUAL_REVIEW_REJECTED' }).expect(200);
    await waitFor(async () => (await admin(`/sessions/${s.interviewId}`)).body.decision === 'decline' || null, 15_000);

    // Server-side onboarding with images.
    const extOnb = 'ext-onboarding-PII-9912';
    const onb = (await request(broker.url).post('/onboardings').set('authorization', `Bearer ${ADMIN_KEY}`).send({ front: sampleImages().front, back: sampleImages().back, selfie: sampleImages().selfie, externalCustomerId: extOnb }).expect(202)).body;
    const onbDone = await ready(onb.interviewId);
    secrets.push(onbDone.ocr.name.fullName, onbDone.ocr.documentNumber);

    // Results through polling only (the webhook is dropped): a polling repair.
    emu.app.emulator.setFaults({ dropWebhookRate: 1 });
    const p = (await request(broker.url).post('/session').send({ externalCustomerId: 'ext-polled-PII-5521' }).expect(200)).body;
    secrets.push(p.token, p.resumeToken);
    await captureAll(p.apiUrl, p.token);
    const polled = await ready(p.interviewId);
    secrets.push(polled.ocr.name.fullName, polled.ocr.documentNumber);
    emu.app.emulator.resetFaults();

    // Incode failures: a 502 on start, and an onboarding whose start fails.
    emu.app.emulator.setFaults({ errorRate: 1 });
    await request(broker.url).post('/session').send({ externalCustomerId: ext }).expect(502);
    const failedOnb = await request(broker.url).post('/onboardings').set('authorization', `Bearer ${ADMIN_KEY}`).send({ front: sampleImages().front, selfie: sampleImages().selfie, externalCustomerId: extOnb });
    expect(failedOnb.status).toBe(502);
    expect(JSON.stringify(failedOnb.body)).not.toMatch(/emulated|Service temporarily/);
    emu.app.emulator.resetFaults();

    // Erasure.
    await request(broker.url).delete(`/sessions/${p.interviewId}`).set('authorization', `Bearer ${ADMIN_KEY}`).expect(200);

    // A webhook turned away before its credentials were looked at (not JSON): no credential failed.
    await request(broker.url).post('/webhooks/incode').set('content-type', 'text/plain').send('x').expect(415);

    // Metrics.
    const metrics = (await request(broker.url).get('/metrics').expect(200)).text;
    expect(metrics).toMatch(/^http_request_duration_seconds_count\{method="POST",route="\/session",status_code="200"\} [1-9]/m);
    expect(metrics).toMatch(/^http_request_duration_seconds_count\{method="GET",route="\/sessions\/:interviewId",status_code="200"\} [1-9]/m);
    expect(metrics).toMatch(/^http_request_duration_seconds_bucket\{le="0.1",method="POST",route="\/session",status_code="200"\} \d+/m);
    expect(metrics).toMatch(/^incode_call_duration_seconds_count\{operation="start",outcome="ok"\} [1-9]/m);
    expect(metrics).toMatch(/^incode_call_duration_seconds_count\{operation="start",outcome="http_503"\} [1-9]/m);
    expect(metrics).toMatch(/^incode_call_duration_seconds_count\{operation="getScore",outcome="ok"\} [1-9]/m);
    expect(metrics).toMatch(/^sessions_created_total\{route="session"\} [1-9]/m);
    expect(metrics).toMatch(/^sessions_created_total\{route="onboardings"\} [1-9]/m);
    expect(metrics).toMatch(/^webhooks_received_total\{status="ONBOARDING_FINISHED",auth="oauth",outcome="recorded"\} [1-9]/m);
    expect(metrics).toMatch(/^webhooks_received_total\{status="unknown",auth="rejected",outcome="rejected"\} [1-9]/m);
    expect(metrics).toMatch(/^webhooks_received_total\{status="unknown",auth="unchecked",outcome="[a-z]+"\} 1$/m);
    expect(metrics).toMatch(/^webhooks_received_total\{status="token",auth="oauth",outcome="issued"\} [1-9]/m);
    expect(metrics).toMatch(/^result_jobs_total\{kind="[a-z_]+",outcome="done"\} [1-9]/m);
    expect(metrics).toMatch(/^result_jobs_queue_depth\{state="[a-z_]+"\} \d+/m);
    expect(metrics).toMatch(/^polling_repairs_total [1-9]/m);
    expect(metrics).toMatch(/^results_stored_total\{decision="approve"\} [1-9]/m);
    expect(metrics).toMatch(/^incode_circuit_state\{group="start"\} 0/m);
    expect(metrics).toMatch(/^process_cpu_seconds_total /m);
    // Ids are never metric labels (unbounded cardinality).
    expect(metrics).not.toContain(s.interviewId);

    // Logs: none of the secrets, tokens, personal data or images, at trace level.
    const lines = broker.logs.lines;
    expect(lines.length).toBeGreaterThan(50);
    const text = broker.logs.text;
    // The capture works: the flow's (non-personal) ids are there.
    expect(text).toContain(s.interviewId);
    expect(text).toContain(onb.interviewId);
    const forbidden = [...secrets, ext, extOnb, 'ext-polled-PII-5521', sampleImages().front.slice(0, 40), sampleImages().back.slice(0, 40), sampleImages().selfie.slice(0, 40), sampleImages().selfie.slice(1000, 1040)];
    for (const f of forbidden) {
      expect(typeof f).toBe('string');
      expect(f.length).toBeGreaterThanOrEqual(6);
      if (text.includes(f)) throw new Error(`log leaks "${f.slice(0, 12)}…": ${lines.find((l) => l.includes(f))?.slice(0, 300)}`);
    }
    // Nor how a verification ended (a decision, a reviewer's verdict): logs outlive an erasure.
    expect(text).toContain('MANUAL_REVIEW_VERDICT');
    expect(text).not.toMatch(/MANUAL_REVIEW_(APPROVED|REJECTED)/);
    expect(text).not.toMatch(/"decision"\s*:/);
    // No query strings (ids, filters) and no request headers in request logs.
    expect(text).not.toContain('resultsStatus=ready');
    expect(text).not.toMatch(/"headers"\s*:/);
  }, 60_000);
});

describe('request ids in sandbox mode', () => {
  it("names the results jobs' calls to the in-process emulator by their job (job-<id>), as Incode would see them", async () => {
    const b = await startSandbox();
    try {
      const s = (await request(b.url).post('/session').send({}).expect(200)).body;
      await captureAll(`${b.url}/sandbox/incode/0/`, s.token);
      await waitForResults(b.url, s.interviewId);
      const named = new Set((await b.app.store.listJobs(s.interviewId)).map((j) => `job-${j.id}`));
      const reads = b.logs.records.filter((r) => r.msg === 'request completed' && /^\/sandbox\/incode\/omni\/get\/(score|ocr-data)/.test(String((r.req as { url?: string } | undefined)?.url)));
      expect(reads.length).toBeGreaterThanOrEqual(2);
      for (const r of reads) expect(named.has(String(r.reqId))).toBe(true);
      // Still refused on the broker's own routes.
      expect((await request(b.url).get('/healthz').set('x-request-id', 'job-7')).headers['x-request-id']).toMatch(/^[0-9a-f-]{36}$/);
    } finally {
      await b.close();
    }
  }, 30_000);
});

describe('access lines of probes', () => {
  it("writes a passing probe's access line at debug, every other request's at info", async () => {
    const b = await startSandbox();
    try {
      await request(b.url).get('/healthz').set('x-request-id', 'probe-health-1').expect(200);
      await request(b.url).get('/readyz').set('x-request-id', 'probe-ready-1').expect(200);
      await request(b.url).get('/sessions').set('x-request-id', 'not-a-probe-1').expect(401);
      await waitFor(() => b.logs.records.some((r) => r.reqId === 'not-a-probe-1' && r.msg === 'request completed') || null, 5000, 10);
      // (The readiness probe's own call to the sandbox's emulator, under the same id, is a request to Incode's stand-in.)
      const probeLines = b.logs.records.filter((r) => String(r.reqId).startsWith('probe-') && !String((r.req as { url?: string } | undefined)?.url).startsWith('/sandbox/'));
      expect(probeLines).toEqual([]);
    } finally {
      await b.close();
    }
    const verbose = await startSandbox({ LOG_LEVEL: 'debug' });
    try {
      await request(verbose.url).get('/healthz').set('x-request-id', 'probe-health-2').expect(200);
      await waitFor(() => verbose.logs.records.find((r) => r.reqId === 'probe-health-2' && r.msg === 'request completed') ?? null, 5000, 10).then((line) => expect(line.level).toBe(20));
    } finally {
      await verbose.close();
    }
  });
});
