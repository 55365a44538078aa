// The JWT verifier against a real key set served on loopback: no fetch storm while the provider fails, and key sets
// where several keys fit a token.
import type { AddressInfo } from 'node:net';
import Fastify, { type FastifyInstance } from 'fastify';
import { SignJWT, exportJWK, generateKeyPair, type JWK, type KeyLike } from 'jose';
import { createJwtVerifier, JWKS_FAILURE_PAUSE_MS, JWKS_REFETCH_COOLDOWN_MS, JWKS_STALE_IF_ERROR_MS, tokenJudged } from '../../src/protection/jwt-verifier';

const ISSUER = 'https://idp.example.com/';
const AUDIENCE = 'incode-broker';

interface Idp {
  url: string;
  hits: number;
  answer: { keys: JWK[] } | null;
  close(): Promise<void>;
}

async function startIdp(answer: { keys: JWK[] } | null): Promise<Idp> {
  const app: FastifyInstance = Fastify();
  const idp: Idp = { url: '', hits: 0, answer, close: () => app.close() };
  app.get('/jwks.json', async (_req, reply) => {
    idp.hits++;
    return idp.answer ? idp.answer : reply.code(500).send({ error: 'down' });
  });
  await app.listen({ port: 0, host: '127.0.0.1' });
  idp.url = `http://127.0.0.1:${(app.server.address() as AddressInfo).port}/jwks.json`;
  return idp;
}

async function keyPair(kid?: string): Promise<{ privateKey: KeyLike; jwk: JWK }> {
  const kp = await generateKeyPair('ES256', { extractable: true });
  return { privateKey: kp.privateKey, jwk: { ...(await exportJWK(kp.publicKey)), alg: 'ES256', use: 'sig', ...(kid ? { kid } : {}) } };
}

function sign(key: KeyLike, { kid, aud = AUDIENCE }: { kid?: string; aud?: string } = {}): Promise<string> {
  return new SignJWT({})
    .setProtectedHeader({ alg: 'ES256', ...(kid ? { kid } : {}) })
    .setSubject('user-1')
    .setIssuer(ISSUER)
    .setAudience(aud)
    .setIssuedAt()
    .setExpirationTime('5m')
    .sign(key);
}

const failure = (p: Promise<unknown>) => p.then(() => new Error('verified'), (e: unknown) => e);

/** The verdict "the key set cannot be had": a rejection (not a verification) that judges no token. */
async function expectUnavailable(p: Promise<unknown>): Promise<void> {
  const err = await failure(p);
  expect(err).toBeInstanceOf(Error);
  expect((err as Error).message).not.toBe('verified');
  expect(tokenJudged(err)).toBe(false);
}

describe('createJwtVerifier', () => {
  const idps: Idp[] = [];
  afterEach(async () => {
    for (const idp of idps.splice(0)) await idp.close();
  });

  it('after a failed fetch of the key set, fetches it again only once the pause is over, and then verifies', async () => {
    const k1 = await keyPair('k1');
    const idp = await startIdp(null);
    idps.push(idp);
    let now = 1_000_000;
    const verify = createJwtVerifier({ jwksUrl: idp.url, issuer: ISSUER, audience: AUDIENCE, now: () => now });
    const token = await sign(k1.privateKey, { kid: 'k1' });
    // Unavailable: the token is not known to be bad.
    for (let i = 0; i < 20; i++) await expectUnavailable(verify(token));
    // Twenty tokens, one fetch: the failure pauses the fetches (jose's own pause follows only a success).
    expect(idp.hits).toBe(1);
    now += JWKS_FAILURE_PAUSE_MS - 1;
    await expectUnavailable(verify(token));
    expect(idp.hits).toBe(1);
    idp.answer = { keys: [k1.jwk] };
    now += 1;
    expect(await verify(token)).toMatchObject({ sub: 'user-1', iss: ISSUER });
    expect(idp.hits).toBe(2);
  });

  it('takes a key the provider publishes and signs with at once within seconds, and judges unknown key ids by the set it holds meanwhile', async () => {
    const [k1, k2] = [await keyPair('k1'), await keyPair('k2')];
    const idp = await startIdp({ keys: [k1.jwk] });
    idps.push(idp);
    const verify = createJwtVerifier({ jwksUrl: idp.url, issuer: ISSUER, audience: AUDIENCE });
    expect(await verify(await sign(k1.privateKey, { kid: 'k1' }))).toMatchObject({ sub: 'user-1' });
    // k2 published, a token signed with it at once: the set fetched a moment ago judges it, with no fetch per token...
    idp.answer = { keys: [k1.jwk, k2.jwk] };
    const token = await sign(k2.privateKey, { kid: 'k2' });
    for (let i = 0; i < 10; i++) expect(tokenJudged(await failure(verify(token)))).toBe(true);
    expect(idp.hits).toBe(1);
    // ...and once the cooldown after that fetch is over (5 s, where jose waits 30), the set is fetched again for it.
    await new Promise((r) => setTimeout(r, JWKS_REFETCH_COOLDOWN_MS + 100));
    expect(await verify(token)).toMatchObject({ sub: 'user-1' });
    expect(idp.hits).toBe(2);
  }, 20_000);

  it('says a failed fetch once, however many requests were waiting on it', async () => {
    const idp = await startIdp(null);
    idps.push(idp);
    const failures: unknown[] = [];
    const verify = createJwtVerifier({ jwksUrl: idp.url, issuer: ISSUER, audience: AUDIENCE, onKeySetFailure: (err) => failures.push(err) });
    const k1 = await keyPair('k1');
    const tokens = await Promise.all(Array.from({ length: 20 }, (_, i) => sign(k1.privateKey, { kid: `k${i}` })));
    await Promise.all(tokens.map((t) => expectUnavailable(verify(t))));
    expect(idp.hits).toBe(1);
    expect(failures).toHaveLength(1);
  });

  it('while the identity provider fails, keys fetched within the last hour still verify the tokens they can, and no longer after', async () => {
    const k1 = await keyPair('k1');
    const idp = await startIdp({ keys: [k1.jwk] });
    idps.push(idp);
    let now = 1_000_000;
    const verify = createJwtVerifier({ jwksUrl: idp.url, issuer: ISSUER, audience: AUDIENCE, now: () => now, cacheMaxAgeMs: 20 });
    const token = await sign(k1.privateKey, { kid: 'k1' });
    expect(await verify(token)).toMatchObject({ sub: 'user-1' });
    idp.answer = null;
    // The keys are no longer fresh, and fetching them again fails: the ones held still verify.
    await new Promise((r) => setTimeout(r, 40));
    expect(await verify(token)).toMatchObject({ sub: 'user-1' });
    expect(idp.hits).toBe(2);
    // A key id they lack waits for the provider (503), it is not judged invalid.
    const other = await keyPair('k2');
    await expectUnavailable(verify(await sign(other.privateKey, { kid: 'k2' })));
    // Within the hour they still serve, however often the provider is asked and fails meanwhile...
    const asked = idp.hits;
    for (let i = 0; i < 3; i++) {
      now += JWKS_STALE_IF_ERROR_MS / 3 - 60_000;
      expect(await verify(token)).toMatchObject({ sub: 'user-1' });
    }
    // (each past the pause after a failed fetch, so each asked again)
    expect(idp.hits).toBe(asked + 3);
    // ...and once they are older than that, the provider still failing, they are no longer taken.
    now += 4 * 60_000;
    await expectUnavailable(verify(token));
  });

  it('tries each key when several fit a token without a key id, and judges the token by the one that verifies', async () => {
    const [a, b, stranger] = await Promise.all([keyPair(), keyPair(), keyPair()]);
    const idp = await startIdp({ keys: [a.jwk, b.jwk] });
    idps.push(idp);
    const verify = createJwtVerifier({ jwksUrl: idp.url, issuer: ISSUER, audience: AUDIENCE });
    expect(await verify(await sign(b.privateKey))).toMatchObject({ sub: 'user-1' });
    expect(await verify(await sign(a.privateKey))).toMatchObject({ sub: 'user-1' });
    // No key verifies it: a bad signature, judged (401), not an outage.
    const forged = await failure(verify(await sign(stranger.privateKey)));
    expect(forged).toMatchObject({ code: 'ERR_JWS_SIGNATURE_VERIFICATION_FAILED' });
    expect(tokenJudged(forged)).toBe(true);
    // The right key, the wrong audience: that claim is the verdict, not a reason to try the next key.
    expect(await failure(verify(await sign(b.privateKey, { aud: 'someone-else' })))).toMatchObject({ code: 'ERR_JWT_CLAIM_VALIDATION_FAILED' });
    expect(idp.hits).toBe(1);
  });
});
