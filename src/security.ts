// Constant-time secret comparison and token hashing, used for every credential the broker checks.
import { createHash, timingSafeEqual } from 'node:crypto';
import { randomBytesPooled } from './util/random-pool';

const digest = (s: string) => createHash('sha256').update(s, 'utf8').digest();

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

/** One definition of the token hash: the store looks sessions up by the same digest. */
export { sha256Hex } from './store/crypto';

export function randomToken(bytes = 32): string {
  return randomBytesPooled(bytes).toString('base64url');
}

/** The bearer credential of an Authorization header, or null. */
export function bearer(header: string | undefined): string | null {
  if (!header) return null;
  const m = /^Bearer\s+(\S+)\s*$/i.exec(header);
  return m ? m[1] : null;
}
