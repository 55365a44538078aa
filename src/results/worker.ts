// Durable job worker: claims leased jobs, runs them with bounded concurrency, retries with backoff, dead-letters.
import { randomUUID } from 'node:crypto';
import type { FastifyBaseLogger } from 'fastify';
import type { Metrics } from '../plugins/metrics';
import type { Job, LaterRetry, Store } from '../store/types';
import { STOP_WIND_DOWN_MS, settledWithin } from '../util/settle';
import { JobError, unnamedFailure } from './pipeline';
import { loggedError } from '../logging';

const DEFAULT_LEASE_MS = 120_000;


/** The longest wait between two attempts of a job. */
const MAX_BACKOFF_MS = 15 * 60 * 1000;
/** Failed claims in a row wait longer each time, up to this (a database outage is not asked five times a second). */
const MAX_CLAIM_BACKOFF_MS = 5000;
/** How often a claim failure that goes on is said again. */
const CLAIM_FAILURE_LOG_MS = 30_000;
/** A job refused by an open circuit comes back no sooner than this. */
const CIRCUIT_DEFER_MIN_MS = 1000;

export interface WorkerOptions {
  store: Store;
  /** `signal` aborts before the job's lease lapses: work still waiting then (an Incode call queued behind the pool's
   *  bound, a slow answer) stops, and the job is retried by this worker instead of run twice at once by another. */
  handle: (job: Job, signal: AbortSignal) => Promise<void>;
  /**
   * `retryable`: its last failure was one worth trying again (an outage, a 5xx, a timeout, a fault of ours), only its
   * attempts ran out; else its failure was final, or it crashed every process that ran it.
   */
  onDead: (job: Job, code: string, retryable: boolean) => Promise<void>;
  /** A later retry of a job that dies now, queued in the same write as its dead letter; null for none. */
  retryOf?: (job: Job, code: string, retryable: boolean) => LaterRetry | null;
  /** Jobs whose finished rows are deleted, not kept as history: routine checks repeated for as long as a session lives. */
  forgetWhenDone?: (job: Job) => boolean;
  concurrency: number;
  maxAttempts: number;
  backoffMs: number;
  /** A job whose worker died is claimed again after this long (kill -9 recovery). */
  leaseMs?: number;
  idleMs?: number;
  log: FastifyBaseLogger;
  metrics: Metrics;
  now?: () => number;
  /**
   * Only the jobs of this session (nothing while it returns null): a process that follows one onboarding of its own
   * (the CLI) on a database a broker shares must not run the broker's jobs with its own settings.
   */
  onlySubject?: () => string | null;
}

/** How long before its lease lapses an attempt is stopped: a fifth of the lease, at most 10 s. */
export function attemptMarginMs(leaseMs: number): number {
  return Math.min(leaseMs / 5, 10_000);
}

export class JobWorker {
  readonly owner = `w-${randomUUID()}`;
  private running = false;
  private active = new Set<Promise<void>>();
  /** The running attempts' deadlines, so that a shutdown can stop them. */
  private readonly deadlines = new Set<AbortController>();
  /** Set when a shutdown's grace ran out: attempts stopped then are handed back, not counted as failures. */
  private interrupted = false;
  private wake: (() => void) | null = null;
  private loop: Promise<void> | null = null;
  private kicked = false;
  private readonly now: () => number;

  constructor(private readonly o: WorkerOptions) {
    this.now = o.now ?? Date.now;
  }

  start(): void {
    if (this.running) return;
    this.running = true;
    this.loop = this.run();
  }

  /** New work was enqueued in this process: look now instead of at the next idle tick. */
  kick(): void {
    this.kicked = true;
    this.wake?.();
  }

  /**
   * Stops claiming; waits for running jobs up to graceMs. Those still running then are stopped and handed back
   * (queued again at once, for another replica or the next start) instead of waiting out their lease.
   */
  async stop(graceMs: number): Promise<void> {
    this.running = false;
    this.wake?.();
    await this.loop;
    if (await settledWithin(this.active, graceMs)) return;
    this.interrupted = true;
    for (const d of this.deadlines) d.abort();
    // Stopped attempts only need to record that (an attempt that ignores the signal keeps its lease).
    await settledWithin(this.active, STOP_WIND_DOWN_MS);
  }

  get busy(): number {
    return this.active.size;
  }

  private async run(): Promise<void> {
    const idleMs = this.o.idleMs ?? 200;
    // Claims failing in a row (a database outage): tried less often, and said once, then every half minute.
    let failures = 0;
    let saidAt = 0;
    while (this.running) {
      const free = this.o.concurrency - this.active.size;
      let claimed: Job[] = [];
      this.kicked = false;
      const subject = this.o.onlySubject ? this.o.onlySubject() : undefined;
      if (free > 0 && subject !== null) {
        try {
          claimed = await this.o.store.claimJobs(this.owner, free, this.o.leaseMs ?? DEFAULT_LEASE_MS, this.now(), subject);
          if (failures > 0) this.o.log.info({ failures }, 'claiming jobs works again');
          failures = 0;
        } catch (err) {
          failures++;
          const at = Date.now();
          if (failures === 1 || at - saidAt >= CLAIM_FAILURE_LOG_MS) {
            saidAt = at;
            this.o.log.error({ err: loggedError(err), failures }, 'claiming jobs failed');
          }
        }
      }
      for (const job of claimed) {
        const p = this.execute(job).finally(() => {
          this.active.delete(p);
          this.wake?.();
        });
        this.active.add(p);
      }
      if (claimed.length === free && free > 0) continue;
      if (this.kicked) continue;
      const waitMs = failures > 0 ? Math.min(idleMs * 2 ** Math.min(failures, 10), MAX_CLAIM_BACKOFF_MS) : idleMs;
      await new Promise<void>((resolve) => {
        const t = setTimeout(resolve, waitMs);
        t.unref();
        this.wake = () => {
          clearTimeout(t);
          this.wake = null;
          resolve();
        };
      });
    }
  }

  private async execute(job: Job): Promise<void> {
    const leaseMs = this.o.leaseMs ?? DEFAULT_LEASE_MS;
    // A margin before the lease lapses, for the attempt to be recorded as this worker's. Counted from the lease the
    // claim wrote, not from now: a claim that took long to answer (a slow database) has used some of it already.
    const deadline = new AbortController();
    const lapsesAt = job.leaseExpiresAt ?? this.now() + leaseMs;
    const timer = setTimeout(() => deadline.abort(), Math.max(lapsesAt - attemptMarginMs(leaseMs) - this.now(), 1));
    timer.unref();
    this.deadlines.add(deadline);
    // reqId: the x-request-id its Incode calls carry, so a job's lines and its calls are found together.
    const jobLog = { reqId: `job-${job.id}`, jobKind: job.kind, interviewId: job.subject, attempt: job.attempts };
    let failure: JobError | null = null;
    try {
      // Claimed again past its last attempt: every earlier attempt lost its lease without recording an outcome, as
      // when the job itself kills the process. Dead-lettered without running, instead of crashing every replica in turn.
      if (job.attempts > this.o.maxAttempts) throw new JobError('ATTEMPTS_EXHAUSTED', false);
      await this.o.handle(job, deadline.signal);
    } catch (err) {
      failure = err instanceof JobError ? err : unnamedFailure(err, this.o.log, jobLog);
    } finally {
      clearTimeout(timer);
      this.deadlines.delete(deadline);
    }
    await (failure ? this.recordFailure(job, failure, jobLog) : this.recordDone(job, jobLog));
  }

  /**
   * Runs one of the store writes that record an attempt's outcome: whether it was recorded. It is not when this claim no
   * longer holds the job (see heldSql: an attempt that outlived its lease, here or elsewhere, records nothing) or when
   * the write failed (the job then runs again once its lease lapses); each is logged as what it is.
   */
  private record(write: Promise<boolean>, jobLog: Record<string, unknown>, what: string): Promise<boolean> {
    return write.then(
      (held) => {
        if (!held) this.o.log.warn(jobLog, `job attempt ${what} after losing its lease; not recorded`);
        return held;
      },
      (err: unknown) => {
        this.o.log.error({ ...jobLog, err: loggedError(err) }, `job attempt ${what}, but recording it failed; the job runs again once its lease lapses`);
        return false;
      },
    );
  }

  /** The job's later retry, if any; a fault in deciding it costs only the retry (logged), never the dead letter. */
  private retryOf(job: Job, e: JobError, jobLog: Record<string, unknown>): LaterRetry | undefined {
    try {
      return this.o.retryOf?.(job, e.code, e.retryable) ?? undefined;
    } catch (err) {
      this.o.log.error({ ...jobLog, err: loggedError(err) }, 'deciding a dead-lettered job\'s later retry failed; none is queued');
      return undefined;
    }
  }

  private async recordDone(job: Job, jobLog: Record<string, unknown>): Promise<void> {
    if (!(await this.record(this.o.store.completeJob(job, this.owner, this.now(), this.o.forgetWhenDone?.(job) ?? false), jobLog, 'finished'))) return;
    this.o.metrics.jobs.inc({ kind: job.kind, outcome: 'done' });
    this.o.metrics.jobAttempts.observe({ kind: job.kind }, job.attempts);
  }

  private async recordFailure(job: Job, e: JobError, jobLog: Record<string, unknown>): Promise<void> {
    const { store, metrics, log } = this.o;
    const failed = { ...jobLog, code: e.code };
    const now = this.now();
    if (this.interrupted) {
      // Not a failure of the job: queued again at once, and the attempt it was on is given back.
      if (!(await this.record(store.releaseJob(job, this.owner, now), failed, 'stopped at shutdown'))) return;
      // Its own outcome: a deploy is no retry, and must not raise the retry rate an alert watches.
      metrics.jobs.inc({ kind: job.kind, outcome: 'released' });
      log.info(jobLog, 'job handed back at shutdown');
    } else if (e.code === 'INCODE_CIRCUIT_OPEN') {
      // Refused before reaching Incode: no attempt of the job's, no line per job. Put off until the circuit may let a
      // call through, and for longer the longer the job has waited (half its age, up to the retry cap), so a backlog
      // met by a long outage is claimed a few times in all, not at every reset of the circuit; other work (customer
      // callbacks) is claimed as usual meanwhile.
      const wait = Math.max(CIRCUIT_DEFER_MIN_MS, e.retryAfterMs ?? 0, Math.min(MAX_BACKOFF_MS, (now - job.createdAt) / 2));
      const putOff = Math.round(Math.min(MAX_BACKOFF_MS, wait * (1 + Math.random() / 2)));
      if (!(await this.record(store.deferJob(job, this.owner, now + putOff, now), failed, 'put off'))) return;
      metrics.jobs.inc({ kind: job.kind, outcome: 'deferred' });
      log.debug(failed, 'job put off: the Incode circuit is open');
    } else if (e.retryable && job.attempts < this.o.maxAttempts) {
      // Exponential backoff with jitter, and no sooner than Incode's Retry-After; both capped (else a high
      // JOB_MAX_ATTEMPTS would park a job for years, past what a bigint run_at holds).
      const jittered = this.o.backoffMs * 2 ** Math.min(job.attempts - 1, 30) * (0.5 + Math.random());
      const delay = Math.round(Math.min(MAX_BACKOFF_MS, Math.max(jittered, e.retryAfterMs ?? 0)));
      if (!(await this.record(store.failJob(job, this.owner, e.code, now + delay, now), failed, 'failed'))) return;
      metrics.jobs.inc({ kind: job.kind, outcome: 'retry' });
      log.warn(failed, 'job failed; retrying');
    } else {
      // Only a job this claim still holds is dead: else onDead would fail the session and release its webhook while
      // the attempt that holds it now may still succeed.
      const then = this.retryOf(job, e, failed);
      if (!(await this.record(store.failJob(job, this.owner, e.code, null, now, then), failed, 'failed for good'))) return;
      // Its other follow-up (the session's row, a poll that can still repair it) is not atomic with the dead-letter: a
      // failure here is said, with the job, so an operator can refresh the session (the sweep repairs a results job's).
      await this.o.onDead(job, e.code, e.retryable).catch((err: unknown) => log.error({ ...failed, followUpError: (err as { code?: string }).code ?? (err as Error).name }, 'dead-letter follow-up failed; refresh the session'));
      metrics.jobs.inc({ kind: job.kind, outcome: 'dead' });
      metrics.deadLetters.inc({ kind: job.kind });
      metrics.jobAttempts.observe({ kind: job.kind }, job.attempts);
      // Whether it is tried again later (a callback, a deletion at Incode; not over a session erased meanwhile) or lost
      // for good: the one line that tells an operator which.
      log.error({ ...failed, laterRetryAt: then ? new Date(then.runAt).toISOString() : null }, 'job dead-lettered');
    }
  }
}
