// The broker's own error type: a stable machine-readable code, an HTTP status and a safe message.

export class AppError extends Error {
  constructor(
    readonly statusCode: number,
    readonly code: string,
    message: string,
    readonly headers: Record<string, string> = {},
  ) {
    super(message);
    this.name = 'AppError';
  }
}

/** 503 OVERLOADED: the one answer for load the service turns away (event-loop lag, a full upload budget). */
export function overloadedError(message: string, retryAfterS: number): AppError {
  return new AppError(503, 'OVERLOADED', message, { 'retry-after': String(retryAfterS) });
}
