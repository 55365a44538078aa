// Constant-time secret comparison and token hashing, used for every credential the broker checks.
import { createHmac, hash, hkdfSync, timingSafeEqual } from 'node:crypto';
import type { IncomingMessage, ServerResponse } from 'node:http';
import helmet from 'helmet';
import { hashesEqual, sha256Hex } from './store/crypto';
import { randomBytesPooled } from './util/random-pool';

// One-shot crypto.hash (Node >= 20.12): a quarter of createHash's cost, and it runs on every request.
const digest = (s: string) => hash('sha256', s, 'buffer');

/** Compares digests, so neither the content nor the length of the secret leaks through timing. */
export function safeEqual(a: string, b: string): boolean {
  return timingSafeEqual(digest(a), digest(b));
}

/**
 * A matcher for a fixed set of keys: their digests are computed once, a candidate's once per call, and every
 * key is compared (no early exit) so neither the content, the length nor the position of a match leaks.
 */
export function keyMatcher(keys: readonly string[]): (candidate: string) => boolean {
  const digests = keys.map(digest);
  return (candidate) => {
    const d = digest(candidate);
    let ok = false;
    for (const k of digests) ok = timingSafeEqual(d, k) || ok;
    return ok;
  };
}

/** One definition of the token hash (the store looks sessions up by the same digest). */
export { sha256Hex };

/**
 * Keyed digests of values that may hold personal data (a request naming a customer id), for lookups and equality only:
 * a plain SHA-256 of a guessable value can be reversed by hashing candidates, an HMAC under a key derived from the data
 * keys cannot. `digest` uses the first (current) key; `matches` also accepts the other configured keys and, for values
 * written before digests were keyed, the plain SHA-256, so neither a key rotation nor an upgrade breaks a lookup.
 */
export function keyedDigest(dataKeys: readonly Buffer[], purpose: string) {
  const keys = dataKeys.map((k) => Buffer.from(hkdfSync('sha256', k, Buffer.alloc(0), `incode-broker ${purpose} v1`, 32)));
  const under = (key: Buffer, value: string) => createHmac('sha256', key).update(value).digest('hex');
  return {
    digest: (value: string): string => under(keys[0], value),
    // Fixed-length hex digests on both sides: compared as they are, in constant time. The plain SHA-256 is not only
    // for values from before digests were keyed: a completed Idempotency-Key keeps one, so it survives a key rotation.
    matches: (stored: string, value: string): boolean => keys.some((k) => hashesEqual(stored, under(k, value))) || hashesEqual(stored, sha256Hex(value)),
  };
}

export function randomToken(bytes = 32): string {
  return randomBytesPooled(bytes).toString('base64url');
}

/** The bearer credential of an Authorization header, or null. */
export function bearer(header: string | undefined): string | null {
  if (!header) return null;
  const m = /^Bearer\s+(\S+)\s*$/i.exec(header);
  return m ? m[1] : null;
}

/**
 * helmet's security headers for the JSON API, computed once: they do not depend on the request, and running
 * helmet's middleware on every request costs a dozen validated setHeader calls. HTML pages set their own CSP.
 */
export function securityHeaders(): Record<string, string> {
  const headers: Record<string, string> = {};
  const res = {
    setHeader: (name: string, value: unknown) => void (headers[name.toLowerCase()] = String(value)),
    removeHeader: (name: string) => void delete headers[name.toLowerCase()],
  };
  let failed: unknown = null;
  // Framed by no one, as the pages' own frame-ancestors 'none' says (helmet's default SAMEORIGIN would contradict it).
  helmet({ contentSecurityPolicy: false, crossOriginResourcePolicy: { policy: 'cross-origin' }, crossOriginEmbedderPolicy: false, frameguard: { action: 'deny' } })(
    {} as IncomingMessage,
    res as unknown as ServerResponse,
    (err?: unknown) => void (failed = err ?? null),
  );
  if (failed) throw failed;
  return headers;
}
