// The job worker on a real (SQLite) store: its retry schedule (exponential with jitter, capped, never sooner than Incode's Retry-After) and its lease deadline.
import pino from 'pino';
import { createMetrics } from '../../src/plugins/metrics';
import { JobError } from '../../src/results/pipeline';
import { JobWorker } from '../../src/results/worker';
import { Cipher, createStore, type Store } from '../../src/store/index';
import { waitFor } from '../helpers/wait';

const T0 = 1_800_000_000_000;
let store: Store;
beforeEach(async () => {
  store = createStore({ url: 'sqlite::memory:', cipher: new Cipher([{ id: 'k1', key: Buffer.alloc(32, 3) }]) });
  await store.migrate();
});
afterEach(async () => store.close());

/** Runs one attempt of one job that fails with err, and returns the job as the store then holds it. */
async function afterOneFailure(err: Error, opts: { backoffMs: number; maxAttempts?: number }) {
  await store.enqueueJob({ kind: 'results', subject: 'i1', runAt: T0 }, T0);
  const worker = new JobWorker({
    store,
    handle: async () => {
      throw err;
    },
    onDead: async () => undefined,
    concurrency: 1,
    maxAttempts: opts.maxAttempts ?? 100,
    backoffMs: opts.backoffMs,
    idleMs: 10,
    log: pino({ level: 'silent' }),
    metrics: createMetrics(),
    now: () => T0,
  });
  worker.start();
  try {
    return await waitFor(async () => {
      const [job] = await store.listJobs('i1');
      return job && job.attempts === 1 && job.state === 'queued' ? job : null;
    }, 5_000, 10);
  } finally {
    await worker.stop(1000);
  }
}

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

describe('job lease', () => {
  it("aborts an attempt's signal before its lease lapses, and the attempt is then recorded as this worker's retry", async () => {
    await store.enqueueJob({ kind: 'results', subject: 'i1', runAt: Date.now() }, Date.now());
    const aborted: number[] = [];
    const started = Date.now();
    const worker = new JobWorker({
      store,
      handle: (_job, signal) =>
        new Promise<void>((_resolve, reject) =>
          signal.addEventListener('abort', () => {
            aborted.push(Date.now() - started);
            reject(new JobError('INCODE_TIMEOUT', true));
          }),
        ),
      onDead: async () => undefined,
      concurrency: 2,
      maxAttempts: 5,
      backoffMs: 60_000,
      leaseMs: 1000,
      idleMs: 10,
      log: pino({ level: 'silent' }),
      metrics: createMetrics(),
    });
    worker.start();
    try {
      const job = await waitFor(async () => {
        const [j] = await store.listJobs('i1');
        return j && j.attempts === 1 && j.state === 'queued' ? j : null;
      }, 5_000, 10);
      expect(job.lastError).toBe('INCODE_TIMEOUT');
      // One fifth of the lease before it lapses: no other worker could have claimed the job meanwhile.
      expect(aborted).toHaveLength(1);
      expect(aborted[0]).toBeGreaterThanOrEqual(700);
      expect(aborted[0]).toBeLessThan(1000);
    } finally {
      await worker.stop(1000);
    }
  });
});
