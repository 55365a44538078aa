// Property-based fuzzing (fast-check) of every public route of one running broker against a healthy
// emulator: random bodies, queries and headers (wrong types, huge and unicode strings, prototype-pollution
// keys, malformed JSON, wrong content types) must only ever get 4xx (never 5xx) with a JSON {code} body,
// and afterwards the process is healthy and Object.prototype untouched.
import fc from 'fast-check';
import { request as undiciRequest } from 'undici';
import type { EmulatorApp } from '../../src/emulator/app';
import { sampleImages } from '../helpers/flow';
import { ADMIN_KEY, WEBHOOK_CLIENT_ID, WEBHOOK_CLIENT_SECRET, brokerEnv, startBroker, startEmulator, type Running } from '../helpers/harness';

type Broker = Awaited<ReturnType<typeof startBroker>>;

const RUNS = Number(process.env.FUZZ_RUNS ?? 200);
const SEED = process.env.FUZZ_SEED ? Number(process.env.FUZZ_SEED) : undefined;
// A property that runs out of time fails rather than passing on the few cases it got through; the limit leaves a slow
// shared machine room (the runs take a few seconds here) and stays under each test's 60 s.
const params = { numRuns: RUNS, seed: SEED, endOnFailure: false, interruptAfterTimeLimit: 50_000, markInterruptAsFailure: true };

interface Sent {
  method: string;
  path: string;
  headers?: Record<string, string>;
  body?: string | Buffer;
}

let emu: Running<EmulatorApp>;
let broker: Broker;
let sessionToken = '';
let resumeToken = '';
let interviewId = '';
let webhookBearer = '';
/** Answers seen, by route and status (checked to show the inputs reach the handlers; printed with FUZZ_STATS=1). */
const stats = new Map<string, number>();
const protoBefore = Object.getOwnPropertyNames(Object.prototype).sort();

async function send(s: Sent): Promise<{ status: number; text: string; headers: Record<string, unknown> }> {
  const res = await undiciRequest(broker.url + s.path, {
    method: s.method as 'GET',
    headers: s.headers,
    body: s.body,
    headersTimeout: 10_000,
    bodyTimeout: 10_000,
  });
  const text = await res.body.text();
  const key = `${s.method} ${s.path.split('?')[0].slice(0, 30)} ${res.statusCode}`;
  stats.set(key, (stats.get(key) ?? 0) + 1);
  return { status: res.statusCode, text, headers: res.headers };
}

/** The property every answer must have: never 5xx; a 4xx carries a JSON body with a string code. */
async function expectClientError(s: Sent, allowed: (status: number) => boolean = () => true): Promise<number> {
  const res = await send(s);
  const where = `${s.method} ${s.path.slice(0, 120)} → ${res.status} ${res.text.slice(0, 300)}`;
  if (res.status >= 500) throw new Error(`server error: ${where}`);
  if (!allowed(res.status)) throw new Error(`unexpected status: ${where}`);
  // HEAD has no body; every other refusal, 431 for oversized headers included, is JSON with a code.
  if (res.status >= 400 && s.method !== 'HEAD') {
    let body: unknown;
    try {
      body = JSON.parse(res.text);
    } catch {
      throw new Error(`4xx body is not JSON: ${where}`);
    }
    if (!body || typeof (body as { code?: unknown }).code !== 'string') throw new Error(`4xx body has no string code: ${where}`);
    // No stack traces or internals in any answer.
    if (/\bat .+:\d+:\d+|node_modules|Error: /.test(res.text)) throw new Error(`internals leaked: ${where}`);
  }
  return res.status;
}

// ---- arbitraries --------------------------------------------------------------------------------------

const unicode = fc.string({ unit: 'grapheme', maxLength: 40 });
const binaryish = fc.string({ unit: 'binary', maxLength: 40 });
const huge = fc.tuple(fc.string({ unit: 'grapheme', minLength: 1, maxLength: 4 }), fc.integer({ min: 1000, max: 100_000 })).map(([s, n]) => s.repeat(Math.ceil(n / s.length)).slice(0, n));
const weirdString = fc.oneof(unicode, binaryish, huge, fc.constantFrom('', ' ', '\u0000', '\uFEFF', '\uD800', 'null', 'true', '0', '-1', '1e309', 'NaN', '__proto__', 'constructor', '../../etc/passwd', '<script>', "' OR 1=1 --", '%00', '${jndi:x}'));
const protoKeys = fc.constantFrom('__proto__', 'constructor', 'prototype', 'toString', 'hasOwnProperty', 'valueOf', '__defineGetter__');

/** JSON text where __proto__/constructor are real keys (a JS object literal would set the prototype instead). */
const pollutionJson = fc
  .tuple(protoKeys, fc.jsonValue({ maxDepth: 2 }), fc.jsonValue({ maxDepth: 2 }))
  .map(([k, v, w]) => `{"${k}":{"polluted":${JSON.stringify(v)},"isAdmin":true},"constructor":{"prototype":{"polluted2":${JSON.stringify(w)}}},"externalCustomerId":"x"}`);

const malformedJson = fc.oneof(
  fc.constantFrom('{', '}', '{"a":', '[1,2', '{"a":1,}', "{'a':1}", 'undefined', 'NaN', '{"a":01}', '\uFEFF{}', '{"a":"\\x41"}', '{"a":1}{"b":2}', '{"a":"\u0000"}', 'nul', '"'),
  fc.json().map((j) => j.slice(0, Math.max(0, j.length - 1)) + '!'),
  fc.string({ unit: 'grapheme', maxLength: 60 }),
);

const anyJsonText = fc.oneof(
  { weight: 3, arbitrary: fc.json({ maxDepth: 3 }) },
  { weight: 2, arbitrary: fc.anything({ maxDepth: 2, withNullPrototype: true, withBigInt: false }).map((v) => JSON.stringify(v) ?? 'null') },
  { weight: 2, arbitrary: pollutionJson },
  { weight: 2, arbitrary: malformedJson },
  { weight: 1, arbitrary: huge.map((s) => JSON.stringify({ externalCustomerId: s })) },
);

/** Bodies shaped like a route's own, with every field replaced by something wrong now and then. */
const fieldValue = fc.oneof(weirdString, fc.integer(), fc.double(), fc.boolean(), fc.constant(null), fc.array(unicode, { maxLength: 3 }), fc.dictionary(unicode, unicode, { maxKeys: 3 }));
/** Mostly a valid value, now and then a wrong one: inputs must get past validation to reach the handlers. */
const mostly = <T>(valid: fc.Arbitrary<T>) => fc.oneof({ weight: 12, arbitrary: valid as fc.Arbitrary<unknown> }, { weight: 1, arbitrary: fieldValue as fc.Arbitrary<unknown> });
const sessionBody = fc
  .record(
    {
      countryCode: mostly(fc.constantFrom('ALL', 'BRA', 'USA', 'MEX', 'DEU', 'XXX')),
      configurationId: mostly(fc.stringMatching(/^[A-Za-z0-9_-]{1,64}$/)),
      language: mostly(fc.constantFrom('en-US', 'es', 'pt-BR')),
      externalCustomerId: mostly(fc.string({ unit: 'grapheme', minLength: 1, maxLength: 40 })),
      redirectionUrl: mostly(fc.webUrl()),
    },
    { requiredKeys: [] },
  )
  .map((o) => JSON.stringify(o));

const contentType = fc.oneof(
  { weight: 6, arbitrary: fc.constant('application/json') },
  { weight: 1, arbitrary: fc.constantFrom('application/json; charset=utf-8', 'application/json; charset=utf-16', 'APPLICATION/JSON', 'text/plain', 'text/html', 'application/xml', 'application/x-www-form-urlencoded', 'multipart/form-data; boundary=xyz', 'application/octet-stream', 'image/jpeg', 'application/vnd.api+json', '', '*/*', 'application/json, text/plain', ';;;', 'application/json; boundary="') },
  { weight: 1, arbitrary: fc.string({ unit: 'grapheme-ascii', maxLength: 60 }) },
);

const headerValue = fc.oneof(fc.string({ unit: 'grapheme-ascii', maxLength: 80 }), fc.string({ unit: 'grapheme-ascii', minLength: 1, maxLength: 4 }).map((s) => s.repeat(1000).slice(0, 6000)));
const bearerish = fc.oneof(
  headerValue,
  headerValue.map((v) => `Bearer ${v}`),
  headerValue.map((v) => `Basic ${Buffer.from(v).toString('base64')}`),
  fc.constantFrom('Bearer', 'Bearer ', 'Basic', 'Basic ===', `Bearer ${ADMIN_KEY}x`, 'bearer  a b'),
);
const extraHeaders = fc.dictionary(
  fc.oneof(fc.constantFrom('x-request-id', 'idempotency-key', 'x-app-key', 'x-incode-hardware-id', 'x-forwarded-for', 'origin', 'accept', 'accept-encoding', 'x-webhook-secret', 'content-encoding', 'x-http-method-override', '__proto__', 'constructor'), fc.stringMatching(/^[a-z][a-z0-9-]{0,20}$/)),
  headerValue,
  { maxKeys: 4 },
);

function headers(ct: string | null, extra: Record<string, string>, base: Record<string, string> = {}): Record<string, string> {
  const h: Record<string, string> = {};
  // Keys such as __proto__ must be own properties here, not a prototype change.
  for (const [k, v] of Object.entries(extra)) Object.defineProperty(h, k, { value: v, enumerable: true, writable: true, configurable: true });
  for (const [k, v] of Object.entries(base)) h[k] = v;
  if (ct !== null && ct !== '') h['content-type'] = ct;
  delete h['content-length'];
  delete h['transfer-encoding'];
  delete h['host'];
  return h;
}

const sessionIdLike = fc.oneof(fc.stringMatching(/^[0-9a-f]{24}$/), fc.string({ unit: 'grapheme', minLength: 1, maxLength: 80 }), fc.constantFrom('..', '.', '%2e%2e', '__proto__', 'constructor', 'a'.repeat(65), '%00', '%', '%ZZ'));
const encodePathSegment = (s: string, raw: boolean) => (raw && /^[\x21-\x7e]*$/.test(s) && !/[?#/]/.test(s) ? s : encodeURIComponent(s));

// ---- the run ------------------------------------------------------------------------------------------

beforeAll(async () => {
  emu = await startEmulator();
  broker = await startBroker(
    brokerEnv(emu.url, {
      LOG_LEVEL: 'warn',
      TRUST_PROXY_HOPS: '1',
      SESSION_BODY_LIMIT_BYTES: '16384',
      ONBOARDING_BODY_LIMIT_BYTES: '2097152',
      RESULTS_MODE: 'webhook',
      // Any flow and return URL, so that fuzzed ones reach Incode instead of stopping at the allow-lists.
      INCODE_ALLOWED_CONFIGURATION_IDS: '*',
      REDIRECTION_URL_ORIGINS: '*',
    }),
  );
  const s = await send({ method: 'POST', path: '/session', headers: { 'content-type': 'application/json' }, body: '{"externalCustomerId":"fuzz-1"}' });
  expect(s.status).toBe(200);
  ({ token: sessionToken, interviewId } = JSON.parse(s.text));
  // The resume property gets a session of its own: a resume replaces its session's token, which would leave the
  // token properties below only their 401 to test.
  const r = await send({ method: 'POST', path: '/session', headers: { 'content-type': 'application/json' }, body: '{"externalCustomerId":"fuzz-2"}' });
  expect(r.status).toBe(200);
  ({ resumeToken } = JSON.parse(r.text));
  const t = await send({ method: 'POST', path: '/webhooks/incode/token', headers: { 'content-type': 'application/x-www-form-urlencoded', authorization: `Basic ${Buffer.from(`${WEBHOOK_CLIENT_ID}:${WEBHOOK_CLIENT_SECRET}`).toString('base64')}` }, body: 'grant_type=client_credentials' });
  expect(t.status).toBe(200);
  webhookBearer = JSON.parse(t.text).access_token;
  // Only the properties' own answers count below.
  stats.clear();
});
afterAll(async () => {
  if (process.env.FUZZ_STATS) process.stdout.write([...stats].sort().map(([k, n]) => `${k}: ${n}`).join('\n') + '\n');
  await broker?.close();
  await emu?.close();
});

describe('fuzzing every public route: only 4xx, never 5xx', () => {
  it('POST /session: random bodies, content types and headers (incl. Idempotency-Key)', async () => {
    await fc.assert(
      fc.asyncProperty(fc.oneof({ weight: 2, arbitrary: sessionBody }, { weight: 1, arbitrary: anyJsonText }), contentType, extraHeaders, fc.option(headerValue, { nil: undefined }), async (body, ct, extra, idem) => {
        const h = headers(ct, extra, idem !== undefined && idem !== '' ? { 'idempotency-key': idem } : {});
        await expectClientError({ method: 'POST', path: '/session', headers: h, body }, (st) => st === 200 || (st >= 400 && st < 500));
      }),
      params,
    );
  }, 60_000);

  it('POST /session/resume', async () => {
    const resumeBody = fc.oneof(
      fc.record({ resumeToken: fc.oneof(fc.constant(resumeToken), weirdString, fieldValue) }, { requiredKeys: [] }).map((o) => JSON.stringify(o)),
      anyJsonText,
    );
    await fc.assert(
      fc.asyncProperty(resumeBody, contentType, extraHeaders, async (body, ct, extra) => {
        await expectClientError({ method: 'POST', path: '/session/resume', headers: headers(ct, extra), body }, (st) => st === 200 || (st >= 400 && st < 500));
      }),
      params,
    );
  }, 60_000);

  it.each(['/session/status', '/session/onboarding-url'])('GET %s with random X-Incode-Hardware-Id', async (path) => {
    await fc.assert(
      fc.asyncProperty(fc.oneof(headerValue, fc.constant(sessionToken), fc.constant(sessionToken + 'x')), extraHeaders, async (token, extra) => {
        const h = headers(null, extra, token ? { 'x-incode-hardware-id': token } : {});
        await expectClientError({ method: 'GET', path, headers: h }, (st) => st === 200 || (st >= 400 && st < 500));
      }),
      params,
    );
  }, 60_000);

  it('POST /webhooks/incode/token: form bodies and Authorization', async () => {
    const formKey = fc.oneof(fc.constantFrom('grant_type', 'scope', '__proto__', 'constructor', 'grant_type[]', 'grant_type[__proto__]', '__proto__[polluted]', 'constructor[prototype][polluted]'), unicode);
    const formBody = fc.oneof(
      { weight: 3, arbitrary: fc.array(fc.tuple(formKey, fc.oneof(weirdString, fc.constant('client_credentials'))), { maxLength: 5 }).map((pairs) => new URLSearchParams([['grant_type', 'client_credentials'], ...pairs]).toString()) },
      fc.array(fc.tuple(formKey, fc.oneof(weirdString, fc.constant('client_credentials'))), { maxLength: 5 }).map((pairs) => new URLSearchParams(pairs).toString()),
      fc.string({ unit: 'grapheme', maxLength: 200 }),
      fc.constantFrom('%', '%ZZ', '&&&', '=', 'grant_type=%E0%A4%A', 'a'.repeat(5000)),
      anyJsonText,
    );
    const creds = fc.oneof(
      bearerish,
      fc.tuple(unicode, unicode).map(([i, s]) => `Basic ${Buffer.from(`${i}:${s}`).toString('base64')}`),
      fc.constant(`Basic ${Buffer.from(`${WEBHOOK_CLIENT_ID}:${WEBHOOK_CLIENT_SECRET}`).toString('base64')}`),
    );
    const ip = fc.tuple(fc.nat(255), fc.nat(255), fc.nat(255)).map(([a, b, c]) => `10.${a}.${b}.${c}`);
    await fc.assert(
      fc.asyncProperty(formBody, fc.oneof({ weight: 4, arbitrary: fc.constant('application/x-www-form-urlencoded') }, { weight: 1, arbitrary: contentType }), creds, ip, async (body, ct, auth, addr) => {
        await expectClientError({ method: 'POST', path: '/webhooks/incode/token', headers: headers(ct, {}, { authorization: auth, 'x-forwarded-for': addr }), body }, (st) => st === 200 || (st >= 400 && st < 500));
      }),
      params,
    );
  }, 60_000);

  it('POST /webhooks/incode: JSON bodies, bearer and secret headers', async () => {
    const webhookBody = fc.oneof(
      fc
        .record(
          {
            interviewId: fc.oneof(fc.constant(interviewId), fc.stringMatching(/^[A-Za-z0-9_-]{1,64}$/), fieldValue),
            onboardingStatus: fc.oneof(fc.constantFrom('ONBOARDING_FINISHED', 'ID_VALIDATION_FINISHED', 'MANUAL_REVIEW_APPROVED', 'EXPIRED', 'UNKNOWN', 'FOO_BAR'), fieldValue),
            externalId: fieldValue,
            clientId: fieldValue,
          },
          { requiredKeys: [] },
        )
        .map((o) => JSON.stringify(o)),
      anyJsonText,
    );
    const auth = fc.oneof({ weight: 3, arbitrary: fc.constant(`Bearer ${webhookBearer}`) }, { weight: 2, arbitrary: bearerish });
    await fc.assert(
      fc.asyncProperty(webhookBody, contentType, auth, extraHeaders, async (body, ct, a, extra) => {
        await expectClientError({ method: 'POST', path: '/webhooks/incode', headers: headers(ct, extra, { authorization: a }), body }, (st) => st === 200 || (st >= 400 && st < 500));
      }),
      params,
    );
  }, 60_000);

  it('GET /sessions/:interviewId, POST /sessions/:id/refresh, DELETE /sessions/:id', async () => {
    const auth = fc.oneof({ weight: 3, arbitrary: fc.constant(`Bearer ${ADMIN_KEY}`) }, { weight: 1, arbitrary: bearerish });
    await fc.assert(
      fc.asyncProperty(fc.constantFrom('GET', 'POST', 'DELETE'), fc.oneof(sessionIdLike, fc.constant(interviewId)), fc.boolean(), auth, fc.option(anyJsonText, { nil: undefined }), contentType, async (method, id, raw, a, body, ct) => {
        // Never erase the session the other properties use.
        const target = method === 'DELETE' && id === interviewId ? id + 'x' : id;
        const path = method === 'POST' ? `/sessions/${encodePathSegment(target, raw)}/refresh` : `/sessions/${encodePathSegment(target, raw)}`;
        const sendBody = method === 'GET' ? undefined : body;
        await expectClientError({ method, path, headers: headers(sendBody !== undefined ? ct : null, {}, { authorization: a }), body: sendBody }, (st) => st === 200 || st === 202 || (st >= 400 && st < 500));
      }),
      params,
    );
  }, 60_000);

  it('GET /sessions with random query parameters', async () => {
    const key = fc.oneof(fc.constantFrom('onboardingStatus', 'resultsStatus', 'decision', 'since', 'until', 'limit', 'cursor', '__proto__', 'constructor', 'limit[]', '__proto__[polluted]', 'constructor[prototype][x]'), unicode);
    const value = fc.oneof(weirdString, fc.integer().map(String), fc.date({ noInvalidDate: true }).map((d) => d.toISOString()), fc.constantFrom('ready', 'pending', 'approve', '0', '201', '-5', '1.5', 'eyJ', 'AAAA', '2024-13-45T99:99:99Z'));
    const qs = fc.oneof(
      fc.array(fc.tuple(key, value.map((v) => v.slice(0, 3000))), { maxLength: 6 }).map((pairs) => new URLSearchParams(pairs).toString()),
      fc.constantFrom('%', '%%', '%E0%A4%A', 'limit=1&limit=2', 'a=%00', '&&=&', '?', 'cursor=' + 'A'.repeat(600), 'since=%ZZ'),
    );
    const auth = fc.oneof({ weight: 4, arbitrary: fc.constant(`Bearer ${ADMIN_KEY}`) }, { weight: 1, arbitrary: bearerish });
    await fc.assert(
      fc.asyncProperty(qs, auth, async (q, a) => {
        await expectClientError({ method: 'GET', path: `/sessions?${q}`, headers: { authorization: a } }, (st) => st === 200 || (st >= 400 && st < 500));
      }),
      params,
    );
  }, 60_000);

  it('POST /onboardings (service key) with random JSON and broken images', async () => {
    const b64 = fc.oneof(
      fc.base64String({ minLength: 16, maxLength: 400 }),
      fc.constantFrom(sampleImages().front.slice(0, 200), '/9j/' + 'A'.repeat(200), 'iVBORw0KGgo' + 'A'.repeat(200), 'data:image/jpeg;base64,/9j/' + 'A'.repeat(200), 'data:image/png;base64,', '/9j/4AAQ===='),
      fieldValue,
    );
    const real = fc.constantFrom(sampleImages().front, sampleImages().back, sampleImages().selfie);
    const body = fc.oneof(
      { weight: 3, arbitrary: fc.record({ front: b64, back: b64, selfie: b64, countryCode: fc.oneof(fc.constantFrom('ALL', 'XXX'), fieldValue), externalCustomerId: fieldValue, extra: fieldValue }, { requiredKeys: [] }).map((o) => JSON.stringify(o)) },
      // Real images in random slots (front as selfie, ...): captures reach the emulator and its checks.
      { weight: 1, arbitrary: fc.record({ front: real, back: fc.option(real, { nil: undefined }), selfie: real, countryCode: mostly(fc.constantFrom('ALL', 'USA', 'BRA')), externalCustomerId: mostly(fc.string({ unit: 'grapheme', minLength: 1, maxLength: 40 })) }, { requiredKeys: ['front', 'selfie'] }).map((o) => JSON.stringify(o)) },
      { weight: 2, arbitrary: anyJsonText },
    );
    const auth = fc.oneof({ weight: 4, arbitrary: fc.constant(`Bearer ${ADMIN_KEY}`) }, { weight: 1, arbitrary: bearerish });
    await fc.assert(
      fc.asyncProperty(body, contentType, auth, async (b, ct, a) => {
        await expectClientError({ method: 'POST', path: '/onboardings', headers: headers(ct, {}, { authorization: a }), body: b }, (st) => st === 202 || (st >= 400 && st < 500));
      }),
      params,
    );
  }, 60_000);

  it('random paths, methods, queries and headers (incl. /healthz, /readyz, /metrics, /docs)', async () => {
    const known = fc.constantFrom('/healthz', '/readyz', '/metrics', '/docs', '/docs/json', '/session', '/session/status', '/session/resume', '/sessions', '/webhooks/incode', '/webhooks/incode/token', '/onboardings', '/operator', '/', '/sandbox/incode/omni/start');
    const path = fc.oneof(
      known,
      fc.webPath(),
      fc.tuple(known, fc.string({ unit: 'grapheme', maxLength: 30 })).map(([p, s]) => p + '/' + encodeURIComponent(s)),
      fc.constantFrom('/%', '/%ZZ', '/%00', '//', '/..%2f..%2f', '/session/%E0%A4%A', '/' + 'a'.repeat(4000), '/__proto__', '/constructor/prototype', '/docs/../metrics', '/docs/static/../../package.json'),
    );
    const query = fc.option(fc.oneof(fc.string({ unit: 'grapheme-ascii', maxLength: 60 }).map((s) => s.replace(/[#\s]/g, '')), fc.constantFrom('%', 'a=%E0%A4%A', '__proto__[x]=1')), { nil: undefined });
    const method = fc.constantFrom('GET', 'POST', 'PUT', 'PATCH', 'DELETE', 'OPTIONS', 'HEAD');
    await fc.assert(
      fc.asyncProperty(method, path, query, extraHeaders, fc.option(anyJsonText, { nil: undefined }), contentType, async (m, p, q, extra, body, ct) => {
        const safePath = /^[\x21-\x7e]*$/.test(p) ? p : encodeURI(p);
        const sendBody = m === 'GET' || m === 'HEAD' ? undefined : body;
        // /session would create sessions: fine, but answers 200; /readyz is 200 on a healthy emulator.
        await expectClientError({ method: m, path: safePath + (q !== undefined ? `?${q}` : ''), headers: headers(sendBody !== undefined ? ct : null, extra), body: sendBody }, (st) => st < 500);
      }),
      params,
    );
  }, 60_000);

  it('the inputs reached the handlers: every fuzzed route accepted some of them', () => {
    // A gate that refused everything (auth, content type, a schema) would make "never 5xx" hold trivially.
    const accepted = (line: string) => (stats.get(line) ?? 0) > 0;
    const lines = ['POST /session 200', 'POST /session/resume 200', 'GET /session/status 200', 'GET /session/onboarding-url 200', 'POST /webhooks/incode 200', 'POST /webhooks/incode/token 200', 'GET /sessions 200', 'POST /onboardings 202'];
    for (const line of lines) expect({ line, accepted: accepted(line) }).toEqual({ line, accepted: true });
    // The session routes, by their keys' prefix (the path holds the id).
    for (const [prefix, status] of [['GET /sessions/', 200], ['POST /sessions/', 202]] as const) {
      const hit = [...stats].some(([k, n]) => n > 0 && k.startsWith(prefix) && k.endsWith(` ${status}`));
      expect({ prefix, status, hit }).toEqual({ prefix, status, hit: true });
    }
  });

  it('the process is still healthy and Object.prototype is untouched', async () => {
    expect((await send({ method: 'GET', path: '/healthz' })).status).toBe(200);
    expect((await send({ method: 'GET', path: '/readyz' })).status).toBe(200);
    const created = await send({ method: 'POST', path: '/session', headers: { 'content-type': 'application/json' }, body: '{}' });
    expect(created.status).toBe(200);
    expect(Object.getOwnPropertyNames(Object.prototype).sort()).toEqual(protoBefore);
    const probe = {} as Record<string, unknown>;
    for (const k of ['polluted', 'polluted2', 'isAdmin', 'x']) expect(probe[k]).toBeUndefined();
    expect((await send({ method: 'GET', path: '/metrics' })).text).not.toMatch(/status_code="5\d\d"/);
  });
});
