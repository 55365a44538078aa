// The one error handler: every failure becomes {code, message, requestId}; 5xx never carry internals.
import fp from 'fastify-plugin';
import type { FastifyError, FastifyReply, FastifyRequest } from 'fastify';
import { AppError, databaseUnavailableError, retryAfter } from '../errors';
import { IncodeError } from '../incode/errors';
import { OnboardingError } from '../onboarding/orchestrator';
import { isDatabaseUnavailable, suggestsDatabaseDown } from '../store/unavailable';
import { loggedError, requestPath } from '../logging';
import { CipherError } from '../store/crypto';

export interface Mapped {
  status: number;
  code: string;
  message: string;
  headers?: Record<string, string>;
  /** Fields the body carries besides code, message and requestId. */
  extra?: Record<string, unknown>;
}

/** The status, code, message, headers and extra body fields an error is answered with. */
function mapError(err: FastifyError | Error): Mapped {
  if (err instanceof AppError) return { status: err.statusCode, code: err.code, message: err.message, headers: err.headers, extra: err.extra };
  if (err instanceof OnboardingError) {
    // The Incode failure behind a step is answered as on every other route (503 + Retry-After for an open circuit or a
    // rate limit, 504, 502), with the step and the session it reached; a database outage there is a 503 too.
    const incode = err.cause instanceof IncodeError ? mapError(err.cause) : null;
    if (err.code === 'DATABASE_UNAVAILABLE')
      return { ...mapError(databaseUnavailableError()), message: err.message, extra: stepExtra(err) };
    // Erased while its captures ran (they stopped there).
    if (err.code === 'SESSION_NOT_FOUND') return { status: 404, code: err.code, message: err.message, extra: stepExtra(err) };
    // Stopped by this service's shutdown past its grace: as any request turned away while draining.
    if (err.code === 'ABORTED')
      return { status: 503, code: 'SHUTTING_DOWN', message: 'The service shut down before the captures were done; retry on another instance', headers: retryAfter(1000), extra: stepExtra(err) };
    return {
      status: incode?.status ?? (err.code === 'INTERNAL_ERROR' ? 500 : 502),
      code: incode?.code ?? err.code,
      message: err.message,
      headers: incode?.headers,
      extra: stepExtra(err),
    };
  }
  if (err instanceof IncodeError) {
    if (err.code === 'INCODE_CIRCUIT_OPEN')
      return { status: 503, code: 'INCODE_UNAVAILABLE', message: 'Incode is failing; try again shortly', headers: retryAfter(err.details.retryAfterMs ?? 1000) };
    if (err.code === 'INCODE_TIMEOUT') return { status: 504, code: 'INCODE_TIMEOUT', message: 'Incode did not answer in time' };
    // Incode turned the call away before doing anything: come back later (its own Retry-After), nothing was created.
    if (err.code === 'INCODE_RATE_LIMITED')
      return { status: 503, code: 'INCODE_RATE_LIMITED', message: 'Incode is limiting this service\'s calls; try again shortly', headers: retryAfter(err.details.retryAfterMs ?? 1000) };
    return { status: 502, code: err.code, message: `Incode refused or failed the ${err.operation} call` };
  }
  const fe = err as FastifyError;
  if (fe.validation) return { status: 400, code: 'VALIDATION_FAILED', message: fe.message.slice(0, 300) };
  switch (fe.code) {
    case 'FST_ERR_CTP_BODY_TOO_LARGE':
      return { status: 413, code: 'BODY_TOO_LARGE', message: 'Request body is too large' };
    case 'FST_ERR_CTP_INVALID_MEDIA_TYPE':
      // Every route takes JSON but the webhook token endpoint, which takes a form (OAuth 2.0 client credentials).
      return { status: 415, code: 'UNSUPPORTED_MEDIA_TYPE', message: 'Unsupported Content-Type: send application/json (the OAuth token endpoint: application/x-www-form-urlencoded)' };
    case 'FST_ERR_CTP_INVALID_CONTENT_LENGTH':
      return { status: 400, code: 'INVALID_CONTENT_LENGTH', message: 'Content-Length does not match the body' };
  }
  if (fe.statusCode === 429) return { status: 429, code: 'RATE_LIMITED', message: fe.message || 'Too many requests' };
  // Fastify's own codes (FST_ERR_...) name its internals and change between its versions: the stable one instead.
  if (typeof fe.statusCode === 'number' && fe.statusCode >= 400 && fe.statusCode < 500)
    return { status: fe.statusCode, code: fe.code && !fe.code.startsWith('FST_') ? fe.code : 'BAD_REQUEST', message: fe.message.slice(0, 300) };
  // A stalled or restarting database is an outage a retry can outlive, not a bug: 503 tells clients to come back.
  if (isDatabaseUnavailable(err)) return mapError(databaseUnavailableError());
  // Stored data under a key DATA_ENCRYPTION_KEY no longer lists (removed before the rotation's sweep was done): a code
  // of its own to alert on; the log names the key id, the answer nothing.
  if (err instanceof CipherError) return { status: 500, code: 'STORED_DATA_UNREADABLE', message: 'Stored data could not be decrypted' };
  return { status: 500, code: 'INTERNAL_ERROR', message: 'Internal error' };
}

/**
 * The 503s this service gives on purpose: a replica leaving, load shed, billable starts refused while the database is
 * known down (the failure that found it was logged with its cause; the AppError is only ever the latch's refusal),
 * bearer tokens refused while the identity provider's key set cannot be had (its failed fetches are logged, one per
 * pause, by the verifier: anyone could send tokens with an unknown key id to fill the log otherwise).
 */
const DELIBERATE_503 = new Set(['SHUTTING_DOWN', 'OVERLOADED', 'DATABASE_UNAVAILABLE', 'AUTH_UNAVAILABLE']);

/**
 * Whether a 5xx is this service's own choice: draining, shedding load, or failing fast while Incode's circuit is open
 * (the failures that opened it were logged as they came; one error line with frames per refused request during an
 * outage would bury them).
 */
function deliberate(err: unknown, m: Mapped): boolean {
  if (err instanceof AppError) return DELIBERATE_503.has(m.code);
  const cause = err instanceof OnboardingError ? err.cause : err;
  return cause instanceof IncodeError && cause.code === 'INCODE_CIRCUIT_OPEN';
}

/** Answers an error as every route does; `fields` adds what one endpoint's protocol asks of its error bodies. */
export function sendError(err: unknown, req: FastifyRequest, reply: FastifyReply, fields?: (m: Mapped) => Record<string, unknown>): void {
  const m = mapError(err as FastifyError);
  // Until a probe has an answer, billable starts are refused before Incode is called (the session could not be kept).
  if (m.code === 'DATABASE_UNAVAILABLE' && req.server.hasDecorator('databaseOutage') && suggestsDatabaseDown(err instanceof OnboardingError ? err.cause : err))
    req.server.databaseOutage.noticed();
  // An outage's message is the driver's own words ("Connection terminated..."), worth reading; any other error's
  // could quote the data it failed on, so only its kind, code and frames are logged.
  // A 503 this service gives on purpose (draining, shedding load, an open circuit) is no failure: one warn line
  // without frames, as under overload an error line with a stack per refused request would add to the load it sheds.
  if (m.status >= 500 && !deliberate(err, m)) req.log.error({ err: loggedError(err) }, 'request failed');
  // Draining is planned: its refusals (a probe's during the out-of-rotation delay, most of all) are no warning.
  else if (m.status >= 500 && m.code !== 'SHUTTING_DOWN') req.log.warn({ code: m.code, status: m.status }, 'request refused');
  else req.log.info({ code: m.code, status: m.status }, 'request refused');
  if (m.headers) reply.headers(m.headers);
  reply.status(m.status).send({ code: m.code, message: m.message, ...m.extra, ...fields?.(m), requestId: req.id });
}

/**
 * The methods the routes take, by path pattern, for a 405's Allow: a path that exists under other methods was not
 * "not found" (RFC 9110 15.5.6). Catch-all patterns (the CORS preflight's `*`) are left out: they would make every
 * unknown path a 405.
 */
class AllowedMethods {
  /** By route pattern: the path's expression and the methods registered under it. */
  private readonly routes = new Map<string, { pattern: RegExp; methods: Set<string> }>();

  add(url: string, method: string | string[]): void {
    if (url.includes('*')) return;
    let route = this.routes.get(url);
    if (!route) {
      const source = url.replace(/\/$/, '').split('/').map((seg) => (seg.startsWith(':') ? '[^/]+' : seg.replace(/[.*+?^${}()|[\]\\]/g, '\\$&'))).join('/');
      route = { pattern: new RegExp(`^${source}/?$`), methods: new Set() };
      this.routes.set(url, route);
    }
    for (const m of Array.isArray(method) ? method : [method]) route.methods.add(m.toUpperCase());
  }

  /** The methods a path takes, as an Allow header lists them; empty when no route has the path. */
  of(path: string): string[] {
    const all = new Set<string>();
    for (const r of this.routes.values()) if (r.pattern.test(path)) for (const m of r.methods) all.add(m);
    if (all.has('GET')) all.add('HEAD');
    return [...all].sort();
  }
}

export default fp(
  async (app) => {
    app.setErrorHandler((err, req, reply) => sendError(err, req, reply));
    const allowed = new AllowedMethods();
    app.addHook('onRoute', (r) => allowed.add(r.url, r.method));
    app.setNotFoundHandler((req, reply) => {
      const path = requestPath(req.url);
      const methods = allowed.of(path);
      if (methods.length > 0 && !methods.includes(req.method)) {
        void reply.status(405).header('allow', methods.join(', '));
        return reply.send({ code: 'METHOD_NOT_ALLOWED', message: `${req.method} is not allowed here: ${methods.join(', ')}`, requestId: req.id });
      }
      reply.status(404).send({ code: 'NOT_FOUND', message: `No route ${req.method} ${path.slice(0, 200)}`, requestId: req.id });
    });
  },
  { name: 'error-handler' },
);

/** Where an onboarding stopped, and its session when one was started (none is named before Incode created one). */
function stepExtra(err: { step: string; interviewId: string | null | undefined }): Record<string, unknown> {
  return err.interviewId ? { step: err.step, interviewId: err.interviewId } : { step: err.step };
}
