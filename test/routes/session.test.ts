// POST /session, /session/resume and /session/status over HTTP against the real emulator; sandbox mode; CORS.
import { randomBytes } from 'node:crypto';
import { createServer } from 'node:http';
import { join } from 'node:path';
import type { AddressInfo } from 'node:net';
import request from 'supertest';
import { request as undiciRequest } from 'undici';
import type { EmulatorApp } from '../../src/emulator/app';
import { ADMIN_KEY, TEST_API_KEY, brokerEnv, recordRequests, startBroker, startEmulator, startSandbox, waitFor, waitForResults, type Running } from '../helpers/harness';
import { captureAll } from '../helpers/flow';
import { sha256Hex } from '../../src/store/crypto';
import type { SqliteStore } from '../../src/store/sqlite-store';
import { throwawayPgStore } from '../helpers/pg-schema';
import { memoryStore, storeWith } from '../helpers/store-proxy';
import { describeWith, services } from '../helpers/services';
import { Pool } from 'pg';
import { tempDir } from '../helpers/temp';
import { metricValue } from '../helpers/metrics';
import { idBack, idFront, selfie } from '../../src/emulator/sample-images';

const onboardingBody = () => ({ front: idFront().toString('base64'), back: idBack().toString('base64'), selfie: selfie().toString('base64') });

/**
 * RETENTION_DAYS=1 under a week-long RESUME_TOKEN_TTL_SECONDS: every resume token's advertised expiry is no later than
 * the session's erasure by the retention purge, also for a session started 23 hours ago. `age` backdates the session.
 */
async function resumeExpiryWithinRetention(start: typeof startBroker, age: (url: string, interviewId: string, createdAt: number) => Promise<void>, extra: Record<string, string> = {}) {
  const emu = await startEmulator();
  const b = await start(brokerEnv(emu.url, { RETENTION_DAYS: '1', RESUME_TOKEN_TTL_SECONDS: '604800', ...extra }));
  try {
    const before = Date.now();
    const s = (await request(b.url).post('/session').expect(200)).body;
    expect(Date.parse(s.resumeTokenExpiresAt)).toBeLessThanOrEqual(Date.now() + 86_400_000);
    expect(Date.parse(s.resumeTokenExpiresAt)).toBeGreaterThanOrEqual(before + 86_400_000 - 1000);
    const createdAt = Date.now() - 23 * 3_600_000;
    await age(b.url, s.interviewId, createdAt);
    const resumed = (await request(b.url).post('/session/resume').send({ resumeToken: s.resumeToken }).expect(200)).body;
    expect(Date.parse(resumed.resumeTokenExpiresAt)).toBeLessThanOrEqual(createdAt + 86_400_000);
    expect(Date.parse(resumed.resumeTokenExpiresAt)).toBeGreaterThan(Date.now());
    // Past its retention and not yet purged: no token that would be expired as it is handed out.
    await age(b.url, s.interviewId, Date.now() - 25 * 3_600_000);
    const late = await request(b.url).post('/session/resume').send({ resumeToken: resumed.resumeToken });
    expect([late.status, late.body.code]).toEqual([404, 'SESSION_NOT_FOUND']);
  } finally {
    await b.close();
    await emu.close();
  }
}

describe('POST /session against the emulator', () => {
  let emu: Running<EmulatorApp>;
  let broker: Awaited<ReturnType<typeof startBroker>>;
  beforeAll(async () => {
    emu = await startEmulator();
    broker = await startBroker(
      brokerEnv(emu.url, { CORS_ORIGINS: 'https://app.example.com', SESSION_BODY_LIMIT_BYTES: '1024', INCODE_ALLOWED_CONFIGURATION_IDS: '*', REDIRECTION_URL_ORIGINS: 'https://app.example.com' }),
    );
  });
  afterAll(async () => {
    await broker.close();
    await emu.close();
  });
  // One test's faults never outlive it, even when it fails midway: later tests would fail for its reason.
  afterEach(() => emu.app.emulator.resetFaults());

  it('answers a JSON object with the token, the interview id and the /0/ API URL', async () => {
    const res = await request(broker.url).post('/session').expect(200);
    expect(res.headers['content-type']).toMatch(/application\/json/);
    expect(res.body).toEqual({
      token: expect.stringMatching(/^eyJ/),
      interviewId: expect.stringMatching(/^[0-9a-f]{24}$/),
      apiUrl: `${emu.url}/0/`,
      resumeToken: expect.any(String),
      resumeTokenExpiresAt: expect.any(String),
    });
    expect(res.headers['x-request-id']).toBeTruthy();
    expect(JSON.stringify(res.body)).not.toContain(TEST_API_KEY);
    const s = await broker.app.store.getSession(res.body.interviewId);
    expect(s).toMatchObject({ origin: 'broker', onboardingStatus: 'UNKNOWN', resultsStatus: 'pending', token: res.body.token });
  });

  it('passes the start options on to Incode (countryCode BRA, externalCustomerId, language, redirectionUrl)', async () => {
    const res = await request(broker.url)
      .post('/session')
      .send({ countryCode: 'BRA', externalCustomerId: 'cust-9', language: 'pt-BR', redirectionUrl: 'https://app.example.com/done', configurationId: '6650c1a9e4b0f2a7d3c91e55' })
      .expect(200);
    const s = emu.app.emulator.sessions.get(res.body.interviewId)!;
    expect(s).toMatchObject({ countryCode: 'BRA', externalCustomerId: 'cust-9', language: 'pt-BR', redirectionUrl: 'https://app.example.com/done', configurationId: '6650c1a9e4b0f2a7d3c91e55' });
    const def = await request(broker.url).post('/session').send({}).expect(200);
    expect(emu.app.emulator.sessions.get(def.body.interviewId)!.countryCode).toBe('ALL');
  });

  it('stores a customer id outside the Basic Multilingual Plane exactly as sent', async () => {
    const res = await request(broker.url).post('/session').send({ externalCustomerId: 'ana-😀-𝒳' }).expect(200);
    expect(await broker.app.store.getSession(res.body.interviewId)).toMatchObject({ externalCustomerId: 'ana-😀-𝒳' });
    expect(emu.app.emulator.sessions.get(res.body.interviewId)!.externalCustomerId).toBe('ana-😀-𝒳');
  });

  it('keeps the zero-width joiner and non-joiner, which Persian, Indic scripts and emoji are written with', async () => {
    for (const id of ['\u0645\u06cc\u200c\u062e\u0648\u0627\u0647\u0645', '\u{1f469}\u200d\u{1f467}', '\u2764\ufe0f']) {
      const res = await request(broker.url).post('/session').send({ externalCustomerId: id }).expect(200);
      expect(await broker.app.store.getSession(res.body.interviewId)).toMatchObject({ externalCustomerId: id });
    }
  });

  it.each([
    [{ countryCode: 'XXX' }, 'INVALID_COUNTRY_CODE'],
    [{ countryCode: 'br' }, 'VALIDATION_FAILED'],
    [{ countryCode: 'BRAZIL' }, 'VALIDATION_FAILED'],
    // JSON bodies keep their types (only query strings, params and headers are coerced from text).
    [{ countryCode: 123 }, 'VALIDATION_FAILED'],
    [{ externalCustomerId: 0 }, 'VALIDATION_FAILED'],
    [{ externalCustomerId: -0 }, 'VALIDATION_FAILED'],
    [{ language: ['en-US'] }, 'VALIDATION_FAILED'],
    [{ language: 'english' }, 'VALIDATION_FAILED'],
    [{ redirectionUrl: 'javascript:alert(1)' }, 'VALIDATION_FAILED'],
    [{ externalCustomerId: '' }, 'VALIDATION_FAILED'],
    // A lone surrogate: UTF-8 cannot carry it, so the id stored would not be the id sent.
    [{ externalCustomerId: 'a\ud800b' }, 'VALIDATION_FAILED'],
    [{ externalCustomerId: '\udc00' }, 'VALIDATION_FAILED'],
    // Marks that make an id display as another (`ab\u200bcd` as `abcd`).
    ...['\u200b', '\u200e', '\u200f', '\u061c', '\u2028', '\u2029', '\u2060', '\ufeff', '\u202e', '\u2067', '\u00ad', '\u034f', '\u3164', '\u180e'].map((c): [object, string] => [{ externalCustomerId: `ab${c}cd` }, 'VALIDATION_FAILED']),
    [{ unexpected: true }, 'VALIDATION_FAILED'],
    [[1, 2], 'VALIDATION_FAILED'],
  ])('rejects %j with 400 %s', async (body, code) => {
    const res = await request(broker.url).post('/session').send(body as object).expect(400);
    expect(res.body).toEqual({ code, message: expect.any(String), requestId: expect.any(String) });
  });

  it('rejects malformed JSON (400), wrong media type (415) and oversized bodies (413)', async () => {
    expect((await request(broker.url).post('/session').set('content-type', 'application/json').send('{"countryCode":').expect(400)).body.code).toBe('INVALID_JSON');
    expect((await request(broker.url).post('/session').set('content-type', 'text/plain').send('hello').expect(415)).body.code).toBe('UNSUPPORTED_MEDIA_TYPE');
    expect((await request(broker.url).post('/session').set('content-type', 'application/xml').send('<a/>').expect(415)).body.code).toBe('UNSUPPORTED_MEDIA_TYPE');
    expect((await request(broker.url).post('/session').send({ externalCustomerId: 'x'.repeat(2000) }).expect(413)).body.code).toBe('BODY_TOO_LARGE');
  });

  it('answers CORS preflights for allowed origins only', async () => {
    const ok = await request(broker.url).options('/session').set('origin', 'https://app.example.com').set('access-control-request-method', 'POST').set('access-control-request-headers', 'content-type,idempotency-key');
    expect(ok.status).toBe(204);
    expect(ok.headers['access-control-allow-origin']).toBe('https://app.example.com');
    expect(ok.headers['access-control-allow-headers']).toMatch(/idempotency-key/);
    // A browser frontend reads the refusal's budget and wait too.
    const actual = await request(broker.url).post('/session').set('origin', 'https://app.example.com').send({}).expect(200);
    expect(actual.headers['access-control-expose-headers']).toMatch(/retry-after/);
    expect(actual.headers['access-control-expose-headers']).toMatch(/x-ratelimit-limit/);
    const evil = await request(broker.url).options('/session').set('origin', 'https://evil.example.com').set('access-control-request-method', 'POST');
    expect(evil.headers['access-control-allow-origin']).toBeUndefined();
  });

  it('gives the results API and the server-side flow no CORS, even for an allowed app origin: backends call them', async () => {
    const origin = 'https://app.example.com';
    for (const [path, method] of [['/sessions', 'GET'], ['/sessions/aaaaaaaaaaaaaaaaaaaaaaaa', 'DELETE'], ['/onboardings', 'POST']]) {
      const pre = await request(broker.url).options(path).set('origin', origin).set('access-control-request-method', method).set('access-control-request-headers', 'authorization');
      expect([path, pre.status, pre.body.code, pre.headers['access-control-allow-origin']]).toEqual([path, 403, 'CORS_NOT_ALLOWED', undefined]);
    }
    const listed = await request(broker.url).get('/sessions').set('origin', origin).set('authorization', `Bearer ${ADMIN_KEY}`).expect(200);
    expect(listed.headers['access-control-allow-origin']).toBeUndefined();
    // The app's own routes keep theirs.
    expect((await request(broker.url).post('/session').set('origin', origin).send({}).expect(200)).headers['access-control-allow-origin']).toBe(origin);
  });

  it('exchanges a resume token for a fresh token of the same onboarding, without a new session', async () => {
    const first = (await request(broker.url).post('/session').expect(200)).body;
    const before = emu.app.emulator.sessions.size;
    // The emulator's tokens carry their issue time in seconds: resumed in a later second, the fresh token differs.
    await new Promise((r) => setTimeout(r, 1005 - (Date.now() % 1000)));
    const resumed = (await request(broker.url).post('/session/resume').send({ resumeToken: first.resumeToken }).expect(200)).body;
    expect(resumed.interviewId).toBe(first.interviewId);
    expect(resumed.token).not.toBe(first.token);
    expect(resumed.resumeToken).not.toBe(first.resumeToken);
    expect(emu.app.emulator.sessions.size).toBe(before);
    // The new token identifies the session to the app view.
    const st = await request(broker.url).get('/session/status').set('x-incode-hardware-id', resumed.token).expect(200);
    expect(st.body.interviewId).toBe(first.interviewId);
    // The replaced token no longer does (the README tells the app to switch).
    expect((await request(broker.url).get('/session/status').set('x-incode-hardware-id', first.token).expect(401)).body.code).toBe('UNAUTHORIZED');
    expect((await request(broker.url).post('/session/resume').send({ resumeToken: 'x'.repeat(43) }).expect(401)).body.code).toBe('INVALID_RESUME_TOKEN');
    // The token names its session, but only the secret part unlocks it.
    const forged = `${first.resumeToken.split('.')[0]}.${'A'.repeat(43)}`;
    expect((await request(broker.url).post('/session/resume').send({ resumeToken: forged }).expect(401)).body.code).toBe('INVALID_RESUME_TOKEN');
    await request(broker.url).post('/session/resume').send({ interviewId: first.interviewId }).expect(400);
    // Only the spelling the service gave: padding or stray characters in the named part (which lenient base64url
    // decoding would skip) make it no token, the right secret included.
    const [named, secret] = resumed.resumeToken.split('.');
    for (const odd of [`${named}==.${secret}`, `${named}!.${secret}`, `${named.slice(0, 4)} ${named.slice(4)}.${secret}`])
      expect((await request(broker.url).post('/session/resume').send({ resumeToken: odd }).expect(401)).body.code).toBe('INVALID_RESUME_TOKEN');
    // The resume token just issued was the only live one: the first is revoked, and erasure revokes the second.
    expect((await request(broker.url).post('/session/resume').send({ resumeToken: first.resumeToken }).expect(401)).body.code).toBe('INVALID_RESUME_TOKEN');
    await request(broker.url).delete(`/sessions/${first.interviewId}`).set('authorization', `Bearer ${ADMIN_KEY}`).expect(200);
    expect((await request(broker.url).post('/session/resume').send({ resumeToken: resumed.resumeToken }).expect(401)).body.code).toBe('INVALID_RESUME_TOKEN');
  });

  it('refuses a resume or an Idempotency-Key replay once the onboarding has ended (409 SESSION_FINISHED), and no answer with a token is cacheable', async () => {
    const res = await request(broker.url).post('/session').set('idempotency-key', 'k-finished-0123456789abcdef').expect(200);
    expect(res.headers['cache-control']).toBe('no-store');
    const first = res.body;
    await captureAll(`${emu.url}/0/`, first.token);
    await waitForResults(broker.url, first.interviewId);
    const incode = recordRequests(emu.app.server);
    const refused = await request(broker.url).post('/session/resume').send({ resumeToken: first.resumeToken }).expect(409);
    incode.stop();
    const starts = incode.urls.filter((u) => u.startsWith('/omni/start'));
    expect(refused.body.code).toBe('SESSION_FINISHED');
    expect(refused.headers['cache-control']).toBe('no-store');
    // Incode was not asked for a token, and the resume token stays spent.
    expect(starts).toEqual([]);
    expect((await request(broker.url).post('/session/resume').send({ resumeToken: first.resumeToken }).expect(401)).body.code).toBe('INVALID_RESUME_TOKEN');
    // A retry with the session's Idempotency-Key would hand out the same (still live) token: refused the same way.
    const replay = await request(broker.url).post('/session').set('idempotency-key', 'k-finished-0123456789abcdef').expect(409);
    expect(replay.body.code).toBe('SESSION_FINISHED');
    expect(JSON.stringify(replay.body)).not.toContain(first.token);
  });

  it('does not hand out the fresh token of a session erased while Incode was asked for it (404)', async () => {
    const first = (await request(broker.url).post('/session').expect(200)).body;
    emu.app.emulator.setFaults({ startLatencyMs: 1500 });
    const resumed = request(broker.url).post('/session/resume').send({ resumeToken: first.resumeToken }).then((r) => r);
    await waitFor(async () => ((await broker.app.store.checkResumeToken(first.interviewId, sha256Hex(first.resumeToken.split('.')[1]), Date.now())) ? null : true), 5000, 5);
    await request(broker.url).delete(`/sessions/${first.interviewId}`).set('authorization', `Bearer ${ADMIN_KEY}`).expect(200);
    const res = await resumed;
    expect([res.status, res.body.code, res.body.token]).toEqual([404, 'SESSION_NOT_FOUND', undefined]);
  });

  it('a resume whose new tokens the database could not keep (503) leaves the resume token usable for the retry', async () => {
    const real = await memoryStore();
    let failNext = false;
    // The database gives out after Incode answered: the write of the new resume token is refused as a locked SQLite would.
    const store = storeWith(real, (m) =>
      m === 'createResumeToken' && failNext
        ? async () => {
            failNext = false;
            throw Object.assign(new Error('database is locked'), { name: 'SqliteError', code: 'SQLITE_BUSY' });
          }
        : null,
    );
    const b = await startBroker(brokerEnv(emu.url), { store });
    try {
      const first = (await request(b.url).post('/session').expect(200)).body;
      failNext = true;
      const failed = await request(b.url).post('/session/resume').send({ resumeToken: first.resumeToken });
      expect([failed.status, failed.body.code]).toEqual([503, 'DATABASE_UNAVAILABLE']);
      expect(failed.headers['retry-after']).toBeDefined();
      const retried = await request(b.url).post('/session/resume').send({ resumeToken: first.resumeToken }).expect(200);
      expect(retried.body).toMatchObject({ interviewId: first.interviewId, token: expect.any(String), resumeToken: expect.any(String) });
    } finally {
      await b.close();
      await real.close();
    }
  });

  it('once a start finds the database down, the next are refused before Incode is called (no billed session no one can keep), until it answers again', async () => {
    const real = await memoryStore();
    let down = false;
    // What PostgreSQL's driver throws when the server is gone; a deadlock and a locked SQLite file say nothing of the kind.
    const refused = () => Object.assign(new Error('connect ECONNREFUSED 127.0.0.1:5432'), { code: 'ECONNREFUSED', syscall: 'connect' });
    let raceLost: Error | null = null;
    const store = storeWith(real, (m) =>
      down && m !== 'close'
        ? async () => {
            throw refused();
          }
        : raceLost && m === 'upsertSession'
          ? async () => {
              const e = raceLost!;
              raceLost = null;
              throw e;
            }
          : null,
    );
    const b = await startBroker(brokerEnv(emu.url), { store });
    const post = (key?: string) => request(b.url).post('/session').set(key ? { 'idempotency-key': key } : {}).send({});
    try {
      await post().expect(200);
      // One transaction losing a race, or a busy SQLite file: answered 503, but the database is not taken for down.
      for (const e of [
        Object.assign(new Error('deadlock detected'), { code: '40P01', severity: 'ERROR' }),
        Object.assign(new Error('database is locked'), { name: 'SqliteError', code: 'SQLITE_BUSY' }),
      ]) {
        raceLost = e;
        expect((await post()).body.code).toBe('DATABASE_UNAVAILABLE');
        expect(b.app.databaseOutage.down).toBe(false);
      }
      down = true;
      const started = emu.app.emulator.sessions.size;
      // The first learns it the hard way: Incode created a session this service could not keep.
      const first = await post();
      expect([first.status, first.body.code, first.headers['retry-after']]).toEqual([503, 'DATABASE_UNAVAILABLE', '5']);
      expect(emu.app.emulator.sessions.size).toBe(started + 1);
      expect(b.app.databaseOutage.down).toBe(true);
      expect(await metricValue(b.url, 'database_unavailable')).toBe(1);
      // That session is billed and followed by no one: its id is logged, for the operator to find it at Incode.
      const orphan = [...emu.app.emulator.sessions.sessions.keys()].at(-1)!;
      expect(b.logs.lines.filter((l) => l.includes('could not be recorded')).some((l) => l.includes(orphan))).toBe(true);
      // The next ones, with or without an Idempotency-Key, and a server-side onboarding, are refused unsent.
      const before = b.logs.lines.length;
      for (let i = 0; i < 3; i++) expect((await post()).body.code).toBe('DATABASE_UNAVAILABLE');
      // Refused on purpose while the database is known down: one warn line each, no error with frames (an outage
      // would otherwise flood the log at the request rate).
      const refusals = b.logs.lines.slice(before).map((l) => JSON.parse(l) as { level: number; msg: string; err?: unknown });
      expect(refusals.filter((l) => l.msg === 'request refused')).toHaveLength(3);
      expect(refusals.filter((l) => l.level >= 50 || l.err !== undefined)).toEqual([]);
      expect((await post('retry-after-outage-0123456789')).body.code).toBe('DATABASE_UNAVAILABLE');
      const onboarding = await request(b.url).post('/onboardings').set('authorization', `Bearer ${ADMIN_KEY}`).send(onboardingBody());
      expect([onboarding.status, onboarding.body.code]).toEqual([503, 'DATABASE_UNAVAILABLE']);
      expect(emu.app.emulator.sessions.size).toBe(started + 1);
      // Back: the probe hears it within a second or so, and starts go through again; the key refused meanwhile was
      // never claimed, so its retry starts the session (no 409 until a lease lapses).
      down = false;
      await waitFor(() => !b.app.databaseOutage.down, 10_000, 20);
      expect(await metricValue(b.url, 'database_unavailable')).toBe(0);
      expect((await post('retry-after-outage-0123456789')).status).toBe(200);
      expect(emu.app.emulator.sessions.size).toBe(started + 2);
      expect(b.logs.lines.filter((l) => /the database is not answering|the database answers again/.test(l))).toHaveLength(2);
      // A server-side onboarding that meets the outage first sets it as well (its failure names the database's).
      down = true;
      const first2 = await request(b.url).post('/onboardings').set('authorization', `Bearer ${ADMIN_KEY}`).send(onboardingBody());
      expect([first2.status, first2.body.code, first2.body.step]).toEqual([503, 'DATABASE_UNAVAILABLE', 'start']);
      expect(b.app.databaseOutage.down).toBe(true);
    } finally {
      down = false;
      await b.close();
      await real.close();
    }
  });

  it('spends a resume token once: of concurrent exchanges one wins; an Incode failure leaves it usable', async () => {
    const first = (await request(broker.url).post('/session').expect(200)).body;
    // Incode down: the exchange fails and the token is not lost.
    emu.app.emulator.setFaults({ errorRate: 1 });
    try {
      expect((await request(broker.url).post('/session/resume').send({ resumeToken: first.resumeToken }).expect(502)).body.code).toBe('INCODE_UNAVAILABLE');
    } finally {
      emu.app.emulator.resetFaults();
    }
    const answers = await Promise.all([1, 2, 3].map(() => request(broker.url).post('/session/resume').send({ resumeToken: first.resumeToken })));
    expect(answers.map((a) => a.status).sort()).toEqual([200, 401, 401]);
    const won = answers.find((a) => a.status === 200)!.body;
    expect(won.interviewId).toBe(first.interviewId);
    for (const a of answers.filter((x) => x.status === 401)) expect(a.body.code).toBe('INVALID_RESUME_TOKEN');
    // The winner's new token is the live one.
    await request(broker.url).post('/session/resume').send({ resumeToken: won.resumeToken }).expect(200);
  });

  it('refuses an Idempotency-Key shorter than 16 characters (one key space for all callers: a guessable key hands out the session)', async () => {
    const before = emu.app.emulator.sessions.size;
    const res = await request(broker.url).post('/session').set('idempotency-key', 'order-1').send({}).expect(400);
    expect(res.body).toMatchObject({ code: 'VALIDATION_FAILED', message: expect.stringMatching(/idempotency-key.*16/) });
    expect(emu.app.emulator.sessions.size).toBe(before);
  });

  it('replays the same session for a retried Idempotency-Key and refuses the key with another body', async () => {
    const a = await request(broker.url).post('/session').set('idempotency-key', 'k-123-0123456789abcdef').send({ externalCustomerId: 'c1' }).expect(200);
    const b = await request(broker.url).post('/session').set('idempotency-key', 'k-123-0123456789abcdef').send({ externalCustomerId: 'c1' }).expect(200);
    expect(b.body.interviewId).toBe(a.body.interviewId);
    expect(b.body.token).toBe(a.body.token);
    // The replay's resume token replaces the first one (the retrying caller never saw it).
    expect(b.body.resumeToken).not.toBe(a.body.resumeToken);
    await request(broker.url).post('/session/resume').send({ resumeToken: a.body.resumeToken }).expect(401);
    expect((await request(broker.url).post('/session/resume').send({ resumeToken: b.body.resumeToken }).expect(200)).body.interviewId).toBe(a.body.interviewId);
    const c = await request(broker.url).post('/session').set('idempotency-key', 'k-123-0123456789abcdef').send({ externalCustomerId: 'c2' }).expect(422);
    expect(c.body.code).toBe('IDEMPOTENCY_KEY_REUSED');
    // The request (its customer id) is kept only as a keyed digest: hashing guesses of the id finds nothing.
    const { request_hash: stored } = (broker.app.store as SqliteStore).db.prepare('SELECT request_hash FROM idempotency_keys WHERE key = ?').get(sha256Hex('k-123-0123456789abcdef')) as { request_hash: string };
    const plain = sha256Hex(JSON.stringify({ countryCode: 'ALL', configurationId: undefined, externalCustomerId: 'c1', language: undefined, redirectionUrl: undefined }));
    expect(stored).toMatch(/^[0-9a-f]{64}$/);
    expect(stored).not.toBe(plain);
    // A claim written before digests were keyed (a plain SHA-256) is still recognised after an upgrade.
    const now = Date.now();
    await broker.app.store.claimIdempotencyKey('session:anonymous', sha256Hex('k-legacy-0123456789abcdef'), plain, now + 60_000, now);
    expect((await request(broker.url).post('/session').set('idempotency-key', 'k-legacy-0123456789abcdef').send({ externalCustomerId: 'c1' }).expect(409)).body.code).toBe('IDEMPOTENCY_IN_PROGRESS');
    // A replay after the session was erased has nothing to give back: 404, and no new session is paid for.
    await request(broker.url).delete(`/sessions/${a.body.interviewId}`).set('authorization', `Bearer ${ADMIN_KEY}`).expect(200);
    const sessionsBefore = emu.app.emulator.sessions.size;
    const gone = await request(broker.url).post('/session').set('idempotency-key', 'k-123-0123456789abcdef').send({ externalCustomerId: 'c1' }).expect(404);
    expect(gone.body.code).toBe('SESSION_NOT_FOUND');
    expect(emu.app.emulator.sessions.size).toBe(sessionsBefore);
  });

  it('a pending Idempotency-Key answers 409 while its lease runs, and is taken over once a crashed claim has lapsed', async () => {
    // A real first request, held at Incode for 1.5 s: its retry meanwhile is told to wait.
    emu.app.emulator.setFaults({ startLatencyMs: 1500 });
    const first = request(broker.url).post('/session').set('idempotency-key', 'k-live-0123456789abcdef').send({}).then((r) => r);
    // The retry goes once the first has claimed the key (this broker's store is SQLite in memory).
    const db = (broker.app.store as SqliteStore).db;
    await waitFor(() => db.prepare("SELECT 1 FROM idempotency_keys WHERE key = ? AND state = 'pending'").get(sha256Hex('k-live-0123456789abcdef')), 5000, 5);
    const busy = await request(broker.url).post('/session').set('idempotency-key', 'k-live-0123456789abcdef').send({}).expect(409);
    expect(busy.body.code).toBe('IDEMPOTENCY_IN_PROGRESS');
    expect(busy.headers['retry-after']).toBe('1');
    expect((await first).status).toBe(200);
    emu.app.emulator.resetFaults();
    // A claim left by a process that died mid-request (written as the anonymous caller's key): its lease ended,
    // so the retry creates the session instead of waiting out the TTL.
    const now = Date.now();
    await broker.app.store.claimIdempotencyKey('session:anonymous', sha256Hex('k-crashed-0123456789abcdef'), 'the crashed request', now - 1, now - 120_000);
    const taken = await request(broker.url).post('/session').set('idempotency-key', 'k-crashed-0123456789abcdef').send({}).expect(200);
    const again = await request(broker.url).post('/session').set('idempotency-key', 'k-crashed-0123456789abcdef').send({}).expect(200);
    expect(again.body.interviewId).toBe(taken.body.interviewId);
  });

  it.each([502, 504])('a start whose answer was lost after Incode created the session (a gateway %i) is not retried, and its key stays claimed', async (status) => {
    emu.app.emulator.setFaults({ errorRate: 1, errorStatuses: [status], errorAfterHandler: true, faultPaths: ['/omni/start'] });
    const before = emu.app.emulator.sessions.size;
    const key = `k-lost-${status}-0123456789abcdef`;
    const res = await request(broker.url).post('/session').set('idempotency-key', key).send({});
    expect(res.status).toBe(status);
    // The session exists at Incode (billed), once: neither the client nor a retry under the key starts another.
    expect(emu.app.emulator.sessions.size).toBe(before + 1);
    emu.app.emulator.resetFaults();
    expect((await request(broker.url).post('/session').set('idempotency-key', key).send({}).expect(409)).body.code).toBe('IDEMPOTENCY_IN_PROGRESS');
    expect(emu.app.emulator.sessions.size).toBe(before + 1);
  });

  it('an IDEMPOTENCY_TTL_SECONDS shorter than a start does not let a retry start a second session beside the first', async () => {
    const shortTtl = await startBroker(brokerEnv(emu.url, { IDEMPOTENCY_TTL_SECONDS: '1', INCODE_TIMEOUT_MS: '10000' }));
    try {
      // Incode holds the start long enough for the retry below to come well inside it, however slow the machine.
      emu.app.emulator.setFaults({ startLatencyMs: 4000 });
      const before = emu.app.emulator.sessions.size;
      const first = request(shortTtl.url).post('/session').set('idempotency-key', 'k-short-0123456789abcdef').send({}).then((r) => r);
      // Past the TTL, the first still at Incode: its claim holds for as long as a start may take.
      await new Promise((r) => setTimeout(r, 1200));
      expect((await request(shortTtl.url).post('/session').set('idempotency-key', 'k-short-0123456789abcdef').send({}).expect(409)).body.code).toBe('IDEMPOTENCY_IN_PROGRESS');
      const done = await first;
      expect(done.status).toBe(200);
      expect(emu.app.emulator.sessions.size).toBe(before + 1);
      // Completed past its TTL: a retry now still gets that session (the TTL never ends a key before its lease would).
      emu.app.emulator.resetFaults();
      expect((await request(shortTtl.url).post('/session').set('idempotency-key', 'k-short-0123456789abcdef').send({}).expect(200)).body.interviewId).toBe(done.body.interviewId);
      expect(emu.app.emulator.sessions.size).toBe(before + 1);
    } finally {
      emu.app.emulator.resetFaults();
      await shortTtl.close();
    }
  });

  it('keeps an Idempotency-Key claimed when Incode may have created the session (timeout, 5xx), frees it when Incode refused (4xx)', async () => {
    const quick = await startBroker(brokerEnv(emu.url, { INCODE_TIMEOUT_MS: '300' }));
    const wrongKey = await startBroker(brokerEnv(emu.url, { INCODE_API_KEY: 'not-the-emulator-key-0123456789' }));
    try {
      // Incode answers after the broker gave up (undici checks its timeouts about once a second): the session exists
      // there, so a retry must not pay for another.
      emu.app.emulator.setFaults({ startLatencyMs: 2500 });
      const before = emu.app.emulator.sessions.size;
      expect((await request(quick.url).post('/session').set('idempotency-key', 'k-timeout-0123456789abcdef').send({}).expect(504)).body.code).toBe('INCODE_TIMEOUT');
      expect((await request(quick.url).post('/session').set('idempotency-key', 'k-timeout-0123456789abcdef').send({}).expect(409)).body.code).toBe('IDEMPOTENCY_IN_PROGRESS');
      await waitFor(async () => emu.app.emulator.sessions.size > before || null, 5000, 20);
      emu.app.emulator.resetFaults();
      expect((await request(quick.url).post('/session').set('idempotency-key', 'k-timeout-0123456789abcdef').send({}).expect(409)).body.code).toBe('IDEMPOTENCY_IN_PROGRESS');
      expect(emu.app.emulator.sessions.size).toBe(before + 1);
      // A 5xx is an unknown outcome (a gateway's 502 or 504 may follow the session's creation): the key stays claimed.
      emu.app.emulator.setFaults({ errorRate: 1 });
      await request(quick.url).post('/session').set('idempotency-key', 'k-5xx-0123456789abcdef').send({}).expect(502);
      emu.app.emulator.resetFaults();
      expect((await request(quick.url).post('/session').set('idempotency-key', 'k-5xx-0123456789abcdef').send({}).expect(409)).body.code).toBe('IDEMPOTENCY_IN_PROGRESS');
      // Incode refused (403, a wrong API key): nothing was created, so the retry goes to Incode again at once.
      expect((await request(wrongKey.url).post('/session').set('idempotency-key', 'k-refused-0123456789abcdef').send({}).expect(502)).body.code).toBe('INCODE_FORBIDDEN');
      expect((await request(wrongKey.url).post('/session').set('idempotency-key', 'k-refused-0123456789abcdef').send({}).expect(502)).body.code).toBe('INCODE_FORBIDDEN');
    } finally {
      await quick.close();
      await wrongKey.close();
    }
  }, 20_000);

  it('GET /session/status needs a known session token and shows no PII', async () => {
    // Each 401 carries its challenge (RFC 9110): the header the token goes in.
    for (const res of [await request(broker.url).get('/session/status').expect(401), await request(broker.url).get('/session/status').set('x-incode-hardware-id', 'nope').expect(401)])
      expect(res.headers['www-authenticate']).toBe('ApiKey header="x-incode-hardware-id"');
    const s = (await request(broker.url).post('/session').send({ externalCustomerId: 'private-id-55' }).expect(200)).body;
    const st = await request(broker.url).get('/session/status').set('x-incode-hardware-id', s.token).expect(200);
    expect(st.body).toEqual({ interviewId: s.interviewId, onboardingStatus: 'UNKNOWN', resultsStatus: 'pending', decision: null });
    // The answer depends on a header: never kept by a cache keyed on the URL.
    expect(st.headers['cache-control']).toBe('no-store');
  });

  it('does not send the start of a caller that left while it waited for a connection to Incode (nothing billed for no one)', async () => {
    const slow = await startEmulator({ faults: { startLatencyMs: 1500 } });
    const b = await startBroker(brokerEnv(slow.url, { INCODE_MAX_CONCURRENCY: '1' }));
    const starts = recordRequests(slow.app.server);
    try {
      // supertest sends when asked for the result.
      const first = request(b.url).post('/session').then((r) => r);
      await waitFor(() => starts.urls.some((u) => u.startsWith('/omni/start')), 5000, 10);
      // Queued behind the first start (one connection): its client gives up before the connection frees.
      const leaving = fetch(`${b.url}/session`, { method: 'POST', signal: AbortSignal.timeout(300) }).catch((e: unknown) => e);
      expect(await leaving).toMatchObject({ name: 'TimeoutError' });
      expect((await first).status).toBe(200);
      // The next caller is served: the connection was not wasted on the one that left.
      await request(b.url).post('/session').expect(200);
      expect(starts.urls.filter((u) => u.startsWith('/omni/start'))).toHaveLength(2);
      expect(await metricValue(b.url, 'incode_call_duration_seconds_count{operation="start",outcome="aborted"}')).toBe(1);
    } finally {
      starts.stop();
      await b.close();
      await slow.close();
    }
  }, 20_000);

  it('GET /session/onboarding-url gives the hosted-flow link of the caller\'s own session', async () => {
    await request(broker.url).get('/session/onboarding-url').expect(401);
    const s = (await request(broker.url).post('/session').expect(200)).body;
    const res = await request(broker.url).get('/session/onboarding-url').set('x-incode-hardware-id', s.token).expect(200);
    expect(res.body.url).toMatch(/^https?:\/\//);
    expect(res.body.url).toContain(s.interviewId);
    // Without INCODE_CLIENT_ID the route says so instead of calling Incode.
    const noClient = await startBroker(brokerEnv(emu.url, { INCODE_CLIENT_ID: '' }));
    try {
      // An unauthenticated caller learns nothing about the configuration.
      expect((await request(noClient.url).get('/session/onboarding-url').expect(401)).body.code).toBe('UNAUTHORIZED');
      const t = (await request(noClient.url).post('/session').expect(200)).body.token;
      const r = await request(noClient.url).get('/session/onboarding-url').set('x-incode-hardware-id', t).expect(404);
      expect(r.body.code).toBe('ONBOARDING_URL_NOT_CONFIGURED');
    } finally {
      await noClient.close();
    }
  });

  it('maps Incode failures to 502 and timeouts to 504, with no upstream details', async () => {
    emu.app.emulator.setFaults({ errorRate: 1 });
    const bad = await request(broker.url).post('/session').expect(502);
    expect(bad.body).toEqual({ code: 'INCODE_UNAVAILABLE', message: expect.any(String), requestId: expect.any(String) });
    emu.app.emulator.setFaults({ timeoutRate: 1 });
    const slow = await request(broker.url).post('/session').expect(504);
    expect(slow.body.code).toBe('INCODE_TIMEOUT');
    emu.app.emulator.resetFaults();
  }, 20_000);

  it('answers 503 with Incode\'s Retry-After when Incode keeps limiting the calls', async () => {
    const limited = createServer((req, res) => {
      req.resume();
      res.writeHead(429, { 'content-type': 'application/json', 'retry-after': '30' });
      res.end(JSON.stringify({ timestamp: 1, status: 429, error: 'Too Many Requests', path: req.url }));
    });
    await new Promise<void>((r) => limited.listen(0, '127.0.0.1', r));
    const b = await startBroker(brokerEnv(`http://127.0.0.1:${(limited.address() as AddressInfo).port}`, {}), { runWorker: false });
    try {
      const res = await request(b.url).post('/session').send({}).expect(503);
      expect(res.headers['retry-after']).toBe('30');
      expect(res.body).toEqual({ code: 'INCODE_RATE_LIMITED', message: expect.any(String), requestId: expect.any(String) });
    } finally {
      await b.close();
      limited.closeAllConnections();
      await new Promise((r) => limited.close(r));
    }
  });

  it('answers 502 when Incode refuses the API key, and is not ready while it does', async () => {
    const wrong = await startBroker(brokerEnv(emu.url, { INCODE_API_KEY: 'not-the-key' }));
    try {
      const res = await request(wrong.url).post('/session').expect(502);
      expect(res.body.code).toBe('INCODE_FORBIDDEN');
      expect(JSON.stringify(res.body)).not.toContain('not-the-key');
      const ready = await request(wrong.url).get('/readyz').expect(503);
      expect(ready.body.checks.incode).toEqual({ ok: false, detail: expect.stringMatching(/INCODE_API_KEY refused \(HTTP 403\)/) });
      expect(JSON.stringify(ready.body)).not.toContain('not-the-key');
    } finally {
      await wrong.close();
    }
    // READINESS_REQUIRES_INCODE=false rides out an unreachable Incode, not a key it refuses.
    const lenient = await startBroker(brokerEnv(emu.url, { INCODE_API_KEY: 'not-the-key', READINESS_REQUIRES_INCODE: 'false' }));
    try {
      const notReady = await request(lenient.url).get('/readyz').expect(503);
      expect(notReady.body).toMatchObject({ status: 'not ready', checks: { incode: { ok: false } } });
      expect(notReady.headers['retry-after']).toBe('5');
    } finally {
      await lenient.close();
    }
  });

  it('is not ready while INCODE_API_URL is not the API\'s base (its status route answers 404); degraded with READINESS_REQUIRES_INCODE=false', async () => {
    const wrong = await startBroker(brokerEnv(`${emu.url}/api/v2`));
    try {
      const ready = await request(wrong.url).get('/readyz').expect(503);
      expect(ready.body).toMatchObject({ status: 'not ready', checks: { incode: { ok: false, detail: expect.stringMatching(/HTTP 404: is INCODE_API_URL the API's base URL/) } } });
    } finally {
      await wrong.close();
    }
    const lenient = await startBroker(brokerEnv(`${emu.url}/api/v2`, { READINESS_REQUIRES_INCODE: 'false' }));
    try {
      expect((await request(lenient.url).get('/readyz').expect(200)).body).toMatchObject({ status: 'degraded', checks: { incode: { ok: false } } });
    } finally {
      await lenient.close();
    }
  });

  it('serves health, readiness, the OpenAPI document and a JSON 404', async () => {
    expect((await request(broker.url).get('/healthz').expect(200)).body).toEqual({ status: 'ok' });
    const ready = await request(broker.url).get('/readyz').expect(200);
    expect(ready.body).toMatchObject({ status: 'ready', sandbox: false, checks: { database: { ok: true }, incode: { ok: true } } });
    const doc = await request(broker.url).get('/docs/json').expect(200);
    expect(Object.keys(doc.body.paths)).toEqual(expect.arrayContaining(['/session', '/session/resume', '/webhooks/incode', '/sessions/{interviewId}', '/onboardings']));
    const nf = await request(broker.url).get('/nope').expect(404);
    expect(nf.body.code).toBe('NOT_FOUND');
  });

  it('a burst of readiness probes makes one call to Incode', async () => {
    const fresh = await startBroker(brokerEnv(emu.url));
    const incode = recordRequests(emu.app.server);
    try {
      const answers = await Promise.all(Array.from({ length: 20 }, () => request(fresh.url).get('/readyz')));
      expect(answers.map((a) => a.status)).toEqual(Array(20).fill(200));
      // Readiness asks without an id; the shared broker's own polls (with ?id=) are not counted.
      expect(incode.urls.filter((u) => u === '/omni/get/onboarding/status')).toHaveLength(1);
    } finally {
      incode.stop();
      await fresh.close();
    }
  });

  it('once a first check is in, a probe never waits on a slow Incode: it gets the last answer while the next is fetched', async () => {
    let release = () => {};
    const held = new Promise<void>((r) => (release = r));
    let hits = 0;
    const upstream = createServer((_req, res) => {
      // The first check is answered (401: the key is good, no token); the next is held as a stalled Incode would.
      void (++hits === 1 ? Promise.resolve() : held).then(() => res.writeHead(401, { 'content-type': 'application/json' }).end('{}'));
    });
    await new Promise<void>((r) => upstream.listen(0, '127.0.0.1', r));
    let b: Awaited<ReturnType<typeof startBroker>> | undefined;
    try {
      b = await startBroker(brokerEnv(`http://127.0.0.1:${(upstream.address() as AddressInfo).port}`));
      expect((await request(b.url).get('/readyz').expect(200)).body.status).toBe('ready');
      // Past the 5 s cache: the next probe starts a check Incode does not answer, and is answered from the last one.
      await new Promise((r) => setTimeout(r, 5100));
      expect((await request(b.url).get('/readyz').expect(200)).body.status).toBe('ready');
      await waitFor(() => hits === 2, 5000, 10);
      // Still held: later probes neither wait for it nor start another.
      expect((await request(b.url).get('/readyz').expect(200)).body.status).toBe('ready');
      expect(hits).toBe(2);
    } finally {
      release();
      await b?.close();
      upstream.closeAllConnections();
      await new Promise((r) => upstream.close(r));
    }
  }, 20_000);

  it('readiness turns false when Incode is unreachable', async () => {
    const gone = await startBroker(brokerEnv('http://127.0.0.1:9', {}));
    try {
      const res = await request(gone.url).get('/readyz').expect(503);
      expect(res.body.checks.incode.ok).toBe(false);
    } finally {
      await gone.close();
    }
  });

  it('with READINESS_REQUIRES_INCODE=false, an unreachable Incode leaves readiness at 200, "degraded"; a database outage still fails it', async () => {
    const real = await memoryStore();
    let databaseDown = false;
    const store = storeWith(real, (m) => (m === 'ping' && databaseDown ? async () => Promise.reject(new Error('connection refused')) : null));
    const gone = await startBroker(brokerEnv('http://127.0.0.1:9', { READINESS_REQUIRES_INCODE: 'false' }), { store });
    try {
      const res = await request(gone.url).get('/readyz').expect(200);
      expect(res.body).toMatchObject({ status: 'degraded', checks: { database: { ok: true }, incode: { ok: false } } });
      databaseDown = true;
      const notReady = await request(gone.url).get('/readyz').expect(503);
      expect(notReady.body).toMatchObject({ status: 'not ready', checks: { database: { ok: false } } });
      expect(notReady.headers['retry-after']).toBe('5');
    } finally {
      await gone.close();
      await real.close();
    }
  });

  it('with INCODE_ALLOWED_CONFIGURATION_IDS and REDIRECTION_URL_ORIGINS, a body may name only those flows and return origins', async () => {
    const b = await startBroker(
      brokerEnv(emu.url, { INCODE_CONFIGURATION_ID: 'flow-default', INCODE_ALLOWED_CONFIGURATION_IDS: 'flow-kyc-full, flow-kyc-bra', REDIRECTION_URL_ORIGINS: 'https://app.example.com' }),
    );
    try {
      const before = emu.app.emulator.sessions.size;
      const refused = await request(b.url).post('/session').send({ configurationId: 'flow-light-test' }).expect(400);
      expect(refused.body.code).toBe('CONFIGURATION_NOT_ALLOWED');
      expect(emu.app.emulator.sessions.size).toBe(before);
      for (const configurationId of ['flow-kyc-bra', 'flow-default', undefined]) {
        const s = (await request(b.url).post('/session').send({ configurationId }).expect(200)).body;
        expect(emu.app.emulator.sessions.get(s.interviewId)!.configurationId).toBe(configurationId ?? 'flow-default');
        // The customer's backend sees which flow produced the verdict it is about to trust.
        const view = (await request(b.url).get(`/sessions/${s.interviewId}`).set('authorization', `Bearer ${ADMIN_KEY}`).expect(200)).body;
        expect(view.configurationId).toBe(configurationId ?? 'flow-default');
      }
      const listed = (await request(b.url).get('/sessions').set('authorization', `Bearer ${ADMIN_KEY}`).expect(200)).body.items as { configurationId: string | null }[];
      expect(listed.map((x) => x.configurationId)).toEqual(expect.arrayContaining(['flow-kyc-bra', 'flow-default']));
      for (const redirectionUrl of ['https://evil.example.com/done', 'https://app.example.com.evil.com/', 'http://app.example.com/done'])
        expect((await request(b.url).post('/session').send({ redirectionUrl }).expect(400)).body.code).toBe('REDIRECTION_URL_NOT_ALLOWED');
      const ok = (await request(b.url).post('/session').send({ redirectionUrl: 'https://app.example.com/kyc/done?x=1' }).expect(200)).body;
      expect(emu.app.emulator.sessions.get(ok.interviewId)!.redirectionUrl).toBe('https://app.example.com/kyc/done?x=1');
      expect(emu.app.emulator.sessions.size).toBe(before + 4);
    } finally {
      await b.close();
    }
  });

  it('a damaged stored row is a 500 logged as a fault (where, never what it read), never a 400 that blames the client', async () => {
    const s = (await request(broker.url).post('/session').send({}).expect(200)).body;
    await request(broker.url).delete(`/sessions/${s.interviewId}`).set('authorization', `Bearer ${ADMIN_KEY}`).expect(200);
    // The erasure's audit entry, which the erased session's view reads, no longer parses (JSON.parse throws a SyntaxError).
    expect((broker.app.store as SqliteStore).db.prepare('UPDATE audit SET detail = ? WHERE subject = ?').run('{"by": MARIA GONZALEZ', s.interviewId).changes).toBeGreaterThan(0);
    const res = await request(broker.url).get(`/sessions/${s.interviewId}`).set('authorization', `Bearer ${ADMIN_KEY}`).expect(500);
    expect(res.body).toEqual({ code: 'INTERNAL_ERROR', message: 'Internal error', requestId: expect.any(String) });
    // This request's own line, not another test's on the shared broker.
    const failedLine = broker.logs.lines.find((l) => l.includes(res.body.requestId) && l.includes('"request failed"'))!;
    expect(JSON.parse(failedLine)).toMatchObject({ level: 50, err: { type: 'SyntaxError', at: expect.arrayContaining([expect.stringMatching(/^at /)]) } });
    // Node's JSON.parse quotes the text it failed on: the line names where it was thrown, not the data.
    expect(failedLine).not.toContain('MARIA');
  });

  it('by default a body may name only the default flow and no redirectionUrl; "*" opens either', async () => {
    const closed = await startBroker(brokerEnv(emu.url, { INCODE_CONFIGURATION_ID: 'flow-default' }));
    const open = await startBroker(brokerEnv(emu.url, { INCODE_ALLOWED_CONFIGURATION_IDS: '*', REDIRECTION_URL_ORIGINS: '*' }));
    try {
      const before = emu.app.emulator.sessions.size;
      expect((await request(closed.url).post('/session').send({ configurationId: 'flow-light-test' }).expect(400)).body.code).toBe('CONFIGURATION_NOT_ALLOWED');
      const refused = (await request(closed.url).post('/session').send({ redirectionUrl: 'https://app.example.com/done' }).expect(400)).body;
      expect(refused).toMatchObject({ code: 'REDIRECTION_URL_NOT_ALLOWED', message: expect.stringContaining('REDIRECTION_URL_ORIGINS') });
      expect(emu.app.emulator.sessions.size).toBe(before);
      const named = (await request(closed.url).post('/session').send({ configurationId: 'flow-default' }).expect(200)).body;
      expect(emu.app.emulator.sessions.get(named.interviewId)!.configurationId).toBe('flow-default');
      const any = (await request(open.url).post('/session').send({ configurationId: 'flow-light-test', redirectionUrl: 'https://elsewhere.example.net/x' }).expect(200)).body;
      expect(emu.app.emulator.sessions.get(any.interviewId)).toMatchObject({ configurationId: 'flow-light-test', redirectionUrl: 'https://elsewhere.example.net/x' });
    } finally {
      await closed.close();
      await open.close();
    }
  });

  it('warns at start-up about a real API key outside production and an open, unbudgeted POST /session', async () => {
    const warnings = async (extra: Record<string, string>) => {
      const b = await startBroker(brokerEnv('http://127.0.0.1:9', extra));
      await b.close();
      return b.logs.lines.map((l) => JSON.parse(l) as { level: number; msg: string }).filter((l) => l.level === 40).map((l) => l.msg);
    };
    const open = await warnings({});
    expect(open).toEqual(expect.arrayContaining([expect.stringMatching(/without NODE_ENV=production/), expect.stringMatching(/open to anyone/)]));
    expect((await warnings({ RATE_LIMIT_GLOBAL: '1000' })).filter((m) => /open to anyone/.test(m))).toEqual([]);
    // App keys ship inside apps: without a budget, that is said too (not "open to anyone").
    const appKeys = await warnings({ CALLER_AUTH: 'app-keys', APP_API_KEYS: 'app-key-0123456789abcdefghij' });
    expect(appKeys.filter((m) => /open to anyone/.test(m))).toEqual([]);
    expect(appKeys).toEqual(expect.arrayContaining([expect.stringMatching(/app keys, which ship inside apps.*no RATE_LIMIT_GLOBAL/)]));
    expect((await warnings({ CALLER_AUTH: 'app-keys', APP_API_KEYS: 'app-key-0123456789abcdefghij', RATE_LIMIT_GLOBAL: '1000' })).filter((m) => /RATE_LIMIT_GLOBAL/.test(m))).toEqual([]);
    // A job lease shorter than one Incode call.
    expect(await warnings({ JOB_LEASE_MS: '2000' })).toEqual(expect.arrayContaining([expect.stringMatching(/JOB_LEASE_MS leaves/)]));
    // One call may take its timeout for its headers and again for its body: 16 s of attempt is short of 30 s, 32 s is not.
    expect(await warnings({ JOB_LEASE_MS: '20000', INCODE_TIMEOUT_MS: '15000' })).toEqual(expect.arrayContaining([expect.stringMatching(/JOB_LEASE_MS leaves/)]));
    expect((await warnings({ JOB_LEASE_MS: '40000', INCODE_TIMEOUT_MS: '15000' })).filter((m) => /JOB_LEASE_MS/.test(m))).toEqual([]);
    expect((await warnings({ RATE_LIMIT_GLOBAL: '1000' })).filter((m) => /JOB_LEASE_MS/.test(m))).toEqual([]);
    // Tokens of an identity provider anyone may sign up with are no budget either.
    const jwt = { CALLER_AUTH: 'jwt', JWT_JWKS_URL: 'http://127.0.0.1:9/jwks.json', JWT_ISSUER: 'https://idp.example.com/', JWT_AUDIENCE: 'broker' };
    expect(await warnings(jwt)).toEqual(expect.arrayContaining([expect.stringMatching(/any token of the identity provider.*no RATE_LIMIT_GLOBAL/)]));
    expect((await warnings({ ...jwt, RATE_LIMIT_GLOBAL: '1000' })).filter((m) => /RATE_LIMIT_GLOBAL/.test(m))).toEqual([]);
  });

  it("warns in production when INCODE_API_URL is left at Incode's demo environment", async () => {
    const dir = tempDir('broker-prod-');
    const prod = async (extra: Record<string, string>) => {
      const env = brokerEnv('https://demo-api.incodesmile.com', { NODE_ENV: 'production', DATABASE_URL: `sqlite:${join(dir, `${extra.INCODE_API_URL ? 'saas' : 'demo'}.db`)}`, METRICS_TOKENS: 'metrics-token-Zq8Wm2Xr7Tp4Vn6Ys1Lb9', DATA_ENCRYPTION_KEY: `k1:${randomBytes(32).toString('base64')}`, ...extra });
      const b = await startBroker(env);
      await b.close();
      return b.logs.lines.map((l) => JSON.parse(l) as { level: number; msg: string }).filter((l) => l.level === 40).map((l) => l.msg);
    };
    expect(await prod({})).toEqual(expect.arrayContaining([expect.stringMatching(/demo environment with NODE_ENV=production/)]));
    expect((await prod({ INCODE_API_URL: 'https://saas-api.incodesmile.com' })).filter((m) => /demo environment/.test(m))).toEqual([]);
  });

  it('warns at start-up when no INCODE_CONFIGURATION_ID names the flow, which Incode documents as required on start', async () => {
    const warnings = async (extra: Record<string, string>) => {
      const b = await startBroker(brokerEnv(emu.url, extra));
      await b.close();
      return b.logs.lines.map((l) => JSON.parse(l) as { level: number; msg: string }).filter((l) => l.level === 40 && /INCODE_CONFIGURATION_ID/.test(l.msg));
    };
    expect(await warnings({ INCODE_CONFIGURATION_ID: '' })).toHaveLength(1);
    expect(await warnings({ INCODE_CONFIGURATION_ID: 'flow-0123456789abcdef01234567' })).toHaveLength(0);
  });
});

describe('sandbox mode', () => {
  it('mounts the emulator, says so in the first log line, and runs a whole onboarding with no API key', async () => {
    const sb = await startSandbox();
    try {
      const first = JSON.parse(sb.logs.lines[0]);
      expect(first.msg).toMatch(/SANDBOX MODE.*throwaway encryption key/);
      const s = (await request(sb.url).post('/session').expect(200)).body;
      expect(s.apiUrl).toBe(`${sb.url}/sandbox/incode/0/`);
      await captureAll(s.apiUrl, s.token);
      const done = await waitForResults(sb.url, s.interviewId);
      expect(done.decision).toBe('approve');
      expect((await request(sb.url).get('/readyz').expect(200)).body.sandbox).toBe(true);
      // The emulator's admin routes (its sessions' customer ids, minted tokens) take a key no one outside knows.
      for (const key of ['sandbox-api-key', 'sandbox', '']) {
        await request(sb.url).get('/sandbox/incode/__emulator/webhooks').set('x-api-key', key).expect(403);
        await request(sb.url).get(`/sandbox/incode/__emulator/sessions/${s.interviewId}`).set('x-api-key', key).expect(403);
      }
      await request(sb.url).get(`/sandbox/incode/__emulator/sessions/${s.interviewId}`).set('x-api-key', sb.config.incode.apiKey).expect(200);
    } finally {
      await sb.close();
    }
  });

  it("answers the SDK with CORS and a true Processing-Time even when the service's own checks refuse the call before the emulator's", async () => {
    const sb = await startSandbox();
    try {
      await new Promise((r) => setTimeout(r, 1500));
      const s = (await request(sb.url).post('/session').expect(200)).body;
      // A duplicated token header: refused by the service itself, before the emulator's hooks run.
      const res = await undiciRequest(`${sb.url}/sandbox/incode/0/omni/get/onboarding/status?id=${s.interviewId}`, {
        headers: ['origin', 'http://a.example', 'api-version', '1.0', 'x-incode-hardware-id', s.token, 'X-Incode-Hardware-Id', s.token],
      });
      await res.body.text();
      expect(res.statusCode).toBe(400);
      expect(res.headers['access-control-allow-origin']).toBe('*');
      expect(res.headers['access-control-expose-headers']).toMatch(/Processing-Time/);
      // Not the time since the process started (1.5 s and more here).
      expect(Number(res.headers['processing-time'])).toBeLessThan(1000);
    } finally {
      await sb.close();
    }
  });

  it('warns that a persistent database outlives the emulator\'s sessions, and says nothing in memory', async () => {
    const warned = async (env: Record<string, string>) => {
      const sb = await startSandbox(env);
      await sb.close();
      return sb.logs.lines.some((l) => /sandbox mode with a persistent DATABASE_URL/.test(JSON.parse(l).msg ?? ''));
    };
    const file = `sqlite:${join(tempDir('sandbox-db-'), 'broker.db')}`;
    expect(await warned({ DATABASE_URL: file, DATA_ENCRYPTION_KEY: 'k1:' + Buffer.alloc(32, 3).toString('base64') })).toBe(true);
    expect(await warned({})).toBe(false);
  });

  it('without ADMIN_API_KEYS says how to open the results API, in the log and in the 401', async () => {
    const sb = await startSandbox({ ADMIN_API_KEYS: '' });
    try {
      expect(sb.logs.lines.some((l) => /results API .* ADMIN_API_KEYS/.test(JSON.parse(l).msg ?? ''))).toBe(true);
      for (const res of [await request(sb.url).get('/sessions').set('authorization', 'Bearer anything'), await request(sb.url).post('/onboardings').send({})]) {
        expect(res.status).toBe(401);
        expect(res.body).toMatchObject({ code: 'UNAUTHORIZED', message: expect.stringMatching(/ADMIN_API_KEYS/) });
      }
    } finally {
      await sb.close();
    }
  });
});

describe('resume token expiry', () => {
  it('is never later than the retention purge erases the session (SQLite)', async () => {
    let db: SqliteStore['db'] | undefined;
    await resumeExpiryWithinRetention(
      async (env, deps) => {
        const b = await startBroker(env, deps);
        db = (b.app.store as SqliteStore).db;
        return b;
      },
      async (_url, interviewId, createdAt) => void db!.prepare('UPDATE sessions SET created_at = ? WHERE interview_id = ?').run(createdAt, interviewId),
    );
  });
});

describeWith('postgres', 'POST /session/resume on PostgreSQL', () => {
  it('gives a resume token no later expiry than the retention purge erases the session', async () => {
    const pg = throwawayPgStore('resumeexp');
    await pg.store.migrate();
    try {
      await resumeExpiryWithinRetention(
        (env, deps) => startBroker(env, { ...deps, store: pg.store }),
        async (_url, interviewId, createdAt) => {
          const admin = new Pool({ connectionString: services.postgres, max: 1 });
          try {
            await admin.query(`UPDATE "${pg.schema}".sessions SET created_at = $1 WHERE interview_id = $2`, [createdAt, interviewId]);
          } finally {
            await admin.end();
          }
        },
      );
    } finally {
      await pg.drop();
    }
  });

  it('refuses a resume token naming an impossible interviewId with 401, never a 500 from the database', async () => {
    const pg = throwawayPgStore('resume');
    const { store } = pg;
    await store.migrate();
    const emu = await startEmulator();
    const b = await startBroker(brokerEnv(emu.url), { store });
    try {
      // NUL is what PostgreSQL text refuses outright; the rest would be looked up for nothing.
      for (const id of ['a\u0000b', '../etc', 'x'.repeat(200)]) {
        const forged = `${Buffer.from(id, 'utf8').toString('base64url')}.${'A'.repeat(43)}`;
        expect((await request(b.url).post('/session/resume').send({ resumeToken: forged }).expect(401)).body.code).toBe('INVALID_RESUME_TOKEN');
      }
      // A real one still works on this engine.
      const s = (await request(b.url).post('/session').expect(200)).body;
      await request(b.url).post('/session/resume').send({ resumeToken: s.resumeToken }).expect(200);
    } finally {
      await b.close();
      await emu.close();
      await pg.drop();
    }
  });
});
