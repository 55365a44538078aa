// Verifies callers' JWTs against the identity provider's key set (fetched and cached by jose), sparing it while it fails.
import type { ExportedJWKSCache, FlattenedJWSInput, JSONWebKeySet, JWSHeaderParameters, JWTPayload, KeyLike } from 'jose';

/** After a failed fetch of the key set, how long no request fetches it again. */
export const JWKS_FAILURE_PAUSE_MS = 5000;

/**
 * After a fetch, how long a token with a key id the set lacks is judged by that set without fetching it again
 * (jose's cooldown, 30 s by default): a key the provider publishes and signs with at once is taken this soon after,
 * and tokens with made-up key ids make this service fetch at most this often.
 */
export const JWKS_REFETCH_COOLDOWN_MS = 5000;

/**
 * How long keys last fetched keep verifying tokens while the identity provider fails, past jose's 10 minutes of
 * freshness: an outage of the provider does not turn every valid token into a 503 at once. (A key it removed during
 * its own outage is still taken that long.)
 */
export const JWKS_STALE_IF_ERROR_MS = 60 * 60 * 1000;

export interface JwtVerifierOptions {
  jwksUrl: string;
  issuer: string;
  audience: string;
  now?: () => number;
  /** How long fetched keys count as fresh before they are fetched again (jose's default: 10 minutes). */
  cacheMaxAgeMs?: number;
  /** Told of each fetch of the key set that failed (at most one per JWKS_FAILURE_PAUSE_MS): why callers get 503s. */
  onKeySetFailure?: (err: unknown) => void;
}

/**
 * Whether jose judged the token (a bad signature, claims, format, algorithm, or a key id the key set lacks), as
 * opposed to failing to get the key set at all: a timeout, an answer that is no key set (jose's generic error is used
 * only there), the connection or its TLS (an expired certificate), anything else.
 */
export function tokenJudged(err: unknown): boolean {
  const code = (err as { code?: unknown } | null)?.code;
  if (typeof code !== 'string') return false;
  if (code === 'ERR_JWKS_NO_MATCHING_KEY' || code === 'ERR_JWKS_MULTIPLE_MATCHING_KEYS') return true;
  return /^ERR_(JWT|JWS|JWE|JOSE)_/.test(code) && code !== 'ERR_JOSE_GENERIC';
}

class KeySetUnavailable extends Error {
  constructor() {
    super("the identity provider's key set could not be fetched a moment ago");
  }
}

/**
 * A token's payload once its signature, issuer, audience and expiry check out. A token without exp would never expire
 * (jose checks exp only when present), so it is refused. jose is loaded on first use, so only jwt mode loads it.
 */
export function createJwtVerifier(opts: JwtVerifierOptions): (token: string) => Promise<JWTPayload> {
  let ready: Promise<(token: string) => Promise<JWTPayload>> | null = null;
  return (token) => (ready ??= build(opts)).then((verify) => verify(token));
}

async function build({ jwksUrl, issuer, audience, now = Date.now, cacheMaxAgeMs = 600_000, onKeySetFailure }: JwtVerifierOptions): Promise<(token: string) => Promise<JWTPayload>> {
  const { createLocalJWKSet, createRemoteJWKSet, errors, jwksCache, jwtVerify } = await import('jose');
  // jose fills this in at each fetch that succeeds (its uat changes then, and only then): how this verifier knows when
  // the keys it holds came in. (remote.jwks() hands out a copy at every call, so it cannot tell.)
  const fetched: { jwks?: JSONWebKeySet; uat?: number } = {};
  const remote = createRemoteJWKSet(new URL(jwksUrl), { timeoutDuration: 5000, cooldownDuration: JWKS_REFETCH_COOLDOWN_MS, cacheMaxAge: cacheMaxAgeMs, [jwksCache]: fetched as ExportedJWKSCache });
  // jose pauses its refetches only after a fetch that succeeded: while the identity provider fails (or before it
  // ever answered), every request with a token would fetch again, so anyone could make this service hammer it.
  let failedAt = -Infinity;
  // The keys last fetched and when (on this verifier's clock, as it saw them come in), for the pause and an outage.
  let held: { uat: number; at: number; getKey: ReturnType<typeof createLocalJWKSet> } | undefined;
  const noteKeys = () => {
    if (fetched.jwks && fetched.uat !== undefined && held?.uat !== fetched.uat) held = { uat: fetched.uat, at: now(), getKey: createLocalJWKSet(fetched.jwks) };
  };
  // The keys last fetched, while not older than the outage allowance: a key id they lack is no verdict on the token
  // (the provider may have rotated), so that one waits for the provider too.
  const fromHeldKeys = async (header: JWSHeaderParameters, token: FlattenedJWSInput): Promise<KeyLike> => {
    if (!held || now() - held.at > JWKS_STALE_IF_ERROR_MS) throw new KeySetUnavailable();
    try {
      return await held.getKey(header, token);
    } catch (err) {
      if (err instanceof errors.JWKSNoMatchingKey) throw new KeySetUnavailable();
      throw err;
    }
  };

  const getKey = async (header: JWSHeaderParameters, token: FlattenedJWSInput): Promise<KeyLike> => {
    // No fetch during the pause after a failed one.
    if (now() < failedAt + JWKS_FAILURE_PAUSE_MS) return fromHeldKeys(header, token);
    try {
      const key = await remote(header, token);
      noteKeys();
      return key;
    } catch (err) {
      noteKeys(); // a refetch for an unknown key id may have succeeded before the token was judged
      if (tokenJudged(err)) throw err;
      // Every request waiting on the one fetch (jose shares it) fails with it: it is said once.
      const first = now() >= failedAt + JWKS_FAILURE_PAUSE_MS;
      failedAt = now();
      if (first) onKeySetFailure?.(err);
      return fromHeldKeys(header, token);
    }
  };

  const claims = { issuer, audience, clockTolerance: 30, requiredClaims: ['exp'] };
  // jose checks iat only against a maximum age: a token issued in the future (a signer's clock far ahead, or one minted
  // to be used later) would be taken. Refused beyond the same tolerance as exp and nbf.
  const issuedBeforeNow = (payload: JWTPayload): JWTPayload => {
    // The wall clock, as jose's own exp and nbf checks read it (`now` times only the key set's fetches).
    if (typeof payload.iat === 'number' && payload.iat > Date.now() / 1000 + claims.clockTolerance)
      throw new errors.JWTClaimValidationFailed('"iat" claim timestamp check failed (it should be in the past)', payload, 'iat', 'check_failed');
    return payload;
  };
  return async (token) => issuedBeforeNow(await verifyAnyKey(token));
  async function verifyAnyKey(token: string): Promise<JWTPayload> {
    try {
      return (await jwtVerify(token, getKey, claims)).payload;
    } catch (err) {
      if (!(err instanceof errors.JWKSMultipleMatchingKeys)) throw err;
      // Several keys fit the token (a provider that signs without a key id, mid-rotation): jose leaves trying each to
      // its caller. Only a bad signature moves on to the next key; a bad claim is the token's verdict.
      for await (const key of err as unknown as AsyncIterable<KeyLike>) {
        try {
          return (await jwtVerify(token, key, claims)).payload;
        } catch (inner) {
          if (!(inner instanceof errors.JWSSignatureVerificationFailed)) throw inner;
        }
      }
      throw new errors.JWSSignatureVerificationFailed();
    }
  }
}
