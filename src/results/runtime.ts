// The results pipeline and its job worker, wired the same way for the server (plugins/results.ts) and the CLI.
import { ResultsPipeline, isRoutinePoll, type PipelineDeps } from './pipeline';
import { JobWorker, type WorkerOptions } from './worker';

/** The pipeline's own dependencies; the runtime supplies its kick (the worker). */
export type ResultsRuntimeDeps = Omit<PipelineDeps, 'kick'>;

/** A pipeline whose new jobs wake its worker at once; worker settings come from config unless overridden. */
export function createResultsRuntime(d: ResultsRuntimeDeps, workerOverrides: Partial<Pick<WorkerOptions, 'concurrency' | 'idleMs' | 'onlySubject'>> = {}) {
  let worker: JobWorker | null = null;
  const pipeline = new ResultsPipeline({ ...d, kick: () => worker?.kick() });
  worker = new JobWorker({
    store: d.store,
    handle: (job, signal) => pipeline.handle(job, signal),
    onDead: (job, code, retryable) => pipeline.onDead(job, code, retryable),
    retryOf: (job, code, retryable) => pipeline.retryOf(job, code, retryable),
    forgetWhenDone: isRoutinePoll,
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
