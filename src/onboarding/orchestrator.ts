// Server-to-server onboarding (shared/incode-api.md §8): captures in the guide's order, then wait, mark complete, results.
import type { Config } from '../config';
import {
  ID_MESSAGES,
  ID_REASONS,
  PROCESSING_ERROR_CODE,
  SELFIE_CHECK_MESSAGES,
  SELFIE_REASONS,
  checkFaceMatch,
  checkIdCapture,
  checkSelfie,
  isOneSided,
  type CheckRejected,
  isCaptureCode,
  type CheckResult,
  type FaceMatchResult,
} from '../incode/capture-checks';
import type { CallContext, IncodeClient } from '../incode/client';
import { circuitOpenError, IncodeError } from '../incode/errors';
import type { AddIdResponse, StartRequest } from '../incode/types';
import type { ResultsPipeline } from '../results/pipeline';
import { isKnownStatus, isTerminal, PROGRESS_RANK, statusRank } from '../results/status';
import type { ClaimedKey, Decision, ResultsStatus, StepRecord, Store } from '../store/types';
import { isDatabaseUnavailable } from '../store/unavailable';
import { loggedError } from '../logging';

export type OnboardingStep = 'start' | 'front' | 'back' | 'process-id' | 'selfie' | 'face-match' | 'wait' | 'finish' | 'results';
export type CaptureStep = 'front' | 'back' | 'selfie';

export interface CaptureInput {
  /** base64 (no data: prefix) of each image. */
  front: string;
  back?: string;
  selfie: string;
  countryCode?: string;
  configurationId?: string;
  externalCustomerId?: string;
  language?: string;
  /** Declared one-sided by the caller: the front goes up with onlyFront=true and no back is needed. */
  oneSided?: boolean;
  /** Travels to Incode as x-request-id. */
  requestId?: string;
  signal?: AbortSignal;
  /**
   * The Idempotency-Key claimed for this onboarding: completed by the session's own write, as POST /session's is; its
   * sendBefore bounds when the start may still be sent, as POST /session's does.
   */
  idempotency?: ClaimedKey;
}

export interface CapturesAccepted {
  ok: true;
  interviewId: string;
  oneSided: boolean;
  typeOfId?: string;
  documentCountry?: string;
  faceMatch: FaceMatchResult;
}

export interface CaptureRejection {
  ok: false;
  interviewId: string;
  step: CaptureStep;
  reason: string;
  message: string;
  incodeCode?: number;
}

export type CapturesOutcome = CapturesAccepted | CaptureRejection;

export interface FinishOptions {
  /** Overall bound of wait + mark complete + results (default: the orchestrator's waitTimeoutMs). */
  timeoutMs?: number;
  signal?: AbortSignal;
  /** The request that started the onboarding: its polls and finish-status travel to Incode under the same id. */
  requestId?: string;
}

export interface FinishResult {
  interviewId: string;
  onboardingStatus: string;
  resultsStatus: ResultsStatus;
  decision: Decision | null;
  scores: unknown;
  ocr: unknown;
}

/** A step that could not be done (Incode failure, timeout...): says where and why, never carries PII. */
export class OnboardingError extends Error {
  override readonly name = 'OnboardingError';
  constructor(
    readonly step: OnboardingStep,
    readonly code: string,
    message: string,
    readonly interviewId: string | null,
    /** The IncodeError behind it, so an HTTP answer maps it like any other Incode failure (or the database's). */
    cause?: unknown,
  ) {
    super(message, cause === undefined ? undefined : { cause });
  }

  /** The Incode call that failed, when one did (read from the cause, so the two cannot disagree). */
  get incode(): { operation: string; httpStatus?: number; incodeStatus?: number } | undefined {
    const c = this.cause;
    return c instanceof IncodeError ? { operation: c.operation, httpStatus: c.details.httpStatus, incodeStatus: c.details.incodeStatus } : undefined;
  }

  /** Incode certainly started nothing: no session exists, and the start behind it certainly did nothing at Incode. */
  get certainlyNotDone(): boolean {
    return this.interviewId === null && this.cause instanceof IncodeError && this.cause.certainlyNotDone;
  }
}

/** Progress as it happens (the CLI prints it); the same record goes to the store. */
export interface StepEvent extends StepRecord {
  interviewId: string | null;
  /** Short non-PII detail for display, e.g. the document type. */
  detail?: string;
}

interface Log {
  info(obj: object, msg?: string): void;
  warn(obj: object, msg?: string): void;
  error(obj: object, msg?: string): void;
}

export interface OrchestratorDeps {
  incode: IncodeClient;
  store: Store;
  pipeline: ResultsPipeline;
  config: Config;
  log: Log;
  onStep?: (e: StepEvent) => void;
  /** Default bound of finish(); processing on Incode takes seconds, a human never waits on this path. */
  waitTimeoutMs?: number;
  now?: () => number;
}

const DEFAULT_WAIT_TIMEOUT_MS = 10 * 60_000;
/**
 * How often the store is re-read for a webhook-driven change between two Incode polls. Each read decrypts the
 * session: every onboarding waiting in the background costs that many reads a second, so a quarter second (the
 * webhook is seen at most that late) rather than a tenth.
 */
const WATCH_MS = 250;
/** Statuses after which there is nothing left to wait for in results. */
const RESULTS_SETTLED: readonly ResultsStatus[] = ['ready', 'failed', 'unprocessable', 'erased'];
/** Incode does not know the session or its token: polling again cannot help, so the session is given up. */
const SESSION_GONE_ERRORS = new Set(['INCODE_UNAUTHORIZED', 'INCODE_NOT_FOUND']);

function sleep(ms: number, signal?: AbortSignal): Promise<void> {
  return new Promise((resolve) => {
    if (signal?.aborted) return resolve();
    const t = setTimeout(done, ms);
    function done() {
      clearTimeout(t);
      signal?.removeEventListener('abort', done);
      resolve();
    }
    signal?.addEventListener('abort', done, { once: true });
  });
}

/** Incode answering about the capture (IncodeError.isCaptureAnswer): a capture to repeat, per the guide. */
function isCaptureAnswer(err: unknown): err is IncodeError {
  return err instanceof IncodeError && err.isCaptureAnswer;
}

/** The ends of an onboarding that someone asked for: its session erased, or the run stopped (a caller, a shutdown). */
const ASKED_STOPS: ReadonlySet<string> = new Set(['SESSION_ERASED', 'ABORTED']);

/** Whether an onboarding's error code is a stop someone asked for, no failure of the service's. */
export const askedStop = (code: unknown): boolean => typeof code === 'string' && ASKED_STOPS.has(code);

/** Incode's "Processing error" (6000, seen under a 4xx and a 500). */
function isProcessingError(err: unknown): err is IncodeError {
  return isCaptureAnswer(err) && err.incodeCode === PROCESSING_ERROR_CODE;
}

function processingRejection(reason: string, messages: Readonly<Record<string, string>>, err?: IncodeError): CheckRejected {
  return { ok: false, reason, message: messages[reason], ...(err?.incodeCode !== undefined ? { incodeCode: err.incodeCode } : {}) };
}

/**
 * The ID endpoints answer 200 even for bad images; an error answer about the image means it was refused, to take
 * again: a capture code such as 1003 or 4019 under any status but an auth refusal (which status each comes with is
 * unknown), or a bare 400 or 422. Not another bare 4xx: a 405, 406 or 413 says the call itself is wrong (a defect, or
 * Incode's API changed), which a new photo cannot mend.
 */
function isIdImageRefusal(err: unknown): err is IncodeError {
  if (!isCaptureAnswer(err)) return false;
  const http = err.details.httpStatus;
  return isCaptureCode(err.incodeCode) || http === 400 || http === 422;
}

/** A log whose lines all carry the request id (reqId, as Fastify's request logs name it). */
function withReqId(log: Log, reqId: string): Log {
  return {
    info: (o, m) => log.info({ reqId, ...o }, m),
    warn: (o, m) => log.warn({ reqId, ...o }, m),
    error: (o, m) => log.error({ reqId, ...o }, m),
  };
}

/** Whether handOff() queues a status check: nothing else comes back to an onboarding only this service completes. */
export function handOffQueuesCheck(config: Config): boolean {
  return config.results.mode === 'webhook' && config.results.markComplete;
}

export class Orchestrator {
  private readonly now: () => number;
  private scoped = false;

  constructor(private readonly d: OrchestratorDeps) {
    this.now = d.now ?? Date.now;
  }

  /** This orchestrator logging with a request's id, so every line of one onboarding leads back to its request. */
  private forRequest(reqId: string | undefined): Orchestrator | null {
    if (!reqId || this.scoped) return null;
    const o = new Orchestrator({ ...this.d, log: withReqId(this.d.log, reqId) });
    o.scoped = true;
    return o;
  }

  /**
   * Hands an onboarding that no finish() watches any more (left at shutdown, past ONBOARDING_MAX_BACKGROUND, or after a
   * wait that gave up with its session still pending) to the rest of the service. Webhooks and polling finish it, but
   * without polling (RESULTS_MODE=webhook), when only this service marks it complete (MARK_COMPLETE), nothing else
   * would come back to it: its last webhook may have been checked before its captures were recorded, too early to mark
   * it complete. A status check is queued then, which comes back by itself while processing goes on (verify). Never throws.
   */
  async handOff(interviewId: string, log: Log = this.d.log): Promise<void> {
    if (!handOffQueuesCheck(this.d.config)) return;
    try {
      if ((await this.d.store.getSession(interviewId))?.resultsStatus === 'pending') await this.d.pipeline.refresh(interviewId);
    } catch (err) {
      log.error({ interviewId, err: loggedError(err) }, 'status check of an unwatched onboarding could not be queued');
    }
  }

  /** Runs start → front → back → process-id → selfie → face-match; stops at the first capture to repeat. */
  async runCaptures(input: CaptureInput): Promise<CapturesOutcome> {
    const scoped = this.forRequest(input.requestId);
    if (scoped) return scoped.runCaptures(input);
    const { config, pipeline } = this.d;
    const ctx: CallContext = { requestId: input.requestId, signal: input.signal };
    const startReq: StartRequest = {
      countryCode: input.countryCode ?? 'ALL',
      configurationId: input.configurationId ?? config.incode.configurationId,
      externalCustomerId: input.externalCustomerId,
      language: input.language,
    };

    // Stopped by the caller (a shutdown past its grace): said as such, not as the Incode timeout the stop looks like.
    // With the failure the stop cut short as its cause: whether that call was certainly never sent still counts.
    const stopped = (step: OnboardingStep, id: string | null, cause: unknown) => new OnboardingError(step, 'ABORTED', 'Stopped before the captures were done', id, cause);
    // Incode's capture calls paused by their circuit (its image endpoints failing while start still works): a session
    // started now would be billed and then abandoned at its first capture. Refused before it, like the capture would be.
    const paused = this.d.incode.circuitWait('capture');
    if (paused > 0) throw await this.fail(null, 'front', circuitOpenError('addFrontId', paused));
    let started;
    try {
      // The caller's stop holds the start back only while it waits to be sent (and keeps it from being retried): one cut
      // off once sent may have created (and billed) a session no one would know the id of. A stop after that is seen
      // at the first capture, with the id.
      started = await this.d.incode.start(startReq, { ...ctx, signal: undefined, callerGone: () => input.signal?.aborted === true, sendBefore: input.idempotency?.sendBefore });
    } catch (err) {
      // Stopped before it left: said as a stop, with the unsent call as its cause (certainly not done, so an
      // Idempotency-Key is freed).
      throw await this.fail(null, 'start', input.signal?.aborted ? stopped('start', null, err) : err);
    }
    const { interviewId: id, token } = started;
    // From here on a (billed) session exists: whatever fails, the caller and the logs get its interviewId, and the
    // session is marked failed where the store allows, instead of staying pending and polled for days.
    const progress: { step: OnboardingStep } = { step: 'start' };
    try {
      // Stored before any capture: a webhook or the poller can then follow this session like any other. With its start
      // step in the same write: a session stored without one looks like an app's, which polling never calls interrupted.
      const startStep: StepRecord = { step: 'start', outcome: 'ok', code: null, message: null, at: this.now() };
      await pipeline.trackSession({ interviewId: id, token, externalCustomerId: input.externalCustomerId, configurationId: startReq.configurationId, idempotency: input.idempotency, firstStep: startStep });
      this.emit({ ...startStep, interviewId: id, detail: startReq.countryCode });
      return await this.captureSteps(id, token, input, ctx, progress);
    } catch (err) {
      // Every step's failure ends here (the steps rethrow what is not a capture to repeat): recorded at the step reached.
      if (err instanceof OnboardingError) throw err;
      throw await this.fail(id, progress.step, input.signal?.aborted ? stopped(progress.step, id, err) : err);
    }
  }

  private async captureSteps(id: string, token: string, input: CaptureInput, ctx: CallContext, progress: { step: OnboardingStep }): Promise<CapturesOutcome> {
    progress.step = 'front';

    // front
    const declared = input.oneSided === true;
    const frontSide = await this.idSide(id, 'front', () => this.d.incode.addFrontId(token, input.front, { onlyFront: declared }, ctx));
    if (!frontSide.ok) return frontSide;
    const front = frontSide.res;
    const oneSided = declared || isOneSided(front);
    const typeOfId = typeof front.typeOfId === 'string' ? front.typeOfId : undefined;
    const documentCountry = typeof front.countryCode === 'string' ? front.countryCode : undefined;
    await this.captured(id, 'front', 'ok', { detail: [typeOfId, documentCountry].filter(Boolean).join(' ') || undefined });

    // back: skipped for one-sided documents even when one was sent
    progress.step = 'back';
    if (oneSided) {
      await this.captured(id, 'back', 'skipped', { code: declared ? 'ONE_SIDED_DECLARED' : 'ONE_SIDED_DOCUMENT' });
    } else if (!input.back) {
      return this.reject(id, 'back', { ok: false, reason: ID_REASONS.BACK_REQUIRED, message: ID_MESSAGES[ID_REASONS.BACK_REQUIRED] });
    } else {
      const back = await this.idSide(id, 'back', () => this.d.incode.addBackId(token, input.back!, {}, ctx));
      if (!back.ok) return back;
      await this.captured(id, 'back', 'ok');
    }

    progress.step = 'process-id';
    // process-id right after the ID images: it runs asynchronously on Incode while the selfie goes up. Incode's
    // "Processing error" (6000), or success false, means the document step must be done again (shared doc 4.4):
    // a capture to repeat, not an outage.
    let processed: Awaited<ReturnType<IncodeClient['processId']>>;
    try {
      processed = await this.d.incode.processId(token, ctx);
    } catch (err) {
      if (isProcessingError(err)) return this.reject(id, 'front', processingRejection(ID_REASONS.PROCESSING_FAILED, ID_MESSAGES, err));
      throw err;
    }
    if (processed && processed.success === false) return this.reject(id, 'front', processingRejection(ID_REASONS.PROCESSING_FAILED, ID_MESSAGES));
    await this.captured(id, 'process-id', 'ok');

    // selfie
    progress.step = 'selfie';
    let selfieCheck: CheckResult;
    try {
      selfieCheck = checkSelfie(await this.d.incode.addFace(token, input.selfie, ctx));
    } catch (err) {
      if (!isCaptureAnswer(err)) throw err;
      selfieCheck = checkSelfie(err);
    }
    if (!selfieCheck.ok) return this.reject(id, 'selfie', selfieCheck);
    await this.captured(id, 'selfie', 'ok');

    // face match: a mismatch is reported, not a capture to repeat; the scores then decline the session.
    progress.step = 'face-match';
    let faceMatch: FaceMatchResult;
    try {
      faceMatch = checkFaceMatch(await this.d.incode.processFace(token, ctx));
    } catch (err) {
      // The selfie could not be processed (6000, shared doc 4.6): take it again.
      if (isProcessingError(err)) return this.reject(id, 'selfie', processingRejection(SELFIE_REASONS.PROCESSING_FAILED, SELFIE_CHECK_MESSAGES, err));
      throw err;
    }
    if (faceMatch.ok) await this.captured(id, 'face-match', 'ok', { code: faceMatch.existingUser ? 'EXISTING_USER' : null, detail: faceMatch.existingUser ? 'existing user' : 'match' });
    else await this.captured(id, 'face-match', 'rejected', { code: faceMatch.reason, message: faceMatch.message, detail: faceMatch.existingUser ? 'no match, existing user' : 'no match' });

    return { ok: true, interviewId: id, oneSided, typeOfId, documentCountry, faceMatch };
  }

  /**
   * Waits for the end of processing (its own polling or a webhook, whichever moves the stored session first),
   * marks the session completed when configured, then waits for the results job to store scores and OCR.
   */
  async finish(interviewId: string, opts: FinishOptions = {}): Promise<FinishResult> {
    const scoped = this.forRequest(opts.requestId);
    if (scoped) return scoped.finish(interviewId, opts);
    const { store, pipeline, config } = this.d;
    const signal = opts.signal;
    const ctx: CallContext = { requestId: opts.requestId, signal };
    const deadline = this.now() + (opts.timeoutMs ?? this.d.waitTimeoutMs ?? DEFAULT_WAIT_TIMEOUT_MS);
    const session = await store.getSession(interviewId);
    if (!session?.token) throw new OnboardingError('wait', 'SESSION_NOT_FOUND', 'No stored session with a token for this interviewId', interviewId);
    const token = session.token;
    const pollEvery = Math.max(50, config.results.pollIntervalMs);
    const aborted = (step: OnboardingStep) => new OnboardingError(step, 'ABORTED', 'Stopped before the onboarding finished', interviewId);

    // 1. wait for a final status (marking the session completed when processing is done and MARK_COMPLETE is on)
    let status = session.onboardingStatus;
    let marked = false;
    // finish-status is asked again at each poll while it fails; the steps record each new failure, not every retry.
    const finishFailures = { last: null as string | null };
    let nextPoll = this.now();
    for (;;) {
      if (signal?.aborted) throw aborted('wait');
      const s = await store.getSession(interviewId);
      if (!s || s.resultsStatus === 'erased') throw await this.fail(interviewId, 'wait', new OnboardingError('wait', 'SESSION_ERASED', 'The session was erased while waiting', interviewId));
      status = s.onboardingStatus;
      if (isTerminal(status)) break;
      if (this.now() >= nextPoll) {
        nextPoll = this.now() + pollEvery;
        try {
          const polled = (await this.d.incode.getOnboardingStatus(token, interviewId, ctx)).onboardingStatus;
          if (typeof polled === 'string' && isKnownStatus(polled)) await pipeline.apply(interviewId, polled, 'orchestrator', ctx.requestId);
          // A flow without "mark completed on status" stops at its last module status: ONBOARDING_FINISHED comes only
          // after finish-status, so waiting for it first would never end. Processing is done once the ID's
          // post-processing is (the face match answered before this wait began).
          if (config.results.markComplete && !marked && typeof polled === 'string' && statusRank(polled) === PROGRESS_RANK) {
            if (await pipeline.processingDone(interviewId, token, polled, ctx)) marked = await this.markComplete(interviewId, token, ctx, finishFailures);
          }
          continue;
        } catch (err) {
          if (signal?.aborted) throw aborted('wait');
          if (err instanceof IncodeError && SESSION_GONE_ERRORS.has(err.code)) throw await this.fail(interviewId, 'wait', err);
          // Turned away for the API key (a 403 while a key is rotated, say): this request fails, not the session. Its
          // results stay pending with the reason, and polling goes on by the pipeline's own rules and limits.
          if (err instanceof IncodeError && err.code === 'INCODE_FORBIDDEN') throw await this.fail(interviewId, 'wait', err, { keepSession: true });
          // Transient: the next poll (or a webhook) will do.
          this.d.log.warn({ interviewId, code: err instanceof IncodeError ? err.code : 'INTERNAL_ERROR' }, 'onboarding status poll failed');
        }
      }
      if (this.now() >= deadline) throw await this.timeout(interviewId, 'wait', status);
      await sleep(WATCH_MS, signal);
    }
    if (status === 'EXPIRED') {
      // The pipeline already marked the results failed (SESSION_EXPIRED).
      await this.record(interviewId, 'wait', 'failed', { code: 'SESSION_EXPIRED', detail: status });
      throw new OnboardingError('wait', 'SESSION_EXPIRED', 'The Incode session expired before it finished', interviewId);
    }
    await this.record(interviewId, 'wait', 'ok', { code: status, detail: status });

    // 2. mark completed (optional in the guide: the flow may already do it), unless a status check already did
    // while this request waited (a webhook's, a poll's: its `finish` step is recorded as BACKGROUND, and finishOnce
    // makes no call then).
    if (!config.results.markComplete) await this.record(interviewId, 'finish', 'skipped', { code: 'MARK_COMPLETE_OFF' });
    else if (!marked) await this.markComplete(interviewId, token, ctx, finishFailures);

    // 3. results: the pipeline's job fetches and stores them; make sure one is queued, then wait for it.
    const before = await store.getSession(interviewId);
    if (before && before.resultsStatus === 'pending') await pipeline.apply(interviewId, before.onboardingStatus, 'orchestrator', ctx.requestId);
    for (;;) {
      if (signal?.aborted) throw aborted('results');
      const s = await store.getSession(interviewId);
      if (s && RESULTS_SETTLED.includes(s.resultsStatus)) {
        if (s.resultsStatus !== 'ready') {
          const code = s.lastError ?? `RESULTS_${s.resultsStatus.toUpperCase()}`;
          await this.record(interviewId, 'results', 'failed', { code });
          throw new OnboardingError('results', code, `Scores and OCR data could not be stored (${code})`, interviewId);
        }
        const results = await store.getResults(interviewId);
        await this.record(interviewId, 'results', 'ok', { code: s.decision, detail: s.decision ?? undefined });
        return { interviewId, onboardingStatus: s.onboardingStatus, resultsStatus: s.resultsStatus, decision: s.decision, scores: results?.scores ?? null, ocr: results?.ocr ?? null };
      }
      if (this.now() >= deadline) throw await this.timeout(interviewId, 'results', s?.onboardingStatus ?? status);
      await sleep(WATCH_MS, signal);
    }
  }

  /** runCaptures then finish: a rejection is returned as is, the rest throws OnboardingError. */
  async run(input: CaptureInput, opts: FinishOptions = {}): Promise<{ captures: CapturesOutcome; result: FinishResult | null }> {
    const captures = await this.runCaptures(input);
    if (!captures.ok) return { captures, result: null };
    return { captures, result: await this.finish(captures.interviewId, { signal: input.signal, requestId: input.requestId, ...opts }) };
  }

  // ---- helpers ----

  /** Records a step (not written for an erased session) and reports it; whether it was written. */
  private async record(interviewId: string, step: OnboardingStep, outcome: StepRecord['outcome'], extra: { code?: string | null; message?: string | null; detail?: string } = {}): Promise<boolean> {
    const rec: StepRecord = { step, outcome, code: extra.code ?? null, message: extra.message ?? null, at: this.now() };
    const written = await this.d.store.recordStep(interviewId, rec);
    this.emit({ ...rec, interviewId, detail: extra.detail });
    return written;
  }

  /**
   * A capture step's record, which stops the captures when the session was erased meanwhile (DELETE /sessions/:id
   * while they ran): no more of the person's images go to Incode for a session its owner had erased.
   */
  private async captured(interviewId: string, step: OnboardingStep, outcome: StepRecord['outcome'], extra: { code?: string | null; message?: string | null; detail?: string } = {}): Promise<void> {
    if (!(await this.record(interviewId, step, outcome, extra)))
      throw new OnboardingError(step, 'SESSION_NOT_FOUND', `Session ${interviewId} was erased while its captures ran; nothing more was sent to Incode`, interviewId);
  }

  private emit(e: StepEvent): void {
    try {
      this.d.onStep?.(e);
    } catch {
      // A display callback never breaks the flow.
    }
  }

  /** Uploads one side of the ID and applies the capture checks: Incode's answer, or the rejection to return. */
  private async idSide(id: string, side: 'front' | 'back', upload: () => Promise<AddIdResponse>): Promise<{ ok: true; res: AddIdResponse } | CaptureRejection> {
    let res: AddIdResponse;
    try {
      res = await upload();
    } catch (err) {
      if (isIdImageRefusal(err)) return this.reject(id, side, this.imageRefused(err));
      throw err;
    }
    const check = checkIdCapture(res, this.d.config.capture);
    return check.ok ? { ok: true, res } : this.reject(id, side, check);
  }

  private imageRefused(err: IncodeError): CheckRejected {
    return { ok: false, reason: ID_REASONS.IMAGE_REFUSED, message: ID_MESSAGES[ID_REASONS.IMAGE_REFUSED], incodeCode: err.details.incodeStatus };
  }

  /** The capture must be repeated: the Incode session is abandoned, so its results will never come. */
  private async reject(interviewId: string, step: CaptureStep, check: CheckRejected): Promise<CaptureRejection> {
    const now = this.now();
    await this.record(interviewId, step, 'rejected', { code: check.reason, message: check.message });
    await this.abandon(interviewId, 'CAPTURE_REJECTED', now);
    // Without the interviewId: logs outlive an erasure, and a reason (ID_BLURRY, FACE_NOT_MATCHED...) with it would say
    // how this person's checks went, which the erasure deletes from the steps. The request id links it to the caller's
    // own record of the answer, which names the session.
    this.d.log.info({ step, reason: check.reason }, 'capture rejected');
    const out: CaptureRejection = { ok: false, interviewId, step, reason: check.reason, message: check.message };
    if (check.incodeCode !== undefined) out.incodeCode = check.incodeCode;
    return out;
  }

  /** The error to answer, recorded as the step's failure; the session is given up unless `keepSession`. */
  private async fail(interviewId: string | null, step: OnboardingStep, err: unknown, opts: { keepSession?: boolean } = {}): Promise<OnboardingError> {
    let e: OnboardingError;
    if (err instanceof OnboardingError) e = err;
    else if (err instanceof IncodeError) {
      const detail = err.incodeCode !== undefined ? ` (Incode status ${err.incodeCode})` : '';
      const http = err.details.httpStatus !== undefined ? ` with HTTP ${err.details.httpStatus}` : '';
      e = new OnboardingError(step, err.code, `Incode ${err.operation} failed at step ${step}${http}${detail}`, interviewId, err);
    } else if (isDatabaseUnavailable(err)) e = new OnboardingError(step, 'DATABASE_UNAVAILABLE', `The database did not answer at step ${step}`, interviewId, err);
    else e = new OnboardingError(step, 'INTERNAL_ERROR', `Step ${step} failed unexpectedly`, interviewId);
    // A stop someone asked for (an erasure, a shutdown, a caller's abort) is no failure of the service's.
    if (askedStop(e.code)) this.d.log.info({ interviewId, step, code: e.code }, 'onboarding stopped');
    else this.d.log.error({ interviewId, step, code: e.code, incodeStatus: e.incode?.incodeStatus }, 'onboarding step failed');
    // Not when the database itself failed: recording that would only wait out another DATABASE_TIMEOUT_MS before the
    // answer (503 with the interviewId); the session stays as it was, for polling to follow.
    if (interviewId && e.code !== 'DATABASE_UNAVAILABLE') {
      const now = this.now();
      try {
        await this.d.store.recordStep(interviewId, { step, outcome: 'failed', code: e.code, message: e.message, at: now });
        // The last capture's 5xx, timeout or dropped connection may come after Incode did the work (a gateway's 502 or
        // 504 behind it), and so may a stop while it was on its way: the session can still finish there, so it is kept
        // pending and polled like any other (the caller has its interviewId), its results stored and announced if it
        // does, POLLING_GAVE_UP if it never does. Not when the call was certainly never sent.
        const stop = err instanceof OnboardingError && err.code === 'ABORTED';
        const call = stop ? err.cause : err;
        const mayFinish = step === 'face-match' && (call instanceof IncodeError ? !call.certainlyNotDone : stop);
        if (opts.keepSession || mayFinish) await this.d.store.setResultsStatus(interviewId, null, e.code, now);
        else await this.abandon(interviewId, e.code, now);
      } catch (storeErr) {
        this.d.log.error({ interviewId, step, err: loggedError(storeErr) }, 'could not record the failed step');
      }
    }
    this.emit({ step, outcome: 'failed', code: e.code, message: e.message, at: this.now(), interviewId });
    return e;
  }

  /**
   * finish-status, recorded as the `finish` step. Not fatal: a failure stays visible on the session. Returns false
   * only when a retry may succeed (Incode unavailable or timing out), so the wait asks again at its next poll.
   * `failures.last` is the code of the previous attempt's failure: the same failure again is logged, not recorded.
   */
  private async markComplete(interviewId: string, token: string, ctx: CallContext, failures: { last: string | null }): Promise<boolean> {
    try {
      // Shared with the pipeline's status checks: one finish-status call at a time, whoever asks first records it.
      await this.d.pipeline.finishOnce(interviewId, token, ctx, () => this.record(interviewId, 'finish', 'ok'));
      return true;
    } catch (err) {
      // Stopped by this request's own signal: the wait reports that; it is no failure of Incode's to record.
      if (ctx.signal?.aborted) return false;
      // An IncodeError's message is this service's own words; any other error's could quote what it read (a store's
      // error, its values), and the step's message is stored in clear and served by GET /sessions/:id.
      const code = err instanceof IncodeError ? err.code : 'INTERNAL_ERROR';
      this.d.log.warn({ interviewId, code }, 'finish-status failed');
      if (failures.last !== code) await this.record(interviewId, 'finish', 'failed', { code, message: err instanceof IncodeError ? err.message : 'finish-status failed unexpectedly' });
      failures.last = code;
      return err instanceof IncodeError && err.isClientError;
    }
  }

  /** Out of time: recorded, but the session stays pending so background polling or a webhook can still finish it. */
  private async timeout(interviewId: string, step: OnboardingStep, status: string): Promise<OnboardingError> {
    await this.record(interviewId, step, 'failed', { code: 'TIMEOUT', detail: status });
    // Processing done but never completed: the flow likely leaves that to finish-status.
    const hint =
      step === 'wait' && statusRank(status) === PROGRESS_RANK && !this.d.config.results.markComplete
        ? '; if the flow does not mark sessions completed on status, set MARK_COMPLETE=true'
        : '';
    // Why the results have not come, when the pipeline knows (a code such as INCODE_UNAVAILABLE: never personal data),
    // rather than a bare timeout that reads as Incode being slow: the session's, else that of a job still retrying.
    const lastError = await this.lastError(interviewId).catch(() => null);
    const cause = lastError ? `; last error: ${lastError}` : '';
    return new OnboardingError(step, 'TIMEOUT', `Gave up waiting at step ${step} (onboarding status ${status})${cause}${hint}`, interviewId);
  }

  /** The session's last error, else that of the job of it tried most recently and not done (a retry's reason). */
  private async lastError(interviewId: string): Promise<string | null> {
    const session = await this.d.store.getSession(interviewId);
    if (session?.lastError) return session.lastError;
    const failing = (await this.d.store.listJobs(interviewId)).filter((j) => j.state !== 'done' && j.lastError);
    return failing.sort((a, b) => b.runAt - a.runAt)[0]?.lastError ?? null;
  }

  /** The session will never produce results: marked failed with why, and no longer polled. */
  private async abandon(interviewId: string, code: string, now: number): Promise<void> {
    await this.d.pipeline.failResults(interviewId, code, now);
    const s = await this.d.store.getSession(interviewId);
    if (s && s.nextPollAt !== null) await this.d.store.stopPolling(interviewId, s.nextPollAt);
  }
}
