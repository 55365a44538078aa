// Typed Incode Omni API client: one undici keep-alive Pool, one method per Incode operation.
import { setTimeout as delay } from 'node:timers/promises';
import { STOP_WIND_DOWN_MS, settledWithin } from '../util/settle';
import { Pool, errors as undiciErrors, type Dispatcher } from '../util/undici';
import type { Config } from '../config';
import { CircuitBreaker, type CircuitState } from './circuit-breaker';
import { IncodeError, circuitOpenError, incodeErrorFromResponse, incodeErrorFromTransport } from './errors';
import type {
  AddFaceResponse,
  AddIdResponse,
  ExecutiveLoginResponse,
  FinishStatusResponse,
  OcrDataResponse,
  OnboardingStatusResponse,
  OnboardingUrlResponse,
  PostProcessFinishedResponse,
  ProcessFaceResponse,
  ProcessIdResponse,
  ScoreResponse,
  StartRequest,
  StartResponse,
  DeleteInterviewResponse,
} from './types';

export const OPERATION_GROUPS = ['start', 'capture', 'read', 'auth', 'delete'] as const;
export type OperationGroup = (typeof OPERATION_GROUPS)[number];

export interface IncodeClientOptions {
  /** e.g. https://demo-api.incodesmile.com (no trailing /0). */
  baseUrl: string;
  apiKey: string;
  timeoutMs: number;
  /** The same for the capture and processing calls (INCODE_CAPTURE_TIMEOUT_MS); timeoutMs when unset. */
  captureTimeoutMs?: number;
  connectTimeoutMs: number;
  connections: number;
  maxRetries: number;
  /** Calls in flight at once (INCODE_MAX_CONCURRENCY): the pool never opens more connections (one call each),
   *  and undici queues the rest. Only the pool's size when unset. */
  maxConcurrency?: number;
  circuit?: { failureThreshold: number; resetMs: number };
  /** Tests inject a dispatcher (e.g. an Agent); it brings its own limits (maxConcurrency sizes only our Pool). */
  dispatcher?: Dispatcher;
  /** Base delay of the retry backoff. */
  retryBaseMs?: number;
  /** The longest answer read (32 MiB by default); a longer one fails the call as INCODE_BAD_RESPONSE. */
  maxResponseBytes?: number;
  /** Every call that got an answer or failed on its way (outcome: ok, an HTTP status or class, timeout, ...), timed. */
  onCall?: (operation: string, outcome: string, seconds: number) => void;
  /** A call refused at once by its open circuit: never sent, so not a latency. */
  onCircuitRejection?: (operation: string) => void;
  onCircuitChange?: (group: OperationGroup, state: CircuitState) => void;
}

/** The client's settings from the configuration (the app and the CLI add their own hooks). */
export function incodeClientOptions(config: Config, baseUrl: string): IncodeClientOptions {
  return {
    baseUrl,
    apiKey: config.incode.apiKey,
    timeoutMs: config.incode.timeoutMs,
    captureTimeoutMs: config.incode.captureTimeoutMs,
    connectTimeoutMs: config.incode.connectTimeoutMs,
    connections: config.incode.poolConnections,
    maxRetries: config.incode.maxRetries,
    maxConcurrency: config.incode.maxConcurrency,
    circuit: config.circuit,
  };
}

/** Per-call context: the request id travels to Incode for support tickets. */
export interface CallContext {
  requestId?: string;
  signal?: AbortSignal;
  /**
   * Epoch ms after which the call is not sent any more: one still waiting for a connection then is dropped unsent
   * (INCODE_TIMEOUT, certainly not done). No timer: it is looked at when the call's turn comes.
   */
  sendBefore?: number;
  /**
   * Whether whoever asked for the call has gone (its client closed the connection): a call still waiting for a
   * connection then is dropped unsent, as past sendBefore (no one would get its answer, and a start is billed). Asked
   * when its turn comes, never after it was sent.
   */
  callerGone?: () => boolean;
}

interface CallSpec {
  operation: string;
  group: OperationGroup;
  method: 'GET' | 'POST' | 'PUT' | 'DELETE';
  path: string;
  query?: Record<string, string | boolean | undefined>;
  body?: unknown;
  token?: string;
  /** Safe to repeat after an ambiguous failure (the call has no side effect Incode would duplicate). */
  idempotent: boolean;
  withApiKey?: boolean;
  /**
   * What a 2xx body must hold to be the operation's answer (else INCODE_BAD_RESPONSE), checked before the call is
   * counted: an answer the broker cannot use is a `bad_response`, not an `ok`.
   */
  expects?: { valid: (body: unknown) => boolean; missing: string };
}

/** A JSON object (not an array, not null). */
const isPlainObject = (v: unknown): v is Record<string, unknown> => typeof v === 'object' && v !== null && !Array.isArray(v);

/** Resolves after ms; rejects at once when the signal aborts (a job's deadline, a shutdown), so no one waits out a backoff. */
const sleep = (ms: number, signal?: AbortSignal) => delay(ms, undefined, { signal });

/** Statuses a metric names one by one; the rest by class, since any upstream or proxy can answer any three digits. */
const NAMED_STATUSES = new Set([400, 401, 403, 404, 405, 406, 408, 409, 413, 422, 429, 500, 502, 503, 504]);
/** A call's HTTP answer as the `outcome` of incode_call_duration_seconds: named statuses by name, others by class. */
export const httpOutcome = (status: number): string =>
  NAMED_STATUSES.has(status) ? `http_${status}` : status >= 300 && status < 600 ? `http_${Math.floor(status / 100)}xx` : 'http_other';

interface Exchanged {
  statusCode: number;
  headers: Record<string, string | string[] | undefined>;
  text: string;
}

/** `neverSent`: stopped before the request left (by the caller's signal, or past its send deadline). */
type ExchangeError = Error & { duringBody?: boolean; neverSent?: boolean };

/** The abort of a request, and whether none of it was written. */
const abortError = (neverSent: boolean): ExchangeError => Object.assign(new undiciErrors.RequestAbortedError(), { neverSent });

/** Whether a call may no longer be sent: its send deadline (CallContext.sendBefore) passed, or its caller left. */
const tooLate = (sendBefore: number | undefined, callerGone?: () => boolean) => (sendBefore !== undefined && Date.now() > sendBefore) || callerGone?.() === true;

/** An answer longer than the client takes: cut off rather than buffered whole. */
class ResponseTooLargeError extends Error {
  constructor(readonly limit: number) {
    super(`answer longer than ${limit} bytes`);
  }
}

/** The longest answer read by default: Incode's largest (images, OCR) are a few MB of JSON. */
const MAX_RESPONSE_BYTES = 32 * 1024 * 1024;

/**
 * One request through the dispatcher, its body collected as text, up to `maxBytes`. A dispatch handler instead of
 * request(): Incode's answers are JSON read whole, so the stream request() wraps every body in (and its promise
 * chain) is pure cost, measured at about 4 % of the broker's instructions per new session.
 */
function exchange(
  dispatcher: Dispatcher,
  opts: Dispatcher.DispatchOptions,
  signal: AbortSignal | undefined,
  maxBytes: number,
  sendBefore?: number,
  callerGone?: () => boolean,
  deadlineMs?: number,
): Promise<Exchanged> {
  return new Promise((resolve, reject) => {
    // Already stopped, past its send deadline or its caller gone: not dispatched at all.
    if (signal?.aborted || tooLate(sendBefore, callerGone)) return reject(abortError(true));
    let controller: Dispatcher.DispatchController | null = null;
    let abortReason: ExchangeError | null = null;
    // The whole exchange's bound once sent: undici's header and body timeouts each bound one wait for a byte, so an
    // answer trickled a byte at a time would otherwise hold the call (a start, a capture) for as long as it trickles.
    let deadline: NodeJS.Timeout | undefined;
    let started = false;
    const onAbort = () => {
      // No controller yet: the pool has not started the request, so none of it was written.
      abortReason = abortError(controller === null);
      // Still queued in the pool: the caller is answered now, and the request is dropped as soon as its turn comes.
      if (controller === null) reject(abortReason);
      else controller.abort(abortReason);
    };
    signal?.addEventListener('abort', onAbort, { once: true });
    let statusCode = 0;
    let headers: Exchanged['headers'] = {};
    const chunks: Buffer[] = [];
    let size = 0;
    const settled = () => {
      signal?.removeEventListener('abort', onAbort);
      if (deadline) clearTimeout(deadline);
    };
    dispatcher.dispatch(opts, {
      onRequestStart(c) {
        controller = c;
        // Its turn came too late, or for no one (undici then closes the connection it was given: only under overload).
        if (!abortReason && tooLate(sendBefore, callerGone)) abortReason = abortError(true);
        if (abortReason) return c.abort(abortReason);
        if (deadlineMs !== undefined)
          deadline = setTimeout(() => c.abort(started ? new undiciErrors.BodyTimeoutError() : new undiciErrors.HeadersTimeoutError()), deadlineMs);
      },
      onResponseStart(_c, status, h) {
        statusCode = status;
        headers = h;
        started = true;
      },
      onResponseData(c, chunk) {
        size += chunk.length;
        if (size > maxBytes) return c.abort(new ResponseTooLargeError(maxBytes));
        chunks.push(chunk);
      },
      onResponseEnd() {
        settled();
        resolve({ statusCode, headers, text: chunks.length === 1 ? chunks[0].toString('utf8') : Buffer.concat(chunks).toString('utf8') });
      },
      onResponseError(_c, err) {
        settled();
        reject(Object.assign(err, { duringBody: started, neverSent: abortReason?.neverSent === true }));
      },
    });
  });
}

/** The longest wait before a retry; a Retry-After beyond it is the caller's to honour. */
const MAX_RETRY_WAIT_MS = 5_000;

export class IncodeClient {
  private readonly dispatcher: Dispatcher;
  private readonly ownsDispatcher: boolean;
  private readonly origin: string;
  private readonly basePath: string;
  private readonly circuits = new Map<OperationGroup, CircuitBreaker>();

  constructor(private readonly opts: IncodeClientOptions) {
    const u = new URL(opts.baseUrl);
    this.origin = u.origin;
    this.basePath = u.pathname.replace(/\/+$/, '');
    this.ownsDispatcher = !opts.dispatcher;
    this.dispatcher =
      opts.dispatcher ??
      new Pool(this.origin, {
        connections: Math.min(opts.connections, opts.maxConcurrency ?? Infinity),
        pipelining: 1,
        keepAliveTimeout: 30_000,
        headersTimeout: opts.timeoutMs,
        bodyTimeout: opts.timeoutMs,
        connect: { timeout: opts.connectTimeoutMs },
      });
  }

  circuitState(group: OperationGroup): CircuitState {
    return this.circuits.get(group)?.state ?? 'closed';
  }

  /** ms until the group's calls may go again (0: now): asked before work that would be wasted while they cannot. */
  circuitWait(group: OperationGroup): number {
    return this.circuits.get(group)?.retryInMs ?? 0;
  }

  // ---- Incode operations (names follow shared/incode-api.md) ----

  /**
   * POST /omni/start. A new session's is never retried once sent: a retry could open (and bill) a second session. One
   * naming an existing interviewId only issues another token for it (shared doc 2.3), so it is retried like a read.
   */
  start(req: StartRequest, ctx?: CallContext): Promise<StartResponse> {
    const expects = { valid: (r: unknown) => typeof (r as StartResponse)?.token === 'string' && typeof (r as StartResponse).interviewId === 'string', missing: 'token or interviewId' };
    return this.call<StartResponse>({ operation: 'start', group: 'start', method: 'POST', path: '/omni/start', body: req, idempotent: req.interviewId !== undefined, expects }, ctx);
  }

  addFrontId(token: string, base64Image: string, opts: { onlyFront?: boolean } = {}, ctx?: CallContext): Promise<AddIdResponse> {
    return this.call({ operation: 'addFrontId', group: 'capture', method: 'POST', path: '/omni/add/front-id/v2', query: { onlyFront: opts.onlyFront || undefined }, body: { base64Image }, token, idempotent: false }, ctx);
  }

  addBackId(token: string, base64Image: string, opts: { retry?: boolean } = {}, ctx?: CallContext): Promise<AddIdResponse> {
    return this.call({ operation: 'addBackId', group: 'capture', method: 'POST', path: '/omni/add/back-id/v2', query: { retry: opts.retry ?? false }, body: { base64Image }, token, idempotent: false }, ctx);
  }

  processId(token: string, ctx?: CallContext): Promise<ProcessIdResponse> {
    return this.call({ operation: 'processId', group: 'capture', method: 'POST', path: '/omni/process/id', body: {}, token, idempotent: false }, ctx);
  }

  addFace(token: string, base64Image: string, ctx?: CallContext): Promise<AddFaceResponse> {
    return this.call({ operation: 'addFace', group: 'capture', method: 'POST', path: '/omni/add/face/third-party', query: { imageType: 'selfie' }, body: { base64Image }, token, idempotent: false }, ctx);
  }

  processFace(token: string, ctx?: CallContext): Promise<ProcessFaceResponse> {
    return this.call({ operation: 'processFace', group: 'capture', method: 'POST', path: '/omni/process/face', query: { imageType: 'selfie' }, body: {}, token, idempotent: false }, ctx);
  }

  /** token: the session's own token or an executive token (then interviewId names the session). */
  getOnboardingStatus(token: string, interviewId: string, ctx?: CallContext): Promise<OnboardingStatusResponse> {
    return this.call({ operation: 'getOnboardingStatus', group: 'read', method: 'GET', path: '/omni/get/onboarding/status', query: { id: interviewId }, token, idempotent: true }, ctx);
  }

  /** GET /omni/get/postprocess/isfinished: whether the ID's server-side post-processing is done (Incode's samples poll it). */
  isPostProcessFinished(token: string, interviewId: string, ctx?: CallContext): Promise<PostProcessFinishedResponse> {
    return this.call({ operation: 'isPostProcessFinished', group: 'read', method: 'GET', path: '/omni/get/postprocess/isfinished', query: { id: interviewId }, token, idempotent: true }, ctx);
  }

  /**
   * GET /omni/finish-status: every source shows GET (see shared/incode-api.md §4.8). Not idempotent for all its GET: it
   * applies the business rules, recalculates the score and fires the webhook, so it is repeated only when it was
   * certainly not sent; after a timeout its caller (the wait's next poll, a job's next attempt) asks again.
   */
  finishStatus(token: string, ctx?: CallContext): Promise<FinishStatusResponse> {
    return this.call({ operation: 'finishStatus', group: 'read', method: 'GET', path: '/omni/finish-status', token, idempotent: false }, ctx);
  }

  /** The scores: an object with Incode's `overall` block, which the decision is made from (else INCODE_BAD_RESPONSE, retried). */
  getScore(token: string, interviewId: string, ctx?: CallContext): Promise<ScoreResponse> {
    const expects = { valid: (r: unknown) => isPlainObject(r) && isPlainObject(r.overall), missing: 'the overall score' };
    return this.call({ operation: 'getScore', group: 'read', method: 'GET', path: '/omni/get/score', query: { id: interviewId }, token, idempotent: true, expects }, ctx);
  }

  /** The OCR data: an object, empty when nothing was read (an empty or non-object answer is INCODE_BAD_RESPONSE, retried). */
  getOcrData(token: string, interviewId: string, ctx?: CallContext): Promise<OcrDataResponse> {
    const expects = { valid: isPlainObject, missing: 'an OCR object' };
    return this.call({ operation: 'getOcrData', group: 'read', method: 'GET', path: '/omni/get/ocr-data', query: { id: interviewId }, token, idempotent: true, expects }, ctx);
  }

  getOnboardingUrl(token: string, clientId: string, ctx?: CallContext): Promise<OnboardingUrlResponse> {
    return this.call({ operation: 'getOnboardingUrl', group: 'read', method: 'GET', path: '/omni/onboarding-url', query: { clientId }, token, idempotent: true }, ctx);
  }

  /**
   * DELETE /omni/interview: deletes the session and its data at Incode (shared doc 3). keepCustomer=false, meant to
   * remove the customer's identity record too, is what an Incode sample's deleteSession passes; the doc's endpoint table
   * does not list it (its purge-webhook sample uses DELETE /omni/interviews with deletePiiDataOnly instead), so an
   * account that ignores it still deletes the session. With an executive token. On a circuit of its own ('delete'): a
   * retention sweep's burst of failing deletions must not open the one live reads use.
   */
  deleteInterview(token: string, interviewId: string, ctx?: CallContext): Promise<DeleteInterviewResponse> {
    return this.call({ operation: 'deleteInterview', group: 'delete', method: 'DELETE', path: '/omni/interview', query: { interviewId, keepCustomer: false }, token, idempotent: true }, ctx);
  }

  /** POST /executive/log-in: an executive token (24 h) that reads any session of this client. */
  executiveLogin(email: string, password: string, ctx?: CallContext): Promise<ExecutiveLoginResponse> {
    const expects = { valid: (r: unknown) => typeof (r as ExecutiveLoginResponse)?.token === 'string', missing: 'token' };
    return this.call<ExecutiveLoginResponse>({ operation: 'executiveLogin', group: 'auth', method: 'POST', path: '/executive/log-in', body: { email, password }, idempotent: true, expects }, ctx);
  }

  /**
   * Closes the pool. Calls still out get `windDownMs` to finish, then are dropped: the pool's close() alone waits for
   * every one (a start whose request the shutdown already cut: up to twice INCODE_TIMEOUT_MS), past the shutdown's hard
   * limit, which then exits 1 with the store never closed.
   */
  async close(windDownMs = STOP_WIND_DOWN_MS): Promise<void> {
    if (!this.ownsDispatcher) return;
    if (!(await settledWithin([this.dispatcher.close()], windDownMs))) await this.dispatcher.destroy();
  }

  // ---- transport ----

  private circuit(group: OperationGroup): CircuitBreaker | undefined {
    if (!this.opts.circuit) return undefined;
    let c = this.circuits.get(group);
    if (!c) {
      c = new CircuitBreaker({ ...this.opts.circuit, onStateChange: (s) => this.opts.onCircuitChange?.(group, s) });
      this.circuits.set(group, c);
    }
    return c;
  }

  private async call<T>(spec: CallSpec, ctx: CallContext = {}): Promise<T> {
    const maxAttempts = 1 + this.opts.maxRetries;
    const base = this.opts.retryBaseMs ?? 100;
    for (let attempt = 1; ; attempt++) {
      try {
        return await this.once<T>(spec, ctx);
      } catch (err) {
        const e = err as IncodeError;
        // A 429 was turned away before Incode did anything, so even a start can go again. Never sooner than Incode's
        // Retry-After, and not at all past a long one, which the caller is told instead (503 with it; a job waits it out).
        const retryAfterMs = e.details.retryAfterMs ?? 0;
        const rateLimited = e.code === 'INCODE_RATE_LIMITED';
        const canRetry = e.retryable && e.code !== 'INCODE_CIRCUIT_OPEN' && retryAfterMs <= MAX_RETRY_WAIT_MS && (spec.idempotent || e.details.notSent === true || rateLimited);
        if (!canRetry || attempt >= maxAttempts || ctx.signal?.aborted || tooLate(ctx.sendBefore, ctx.callerGone)) throw e;
        // Full jitter keeps many brokers from retrying in lockstep.
        const backoff = base * 2 ** (attempt - 1) * (0.5 + Math.random());
        // Stopped while waiting: the caller gets the answer it would have had, not an abort of the wait.
        await sleep(Math.min(Math.max(retryAfterMs, backoff), MAX_RETRY_WAIT_MS), ctx.signal).catch(() => {
          throw e;
        });
      }
    }
  }

  private async once<T>(spec: CallSpec, ctx: CallContext): Promise<T> {
    // The circuit is asked first: while it is open the caller gets its answer at once, not after the line.
    const circuit = this.circuit(spec.group);
    const { wait, probe } = circuit?.acquire() ?? { wait: 0, probe: 0 };
    if (wait > 0) {
      this.opts.onCircuitRejection?.(spec.operation);
      throw circuitOpenError(spec.operation, wait);
    }
    return this.send<T>(spec, ctx, circuit, probe);
  }

  private async send<T>(spec: CallSpec, ctx: CallContext, circuit: CircuitBreaker | undefined, probe: number): Promise<T> {
    const started = process.hrtime.bigint();
    const seconds = () => Number(process.hrtime.bigint() - started) / 1e9;
    const headers: Record<string, string> = { 'api-version': '1.0', accept: 'application/json' };
    if (spec.withApiKey !== false) headers['x-api-key'] = this.opts.apiKey;
    if (spec.token) headers['x-incode-hardware-id'] = spec.token;
    if (ctx.requestId) headers['x-request-id'] = ctx.requestId;
    let body: string | undefined;
    if (spec.body !== undefined) {
      body = JSON.stringify(spec.body);
      headers['content-type'] = 'application/json';
    }
    let path = this.basePath + spec.path;
    if (spec.query) {
      const qs = new URLSearchParams();
      for (const [k, v] of Object.entries(spec.query)) if (v !== undefined) qs.set(k, String(v));
      const s = qs.toString();
      if (s) path += `?${s}`;
    }

    let res: Exchanged;
    try {
      // Captures get longer: Incode analyses the image before it answers, and one that times out leaves a started
      // (billed) session without it, as captures are never retried.
      const timeout = spec.group === 'capture' ? (this.opts.captureTimeoutMs ?? this.opts.timeoutMs) : this.opts.timeoutMs;
      const request = { origin: this.origin, method: spec.method, path, headers, body, headersTimeout: timeout, bodyTimeout: timeout };
      // Headers within `timeout`, then the body within `timeout` more, as a whole (the Idempotency-Key claim's
      // deadlines count on this bound).
      res = await exchange(this.dispatcher, request, ctx.signal, this.opts.maxResponseBytes ?? MAX_RESPONSE_BYTES, ctx.sendBefore, ctx.callerGone, 2 * timeout);
    } catch (err) {
      if (err instanceof ResponseTooLargeError) {
        circuit?.failure(probe);
        this.opts.onCall?.(spec.operation, 'bad_response', seconds());
        throw new IncodeError('INCODE_BAD_RESPONSE', spec.operation, `Incode ${spec.operation} answered more than ${err.limit} bytes`);
      }
      const e = incodeErrorFromTransport(spec.operation, err);
      const neverSent = (err as ExchangeError).neverSent === true;
      if (ctx.signal?.aborted || neverSent) {
        // Stopped by this service (a job's lease deadline, a shutdown, a call's send deadline), often while still
        // queued for a connection: neither a timeout of Incode's nor a failure that should open the circuit for everyone else.
        circuit?.abandoned(probe);
        this.opts.onCall?.(spec.operation, 'aborted', seconds());
        // Never sent: Incode certainly did nothing (a start's Idempotency-Key can be freed).
        if (neverSent) throw new IncodeError('INCODE_TIMEOUT', spec.operation, `Incode ${spec.operation} was stopped before it was sent (its deadline passed while it waited for a connection, its caller left, or this service stopped it)`, { notSent: true });
        throw e;
      }
      circuit?.failure(probe);
      // Once the answer has begun, only a stalled body can fail it.
      const outcome = (err as ExchangeError).duringBody || e.code === 'INCODE_TIMEOUT' ? 'timeout' : 'connection_error';
      this.opts.onCall?.(spec.operation, outcome, seconds());
      throw e;
    }
    const { text } = res;
    let parsed: unknown = undefined;
    if (text) {
      try {
        parsed = JSON.parse(text);
      } catch {
        parsed = undefined;
      }
    }
    const status = res.statusCode;
    if (status >= 200 && status < 300) {
      circuit?.success();
      if (text && parsed === undefined) {
        this.opts.onCall?.(spec.operation, 'bad_response', seconds());
        throw new IncodeError('INCODE_BAD_RESPONSE', spec.operation, `Incode ${spec.operation} answered a body that is not JSON`, { httpStatus: status });
      }
      if (spec.expects && !spec.expects.valid(parsed)) {
        this.opts.onCall?.(spec.operation, 'bad_response', seconds());
        throw new IncodeError('INCODE_BAD_RESPONSE', spec.operation, `Incode ${spec.operation} answered without ${spec.expects.missing}`, { httpStatus: status });
      }
      this.opts.onCall?.(spec.operation, 'ok', seconds());
      return (parsed ?? {}) as T;
    }
    const e = incodeErrorFromResponse(spec.operation, status, parsed, res.headers);
    // A refused request proves Incode is up: only 5xx, 429 and timeouts count against the circuit, but not a capture's
    // 5xx naming a capture code (a processing error, a selfie code): Incode answering about the capture.
    if (e.isClientError) circuit?.success();
    else if (spec.group === 'capture' && e.isCaptureAnswer) circuit?.answered(probe);
    else circuit?.failure(probe);
    this.opts.onCall?.(spec.operation, httpOutcome(status), seconds());
    throw e;
  }
}
