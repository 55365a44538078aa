// End to end over HTTP: broker + emulator on loopback, webhooks with OAuth, polling, faults, erasure, PII at rest.
import { createHmac } from 'node:crypto';
import { readFileSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { createServer, request as httpRequest, type IncomingHttpHeaders, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import Fastify from 'fastify';
import request from 'supertest';
import type { AddressInfo } from 'node:net';
import type { EmulatorOptions } from '../../src/emulator/app';
import {
  ADMIN_KEY,
  ENCRYPTION_KEY,
  TEST_API_KEY,
  WEBHOOK_CLIENT_ID,
  WEBHOOK_CLIENT_SECRET,
  brokerEnv,
  freePort,
  recordRequests,
  startBroker,
  startEmulator,
  waitFor,
  waitForResults,
  webhooksTo,
} from '../helpers/harness';
import { loadConfig } from '../../src/config';
import { statusRank } from '../../src/results/status';
import { Cipher } from '../../src/store/crypto';
import { SqliteStore } from '../../src/store/sqlite-store';
import type { Job, NewJob, Store } from '../../src/store/types';
import { CALLBACK_RETRY_AFTER_MS, CALLBACK_RETRY_FOR_MS, ResultsPipeline, capturesWindowMs } from '../../src/results/pipeline';
import { sendCallback } from '../../src/results/callback';
import { INCODE_DELETE_RETRY_AFTER_MS, INCODE_DELETE_RETRY_FOR_MS, incodeDeleteJob } from '../../src/store/rows';
import type { IncodeClient } from '../../src/incode/client';
import type { ExecutiveTokenProvider } from '../../src/incode/executive-token';
import { createMetrics } from '../../src/plugins/metrics';
import pino from 'pino';
import Ajv from 'ajv';
import addFormats from 'ajv-formats';
import { ResultsFailedEvent, ResultsReadyEvent } from '../../src/schemas';
import { memoryStore, storeWith } from '../helpers/store-proxy';
import { captureAll } from '../helpers/flow';
import { tempDir } from '../helpers/temp';
import { throwawayPgStore } from '../helpers/pg-schema';
import { describeWith } from '../helpers/services';

type Pair = Awaited<ReturnType<typeof startPair>>;

type Engine = 'sqlite' | 'postgres';
let engine: Engine = 'sqlite';

/** A PostgreSQL store in a throwaway schema, dropped when the pair closes. */
const pgStore = async () => throwawayPgStore('t_pipeline', { poolMax: 8 });

/** `override` replaces store methods for a while (storeWith), over the suite's engine (in-memory SQLite for sqlite). */
/** A session started at Incode directly (a hosted-flow link, another backend), not through the broker. */
const startAtIncode = (pair: { emulator: { url: string } }) =>
  request(pair.emulator.url).post('/omni/start').set('x-api-key', TEST_API_KEY).set('api-version', '1.0').send({ countryCode: 'ALL' }).expect(200);

async function startPair(env: Record<string, string> = {}, emu: Partial<EmulatorOptions> = {}, override?: (real: Store) => StoreOverride) {
  const port = await freePort();
  // A test that names its own database (a SQLite file to read back) gets it, whichever suite's engine ran last.
  const pg = engine === 'postgres' && !env.DATABASE_URL ? await pgStore() : null;
  const base = pg?.store ?? (override ? await memoryStore() : null);
  const emulator = await startEmulator({
    webhook: webhooksTo(`http://127.0.0.1:${port}`),
    ...emu,
  });
  const broker = await startBroker(brokerEnv(emulator.url, env), base ? { store: override ? storeWith(base, override(base)) : base } : {}, port);
  const admin = (path: string) => request(broker.url).get(path).set('authorization', `Bearer ${ADMIN_KEY}`);
  const newSession = async (body: Record<string, unknown> = {}) => {
    const res = await request(broker.url).post('/session').send(body).expect(200);
    return res.body as { token: string; interviewId: string; apiUrl: string };
  };
  const ready = (id: string, timeoutMs = 15_000) => waitForResults(broker.url, id, timeoutMs);
  // Idempotent: a test that closed its pair before failing must not have afterEach's second close (a second
  // pool end throws) bury its own error.
  let closing: Promise<void> | null = null;
  return {
    emulator,
    broker,
    admin,
    newSession,
    ready,
    close: () =>
      (closing ??= (async () => {
        await broker.close();
        await emulator.close();
        // The broker closes only a store it opened itself.
        if (pg) await pg.drop();
        else await base?.close();
      })()),
  };
}

interface Upstream {
  status: number;
  headers: IncomingHttpHeaders;
  body: Buffer;
}

/**
 * A loopback proxy in front of the emulator (its `state.target` is set once the emulator is listening). `handle`
 * answers each request itself or calls `forward` for the emulator's whole answer, to pass on, delay or replace.
 */
async function startEmulatorProxy<S extends { target: string }>(state: S, handle: (req: IncomingMessage, res: ServerResponse, forward: () => Promise<Upstream>) => void) {
  const server: Server = createServer((req, res) =>
    handle(req, res, () => {
      const t = new URL(state.target);
      return new Promise<Upstream>((resolve, reject) => {
        const up = httpRequest({ host: t.hostname, port: t.port, method: req.method, path: req.url, headers: { ...req.headers, host: t.host } }, (upRes) => {
          const chunks: Buffer[] = [];
          upRes.on('data', (c: Buffer) => chunks.push(c));
          upRes.on('end', () => resolve({ status: upRes.statusCode ?? 502, headers: upRes.headers, body: Buffer.concat(chunks) }));
        });
        up.on('error', reject);
        req.pipe(up);
      });
    }),
  );
  server.keepAliveTimeout = 1000;
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return {
    url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`,
    state,
    close: () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
}

const pass = (res: ServerResponse, u: Upstream) => res.writeHead(u.status, u.headers).end(u.body);

/** Answers 503, as Incode would when one endpoint is down, for the paths `state.failing` matches; forwards the rest. */
function startOutageProxy() {
  const state: { target: string; failing: RegExp | null; status: number; left: number; body?: string } = { target: '', failing: null, status: 503, left: Infinity };
  return startEmulatorProxy(state, (req, res, forward) => {
    // `body`, when set, is the answer as sent (an empty or misshapen 200, say); else Incode's error envelope.
    if (state.failing?.test(req.url ?? '') && state.left-- > 0)
      return void res.writeHead(state.status, { 'content-type': 'application/json' }).end(state.body ?? JSON.stringify({ status: state.status, error: 'refused', message: 'outage' }));
    forward().then((u) => pass(res, u), () => res.writeHead(502).end());
  });
}

/**
 * Holds the first score answer until a later one has been passed on (then 300 ms more), or for at most maxHoldMs: the
 * older fetch answers last however slow the machine is. The score itself is read from the emulator at once;
 * `state.log` records each score answer's overall status, and the held call if the broker abandons it.
 */
function startSlowFirstScoreProxy(maxHoldMs: number) {
  const state = { target: '', scores: 0, log: [] as string[] };
  const held = () =>
    new Promise<void>((resolve) => {
      const since = Date.now();
      const tick = () => (state.log.some((l) => l.startsWith('fast:')) || Date.now() - since > maxHoldMs ? setTimeout(resolve, 300) : setTimeout(tick, 20));
      tick();
    });
  return startEmulatorProxy(state, (req, res, forward) => {
    const isScore = /^\/omni\/get\/score/.test(req.url ?? '');
    const slow = isScore && state.scores++ === 0;
    // The broker giving up on the held call shows as its connection closing before the answer.
    let abandoned = false;
    if (slow)
      res.on('close', () => {
        if (res.writableEnded) return;
        abandoned = true;
        state.log.push('slow:abandoned');
      });
    forward().then(
      async (u) => {
        if (slow) await held();
        if (abandoned) return;
        if (isScore) state.log.push(`${slow ? 'slow' : 'fast'}:${JSON.parse(u.body.toString()).overall?.status}`);
        pass(res, u);
      },
      () => res.writeHead(502).end(),
    );
  });
}

function webhookToken(url: string, id = WEBHOOK_CLIENT_ID, secret = WEBHOOK_CLIENT_SECRET) {
  return request(url)
    .post('/webhooks/incode/token')
    .set('authorization', `Basic ${Buffer.from(`${id}:${secret}`).toString('base64')}`)
    .type('form')
    .send({ grant_type: 'client_credentials' });
}

/** The customer's callback secret the tests sign with (Standard Webhooks `whsec_` form). */
const CALLBACK_SECRET_BYTES = Buffer.from('customer-secret-bytes');
const CALLBACK_SECRET = `whsec_${CALLBACK_SECRET_BYTES.toString('base64')}`;

/**
 * A customer's callback receiver on loopback: every delivery attempt is counted, and kept (headers and body as sent)
 * when `accept` says yes for that attempt (its 1-based number), else answered 500.
 */
async function callbackReceiver(accept: (attempt: number) => boolean = () => true) {
  let attempts = 0;
  let acceptAll = false;
  const received: { headers: Record<string, unknown>; body: string; data: Record<string, unknown> }[] = [];
  const receiver = Fastify();
  receiver.addContentTypeParser('application/json', { parseAs: 'string' }, (_r, body, done) => done(null, body));
  receiver.post('/hook', async (req, reply) => {
    if (!accept(++attempts) && !acceptAll) return reply.status(500).send({});
    const body = req.body as string;
    received.push({ headers: req.headers, body, data: (JSON.parse(body) as { data: Record<string, unknown> }).data });
    return { ok: true };
  });
  await receiver.listen({ port: 0, host: '127.0.0.1' });
  return {
    hook: `http://127.0.0.1:${(receiver.server.address() as AddressInfo).port}/hook`,
    received,
    attempts: () => attempts,
    acceptFromNowOn: () => (acceptAll = true),
    close: () => receiver.close(),
  };
}

function pipelineSuite(which: Engine) {
  let p: Pair;
  beforeAll(() => {
    engine = which;
  });
  afterEach(async () => p?.close());

  it('session → captures on /0/ → emulator webhook (OAuth) → scores and OCR ready', async () => {
    p = await startPair({ RESULTS_MODE: 'webhook' });
    const s = await p.newSession({ externalCustomerId: 'cust-42' });
    expect(s.apiUrl).toBe(`${p.emulator.url}/0/`);
    await captureAll(s.apiUrl, s.token);
    const done = await p.ready(s.interviewId);
    expect(done.onboardingStatus).toBe('ONBOARDING_FINISHED');
    expect(done.decision).toBe('approve');
    expect(done.scores.overall.status).toBe('OK');
    expect(typeof done.ocr.name.fullName).toBe('string');
    // The app sees its status and decision, no personal data.
    const st = await request(p.broker.url).get('/session/status').set('x-incode-hardware-id', s.token).expect(200);
    expect(st.body).toEqual({ interviewId: s.interviewId, onboardingStatus: 'ONBOARDING_FINISHED', resultsStatus: 'ready', decision: 'approve' });
    const metrics = await request(p.broker.url).get('/metrics');
    expect(metrics.text).toMatch(/webhooks_received_total\{status="ONBOARDING_FINISHED",auth="oauth",outcome="recorded"\} 1/);
    expect(metrics.text).toMatch(/polling_repairs_total 0/);
  });

  it('maps WARN to review and FAIL to decline', async () => {
    p = await startPair({ RESULTS_MODE: 'webhook' });
    const warn = await p.newSession({ externalCustomerId: 'emu:warn' });
    const fail = await p.newSession({ externalCustomerId: 'emu:decline' });
    await Promise.all([captureAll(warn.apiUrl, warn.token), captureAll(fail.apiUrl, fail.token)]);
    expect((await p.ready(warn.interviewId)).decision).toBe('review');
    expect((await p.ready(fail.interviewId)).decision).toBe('decline');
  });

  it('maps an overall UNKNOWN, MANUAL or blank at ONBOARDING_FINISHED to review, never approve', async () => {
    p = await startPair({ RESULTS_MODE: 'webhook' });
    const sessions = await Promise.all(['emu:overall-unknown', 'emu:overall-manual', 'emu:overall-blank'].map((externalCustomerId) => p.newSession({ externalCustomerId })));
    await Promise.all(sessions.map((s) => captureAll(s.apiUrl, s.token)));
    for (const s of sessions) {
      const done = await p.ready(s.interviewId);
      expect(done.decision).toBe('review');
      // Stored as Incode sent it.
      expect(['UNKNOWN', 'MANUAL', '']).toContain(done.scores.overall.status);
    }
  });

  it('processes duplicated webhooks once', async () => {
    p = await startPair({ RESULTS_MODE: 'webhook' }, { faults: { duplicateWebhookRate: 1 } });
    const s = await p.newSession();
    await captureAll(s.apiUrl, s.token);
    await p.ready(s.interviewId);
    // The emulator sends the copy after the first delivery is answered, so the results may be stored before it
    // arrives: wait for it, and for whatever it queued, before counting the jobs.
    const finishedWebhooks = async () => {
      const m = await request(p.broker.url).get('/metrics');
      return Number(/webhooks_received_total\{status="ONBOARDING_FINISHED",auth="oauth",outcome="duplicate"\} (\d+)/.exec(m.text)?.[1] ?? 0);
    };
    // The copy is acknowledged and counted as a duplicate, not as a second delivery.
    await waitFor(async () => (await finishedWebhooks()) >= 1);
    await waitFor(async () => {
      const c = await p.broker.app.store.countJobs();
      return c.queued === 0 && c.running === 0;
    });
    const jobs = await p.broker.app.store.listJobs(s.interviewId);
    expect(jobs.filter((j) => j.kind === 'results')).toHaveLength(1);
  });

  it('ignores late and out-of-order statuses: a final result is never moved back', async () => {
    p = await startPair({ RESULTS_MODE: 'webhook' });
    const s = await p.newSession();
    await captureAll(s.apiUrl, s.token);
    const before = await p.ready(s.interviewId);
    const tok = (await webhookToken(p.broker.url)).body.access_token as string;
    for (const status of ['ID_VALIDATION_FINISHED', 'FACE_VALIDATION_FINISHED', 'UNKNOWN'])
      await request(p.broker.url).post('/webhooks/incode').set('authorization', `Bearer ${tok}`).send({ interviewId: s.interviewId, onboardingStatus: status }).expect(200);
    await waitFor(async () => (await p.broker.app.store.countJobs()).queued === 0 && (await p.broker.app.store.countJobs()).running === 0);
    const after = (await p.admin(`/sessions/${s.interviewId}`)).body;
    expect(after.onboardingStatus).toBe('ONBOARDING_FINISHED');
    expect(after.resultsStatus).toBe('ready');
    expect(after.fetchedAt).toBe(before.fetchedAt);
  });

  it('a forged webhook for a session that has not finished changes nothing (verify by fetch): its check is retried, then dead', async () => {
    p = await startPair({ RESULTS_MODE: 'webhook', JOB_MAX_ATTEMPTS: '3', JOB_BACKOFF_MS: '20' });
    const s = await p.newSession();
    const tok = (await webhookToken(p.broker.url)).body.access_token as string;
    await request(p.broker.url).post('/webhooks/incode').set('authorization', `Bearer ${tok}`).send({ interviewId: s.interviewId, onboardingStatus: 'ONBOARDING_FINISHED' }).expect(200);
    await request(p.broker.url).post('/webhooks/incode').set('authorization', `Bearer ${tok}`).send({ interviewId: 'ffffffffffffffffffffffff', onboardingStatus: 'ONBOARDING_FINISHED' }).expect(200);
    await waitFor(async () => {
      const c = await p.broker.app.store.countJobs();
      return c.queued === 0 && c.running === 0 && c.done >= 1 && c.dead >= 1;
    });
    // Incode's read stays behind the claim: the check came back as often as allowed, and each time applied only what it read.
    const [check] = (await p.broker.app.store.listJobs(s.interviewId)).filter((j) => j.kind === 'verify');
    expect(check).toMatchObject({ state: 'dead', attempts: 3, lastError: 'STATUS_BEHIND_WEBHOOK' });
    const now = (await p.admin(`/sessions/${s.interviewId}`)).body;
    expect(now.onboardingStatus).toBe('UNKNOWN');
    expect(now.resultsStatus).toBe('pending');
    expect(now.scores).toBeNull();
    await p.admin('/sessions/ffffffffffffffffffffffff').expect(404);
    const audit = await p.broker.app.store.listAudit('ffffffffffffffffffffffff');
    expect(audit.map((a) => a.kind)).toContain('webhook-unverified');
  });

  it("without polling, a webhook ahead of the status Incode reads is checked again until the read catches up", async () => {
    // Incode's own webhooks are dropped: the one below, sent before processing ends, is the only word of the finish.
    p = await startPair({ RESULTS_MODE: 'webhook' }, { faults: { dropWebhookRate: 1 }, processingDelayMs: 2000 });
    const s = await p.newSession();
    await captureAll(s.apiUrl, s.token);
    const tok = (await webhookToken(p.broker.url)).body.access_token as string;
    await request(p.broker.url).post('/webhooks/incode').set('authorization', `Bearer ${tok}`).send({ interviewId: s.interviewId, onboardingStatus: 'ONBOARDING_FINISHED' }).expect(200);
    // The check's backoff doubles from JOB_BACKOFF_MS, so it may come back some seconds after the read caught up.
    const done = await p.ready(s.interviewId, 30_000);
    expect(done.onboardingStatus).toBe('ONBOARDING_FINISHED');
    expect(done.decision).toBe('approve');
    const [check] = (await p.broker.app.store.listJobs(s.interviewId)).filter((j) => j.kind === 'verify');
    expect(check.state).toBe('done');
    expect(check.attempts).toBeGreaterThan(1);
  }, 45_000);

  it('results fetched by polling while the webhook for that status waits in the queue are no polling repair', async () => {
    p = await startPair({ RESULTS_MODE: 'both', POLL_INTERVAL_MS: '100', POLL_MAX_INTERVAL_MS: '300' }, { faults: { dropWebhookRate: 1 } });
    const s = await p.newSession();
    // The webhook for the final status arrived and waits behind a long backoff (as in a deep queue): recorded in the
    // inbox, its verify job not due for an hour.
    const later = Date.now() + 3_600_000;
    await p.broker.app.store.recordEvent(
      { key: `${s.interviewId}:ONBOARDING_FINISHED`, interviewId: s.interviewId, onboardingStatus: 'ONBOARDING_FINISHED', payload: {}, receivedAt: Date.now() },
      { kind: 'verify', subject: s.interviewId, payload: { source: 'webhook', eventKey: `${s.interviewId}:ONBOARDING_FINISHED` }, runAt: later },
    );
    await captureAll(s.apiUrl, s.token);
    expect((await p.ready(s.interviewId)).decision).toBe('approve');
    // The counter moves (or not) before the results job is recorded done: read it after that.
    await waitFor(async () => (await p.broker.app.store.listJobs(s.interviewId)).some((j) => j.kind === 'results' && j.state === 'done'));
    expect((await request(p.broker.url).get('/metrics')).text).toMatch(/^polling_repairs_total 0$/m);
  });

  it("keeps no row of a poll's routine check once done: an unfinished session polled for days leaves no pile of them", async () => {
    p = await startPair({ RESULTS_MODE: 'polling', POLL_INTERVAL_MS: '100', POLL_MAX_INTERVAL_MS: '100' });
    const s = await p.newSession();
    const incode = recordRequests(p.emulator.app.server);
    try {
      // Never captured: each poll reads the status and finds nothing to do.
      await waitFor(() => incode.urls.filter((u) => u.includes('onboarding/status') && u.includes(s.interviewId)).length >= 5 || null, 15_000);
      const verify = (await p.broker.app.store.listJobs(s.interviewId)).filter((j) => j.kind === 'verify');
      // At most the check under way or queued next; none kept done.
      expect(verify.filter((j) => j.state === 'done')).toEqual([]);
      expect(verify.length).toBeLessThanOrEqual(1);
      // A check that reads the final status still leads to the results, whose job stays as history.
      await captureAll(s.apiUrl, s.token);
      expect((await p.ready(s.interviewId)).decision).toBe('approve');
      await waitFor(async () => (await p.broker.app.store.listJobs(s.interviewId)).some((j) => j.kind === 'results' && j.state === 'done'));
    } finally {
      incode.stop();
    }
  });

  it('polling fills in when webhooks never come', async () => {
    p = await startPair({ RESULTS_MODE: 'both', POLL_INTERVAL_MS: '100', POLL_MAX_INTERVAL_MS: '300' }, { faults: { dropWebhookRate: 1 } });
    const s = await p.newSession();
    await captureAll(s.apiUrl, s.token);
    const done = await p.ready(s.interviewId);
    expect(done.decision).toBe('approve');
    const m = await request(p.broker.url).get('/metrics');
    expect(m.text).toMatch(/polling_repairs_total [1-9]/);
    expect(m.text).not.toMatch(/webhooks_received_total\{status="ONBOARDING_FINISHED"/);
  });

  it('stops polling a session Incode no longer knows (deleted there) and fails its results once, instead of a dead letter per poll', async () => {
    p = await startPair({ RESULTS_MODE: 'both', POLL_INTERVAL_MS: '100', POLL_MAX_INTERVAL_MS: '200' });
    const s = await p.newSession();
    const kept = await p.newSession();
    p.emulator.app.emulator.sessions.delete(s.interviewId);
    await waitFor(async () => (await p.admin(`/sessions/${s.interviewId}`).expect(200)).body.resultsStatus === 'failed');
    const stored = await p.broker.app.store.getSession(s.interviewId);
    expect(stored).toMatchObject({ resultsStatus: 'failed', lastError: 'INCODE_SESSION_GONE', nextPollAt: null });
    // Polls went on for the other session meanwhile; none came back to this one (its status is never read again:
    // done routine checks leave no row to count).
    const incode = recordRequests(p.emulator.app.server);
    await new Promise((r) => setTimeout(r, 1000));
    incode.stop();
    expect(incode.urls.filter((u) => u.includes('onboarding/status') && u.includes(s.interviewId))).toEqual([]);
    expect(incode.urls.filter((u) => u.includes('onboarding/status') && u.includes(kept.interviewId)).length).toBeGreaterThan(0);
    expect((await p.broker.app.store.listJobs(s.interviewId)).filter((j) => j.kind === 'verify' && j.state === 'dead')).toEqual([]);
    expect((await p.broker.app.store.getSession(kept.interviewId))?.nextPollAt).not.toBeNull();
    expect((await p.broker.app.store.listAudit(s.interviewId)).filter((a) => a.kind === 'incode-not-found')).toHaveLength(1);
    // A status move (its webhook: Incode knows the session after all) revives it: pending again, and polled.
    await p.broker.app.results.apply(s.interviewId, 'ID_VALIDATION_FINISHED', 'webhook');
    expect(await p.broker.app.store.getSession(s.interviewId)).toMatchObject({ resultsStatus: 'pending', lastError: null, nextPollAt: expect.any(Number) });
  });

  it('a single 404 of Incode\'s between answers that find the session ends nothing: only two in a row do', async () => {
    // Status reads answer in turn a 403 (a key being rotated: the check's attempt fails, the client does not repeat
    // it), Incode's 404 envelope, then the real status: a check's second attempt meets a 404 after a failure of
    // another kind, which is no second word that the session is gone.
    let reads = 0;
    const proxy = await startEmulatorProxy({ target: '' }, (req, res, forward) => {
      const turn = /^\/omni\/get\/onboarding\/status/.test(req.url ?? '') ? reads++ % 3 : 2;
      if (turn === 0) return void res.writeHead(403, { 'content-type': 'application/json' }).end(JSON.stringify({ timestamp: Date.now(), status: 403, error: 'Forbidden' }));
      if (turn === 1)
        return void res.writeHead(404, { 'content-type': 'application/json' }).end(JSON.stringify({ timestamp: Date.now(), status: 404, error: 'Not Found', path: '/omni/get/onboarding/status' }));
      forward().then((u) => pass(res, u), () => res.writeHead(502).end());
    });
    try {
      p = await startPair({ RESULTS_MODE: 'both', POLL_INTERVAL_MS: '100', POLL_MAX_INTERVAL_MS: '200', INCODE_API_URL: proxy.url });
      proxy.state.target = p.emulator.url;
      const s = await p.newSession();
      await waitFor(() => reads >= 9 || null);
      expect(await p.broker.app.store.getSession(s.interviewId)).toMatchObject({ resultsStatus: 'pending', nextPollAt: expect.any(Number) });
      expect((await p.broker.app.store.listAudit(s.interviewId)).filter((a) => a.kind === 'incode-not-found')).toEqual([]);
    } finally {
      await proxy.close();
    }
  });

  it("a 404 that is not Incode's own (a gateway's page) never ends a session: it stays pending and polled", async () => {
    // Every status read answered by a proxy's HTML 404, as a misrouted ingress would: not Incode saying it has no such session.
    const proxy = await startEmulatorProxy({ target: '' }, (req, res, forward) => {
      if (/^\/omni\/get\/onboarding\/status/.test(req.url ?? '')) return void res.writeHead(404, { 'content-type': 'text/html' }).end('<html><body>404 Not Found</body></html>');
      forward().then((u) => pass(res, u), () => res.writeHead(502).end());
    });
    try {
      p = await startPair({ RESULTS_MODE: 'both', POLL_INTERVAL_MS: '100', POLL_MAX_INTERVAL_MS: '200', INCODE_API_URL: proxy.url });
      proxy.state.target = p.emulator.url;
      const s = await p.newSession();
      await waitFor(async () => (await p.broker.app.store.listJobs(s.interviewId)).filter((j) => j.kind === 'verify' && j.lastError === 'INCODE_NOT_FOUND').length >= 2 || null);
      expect(await p.broker.app.store.getSession(s.interviewId)).toMatchObject({ resultsStatus: 'pending', nextPollAt: expect.any(Number) });
      expect((await p.broker.app.store.listAudit(s.interviewId)).filter((a) => a.kind === 'incode-not-found')).toEqual([]);
    } finally {
      await proxy.close();
    }
  });

  it('a repair is counted once, though its results job runs again after failing to record that it finished', async () => {
    // The first results job's completion cannot be written (a disk error): it runs again once its lease lapses.
    let failed = 0;
    p = await startPair(
      { RESULTS_MODE: 'both', POLL_INTERVAL_MS: '100', POLL_MAX_INTERVAL_MS: '300', JOB_LEASE_MS: '1000' },
      { faults: { dropWebhookRate: 1 } },
      (real) => (method) =>
        method === 'completeJob'
          ? async (...args: never[]) => {
              const [lease, owner, now] = args as unknown as Parameters<Store['completeJob']>;
              const jobs = await real.listJobs(String((await real.listSessions({ limit: 1 })).items[0]?.interviewId));
              if (jobs.find((j) => j.id === lease.id)?.kind === 'results' && failed++ === 0) throw new Error('disk I/O error');
              return real.completeJob(lease, owner, now);
            }
          : null,
    );
    const s = await p.newSession();
    await captureAll(s.apiUrl, s.token);
    expect((await p.ready(s.interviewId)).decision).toBe('approve');
    await waitFor(async () => (await p.broker.app.store.listJobs(s.interviewId)).some((j) => j.kind === 'results' && j.state === 'done'), 15_000);
    expect(failed).toBe(2);
    expect((await request(p.broker.url).get('/metrics')).text).toMatch(/^polling_repairs_total 1$/m);
  });

  it("polling goes on after a finish left to a reviewer, so the verdict arrives without its webhook; then it stops", async () => {
    // The verdict comes processingDelayMs after the finish: long enough for the finish's own results to be read first.
    p = await startPair({ RESULTS_MODE: 'both', POLL_INTERVAL_MS: '100', POLL_MAX_INTERVAL_MS: '300' }, { faults: { dropWebhookRate: 1 }, processingDelayMs: 1500 });
    const s = await p.newSession({ externalCustomerId: 'emu:manual-approved' });
    await captureAll(s.apiUrl, s.token);
    const pending = await waitFor(async () => {
      const v = (await p.admin(`/sessions/${s.interviewId}`)).body;
      return v.resultsStatus === 'ready' && v.onboardingStatus === 'ONBOARDING_FINISHED' ? v : null;
    }, 15_000, 20);
    expect(pending.decision).toBe('review');
    const verdict = await waitFor(async () => {
      const v = (await p.admin(`/sessions/${s.interviewId}`)).body;
      return v.onboardingStatus === 'MANUAL_REVIEW_APPROVED' && v.decision === 'approve' ? v : null;
    }, 15_000);
    expect(verdict.scores.overall.status).toBe('MANUAL_OK');
    // A final verdict ends polling: read once the verdict's results job is over (a wrongful re-schedule would come at
    // its end, after the results are stored).
    await waitFor(async () => (await p.broker.app.store.listJobs(s.interviewId)).some((j) => j.kind === 'results' && j.payload.status === 'MANUAL_REVIEW_APPROVED' && j.state === 'done'));
    expect((await p.broker.app.store.getSession(s.interviewId))!.nextPollAt).toBeNull();
  });

  it("never calls finish-status over a reviewer's verdict, even with MARK_COMPLETE (it would apply the flow's rules again)", async () => {
    p = await startPair({ RESULTS_MODE: 'webhook', MARK_COMPLETE: 'true' }, { processingDelayMs: 300 });
    const s = await p.newSession({ externalCustomerId: 'emu:manual-approved' });
    await captureAll(s.apiUrl, s.token);
    await waitFor(async () => (await p.broker.app.store.listJobs(s.interviewId)).some((j) => j.kind === 'results' && j.payload.status === 'MANUAL_REVIEW_APPROVED' && j.state === 'done'), 15_000);
    expect((await p.admin(`/sessions/${s.interviewId}`)).body).toMatchObject({ onboardingStatus: 'MANUAL_REVIEW_APPROVED', decision: 'approve', resultsStatus: 'ready' });
    // The flow completed on its own (mark completed on status); nothing here asked for finish-status.
    const atIncode = p.emulator.app.emulator.sessions.sessions.get(s.interviewId);
    expect(atIncode).toBeDefined();
    expect(atIncode!.finishRequested).toBeFalsy();
  });

  it('loses no result when 30% of Incode calls fail', async () => {
    p = await startPair({ RESULTS_MODE: 'both', POLL_INTERVAL_MS: '100', POLL_MAX_INTERVAL_MS: '300', JOB_MAX_ATTEMPTS: '30', JOB_BACKOFF_MS: '20', INCODE_MAX_RETRIES: '0', CIRCUIT_FAILURE_THRESHOLD: '1000' });
    const sessions = [];
    for (let i = 0; i < 6; i++) sessions.push(await p.newSession({ externalCustomerId: `c${i}` }));
    p.emulator.app.emulator.setFaults({ errorRate: 0.3, seed: 7 });
    await Promise.all(sessions.map((s) => captureAll(s.apiUrl, s.token)));
    for (const s of sessions) expect((await p.ready(s.interviewId, 30_000)).resultsStatus).toBe('ready');
    // No client-level retries here, so with ~24 Incode calls at 30 % failure the jobs themselves must have
    // been retried (the chance that none failed is about 0.7^24, 2 in 10,000).
    const m = await request(p.broker.url).get('/metrics');
    expect(m.text).toMatch(/result_jobs_total\{kind="\w+",outcome="retry"\} [1-9]/);
  });

  it('dead-letters a job visibly after the configured attempts; a refresh recovers once Incode heals', async () => {
    p = await startPair({ RESULTS_MODE: 'webhook', JOB_MAX_ATTEMPTS: '2', JOB_BACKOFF_MS: '10', INCODE_MAX_RETRIES: '0', CIRCUIT_FAILURE_THRESHOLD: '1000' }, { faults: { dropWebhookRate: 1 } });
    const s = await p.newSession();
    await captureAll(s.apiUrl, s.token);
    await waitFor(async () => p.emulator.app.emulator.sessions.get(s.interviewId)?.status === 'ONBOARDING_FINISHED');
    p.emulator.app.emulator.setFaults({ errorRate: 1, dropWebhookRate: 1 });
    await request(p.broker.url).post(`/sessions/${s.interviewId}/refresh`).set('authorization', `Bearer ${ADMIN_KEY}`).expect(202);
    const failed = await waitFor(async () => {
      const r = await p.admin(`/sessions/${s.interviewId}`);
      return r.body.lastError && r.body;
    });
    expect(failed.lastError).toBe('INCODE_UNAVAILABLE');
    expect(failed.resultsStatus).toBe('pending');
    expect((await p.broker.app.store.listAudit(s.interviewId)).map((a) => a.kind)).toContain('dead-letter');
    expect((await request(p.broker.url).get('/metrics')).text).toMatch(/result_jobs_dead_letters_total\{kind="verify"\} 1/);
    p.emulator.app.emulator.setFaults({ errorRate: 0, dropWebhookRate: 1 });
    await request(p.broker.url).post(`/sessions/${s.interviewId}/refresh`).set('authorization', `Bearer ${ADMIN_KEY}`).expect(202);
    const ok = await p.ready(s.interviewId);
    expect(ok.decision).toBe('approve');
    expect(ok.lastError).toBeNull();
  });

  it('reads an empty or misshapen score again, and decides from the real one, never from the empty answer', async () => {
    const proxy = await startOutageProxy();
    try {
      p = await startPair({ RESULTS_MODE: 'webhook', INCODE_API_URL: proxy.url, JOB_BACKOFF_MS: '10' });
      proxy.state.target = p.emulator.url;
      Object.assign(proxy.state, { failing: /^\/omni\/get\/score/, status: 200, body: '', left: 2 });
      const s = await p.newSession();
      await captureAll(`${p.emulator.url}/0/`, s.token);
      const ready = await p.ready(s.interviewId, 20_000);
      expect(ready).toMatchObject({ resultsStatus: 'ready', decision: 'approve', lastError: null });
      expect(proxy.state.left).toBeLessThan(0);
      const results = (await p.broker.app.store.listJobs(s.interviewId)).filter((j) => j.kind === 'results');
      expect(results.at(-1)).toMatchObject({ state: 'done' });
      expect(results.at(-1)!.attempts).toBeGreaterThan(2);
    } finally {
      await proxy.close();
    }
  });

  it('with polling on, a results fetch dead-lettered by an outage longer than its attempts is tried again by polling, no refresh needed', async () => {
    const proxy = await startOutageProxy();
    try {
      p = await startPair({ RESULTS_MODE: 'both', INCODE_API_URL: proxy.url, POLL_INTERVAL_MS: '100', POLL_MAX_INTERVAL_MS: '300', JOB_MAX_ATTEMPTS: '2', JOB_BACKOFF_MS: '10', INCODE_MAX_RETRIES: '0', CIRCUIT_FAILURE_THRESHOLD: '1000' }, { faults: { dropWebhookRate: 1 } });
      proxy.state.target = p.emulator.url;
      // The score endpoint is down for the first fetch's two attempts and then some.
      Object.assign(proxy.state, { failing: /^\/omni\/get\/score/, status: 503, left: 4 });
      const s = await p.newSession();
      await captureAll(`${p.emulator.url}/0/`, s.token);
      const ready = await p.ready(s.interviewId, 20_000);
      expect(ready).toMatchObject({ resultsStatus: 'ready', decision: 'approve', lastError: null });
      const results = (await p.broker.app.store.listJobs(s.interviewId)).filter((j) => j.kind === 'results');
      expect(results[0]).toMatchObject({ state: 'dead', attempts: 2, lastError: 'INCODE_UNAVAILABLE' });
      expect(results.at(-1)).toMatchObject({ state: 'done' });
      expect((await p.broker.app.store.listAudit(s.interviewId)).map((a) => a.kind)).toContain('dead-letter');
      // The session's final results ended polling again.
      expect((await p.broker.app.store.getSession(s.interviewId))!.nextPollAt).toBeNull();
    } finally {
      await proxy.close();
    }
  });

  it("with polling on, a reviewer's verdict announced after polling stopped is checked again until Incode's status read shows it", async () => {
    p = await startPair({ RESULTS_MODE: 'both', POLL_INTERVAL_MS: '100', POLL_MAX_INTERVAL_MS: '300', JOB_BACKOFF_MS: '50', JOB_MAX_ATTEMPTS: '30' }, { faults: { dropWebhookRate: 1 }, processingDelayMs: 50 });
    const s = await p.newSession();
    await captureAll(s.apiUrl, s.token);
    expect((await p.ready(s.interviewId)).decision).toBe('approve');
    await waitFor(async () => (await p.broker.app.store.getSession(s.interviewId))!.nextPollAt === null);
    // A reviewer overrides the approval; its webhook comes before Incode's status read shows the verdict.
    const tok = (await webhookToken(p.broker.url)).body.access_token as string;
    await request(p.broker.url).post('/webhooks/incode').set('authorization', `Bearer ${tok}`).send({ interviewId: s.interviewId, onboardingStatus: 'MANUAL_REVIEW_REJECTED' }).expect(200);
    await waitFor(async () => (await p.broker.app.store.listJobs(s.interviewId)).some((j) => j.kind === 'verify' && j.lastError === 'STATUS_BEHIND_WEBHOOK'), 10_000);
    const emu = p.emulator.app.emulator.sessions;
    expect(emu.setStatus(emu.get(s.interviewId)!, 'MANUAL_REVIEW_REJECTED')).toBe(true);
    const verdict = await waitFor(async () => {
      const v = (await p.admin(`/sessions/${s.interviewId}`)).body;
      return v.onboardingStatus === 'MANUAL_REVIEW_REJECTED' && v.decision === 'decline' ? v : null;
    }, 20_000);
    expect(verdict.resultsStatus).toBe('ready');
  });

  // The dead letter is written; the follow-up's first write (its audit row) fails, as in a database blip or a stop.
  const deadLetterAuditFails = (real: Store) => (method: string) =>
    method === 'audit'
      ? async (...args: never[]) => {
          const a = args as unknown as Parameters<Store['audit']>;
          if (a[0] === 'dead-letter') throw new Error('database went away');
          return real.audit(...a);
        }
      : null;

  it.each([
    ['(the worker says it died only for want of attempts)', undefined],
    ["even when the database then fails the dead letter's follow-up (the retry is written with the dead letter)", deadLetterAuditFails],
  ])('a deletion at Incode dead-lettered by an outage is queued again for an hour later %s', async (_case, override) => {
    const proxy = await startOutageProxy();
    try {
      p = await startPair({ RESULTS_MODE: 'webhook', INCODE_API_URL: proxy.url, JOB_MAX_ATTEMPTS: '2', JOB_BACKOFF_MS: '10', INCODE_MAX_RETRIES: '0' }, {}, override);
      proxy.state.target = p.emulator.url;
      const s = await p.newSession();
      Object.assign(proxy.state, { failing: /^\/omni\/interview\?/, status: 503 });
      const t0 = Date.now();
      await request(p.broker.url).delete(`/sessions/${s.interviewId}?incode=true`).set('authorization', `Bearer ${ADMIN_KEY}`).expect(200);
      const again = await waitFor(async () => (await p.broker.app.store.listJobs(s.interviewId)).find((j) => j.kind === 'incode-delete' && j.state === 'queued' && typeof j.payload.deadSince === 'number') ?? null, 10_000);
      expect(again.runAt).toBeGreaterThanOrEqual(t0 + 3_600_000);
      expect((await p.broker.app.store.listJobs(s.interviewId)).filter((j) => j.kind === 'incode-delete' && j.state === 'dead')).toEqual([expect.objectContaining({ attempts: 2, lastError: 'INCODE_UNAVAILABLE' })]);
      expect((await p.admin(`/sessions/${s.interviewId}`).expect(200)).body.incodeDeletion).toBe('scheduled');
      if (override) expect(p.broker.logs.text).toContain('dead-letter follow-up failed; refresh the session');
    } finally {
      await proxy.close();
    }
  });

  it('a results fetch refused for the API key (403, a key being rotated) is retried with backoff, not dead-lettered at once', async () => {
    const proxy = await startOutageProxy();
    try {
      p = await startPair({ RESULTS_MODE: 'webhook', INCODE_API_URL: proxy.url, JOB_MAX_ATTEMPTS: '5', JOB_BACKOFF_MS: '10', INCODE_MAX_RETRIES: '0' });
      proxy.state.target = p.emulator.url;
      Object.assign(proxy.state, { failing: /^\/omni\/get\/score/, status: 403, left: 2 });
      const s = await p.newSession();
      await captureAll(`${p.emulator.url}/0/`, s.token);
      const ready = await p.ready(s.interviewId);
      expect(ready).toMatchObject({ resultsStatus: 'ready', decision: 'approve', lastError: null });
      expect(proxy.state.left).toBeLessThan(0);
      const results = (await p.broker.app.store.listJobs(s.interviewId)).filter((j) => j.kind === 'results');
      expect(results).toEqual([expect.objectContaining({ state: 'done', attempts: 3 })]);
      expect((await p.broker.app.store.listAudit(s.interviewId)).map((a) => a.kind)).not.toContain('dead-letter');
    } finally {
      await proxy.close();
    }
  });

  it('a dead results job leaves results already stored ready and says why in lastError', async () => {
    const proxy = await startOutageProxy();
    try {
      p = await startPair({ RESULTS_MODE: 'webhook', INCODE_API_URL: proxy.url, JOB_MAX_ATTEMPTS: '2', JOB_BACKOFF_MS: '10', INCODE_MAX_RETRIES: '0', CIRCUIT_FAILURE_THRESHOLD: '1000' });
      proxy.state.target = p.emulator.url;
      const s = await p.newSession();
      await captureAll(`${p.emulator.url}/0/`, s.token);
      const before = await p.ready(s.interviewId);
      // Incode's score endpoint goes down; its status endpoint still answers, so the refresh's results job is what dies.
      proxy.state.failing = /^\/omni\/get\/score/;
      await request(p.broker.url).post(`/sessions/${s.interviewId}/refresh`).set('authorization', `Bearer ${ADMIN_KEY}`).expect(202);
      await waitFor(async () => (await p.broker.app.store.listJobs(s.interviewId)).some((j) => j.kind === 'results' && j.state === 'dead'));
      const after = await waitFor(async () => {
        const r = (await p.admin(`/sessions/${s.interviewId}`)).body;
        return r.lastError && r;
      });
      expect(after).toMatchObject({ resultsStatus: 'ready', decision: before.decision, lastError: 'INCODE_UNAVAILABLE', scores: before.scores, fetchedAt: before.fetchedAt });
      expect((await p.admin('/sessions?resultsStatus=ready')).body.items.map((i: { interviewId: string }) => i.interviewId)).toContain(s.interviewId);
      expect((await p.broker.app.store.listAudit(s.interviewId)).filter((a) => a.kind === 'dead-letter').map((a) => a.detail)).toEqual([expect.objectContaining({ kind: 'results', code: 'INCODE_UNAVAILABLE' })]);
      expect((await request(p.broker.url).get('/metrics')).text).toMatch(/result_jobs_dead_letters_total\{kind="results"\} 1/);
      // Once Incode heals, a refresh stores fresh results and clears the error.
      proxy.state.failing = null;
      await request(p.broker.url).post(`/sessions/${s.interviewId}/refresh`).set('authorization', `Bearer ${ADMIN_KEY}`).expect(202);
      const healed = await waitFor(async () => {
        const r = (await p.admin(`/sessions/${s.interviewId}`)).body;
        return r.lastError === null && r.fetchedAt !== before.fetchedAt && r;
      });
      expect(healed.resultsStatus).toBe('ready');
    } finally {
      await proxy.close();
    }
  });

  it("checks Incode's redelivery of a webhook again after its verify job died; a processed one stays a duplicate", async () => {
    const proxy = await startOutageProxy();
    try {
      p = await startPair(
        { RESULTS_MODE: 'webhook', INCODE_API_URL: proxy.url, JOB_MAX_ATTEMPTS: '2', JOB_BACKOFF_MS: '10', INCODE_MAX_RETRIES: '0', CIRCUIT_FAILURE_THRESHOLD: '1000' },
        { faults: { dropWebhookRate: 1 } },
      );
      proxy.state.target = p.emulator.url;
      const s = await p.newSession();
      await captureAll(`${p.emulator.url}/0/`, s.token);
      await waitFor(async () => p.emulator.app.emulator.sessions.get(s.interviewId)?.status === 'ONBOARDING_FINISHED');
      // Incode's status endpoint is down for every attempt of the webhook's check.
      proxy.state.failing = /onboarding\/status/;
      const tok = (await webhookToken(p.broker.url)).body.access_token as string;
      const body = { interviewId: s.interviewId, onboardingStatus: 'ONBOARDING_FINISHED' };
      const verifyJobs = async () => (await p.broker.app.store.listJobs(s.interviewId)).filter((j) => j.kind === 'verify').map((j) => j.state);
      await request(p.broker.url).post('/webhooks/incode').set('authorization', `Bearer ${tok}`).send(body).expect(200);
      await waitFor(async () => (await verifyJobs()).includes('dead'), 10_000);
      // Incode heals and redelivers the same webhook (as it retries): it is checked again, not dropped as a duplicate.
      proxy.state.failing = null;
      await waitFor(async () => {
        await request(p.broker.url).post('/webhooks/incode').set('authorization', `Bearer ${tok}`).send(body).expect(200);
        return (await verifyJobs()).length === 2;
      }, 5_000, 200);
      const done = await p.ready(s.interviewId, 10_000);
      expect(done).toMatchObject({ onboardingStatus: 'ONBOARDING_FINISHED', decision: 'approve' });
      // Once processed, a further redelivery is a duplicate again.
      await request(p.broker.url).post('/webhooks/incode').set('authorization', `Bearer ${tok}`).send(body).expect(200);
      expect(await verifyJobs()).toEqual(['dead', 'done']);
    } finally {
      await proxy.close();
    }
  });

  it('schedules a poll for a session left without one when its verify job dies', async () => {
    const proxy = await startOutageProxy();
    try {
      p = await startPair(
        { RESULTS_MODE: 'both', POLL_INTERVAL_MS: '100', POLL_MAX_INTERVAL_MS: '300', INCODE_API_URL: proxy.url, JOB_MAX_ATTEMPTS: '2', JOB_BACKOFF_MS: '10', INCODE_MAX_RETRIES: '0', CIRCUIT_FAILURE_THRESHOLD: '1000' },
        { faults: { dropWebhookRate: 1 } },
      );
      proxy.state.target = p.emulator.url;
      proxy.state.failing = /onboarding\/status/;
      const s = await p.newSession();
      await captureAll(`${p.emulator.url}/0/`, s.token);
      await waitFor(async () => p.emulator.app.emulator.sessions.get(s.interviewId)?.status === 'ONBOARDING_FINISHED');
      // A session not being polled (as one recorded while RESULTS_MODE was webhook), once the checks in flight are over.
      const store = p.broker.app.store;
      await store.schedulePoll(s.interviewId, null, 0);
      await waitFor(async () => (await store.listJobs(s.interviewId)).every((j) => j.state === 'done' || j.state === 'dead'), 10_000);
      await store.schedulePoll(s.interviewId, null, 0);
      const tok = (await webhookToken(p.broker.url)).body.access_token as string;
      await request(p.broker.url).post('/webhooks/incode').set('authorization', `Bearer ${tok}`).send({ interviewId: s.interviewId, onboardingStatus: 'ONBOARDING_FINISHED' }).expect(200);
      await waitFor(async () => (await store.listJobs(s.interviewId)).some((j) => j.kind === 'verify' && (j.payload as { source?: string }).source === 'webhook' && j.state === 'dead'), 10_000);
      await waitFor(async () => typeof (await store.getSession(s.interviewId))?.nextPollAt === 'number', 5_000);
      // Incode heals and the webhook is never redelivered: the poll finds the result.
      proxy.state.failing = null;
      const done = await p.ready(s.interviewId, 10_000);
      expect(done.decision).toBe('approve');
      // The poll's own check is kept as no history: the results job it queued says who found them.
      expect((await store.listJobs(s.interviewId)).some((j) => j.kind === 'results' && (j.payload as { source?: string }).source === 'poll' && j.state === 'done')).toBe(true);
    } finally {
      await proxy.close();
    }
  });

  it('records a session created elsewhere, with a poll, when its first verify job dies; without polling, the row says why', async () => {
    const proxy = await startOutageProxy();
    // Incode's status endpoint is down for every attempt of the webhook's check; every later webhook is lost.
    const dyingCheck = async (env: Record<string, string>) => {
      p = await startPair(
        { POLL_INTERVAL_MS: '100', POLL_MAX_INTERVAL_MS: '300', INCODE_API_URL: proxy.url, JOB_MAX_ATTEMPTS: '2', JOB_BACKOFF_MS: '10', INCODE_MAX_RETRIES: '0', CIRCUIT_FAILURE_THRESHOLD: '1000', ...env },
        { faults: { dropWebhookRate: 1 } },
      );
      proxy.state.target = p.emulator.url;
      proxy.state.failing = /onboarding\/status/;
      // A session started directly against Incode: the broker has no row for it until a check succeeds.
      const start = await startAtIncode(p);
      const id = start.body.interviewId as string;
      await captureAll(`${p.emulator.url}/0/`, start.body.token);
      await waitFor(async () => p.emulator.app.emulator.sessions.get(id)?.status === 'ONBOARDING_FINISHED');
      const tok = (await webhookToken(p.broker.url)).body.access_token as string;
      await request(p.broker.url).post('/webhooks/incode').set('authorization', `Bearer ${tok}`).send({ interviewId: id, onboardingStatus: 'ONBOARDING_FINISHED' }).expect(200);
      await waitFor(async () => (await p.broker.app.store.listJobs(id)).some((j) => j.kind === 'verify' && j.state === 'dead'), 10_000);
      const rec = await waitFor(async () => {
        const r = await p.broker.app.store.getSession(id);
        return r?.lastError && r;
      }, 5_000);
      return { id, rec };
    };
    try {
      const { id, rec } = await dyingCheck({ RESULTS_MODE: 'both' });
      expect(rec).toMatchObject({ origin: 'external', onboardingStatus: 'UNKNOWN', resultsStatus: 'pending', lastError: 'INCODE_UNAVAILABLE', nextPollAt: expect.any(Number) });
      // Incode heals and the webhook is never redelivered: the poll finds the result.
      proxy.state.failing = null;
      const done = await p.ready(id, 10_000);
      expect(done).toMatchObject({ origin: 'external', onboardingStatus: 'ONBOARDING_FINISHED', decision: 'approve', lastError: null });
      expect((await p.broker.app.store.listJobs(id)).some((j) => j.kind === 'results' && (j.payload as { source?: string }).source === 'poll' && j.state === 'done')).toBe(true);
      await p.close();

      // Polling off: nothing will read the session again until Incode redelivers, so the row shows the failure.
      const unpolled = await dyingCheck({ RESULTS_MODE: 'webhook' });
      expect(unpolled.rec).toMatchObject({ origin: 'external', resultsStatus: 'pending', lastError: 'INCODE_UNAVAILABLE', nextPollAt: null });
      expect((await p.admin('/sessions?resultsStatus=pending')).body.items.map((i: { interviewId: string }) => i.interviewId)).toContain(unpolled.id);
    } finally {
      await proxy.close();
    }
  });

  it("keeps a newer status's results when an older status's results job answers last, and tells the customer once", async () => {
    // Held until the newer fetch has answered, however slow the machine (the bound only ends a broken run), and within
    // the broker's own timeout for the call.
    const proxy = await startSlowFirstScoreProxy(25_000);
    const receiver = await callbackReceiver();
    try {
      // The reviewer's verdict comes 400 ms after ONBOARDING_FINISHED, while that status's score fetch is held back.
      p = await startPair({ RESULTS_MODE: 'webhook', INCODE_API_URL: proxy.url, INCODE_TIMEOUT_MS: '30000', CALLBACK_URL: receiver.hook, CALLBACK_SECRET }, { processingDelayMs: 400 });
      proxy.state.target = p.emulator.url;
      const s = await p.newSession({ externalCustomerId: 'emu:manual-approved' });
      await captureAll(`${p.emulator.url}/0/`, s.token);
      const results = async () => (await p.broker.app.store.listJobs(s.interviewId)).filter((j) => j.kind === 'results');
      await waitFor(async () => (await results()).filter((j) => j.state === 'done').length === 2, 30_000);
      // The race happened: the older fetch (MANUAL_PENDING) answered after the newer one (MANUAL_OK).
      expect(proxy.state.log).toEqual(['fast:MANUAL_OK', 'slow:MANUAL_PENDING']);
      const v = (await p.admin(`/sessions/${s.interviewId}`)).body;
      expect(v).toMatchObject({ onboardingStatus: 'MANUAL_REVIEW_APPROVED', resultsStatus: 'ready', decision: 'approve' });
      expect(v.scores.overall.status).toBe('MANUAL_OK');
      // The older answer stored nothing, so it sent nothing: one callback, for the newer status.
      await waitFor(async () => (await p.broker.app.store.countJobs()).queued + (await p.broker.app.store.countJobs()).running === 0);
      expect(receiver.received.map((c) => c.data)).toEqual([{ interviewId: s.interviewId, onboardingStatus: 'MANUAL_REVIEW_APPROVED', decision: 'approve', updatedAt: expect.any(String) }]);
    } finally {
      await proxy.close();
      await receiver.close();
    }
  }, 60_000);

  it('stops an attempt whose Incode call outlasts the job lease, and retries it, instead of letting a second attempt run beside it', async () => {
    const proxy = await startSlowFirstScoreProxy(8000);
    try {
      // The held score call would answer after up to 8 s (no later one comes to release it); the lease is 2 s and
      // Incode's own timeout is far longer.
      p = await startPair({ RESULTS_MODE: 'webhook', INCODE_API_URL: proxy.url, INCODE_TIMEOUT_MS: '30000', JOB_LEASE_MS: '2000', JOB_BACKOFF_MS: '100' });
      proxy.state.target = p.emulator.url;
      const s = await p.newSession();
      await captureAll(`${p.emulator.url}/0/`, s.token);
      const v = await p.ready(s.interviewId, 20_000);
      expect(v.resultsStatus).toBe('ready');
      const [job] = (await p.broker.app.store.listJobs(s.interviewId)).filter((j) => j.kind === 'results');
      // The first attempt gave up (a timeout) and the same job's second attempt stored the results.
      expect(job).toMatchObject({ state: 'done', attempts: 2 });
      // The held call was abandoned (the proxy saw the client leave before its answer) and only then was the score
      // read again.
      expect(proxy.state.log).toEqual(['slow:abandoned', 'fast:OK']);
    } finally {
      await proxy.close();
    }
  }, 30_000);

  it('acknowledges an authenticated webhook whose extra fields hold NUL characters (else Incode retries it forever)', async () => {
    p = await startPair({ RESULTS_MODE: 'webhook' });
    const s = await p.newSession();
    const tok = (await webhookToken(p.broker.url)).body.access_token as string;
    // The status Incode reads for a new session, so the check is done at once (one ahead of the read would come back).
    const body = { interviewId: s.interviewId, onboardingStatus: 'UNKNOWN', flowId: 'flow\u0000x', clientId: '\u0000', note: 'a\u0000b', lone: 'x\ud800y' };
    const first = await request(p.broker.url).post('/webhooks/incode').set('authorization', `Bearer ${tok}`).send(body);
    expect([first.status, first.body]).toEqual([200, { success: true }]);
    // Recorded once: Incode's redelivery is a duplicate, and the hint was checked like any other.
    await request(p.broker.url).post('/webhooks/incode').set('authorization', `Bearer ${tok}`).send(body).expect(200);
    const verify = await waitFor(async () => {
      const jobs = (await p.broker.app.store.listJobs(s.interviewId)).filter((j) => j.kind === 'verify');
      return jobs.length === 1 && jobs[0].state === 'done' && jobs;
    });
    expect(verify[0].payload).toMatchObject({ source: 'webhook', eventKey: `${s.interviewId}:UNKNOWN`, claimed: 'UNKNOWN' });
  });

  it('acknowledges an authenticated webhook whose informative fields are long or not strings, and records it', async () => {
    p = await startPair({ RESULTS_MODE: 'webhook' });
    const s = await p.newSession();
    const tok = (await webhookToken(p.broker.url)).body.access_token as string;
    const body = { interviewId: s.interviewId, onboardingStatus: 'ID_VALIDATION_FINISHED', externalId: 'e'.repeat(300), clientId: 'c'.repeat(500), flowId: 42 };
    const res = await request(p.broker.url).post('/webhooks/incode').set('authorization', `Bearer ${tok}`).send(body);
    expect([res.status, res.body]).toEqual([200, { success: true }]);
    const verify = await waitFor(async () => (await p.broker.app.store.listJobs(s.interviewId)).find((j) => j.kind === 'verify'));
    expect(verify.payload).toMatchObject({ source: 'webhook', eventKey: `${s.interviewId}:ID_VALIDATION_FINISHED` });
    // An authenticated webhook refused as invalid is counted as such: a status Incode will retry and may then lose.
    await request(p.broker.url).post('/webhooks/incode').set('authorization', `Bearer ${tok}`).send({ interviewId: 'not an id!', onboardingStatus: 'ONBOARDING_FINISHED' }).expect(400);
    const metrics = (await request(p.broker.url).get('/metrics')).text;
    expect(metrics).toMatch(/^webhooks_received_total\{status="unknown",auth="oauth",outcome="invalid"\} 1$/m);
    expect(metrics).toMatch(/^webhooks_received_total\{status="ID_VALIDATION_FINISHED",auth="oauth",outcome="recorded"\} [1-9]/m);
  });

  it('records a status of any spelling as a hint to verify, and acknowledges a webhook of another type without recording it', async () => {
    p = await startPair({ RESULTS_MODE: 'webhook' });
    const s = await p.newSession();
    const tok = (await webhookToken(p.broker.url)).body.access_token as string;
    const send = (body: object) => request(p.broker.url).post('/webhooks/incode').set('authorization', `Bearer ${tok}`).send(body);
    // Incode's list of statuses grows: one spelled unlike the rest is still recorded, and read back from Incode.
    expect((await send({ interviewId: s.interviewId, onboardingStatus: 'onboarding_finished' })).status).toBe(200);
    const verify = await waitFor(async () => (await p.broker.app.store.listJobs(s.interviewId)).find((j) => j.kind === 'verify'));
    expect(verify.payload).toMatchObject({ source: 'webhook', claimed: 'onboarding_finished' });
    // Logged as it is only when shaped like a status name: any other text is OTHER in the log.
    expect((await send({ interviewId: s.interviewId, onboardingStatus: 'maria@example.com 1987-02-03' })).status).toBe(200);
    await waitFor(() => p.broker.logs.lines.some((l) => l.includes('webhook recorded') && l.includes('"onboardingStatus":"OTHER"')) || null);
    expect(p.broker.logs.text).toMatch(/"onboardingStatus":"onboarding_finished"/);
    // Face authentication's payload and a session event, pointed at the same URL: acknowledged, so Incode does not
    // retry them for half an hour, and nothing recorded.
    const other = await send({ interviewId: s.interviewId, customerId: 'c1', overallStatus: 'PASS', hint: 'MARIA GONZALEZ', 'email maria@example.com': 1, 'zq-alice': 1, alice4711: 2 });
    expect([other.status, other.body]).toEqual([200, { success: true }]);
    expect((await send({ event_type: 'SESSION_SUCCEEDED', data: { secretValue: 'MARIA GONZALEZ' } })).status).toBe(200);
    expect((await p.broker.app.store.listJobs(s.interviewId)).filter((j) => j.kind === 'verify')).toHaveLength(2);
    // A status without the session it is about is still refused, and one of spaces only; spaces around one are no part
    // of it.
    expect((await send({ onboardingStatus: 'ONBOARDING_FINISHED' })).body.code).toBe('VALIDATION_FAILED');
    expect((await send({ interviewId: s.interviewId, onboardingStatus: '   ' })).body.code).toBe('VALIDATION_FAILED');
    expect((await send({ interviewId: s.interviewId, onboardingStatus: ' ID_VALIDATION_FINISHED ' })).status).toBe(200);
    await waitFor(async () => (await p.broker.app.store.listJobs(s.interviewId)).some((j) => j.kind === 'verify' && j.payload.claimed === 'ID_VALIDATION_FINISHED') || null);
    const metrics = (await request(p.broker.url).get('/metrics')).text;
    expect(metrics).toMatch(/^webhooks_received_total\{status="none",auth="oauth",outcome="ignored"\} 2$/m);
    expect(metrics).toMatch(/^webhooks_received_total\{status="OTHER",auth="oauth",outcome="recorded"\} 2$/m);
    expect(metrics).toMatch(/^webhooks_received_total\{status="ID_VALIDATION_FINISHED",auth="oauth",outcome="recorded"\} 1$/m);
    // Its field names are logged for the operator, never its values, nor a key that is not shaped like a field name.
    expect(p.broker.logs.text).toMatch(/webhook of another type ignored/);
    expect(p.broker.logs.text).toMatch(/overallStatus/);
    expect(p.broker.logs.text).not.toMatch(/MARIA|PASS|maria@example|alice/);
  });

  it('answers 400 with a code, never 500, for a cursor or a time the database cannot take', async () => {
    p = await startPair({ RESULTS_MODE: 'webhook' });
    const forge = (v: unknown) => Buffer.from(JSON.stringify(v), 'utf8').toString('base64url');
    for (const v of [[1.5, 'x'], [1e300, 'x'], [1, 'a\u0000'], [1, 'a\u001fb'], [1, 'x'.repeat(300)]]) {
      const r = await p.admin(`/sessions?cursor=${forge(v)}`);
      expect([JSON.stringify(v), r.status, r.body.code]).toEqual([JSON.stringify(v), 400, 'INVALID_CURSOR']);
    }
    // A leap second is a valid RFC 3339 date-time that Date.parse cannot read.
    for (const q of ['since=2024-01-01T23:59:60Z', 'until=2016-12-31T23:59:60Z', 'since=2016-12-31T23:59:60%2B00:00']) {
      const r = await p.admin(`/sessions?${q}`);
      expect([q, r.status, r.body.code]).toEqual([q, 400, 'VALIDATION_FAILED']);
    }
    // What the API hands out keeps working.
    const ids = [(await p.newSession()).interviewId, (await p.newSession()).interviewId, (await p.newSession()).interviewId];
    const page1 = (await p.admin('/sessions?limit=2&since=2000-01-01T00:00:00Z&until=9999-12-31T23:59:59Z').expect(200)).body;
    const page2 = (await p.admin(`/sessions?limit=2&cursor=${page1.nextCursor}`).expect(200)).body;
    expect([...page1.items, ...page2.items].map((i: { interviewId: string }) => i.interviewId).sort()).toEqual(ids.sort());
    // Bounds finer than a millisecond hold as written: half a millisecond after a session's updatedAt excludes it from
    // `since` and includes it in `until`; exactly at it, the other way round.
    const one = (await p.admin(`/sessions/${ids[0]}`).expect(200)).body as { updatedAt: string };
    const listed = async (q: string) => ((await p.admin(`/sessions?${q}`).expect(200)).body.items as { interviewId: string }[]).some((i) => i.interviewId === ids[0]);
    const half = one.updatedAt.replace(/Z$/, '5Z');
    expect([await listed(`since=${half}`), await listed(`until=${half}`)]).toEqual([false, true]);
    expect([await listed(`since=${one.updatedAt}`), await listed(`until=${one.updatedAt}`)]).toEqual([true, false]);
  });

  it('reads a session whose own token Incode no longer takes (expired) with an executive token, instead of giving up', async () => {
    // Session tokens live 4 s here (an account's shorter lifetime): processing ends, and its webhook comes, after that.
    p = await startPair({ RESULTS_MODE: 'webhook' }, { tokenTtlSeconds: 4, processingDelayMs: 5000 });
    const s = await p.newSession();
    await captureAll(s.apiUrl, s.token);
    const done = await p.ready(s.interviewId, 20_000);
    expect(done).toMatchObject({ origin: 'broker', onboardingStatus: 'ONBOARDING_FINISHED', decision: 'approve' });
    // Past the expiry its claims state, the token was not even tried: no attempt failed on it.
    const jobs = await p.broker.app.store.listJobs(s.interviewId);
    expect(jobs.filter((j) => j.lastError !== null)).toEqual([]);

    // A token Incode refuses before its stated expiry (revoked, say): the next attempt reads with an executive token.
    const other = await startAtIncode(p);
    await p.broker.app.results.trackSession({ interviewId: other.body.interviewId, token: 'not-a-token-incode-takes' });
    await captureAll(`${p.emulator.url}/0/`, other.body.token);
    const read = await p.ready(other.body.interviewId, 30_000);
    expect(read).toMatchObject({ origin: 'broker', decision: 'approve' });
    const refused = (await p.broker.app.store.listJobs(other.body.interviewId)).filter((j) => j.lastError === 'SESSION_TOKEN_REFUSED');
    expect(refused.length).toBeGreaterThan(0);
  }, 60_000);

  it('reads sessions created elsewhere with an executive token; without one they are recorded as unprocessable', async () => {
    p = await startPair({ RESULTS_MODE: 'webhook' });
    // A session started directly against Incode (e.g. a hosted-flow link), not through the broker.
    const start = await startAtIncode(p);
    await captureAll(`${p.emulator.url}/0/`, start.body.token);
    const done = await p.ready(start.body.interviewId);
    expect(done.origin).toBe('external');
    expect(done.decision).toBe('approve');
    await p.close();

    p = await startPair({ RESULTS_MODE: 'webhook', INCODE_EXECUTIVE_EMAIL: '', INCODE_EXECUTIVE_PASSWORD: '' });
    const other = await startAtIncode(p);
    await captureAll(`${p.emulator.url}/0/`, other.body.token);
    const rec = await waitFor(async () => {
      const r = await p.admin(`/sessions/${other.body.interviewId}`);
      return r.body.resultsStatus === 'unprocessable' && r.body;
    });
    expect(rec.lastError).toBe('EXECUTIVE_CREDENTIALS_MISSING');
  });

  it('polls sessions created elsewhere when polling is on and executive credentials are set; without them, unprocessable and unpolled', async () => {
    p = await startPair({ RESULTS_MODE: 'both', POLL_INTERVAL_MS: '100', POLL_MAX_INTERVAL_MS: '300' }, { faults: { dropWebhookRate: 1 } });
    const start = await startAtIncode(p);
    const id = start.body.interviewId as string;
    // First seen through one webhook; every later one is lost.
    let tok = (await webhookToken(p.broker.url)).body.access_token as string;
    await request(p.broker.url).post('/webhooks/incode').set('authorization', `Bearer ${tok}`).send({ interviewId: id, onboardingStatus: 'ID_VALIDATION_FINISHED' }).expect(200);
    const rec = await waitFor(async () => p.broker.app.store.getSession(id), 10_000);
    expect(rec.origin).toBe('external');
    expect(rec.nextPollAt).toEqual(expect.any(Number));
    await captureAll(`${p.emulator.url}/0/`, start.body.token);
    const done = await p.ready(id, 10_000);
    expect(done).toMatchObject({ origin: 'external', onboardingStatus: 'ONBOARDING_FINISHED', decision: 'approve' });
    expect((await request(p.broker.url).get('/metrics')).text).toMatch(/polling_repairs_total [1-9]/);
    await p.close();

    p = await startPair({ RESULTS_MODE: 'both', POLL_INTERVAL_MS: '100', POLL_MAX_INTERVAL_MS: '300', INCODE_EXECUTIVE_EMAIL: '', INCODE_EXECUTIVE_PASSWORD: '' }, { faults: { dropWebhookRate: 1 } });
    const other = await startAtIncode(p);
    tok = (await webhookToken(p.broker.url)).body.access_token as string;
    await request(p.broker.url).post('/webhooks/incode').set('authorization', `Bearer ${tok}`).send({ interviewId: other.body.interviewId, onboardingStatus: 'ID_VALIDATION_FINISHED' }).expect(200);
    const unread = await waitFor(async () => {
      const r = await p.broker.app.store.getSession(other.body.interviewId);
      return r?.resultsStatus === 'unprocessable' && r;
    }, 10_000);
    expect(unread).toMatchObject({ origin: 'external', lastError: 'EXECUTIVE_CREDENTIALS_MISSING', nextPollAt: null });
  });

  /** A session run to its results with a callback receiver (`accept` as callbackReceiver's): the first delivery taken. */
  async function firstDelivery(env: Record<string, string>, session: Record<string, unknown> = {}, accept?: (attempt: number) => boolean) {
    const receiver = await callbackReceiver(accept);
    try {
      p = await startPair({ RESULTS_MODE: 'webhook', CALLBACK_URL: receiver.hook, ...env });
      const s = await p.newSession(session);
      await captureAll(s.apiUrl, s.token);
      await p.ready(s.interviewId);
      await waitFor(async () => receiver.received.length > 0);
      return { s, ...receiver.received[0] };
    } finally {
      await receiver.close();
    }
  }

  it('notifies the customer with a Standard Webhooks signature, without PII', async () => {
    // The first delivery fails: the event is retried.
    const { s, headers, body } = await firstDelivery({ CALLBACK_SECRET }, { externalCustomerId: 'cust-secret-name' }, (attempt) => attempt > 1);
    const expected = createHmac('sha256', CALLBACK_SECRET_BYTES).update(`${headers['webhook-id']}.${headers['webhook-timestamp']}.${body}`).digest('base64');
    expect(headers['webhook-signature']).toBe(`v1,${expected}`);
    const event = JSON.parse(body);
    expect(event).toMatchObject({ type: 'session.results_ready', data: { interviewId: s.interviewId, onboardingStatus: 'ONBOARDING_FINISHED', decision: 'approve' } });
    expect(asPublished(body)).toBe(true);
    expect(body).not.toContain('cust-secret-name');
    // The event's own id (its job's), the same on its retry: the first attempt was refused. The job is marked done once
    // the receiver's answer is read, a moment after the receiver saw the delivery.
    const callbackJob = async () => (await p.broker.app.store.listJobs(s.interviewId)).find((j) => j.kind === 'callback');
    await waitFor(async () => ((await callbackJob())?.state === 'done' ? true : null), 10_000);
    const job = (await callbackJob())!;
    expect(job).toMatchObject({ state: 'done', attempts: 2 });
    expect(headers['webhook-id']).toBe(`msg_${s.interviewId}_ONBOARDING_FINISHED_approve_${job.id}`);
    // The payload's timestamp is when the results were stored, the same on every attempt of the event.
    expect(event.timestamp).toBe(new Date(job.payload.fetchedAt as number).toISOString());
  });

  it('signs each callback with every secret of CALLBACK_SECRET during a rotation, and gives the whole attempt one deadline', async () => {
    const NEW_BYTES = Buffer.from('the-new-customer-secret-bytes');
    const { headers, body } = await firstDelivery({ CALLBACK_SECRET: `whsec_${NEW_BYTES.toString('base64')} ${CALLBACK_SECRET}` });
    const sign = (key: Buffer) => `v1,${createHmac('sha256', key).update(`${headers['webhook-id']}.${headers['webhook-timestamp']}.${body}`).digest('base64')}`;
    // Space-separated, the new one first: a receiver holding either verifies it.
    expect(headers['webhook-signature']).toBe(`${sign(NEW_BYTES)} ${sign(CALLBACK_SECRET_BYTES)}`);
    // A receiver that answers at once and then trickles its body (a byte every 100 ms, for 20 s) is let go at the
    // attempt's deadline, not after its last byte: the attempt is over while the receiver is still writing.
    let finished = false;
    const trickle = createServer((_req, res) => {
      res.writeHead(200, { 'content-type': 'text/plain' });
      const t = setInterval(() => res.write('.'), 100);
      res.on('close', () => clearInterval(t));
      setTimeout(() => (clearInterval(t), res.end(), (finished = true)), 20_000);
    });
    await new Promise<void>((r) => trickle.listen(0, '127.0.0.1', r));
    try {
      const url = `http://127.0.0.1:${(trickle.address() as AddressInfo).port}/`;
      const sent = await sendCallback(url, [CALLBACK_SECRET], { id: 'e1', type: 'session.results_ready', occurredAt: 0, data: {} }, 500);
      // Its 200 came: delivered.
      expect(sent).toEqual({ delivered: true, code: 'OK' });
      expect(finished).toBe(false);
    } finally {
      trickle.closeAllConnections();
      await new Promise((r) => trickle.close(r));
    }
  });

  /**
   * A finished session whose callback its receiver refused until it was dead-lettered (two attempts), its hourly retry
   * now queued: the pair started, the session and its callback jobs.
   */
  async function deadCallbackWaiting(hook: string) {
    p = await startPair({ RESULTS_MODE: 'webhook', CALLBACK_URL: hook, CALLBACK_SECRET, JOB_MAX_ATTEMPTS: '2', JOB_BACKOFF_MS: '10' });
    const s = await p.newSession();
    await captureAll(s.apiUrl, s.token);
    await p.ready(s.interviewId);
    const callbacks = async () => (await p.broker.app.store.listJobs(s.interviewId)).filter((j) => j.kind === 'callback');
    await waitFor(async () => ((await callbacks()).some((j) => j.state === 'dead') && (await callbacks()).length === 2) || null, 10_000);
    return { s, callbacks };
  }

  it('tries a callback its receiver never took again an hour later, as the same event (its webhook-id), for three days', async () => {
    const receiver = await callbackReceiver(() => false);
    try {
      const { s, callbacks } = await deadCallbackWaiting(receiver.hook);
      const [dead, again] = [(await callbacks()).find((j) => j.state === 'dead')!, (await callbacks()).find((j) => j.state === 'queued')!];
      expect(again.runAt - Date.now()).toBeGreaterThan(CALLBACK_RETRY_AFTER_MS - 60_000);
      expect(again.payload).toMatchObject({ ...dead.payload, eventId: `${s.interviewId}:ONBOARDING_FINISHED:approve:${dead.id}`, deadSince: expect.any(Number) });
      // Its time comes, the receiver takes it: the same webhook-id as the attempts before.
      const attemptsBefore = receiver.attempts();
      receiver.acceptFromNowOn();
      await p.broker.app.store.enqueueJob({ ...again, kind: 'callback', runAt: Date.now(), dedupeKey: 'callback-retry:now' }, Date.now());
      await waitFor(async () => receiver.received.length > 0 || null, 10_000);
      expect(receiver.attempts()).toBeGreaterThan(attemptsBefore);
      expect(receiver.received[0].headers['webhook-id']).toBe(`msg_${s.interviewId}_ONBOARDING_FINISHED_approve_${dead.id}`);
      // Its first dead letter shows on the session; a retry's dead letter does not move it again (it would, hourly).
      const shown = (await p.broker.app.store.getSession(s.interviewId))!;
      expect(shown.lastError).toMatch(/^CALLBACK_HTTP_500$/);
      await p.broker.app.results.onDead({ ...again, state: 'dead' }, 'CALLBACK_HTTP_502', true);
      expect(await p.broker.app.store.getSession(s.interviewId)).toMatchObject({ lastError: 'CALLBACK_HTTP_500', updatedAt: shown.updatedAt });
      // A dead retry is tried again, still counted from the first dead letter, and not over a session erased since (the
      // store checks that as it writes the dead letter); past three days it is not, nor one whose failure no retry
      // changes.
      const { results } = p.broker.app;
      expect(results.retryOf({ ...again, state: 'dead' }, 'CALLBACK_HTTP_502', true)).toMatchObject({ payload: { deadSince: again.payload.deadSince }, whileLive: true });
      const old = { ...again, state: 'dead' as const, payload: { ...again.payload, deadSince: Date.now() - CALLBACK_RETRY_FOR_MS } };
      expect(results.retryOf(old, 'CALLBACK_HTTP_500', true)).toBeNull();
      expect(results.retryOf({ ...again, state: 'dead' }, 'ATTEMPTS_EXHAUSTED', false)).toBeNull();
    } finally {
      await receiver.close();
    }
  });

  it('a refresh while a dead callback waits out its hour sends that event now, under its own webhook-id, not a second copy', async () => {
    const receiver = await callbackReceiver(() => false);
    try {
      const { s, callbacks } = await deadCallbackWaiting(receiver.hook);
      const dead = (await callbacks()).find((j) => j.state === 'dead')!;
      // The receiver is back, and the operator asks for the results again: nothing changed at Incode.
      receiver.acceptFromNowOn();
      await request(p.broker.url).post(`/sessions/${s.interviewId}/refresh`).set('authorization', `Bearer ${ADMIN_KEY}`).expect(202);
      await waitFor(async () => receiver.received.length > 0 || null, 15_000);
      await new Promise((r) => setTimeout(r, 500));
      expect(receiver.received.map((r) => r.headers['webhook-id'])).toEqual([`msg_${s.interviewId}_ONBOARDING_FINISHED_approve_${dead.id}`]);
      expect((await callbacks()).length).toBe(2);
    } finally {
      await receiver.close();
    }
  });

  it('closes an expired session even when the status was written by an earlier check that failed before closing it', async () => {
    p = await startPair({ RESULTS_MODE: 'webhook' });
    const s = await p.newSession();
    // The half-done state: EXPIRED stored, the session not yet failed (the first check died between the two writes).
    await p.broker.app.store.advanceStatus(s.interviewId, 'EXPIRED', statusRank('EXPIRED'), false, Date.now());
    expect(await p.broker.app.store.getSession(s.interviewId)).toMatchObject({ onboardingStatus: 'EXPIRED', resultsStatus: 'pending' });
    await p.broker.app.results.apply(s.interviewId, 'EXPIRED', 'poll');
    expect(await p.broker.app.store.getSession(s.interviewId)).toMatchObject({ resultsStatus: 'failed', lastError: 'SESSION_EXPIRED' });
  });

  it('with RETENTION_DELETE_AT_INCODE, a session erased here before its retention period is over is deleted at Incode when the period ends', async () => {
    p = await startPair({ RESULTS_MODE: 'webhook', RETENTION_DAYS: '1', RETENTION_DELETE_AT_INCODE: 'true' });
    const s = await p.newSession();
    const due = (await p.broker.app.store.getSession(s.interviewId))!.createdAt + 86_400_000;
    const del = (query = '') => request(p.broker.url).delete(`/sessions/${s.interviewId}${query}`).set('authorization', `Bearer ${ADMIN_KEY}`).expect(200);
    // The sweep, which deletes at Incode what it erases, never selects an erased session: the deletion is scheduled now.
    expect((await del()).body).toEqual({ interviewId: s.interviewId, erased: true, incodeDeletion: 'scheduled', incodeDeletionAt: new Date(due).toISOString() });
    const deletions = async () => (await p.broker.app.store.listJobs(s.interviewId)).filter((j) => j.kind === 'incode-delete');
    expect(await deletions()).toEqual([expect.objectContaining({ state: 'queued', runAt: due, attempts: 0 })]);
    expect((await p.admin(`/sessions/${s.interviewId}`).expect(200)).body).toMatchObject({ resultsStatus: 'erased', decision: null, incodeDeletion: 'scheduled' });
    expect(p.emulator.app.emulator.sessions.sessions.has(s.interviewId)).toBe(true);
    // Erased again (a retry of a DELETE whose answer was lost): the same answer, and nothing scheduled twice.
    expect((await del()).body).toEqual({ interviewId: s.interviewId, erased: true, incodeDeletion: 'scheduled', incodeDeletionAt: new Date(due).toISOString() });
    expect(await deletions()).toHaveLength(1);
    // Asked for now: done at once, not folded into the one due later.
    expect((await del('?incode=true')).body).toMatchObject({ incodeDeletion: 'queued' });
    await waitFor(async () => (await deletions()).some((j) => j.state === 'done'));
    expect(p.emulator.app.emulator.sessions.sessions.has(s.interviewId)).toBe(false);
  });

  it('with incode=true, an erasure also deletes the session at Incode (executive token, keepCustomer=false), in the background', async () => {
    p = await startPair({ RESULTS_MODE: 'webhook' });
    const s = await p.newSession();
    await captureAll(s.apiUrl, s.token);
    await p.ready(s.interviewId);
    const incode = recordRequests(p.emulator.app.server);
    const calls = () => incode.requests.filter((r) => r.method === 'DELETE').map((r) => r.url);
    try {
      // Without the flag the erasure stays local: Incode still has the session.
      const local = await p.newSession();
      const kept = await request(p.broker.url).delete(`/sessions/${local.interviewId}`).set('authorization', `Bearer ${ADMIN_KEY}`).expect(200);
      expect(kept.body).toEqual({ interviewId: local.interviewId, erased: true, incodeDeletion: null });
      expect(p.emulator.app.emulator.sessions.sessions.has(local.interviewId)).toBe(true);

      const res = await request(p.broker.url).delete(`/sessions/${s.interviewId}?incode=true`).set('authorization', `Bearer ${ADMIN_KEY}`).expect(200);
      expect(res.body).toEqual({ interviewId: s.interviewId, erased: true, incodeDeletion: 'queued' });
      // The job records its audit entry before it is marked done: wait for the job, then read what it did.
      const deletions = async () => (await p.broker.app.store.listJobs(s.interviewId)).filter((j) => j.kind === 'incode-delete').map((j) => j.state);
      await waitFor(async () => (await deletions()).join() === 'done');
      expect((await p.broker.app.store.listAudit(s.interviewId)).filter((a) => a.kind === 'incode-deleted')).toHaveLength(1);
      expect(p.emulator.app.emulator.sessions.sessions.has(s.interviewId)).toBe(false);
      expect(calls()).toEqual([`/omni/interview?interviewId=${s.interviewId}&keepCustomer=false`]);
      // Asked again (the session is gone at Incode too): a quiet success, deleted already.
      await request(p.broker.url).delete(`/sessions/${s.interviewId}?incode=true`).set('authorization', `Bearer ${ADMIN_KEY}`).expect(200);
      await waitFor(async () => (await deletions()).join() === 'done,done');
      expect((await p.broker.app.store.listAudit(s.interviewId)).filter((a) => a.kind === 'incode-deleted')).toHaveLength(2);
      expect((await p.admin(`/sessions/${s.interviewId}`).expect(200)).body).toMatchObject({ resultsStatus: 'erased', incodeDeletion: 'done' });
      // Once the retention sweep has dropped the finished jobs, the audit entry still tells it was done.
      await p.broker.app.store.purgeExpired(Date.now() + 1000, Date.now());
      expect((await p.broker.app.store.listJobs(s.interviewId)).filter((j) => j.kind === 'incode-delete')).toEqual([]);
      expect((await p.admin(`/sessions/${s.interviewId}`).expect(200)).body).toMatchObject({ incodeDeletion: 'done' });
    } finally {
      incode.stop();
    }
  });

  it('says nothing more about a session erased while its callback was still being retried', async () => {
    let open = false;
    const receiver = await callbackReceiver(() => open);
    try {
      p = await startPair({ RESULTS_MODE: 'webhook', JOB_BACKOFF_MS: '50', CALLBACK_URL: receiver.hook, CALLBACK_SECRET });
      const s = await p.newSession();
      await captureAll(s.apiUrl, s.token);
      await p.ready(s.interviewId);
      await waitFor(() => receiver.attempts() > 0);
      await request(p.broker.url).delete(`/sessions/${s.interviewId}`).set('authorization', `Bearer ${ADMIN_KEY}`).expect(200);
      open = true;
      const callbackJob = async () => (await p.broker.app.store.listJobs(s.interviewId)).find((j) => j.kind === 'callback');
      await waitFor(async () => (await callbackJob())?.state === 'done', 10_000);
      expect(receiver.received).toEqual([]);
    } finally {
      await receiver.close();
    }
  });

  it("results read after a reviewer's verdict, at the status from before it (its webhook lost), bring the verdict's status too", async () => {
    // No webhooks reach the broker and no poll comes: only the status read the test plays, and what the results bring.
    p = await startPair({ RESULTS_MODE: 'both', POLL_INTERVAL_MS: '3600000', POLL_MAX_INTERVAL_MS: '3600000' }, { faults: { dropWebhookRate: 1 }, processingDelayMs: 50 });
    const s = await p.newSession({ externalCustomerId: 'emu:manual-rejected' });
    await captureAll(s.apiUrl, s.token);
    const emu = p.emulator.app.emulator.sessions;
    await waitFor(() => emu.get(s.interviewId)?.status === 'MANUAL_REVIEW_REJECTED' || null, 15_000);
    // A check that read ONBOARDING_FINISHED just before the verdict came: its results are read after it.
    await p.broker.app.results.apply(s.interviewId, 'ONBOARDING_FINISHED', 'poll');
    // The verdict's status is recorded before its own results are read (the first read's are still 'ready' then):
    // caught up once both reads are done.
    const resultJobs = async () => (await p.broker.app.store.listJobs(s.interviewId)).filter((j) => j.kind === 'results').map((j) => [j.payload.status, j.state]);
    // One read of the list per check: two could see one job done, then two with the second still queued.
    await waitFor(async () => {
      const jobs = await resultJobs();
      return jobs.length >= 2 && jobs.every(([, state]) => state === 'done' || state === 'dead');
    }, 15_000);
    expect(await resultJobs()).toEqual([
      ['ONBOARDING_FINISHED', 'done'],
      ['MANUAL_REVIEW_REJECTED', 'done'],
    ]);
    expect(await p.broker.app.store.getSession(s.interviewId)).toMatchObject({ onboardingStatus: 'MANUAL_REVIEW_REJECTED', resultsStatus: 'ready', decision: 'decline' });
  });

  it("a verdict only the scores show, which Incode's status never follows, is read a few times and then left quietly", async () => {
    p = await startPair({ RESULTS_MODE: 'both', POLL_INTERVAL_MS: '3600000', POLL_MAX_INTERVAL_MS: '3600000' });
    const s = await p.newSession();
    await captureAll(s.apiUrl, s.token);
    await p.ready(s.interviewId);
    // The check the results queue when their score shows a verdict, at its first attempts and at its last.
    const check = (attempts: number): Job => ({
      id: `verdict-check-${attempts}`,
      kind: 'verify',
      subject: s.interviewId,
      payload: { source: 'poll', claimed: 'MANUAL_REVIEW_APPROVED', fromScores: true },
      state: 'running',
      attempts,
      runAt: Date.now(),
      leaseOwner: 'test',
      leaseExpiresAt: Date.now() + 60_000,
      lastError: null,
      createdAt: Date.now(),
    });
    for (const attempts of [1, 5]) await expect(p.broker.app.results.handle(check(attempts))).rejects.toMatchObject({ code: 'STATUS_BEHIND_WEBHOOK', retryable: true });
    await expect(p.broker.app.results.handle(check(6))).resolves.toBeUndefined();
    expect(await p.broker.app.store.getSession(s.interviewId)).toMatchObject({ onboardingStatus: 'ONBOARDING_FINISHED', resultsStatus: 'ready', lastError: null });
  });

  it("a reviewer's verdict recorded by a check that died before queueing its results is repaired by the check run again, or by a poll", async () => {
    p = await startPair({ RESULTS_MODE: 'both', POLL_INTERVAL_MS: '3600000', POLL_MAX_INTERVAL_MS: '3600000' });
    const store = p.broker.app.store;
    const reviewed = async () => {
      const s = await p.newSession({ externalCustomerId: 'emu:warn' });
      await captureAll(s.apiUrl, s.token);
      expect((await p.ready(s.interviewId)).decision).toBe('review');
      // The half-done state: the verdict's status stored, its results job never queued (a kill, a store failure).
      await store.advanceStatus(s.interviewId, 'MANUAL_REVIEW_APPROVED', statusRank('MANUAL_REVIEW_APPROVED'), false, Date.now());
      return s.interviewId;
    };
    const approved = (id: string) => waitFor(async () => ((await store.getSession(id))?.decision === 'approve' ? true : null), 10_000);
    // The check run again (its job retried after its lease) finds the status already there and still queues the results.
    const retried = await reviewed();
    await p.broker.app.results.apply(retried, 'MANUAL_REVIEW_APPROVED', 'webhook');
    await approved(retried);
    // Or the poll still due for it: a final status whose results are behind is checked, not dropped from polling.
    const polled = await reviewed();
    await store.schedulePoll(polled, Date.now() - 1, 1);
    expect(await p.broker.app.results.pollDue()).toBeGreaterThanOrEqual(1);
    await approved(polled);
    expect((await store.getSession(polled))!.nextPollAt).toBeNull();
  });

  it('a finish recorded without its results job (the process died in between) is repaired by the poll still due', async () => {
    p = await startPair({ RESULTS_MODE: 'polling', POLL_INTERVAL_MS: '3600000', POLL_MAX_INTERVAL_MS: '3600000' }, { faults: { dropWebhookRate: 1 }, processingDelayMs: 50 });
    const store = p.broker.app.store;
    const s = await p.newSession();
    await captureAll(s.apiUrl, s.token);
    await waitFor(() => p.emulator.app.emulator.sessions.get(s.interviewId)?.status === 'ONBOARDING_FINISHED' || null, 10_000);
    await store.advanceStatus(s.interviewId, 'ONBOARDING_FINISHED', statusRank('ONBOARDING_FINISHED'), false, Date.now());
    expect(await store.getSession(s.interviewId)).toMatchObject({ resultsStatus: 'pending', nextPollAt: expect.any(Number) });
    await store.schedulePoll(s.interviewId, Date.now() - 1, 1);
    await p.broker.app.results.pollDue();
    expect((await p.ready(s.interviewId)).decision).toBe('approve');
  });

  it("an older callback retried after a newer decision was stored is not sent; events carry the session's last change", async () => {
    const receiver = await callbackReceiver();
    const delivered = () => receiver.received.map((r) => r.data);
    try {
      p = await startPair({ RESULTS_MODE: 'webhook', CALLBACK_URL: receiver.hook, CALLBACK_SECRET });
      const s = await p.newSession();
      await captureAll(s.apiUrl, s.token);
      await p.ready(s.interviewId);
      await waitFor(() => receiver.received.length > 0 || null);
      const stored = (await p.broker.app.store.getSession(s.interviewId))!;
      expect(delivered()[0]).toMatchObject({ onboardingStatus: 'ONBOARDING_FINISHED', decision: 'approve', updatedAt: new Date(stored.updatedAt).toISOString() });
      // The event of an earlier decision, still being retried when the newer results were stored.
      const now = Date.now();
      await p.broker.app.store.enqueueJob({ kind: 'callback', subject: s.interviewId, payload: { onboardingStatus: 'ONBOARDING_FINISHED', decision: 'review' }, runAt: now, dedupeKey: `callback:${s.interviewId}:old` }, now);
      await waitFor(async () => ((await p.broker.app.store.listJobs(s.interviewId)).find((j) => j.kind === 'callback' && j.payload.decision === 'review')?.state === 'done' ? true : null), 10_000);
      // Nor one of an earlier status with the same decision (a reviewer's verdict that agreed with the scores).
      await p.broker.app.store.enqueueJob({ kind: 'callback', subject: s.interviewId, payload: { onboardingStatus: 'ID_VALIDATION_FINISHED', decision: 'approve' }, runAt: now, dedupeKey: `callback:${s.interviewId}:older-status` }, now);
      await waitFor(async () => ((await p.broker.app.store.listJobs(s.interviewId)).find((j) => j.kind === 'callback' && j.payload.onboardingStatus === 'ID_VALIDATION_FINISHED')?.state === 'done' ? true : null), 10_000);
      expect(delivered().map((d) => `${d.onboardingStatus}:${d.decision}`)).toEqual(['ONBOARDING_FINISHED:approve']);
    } finally {
      await receiver.close();
    }
  });

  it('tells the customer of results that failed for good (an expired session), once, signed like every event', async () => {
    const receiver = await callbackReceiver();
    try {
      p = await startPair({ RESULTS_MODE: 'webhook', CALLBACK_URL: receiver.hook, CALLBACK_SECRET });
      const s = await p.newSession();
      // The user never captured anything; the session expires at Incode, whose webhook says so.
      await request(p.emulator.url).post(`/__emulator/sessions/${s.interviewId}/status`).set('x-api-key', TEST_API_KEY).send({ onboardingStatus: 'EXPIRED' }).expect(200);
      await waitFor(() => receiver.received.length > 0 || null, 10_000);
      const failed = receiver.received[0];
      expect(JSON.parse(failed.body)).toMatchObject({ type: 'session.results_failed', data: { interviewId: s.interviewId, onboardingStatus: 'EXPIRED', resultsStatus: 'failed', code: 'SESSION_EXPIRED', updatedAt: expect.any(String) } });
      expect(asPublished(failed.body)).toBe(true);
      expect(String(failed.headers['webhook-id'])).toMatch(new RegExp(`^msg_${s.interviewId}_results_failed_[0-9a-f-]{36}$`));
      const signed = createHmac('sha256', CALLBACK_SECRET_BYTES).update(`${failed.headers['webhook-id']}.${failed.headers['webhook-timestamp']}.${failed.body}`).digest('base64');
      expect(failed.headers['webhook-signature']).toBe(`v1,${signed}`);
      // Incode says it again (a duplicate webhook, a refresh): the failure was told once.
      await request(p.broker.url).post(`/sessions/${s.interviewId}/refresh`).set('authorization', `Bearer ${ADMIN_KEY}`).expect(202);
      const jobs = async () => (await p.broker.app.store.listJobs(s.interviewId)).filter((j) => j.kind !== 'callback');
      await waitFor(async () => (await jobs()).every((j) => j.state === 'done' || j.state === 'dead') || null, 10_000);
      // Nothing queued or being sent any more, and one failure event among the session's jobs.
      await waitFor(async () => {
        const c = await p.broker.app.store.countJobs();
        return c.queued + c.running === 0 || null;
      }, 10_000);
      expect((await p.broker.app.store.listJobs(s.interviewId)).filter((j) => j.kind === 'callback')).toHaveLength(1);
      expect(receiver.received).toHaveLength(1);
    } finally {
      await receiver.close();
    }
  });

  it("a failure event its receiver never takes dead-letters without overwriting the session's reason (which polling goes by)", async () => {
    const receiver = await callbackReceiver(() => false);
    try {
      p = await startPair({ RESULTS_MODE: 'webhook', CALLBACK_URL: receiver.hook, CALLBACK_SECRET, JOB_MAX_ATTEMPTS: '2', JOB_BACKOFF_MS: '10' });
      const s = await p.newSession();
      await request(p.emulator.url).post(`/__emulator/sessions/${s.interviewId}/status`).set('x-api-key', TEST_API_KEY).send({ onboardingStatus: 'EXPIRED' }).expect(200);
      const callback = async () => (await p.broker.app.store.listJobs(s.interviewId)).find((j) => j.kind === 'callback');
      await waitFor(async () => (await callback())?.state === 'dead' || null, 10_000);
      expect(receiver.attempts()).toBe(2);
      expect(await p.broker.app.store.getSession(s.interviewId)).toMatchObject({ resultsStatus: 'failed', lastError: 'SESSION_EXPIRED' });
    } finally {
      await receiver.close();
    }
  });

  it('a decision that comes back (A, B, A) while the first event is still being sent is a third event, with its own id; a refresh that changes nothing sends none', async () => {
    // The score's overall status as Incode answers it, rewritten on the way to the broker so refreshes change the decision.
    const proxy = await startEmulatorProxy({ target: '', overall: null as string | null }, (req, res, forward) =>
      forward().then(
        (u) => {
          if (!/^\/omni\/get\/score/.test(req.url ?? '') || !proxy.state.overall) return pass(res, u);
          const body = JSON.parse(u.body.toString()) as { overall: { status: string } };
          body.overall.status = proxy.state.overall;
          const out = Buffer.from(JSON.stringify(body));
          res.writeHead(u.status, { ...u.headers, 'content-length': String(out.length) }).end(out);
        },
        () => res.writeHead(502).end(),
      ),
    );
    // The receiver holds the first delivery until released: the first event is on the wire while the others are stored.
    let release = () => {};
    const firstHeld = new Promise<void>((resolve) => (release = resolve));
    const received: { id: string; data: Record<string, unknown> }[] = [];
    const receiver = Fastify();
    receiver.post('/hook', async (req) => {
      const event = { id: String(req.headers['webhook-id']), data: (req.body as { data: Record<string, unknown> }).data };
      received.push(event);
      if (received.length === 1) await firstHeld;
      return { ok: true };
    });
    await receiver.listen({ port: 0, host: '127.0.0.1' });
    const hook = `http://127.0.0.1:${(receiver.server.address() as AddressInfo).port}/hook`;
    try {
      p = await startPair({ RESULTS_MODE: 'webhook', INCODE_API_URL: proxy.url, CALLBACK_URL: hook, CALLBACK_SECRET });
      proxy.state.target = p.emulator.url;
      const s = await p.newSession();
      await captureAll(`${p.emulator.url}/0/`, s.token);
      await p.ready(s.interviewId);
      await waitFor(() => received.length === 1 || null);
      const decided = async (decision: string) => {
        await request(p.broker.url).post(`/sessions/${s.interviewId}/refresh`).set('authorization', `Bearer ${ADMIN_KEY}`).expect(202);
        await waitFor(async () => (await p.broker.app.store.getSession(s.interviewId))?.decision === decision || null, 10_000);
      };
      proxy.state.overall = 'WARN';
      await decided('review');
      await waitFor(() => received.some((e) => e.data.decision === 'review') || null, 10_000);
      proxy.state.overall = 'OK';
      await decided('approve');
      await waitFor(() => received.length === 3 || null, 10_000);
      release();
      const callbacks = async () => (await p.broker.app.store.listJobs(s.interviewId)).filter((j) => j.kind === 'callback');
      await waitFor(async () => (await callbacks()).every((j) => j.state === 'done') || null, 10_000);
      // Three events, three ids; the last change a receiver can order by says approve.
      expect(new Set(received.map((e) => e.id)).size).toBe(3);
      const last = [...received].sort((a, b) => String(a.data.updatedAt).localeCompare(String(b.data.updatedAt))).pop()!;
      expect(last.data).toMatchObject({ onboardingStatus: 'ONBOARDING_FINISHED', decision: 'approve' });
      // A refresh that stores the same decision again is no event.
      const resultsJobs = async () => (await p.broker.app.store.listJobs(s.interviewId)).filter((j) => j.kind === 'results');
      const before = (await resultsJobs()).length;
      await request(p.broker.url).post(`/sessions/${s.interviewId}/refresh`).set('authorization', `Bearer ${ADMIN_KEY}`).expect(202);
      await waitFor(async () => ((await resultsJobs()).length > before && (await resultsJobs()).every((j) => j.state === 'done')) || null, 10_000);
      expect(await callbacks()).toHaveLength(3);
      expect(received).toHaveLength(3);
    } finally {
      release();
      await receiver.close();
      await proxy.close();
    }
  });
}

describe('results pipeline, end to end (SQLite)', () => pipelineSuite('sqlite'));
describeWith('postgres', 'results pipeline, end to end (PostgreSQL)', () => pipelineSuite('postgres'));

describe('webhook and results API authentication', () => {
  beforeAll(() => {
    engine = 'sqlite';
  });
  let p: Pair;
  beforeAll(async () => {
    p = await startPair({ RESULTS_MODE: 'webhook', WEBHOOK_SECRET: 'static-shared-secret-123456', WEBHOOK_SECRET_HEADER: 'x-incode-secret' });
  });
  afterAll(async () => p.close());

  it('issues OAuth tokens only for the right client credentials', async () => {
    const ok = await webhookToken(p.broker.url).expect(200);
    expect(ok.body).toEqual({ access_token: expect.any(String), token_type: 'Bearer', expires_in: 3600 });
    expect(ok.headers['cache-control']).toBe('no-store');
    const wrong = await webhookToken(p.broker.url, WEBHOOK_CLIENT_ID, 'wrong').expect(401);
    // RFC 6749 section 5.2's error beside the broker's own code, for an OAuth client's library.
    expect(wrong.body).toMatchObject({ code: 'INVALID_CLIENT', error: 'invalid_client', error_description: expect.any(String) });
    await webhookToken(p.broker.url, 'someone', WEBHOOK_CLIENT_SECRET).expect(401);
    await request(p.broker.url).post('/webhooks/incode/token').type('form').send({ grant_type: 'client_credentials' }).expect(401);
    const basic = `Basic ${Buffer.from(`${WEBHOOK_CLIENT_ID}:${WEBHOOK_CLIENT_SECRET}`).toString('base64')}`;
    const bad = await request(p.broker.url).post('/webhooks/incode/token').set('authorization', basic).type('form').send({ grant_type: 'password' }).expect(400);
    expect(bad.body).toMatchObject({ code: 'UNSUPPORTED_GRANT_TYPE', error: 'unsupported_grant_type' });
    const missing = await request(p.broker.url).post('/webhooks/incode/token').set('authorization', basic).type('form').send({ scope: 'x' }).expect(400);
    expect(missing.body).toMatchObject({ code: 'VALIDATION_FAILED', error: 'invalid_request' });
    const json = await request(p.broker.url).post('/webhooks/incode/token').set('authorization', basic).type('text').send('grant_type=client_credentials').expect(415);
    expect(json.body).toMatchObject({ code: 'UNSUPPORTED_MEDIA_TYPE', error: 'invalid_request' });
    // The webhook itself, outside the token endpoint's scope, answers as every route does.
    const hook = await request(p.broker.url).post('/webhooks/incode').send({ interviewId: 'x', onboardingStatus: 'ONBOARDING_FINISHED' }).expect(401);
    expect(hook.body.error).toBeUndefined();
  });

  it("reads a client secret with '+' and '%' as Incode sends it (plain Basic) and as RFC 6749 encodes it", async () => {
    const secret = 'Ab+cd/ef%2Fgh=ij+0123456789xyz';
    const q = await startPair({ RESULTS_MODE: 'webhook', WEBHOOK_CLIENT_SECRET: secret });
    try {
      // Incode (and its emulator): base64(client_id:client_secret), nothing encoded.
      await webhookToken(q.broker.url, WEBHOOK_CLIENT_ID, secret).expect(200);
      // RFC 6749 §2.3.1: both form-urlencoded first.
      await webhookToken(q.broker.url, encodeURIComponent(WEBHOOK_CLIENT_ID), encodeURIComponent(secret)).expect(200);
      // Neither reading of a near miss matches.
      await webhookToken(q.broker.url, WEBHOOK_CLIENT_ID, secret.replace(/\+/g, ' ')).expect(401);
      await webhookToken(q.broker.url, WEBHOOK_CLIENT_ID, 'Ab+cd/ef%2Fgh=ij+0123456789xyZ').expect(401);
    } finally {
      await q.close();
    }
  });

  it('refuses webhooks without valid credentials, accepts Bearer or the static header', async () => {
    const body = { interviewId: 'aaaaaaaaaaaaaaaaaaaaaaaa', onboardingStatus: 'ID_VALIDATION_FINISHED' };
    const none = await request(p.broker.url).post('/webhooks/incode').send(body).expect(401);
    expect(none.body.code).toBe('UNAUTHORIZED');
    await request(p.broker.url).post('/webhooks/incode').set('authorization', 'Bearer whk1.9999999999.abc.forged').send(body).expect(401);
    await request(p.broker.url).post('/webhooks/incode').set('x-incode-secret', 'nope').send(body).expect(401);
    await request(p.broker.url).post('/webhooks/incode').set('x-incode-secret', 'static-shared-secret-123456').send(body).expect(200, { success: true });
    const tok = (await webhookToken(p.broker.url)).body.access_token;
    await request(p.broker.url).post('/webhooks/incode').set('authorization', `Bearer ${tok}`).send({ ...body, clientId: 'x', flowId: 'y', extra: { nested: true } }).expect(200);
    const invalid = await request(p.broker.url).post('/webhooks/incode').set('authorization', `Bearer ${tok}`).send({ interviewId: '../etc', onboardingStatus: 'x' }).expect(400);
    expect(invalid.body.code).toBe('VALIDATION_FAILED');
  });

  it('rate limits failed requests to the token endpoint: past the limit their network is refused, right credentials included', async () => {
    const statuses: number[] = [];
    for (let i = 0; i < 40; i++) statuses.push((await webhookToken(p.broker.url, 'x', 'y')).status);
    // 401 until the window's 30 failures (earlier tests spent some) are used, then 429 to the end of the window.
    const first429 = statuses.indexOf(429);
    expect(first429).toBeGreaterThan(0);
    expect(first429).toBeLessThanOrEqual(30);
    expect(new Set(statuses.slice(0, first429))).toEqual(new Set([401]));
    expect(new Set(statuses.slice(first429))).toEqual(new Set([429]));
    // From the same network, past the limit, a right guess earns nothing (another network is not affected: see the
    // rate-limit tests, which can vary the client address).
    const right = await webhookToken(p.broker.url, WEBHOOK_CLIENT_ID, WEBHOOK_CLIENT_SECRET);
    expect([right.status, right.body.code, right.body.access_token]).toEqual([429, 'RATE_LIMITED', undefined]);
    // The limit reached, as on every 429 that one did (README, OpenAPI).
    expect([right.headers['x-ratelimit-limit'], Number(right.headers['retry-after']) > 0]).toEqual(['30', true]);
  });

  it('requires a service key on the results API', async () => {
    await request(p.broker.url).get('/sessions').expect(401);
    await request(p.broker.url).get('/sessions').set('authorization', 'Bearer wrong-key').expect(401);
    await request(p.broker.url).get('/sessions/abc').set('authorization', `Basic ${ADMIN_KEY}`).expect(401);
    await request(p.broker.url).delete('/sessions/abc').expect(401);
    await request(p.broker.url).post('/sessions/abc/refresh').expect(401);
    const ok = await p.admin('/sessions?limit=5').expect(200);
    expect(ok.body).toEqual({ items: expect.any(Array), nextCursor: null });
    expect(ok.headers['cache-control']).toBe('no-store');
    await p.admin('/sessions/unknownid').expect(404);
    await p.admin('/sessions?cursor=garbage').expect(400);
  });

  it('never accepts webhooks without credentials unless explicitly configured', async () => {
    const open = await startBroker(brokerEnv(p.emulator.url, { WEBHOOK_CLIENT_ID: '', WEBHOOK_CLIENT_SECRET: '' }));
    await request(open.url).post('/webhooks/incode').send({ interviewId: 'a1', onboardingStatus: 'UNKNOWN' }).expect(401);
    await open.close();
    const allowed = await startBroker(brokerEnv(p.emulator.url, { WEBHOOK_CLIENT_ID: '', WEBHOOK_CLIENT_SECRET: '', WEBHOOK_ALLOW_UNAUTHENTICATED: 'true' }));
    await request(allowed.url).post('/webhooks/incode').send({ interviewId: 'a1', onboardingStatus: 'UNKNOWN' }).expect(200);
    await allowed.close();
  });
});

type StoreOverride = Parameters<typeof storeWith>[1];

/**
 * A pipeline over an in-memory SQLite store (closed after the test) whose methods `override` may replace, to stage a
 * race in the store; no Incode, and a clock the test moves.
 */
const bareStores: SqliteStore[] = [];
afterEach(async () => {
  for (const s of bareStores.splice(0)) await s.close();
});
/** Whether a callback's body is what the OpenAPI document publishes for its type (x-webhooks); Ajv's errors if not. */
function asPublished(body: string): unknown {
  const ajv = addFormats(new Ajv({ strict: false, allErrors: true }));
  const event = JSON.parse(body) as { type?: string };
  const check = ajv.compile(event.type === 'session.results_failed' ? ResultsFailedEvent : ResultsReadyEvent);
  return check(event) ? true : check.errors;
}

async function barePipeline(override: (real: SqliteStore) => StoreOverride = () => () => null) {
  const config = loadConfig(brokerEnv('http://127.0.0.1:9', { RESULTS_MODE: 'both' }));
  const real = await memoryStore();
  bareStores.push(real);
  const clock = { now: Date.now() };
  const pipeline = new ResultsPipeline({
    store: storeWith(real, override(real)),
    incode: {} as IncodeClient,
    executiveTokens: { configured: false } as ExecutiveTokenProvider,
    config,
    metrics: createMetrics(),
    log: pino({ level: 'silent' }),
    now: () => clock.now,
  });
  return { real, pipeline, clock };
}

describe('apply, against a results job that finishes first', () => {
  it('queues no second results job behind one that finished after its session was read', async () => {
    const id = 'f'.repeat(24);
    // Another replica's results job for this status finishes between this check's read of the session (results still
    // pending) and its enqueue: its dedupe key no longer holds, and the same score and OCR reads would run again.
    let armed = false;
    const { real, pipeline, clock } = await barePipeline((real) => (method) =>
      method === 'advanceStatus' && armed
        ? async (...args: never[]) => {
            armed = false;
            const out = (await (real.advanceStatus as (...a: never[]) => Promise<{ changed: boolean; session: unknown }>)(...args)) as { changed: boolean; session: { resultsStatus: string } | null };
            const now = clock.now;
            const [other] = await real.claimJobs('other-replica', 1, 60_000, now);
            await real.saveResults(id, { scores: { overall: { status: 'OK' } }, ocr: {}, fetchedAt: now }, 'approve', now);
            expect(await real.completeJob(other, 'other-replica', now)).toBe(true);
            return out;
          }
        : null,
    );
    await pipeline.trackSession({ interviewId: id, token: 'tok' });
    await real.advanceStatus(id, 'ONBOARDING_FINISHED', statusRank('ONBOARDING_FINISHED'), false, clock.now);
    await real.enqueueJob({ kind: 'results', subject: id, payload: { status: 'ONBOARDING_FINISHED', source: 'webhook' }, runAt: clock.now, dedupeKey: `results:${id}:ONBOARDING_FINISHED` }, clock.now);
    // A duplicate webhook's check: the status is unchanged, and the session it reads still has its results pending.
    armed = true;
    await pipeline.apply(id, 'ONBOARDING_FINISHED', 'webhook');
    expect(armed).toBe(false);
    expect((await real.listJobs(id)).filter((j) => j.kind === 'results').map((j) => j.state)).toEqual(['done']);
    // A refresh asks for a new read all the same.
    await pipeline.apply(id, 'ONBOARDING_FINISHED', 'refresh');
    expect((await real.listJobs(id)).filter((j) => j.kind === 'results').map((j) => j.state).sort()).toEqual(['done', 'queued']);
  });

  it("keeps the verdict poll that job scheduled: a final status ends only the poll the check itself saw", async () => {
    const verdictPollAt = Date.now() + 60_000;
    // Another replica's results job stores a `review` and schedules the poll for the verdict as soon as it is queued,
    // before this check goes on to end polling.
    const { real, pipeline } = await barePipeline((real) => (method) =>
      method === 'enqueueJob'
        ? async (...args: never[]) => {
            const [job, now] = args as unknown as [NewJob, number];
            const queued = await real.enqueueJob(job, now);
            if (job.kind === 'results') {
              await real.saveResults(job.subject, { scores: { overall: { status: 'MANUAL_PENDING' } }, ocr: {}, fetchedAt: now }, 'review', now);
              await real.schedulePoll(job.subject, verdictPollAt, 1);
            }
            return queued;
          }
        : null,
    );
    const id = 'e'.repeat(24);
    await pipeline.trackSession({ interviewId: id, token: 'tok' });
    expect((await real.getSession(id))!.nextPollAt).toEqual(expect.any(Number));
    await pipeline.apply(id, 'ONBOARDING_FINISHED', 'webhook');
    expect(await real.getSession(id)).toMatchObject({ onboardingStatus: 'ONBOARDING_FINISHED', decision: 'review', nextPollAt: verdictPollAt });
  });
});

describe('pollDue, against server-side onboardings whose process died mid-captures', () => {
  it('fails one that never got its selfie up once no process can still be running it, and keeps polling the others', async () => {
    const { real, pipeline, clock } = await barePipeline();
    // 45 minutes ago: past the half hour no live captures take, within the hour after it that polling looks.
    const started = Date.now() - 45 * 60_000;
    clock.now = started;
    const ids = { interrupted: 'a'.repeat(24), oneSided: 'e'.repeat(24), selfieUp: 'b'.repeat(24), sdk: 'c'.repeat(24), recent: 'd'.repeat(24) };
    for (const id of Object.values(ids)) if (id !== ids.recent) await pipeline.trackSession({ interviewId: id, token: `tok-${id}` });
    const steps = async (id: string, ...list: string[]) => {
      for (const [i, step] of list.entries()) {
        const [name, outcome = 'ok'] = step.split(':');
        await real.recordStep(id, { step: name as never, outcome: outcome as never, at: started + i });
      }
    };
    await steps(ids.interrupted, 'start', 'front', 'back', 'process-id');
    // A passport: its back skipped.
    await steps(ids.oneSided, 'start', 'front', 'back:skipped', 'process-id');
    // The face match may have been sent before the process died: Incode may still finish it.
    await steps(ids.selfieUp, 'start', 'front', 'back', 'process-id', 'selfie');
    // Started 20 minutes ago: a slow onboarding's captures may still be running in another process.
    clock.now = Date.now() - 20 * 60_000;
    await pipeline.trackSession({ interviewId: ids.recent, token: 'tok-recent' });
    await steps(ids.recent, 'start', 'front');
    clock.now = Date.now();
    // All of them due for a poll now.
    for (const id of Object.values(ids)) await real.schedulePoll(id, clock.now - 1, 0);
    expect(await pipeline.pollDue()).toBe(5);
    for (const id of [ids.interrupted, ids.oneSided]) expect(await real.getSession(id)).toMatchObject({ resultsStatus: 'failed', lastError: 'CAPTURES_INTERRUPTED', nextPollAt: null });
    for (const id of [ids.selfieUp, ids.sdk, ids.recent]) expect(await real.getSession(id)).toMatchObject({ resultsStatus: 'pending', nextPollAt: expect.any(Number) });
  });
});

describe('pollDue, against an onboarding abandoned after the listing', () => {
  it('does not bring back polling that was ended between listing the session and rescheduling it', async () => {
    // The orchestrator abandons the session (a rejected capture) right after the poller listed it as due.
    const { real, pipeline, clock } = await barePipeline((real) => (method) =>
      method === 'sessionsDueForPoll'
        ? async (...args: never[]) => {
            const [now, limit] = args as unknown as [number, number];
            const due = await real.sessionsDueForPoll(now, limit);
            for (const s of due) {
              await real.setResultsStatus(s.interviewId, 'failed', 'CAPTURE_REJECTED', now);
              await real.stopPolling(s.interviewId, s.nextPollAt);
            }
            return due;
          }
        : null,
    );
    const id = 'f'.repeat(24);
    await pipeline.trackSession({ interviewId: id, token: 'tok' });
    clock.now = (await real.getSession(id))!.nextPollAt! + 1;
    expect(await pipeline.pollDue()).toBe(1);
    expect(await real.getSession(id)).toMatchObject({ resultsStatus: 'failed', lastError: 'CAPTURE_REJECTED', nextPollAt: null });
  });

  it('stops, without a check, the polling of a session given up before it finished that a race left scheduled', async () => {
    const { real, pipeline, clock } = await barePipeline();
    const id = 'a'.repeat(24);
    await pipeline.trackSession({ interviewId: id, token: 'tok' });
    // Abandoned (a rejected capture), while the poller's reschedule won the race against the abandonment's stop.
    await real.setResultsStatus(id, 'failed', 'CAPTURE_REJECTED', clock.now);
    clock.now = (await real.getSession(id))!.nextPollAt! + 1;
    expect(await pipeline.pollDue()).toBe(1);
    expect(await real.getSession(id)).toMatchObject({ resultsStatus: 'failed', lastError: 'CAPTURE_REJECTED', nextPollAt: null });
    expect(await real.listJobs(id)).toEqual([]);
  });
});

describe('polling that gives up', () => {
  const hours = (h: number) => h * 3_600_000;
  const dueNow = async (real: SqliteStore, id: string, now: number) => real.schedulePoll(id, now - 1, 5);
  /** A session started, then left alone past POLL_GIVE_UP_HOURS: polling has given up on it. */
  const givenUp = async (real: SqliteStore, pipeline: ResultsPipeline, clock: { now: number }, id: string) => {
    await pipeline.trackSession({ interviewId: id, token: 'tok' });
    clock.now += hours(73);
    await dueNow(real, id, clock.now);
    await pipeline.pollDue();
    expect(await real.getSession(id)).toMatchObject({ resultsStatus: 'failed', lastError: 'POLLING_GAVE_UP', nextPollAt: null });
  };

  it('gives up POLL_GIVE_UP_HOURS after the last sign of life, not after the start, and polls again when the status moves', async () => {
    const { real, pipeline, clock } = await barePipeline();
    const t0 = clock.now;
    const id = 'c'.repeat(24);
    await pipeline.trackSession({ interviewId: id, token: 'tok' });
    // The ID on day two: 80 h after the start is only 50 h after that.
    clock.now = t0 + hours(30);
    await pipeline.apply(id, 'ID_VALIDATION_FINISHED', 'webhook');
    clock.now = t0 + hours(80);
    await dueNow(real, id, clock.now);
    expect(await pipeline.pollDue()).toBe(1);
    expect(await real.getSession(id)).toMatchObject({ resultsStatus: 'pending', nextPollAt: expect.any(Number) });
    expect((await real.listJobs(id)).filter((j) => j.payload.source === 'poll')).toHaveLength(1);
    // 73 h of silence since: given up.
    clock.now = t0 + hours(30 + 73);
    await dueNow(real, id, clock.now);
    await pipeline.pollDue();
    expect(await real.getSession(id)).toMatchObject({ resultsStatus: 'failed', lastError: 'POLLING_GAVE_UP', nextPollAt: null });
    // The user comes back and takes the selfie: the status move brings polling back, so a lost final webhook is repaired.
    clock.now += hours(1);
    await pipeline.apply(id, 'FACE_VALIDATION_FINISHED', 'webhook');
    const revived = (await real.getSession(id))!;
    expect(revived).toMatchObject({ resultsStatus: 'pending', lastError: null, onboardingStatus: 'FACE_VALIDATION_FINISHED' });
    expect(revived.nextPollAt).toBeGreaterThan(clock.now);
    clock.now = revived.nextPollAt! + 1;
    expect(await pipeline.pollDue()).toBe(1);
    expect(await real.getSession(id)).toMatchObject({ resultsStatus: 'pending', nextPollAt: expect.any(Number) });
  });

  it('gives up even while a check failing for good records its error again and again (only signs of life count)', async () => {
    const { real, pipeline, clock } = await barePipeline();
    const t0 = clock.now;
    const id = 'c'.repeat(23) + 'd';
    await pipeline.trackSession({ interviewId: id, token: 'tok' });
    // Its status checks die every few hours (a refused token, say), each dead letter recording its code.
    for (let h = 4; h <= 72; h += 4) await real.setResultsStatus(id, null, 'INCODE_UNAUTHORIZED', t0 + hours(h));
    clock.now = t0 + hours(73);
    await dueNow(real, id, clock.now);
    await pipeline.pollDue();
    expect(await real.getSession(id)).toMatchObject({ resultsStatus: 'failed', lastError: 'POLLING_GAVE_UP', nextPollAt: null });
  });

  it('keeps a given-up session revivable through a dead check, and does not revive it without a sign of life', async () => {
    const { real, pipeline, clock } = await barePipeline();
    const id = 'e'.repeat(24);
    await givenUp(real, pipeline, clock, id);
    // A check that dies (a webhook's, after its retries): its code is audited, the gave-up mark stays.
    await real.enqueueJob({ kind: 'verify', subject: id, payload: { source: 'webhook' }, runAt: clock.now }, clock.now);
    const [check] = await real.listJobs(id);
    await pipeline.onDead(check, 'INCODE_UNAVAILABLE', true);
    expect(await real.getSession(id)).toMatchObject({ resultsStatus: 'failed', lastError: 'POLLING_GAVE_UP' });
    // A status check that finds nothing moved (a refresh) does not revive it: it would only give up again.
    await pipeline.apply(id, 'UNKNOWN', 'refresh');
    expect(await real.getSession(id)).toMatchObject({ resultsStatus: 'failed', lastError: 'POLLING_GAVE_UP', nextPollAt: null });
    // The user comes back: revived.
    clock.now += hours(1);
    await pipeline.apply(id, 'ID_VALIDATION_FINISHED', 'webhook');
    expect(await real.getSession(id)).toMatchObject({ resultsStatus: 'pending', lastError: null, nextPollAt: expect.any(Number) });
  });

  it('polls again a session given up on when its user resumes it, and leaves any other failure alone', async () => {
    const { real, pipeline, clock } = await barePipeline();
    const id = 'd'.repeat(24);
    await givenUp(real, pipeline, clock, id);
    // The resume's write (Incode's fresh token with the new resume token), then the route's revival.
    await real.createResumeToken('rt-2', id, clock.now + hours(24), { token: 'tok-2', now: clock.now });
    await pipeline.revive(id);
    expect(await real.getSession(id)).toMatchObject({ resultsStatus: 'pending', lastError: null, nextPollAt: expect.any(Number) });
    // An abandoned onboarding (a capture to repeat) stays abandoned.
    const other = 'e'.repeat(23) + 'f';
    await pipeline.trackSession({ interviewId: other, token: 'tok' });
    await real.setResultsStatus(other, 'failed', 'CAPTURE_REJECTED', clock.now);
    await real.stopPolling(other, (await real.getSession(other))!.nextPollAt);
    await pipeline.revive(other);
    expect(await real.getSession(other)).toMatchObject({ resultsStatus: 'failed', lastError: 'CAPTURE_REJECTED', nextPollAt: null });
  });
});

describe('refresh, against the refresh already there', () => {
  it('joins one that has not read Incode yet; beside one under way or waiting out a failed attempt, queues one more', async () => {
    const { real, pipeline, clock } = await barePipeline();
    const id = 'b'.repeat(24);
    await pipeline.trackSession({ interviewId: id, token: 'tok' });
    const refreshes = async () => (await real.listJobs(id)).filter((j) => j.kind === 'verify' && j.payload.source === 'refresh');
    expect(await pipeline.refresh(id)).toBe(true);
    expect(await pipeline.refresh(id)).toBe(false);
    // Its attempt failed and it waits out the backoff: it may have read Incode already.
    const [claimed] = await real.claimJobs('w1', 10, 60_000, clock.now);
    expect(await real.failJob(claimed, 'w1', 'INCODE_TIMEOUT', clock.now + 60_000, clock.now)).toBe(true);
    expect(await pipeline.refresh(id)).toBe(true);
    expect(await pipeline.refresh(id)).toBe(false);
    // The new one first: the failed one waits until its backoff is over.
    expect((await refreshes()).map((j) => [j.state, j.attempts])).toEqual([
      ['queued', 0],
      ['queued', 1],
    ]);
  });
});

describe('POST /sessions/:interviewId/refresh', () => {
  it('says whether it queued a refresh or joined one already queued', async () => {
    const emu = await startEmulator();
    // No worker: the first refresh stays queued, so the second can only join it.
    const b = await startBroker(brokerEnv(emu.url), { runWorker: false });
    try {
      const s = (await request(b.url).post('/session').expect(200)).body;
      const refresh = () => request(b.url).post(`/sessions/${s.interviewId}/refresh`).set('authorization', `Bearer ${ADMIN_KEY}`).expect(202);
      expect((await refresh()).body).toEqual({ interviewId: s.interviewId, queued: true });
      expect((await refresh()).body).toEqual({ interviewId: s.interviewId, queued: false });
      expect((await b.app.store.listJobs(s.interviewId)).filter((j) => j.kind === 'verify' && j.payload.source === 'refresh')).toHaveLength(1);
    } finally {
      await b.close();
      await emu.close();
    }
  });

  it('queues one more when the refresh under way may have read Incode already; a third joins that one', async () => {
    // The first refresh's status read is held until the second and third have been asked: it is still on its way then,
    // however slow the machine (a read asked meanwhile waits with it).
    const emu = await startEmulator();
    const held: (() => void)[] = [];
    let holding = true;
    const proxy = await startEmulatorProxy({ target: emu.url }, (req, res, forward) => {
      const go = () => void forward().then((u) => pass(res, u), () => res.writeHead(502).end());
      if (holding && (req.url ?? '').startsWith('/omni/get/onboarding/status')) held.push(go);
      else go();
    });
    // No polling: every status read below is a refresh's.
    const b = await startBroker(brokerEnv(proxy.url, { RESULTS_MODE: 'webhook' }));
    const incode = recordRequests(emu.app.server);
    try {
      const s = (await request(b.url).post('/session').expect(200)).body;
      const refresh = async () => (await request(b.url).post(`/sessions/${s.interviewId}/refresh`).set('authorization', `Bearer ${ADMIN_KEY}`).expect(202)).body;
      const refreshes = async () => (await b.app.store.listJobs(s.interviewId)).filter((j) => j.kind === 'verify' && j.payload.source === 'refresh');
      expect(await refresh()).toEqual({ interviewId: s.interviewId, queued: true });
      await waitFor(() => held.length > 0, 10_000, 10);
      expect(await refresh()).toEqual({ interviewId: s.interviewId, queued: true });
      expect(await refresh()).toEqual({ interviewId: s.interviewId, queued: false });
      holding = false;
      for (const go of held.splice(0)) go();
      // Both ran, each with a status read of its own.
      await waitFor(async () => {
        const jobs = await refreshes();
        return jobs.length === 2 && jobs.every((j) => j.state === 'done');
      }, 15_000);
      expect(incode.urls.filter((u) => u.startsWith(`/omni/get/onboarding/status?id=${s.interviewId}`))).toHaveLength(2);
    } finally {
      incode.stop();
      await b.close();
      await proxy.close();
      await emu.close();
    }
  }, 30_000);
});

describe('erasure, retention and PII at rest', () => {
  it('erases PII on request, keeps an audit entry, and stores no OCR value in plaintext', async () => {
    const dir = tempDir('broker-pii-');
    const dbFile = join(dir, 'broker.db');
    const p = await startPair({ RESULTS_MODE: 'webhook', DATABASE_URL: `sqlite:${dbFile}` });
    try {
      const s = await p.newSession({ externalCustomerId: 'customer-pii-7781' });
      await captureAll(s.apiUrl, s.token);
      const done = await p.ready(s.interviewId);
      const fullName = done.ocr.name.fullName as string;
      const docNumber = String(done.ocr.documentNumber ?? '');
      (p.broker.app.store as unknown as { db: { pragma: (s: string) => void } }).db.pragma('wal_checkpoint(TRUNCATE)');
      const raw = readFileSync(dbFile).toString('latin1');
      expect(raw).not.toContain(fullName);
      expect(docNumber.length).toBeGreaterThanOrEqual(6);
      expect(raw).not.toContain(docNumber);
      expect(raw).not.toContain(s.token);
      expect(raw).not.toContain('customer-pii-7781');

      await request(p.broker.url).delete(`/sessions/${s.interviewId}`).set('authorization', `Bearer ${ADMIN_KEY}`).expect(200, { interviewId: s.interviewId, erased: true, incodeDeletion: null });
      const after = (await p.admin(`/sessions/${s.interviewId}`).expect(200)).body;
      expect(after).toMatchObject({ resultsStatus: 'erased', scores: null, ocr: null });
      const audit = await p.broker.app.store.listAudit(s.interviewId);
      expect(audit.map((a) => a.kind)).toContain('erasure');
      expect(JSON.stringify(audit)).not.toContain(fullName);
      await request(p.broker.url).get('/session/status').set('x-incode-hardware-id', s.token).expect(401);
      await request(p.broker.url).delete('/sessions/doesnotexist').set('authorization', `Bearer ${ADMIN_KEY}`).expect(404);
      // A reviewer's verdict after the erasure: Incode's webhook is acknowledged, and its check sweeps its event and its
      // own payload (which name the verdict); the status does not move.
      const verifies = async () => (await p.broker.app.store.listJobs(s.interviewId)).filter((j) => j.kind === 'verify');
      const before = (await verifies()).length;
      await request(p.emulator.url).post(`/__emulator/sessions/${s.interviewId}/status`).set('x-api-key', TEST_API_KEY).send({ onboardingStatus: 'MANUAL_REVIEW_REJECTED' }).expect(200);
      await waitFor(async () => (await verifies()).length > before && (await verifies()).every((j) => j.state === 'done'), 10_000);
      expect(await p.broker.app.store.hasEvent(`${s.interviewId}:MANUAL_REVIEW_REJECTED`)).toBe(false);
      expect((await verifies()).map((j) => j.payload)).toEqual((await verifies()).map(() => ({})));
      expect((await p.admin(`/sessions/${s.interviewId}`).expect(200)).body).toMatchObject({ onboardingStatus: 'ONBOARDING_FINISHED', resultsStatus: 'erased', decision: null, steps: [] });
      expect((await p.broker.app.store.listAudit(s.interviewId)).filter((a) => a.kind === 'erasure')).toHaveLength(1);
    } finally {
      await p.close();
    }
  });

  it('purges PII older than RETENTION_DAYS at start', async () => {
    const dir = tempDir('broker-ret-');
    const url = `sqlite:${join(dir, 'broker.db')}`;
    const emu = await startEmulator();
    const started: { close: () => Promise<void> }[] = [];
    try {
      const first = await startBroker(brokerEnv(emu.url, { DATABASE_URL: url, RETENTION_DAYS: '1' }));
      started.push(first);
      const old = Date.now() - 3 * 86_400_000;
      await first.app.store.upsertSession({ interviewId: 'old0000000000000000000001', origin: 'broker', token: 'tok-old', now: old });
      await first.app.store.saveResults('old0000000000000000000001', { scores: { overall: { status: 'OK' } }, ocr: { name: { fullName: 'OLD PERSON' } }, fetchedAt: old }, 'approve', old);
      await first.app.store.upsertSession({ interviewId: 'new0000000000000000000001', origin: 'broker', token: 'tok-new', now: Date.now() });
      await started.pop()!.close();
      const second = await startBroker(brokerEnv(emu.url, { DATABASE_URL: url, RETENTION_DAYS: '1' }));
      started.push(second);
      await waitFor(async () => (await second.app.store.getSession('old0000000000000000000001'))?.resultsStatus === 'erased');
      expect(await second.app.store.getResults('old0000000000000000000001')).toBeNull();
      expect((await second.app.store.getSession('new0000000000000000000001'))?.token).toBe('tok-new');
    } finally {
      for (const b of started) await b.close();
      await emu.close();
    }
  });

  /** A SQLite file holding one session with its results, all under the test brokers' key (k1). */
  async function storedUnderK1(emuUrl: string, fullName: string): Promise<{ url: string; dir: string; interviewId: string }> {
    const dir = tempDir('broker-keys-');
    const url = `sqlite:${join(dir, 'broker.db')}`;
    const first = await startBroker(brokerEnv(emuUrl, { DATABASE_URL: url }), { runWorker: false });
    const s = (await request(first.url).post('/session').send({}).expect(200)).body as { interviewId: string };
    await first.app.store.saveResults(s.interviewId, { scores: { overall: { status: 'OK' } }, ocr: { name: { fullName } }, fetchedAt: Date.now() }, 'approve', Date.now());
    await first.close();
    return { url, dir, interviewId: s.interviewId };
  }

  it('answers 500 STORED_DATA_UNREADABLE, and logs the missing key id, for data under a key removed from DATA_ENCRYPTION_KEY', async () => {
    const emu = await startEmulator();
    try {
      const { url, interviewId } = await storedUnderK1(emu.url, 'LOST KEYES');
      const s = { interviewId };
      const second = await startBroker(brokerEnv(emu.url, { DATABASE_URL: url, DATA_ENCRYPTION_KEY: 'k2:' + Buffer.alloc(32, 9).toString('base64'), RESULTS_MODE: 'webhook' }), { runWorker: false });
      try {
        const res = await request(second.url).get(`/sessions/${s.interviewId}`).set('authorization', `Bearer ${ADMIN_KEY}`);
        expect([res.status, res.body.code, res.body.message]).toEqual([500, 'STORED_DATA_UNREADABLE', 'Stored data could not be decrypted']);
        expect(second.logs.text).toMatch(/unknown key id k1/);
        expect(second.logs.text).not.toContain('LOST KEYES');
      } finally {
        await second.close();
      }
    } finally {
      await emu.close();
    }
  });

  it('with a single key, a pass at start finds stored values under a key taken off the list too early, and names that key', async () => {
    const emu = await startEmulator();
    try {
      const { url, dir } = await storedUnderK1(emu.url, 'EARLY KEYES');
      // k1 removed before the sweep moved anything: only k2 is listed.
      const second = await startBroker(brokerEnv(emu.url, { DATABASE_URL: url, DATA_ENCRYPTION_KEY: 'k2:' + Buffer.alloc(32, 9).toString('base64'), RESULTS_MODE: 'webhook' }));
      try {
        const gauge = async () => (await second.app.metrics.oldKeyValues.get()).values[0]?.value;
        // The session's token, and the results' scores and OCR.
        await waitFor(async () => (await gauge()) === 3);
        const warning = second.logs.lines.map((l) => JSON.parse(l) as { msg: string; missingKeyIds?: string[]; level: number }).find((l) => l.msg.includes('under keys no longer configured'));
        expect(warning).toMatchObject({ level: 40, missingKeyIds: ['k1'], unreadable: 3 });
        expect(second.logs.text).not.toContain('EARLY KEYES');
      } finally {
        await second.close();
      }
      // With its own key alone: one pass at start, nothing found, the gauge at 0 (no longer -1).
      const fresh = await startBroker(brokerEnv(emu.url, { DATABASE_URL: `sqlite:${join(dir, 'fresh.db')}`, RESULTS_MODE: 'webhook' }));
      try {
        await waitFor(async () => (await fresh.app.metrics.oldKeyValues.get()).values[0]?.value === 0);
      } finally {
        await fresh.close();
      }
    } finally {
      await emu.close();
    }
  });

  it('with a new key listed first, the sweep re-encrypts every stored value under it, and a broker with the new key alone reads them all', async () => {
    const dir = tempDir('broker-rekey-');
    const dbFile = join(dir, 'broker.db');
    const url = `sqlite:${dbFile}`;
    const k2 = 'k2:' + Buffer.alloc(32, 9).toString('base64');
    const emu = await startEmulator();
    try {
      // Under k1: a session started with an Idempotency-Key and a customer id, with its results.
      const first = await startBroker(brokerEnv(emu.url, { DATABASE_URL: url }), { runWorker: false });
      const body = { externalCustomerId: 'customer-rekey-4411' };
      const s = (await request(first.url).post('/session').set('idempotency-key', 'rekey-0001-0123456789abcdef').send(body).expect(200)).body as { interviewId: string; token: string };
      await first.app.store.saveResults(s.interviewId, { scores: { overall: { status: 'OK' } }, ocr: { name: { fullName: 'ROTA KEYES' } }, fetchedAt: Date.now() }, 'approve', Date.now());
      await first.close();

      // Webhooks only: a poll would write to the WAL again just after the sweep empties it.
      const rotating = await startBroker(brokerEnv(emu.url, { DATABASE_URL: url, DATA_ENCRYPTION_KEY: `${k2},${ENCRYPTION_KEY}`, RESULTS_MODE: 'webhook' }));
      try {
        const gauge = async () => (await rotating.app.metrics.oldKeyValues.get()).values[0]?.value;
        // Two passes: the first re-encrypts token, customer id, scores, OCR and the Idempotency-Key's response; the second finds nothing left.
        await waitFor(async () => (await gauge()) === 0);
        expect((await rotating.app.metrics.reencrypted.get()).values[0].value).toBe(5);
        const lines = rotating.logs.lines.map((l) => JSON.parse(l) as { msg: string; passes?: unknown; keyId?: string });
        expect(lines.find((l) => l.msg.startsWith('key rotation: every stored value'))).toMatchObject({ keyId: 'k2', unused: ['k1'] });
        expect(lines.find((l) => l.msg.startsWith('key rotation: re-encryption pass'))?.passes).toEqual([
          { found: 5, reencrypted: 5, unreadable: 0, waiting: 0 },
          { found: 0, reencrypted: 0, unreadable: 0, waiting: 0 },
        ]);
        for (const secret of [s.token, 'customer-rekey-4411', 'ROTA KEYES']) expect(rotating.logs.text).not.toContain(secret);
        // The sweep ends by emptying the WAL: the values as they were under k1 are no longer in its frames.
        await waitFor(() => statSync(`${dbFile}-wal`).size === 0);
      } finally {
        await rotating.close();
      }

      const onlyK2 = await startBroker(brokerEnv(emu.url, { DATABASE_URL: url, DATA_ENCRYPTION_KEY: k2 }), { runWorker: false });
      try {
        expect((await request(onlyK2.url).get(`/sessions/${s.interviewId}`).set('authorization', `Bearer ${ADMIN_KEY}`).expect(200)).body).toMatchObject({
          externalCustomerId: 'customer-rekey-4411',
          ocr: { name: { fullName: 'ROTA KEYES' } },
        });
        // The Idempotency-Key's replay reads its response and the session's token.
        const again = (await request(onlyK2.url).post('/session').set('idempotency-key', 'rekey-0001-0123456789abcdef').send(body).expect(200)).body as { interviewId: string; token: string };
        expect(again).toMatchObject({ interviewId: s.interviewId, token: s.token });
      } finally {
        await onlyK2.close();
      }
    } finally {
      await emu.close();
    }
  });

  it('with RETENTION_DELETE_AT_INCODE, the sweep also deletes what it erases at Incode', async () => {
    const url = `sqlite:${join(tempDir('broker-ret-incode-'), 'broker.db')}`;
    const emu = await startEmulator();
    const first = await startBroker(brokerEnv(emu.url, { DATABASE_URL: url, RETENTION_DAYS: '1' }), { runWorker: false });
    // A session Incode has, stored three days ago; and a recent one, which stays at Incode.
    const old = await first.app.incode.start({ countryCode: 'ALL' });
    await first.app.store.upsertSession({ interviewId: old.interviewId, origin: 'broker', token: old.token, now: Date.now() - 3 * 86_400_000 });
    const recent = (await request(first.url).post('/session').send({}).expect(200)).body as { interviewId: string };
    await first.close();
    const second = await startBroker(brokerEnv(emu.url, { DATABASE_URL: url, RETENTION_DAYS: '1', RETENTION_DELETE_AT_INCODE: 'true' }));
    try {
      await waitFor(async () => !emu.app.emulator.sessions.sessions.has(old.interviewId));
      expect(await second.app.store.getSession(old.interviewId)).toMatchObject({ resultsStatus: 'erased' });
      // The job audits its deletion just before it is marked done.
      await waitFor(async () => (await second.app.store.listJobs(old.interviewId)).some((j) => j.kind === 'incode-delete' && j.state === 'done'));
      expect((await second.app.store.listAudit(old.interviewId)).map((a) => a.kind)).toEqual(['retention-purge', 'incode-deleted']);
      expect(emu.app.emulator.sessions.sessions.has(recent.interviewId)).toBe(true);
      expect((await second.app.store.listJobs(recent.interviewId)).filter((j) => j.kind === 'incode-delete')).toEqual([]);
    } finally {
      await second.close();
      await emu.close();
    }
  });
});

describe('deleting at Incode', () => {
  it('without a working executive login the deletion gives up visibly, and without executive credentials it is refused before erasing', async () => {
    const emu = await startEmulator();
    try {
      // Executive login refused: the deletion gives up visibly (dead, no incode-deleted entry), the session stays at Incode.
      const badExec = await startBroker(brokerEnv(emu.url, { INCODE_EXECUTIVE_PASSWORD: 'not-the-executive-password' }));
      try {
        const other = (await request(badExec.url).post('/session').send({}).expect(200)).body as { interviewId: string };
        await request(badExec.url).delete(`/sessions/${other.interviewId}?incode=true`).set('authorization', `Bearer ${ADMIN_KEY}`).expect(200);
        const detail = async () => (await request(badExec.url).get(`/sessions/${other.interviewId}`).set('authorization', `Bearer ${ADMIN_KEY}`)).body as Record<string, unknown>;
        await waitFor(async () => (await detail()).incodeDeletion === 'dead');
        expect((await badExec.app.store.listAudit(other.interviewId)).map((a) => a.kind)).not.toContain('incode-deleted');
        // Once the retention sweep has dropped the dead job, its dead-letter entry still tells it gave up.
        await badExec.app.store.purgeExpired(Date.now() + 1000, Date.now());
        expect((await badExec.app.store.listJobs(other.interviewId)).filter((j) => j.kind === 'incode-delete')).toEqual([]);
        expect((await detail()).incodeDeletion).toBe('dead');
        expect(emu.app.emulator.sessions.sessions.has(other.interviewId)).toBe(true);
      } finally {
        await badExec.close();
      }
      // Without executive credentials nothing could name the session at Incode once erased here: refused before erasing.
      const noExec = await startBroker(brokerEnv(emu.url, { INCODE_EXECUTIVE_EMAIL: '', INCODE_EXECUTIVE_PASSWORD: '' }), { runWorker: false });
      try {
        const other = (await request(noExec.url).post('/session').send({}).expect(200)).body as { interviewId: string };
        const refused = await request(noExec.url).delete(`/sessions/${other.interviewId}?incode=true`).set('authorization', `Bearer ${ADMIN_KEY}`).expect(400);
        expect(refused.body.code).toBe('EXECUTIVE_CREDENTIALS_MISSING');
        expect(await noExec.app.store.getSession(other.interviewId)).toMatchObject({ resultsStatus: 'pending' });
      } finally {
        await noExec.close();
      }
    } finally {
      await emu.close();
    }
  });

  it('an answer with success false is a refusal: the deletion is dead, never audited as done', async () => {
    // Incode's samples read a JSON body from the delete; the emulator always deletes, so this stand-in answers
    // start, the executive login and the delete the way a refusing Incode would.
    const incode = createServer((req, res) => {
      req.resume();
      res.writeHead(200, { 'content-type': 'application/json' });
      if (req.url === '/omni/start') return res.end(JSON.stringify({ token: 'tok-refused', interviewId: 'aaaaaaaaaaaaaaaaaaaaaaaa' }));
      if (req.url === '/executive/log-in') return res.end(JSON.stringify({ token: 'exec-token' }));
      return res.end(JSON.stringify({ success: false }));
    });
    await new Promise<void>((r) => incode.listen(0, '127.0.0.1', r));
    const b = await startBroker(brokerEnv(`http://127.0.0.1:${(incode.address() as AddressInfo).port}`, { RESULTS_MODE: 'webhook' }));
    try {
      const { interviewId } = (await request(b.url).post('/session').send({}).expect(200)).body as { interviewId: string };
      await request(b.url).delete(`/sessions/${interviewId}?incode=true`).set('authorization', `Bearer ${ADMIN_KEY}`).expect(200);
      const detail = async () => (await request(b.url).get(`/sessions/${interviewId}`).set('authorization', `Bearer ${ADMIN_KEY}`)).body as Record<string, unknown>;
      await waitFor(async () => (await detail()).incodeDeletion === 'dead');
      // The dead letter is audited just after the job is marked dead.
      const audit = await waitFor(async () => {
        const entries = await b.app.store.listAudit(interviewId);
        return entries.some((a) => a.kind === 'dead-letter') && entries;
      });
      expect(audit.map((a) => a.kind)).not.toContain('incode-deleted');
      expect(audit.find((a) => a.kind === 'dead-letter')).toMatchObject({ detail: { kind: 'incode-delete', code: 'INCODE_DELETE_REFUSED' } });
    } finally {
      await b.close();
      incode.closeAllConnections();
      await new Promise((r) => incode.close(r));
    }
  });
});

describe('shutdown with a callback in flight', () => {
  it('stops a callback whose receiver does not answer and hands its job back, instead of exiting with it still running', async () => {
    let received = 0;
    // A receiver that takes the request and never answers (its own 10 s timeout is far past the grace).
    const receiver = createServer(() => void received++);
    await new Promise<void>((r) => receiver.listen(0, '127.0.0.1', r));
    const dbFile = join(tempDir('broker-cb-'), 'broker.db');
    let p: Pair | undefined;
    try {
      engine = 'sqlite';
      p = await startPair({
        RESULTS_MODE: 'webhook',
        DATABASE_URL: `sqlite:${dbFile}`,
        SHUTDOWN_GRACE_MS: '200',
        CALLBACK_URL: `http://127.0.0.1:${(receiver.address() as AddressInfo).port}/hook`,
        CALLBACK_SECRET,
      });
      const s = await p.newSession();
      await captureAll(s.apiUrl, s.token);
      await p.ready(s.interviewId);
      await waitFor(() => received > 0);
      await p.close();
      p = undefined;
      // Read after the broker closed its store: the attempt ended within the wind-down and recorded it.
      const reopened = new SqliteStore({ filename: dbFile, cipher: new Cipher(loadConfig(brokerEnv('http://127.0.0.1:9')).encryption.keys) });
      try {
        const callback = (await reopened.listJobs(s.interviewId)).find((j) => j.kind === 'callback');
        expect(callback).toMatchObject({ state: 'queued', lastError: 'SHUTDOWN', attempts: 0 });
      } finally {
        await reopened.close();
      }
    } finally {
      await p?.close();
      receiver.closeAllConnections();
      await new Promise((r) => receiver.close(r));
    }
  });
});

describe('a dead-lettered deletion at Incode', () => {
  it('is tried again an hour later when an outage outlasted its attempts, for a week from its first dead letter; a refusal or a fault of ours is not', async () => {
    const T0 = 1_800_000_000_000;
    const { real: store, pipeline, clock } = await barePipeline();
    clock.now = T0;
    // As the worker does: the retry is written with the dead letter, then the dead letter followed up.
    const dieNow = async (code = 'INCODE_UNAVAILABLE', retryable = true) => {
      const [job] = await store.claimJobs('w', 1, 60_000, clock.now);
      expect(job).toMatchObject({ kind: 'incode-delete', subject: 'i1' });
      expect(await store.failJob(job, 'w', code, null, clock.now, pipeline.retryOf(job, code, retryable) ?? undefined)).toBe(true);
      await pipeline.onDead(job, code, retryable);
    };
    const queued = async () => (await store.listJobs('i1')).filter((j) => j.state === 'queued');
    await store.enqueueJob(incodeDeleteJob('i1', T0), T0);
    await dieNow();
    expect(await queued()).toEqual([expect.objectContaining({ kind: 'incode-delete', runAt: T0 + INCODE_DELETE_RETRY_AFTER_MS, payload: { deadSince: T0 } })]);
    // Its retry dies too, within the week: once more, still counted from the first dead letter.
    clock.now = T0 + INCODE_DELETE_RETRY_AFTER_MS;
    await dieNow();
    expect(await queued()).toEqual([expect.objectContaining({ runAt: clock.now + INCODE_DELETE_RETRY_AFTER_MS, payload: { deadSince: T0 } })]);
    // A week after the first: given up (the dead letters and the audit say so).
    clock.now = T0 + INCODE_DELETE_RETRY_FOR_MS;
    await dieNow();
    expect(await queued()).toEqual([]);
    // A refusal is final, and so are failures worth retrying within a job that time does not mend (a refused executive
    // token, a fault of ours).
    for (const [code, retryable] of [['INCODE_DELETE_REFUSED', false], ['INCODE_FORBIDDEN', true], ['INTERNAL_ERROR', true]] as const) {
      await store.enqueueJob(incodeDeleteJob('i1', clock.now), clock.now);
      await dieNow(code, retryable);
      expect(await queued()).toEqual([]);
    }
    expect((await store.listAudit('i1')).filter((a) => a.kind === 'dead-letter')).toHaveLength(6);
  });
});

describe('a results job dead-lettered by a process that stopped before its follow-up', () => {
  it('is followed up by the sweep, once: the session fails with its code, and an outage is left to polling to repair', async () => {
    const { real: store, pipeline, clock } = await barePipeline();
    const outage = 'f'.repeat(24);
    const refused = 'g'.repeat(24);
    for (const id of [outage, refused]) {
      await pipeline.trackSession({ interviewId: id, token: 'tok' });
      // The final status queues the results job and ends polling.
      await pipeline.apply(id, 'ONBOARDING_FINISHED', 'webhook');
    }
    const dead = await store.claimJobs('w', 10, 60_000, clock.now);
    expect(dead.map((j) => j.kind)).toEqual(['results', 'results']);
    for (const j of dead) expect(await store.failJob(j, 'w', j.subject === outage ? 'INCODE_UNAVAILABLE' : 'INCODE_BAD_RESPONSE', null, clock.now)).toBe(true);
    // The process stops here, before the worker's onDead: nothing would ever fetch these results again.
    for (const id of [outage, refused]) expect(await store.getSession(id)).toMatchObject({ resultsStatus: 'pending', nextPollAt: null });
    // A minute on, the worker may still be following them up.
    expect(await pipeline.followUpDeadLetters(clock.now + 60_000)).toBe(0);
    clock.now += 180_000;
    expect(await pipeline.followUpDeadLetters()).toBe(2);
    expect(await store.getSession(outage)).toMatchObject({ resultsStatus: 'failed', lastError: 'INCODE_UNAVAILABLE', nextPollAt: expect.any(Number) });
    expect(await store.getSession(refused)).toMatchObject({ resultsStatus: 'failed', lastError: 'INCODE_BAD_RESPONSE', nextPollAt: null });
    expect(await pipeline.followUpDeadLetters()).toBe(0);
    for (const id of [outage, refused]) expect((await store.listAudit(id)).filter((a) => a.kind === 'dead-letter')).toHaveLength(1);
  });

  it('a broker starting on the database follows it up at once, and the customer hears the session failed', async () => {
    const dbFile = join(tempDir('broker-deadletter-'), 'broker.db');
    const url = `sqlite:${dbFile}`;
    const emu = await startEmulator();
    const receiver = await callbackReceiver();
    const env = { DATABASE_URL: url, RESULTS_MODE: 'webhook', CALLBACK_URL: receiver.hook, CALLBACK_SECRET };
    try {
      // The first process: the session finishes, its results job dies, and the process stops before the follow-up.
      const first = await startBroker(brokerEnv(emu.url, env), { runWorker: false });
      let s: { interviewId: string };
      try {
        s = (await request(first.url).post('/session').send({}).expect(200)).body as { interviewId: string };
        await first.app.results.apply(s.interviewId, 'ONBOARDING_FINISHED', 'webhook');
        const [job] = await first.app.store.claimJobs('gone', 1, 60_000, Date.now());
        expect(job).toMatchObject({ kind: 'results', subject: s.interviewId });
        // Three minutes ago: past the grace a live worker has for its follow-up.
        expect(await first.app.store.failJob(job, 'gone', 'INCODE_UNAVAILABLE', null, Date.now() - 180_000)).toBe(true);
      } finally {
        await first.close();
      }

      const second = await startBroker(brokerEnv(emu.url, env));
      try {
        await waitFor(async () => (await second.app.store.getSession(s.interviewId))?.resultsStatus === 'failed');
        await waitFor(() => receiver.received.some((e) => (JSON.parse(e.body) as { type: string }).type === 'session.results_failed' && e.data.interviewId === s.interviewId));
        expect(second.logs.lines.filter((l) => l.includes('was never followed up'))).toHaveLength(1);
      } finally {
        await second.close();
      }
    } finally {
      await emu.close();
      await receiver.close();
    }
  });
});

describe('capturesWindowMs', () => {
  it('covers a start and five captures each taking its timeout for its headers and again for its body, and a minute', () => {
    expect(capturesWindowMs({ incode: { timeoutMs: 3000, captureTimeoutMs: 15_000 } } as Parameters<typeof capturesWindowMs>[0])).toBe(60_000 + 2 * 3000 + 10 * 15_000);
  });
});
