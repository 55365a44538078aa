// The broker's own error type: a stable machine-readable code, an HTTP status and a safe message.

export class AppError extends Error {
  constructor(
    readonly statusCode: number,
    readonly code: string,
    message: string,
    readonly headers: Record<string, string> = {},
    /** Fields the error body carries besides code, message and requestId (never internals: it is sent as is). */
    readonly extra?: Record<string, unknown>,
  ) {
    super(message);
    this.name = 'AppError';
  }
}

/** Whole seconds until a retry is worth it, at least one (what a Retry-After header says). */
export function retryAfterSeconds(ms: number): number {
  return Math.max(1, Math.ceil(ms / 1000));
}

/** A Retry-After header for a wait of `ms`. */
export function retryAfter(ms: number): Record<string, string> {
  return { 'retry-after': String(retryAfterSeconds(ms)) };
}

/** 503 SHUTTING_DOWN: what an instance leaving (out of rotation, then draining) answers; another instance can serve. */
export function shuttingDownError(): AppError {
  return new AppError(503, 'SHUTTING_DOWN', 'The service is shutting down; retry on another instance', retryAfter(1000));
}

/** 503 OVERLOADED: the one answer for load the service turns away (event-loop lag, a full upload budget). */
export function overloadedError(message: string, retryAfterS: number): AppError {
  return new AppError(503, 'OVERLOADED', message, retryAfter(retryAfterS * 1000));
}

/** When a database outage is worth trying again. */
const DATABASE_RETRY_MS = 5000;

/** 503 DATABASE_UNAVAILABLE: the database is not answering (a retry can outlive it). */
export function databaseUnavailableError(): AppError {
  return new AppError(503, 'DATABASE_UNAVAILABLE', 'The database is not answering; try again shortly', retryAfter(DATABASE_RETRY_MS));
}
