// JSON request bodies as RFC 8259 has them: UTF-8 only, another charset or undecodable bytes refused.
import { isUtf8 } from 'node:buffer';
import type { FastifyRequest } from 'fastify';
import { parse } from 'secure-json-parse';
import { AppError } from '../errors';

const PARSE_OPTIONS = { protoAction: 'error', constructorAction: 'error' } as const;

/** The charset parameter of a Content-Type, lowercased and unquoted; null when there is none. */
export function charsetOf(contentType: string | undefined): string | null {
  // The common case (no parameter at all) without a regex.
  if (contentType === undefined || !contentType.includes(';')) return null;
  const m = /;\s*charset\s*=\s*("?)([^";\s]*)\1/i.exec(contentType);
  return m ? m[2].toLowerCase() : null;
}

/**
 * Fastify's own JSON parser decodes every body as UTF-8 whatever its declared charset, so a Latin-1 "José" was stored
 * as "Jos\uFFFD": personal data corrupted without a word. Another charset is a 415, bytes that are not UTF-8 a 400.
 */
export function parseJsonBody(req: FastifyRequest, body: Buffer, done: (err: Error | null, value?: unknown) => void): void {
  const charset = charsetOf(req.headers['content-type']);
  if (charset !== null && charset !== 'utf-8' && charset !== 'utf8')
    return done(new AppError(415, 'UNSUPPORTED_MEDIA_TYPE', 'JSON bodies must be UTF-8: send charset=utf-8, or no charset'));
  if (body.length > 0 && !isUtf8(body)) return done(new AppError(400, 'INVALID_JSON', 'Body is not valid UTF-8'));
  parseJsonBodyLeniently(req, body, done);
}

/**
 * For Incode's webhooks, read as leniently as the rest of them: a status refused for a stray byte in a field the
 * service never keeps would be retried, refused again, and left to polling.
 */
export function parseJsonBodyLeniently(_req: FastifyRequest, body: Buffer, done: (err: Error | null, value?: unknown) => void): void {
  if (body.length === 0) return done(new AppError(400, 'INVALID_JSON', 'Body is empty but Content-Type is application/json'));
  try {
    done(null, parse(body.toString('utf8'), undefined, PARSE_OPTIONS));
  } catch {
    done(new AppError(400, 'INVALID_JSON', 'Body is not valid JSON, or holds a __proto__ or constructor.prototype key'));
  }
}
