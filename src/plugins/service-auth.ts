// Caller checks shared by routes: service keys (ADMIN_API_KEYS) and an app's own session token.
import type { FastifyReply, FastifyRequest } from 'fastify';
import { AppError } from '../errors';
import { bearer, keyMatcher, sha256Hex } from '../security';
import type { SessionRecord, Store } from '../store/types';

export function serviceKeyGuard(keys: readonly string[]) {
  // With no keys configured these routes are closed to everyone: said so, rather than hinting a key is wrong.
  if (keys.length === 0)
    return async function noServiceKeys(_req: FastifyRequest, _reply: FastifyReply): Promise<void> {
      throw new AppError(401, 'UNAUTHORIZED', 'No service keys are configured: set ADMIN_API_KEYS to use this route', { 'www-authenticate': 'Bearer' });
    };
  const matches = keyMatcher(keys);
  return async function requireServiceKey(req: FastifyRequest, _reply: FastifyReply): Promise<void> {
    const key = bearer(req.headers.authorization);
    if (!key || !matches(key))
      throw new AppError(401, 'UNAUTHORIZED', 'A valid service key is required (Authorization: Bearer <key>)', { 'www-authenticate': 'Bearer' });
    // Who called, by the key's digest: one backend's Idempotency-Keys never meet another's.
    req.caller = `svc:${sha256Hex(key).slice(0, 16)}`;
  };
}

/** The session a token belongs to (X-Incode-Hardware-Id), for the app's own views; 401 otherwise. */
export async function sessionForToken(store: Store, token: string | undefined): Promise<SessionRecord> {
  if (!token) throw new AppError(401, 'UNAUTHORIZED', 'X-Incode-Hardware-Id with the session token is required');
  const session = await store.getSessionByToken(token);
  if (!session) throw new AppError(401, 'UNAUTHORIZED', 'Unknown session token');
  return session;
}
