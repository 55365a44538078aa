// Caller checks shared by routes: service keys (ADMIN_API_KEYS) and an app's own session token.
import type { FastifyReply, FastifyRequest } from 'fastify';
import { AppError } from '../errors';
import { bearer, keyMatcher, sha256Hex } from '../security';
import type { SessionRecord, Store } from '../store/types';

/** A hook that lets through only a request bearing one of `keys` (compared in constant time); 401 with `refusal` otherwise. */
export function bearerKeyGuard(keys: readonly string[], refusal: string, accepted?: (req: FastifyRequest, key: string) => void) {
  const matches = keyMatcher(keys);
  return async function requireBearerKey(req: FastifyRequest, _reply: FastifyReply): Promise<void> {
    const key = bearer(req.headers.authorization);
    if (!key || !matches(key)) throw new AppError(401, 'UNAUTHORIZED', refusal, { 'www-authenticate': 'Bearer' });
    accepted?.(req, key);
  };
}

export function serviceKeyGuard(keys: readonly string[]) {
  // With no keys configured these routes are closed to everyone: said so, rather than hinting a key is wrong.
  if (keys.length === 0)
    return async function noServiceKeys(_req: FastifyRequest, _reply: FastifyReply): Promise<void> {
      throw new AppError(401, 'UNAUTHORIZED', 'No service keys are configured: set ADMIN_API_KEYS to use this route', { 'www-authenticate': 'Bearer' });
    };
  // Who called, by the key's digest: one backend's Idempotency-Keys never meet another's.
  return bearerKeyGuard(keys, 'A valid service key is required (Authorization: Bearer <key>)', (req, key) => (req.caller = `svc:${sha256Hex(key).slice(0, 16)}`));
}

/** The session a token belongs to (X-Incode-Hardware-Id), for the app's own views; 401 otherwise. */
export async function sessionForToken(store: Store, token: string | undefined): Promise<SessionRecord> {
  // RFC 9110 asks every 401 for a challenge: the header the session token goes in.
  const challenge = { 'www-authenticate': 'ApiKey header="x-incode-hardware-id"' };
  if (!token) throw new AppError(401, 'UNAUTHORIZED', 'X-Incode-Hardware-Id with the session token is required', challenge);
  const session = await store.getSessionByToken(token);
  if (!session) throw new AppError(401, 'UNAUTHORIZED', 'Unknown session token', challenge);
  return session;
}
