// What every logger of this service (the app's, the server's boot log, the CLI's) leaves out of its lines.
import type pino from 'pino';
import { isDatabaseUnavailable } from './store/unavailable';
import { errorShape } from './util/error-shape';

/**
 * `err` in a log line: an Error cut down to its type, code, message and stack (not pino's every own property: a pg
 * error's `detail` and `where`, a library's `cause` chain or request options can quote values); an object already cut
 * down to what may be logged (the error handler's and the fatal line's { type, code, message }) as it is, where pino's
 * own serializer would overwrite its type with "Object".
 */
export function errSerializer(err: Error): pino.SerializedError {
  if (!(err instanceof Error)) return err as pino.SerializedError;
  const { code } = err as { code?: unknown };
  return { type: err.name, message: err.message, stack: err.stack ?? '', ...(typeof code === 'string' || typeof code === 'number' ? { code } : {}) } as pino.SerializedError;
}

/**
 * A request target as logged and as a 404 names it: its path alone. An absolute-form target (`GET http://u:pw@host/x`)
 * loses its scheme, user info and host, any target its query and fragment: each can carry credentials.
 */
export function requestPath(url: string): string {
  let path = url;
  if (!path.startsWith('/')) {
    const origin = /^[a-z][a-z0-9+.-]*:\/\/[^/?#]*/i.exec(path);
    if (!origin) return path === '*' ? '*' : '';
    path = path.slice(origin[0].length);
  }
  const end = path.search(/[?#]/);
  return end < 0 ? path : path.slice(0, end);
}

/**
 * Log fields whose values never reach a log line. Headers are not listed: the app's `req` serializer keeps method,
 * path and address of whatever is logged under `req` (a path under req.headers would make pino clone `req` on
 * every access line for nothing).
 */
export const REDACT_PATHS = [
  // Explicit paths, not wildcards: a wildcard makes pino walk every logged object on every line.
  'token',
  'apiKey',
  'password',
  'base64Image',
  'resumeToken',
  'access_token',
  'body',
  'err.config',
];

/**
 * An unexpected error as a log field: a database outage, or any SQLite error, by its driver's own words ("Connection
 * terminated...", "disk I/O error": worth reading, and SQLite's name columns, never values), any other error by its
 * kind, code and frames only (errorShape).
 */
export function loggedError(err: unknown): Record<string, unknown> {
  // A CipherError's message never carries plaintext or key material (crypto.ts), and names the key id that is missing.
  const name = (err as { name?: unknown } | null)?.name;
  if (isDatabaseUnavailable(err) || name === 'SqliteError' || name === 'CipherError') {
    const { name, code, message } = err as { name?: unknown; code?: unknown; message?: unknown };
    return { type: name, code, message };
  }
  return errorShape(err);
}
