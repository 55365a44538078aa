// Typed Incode errors, all built by one factory from the HTTP status and Incode's error envelope.
import { isCaptureCode } from './capture-checks';
import type { IncodeErrorBody } from './types';

export type IncodeErrorCode =
  | 'INCODE_BAD_REQUEST'
  | 'INCODE_UNAUTHORIZED'
  | 'INCODE_FORBIDDEN'
  | 'INCODE_NOT_FOUND'
  | 'INCODE_CONFLICT'
  | 'INCODE_PAYLOAD_TOO_LARGE'
  | 'INCODE_RATE_LIMITED'
  | 'INCODE_UNAVAILABLE'
  | 'INCODE_TIMEOUT'
  | 'INCODE_CONNECTION'
  | 'INCODE_BAD_RESPONSE'
  | 'INCODE_CIRCUIT_OPEN';

const OUTAGE_CODES: ReadonlySet<string> = new Set(['INCODE_RATE_LIMITED', 'INCODE_UNAVAILABLE', 'INCODE_TIMEOUT', 'INCODE_CONNECTION', 'INCODE_CIRCUIT_OPEN']);

/**
 * Whether an error code (an IncodeError's, or the lastError it left on a job or a session) says Incode was out of
 * reach or overloaded (timeouts, throttling, 5xx, connection failures), not that it refused: what time can mend.
 */
export function isOutageCode(code: string | null | undefined): boolean {
  return code != null && OUTAGE_CODES.has(code);
}

export class IncodeError extends Error {
  override readonly name = 'IncodeError';
  constructor(
    readonly code: IncodeErrorCode,
    readonly operation: string,
    message: string,
    readonly details: {
      httpStatus?: number;
      /** Incode's own code from the envelope (e.g. 4019, 6000), or the HTTP code. */
      incodeStatus?: number;
      /** Incode's short error text ("Face not found."), never the request or a credential. */
      incodeError?: string;
      retryAfterMs?: number;
      /** True when the request certainly never reached Incode (safe to retry anything). */
      notSent?: boolean;
      /**
       * True when the answer's body was Incode's error envelope (a numeric `status` and an `error` text), not a proxy's
       * or a gateway's page: the client error is Incode's own word.
       */
      envelope?: boolean;
    } = {},
  ) {
    super(message);
  }

  /** Worth another try later: timeouts, throttling, 5xx and connection failures. */
  get retryable(): boolean {
    return isOutageCode(this.code);
  }

  /**
   * Incode certainly did nothing for this call: it never left, or Incode refused it (a 4xx). Not after a timeout, not
   * for a 5xx (a gateway's 502 or 504 may come after the service behind it created the session, and a 500 may come
   * from a step after the one that did; incode-api.md 2.4 counts them as unknown outcomes), and not for a 2xx answer
   * the client could not use (INCODE_BAD_RESPONSE): a session may exist then.
   */
  get certainlyNotDone(): boolean {
    return this.details.notSent === true || this.isClientError || this.details.httpStatus === 429;
  }

  /** One of Incode's own codes from the envelope (4019, 6000...), not merely the HTTP status repeated. */
  get incodeCode(): number | undefined {
    const { incodeStatus, httpStatus } = this.details;
    return incodeStatus !== undefined && incodeStatus !== httpStatus ? incodeStatus : undefined;
  }

  /**
   * Incode answering about a capture (the guide: any status but 200 means "take it again"): an error naming one of
   * its capture codes under any 4xx or 5xx but an auth refusal, since which HTTP status each code comes with is
   * unknown; a selfie's bare 500; or, with no such code, a 4xx other than an auth or session problem. Any other bare
   * 5xx, a 404 or a 409 is no capture answer: an outage, a session Incode does not know, a conflict.
   */
  get isCaptureAnswer(): boolean {
    const http = this.details.httpStatus ?? 0;
    if (http === 401 || http === 403) return false;
    // A selfie's 500 too: the guide's selfie check repeats the capture on any status but 200, and its code table names
    // 500 (an image Incode could not process). A 502, 503 or 504 is a gateway's: an outage.
    if (this.operation === 'addFace' && http === 500) return true;
    if (isCaptureCode(this.incodeCode)) return this.isClientError || http >= 500;
    return this.isClientError && http !== 404 && http !== 409;
  }

  /**
   * Incode answered with a client error: the call itself was refused (counts as a success for the circuit). Not a 429
   * (it is limiting), nor a 408: a request timeout says nothing about the call, which may even have run.
   */
  get isClientError(): boolean {
    const s = this.details.httpStatus;
    return s !== undefined && s >= 400 && s < 500 && s !== 429 && s !== 408;
  }
}

function codeForStatus(status: number): IncodeErrorCode {
  if (status === 400 || status === 405 || status === 406 || status === 422) return 'INCODE_BAD_REQUEST';
  if (status === 401) return 'INCODE_UNAUTHORIZED';
  if (status === 403) return 'INCODE_FORBIDDEN';
  if (status === 404) return 'INCODE_NOT_FOUND';
  if (status === 409) return 'INCODE_CONFLICT';
  if (status === 413) return 'INCODE_PAYLOAD_TOO_LARGE';
  if (status === 429) return 'INCODE_RATE_LIMITED';
  if (status === 408 || status === 504) return 'INCODE_TIMEOUT';
  if (status >= 500) return 'INCODE_UNAVAILABLE';
  return 'INCODE_BAD_RESPONSE';
}

/**
 * The longest wait of Incode's Retry-After this service takes and passes on to its callers: a larger one (a proxy's
 * mistake, a date years ahead) would tell apps to come back next year, or print as `1e+23`, which is no HTTP value.
 */
export const MAX_UPSTREAM_RETRY_AFTER_MS = 15 * 60_000;

function parseRetryAfter(value: string | string[] | undefined): number | undefined {
  const v = Array.isArray(value) ? value[0] : value;
  if (!v) return undefined;
  // Delay-seconds (a fraction too: Date.parse would read "1.5" as a date in 2001, a wait of 0), else an HTTP date.
  const ms = /^\d+(\.\d+)?$/.test(v) ? Math.ceil(Number(v) * 1000) : Date.parse(v) - Date.now();
  return Number.isNaN(ms) ? undefined : Math.min(MAX_UPSTREAM_RETRY_AFTER_MS, Math.max(0, ms));
}

/** Keeps only a short, printable error text: the envelope is Incode's, but never echo more than a phrase. */
function safeText(s: unknown): string | undefined {
  if (typeof s !== 'string') return undefined;
  const t = s.replace(/[^\x20-\x7e]/g, '').slice(0, 120);
  // A JWT-looking or key-looking run never leaves this module.
  return t.replace(/eyJ[\w-]+\.[\w-]+\.[\w-]+/g, '[token]').replace(/[A-Za-z0-9_-]{32,}/g, '[redacted]');
}

/** The one factory: HTTP status + parsed body (maybe not an envelope) → IncodeError. */
export function incodeErrorFromResponse(operation: string, status: number, body: unknown, headers: Record<string, string | string[] | undefined> = {}): IncodeError {
  const env = (body && typeof body === 'object' ? body : {}) as IncodeErrorBody;
  const incodeStatus = typeof env.status === 'number' ? env.status : status;
  const incodeError = safeText(env.error);
  const code = codeForStatus(status);
  return new IncodeError(code, operation, `Incode ${operation} failed with HTTP ${status}${incodeStatus !== status ? ` (Incode status ${incodeStatus})` : ''}`, {
    httpStatus: status,
    incodeStatus,
    incodeError,
    retryAfterMs: parseRetryAfter(headers['retry-after']),
    envelope: typeof env.status === 'number' && typeof env.error === 'string',
  });
}

const NOT_SENT_CODES = new Set(['ECONNREFUSED', 'ENOTFOUND', 'EAI_AGAIN', 'UND_ERR_CONNECT_TIMEOUT', 'EHOSTUNREACH', 'ENETUNREACH']);

/** Transport failures (undici errors) → IncodeError. */
export function incodeErrorFromTransport(operation: string, err: unknown): IncodeError {
  const e = err as { code?: string; name?: string };
  const code = e?.code ?? '';
  if (code === 'UND_ERR_HEADERS_TIMEOUT' || code === 'UND_ERR_BODY_TIMEOUT' || e?.name === 'TimeoutError' || e?.name === 'AbortError')
    return new IncodeError('INCODE_TIMEOUT', operation, `Incode ${operation} timed out`);
  if (code === 'UND_ERR_CONNECT_TIMEOUT')
    return new IncodeError('INCODE_TIMEOUT', operation, `Incode ${operation} timed out while connecting`, { notSent: true });
  return new IncodeError('INCODE_CONNECTION', operation, `Incode ${operation} failed: ${code || 'connection error'}`, { notSent: NOT_SENT_CODES.has(code) });
}

export function circuitOpenError(operation: string, retryAfterMs: number): IncodeError {
  return new IncodeError('INCODE_CIRCUIT_OPEN', operation, `Incode ${operation} is failing; calls paused`, { retryAfterMs, notSent: true });
}
