// The job worker on a real (SQLite) store: its retry schedule (exponential with jitter, capped, never sooner than Incode's Retry-After) and its lease deadline.
import pino from 'pino';
import { createMetrics } from '../../src/plugins/metrics';
import { loadConfig } from '../../src/config';
import type { ExecutiveTokenProvider } from '../../src/incode/executive-token';
import type { IncodeClient } from '../../src/incode/client';
import { IncodeError } from '../../src/incode/errors';
import { JobError, ResultsPipeline, bothReads } from '../../src/results/pipeline';
import { JobWorker, type WorkerOptions } from '../../src/results/worker';
import { Cipher, createStore, type Store } from '../../src/store/index';
import { storeWith } from '../helpers/store-proxy';
import { LogCapture } from '../helpers/harness';
import { waitFor } from '../helpers/wait';

const T0 = 1_800_000_000_000;
let store: Store;
beforeEach(async () => {
  store = createStore({ url: 'sqlite::memory:', cipher: new Cipher([{ id: 'k1', key: Buffer.alloc(32, 3) }]) });
  await store.migrate();
});
afterEach(async () => store.close());

/** A worker on the test's store, quiet and quick to poll; each test names what it is about. */
const worker = (o: Pick<WorkerOptions, 'handle'> & Partial<WorkerOptions>) =>
  new JobWorker({ store, onDead: async () => undefined, concurrency: 1, maxAttempts: 5, backoffMs: 10, idleMs: 10, log: pino({ level: 'silent' }), metrics: createMetrics(), ...o });

/** A pipeline on the test's store at T0, webhooks only, that never calls Incode (the test plays the worker's part). */
const webhookPipeline = () =>
  new ResultsPipeline({
    store,
    config: loadConfig({ RESULTS_MODE: 'webhook' }),
    incode: {} as IncodeClient,
    executiveTokens: { configured: false } as ExecutiveTokenProvider,
    metrics: createMetrics(),
    log: pino({ level: 'silent' }),
    now: () => T0,
  });

/** Runs one attempt of one job that fails with err, and returns the job as the store then holds it. */
async function afterOneFailure(err: Error, opts: { backoffMs: number; maxAttempts?: number; log?: WorkerOptions['log'] }) {
  await store.enqueueJob({ kind: 'results', subject: 'i1', runAt: T0 }, T0);
  const w = worker({
    handle: async () => {
      throw err;
    },
    maxAttempts: opts.maxAttempts ?? 100,
    backoffMs: opts.backoffMs,
    now: () => T0,
    ...(opts.log ? { log: opts.log } : {}),
  });
  w.start();
  try {
    return await waitFor(async () => {
      const [job] = await store.listJobs('i1');
      return job && job.attempts === 1 && job.state === 'queued' ? job : null;
    }, 5_000, 10);
  } finally {
    await w.stop(1000);
  }
}

describe("a dead-lettered job's later retry", () => {
  it('is queued with the dead letter; a fault deciding it is logged and costs only the retry, never the dead letter or the process', async () => {
    const logs = new LogCapture();
    const dead: string[] = [];
    for (const subject of ['ok', 'faulty']) await store.enqueueJob({ kind: 'callback', subject, runAt: T0 }, T0);
    const w = worker({
      handle: async () => {
        throw new JobError('CALLBACK_HTTP_500', true);
      },
      maxAttempts: 1,
      now: () => T0,
      log: pino({ level: 'info' }, logs),
      onDead: async (job) => void dead.push(job.subject),
      retryOf: (job) => {
        if (job.subject === 'faulty') throw new TypeError('a bug');
        return { kind: 'callback', subject: job.subject, runAt: T0 + 3_600_000, dedupeKey: `retry:${job.subject}` };
      },
    });
    w.start();
    try {
      await waitFor(async () => dead.length === 2 || null, 5_000, 10);
    } finally {
      await w.stop(1000);
    }
    const states = async (subject: string) => (await store.listJobs(subject)).map((j) => `${j.state}@${j.runAt - T0}`);
    expect(await states('ok')).toEqual(['dead@0', 'queued@3600000']);
    expect(await states('faulty')).toEqual(['dead@0']);
    expect(logs.text).toContain("deciding a dead-lettered job's later retry failed");
    // The dead letter's line says whether the job is tried again, and when.
    const deadLines = logs.records.filter((l) => l.msg === 'job dead-lettered');
    expect(deadLines.find((l) => l.interviewId === 'ok')?.laterRetryAt).toBe(new Date(T0 + 3_600_000).toISOString());
    expect(deadLines.find((l) => l.interviewId === 'faulty')?.laterRetryAt).toBeNull();
  });
});

describe('a failure the handler did not name', () => {
  const captured = () => {
    const logs = new LogCapture();
    return { lines: logs.lines, log: pino({ level: 'info' }, logs) };
  };

  it('is logged by its kind, never its message, and retried as INTERNAL_ERROR', async () => {
    const { lines, log } = captured();
    const job = await afterOneFailure(new TypeError('Cannot read "MARIA GONZALEZ"'), { backoffMs: 10, log });
    expect(job.lastError).toBe('INTERNAL_ERROR');
    const line = lines.map((l) => JSON.parse(l) as { msg: string; err?: { type?: string }; reqId?: string }).find((l) => l.msg === 'job failed unexpectedly');
    expect(line).toMatchObject({ err: { type: 'TypeError' }, reqId: `job-${job.id}` });
    expect(lines.join('\n')).not.toContain('GONZALEZ');
  });

  it('is named DATABASE_UNAVAILABLE when the database did not answer, so an outage is not taken for a defect', async () => {
    const busy = Object.assign(new Error('database is locked'), { name: 'SqliteError', code: 'SQLITE_BUSY' });
    const { lines, log } = captured();
    const job = await afterOneFailure(busy, { backoffMs: 10, log });
    expect(job.lastError).toBe('DATABASE_UNAVAILABLE');
    expect(lines.some((l) => l.includes('job failed unexpectedly'))).toBe(false);
  });
});

describe('a job whose attempts all lost their lease', () => {
  it('is dead-lettered without running again (a job that kills its process must not crash every replica in turn)', async () => {
    await store.enqueueJob({ kind: 'results', subject: 'i1', runAt: T0 }, T0);
    // Three attempts claimed by workers that died with it: each lease lapsed with no outcome recorded.
    for (let i = 0; i < 3; i++) expect(await store.claimJobs(`dead-${i}`, 1, 10, T0 + i * 100)).toHaveLength(1);
    const ran: string[] = [];
    const dead: string[] = [];
    const metrics = createMetrics();
    const w = worker({
      handle: async (job) => {
        ran.push(job.id);
      },
      onDead: async (_job, code, retryable) => {
        dead.push(`${code}:${retryable}`);
      },
      metrics,
      maxAttempts: 3,
      now: () => T0 + 1000,
    });
    w.start();
    try {
      const job = await waitFor(async () => {
        const [j] = await store.listJobs('i1');
        return j?.state === 'dead' ? j : null;
      }, 5_000, 10);
      expect(job).toMatchObject({ attempts: 4, lastError: 'ATTEMPTS_EXHAUSTED' });
      expect(ran).toEqual([]);
      // Not an outage that outlasted the attempts: nothing retries it later.
      expect(dead).toEqual(['ATTEMPTS_EXHAUSTED:false']);
      // The attempts a dead letter took are observed too, not only those of jobs that finished.
      const attempts = await waitFor(async () => {
        const text = await metrics.registry.getSingleMetricAsString('result_job_attempts');
        return /_count\{kind="results"\} [1-9]/.test(text) ? text : null;
      }, 5_000, 10);
      expect(attempts).toMatch(/^result_job_attempts_count\{kind="results"\} 1$/m);
      expect(attempts).toMatch(/^result_job_attempts_sum\{kind="results"\} 4$/m);
    } finally {
      await w.stop(1000);
    }
  });
});

describe('shutdown', () => {
  it('stops the attempts still running when the grace period ends and queues them again at once', async () => {
    await store.enqueueJob({ kind: 'results', subject: 'i1', runAt: T0 }, T0);
    let started = false;
    const metrics = createMetrics();
    const w = worker({
      metrics,
      // An attempt that would run far past the grace period: it ends only when told to stop.
      handle: (_job, signal) =>
        new Promise<void>((_resolve, reject) => {
          started = true;
          signal.addEventListener('abort', () => reject(new JobError('INCODE_TIMEOUT', true)));
        }),
      maxAttempts: 1,
      leaseMs: 600_000,
      now: () => T0,
    });
    w.start();
    await waitFor(() => started, 5_000, 10);
    await w.stop(200);
    // Queued again now (not after its 10-minute lease), not dead although it was its last attempt, and that attempt
    // given back: a deploy must not use up the attempts of the jobs it interrupts.
    const [job] = await store.listJobs('i1');
    expect(job).toMatchObject({ state: 'queued', runAt: T0, lastError: 'SHUTDOWN', attempts: 0 });
    // Counted as handed back, not as a retry: deploys do not raise the retry rate.
    const counted = await metrics.registry.getSingleMetricAsString('result_jobs_total');
    expect(counted).toMatch(/^result_jobs_total\{kind="results",outcome="released"\} 1$/m);
    expect(counted).not.toMatch(/outcome="retry"/);
    // The next process runs it, on its last attempt still.
    let ran = 0;
    const next = worker({ handle: async () => void ran++, maxAttempts: 1, now: () => T0 });
    next.start();
    try {
      await waitFor(async () => (await store.listJobs('i1'))[0].state === 'done', 5_000, 10);
    } finally {
      await next.stop(1000);
    }
    expect(ran).toBe(1);
  });

  it.each([
    ['fails for good', false],
    ['succeeds', true],
  ])('an attempt that outlived its lease and was claimed again by the same worker records nothing when it %s', async (_, staleOk) => {
    await store.enqueueJob({ kind: 'results', subject: 'i1', runAt: T0 }, T0);
    let clock = T0;
    const attempts: { attempt: number; finish: (ok: boolean) => void }[] = [];
    const w = worker({
      // Each attempt waits to be told how it ends; the abort at the lease's end is ignored, as by a stuck call.
      handle: (job) => new Promise<void>((resolve, reject) => attempts.push({ attempt: job.attempts, finish: (ok) => (ok ? resolve() : reject(new JobError('INCODE_UNAVAILABLE', false))) })),
      maxAttempts: 5,
      concurrency: 2,
      leaseMs: 1000,
      now: () => clock,
    });
    w.start();
    try {
      await waitFor(() => attempts.length === 1, 5_000, 10);
      clock += 5000; // the first attempt's lease lapses: the same worker claims the job again
      await waitFor(() => attempts.length === 2, 5_000, 10);
      // The stale first attempt ends: nothing recorded (the job is neither dead-lettered nor done under the second).
      attempts[0].finish(staleOk);
      await waitFor(() => w.busy === 1, 5_000, 5);
      expect((await store.listJobs('i1'))[0]).toMatchObject({ state: 'running', attempts: 2 });
      attempts[1].finish(true);
      await waitFor(async () => (await store.listJobs('i1'))[0].state === 'done', 5_000, 10);
    } finally {
      await w.stop(1000);
    }
  });
});

describe('job retry schedule', () => {
  it('waits backoff x (0.5 to 1.5) after the first failure', async () => {
    const job = await afterOneFailure(new JobError('INCODE_UNAVAILABLE', true), { backoffMs: 1000 });
    expect(job.runAt - T0).toBeGreaterThanOrEqual(500);
    expect(job.runAt - T0).toBeLessThanOrEqual(1500);
  });

  it('never waits more than 15 minutes, whatever the backoff and the attempt', async () => {
    const job = await afterOneFailure(new JobError('INCODE_UNAVAILABLE', true), { backoffMs: 10 * 3600 * 1000 });
    expect(job.runAt - T0).toBe(15 * 60 * 1000);
  });

  it("waits at least Incode's Retry-After", async () => {
    const job = await afterOneFailure(new JobError('INCODE_RATE_LIMITED', true, 120_000), { backoffMs: 10 });
    expect(job.runAt - T0).toBe(120_000);
  });
});

/** A job handler that runs until its deadline aborts it, noting how long before the lease lapsed that came. */
const untilAborted =
  (aborted: number[]): WorkerOptions['handle'] =>
  (job, signal) =>
    new Promise<void>((_resolve, reject) =>
      signal.addEventListener('abort', () => {
        aborted.push(job.leaseExpiresAt! - Date.now());
        reject(new JobError('INCODE_TIMEOUT', true));
      }),
    );

describe('job lease', () => {
  it("aborts an attempt's signal before its lease lapses, and the attempt is then recorded as this worker's retry", async () => {
    await store.enqueueJob({ kind: 'results', subject: 'i1', runAt: Date.now() }, Date.now());
    // Each abort: how long before the lease of the claim it belongs to lapses.
    const aborted: number[] = [];
    const w = worker({
      handle: untilAborted(aborted),
      concurrency: 2,
      maxAttempts: 5,
      backoffMs: 60_000,
      // Long enough that a loaded machine's timer lag cannot eat the fifth of the lease the abort comes before it.
      leaseMs: 6000,
    });
    w.start();
    try {
      const job = await waitFor(async () => {
        const [j] = await store.listJobs('i1');
        return j && j.attempts === 1 && j.state === 'queued' ? j : null;
      }, 15_000, 10);
      expect(job.lastError).toBe('INCODE_TIMEOUT');
      // One fifth of the lease (1.2 s) before it lapses, never after: no other worker could have claimed the job meanwhile.
      expect(aborted).toHaveLength(1);
      expect(aborted[0]).toBeGreaterThan(0);
      expect(aborted[0]).toBeLessThanOrEqual(1250);
    } finally {
      await w.stop(1000);
    }
  });
});

describe('a slow claim', () => {
  it("counts the attempt's deadline from the lease the claim wrote, so a claim that took long to answer still aborts before it lapses", async () => {
    await store.enqueueJob({ kind: 'results', subject: 'i1', runAt: Date.now() }, Date.now());
    const real = store;
    // The database answers the claim 2.5 s after it was made (a pool wait, a slow statement): its lease started then.
    const slow = storeWith(real, (m) => (m === 'claimJobs' ? async (...args: never[]) => {
      const claimed = await (real.claimJobs as (...a: never[]) => Promise<unknown>)(...args);
      await new Promise((r) => setTimeout(r, 2500));
      return claimed;
    } : null));
    const aborted: number[] = [];
    const w = worker({
      store: slow,
      handle: untilAborted(aborted),
      backoffMs: 60_000,
      leaseMs: 6000,
    });
    w.start();
    try {
      await waitFor(async () => {
        const [j] = await real.listJobs('i1');
        return j && j.attempts === 1 && j.state === 'queued' ? j : null;
      }, 15_000, 10);
      // Still before the lease lapsed (counted from the claim, the abort would have come 1.3 s after it).
      expect(aborted).toHaveLength(1);
      expect(aborted[0]).toBeGreaterThan(0);
    } finally {
      await w.stop(1000);
    }
  });
});

describe('a lapsed lease', () => {
  it('an attempt that fails after another worker took its job over dead-letters nothing (no onDead for a job it no longer holds)', async () => {
    let clock = T0;
    await store.enqueueJob({ kind: 'results', subject: 'i1', runAt: T0 }, T0);
    let fail!: () => void;
    const failing = new Promise<void>((r) => (fail = r));
    let started = false;
    const dead: string[] = [];
    const w = worker({
      handle: async () => {
        started = true;
        await failing;
        throw new JobError('INCODE_BAD_REQUEST', false);
      },
      onDead: async (job, code) => void dead.push(`${job.id}:${code}`),
      concurrency: 1,
      maxAttempts: 5,
      backoffMs: 10,
      leaseMs: 1000,
      now: () => clock,
    });
    w.start();
    try {
      await waitFor(() => started, 5_000, 5);
      // The lease lapses (a stalled event loop or database) and another replica claims the job and is running it.
      clock = T0 + 1000;
      const [taken] = await store.claimJobs('other-replica', 1, 60_000, clock);
      expect(taken).toMatchObject({ attempts: 2, leaseOwner: 'other-replica' });
      fail();
      await waitFor(() => w.busy === 0, 5_000, 5);
      expect(dead).toEqual([]);
      expect((await store.listJobs('i1'))[0]).toMatchObject({ state: 'running', leaseOwner: 'other-replica', lastError: null });
    } finally {
      await w.stop(1000);
    }
  });
});

describe('recording an outcome', () => {
  it('a finished attempt whose completion the store fails to write is not counted as a failure: logged, and run again once its lease lapses', async () => {
    let clock = T0;
    await store.enqueueJob({ kind: 'results', subject: 'i1', runAt: T0 }, T0);
    let broken = true;
    const real = store;
    // The store as the worker sees it: completeJob fails (a disk error, say) while `broken`.
    const ioError = () => Object.assign(new Error('disk I/O error'), { name: 'SqliteError', code: 'SQLITE_IOERR' });
    const flaky = storeWith(real, (method) => (method === 'completeJob' && broken ? async () => Promise.reject(ioError()) : null));
    const lines: { msg: string; err?: { message: string }; code?: string }[] = [];
    const dead: string[] = [];
    let runs = 0;
    const metrics = createMetrics();
    const w = worker({
      store: flaky,
      handle: async () => void runs++,
      onDead: async (_job, code) => void dead.push(code),
      leaseMs: 1000,
      now: () => clock,
      metrics,
      log: pino({ level: 'info' }, { write: (l: string) => void lines.push(JSON.parse(l)) }),
    });
    w.start();
    try {
      await waitFor(() => lines.some((l) => l.msg.includes('recording it failed')), 5_000, 5);
      expect(lines.find((l) => l.msg.includes('recording it failed'))).toMatchObject({ err: { message: 'disk I/O error' } });
      expect((await real.listJobs('i1'))[0]).toMatchObject({ state: 'running', attempts: 1, lastError: null });
      expect(dead).toEqual([]);
      expect((await metrics.jobs.get()).values).toEqual([]);
      broken = false;
      clock = T0 + 1000;
      await waitFor(async () => (await real.listJobs('i1'))[0].state === 'done', 5_000, 10);
      expect(runs).toBe(2);
      expect((await metrics.jobs.get()).values).toMatchObject([{ labels: { kind: 'results', outcome: 'done' }, value: 1 }]);
    } finally {
      await w.stop(1000);
    }
  });
});

describe('a dead-lettered webhook check', () => {
  it("releases its webhook's inbox key as it dies: a redelivery arriving before onDead has run is recorded and checked, not acked and dropped", async () => {
    const pipeline = webhookPipeline();
    const webhook = { interviewId: 'i1', onboardingStatus: 'ONBOARDING_FINISHED' };
    expect(await pipeline.ingestWebhook(webhook)).toEqual({ duplicate: false });
    const [check] = await store.claimJobs('w', 1, 60_000, T0);
    // The worker's last attempt fails: the job is dead-lettered, then onDead runs.
    expect(await store.failJob(check, 'w', 'INCODE_UNAVAILABLE', null, T0)).toBe(true);
    const redelivery = await pipeline.ingestWebhook(webhook);
    await pipeline.onDead(check, 'INCODE_UNAVAILABLE');
    expect(redelivery).toEqual({ duplicate: false });
    const queued = (await store.listJobs('i1')).filter((j) => j.state === 'queued');
    expect(queued).toMatchObject([{ kind: 'verify', payload: { source: 'webhook', eventKey: 'i1:ONBOARDING_FINISHED' } }]);
    // Its check still marks the redelivery processed: a further redelivery is a duplicate.
    expect(await pipeline.ingestWebhook(webhook)).toEqual({ duplicate: true });
  });
});

describe('claims that keep failing (a database outage)', () => {
  it('are tried less and less often and said once, then the worker says it works again and runs the queue', async () => {
    await store.enqueueJob({ kind: 'results', subject: 'i1', runAt: T0 }, T0);
    const logs = new LogCapture();
    let down = true;
    const tries: number[] = [];
    const failing = storeWith(store, (m) =>
      m === 'claimJobs'
        ? async (...args: never[]) => {
            tries.push(performance.now());
            if (down) throw Object.assign(new Error('connect ECONNREFUSED 127.0.0.1:5432'), { code: 'ECONNREFUSED', syscall: 'connect' });
            return (store.claimJobs as (...a: never[]) => Promise<unknown>)(...args);
          }
        : null,
    );
    const ran: string[] = [];
    const w = worker({ store: failing, handle: async (job) => void ran.push(job.subject), log: pino({ level: 'info' }, logs), now: () => T0 });
    w.start();
    try {
      await waitFor(() => tries.length >= 7, 20_000, 10);
      // Each wait at least doubles the last (10 ms idle: 20, 40, 80 ... ms); a loaded machine only stretches them.
      const gaps = tries.slice(1, 7).map((t, i) => t - tries[i]);
      gaps.forEach((gap, i) => expect(gap).toBeGreaterThanOrEqual(0.9 * 10 * 2 ** (i + 1)));
      down = false;
      await waitFor(() => ran.length === 1, 20_000, 10);
      const msgs = logs.lines.map((l) => JSON.parse(l) as { msg: string; failures?: number });
      expect(msgs.filter((l) => l.msg === 'claiming jobs failed')).toHaveLength(1);
      expect(msgs.find((l) => l.msg === 'claiming jobs works again')?.failures).toBeGreaterThanOrEqual(7);
    } finally {
      down = false;
      await w.stop(1000);
    }
  });
});

describe('an open Incode circuit', () => {
  it('puts refused jobs off without using an attempt, the longer the older they are, and other work runs meanwhile', async () => {
    const t0 = Date.now();
    for (let i = 0; i < 50; i++) await store.enqueueJob({ kind: 'verify', subject: `s${i}`, runAt: t0 }, t0);
    // One that has waited ten minutes already, and a customer callback (no Incode call) behind all of them.
    await store.enqueueJob({ kind: 'verify', subject: 'old', runAt: t0 - 600_000 }, t0 - 600_000);
    await store.enqueueJob({ kind: 'callback', subject: 'cb', runAt: t0 + 1 }, t0 + 1);
    const runs = new Map<string, number>();
    const w = worker({
      concurrency: 4,
      handle: async (job) => {
        runs.set(job.subject, (runs.get(job.subject) ?? 0) + 1);
        if (job.kind !== 'callback') throw new JobError('INCODE_CIRCUIT_OPEN', true, 1500);
      },
    });
    w.start();
    try {
      await waitFor(async () => (await store.listJobs('cb'))[0]?.state === 'done' || null, 5000, 5);
      await new Promise((r) => setTimeout(r, 300));
    } finally {
      await w.stop(1000);
    }
    // Each refused job was claimed once in that time, not over and over.
    expect([...runs.values()].every((n) => n === 1)).toBe(true);
    expect(runs.size).toBe(52);
    const verify = (await Promise.all([...Array.from({ length: 50 }, (_, i) => `s${i}`), 'old'].map((id) => store.listJobs(id)))).flat();
    for (const j of verify) {
      // Queued again, its attempt given back and no error of its own.
      expect(j).toMatchObject({ state: 'queued', attempts: 0, lastError: null });
      expect(j.runAt).toBeGreaterThanOrEqual(t0 + 1500);
    }
    // The one that had waited ten minutes: put off for at least half that.
    expect(verify.find((j) => j.subject === 'old')!.runAt).toBeGreaterThanOrEqual(t0 + 300_000);
  });
});

describe('bothReads (a results job reading score and OCR together)', () => {
  const circuitOpen = () => new IncodeError('INCODE_CIRCUIT_OPEN', 'getOcrData', 'paused', { retryAfterMs: 1, notSent: true });
  it("fails with the call that reached Incode, not with the other's refusal by the half-open circuit", async () => {
    // The score read goes as the probe and fails after a while; the OCR read is refused at once.
    const probe = new Promise<never>((_, reject) => setTimeout(() => reject(new IncodeError('INCODE_UNAVAILABLE', 'getScore', 'HTTP 503', { httpStatus: 503 })), 50));
    await expect(bothReads(probe, Promise.reject(circuitOpen()))).rejects.toMatchObject({ code: 'INCODE_UNAVAILABLE' });
    // Both refused by the circuit: that refusal, which puts the job off.
    await expect(bothReads(Promise.reject(circuitOpen()), Promise.reject(circuitOpen()))).rejects.toMatchObject({ code: 'INCODE_CIRCUIT_OPEN' });
    await expect(bothReads(Promise.resolve(1), Promise.resolve('a'))).resolves.toEqual([1, 'a']);
  });
});

describe('a refresh beside a check put off by an open circuit', () => {
  it('runs now in a check of its own instead of joining the one due later', async () => {
    const pipeline = webhookPipeline();
    expect(await pipeline.refresh('i1')).toBe(true);
    // Its check meets the open circuit and is put off for a while, its attempt given back.
    const [check] = await store.claimJobs('w', 1, 60_000, T0);
    expect(await store.deferJob(check, 'w', T0 + 600_000, T0)).toBe(true);
    expect(await pipeline.refresh('i1')).toBe(true);
    const due = (await store.listJobs('i1')).filter((j) => j.state === 'queued' && j.runAt <= T0);
    expect(due).toHaveLength(1);
    // A refresh while that one waits to run joins it.
    expect(await pipeline.refresh('i1')).toBe(false);
  });
});
