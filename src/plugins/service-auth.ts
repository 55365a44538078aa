// Service-key authentication (ADMIN_API_KEYS) for the results API and the operator page.
import type { FastifyReply, FastifyRequest } from 'fastify';
import { AppError } from '../errors';
import { bearer, matchesAny } from '../security';

export function serviceKeyGuard(keys: readonly string[]) {
  return async function requireServiceKey(req: FastifyRequest, _reply: FastifyReply): Promise<void> {
    const key = bearer(req.headers.authorization);
    if (!key || keys.length === 0 || !matchesAny(key, keys))
      throw new AppError(401, 'UNAUTHORIZED', 'A valid service key is required (Authorization: Bearer <key>)', { 'www-authenticate': 'Bearer' });
  };
}
