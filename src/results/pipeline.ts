// The one path to a result: webhook, poll or refresh → verify by fetch → monotonic status → results job → callback.
import type { FastifyBaseLogger } from 'fastify';
import type { Config } from '../config';
import type { CallContext, IncodeClient } from '../incode/client';
import { IncodeError, incodeErrorFromTransport, isOutageCode } from '../incode/errors';
import type { ExecutiveTokenProvider } from '../incode/executive-token';
import { jwtClaims } from '../incode/token-claims';
import type { OnboardingStatusWebhook } from '../incode/types';
import type { Metrics } from '../plugins/metrics';
import { incodeDeleteRetryJob, retryWindowStart, revivableFailure, webhookEventKey } from '../store/rows';
import type { Job, LaterRetry, NewJob, NewSession, SessionRecord, SessionState, StepRecord, Store } from '../store/types';
import { isDatabaseUnavailable } from '../store/unavailable';
import { loggedError } from '../logging';
import { untilAborted } from '../util/settle';
import { resultsFailedEvent, sendCallback } from './callback';
import { PROGRESS_RANK, decisionFor, hasResults, isKnownStatus, isTerminal, recordedStatus, statusRank, verdictOf, verdictStatusOf } from './status';

export type Source = 'webhook' | 'poll' | 'refresh' | 'orchestrator';

/** A job failure with a stable code; retryable ones go back to the queue with backoff. */
export class JobError extends Error {
  constructor(
    readonly code: string,
    readonly retryable: boolean,
    /** How long Incode asked us to wait (its Retry-After), if it did. */
    readonly retryAfterMs?: number,
  ) {
    super(code);
  }
}

/**
 * A job's failure that no code names (a fault of ours, a store write outside the job's own handling): a database
 * outage as DATABASE_UNAVAILABLE, so it is told apart from a defect in the retry and dead-letter lines and lastError;
 * anything else logged as every unexpected error is (loggedError: never a message that could quote what it read, OCR),
 * as INTERNAL_ERROR. Retried either way.
 */
export function unnamedFailure(err: unknown, log: FastifyBaseLogger, fields: Record<string, unknown>): JobError {
  if (isDatabaseUnavailable(err)) return new JobError('DATABASE_UNAVAILABLE', true);
  log.error({ ...fields, err: loggedError(err) }, 'job failed unexpectedly');
  return new JobError('INTERNAL_ERROR', true);
}

export interface PipelineDeps {
  store: Store;
  incode: IncodeClient;
  executiveTokens: ExecutiveTokenProvider;
  config: Config;
  metrics: Metrics;
  log: FastifyBaseLogger;
  /** Called after a job is enqueued so a local worker picks it up at once. */
  kick?: () => void;
  now?: () => number;
}

/** A webhook's informative string field as kept in the inbox: cut to 128 characters, anything else left out. */
function boundedText(v: unknown): string | undefined {
  return typeof v === 'string' ? v.slice(0, 128) : undefined;
}

/** Finished, with results that leave the decision to a reviewer: the verdict (MANUAL_REVIEW_*) is still to come. */
function awaitsVerdict(s: Pick<SessionRecord, 'onboardingStatus' | 'decision'>): boolean {
  return s.onboardingStatus === 'ONBOARDING_FINISHED' && s.decision === 'review';
}

/**
 * Whether the session's status has results it does not show yet: none stored, their fetch dead-lettered by an outage
 * (a `failed` whose lastError time can mend; not a final refusal), or stored before a reviewer's verdict that their
 * decision does not reflect. Polling comes back to such a session (within POLL_GIVE_UP_HOURS), and its check queues
 * the fetch.
 */
function resultsBehind(s: Pick<SessionRecord, 'onboardingStatus' | 'resultsStatus' | 'decision' | 'lastError'>): boolean {
  if (!hasResults(s.onboardingStatus)) return false;
  if (s.resultsStatus === 'pending' || (s.resultsStatus === 'failed' && isOutageCode(s.lastError))) return true;
  const verdict = verdictOf(s.onboardingStatus);
  return s.resultsStatus === 'ready' && verdict !== null && s.decision !== verdict;
}

/**
 * Whether polling has anything left to find: a status to come, a reviewer's verdict, or results the status still lacks.
 * Never for a session given up before it finished (an abandoned onboarding, polling that gave up), whichever poll a
 * race with its abandonment left scheduled.
 */
function keepsPolling(s: Pick<SessionRecord, 'onboardingStatus' | 'resultsStatus' | 'decision' | 'lastError'>): boolean {
  if (s.resultsStatus === 'erased' || (s.resultsStatus === 'failed' && !isTerminal(s.onboardingStatus))) return false;
  return !isTerminal(s.onboardingStatus) || awaitsVerdict(s) || resultsBehind(s);
}

/**
 * A poll's routine status check, done: one is queued at each poll of every unfinished session (about 150 over the
 * 72 h of an abandoned one), and its row would tell nothing later, so it is deleted rather than kept for
 * RETENTION_DAYS. A verdict check, a webhook's or a refresh's, and any that was dead-lettered, stay as history.
 */
export function isRoutinePoll(job: Job): boolean {
  return job.kind === 'verify' && job.payload.source === 'poll' && job.payload.claimed === undefined;
}

/** Whether a session's steps hold a finish-status that went through (by its own request or in the background). */
export function finishRecorded(steps: StepRecord[]): boolean {
  return steps.some((s) => s.step === 'finish' && s.outcome === 'ok');
}

/**
 * Two Incode reads made together, answered once both have: when one fails, the failure of a call that reached Incode
 * is the one thrown, not the other's refusal by the open circuit (a half-open circuit lets one call through as its
 * probe and refuses the other at once): the job's attempt then counts, where an open circuit's refusal alone puts it off.
 */
export async function bothReads<A, B>(a: Promise<A>, b: Promise<B>): Promise<[A, B]> {
  const [ra, rb] = await Promise.allSettled([a, b]);
  if (ra.status === 'fulfilled' && rb.status === 'fulfilled') return [ra.value, rb.value];
  const errors = [ra, rb].flatMap((r) => (r.status === 'rejected' ? [r.reason as unknown] : []));
  throw errors.find((e) => !(e instanceof IncodeError && e.code === 'INCODE_CIRCUIT_OPEN')) ?? errors[0];
}

/** Whether a server-side onboarding's captures all went through: its face match answered (a no-match declines it later). */
export function capturesWentThrough(steps: StepRecord[]): boolean {
  return steps.some((s) => s.step === 'face-match' && (s.outcome === 'ok' || s.outcome === 'rejected'));
}

/**
 * Whether its face match may have run at Incode though its answer failed (a 5xx, a timeout, a stop: the session was
 * kept pending for it, not failed): the session may still reach its last status, and only finish-status completes it.
 */
export function faceMatchMayHaveRun(steps: StepRecord[], session: Pick<SessionRecord, 'resultsStatus'>): boolean {
  return session.resultsStatus === 'pending' && steps.some((s) => s.step === 'face-match' && s.outcome === 'failed');
}

/**
 * How long a server-side onboarding is taken to be running its captures (an Idempotency-Key's replay says so until
 * then): its start and its five capture calls, each of which may take its timeout (INCODE_TIMEOUT_MS,
 * INCODE_CAPTURE_TIMEOUT_MS) for its answer's headers and again for its body, and a minute's room.
 */
export function capturesWindowMs(config: Pick<Config, 'incode'>): number {
  return 60_000 + 2 * config.incode.timeoutMs + 10 * config.incode.captureTimeoutMs;
}

/**
 * How old a server-side onboarding must be before polling calls its captures interrupted: twice anything live captures
 * can take (capturesWindowMs; a call may also wait in the pool's queue first), so a slow onboarding still uploading is
 * never failed under it; at least half an hour.
 */
export function capturesAbandonedAfterMs(config: Pick<Config, 'incode'>): number {
  return Math.max(30 * 60_000, 2 * capturesWindowMs(config));
}

/**
 * A server-side onboarding whose process died before its selfie went up (SIGKILL, a crash): its steps began, none
 * failed or was rejected (a one-sided document's back is `skipped`), and neither an accepted selfie nor a face match
 * is recorded. Its session can never finish at Incode (no selfie was sent, so no face match either). One whose
 * selfie went up is not: its face match may have been sent before the process died, and polling decides.
 */
export function capturesInterrupted(steps: StepRecord[]): boolean {
  if (!steps.some((s) => s.step === 'start' && s.outcome === 'ok')) return false;
  return !steps.some((s) => s.outcome === 'failed' || s.outcome === 'rejected' || (s.step === 'selfie' && s.outcome === 'ok') || s.step === 'face-match');
}

type CallbackEvent = Parameters<typeof sendCallback>[2];

/**
 * The event's id, which receivers dedupe by: one per event, the same on every retry of it (a later retry job carries it
 * in its payload); a state the session comes back to (A, B, A) is a new event with a new id, not a redelivery.
 */
function callbackEventId(job: Job): string {
  if (typeof job.payload.eventId === 'string') return job.payload.eventId;
  return job.payload.event === 'results_failed' ? `${job.subject}:results_failed:${job.id}` : `${job.subject}:${job.payload.onboardingStatus}:${job.payload.decision}:${job.id}`;
}

/** When the event happened: its results stored or its failure recorded (the job's queueing, for one without). */
const occurredAt = (job: Job): number => (typeof job.payload.fetchedAt === 'number' ? job.payload.fetchedAt : job.createdAt);

/** How long a customer callback that keeps failing is tried again after its attempts run out, and how often. */
export const CALLBACK_RETRY_FOR_MS = 3 * 86_400_000;
export const CALLBACK_RETRY_AFTER_MS = 3_600_000;

/**
 * A dead-lettered callback tried again an hour later, with all its attempts and its event's id, for three days from its
 * first dead letter: a receiver down for longer than one job's attempts (about 90 minutes at the defaults) still hears
 * of every result. Null past those days.
 */
function callbackRetryJob(dead: Job, now: number): LaterRetry | null {
  const since = retryWindowStart(dead, now, CALLBACK_RETRY_FOR_MS);
  if (since === null) return null;
  const eventId = callbackEventId(dead);
  // Not over a session erased meanwhile: its payload, cleared by the erasure, would be written back with it.
  return { kind: 'callback', subject: dead.subject, payload: { ...dead.payload, eventId, deadSince: since }, runAt: now + CALLBACK_RETRY_AFTER_MS, dedupeKey: `callback-retry:${eventId}`, whileLive: true };
}

/**
 * The event of stored results, or null for a state the session has left (another decision, or another status: a
 * reviewer's verdict may keep the decision): the newer state's results queue their own event, and an older one retried
 * after it (or running beside it on another replica) must not be the last word the customer hears.
 */
function readyEvent(job: Job, session: SessionRecord): CallbackEvent | null {
  if (session.decision !== job.payload.decision || session.onboardingStatus !== job.payload.onboardingStatus) return null;
  return {
    id: callbackEventId(job),
    occurredAt: occurredAt(job),
    type: 'session.results_ready',
    // The session's last change as this event leaves (it is the session's current state): receivers order events by
    // it, since two may still cross on the wire, and a decision that came back (A, B, A) leaves with a newer time.
    data: { interviewId: job.subject, onboardingStatus: job.payload.onboardingStatus, decision: job.payload.decision, updatedAt: new Date(session.updatedAt).toISOString() },
  };
}

/** Reads of the status for a verdict only the scores show (at the default backoff, about half a minute of them). */
const VERDICT_CHECK_ATTEMPTS = 6;

/** How far back the sweep looks for dead-lettered results jobs never followed up: a week of downtime. */
const DEAD_LETTER_REPAIR_WINDOW_MS = 7 * 86_400_000;
/** A dead-letter younger than this may still be followed up by its worker. */
const FOLLOW_UP_GRACE_MS = 120_000;
const DEAD_LETTER_REPAIR_BATCH = 500;

/** A job's failure when Incode refused the session's own token: retried with an executive token. */
const SESSION_TOKEN_REFUSED = 'SESSION_TOKEN_REFUSED';

/** Whether a token's own `exp` claim (seconds) has passed; false for one that states none. */
function pastExpiry(token: string, now: number): boolean {
  const exp = jwtClaims(token)?.exp;
  return typeof exp === 'number' && exp * 1000 <= now;
}

export class ResultsPipeline {
  private readonly now: () => number;
  constructor(private readonly d: PipelineDeps) {
    this.now = d.now ?? Date.now;
  }

  /** Records the webhook durably (idempotent per interviewId + status); processing happens in a job. */
  async ingestWebhook(body: OnboardingStatusWebhook): Promise<{ duplicate: boolean }> {
    const now = this.now();
    const key = webhookEventKey(body.interviewId, body.onboardingStatus);
    // externalId is the customer's own user id: kept out of the inbox (it is PII-adjacent and not needed).
    const payload = { interviewId: body.interviewId, onboardingStatus: body.onboardingStatus, clientId: boundedText(body.clientId), flowId: boundedText(body.flowId) };
    const inserted = await this.d.store.recordEvent(
      { key, interviewId: body.interviewId, onboardingStatus: body.onboardingStatus, payload, receivedAt: now },
      // The status the webhook claims goes with its check: a read that is still behind it is tried again (verify).
      { kind: 'verify', subject: body.interviewId, payload: { source: 'webhook', eventKey: key, claimed: body.onboardingStatus }, runAt: now },
    );
    if (inserted) this.d.kick?.();
    return { duplicate: !inserted };
  }

  /** Whether an executive token can be had, without which nothing can be deleted at Incode once erased here. */
  get canDeleteAtIncode(): boolean {
    return this.d.executiveTokens.configured;
  }

  /**
   * Fetch now: the status is re-read and, when final, scores and OCR are fetched again. false: this one joined a
   * refresh that has not read Incode yet (or, rarely, two already under way).
   */
  async refresh(interviewId: string): Promise<boolean> {
    const now = this.now();
    const enqueue = (dedupeKey: string) => this.d.store.enqueueJob({ kind: 'verify', subject: interviewId, payload: { source: 'refresh' }, runAt: now, dedupeKey }, now);
    const key = `verify:${interviewId}:refresh`;
    let queued = await enqueue(key);
    if (!queued) {
      // Joined only while it has not read Incode: one under way (or waiting out a failed attempt's backoff) may have
      // read it before whatever made the caller ask, so one more is queued beside it, which a refresh asked meanwhile joins.
      const active = await this.d.store.activeJob(key);
      // Nor one put off by an open circuit (its attempt given back, due later): the refresh runs now beside it.
      if (!(active?.state === 'queued' && active.attempts === 0 && active.runAt <= now)) queued = await enqueue(active ? `${key}:next` : key);
    }
    this.d.kick?.();
    return queued;
  }

  /** Enqueues a status check for every session due for a poll and schedules its next one with backoff. */
  async pollDue(limit = 200): Promise<number> {
    const now = this.now();
    const due = await this.d.store.sessionsDueForPoll(now, limit);
    const { pollIntervalMs, pollMaxIntervalMs } = this.d.config.results;
    // Looked at in the hour after a session passes that age (polls come at least every POLL_MAX_INTERVAL_MS), so an
    // unfinished SDK session is not read for steps at every poll of its POLL_GIVE_UP_HOURS.
    const abandonedAfter = capturesAbandonedAfterMs(this.d.config);
    const lookUntil = abandonedAfter + 2 * pollMaxIntervalMs + 3_600_000;
    for (const s of due) {
      if (!keepsPolling(s)) {
        await this.d.store.stopPolling(s.interviewId, s.nextPollAt);
        continue;
      }
      // An onboarding whose process died mid-captures would otherwise be polled, pending, for POLL_GIVE_UP_HOURS: it
      // is failed once no process can still be running it.
      const age = now - s.createdAt;
      if (s.origin === 'broker' && s.resultsStatus === 'pending' && !isTerminal(s.onboardingStatus) && age > abandonedAfter && age < lookUntil && capturesInterrupted(await this.d.store.listSteps(s.interviewId))) {
        await this.failResults(s.interviewId, 'CAPTURES_INTERRUPTED', now);
        await this.d.store.stopPolling(s.interviewId, s.nextPollAt);
        continue;
      }
      if (this.pollingGaveUp(s, now)) {
        await this.d.store.stopPolling(s.interviewId, s.nextPollAt);
        // A session waiting for a reviewer keeps the results it has; only an unfinished one failed.
        if (!awaitsVerdict(s)) await this.failResults(s.interviewId, 'POLLING_GAVE_UP', now);
        continue;
      }
      await this.d.store.enqueueJob({ kind: 'verify', subject: s.interviewId, payload: { source: 'poll' }, runAt: now, dedupeKey: `verify:${s.interviewId}:poll` }, now);
      const attempts = s.pollAttempts + 1;
      const delay = Math.min(pollMaxIntervalMs, pollIntervalMs * 2 ** Math.min(attempts, 20));
      // Only the poll it listed: an abandoned onboarding or a final check may have ended polling since.
      await this.d.store.schedulePoll(s.interviewId, now + delay, attempts, s.nextPollAt);
    }
    if (due.length) this.d.kick?.();
    return due.length;
  }

  /**
   * Records a session this broker just started (by POST /session or the orchestrator) so that webhooks,
   * polling and the app's token lookups can follow it; the first poll is scheduled unless polling is off.
   */
  async trackSession(s: {
    interviewId: string;
    token: string;
    externalCustomerId?: string;
    configurationId?: string;
    resume?: NewSession['resume'];
    idempotency?: NewSession['idempotency'];
    firstStep?: NewSession['firstStep'];
  }): Promise<void> {
    const now = this.now();
    await this.d.store.upsertSession({
      interviewId: s.interviewId,
      origin: 'broker',
      externalCustomerId: s.externalCustomerId ?? null,
      configurationId: s.configurationId ?? null,
      token: s.token,
      nextPollAt: this.firstPollAt('broker', now),
      resume: s.resume,
      idempotency: s.idempotency,
      firstStep: s.firstStep,
      now,
    });
  }

  /** Runs one job; `signal` (the worker's lease deadline) stops its Incode calls. */
  async handle(job: Job, signal?: AbortSignal): Promise<void> {
    // Incode's logs lead back to the job by its id.
    const ctx: CallContext = { signal, requestId: `job-${job.id}` };
    switch (job.kind) {
      case 'verify':
        return this.verify(job, ctx);
      case 'results':
        return this.fetchResults(job, ctx);
      case 'callback':
        return this.callback(job, signal);
      case 'incode-delete':
        return this.deleteAtIncode(job, ctx);
      default:
        throw new JobError('UNKNOWN_JOB_KIND', false);
    }
  }

  /**
   * The job that tries a dead-lettering job again later, queued by the worker with its dead letter (so no stop or
   * database failure between the two loses it), or null (`retryable` as for onDead). An erasure at Incode stopped by an
   * outage (not a refusal, nor a fault of ours) is tried again rather than left undone, for a week; so is a customer
   * callback whose receiver was down or refusing longer than its attempts, for three days.
   */
  retryOf(job: Job, code: string, retryable: boolean): LaterRetry | null {
    const now = this.now();
    if (job.kind === 'incode-delete' && retryable && isOutageCode(code)) return incodeDeleteRetryJob(job, now);
    if (job.kind === 'callback' && retryable && this.d.config.callback.url) return callbackRetryJob(job, now);
    return null;
  }

  /**
   * Called when a job is dead-lettered (`retryable`: its last failure was worth another try, only its attempts ran
   * out): the session shows why, the audit keeps it without PII.
   */
  async onDead(job: Job, code: string, retryable = false): Promise<void> {
    const now = this.now();
    const outage = retryable && isOutageCode(code);
    await this.d.store.audit('dead-letter', job.subject, { kind: job.kind, attempts: job.attempts, code }, now);
    const callbackSession = job.kind === 'callback' ? await this.d.store.getSession(job.subject) : null;
    // A session created elsewhere has no row until a check of it succeeds: when its first check dies, the row is written
    // here (an existing row is left as it is), so that it shows why and polling can still repair it. A results fetch
    // that died of an outage is tried again by polling too (its next check queues it again): its row is read once the
    // failure is recorded, which is what polling goes by.
    const session = job.kind === 'verify' ? await this.d.store.upsertSession({ interviewId: job.subject, origin: 'external', now, nextPollAt: this.firstPollAt('external', now) }) : null;
    // A dead results job fails the session unless results are already stored (a refresh, or an earlier status's
    // job, got them: the store keeps those served and records only why); a dead check or callback only records why
    // (polling or a refresh may still succeed). The results and check jobs do not read the status first: a results
    // job finishing meanwhile keeps its own.
    // (Over a session polling gave up on, the store keeps POLLING_GAVE_UP; the audit row above keeps the code.)
    // A dead customer callback says nothing about the session's results: its first dead letter shows in lastError (the
    // session's one sign that its event was not delivered), but not over a failed session, where lastError decides
    // whether polling still repairs an outage, and not again for its hourly retries, which would move the session's
    // updatedAt for days (the audit row and the metric keep each).
    const callbackQuiet = job.kind === 'callback' && (typeof job.payload.deadSince === 'number' || callbackSession?.resultsStatus === 'failed');
    if (job.kind === 'results') await this.failResults(job.subject, code, now);
    else if (!callbackQuiet) await this.d.store.setResultsStatus(job.subject, null, code, now);
    // A dead check must not leave the session stuck: its webhook's inbox key was released as it died (failJob), so
    // Incode's redelivery is checked again instead of dropped as a duplicate, and a poll is scheduled when polling can
    // read the session (the row as upsertSession answered it, which setting lastError on a check leaves as it was).
    const followed = session ?? (job.kind === 'results' && outage ? await this.d.store.getSession(job.subject) : null);
    if (!followed || followed.nextPollAt !== null || !keepsPolling(followed) || this.pollingGaveUp(followed, now)) return;
    const at = this.firstPollAt(followed.origin, now);
    if (at !== null) await this.d.store.schedulePoll(job.subject, at, followed.pollAttempts, null);
  }

  /**
   * Follows up results jobs dead-lettered by a process that stopped before their follow-up (the dead-letter and the
   * follow-up are two writes, and a SIGKILL or a crash can come between them): such a session would read pending for
   * good, with no job and no poll to fetch its results, and the customer would never hear it failed. Jobs dead for less
   * than FOLLOW_UP_GRACE_MS are left to the worker that may still be following them up. Answers how many it took.
   */
  async followUpDeadLetters(now = this.now(), signal?: AbortSignal): Promise<number> {
    const jobs = await this.d.store.unfollowedDeadResults(now - DEAD_LETTER_REPAIR_WINDOW_MS, now - FOLLOW_UP_GRACE_MS, DEAD_LETTER_REPAIR_BATCH);
    let followed = 0;
    for (const job of jobs) {
      if (signal?.aborted) break;
      // Read again: a webhook or a refresh may have queued a new results job since the batch was selected.
      const [session, others] = await Promise.all([this.d.store.getSession(job.subject), this.d.store.listJobs(job.subject)]);
      if (session?.resultsStatus !== 'pending' || session.nextPollAt !== null || others.some((o) => o.kind === 'results' && (o.state === 'queued' || o.state === 'running'))) continue;
      const code = job.lastError ?? 'INTERNAL_ERROR';
      this.d.log.warn({ jobId: job.id, kind: job.kind, interviewId: job.subject, code }, 'a dead-lettered job was never followed up (its process stopped); following it up now');
      // Its last failure was retryable exactly when it was an outage: the others are refusals and faults of ours.
      // One that fails is left for the next sweep; the others go on.
      try {
        await this.onDead(job, code, isOutageCode(code));
        followed++;
      } catch (err) {
        this.d.log.error({ jobId: job.id, err: loggedError(err) }, 'following up a dead-lettered job failed; the next sweep tries again');
      }
    }
    return followed;
  }

  /**
   * When a session's first poll is due, or null when polling is off or cannot read it (one created elsewhere needs
   * an executive token).
   */
  private firstPollAt(origin: SessionRecord['origin'], now: number): number | null {
    const { mode, pollIntervalMs } = this.d.config.results;
    return mode !== 'webhook' && (origin === 'broker' || this.d.executiveTokens.configured) ? now + pollIntervalMs : null;
  }

  /** Whether polling has given up on the session by `at` (now, or when a poll is due). */
  private pollingGaveUp(s: Pick<SessionRecord, 'activeAt'>, at: number): boolean {
    // Counted from the session's last sign of life (its start, a status move, a resume, stored results; activeAt is
    // never before createdAt), not its start alone: a user who comes back on day four must not find polling given up for good. Not from updatedAt, which a
    // check failing for good moves at each dead letter: it would be polled until the retention purge.
    return at - s.activeAt > this.d.config.results.pollGiveUpHours * 3_600_000;
  }

  /**
   * Polling again for a session it gave up on (POLLING_GAVE_UP), or that Incode said it did not know (INCODE_SESSION_GONE),
   * that shows a sign of life: a status move (a webhook's, a read's), or a resume. Its results are pending again; without this, a final status whose webhook was lost (or any
   * final status with RESULTS_MODE=polling) would leave a finished onboarding failed for good.
   */
  async revive(interviewId: string, session?: SessionState | null, requestId?: string): Promise<void> {
    const s = session === undefined ? await this.d.store.getSession(interviewId) : session;
    if (!s || !revivableFailure(s) || isTerminal(s.onboardingStatus)) return;
    const now = this.now();
    // No sign of life since it gave up (a refresh of an unmoved status, say): it would only give up again.
    if (this.pollingGaveUp(s, now)) return;
    const next = this.firstPollAt(s.origin, now);
    if (next === null) return;
    // The poll first: dying between the two leaves the session given up (which the check's rerun revives), never
    // pending with nothing to poll it.
    await this.d.store.schedulePoll(interviewId, next, 0);
    // A compare-and-set: results another replica stored meanwhile stay ready (the poll just scheduled then finds
    // nothing to do and stops).
    if (!(await this.d.store.setResultsStatus(interviewId, 'pending', null, now))) return;
    this.logFor(requestId).info({ interviewId }, 'polling resumed for a session it had given up on');
  }

  /**
   * Marks the session's results failed for good, with why, and queues the customer's event of it in the same write
   * (sent only when that write moved the session to failed).
   */
  async failResults(interviewId: string, code: string, now: number): Promise<void> {
    await this.d.store.setResultsStatus(interviewId, 'failed', code, now, resultsFailedEvent(this.d.config.callback, interviewId, code, now));
  }

  /** The log of one job's or request's work: its lines carry the id its Incode calls carry (x-request-id). */
  private logFor(requestId: string | undefined): FastifyBaseLogger {
    return requestId ? this.d.log.child({ reqId: requestId }) : this.d.log;
  }

  // ---- jobs ----

  private async verify(job: Job, ctx: CallContext): Promise<void> {
    const id = job.subject;
    const source = (job.payload.source as Source) ?? 'webhook';
    const now = this.now();
    const session = await this.d.store.getSession(id);
    // A webhook for a session erased here (a reviewer's verdict that came after the erasure): its event and this check
    // name a status, so erasing again sweeps them (no second audit entry).
    if (session?.resultsStatus === 'erased') return void (await this.d.store.eraseSession(id, 'late-webhook', now));
    const token = await this.readToken(session, id, ctx, job);
    if (!token) return this.done(job);

    let status: string;
    let processing = false;
    try {
      status = (await this.d.incode.getOnboardingStatus(token.value, id, ctx)).onboardingStatus;
      const awaiting = session && !token.executive ? await this.awaitsCompletion(session, status) : null;
      if (awaiting === 'finish') {
        const after = await this.complete(id, token.value, status, ctx);
        processing = after === null;
        status = after ?? status;
      } else if (awaiting === 'processing') processing = true;
    } catch (err) {
      if (err instanceof IncodeError && (err.code === 'INCODE_NOT_FOUND' || err.code === 'INCODE_BAD_REQUEST') && !session) {
        // A webhook for a session Incode does not know: forged or misrouted. Recorded, nothing created.
        await this.d.store.audit('webhook-unverified', id, { code: err.code }, now);
        return this.done(job);
      }
      if (err instanceof IncodeError && err.code === 'INCODE_NOT_FOUND' && err.details.envelope && session) {
        // Incode no longer knows a session followed here (deleted there, or gone with its own retention): no read can
        // help, and each poll's check would be dead-lettered again until POLLING_GAVE_UP, days later. Results still
        // pending fail for good (announced); stored ones stay. A refresh, a resume or a status move (its webhook)
        // later reads again. Only Incode's own 404 (its error envelope, not a proxy's page), and only when this check
        // reads it again after its backoff: a gateway's passing 404 must not end a live session.
        // The attempt before it said so too: this 404, or the session's own token refused, read now with an executive token.
        const confirmed = job.lastError === 'INCODE_NOT_FOUND' || job.lastError === SESSION_TOKEN_REFUSED;
        if (!confirmed && this.d.config.results.jobMaxAttempts > 1) throw new JobError('INCODE_NOT_FOUND', true);
        await this.d.store.audit('incode-not-found', id, { source }, now);
        if (session.resultsStatus === 'pending') await this.failResults(id, 'INCODE_SESSION_GONE', now);
        if (session.nextPollAt !== null) await this.d.store.stopPolling(id, session.nextPollAt);
        this.logFor(ctx.requestId).warn({ interviewId: id }, 'Incode no longer knows this session: polling stopped');
        return this.done(job);
      }
      throw this.asJobError(err, token, id, ctx);
    }
    if (typeof status !== 'string' || !isKnownStatus(status)) {
      await this.d.store.audit('unknown-status', id, { status: recordedStatus(status) }, now);
      return this.done(job);
    }
    // A session created elsewhere is polled like a broker's when polling is on (its token here is an executive one).
    if (!session) {
      await this.d.store.upsertSession({ interviewId: id, origin: 'external', now, nextPollAt: this.firstPollAt('external', now) });
    }
    await this.apply(id, status, source, ctx.requestId);
    // Without polling to come back to this session, this check comes back itself, with backoff (and is dead-lettered
    // visibly if it never gets there) while processing still goes on (the status is stored).
    if (processing && this.d.config.results.mode === 'webhook') throw new JobError('PROCESSING_NOT_DONE', true);
    // And while Incode's status read is behind the status its webhook announced (a read served before the change reached
    // it), unless a poll is still to come back to the session: polling stops at a final status, so a reviewer's verdict
    // on a session already finished (or one past POLL_GIVE_UP_HOURS) would otherwise be lost for good. What was read is
    // applied either way: the webhook's claim is never taken for the status.
    const claimed = job.payload.claimed;
    if (typeof claimed === 'string' && statusRank(claimed) > statusRank(status)) {
      const after = this.d.config.results.mode === 'webhook' ? null : await this.d.store.getSession(id);
      // A poll due after polling gives up would be stopped unread.
      const polled = after !== null && after.nextPollAt !== null && !this.pollingGaveUp(after, after.nextPollAt);
      // A verdict only the scores showed is given a minute or so of reads: the decision is right already, and an Incode
      // whose status never follows its score must not cost a dead letter and an hour of retries per refresh.
      const scoresOnly = job.payload.fromScores === true && job.attempts >= Math.min(VERDICT_CHECK_ATTEMPTS, this.d.config.results.jobMaxAttempts);
      if (!polled && !scoresOnly) throw new JobError('STATUS_BEHIND_WEBHOOK', true);
      if (scoresOnly) this.logFor(ctx.requestId).info({ interviewId: id }, "the scores show a reviewer's verdict the status still does not; left to its webhook or a refresh");
    }
    await this.done(job);
  }

  /**
   * A server-side onboarding whose flow leaves completion to finish-status (MARK_COMPLETE) stops at its last module
   * status. The request that ran its captures marks it complete once processing is done, but a shutdown, a crash or
   * its wait timing out can stop it first: then its status checks here do it, so polling finishes the onboarding
   * instead of watching it stall until POLL_GIVE_UP_HOURS. Only a session whose captures all went through (its
   * face-match step answered, match or not) qualifies: an SDK session at the same status may still have a capture to come.
   * 'finish' at a module status (finish-status once processing is done); 'processing' at UNKNOWN without polling
   * (RESULTS_MODE=webhook), where a check that stopped there would leave an onboarding that no finish watches
   * unfinished for good, so it comes back; null otherwise.
   */
  private async awaitsCompletion(session: SessionRecord, status: unknown): Promise<'finish' | 'processing' | null> {
    if (!this.d.config.results.markComplete || session.origin !== 'broker' || typeof status !== 'string') return null;
    const rank = statusRank(status);
    const early = status === 'UNKNOWN' && this.d.config.results.mode === 'webhook';
    if (rank !== PROGRESS_RANK && !early) return null;
    const steps = await this.d.store.listSteps(session.interviewId);
    if (!(capturesWentThrough(steps) || faceMatchMayHaveRun(steps, session)) || finishRecorded(steps)) return null;
    return early ? 'processing' : 'finish';
  }

  /**
   * finish-status once post-processing is done; answers the status to apply (read again after finishing), or null
   * while processing is still going on.
   */
  private async complete(id: string, token: string, status: string, ctx: CallContext): Promise<string | null> {
    if (!(await this.processingDone(id, token, status, ctx))) return null;
    const record = () => this.d.store.recordStep(id, { step: 'finish', outcome: 'ok', code: 'BACKGROUND', at: this.now() });
    try {
      await this.finishOnce(id, token, ctx, record);
    } catch (e) {
      // Refused (a 4xx): the session cannot be completed, which is no job failure; its status stays as it is.
      if (e instanceof IncodeError && e.isClientError) return status;
      throw e;
    }
    return (await this.d.incode.getOnboardingStatus(token, id, ctx)).onboardingStatus;
  }

  /**
   * Whether Incode's processing of a session whose captures all went through is done, so finish-status may be called:
   * its status says POST_PROCESSING_FINISHED, or post-processing's own poll (isfinished) says finished. That poll is
   * known from Incode's samples and SDKs, not its reference: a 404 from it (while the session's status reads fine, so
   * the poll itself is what is missing) leaves the status to go by, and FACE_VALIDATION_FINISHED, the last module
   * status of an ID and selfie flow, is the best it tells (incode-api.md 4.7 leaves its order against
   * POST_PROCESSING_FINISHED open, so processing may still be ending then). Another refusal (not of the token: a poll this
   * account may not use) is gone by the status the same way; a failure (5xx, timeout, a refused token) is thrown, for
   * the caller to retry or give up as it does with its other calls.
   */
  async processingDone(interviewId: string, token: string, status: string, ctx: CallContext): Promise<boolean> {
    if (status === 'POST_PROCESSING_FINISHED') return true;
    try {
      return (await this.d.incode.isPostProcessFinished(token, interviewId, ctx)).finished === true;
    } catch (err) {
      if (!(err instanceof IncodeError) || ctx.signal?.aborted) throw err;
      // No such poll at this deployment (404), or one this account may not use (another refusal, not for the token:
      // that fails every call): going by the status, as a status that never reads POST_PROCESSING_FINISHED (the ID's
      // post-processing ended before the face) would otherwise keep the session from being completed for good.
      if (err.isClientError && err.code !== 'INCODE_UNAUTHORIZED') {
        const log = this.logFor(ctx.requestId);
        if (err.code === 'INCODE_NOT_FOUND') log.debug({ interviewId, status }, 'no post-processing poll at Incode: going by the status');
        else log.warn({ interviewId, code: err.code }, 'post-processing poll refused: going by the status');
        return status === 'FACE_VALIDATION_FINISHED';
      }
      throw err;
    }
  }

  /**
   * finish-status, once per session: not again once a `finish` step records one that went through, and one call at a
   * time in this process (replicas sharing a database may each make it once if they ask at the same moment:
   * a second call re-applies the business rules and fires another webhook, which the inbox takes as a duplicate; the
   * client never repeats one that may have been sent): the orchestrator's wait and a status check (a webhook's, a poll's) can find
   * processing done in the same moment. `record` (the `finish` step) runs before the call is let go, so no one looks
   * between the two and sees neither. A caller that joined a running call gets its outcome and records nothing (its
   * `record` does not run), and stops waiting when its own signal aborts; if the call it joined was stopped by its
   * maker's signal (a job's deadline, a shutdown), a joined caller that was not stopped makes the call again itself.
   */
  async finishOnce(interviewId: string, token: string, ctx: CallContext, record?: () => Promise<unknown>): Promise<void> {
    const running = this.finishing.get(interviewId);
    if (running) {
      try {
        return await untilAborted(running.done, ctx.signal, () => incodeErrorFromTransport('finishStatus', { name: 'AbortError' }));
      } catch (err) {
        if (!running.signal?.aborted || ctx.signal?.aborted) throw err;
        if (this.finishing.get(interviewId) === running) this.finishing.delete(interviewId);
        return this.finishOnce(interviewId, token, ctx, record);
      }
    }
    const entry = {
      done: (async () => {
        // One that went through already (this process's wait or a status check, one after the other rather than
        // together, or another replica's) is not made again: inside the entry, so no caller slips in between.
        if (finishRecorded(await this.d.store.listSteps(interviewId))) return;
        await this.d.incode.finishStatus(token, ctx);
        await record?.();
      })(),
      signal: ctx.signal,
    };
    this.finishing.set(interviewId, entry);
    try {
      await entry.done;
    } finally {
      if (this.finishing.get(interviewId) === entry) this.finishing.delete(interviewId);
    }
  }

  private readonly finishing = new Map<string, { done: Promise<void>; signal?: AbortSignal }>();

  /** Moves the session forward (never back) and starts the results job when the status has results. */
  async apply(interviewId: string, status: string, source: Source, requestId?: string): Promise<void> {
    const now = this.now();
    const rank = statusRank(status);
    const { changed, session } = await this.d.store.advanceStatus(interviewId, status, rank, rank === PROGRESS_RANK, now);
    // Erased while this check read Incode: nothing more is done for it (no results job naming its status either).
    if (!session || session.resultsStatus === 'erased') return;
    const current = session.onboardingStatus;
    // Not only when this call moved the status: a check run again after dying between these writes (a kill, a store
    // failure) finds the status recorded and must still queue what it would have queued.
    const wantResults = hasResults(current) && (changed || source === 'refresh' || session.resultsStatus === 'failed' || resultsBehind(session));
    if (wantResults) {
      // Results found behind in a session read before another replica's results job for this status finished: that
      // job's dedupe key no longer holds once it is done, and its work would be done again (score and OCR read twice).
      // Not for a move of the status or a refresh, which ask for a new read.
      const behindOnly = !changed && source !== 'refresh';
      const enq = await this.d.store.enqueueJob(
        {
          kind: 'results',
          subject: interviewId,
          payload: { status: current, source },
          runAt: now,
          dedupeKey: `results:${interviewId}:${current}`,
          ...(behindOnly ? { unlessDoneSince: now } : {}),
        },
        now,
      );
      if (enq) this.d.kick?.();
    }
    if (current === 'EXPIRED' && session.resultsStatus === 'pending') await this.failResults(interviewId, 'SESSION_EXPIRED', now);
    // Not only when this call moved the status: one that died after the move and before reviving runs again unchanged.
    await this.revive(interviewId, session, requestId);
    // Polling stops last: until the results job is queued, the next poll is what repairs a check that died here (so not
    // keepsPolling, which would count the results just queued as still missing). And only the poll this check saw: the results job may already have stored a `review` and scheduled the poll that
    // waits for the reviewer's verdict, which must stay.
    if (isTerminal(current) && !awaitsVerdict(session) && session.nextPollAt !== null) await this.d.store.stopPolling(interviewId, session.nextPollAt);
  }

  private async fetchResults(job: Job, ctx: CallContext): Promise<void> {
    const id = job.subject;
    const session = await this.d.store.getSession(id);
    if (!session || session.resultsStatus === 'erased') return this.done(job);
    const token = await this.readToken(session, id, ctx, job);
    if (!token) return this.done(job);
    const incode = this.d.incode;
    // Read before this attempt stores anything: results stored since the job was queued come from an earlier attempt
    // of it (the job failed after storing, or outlived its lease) or from a later fetch, and either way the repair was
    // counted then. Only for a poll's job, the one that can be a repair.
    const storedSinceQueued =
      job.payload.source === 'poll' ? await this.d.store.resultsFetchedAt(id).then((at) => at !== null && at >= job.createdAt, () => true) : true;
    try {
      // No finish-status here: results are read at ONBOARDING_FINISHED or at a reviewer's verdict, which comes after it,
      // and finish-status applies the flow's business rules and recalculates the score again (incode-api.md 4.8).
      // Results are ordered by when their fetch started: a slow job's older answer never replaces a newer one.
      const fetchedAt = this.now();
      const [scores, ocr] = await bothReads(incode.getScore(token.value, id, ctx), incode.getOcrData(token.value, id, ctx));
      const now = this.now();
      // The session's current status decides (a reviewer's verdict may have arrived meanwhile).
      const latest = (await this.d.store.getSession(id)) ?? session;
      const decision = decisionFor(latest.onboardingStatus, scores);
      // The customer's callback is queued in the results' own write: a crash right after it cannot lose the callback,
      // and an erasure cannot fall between the two and leave a job naming the decision after it.
      const callback: NewJob | undefined = this.d.config.callback.url
        ? // A new event for each change of status or decision (A, B, then A again is three), none for a refresh that
          // changed nothing; not a dedupe key, which an event of the same state still running would refuse.
          // Ordered by the fetch of the results they announce, as the stored results themselves are.
          { kind: 'callback', subject: id, payload: { onboardingStatus: latest.onboardingStatus, decision, fetchedAt }, runAt: now, unlessRepeat: 'fetchedAt' }
        : undefined;
      if (!(await this.d.store.saveResults(id, { scores, ocr, fetchedAt }, decision, now, callback))) {
        // Erased meanwhile, or a fetch that started later stored its results (and sends its own callback): this
        // older answer must not reach the customer's backend after the newer one.
        this.logFor(ctx.requestId).info({ interviewId: id }, 'results not stored: the session was erased or has newer results');
        return;
      }
      this.d.metrics.resultsStored.inc({ decision });
      // A repair only when no webhook for this status came at all: one still waiting in the queue (backoff, a deep
      // queue) or one being checked by the orchestrator's own wait does not count.
      // A metric only: a failed lookup must not fail a job whose results are stored.
      if (!storedSinceQueued && !(await this.d.store.hasEvent(webhookEventKey(id, String(job.payload.status))).catch(() => true)))
        this.d.metrics.pollingRepairs.inc();
      if (callback) this.d.kick?.();
      // Finished but left to a reviewer: the verdict is a status change of its own, and a lost webhook for it must not
      // leave the decision at review for good, so polling goes on (slowly, within POLL_GIVE_UP_HOURS) until it comes.
      if (awaitsVerdict({ onboardingStatus: latest.onboardingStatus, decision }) && !this.pollingGaveUp(latest, now)) {
        const at = this.firstPollAt(latest.origin, now);
        if (at !== null) await this.d.store.schedulePoll(id, at, latest.pollAttempts);
      }
      // Not the decision: with the interviewId it says how a person's verification ended, and logs outlive an erasure.
      this.logFor(ctx.requestId).info({ interviewId: id }, 'results stored');
      // Scores a reviewer has decided already (MANUAL_OK, MANUAL_FAIL) at a status from before the verdict: the status
      // was read before the verdict came, and the verdict's webhook may be lost, after which nothing would read the
      // status again (the decision is no longer review). A check is queued as that webhook's would be: it reads the
      // status, with backoff while the read is still behind, and applies the verdict with its own event.
      const verdict = latest.onboardingStatus === 'ONBOARDING_FINISHED' ? verdictStatusOf(scores.overall?.status) : null;
      if (verdict) await this.checkForVerdict(id, verdict);
    } catch (err) {
      throw this.asJobError(err, token, id, ctx);
    }
  }

  /**
   * A check of a session whose scores show a reviewer's verdict its status does not, as the verdict's webhook would
   * queue it (claiming that status): one per session at a time. A failure to queue it is only logged: the results are
   * stored, and the verdict's webhook or a refresh still applies it.
   */
  private async checkForVerdict(id: string, verdict: string): Promise<void> {
    const now = this.now();
    try {
      // A poll's in all but its claim: a verdict it brings is a repair of the lost webhook's (the metric counts it).
      await this.d.store.enqueueJob({ kind: 'verify', subject: id, payload: { source: 'poll', claimed: verdict, fromScores: true }, runAt: now, dedupeKey: `verify:${id}:verdict` }, now);
      this.d.kick?.();
    } catch (err) {
      this.d.log.warn({ interviewId: id, err: loggedError(err) }, "queueing the check of a reviewer's verdict the scores show failed; its webhook or a refresh applies it");
    }
  }

  /** DELETE /omni/interview with an executive token; a session Incode no longer has is deleted already. */
  private async deleteAtIncode(job: Job, ctx: CallContext): Promise<void> {
    const id = job.subject;
    const exec = this.d.executiveTokens;
    // The session's own token was erased with it: only an executive token can still name the session.
    if (!exec.configured) throw new JobError('EXECUTIVE_CREDENTIALS_MISSING', false);
    let token: string;
    try {
      token = await exec.get(ctx);
    } catch (err) {
      throw this.asJobError(err, null, id, ctx);
    }
    let answer;
    try {
      answer = await this.d.incode.deleteInterview(token, id, ctx);
    } catch (err) {
      if (!(err instanceof IncodeError && err.code === 'INCODE_NOT_FOUND')) throw this.asJobError(err, { executive: true, value: token }, id, ctx);
    }
    // An answer that says it did not delete is a refusal, never recorded as a deletion.
    if (answer?.success === false) throw new JobError('INCODE_DELETE_REFUSED', false);
    await this.d.store.audit('incode-deleted', id, {}, this.now());
    this.logFor(ctx.requestId).info({ interviewId: id }, 'session deleted at Incode');
  }

  private async callback(job: Job, signal?: AbortSignal): Promise<void> {
    const { url, secrets } = this.d.config.callback;
    if (!url || !secrets.length) return;
    // Erased since it was queued: the customer asked for the session to be forgotten, so nothing more is said about it.
    const session = await this.d.store.getSession(job.subject);
    if (!session || session.resultsStatus === 'erased') return;
    const event = job.payload.event === 'results_failed' ? await this.failedEvent(job, session) : readyEvent(job, session);
    if (!event) return;
    const ok = await sendCallback(url, secrets, event, undefined, signal);
    if (!ok.delivered) throw new JobError(ok.code, true);
  }

  /** The event of results that failed for good, unless the session has left that state (a refresh stored results since). */
  private async failedEvent(job: Job, session: SessionRecord): Promise<CallbackEvent | null> {
    if (session.resultsStatus !== job.payload.resultsStatus) return null;
    // Only the session's latest failure speaks: one revived and failed again since queued its own event.
    const at = (j: Job) => (typeof j.payload.fetchedAt === 'number' ? j.payload.fetchedAt : -Infinity);
    const later = (await this.d.store.listJobs(job.subject)).some((j) => j.kind === 'callback' && j.id !== job.id && j.payload.event === 'results_failed' && at(j) > at(job));
    if (later) return null;
    return {
      // Fixed when queued, the same on every retry (the status may move meanwhile: it is in `data`, as it is now).
      id: callbackEventId(job),
      occurredAt: occurredAt(job),
      type: 'session.results_failed',
      data: { interviewId: job.subject, onboardingStatus: session.onboardingStatus, resultsStatus: session.resultsStatus, code: job.payload.code, updatedAt: new Date(session.updatedAt).toISOString() },
    };
  }

  // ---- helpers ----

  private async done(job: Job): Promise<void> {
    if (job.kind === 'verify' && typeof job.payload.eventKey === 'string') await this.d.store.markEventProcessed(job.payload.eventKey, this.now());
  }

  /**
   * The token a job reads the session with: the session's own for one the broker started, an executive token for any
   * other; null (recorded) when there is none. The session's own gives way to an executive token, where executive
   * credentials are set, once it is past the expiry its claims state (a reviewer's verdict can come after an account's
   * shorter token lifetime), or when Incode refused it at the job's last attempt (SESSION_TOKEN_REFUSED). Which token
   * to try is all the claims decide: Incode still checks whichever is sent.
   */
  private async readToken(session: SessionRecord | null, id: string, ctx: CallContext, job: Job): Promise<{ value: string; executive: boolean } | null> {
    const own = session?.origin === 'broker' ? session.token : null;
    const spent = own !== null && this.d.executiveTokens.configured && (job.lastError === SESSION_TOKEN_REFUSED || pastExpiry(own, this.now()));
    if (own && !spent) return { value: own, executive: false };
    const exec = this.d.executiveTokens;
    if (!exec.configured) {
      const now = this.now();
      await this.d.store.upsertSession({ interviewId: id, origin: 'external', now, nextPollAt: null });
      await this.d.store.setResultsStatus(id, 'unprocessable', 'EXECUTIVE_CREDENTIALS_MISSING', now);
      this.logFor(ctx.requestId).warn({ interviewId: id }, 'session created elsewhere; no executive credentials to read it');
      return null;
    }
    try {
      return { value: await exec.get(ctx), executive: true };
    } catch (err) {
      throw this.asJobError(err, null, id, ctx);
    }
  }

  private asJobError(err: unknown, token: { executive: boolean; value?: string } | null, interviewId: string, ctx: CallContext): JobError {
    if (err instanceof JobError) return err;
    if (err instanceof IncodeError) {
      if (err.code === 'INCODE_UNAUTHORIZED' && token?.executive) {
        this.d.executiveTokens.invalidate(token.value);
        return new JobError(err.code, true);
      }
      // The session's own token refused: its next attempt reads with an executive token (readToken), when there is one.
      if (err.code === 'INCODE_UNAUTHORIZED' && token && this.d.executiveTokens.configured) return new JobError(SESSION_TOKEN_REFUSED, true);
      // Refused for the API key: while a key is rotated one instance can hold a key Incode no longer takes, so the job
      // waits with backoff for a right one (the orchestrator's wait keeps its session for the same reason); a key that
      // stays wrong is still dead-lettered visibly after JOB_MAX_ATTEMPTS. An answer the client could not use (an empty
      // or misshapen score, status or OCR) is read again too: a proxy's glitch passes, and one that stays is
      // dead-lettered just as visibly, never stored as a result to decide from.
      return new JobError(err.code, err.retryable || err.code === 'INCODE_FORBIDDEN' || err.code === 'INCODE_BAD_RESPONSE', err.details.retryAfterMs);
    }
    return unnamedFailure(err, this.logFor(ctx.requestId), { interviewId });
  }
}
