// Caller authentication of POST /session: static app keys (X-App-Key, rotation) and bearer JWTs verified
// against a real JWKS served on loopback (issuer, audience, expiry, signature, alg none, garbage).
import { execFileSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { createServer as createHttpsServer } from 'node:https';
import type { AddressInfo } from 'node:net';
import { join } from 'node:path';
import Fastify, { type FastifyInstance } from 'fastify';
import { SignJWT, UnsecuredJWT, exportJWK, generateKeyPair, type KeyLike } from 'jose';
import request from 'supertest';
import type { EmulatorApp } from '../../src/emulator/app';
import { brokerEnv, startBroker, startEmulator, type Running } from '../helpers/harness';
import type { SqliteStore } from '../../src/store/sqlite-store';
import { keyedDigest, sha256Hex } from '../../src/security';
import { tempDir } from '../helpers/temp';

type Broker = Awaited<ReturnType<typeof startBroker>>;

let emu: Running<EmulatorApp>;
beforeAll(async () => {
  emu = await startEmulator();
});
afterAll(async () => emu.close());

describe('CALLER_AUTH=app-keys', () => {
  let broker: Broker;
  const KEY_OLD = 'app-key-old-0123456789abcdef';
  const KEY_NEW = 'app-key-new-0123456789abcdef';
  beforeAll(async () => {
    broker = await startBroker(brokerEnv(emu.url, { CALLER_AUTH: 'app-keys', APP_API_KEYS: `${KEY_NEW},${KEY_OLD}`, LOG_LEVEL: 'trace' }));
  });
  afterAll(async () => broker.close());

  it('refuses a missing or wrong key with 401 UNAUTHORIZED, before any Incode call', async () => {
    const before = emu.app.emulator.sessions.size;
    for (const key of [undefined, '', 'wrong', KEY_NEW + 'x', KEY_NEW.slice(0, -1), KEY_NEW.toUpperCase(), ` ${KEY_NEW}x`]) {
      const r = request(broker.url).post('/session');
      if (key !== undefined) r.set('x-app-key', key);
      const res = await r.send({});
      expect(res.status).toBe(401);
      expect(res.body).toEqual({ code: 'UNAUTHORIZED', message: expect.any(String), requestId: expect.any(String) });
    }
    // The key in another header does not count.
    await request(broker.url).post('/session').set('authorization', `Bearer ${KEY_NEW}`).expect(401);
    expect(emu.app.emulator.sessions.size).toBe(before);
  });

  it('accepts every configured key (rotation) on /session and /session/resume', async () => {
    const a = await request(broker.url).post('/session').set('x-app-key', KEY_NEW).send({}).expect(200);
    await request(broker.url).post('/session').set('x-app-key', KEY_OLD).send({}).expect(200);
    await request(broker.url).post('/session/resume').send({ resumeToken: a.body.resumeToken }).expect(401);
    const r = await request(broker.url).post('/session/resume').set('x-app-key', KEY_OLD).send({ resumeToken: a.body.resumeToken }).expect(200);
    expect(r.body.interviewId).toBe(a.body.interviewId);
  });

  it('scopes idempotency keys per caller: two apps with the same Idempotency-Key get separate sessions', async () => {
    const a = await request(broker.url).post('/session').set('x-app-key', KEY_NEW).set('idempotency-key', 'shared-key-1-0123456789abcdef').send({}).expect(200);
    const b = await request(broker.url).post('/session').set('x-app-key', KEY_OLD).set('idempotency-key', 'shared-key-1-0123456789abcdef').send({}).expect(200);
    expect(b.body.interviewId).not.toBe(a.body.interviewId);
    const a2 = await request(broker.url).post('/session').set('x-app-key', KEY_NEW).set('idempotency-key', 'shared-key-1-0123456789abcdef').send({}).expect(200);
    expect(a2.body.interviewId).toBe(a.body.interviewId);
  });

  it('never logs the app key, even at trace level', async () => {
    // Its own requests, accepted and refused, so the check reads a log that has them whatever ran before.
    const before = broker.logs.lines.length;
    await request(broker.url).post('/session').set('x-app-key', KEY_NEW).send({}).expect(200);
    await request(broker.url).post('/session').set('x-app-key', KEY_OLD).send({}).expect(200);
    const refused = await request(broker.url).post('/session').set('x-app-key', `${KEY_NEW}x`).send({}).expect(401);
    expect(refused.headers['www-authenticate']).toBe('ApiKey header="x-app-key"');
    expect(broker.logs.lines.length).toBeGreaterThan(before + 3);
    expect(broker.logs.text).not.toContain(KEY_NEW);
    expect(broker.logs.text).not.toContain(KEY_OLD);
  });
});

describe('CALLER_AUTH=jwt against a JWKS', () => {
  const ISSUER = 'https://idp.example.com/';
  const AUDIENCE = 'incode-broker';
  let idp: FastifyInstance;
  let broker: Broker;
  let signingKey: KeyLike;
  let otherKey: KeyLike;
  let jwksHits = 0;

  const sign = (claims: Record<string, unknown> = {}, opts: { key?: KeyLike; kid?: string; iss?: string; aud?: string; exp?: number | string | null; alg?: string; sub?: string | null; iat?: number } = {}) => {
    const jwt = new SignJWT({ scope: 'session:create', ...claims })
      .setProtectedHeader({ alg: opts.alg ?? 'ES256', kid: opts.kid ?? 'k1' })
      .setIssuedAt(opts.iat);
    if (opts.sub !== null) jwt.setSubject(opts.sub ?? 'user-123');
    jwt.setIssuer(opts.iss ?? ISSUER).setAudience(opts.aud ?? AUDIENCE);
    if (opts.exp !== null) jwt.setExpirationTime(opts.exp ?? '5m');
    return jwt.sign(opts.key ?? signingKey);
  };

  let jwksUrl = '';
  beforeAll(async () => {
    otherKey = (await generateKeyPair('ES256')).privateKey;
    // The IdP's JWKS holds the public half of signingKey only.
    const kp = await generateKeyPair('ES256', { extractable: true });
    signingKey = kp.privateKey;
    const jwk = { ...(await exportJWK(kp.publicKey)), kid: 'k1', alg: 'ES256', use: 'sig' };
    idp = Fastify();
    idp.get('/.well-known/jwks.json', async () => {
      jwksHits++;
      return { keys: [jwk] };
    });
    await idp.listen({ port: 0, host: '127.0.0.1' });
    jwksUrl = `http://127.0.0.1:${(idp.server.address() as AddressInfo).port}/.well-known/jwks.json`;
    broker = await startBroker(brokerEnv(emu.url, { CALLER_AUTH: 'jwt', JWT_JWKS_URL: jwksUrl, JWT_ISSUER: ISSUER, JWT_AUDIENCE: AUDIENCE, LOG_LEVEL: 'trace' }));
  });
  afterAll(async () => {
    await broker?.close();
    await idp?.close();
  });

  const call = (token: string | null, scheme = 'Bearer') => {
    const r = request(broker.url).post('/session');
    if (token !== null) r.set('authorization', `${scheme} ${token}`);
    return r.send({});
  };

  it('limits each token subject (one end user) whatever address or customer id it sends (RATE_LIMIT_PER_SUBJECT)', async () => {
    const limited = await startBroker(brokerEnv(emu.url, { CALLER_AUTH: 'jwt', JWT_JWKS_URL: jwksUrl, JWT_ISSUER: ISSUER, JWT_AUDIENCE: AUDIENCE, TRUST_PROXY_HOPS: '1', RATE_LIMIT_PER_IP: '100', RATE_LIMIT_PER_CUSTOMER: '100', RATE_LIMIT_PER_SUBJECT: '2' }));
    try {
      const as = async (sub: string, i: number) =>
        request(limited.url).post('/session').set('authorization', `Bearer ${await sign({ jti: `j${i}` }, { sub })}`).set('x-forwarded-for', `203.0.113.${i}`).send({ externalCustomerId: `customer-${i}` });
      expect((await as('mallory', 1)).status).toBe(200);
      expect((await as('mallory', 2)).status).toBe(200);
      const over = await as('mallory', 3);
      expect(over.status).toBe(429);
      expect(over.body).toMatchObject({ code: 'RATE_LIMITED', message: expect.stringMatching(/for this user/) });
      expect((await as('alice', 4)).status).toBe(200);
    } finally {
      await limited.close();
    }
  });

  it('counts a customer id across every user of the identity provider (RATE_LIMIT_PER_CUSTOMER), not per user', async () => {
    const limited = await startBroker(brokerEnv(emu.url, { CALLER_AUTH: 'jwt', JWT_JWKS_URL: jwksUrl, JWT_ISSUER: ISSUER, JWT_AUDIENCE: AUDIENCE, RATE_LIMIT_PER_IP: '100', RATE_LIMIT_PER_CUSTOMER: '2', RATE_LIMIT_PER_SUBJECT: '100' }));
    try {
      const as = async (sub: string) => request(limited.url).post('/session').set('authorization', `Bearer ${await sign({}, { sub })}`).send({ externalCustomerId: 'victim' });
      expect((await as('mallory-1')).status).toBe(200);
      expect((await as('mallory-2')).status).toBe(200);
      // A third account signed up at the identity provider gets no budget of its own for the same customer.
      const over = await as('mallory-3');
      expect(over.status).toBe(429);
      expect(over.body).toMatchObject({ code: 'RATE_LIMITED', message: expect.stringMatching(/for this customer/) });
    } finally {
      await limited.close();
    }
  });

  it('accepts a valid token signed by the IdP (200)', async () => {
    const res = await call(await sign());
    expect(res.status).toBe(200);
    expect(res.body.token).toMatch(/^eyJ/);
    expect(jwksHits).toBeGreaterThanOrEqual(1);
  });

  it('scopes Idempotency-Keys per subject, and stores only a keyed digest of the subject (an end user\'s identifier)', async () => {
    const sub = 'alice.smith@example.com';
    const post = async (t: string) => (await request(broker.url).post('/session').set('authorization', `Bearer ${t}`).set('idempotency-key', 'key-of-alice-0123456789abcdef').send({}).expect(200)).body;
    const first = await post(await sign({}, { sub }));
    expect((await post(await sign({ jti: 'again' }, { sub }))).interviewId).toBe(first.interviewId);
    expect((await post(await sign({}, { sub: 'bob@example.com' }))).interviewId).not.toBe(first.interviewId);
    const scopes = (broker.app.store as SqliteStore).db.prepare('SELECT scope FROM idempotency_keys').all() as { scope: string }[];
    expect(scopes.length).toBeGreaterThanOrEqual(2);
    for (const { scope } of scopes) {
      expect(scope).toMatch(/^session:sub:[0-9a-f]{32}$/);
      expect(scope).not.toMatch(/alice|bob|example\.com/);
      // Keyed: not the plain SHA-256 anyone could compute from a guessed subject.
      for (const subject of [sub, 'bob@example.com']) expect(scope).not.toContain(sha256Hex(subject).slice(0, 32));
    }
    // The digest under a key derived from the data key: whoever lacks that key cannot test a guessed subject against it.
    const subjectDigest = keyedDigest(broker.config.encryption.keys.map((k) => k.key), 'caller-subject');
    expect(scopes.map((s) => s.scope)).toEqual(expect.arrayContaining([sub, 'bob@example.com'].map((x) => `session:sub:${subjectDigest.digest(x).slice(0, 32)}`)));
  });

  it('scopes Idempotency-Keys of tokens without a subject per token, never in one shared scope', async () => {
    const [a, b] = [await sign({ jti: 'a' }, { sub: null }), await sign({ jti: 'b' }, { sub: null })];
    const post = (t: string) => request(broker.url).post('/session').set('authorization', `Bearer ${t}`).set('idempotency-key', 'same-key-no-sub-0123456789abcdef').send({});
    const first = (await post(a).expect(200)).body;
    expect((await post(a).expect(200)).body.interviewId).toBe(first.interviewId);
    expect((await post(b).expect(200)).body.interviewId).not.toBe(first.interviewId);
  });

  it('refuses a missing token with 401 and WWW-Authenticate', async () => {
    const res = await call(null);
    expect(res.status).toBe(401);
    expect(res.body.code).toBe('UNAUTHORIZED');
    expect(res.headers['www-authenticate']).toMatch(/^Bearer/);
  });

  it.each<[string, () => Promise<string>]>([
    ['wrong issuer', () => sign({}, { iss: 'https://evil.example.com/' })],
    ['wrong audience', () => sign({}, { aud: 'someone-else' })],
    ['expired (beyond the clock tolerance)', () => sign({}, { exp: Math.floor(Date.now() / 1000) - 120 })],
    ['without exp (it would never expire)', () => sign({}, { exp: null })],
    ['issued in the future (beyond the clock tolerance)', () => sign({}, { iat: Math.floor(Date.now() / 1000) + 3600, exp: Math.floor(Date.now() / 1000) + 7200 })],
    ['signed by another key with the same kid', () => sign({}, { key: otherKey })],
    ['signed by another key with an unknown kid', () => sign({}, { key: otherKey, kid: 'k2' })],
    ['alg none', async () => new UnsecuredJWT({ sub: 'user-123' }).setIssuer(ISSUER).setAudience(AUDIENCE).setIssuedAt().setExpirationTime('5m').encode()],
    ['alg none with a stolen header', async () => {
      const good = await sign();
      const [, payload] = good.split('.');
      return `${Buffer.from(JSON.stringify({ alg: 'none', kid: 'k1' })).toString('base64url')}.${payload}.`;
    }],
    ['tampered payload', async () => {
      const [h, , s] = (await sign()).split('.');
      const forged = Buffer.from(JSON.stringify({ sub: 'admin', iss: ISSUER, aud: AUDIENCE, exp: Math.floor(Date.now() / 1000) + 300 })).toString('base64url');
      return `${h}.${forged}.${s}`;
    }],
    ['HS256 signed with the public key as secret', async () => {
      const jwks = (await request(`http://127.0.0.1:${(idp.server.address() as AddressInfo).port}`).get('/.well-known/jwks.json')).body;
      const secret = new TextEncoder().encode(JSON.stringify(jwks.keys[0]));
      return new SignJWT({}).setProtectedHeader({ alg: 'HS256', kid: 'k1' }).setIssuer(ISSUER).setAudience(AUDIENCE).setSubject('x').setExpirationTime('5m').sign(secret);
    }],
    ['garbage', async () => 'not-a-jwt'],
    ['three garbage parts', async () => 'aaa.bbb.ccc'],
    ['huge token', async () => 'eyJ' + 'A'.repeat(8_000)],
  ])('refuses a token that is %s with 401 UNAUTHORIZED', async (_name, make) => {
    const before = emu.app.emulator.sessions.size;
    const res = await call(await make());
    expect(res.status).toBe(401);
    expect(res.body).toEqual({ code: 'UNAUTHORIZED', message: expect.any(String), requestId: expect.any(String) });
    expect(emu.app.emulator.sessions.size).toBe(before);
  });

  it('authenticates before the body is read: an unauthenticated caller gets 401, never a verdict on its body', async () => {
    for (const path of ['/session', '/session/resume']) {
      for (const token of [null, 'not-a-jwt']) {
        const bad = request(broker.url).post(path).set('content-type', 'application/json');
        const big = request(broker.url).post(path).set('content-type', 'application/json');
        if (token) [bad, big].forEach((r) => r.set('authorization', `Bearer ${token}`));
        expect((await bad.send('{"countryCode":1,"resumeToken":1}')).body).toMatchObject({ code: 'UNAUTHORIZED' });
        expect((await big.send(JSON.stringify({ pad: 'x'.repeat(64 * 1024) }))).body).toMatchObject({ code: 'UNAUTHORIZED' });
      }
    }
    // Authenticated, the body is judged as before.
    expect((await request(broker.url).post('/session').set('authorization', `Bearer ${await sign()}`).send({ countryCode: 1 })).body).toMatchObject({ code: 'VALIDATION_FAILED' });
  });

  describe('JWT_CUSTOMER_ID_CLAIM', () => {
    let bound: Broker;
    const CLAIM = 'https://bank.example/customer';
    beforeAll(async () => {
      bound = await startBroker(brokerEnv(emu.url, { CALLER_AUTH: 'jwt', JWT_JWKS_URL: jwksUrl, JWT_ISSUER: ISSUER, JWT_AUDIENCE: AUDIENCE, JWT_CUSTOMER_ID_CLAIM: CLAIM, RATE_LIMIT_PER_CUSTOMER: '2', RATE_LIMIT_PER_SUBJECT: '100', RATE_LIMIT_PER_IP: '100' }));
    });
    afterAll(async () => bound?.close());
    const as = async (customer: string | undefined, body: Record<string, unknown>, sub = 'user-1') =>
      request(bound.url)
        .post('/session')
        .set('authorization', `Bearer ${await sign(customer === undefined ? {} : { [CLAIM]: customer }, { sub })}`)
        .send(body);

    it("starts sessions under the token's customer id: filled in when the body has none, refused when it names another", async () => {
      const filled = await as('cust-alice', {});
      expect(filled.status).toBe(200);
      expect((await bound.app.store.getSession(filled.body.interviewId))?.externalCustomerId).toBe('cust-alice');
      expect(emu.app.emulator.sessions.get(filled.body.interviewId)?.externalCustomerId).toBe('cust-alice');
      expect((await as('cust-alice', { externalCustomerId: 'cust-alice' })).status).toBe(200);
      const before = emu.app.emulator.sessions.size;
      const other = await as('cust-alice', { externalCustomerId: 'cust-bob' });
      expect(other.status).toBe(403);
      expect(other.body).toEqual({ code: 'CUSTOMER_ID_MISMATCH', message: expect.stringContaining(CLAIM), requestId: expect.any(String) });
      // Spelled otherwise is another id: the token's spelling is the one sessions go under.
      expect((await as('cust-alice', { externalCustomerId: 'CUST-ALICE' })).status).toBe(403);
      for (const unusable of [undefined, '', 'x'.repeat(129), 'a\u0000b']) {
        const res = await as(unusable, {});
        expect(res.status).toBe(403);
        expect(res.body.code).toBe('CUSTOMER_ID_CLAIM_MISSING');
      }
      expect(emu.app.emulator.sessions.size).toBe(before);
    });

    it('reads the claim as the body is read: astral characters count once and pass, invisible marks do not', async () => {
      // As Ajv checks the body: the `u` flag (an emoji is one code point, not two surrogate halves) and a length in code points.
      for (const id of ['ana-\u{1f600}-\u{1d4b3}', '\u{1f600}'.repeat(128)]) {
        const res = await as(id, {});
        expect(res.status).toBe(200);
        expect((await bound.app.store.getSession(res.body.interviewId))?.externalCustomerId).toBe(id);
      }
      for (const unusable of ['ab\u200bcd', '\u{1f600}'.repeat(129)]) expect((await as(unusable, {})).body.code).toBe('CUSTOMER_ID_CLAIM_MISSING');
    });

    it("a session is resumed only by the user it was started for; another user's attempt leaves the owner's resume token usable", async () => {
      const started = await as('cust-carol', {}, 'carol');
      expect(started.status).toBe(200);
      const resume = async (customer: string | undefined, sub: string) =>
        request(bound.url)
          .post('/session/resume')
          .set('authorization', `Bearer ${await sign(customer === undefined ? {} : { [CLAIM]: customer }, { sub })}`)
          .send({ resumeToken: started.body.resumeToken });
      const stolen = await resume('cust-mallory', 'mallory');
      expect(stolen.status).toBe(403);
      expect(stolen.body).toEqual({ code: 'CUSTOMER_ID_MISMATCH', message: 'This session was started for another user', requestId: expect.any(String) });
      expect((await resume(undefined, 'mallory')).body.code).toBe('CUSTOMER_ID_CLAIM_MISSING');
      const back = await resume('cust-carol', 'carol');
      expect(back.status).toBe(200);
      expect(back.body.interviewId).toBe(started.body.interviewId);
    });

    it("counts each id as the identity provider spells it: users whose ids differ only in case have budgets of their own", async () => {
      expect((await as('cust-kim', {}, 'kim')).status).toBe(200);
      expect((await as('cust-kim', {}, 'kim')).status).toBe(200);
      expect((await as('CUST-KIM', {}, 'KIM')).status).toBe(200);
      expect((await as('Cust-Kim', {}, 'Kim')).status).toBe(200);
      expect((await as('cust-kim', {}, 'kim')).body).toMatchObject({ code: 'RATE_LIMITED' });
    });

    it("no user spends another customer's budget: a mismatch is refused before the per-customer limit counts it", async () => {
      for (let i = 0; i < 4; i++) expect((await as('cust-mallory', { externalCustomerId: 'cust-victim' }, 'mallory')).status).toBe(403);
      expect((await as('cust-victim', {}, 'victim')).status).toBe(200);
      expect((await as('cust-victim', { externalCustomerId: 'cust-victim' }, 'victim')).status).toBe(200);
      expect((await as('cust-victim', {}, 'victim')).body).toMatchObject({ code: 'RATE_LIMITED' });
    });
  });

  it('refuses a non-Bearer scheme and an app key in place of a JWT', async () => {
    expect((await call(await sign(), 'Basic')).status).toBe(401);
    const res = await request(broker.url).post('/session').set('x-app-key', 'anything').send({});
    expect(res.status).toBe(401);
  });

  it('answers 503 AUTH_UNAVAILABLE with Retry-After (not invalid_token) while the JWKS endpoint is gone, and 401 for a token it can judge', async () => {
    const emuBroker = await startBroker(brokerEnv(emu.url, { CALLER_AUTH: 'jwt', JWT_JWKS_URL: 'http://127.0.0.1:9/jwks.json', JWT_ISSUER: ISSUER, JWT_AUDIENCE: AUDIENCE }));
    try {
      const before = emu.app.emulator.sessions.size;
      const res = await request(emuBroker.url).post('/session').set('authorization', `Bearer ${await sign()}`).send({});
      expect(res.status).toBe(503);
      expect(res.body).toEqual({ code: 'AUTH_UNAVAILABLE', message: expect.any(String), requestId: expect.any(String) });
      expect(Number(res.headers['retry-after'])).toBeGreaterThanOrEqual(1);
      expect(res.headers['www-authenticate']).toBeUndefined();
      expect(emu.app.emulator.sessions.size).toBe(before);
      // Not a token at all: refused without the key set.
      expect((await request(emuBroker.url).post('/session').set('authorization', 'Bearer not-a-jwt').send({})).status).toBe(401);
    } finally {
      await emuBroker.close();
    }
    // An identity provider whose TLS fails (a certificate this service does not trust, as an expired one): the same.
    const dir = tempDir('idp-tls-');
    execFileSync('openssl', ['req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes', '-days', '1', '-subj', '/CN=127.0.0.1', '-keyout', join(dir, 'key.pem'), '-out', join(dir, 'cert.pem')], { stdio: 'ignore' });
    const tls = createHttpsServer({ key: readFileSync(join(dir, 'key.pem')), cert: readFileSync(join(dir, 'cert.pem')) }, (_req, res) => res.end('{"keys":[]}'));
    await new Promise<void>((r) => tls.listen(0, '127.0.0.1', r));
    const tlsBroker = await startBroker(brokerEnv(emu.url, { CALLER_AUTH: 'jwt', JWT_JWKS_URL: `https://127.0.0.1:${(tls.address() as AddressInfo).port}/jwks.json`, JWT_ISSUER: ISSUER, JWT_AUDIENCE: AUDIENCE }));
    try {
      const res = await request(tlsBroker.url).post('/session').set('authorization', `Bearer ${await sign()}`).send({});
      expect(res).toMatchObject({ status: 503, body: { code: 'AUTH_UNAVAILABLE' } });
    } finally {
      await tlsBroker.close();
      await new Promise<void>((r) => tls.close(() => r()));
    }
    // An identity provider that answers, but with an error instead of its key set: the same.
    const failing = Fastify();
    failing.get('/jwks.json', async (_req, reply) => reply.code(500).send({ error: 'down' }));
    await failing.listen({ port: 0, host: '127.0.0.1' });
    const failingBroker = await startBroker(brokerEnv(emu.url, { CALLER_AUTH: 'jwt', JWT_JWKS_URL: `http://127.0.0.1:${(failing.server.address() as AddressInfo).port}/jwks.json`, JWT_ISSUER: ISSUER, JWT_AUDIENCE: AUDIENCE }));
    try {
      const res = await request(failingBroker.url).post('/session').set('authorization', `Bearer ${await sign()}`).send({});
      expect(res).toMatchObject({ status: 503, body: { code: 'AUTH_UNAVAILABLE' } });
      // Anyone can send tokens with key ids no one has: each refusal is a warn line without frames, and the failed fetch
      // behind them is said once per pause, with what failed.
      for (let i = 0; i < 5; i++) expect((await request(failingBroker.url).post('/session').set('authorization', `Bearer ${await sign({}, { kid: `unknown-${i}` })}`).send({})).status).toBe(503);
      const lines = failingBroker.logs.records;
      expect(failingBroker.logs.errors).toEqual([]);
      expect(lines.filter((l) => l.msg === 'request refused' && l.code === 'AUTH_UNAVAILABLE' && l.level === 40)).toHaveLength(6);
      const fetchFailures = lines.filter((l) => l.msg.includes('key set (JWT_JWKS_URL) could not be fetched'));
      expect(fetchFailures).toHaveLength(1);
      expect(fetchFailures[0]).toMatchObject({ level: 40, err: { code: 'ERR_JOSE_GENERIC' } });
    } finally {
      await failingBroker.close();
      await failing.close();
    }
  });

  it('never logs the bearer token, even at trace level', async () => {
    const t = await sign({ marker: 'x' });
    const before = broker.logs.lines.length;
    await call(t).expect(200);
    expect(broker.logs.lines.length).toBeGreaterThan(before);
    expect(broker.logs.text).not.toContain(t);
    expect(broker.logs.text).not.toContain(t.split('.')[2]);
  });
});
