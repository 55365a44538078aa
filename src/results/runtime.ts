// The results pipeline and its job worker, wired the same way for the server (plugins/results.ts) and the CLI.
import type { FastifyBaseLogger } from 'fastify';
import type { Config } from '../config';
import type { IncodeClient } from '../incode/client';
import type { ExecutiveTokenProvider } from '../incode/executive-token';
import type { Metrics } from '../plugins/metrics';
import type { Store } from '../store/types';
import { ResultsPipeline } from './pipeline';
import { JobWorker, type WorkerOptions } from './worker';

export interface ResultsRuntimeDeps {
  store: Store;
  incode: IncodeClient;
  executiveTokens: ExecutiveTokenProvider;
  config: Config;
  metrics: Metrics;
  log: FastifyBaseLogger;
}

/** A pipeline whose new jobs wake its worker at once; worker settings come from config unless overridden. */
export function createResultsRuntime(d: ResultsRuntimeDeps, workerOverrides: Partial<Pick<WorkerOptions, 'concurrency' | 'idleMs'>> = {}) {
  let worker: JobWorker | null = null;
  const pipeline = new ResultsPipeline({ ...d, kick: () => worker?.kick() });
  worker = new JobWorker({
    store: d.store,
    handle: (job) => pipeline.handle(job),
    onDead: (job, code) => pipeline.onDead(job, code),
    concurrency: d.config.results.workerConcurrency,
    maxAttempts: d.config.results.jobMaxAttempts,
    backoffMs: d.config.results.jobBackoffMs,
    leaseMs: d.config.results.jobLeaseMs,
    log: d.log,
    metrics: d.metrics,
    ...workerOverrides,
  });
  return { pipeline, worker };
}
