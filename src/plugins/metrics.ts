// Prometheus metrics on a registry owned by this app instance (no global default registry).
import { Type, type TSchema } from '@sinclair/typebox';
import fp from 'fastify-plugin';
import type { FastifyReply, FastifyRequest } from 'fastify';
import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from 'prom-client';
import { OPERATION_GROUPS } from '../incode/client';
import { withErrors } from '../schemas';
import { bearerKeyGuard } from './service-auth';

export function createMetrics() {
  const registry = new Registry();
  // Filled in by the results plugin once the store exists; read at scrape time.
  const sources: { jobCounts: null | (() => Promise<Record<string, number>>); circuitStates: null | (() => Iterable<[string, number]>); databaseDown: null | (() => boolean) } = {
    jobCounts: null,
    circuitStates: null,
    databaseDown: null,
  };
  collectDefaultMetrics({ register: registry });
  return {
    registry,
    httpDuration: new Histogram({ name: 'http_request_duration_seconds', help: 'HTTP request latency by route and status', labelNames: ['method', 'route', 'status_code'], buckets: [0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120], registers: [registry] }),
    incodeDuration: new Histogram({ name: 'incode_call_duration_seconds', help: 'Incode call latency by operation and outcome', labelNames: ['operation', 'outcome'], buckets: [0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60], registers: [registry] }),
    // The gauge is read at scrape time: an open-and-closed shorter than the scrape interval shows only here.
    circuitTransitions: new Counter({ name: 'incode_circuit_transitions_total', help: 'Circuit state changes per Incode operation group, by the state entered (open, half-open, closed)', labelNames: ['group', 'to'], registers: [registry] }),
    incodeCircuitRejections: new Counter({ name: 'incode_circuit_rejections_total', help: 'Incode calls refused at once by their open circuit (never sent), by operation', labelNames: ['operation'], registers: [registry] }),
    circuitState: new Gauge({
      name: 'incode_circuit_state',
      help: 'Circuit per Incode operation group: 0 closed, 1 half-open (its pause is over: the next call probes), 2 open (calls refused)',
      labelNames: ['group'],
      registers: [registry],
      // Read at scrape time: an open circuit turns half-open only when a call comes, so a quiet group's change would
      // never be set, and an alert on "open" would fire long after its calls may go again.
      collect() {
        if (sources.circuitStates) for (const [group, value] of sources.circuitStates()) this.set({ group }, value);
      },
    }),
    sessionsCreated: new Counter({ name: 'sessions_created_total', help: 'Incode sessions created through POST /session and /onboardings', labelNames: ['route'], registers: [registry] }),
    webhooks: new Counter({
      name: 'webhooks_received_total',
      help: 'Incode webhooks (and webhook token requests, status "token") by onboarding status (none for a webhook of another type), authentication result and outcome (recorded, duplicate, ignored, invalid, rejected, limited, error; issued for tokens)',
      labelNames: ['status', 'auth', 'outcome'],
      registers: [registry],
    }),
    jobs: new Counter({ name: 'result_jobs_total', help: 'Result pipeline jobs by kind and outcome (done, retry, dead; released: handed back at shutdown; deferred: put off by an open Incode circuit)', labelNames: ['kind', 'outcome'], registers: [registry] }),
    jobAttempts: new Histogram({ name: 'result_job_attempts', help: 'Attempts a job took, finished or dead-lettered', labelNames: ['kind'], buckets: [1, 2, 3, 5, 8, 13, 21], registers: [registry] }),
    deadLetters: new Counter({ name: 'result_jobs_dead_letters_total', help: 'Jobs given up on: their attempts exhausted, or failed for good at once (a refusal no retry can change)', labelNames: ['kind'], registers: [registry] }),
    sources,
    queueDepth: new Gauge({
      name: 'result_jobs_queue_depth',
      help: 'Jobs in the durable queue by state: queued, running, dead (done ones are counted by result_jobs_total)',
      labelNames: ['state'],
      registers: [registry],
      async collect() {
        if (!sources.jobCounts) return;
        let counts: Record<string, number>;
        try {
          counts = await sources.jobCounts();
        } catch {
          // A database outage must not fail the whole scrape (every other metric matters most then); the depth is
          // left out, not shown stale.
          this.reset();
          return;
        }
        // The queue: done jobs are result_jobs_total's to count, not a depth.
        for (const [state, n] of Object.entries(counts)) if (state !== 'done') this.set({ state }, n);
      },
    }),
    pollingRepairs: new Counter({ name: 'polling_repairs_total', help: 'Results that arrived through polling with no webhook', registers: [registry] }),
    resultsStored: new Counter({ name: 'results_stored_total', help: 'Scores and OCR stored, by decision: once per fetch saved, so a refresh or a reviewer\'s verdict that stores newer results of a session counts again', labelNames: ['decision'], registers: [registry] }),
    databaseUnavailable: new Gauge({
      name: 'database_unavailable',
      help: '1 while the database is known to be down (new sessions are refused before Incode is called until a probe has an answer), else 0',
      registers: [registry],
      collect() {
        if (sources.databaseDown) this.set(sources.databaseDown() ? 1 : 0);
      },
    }),
    rateLimitFallback: new Gauge({
      name: 'rate_limit_fallback',
      help: '1 while the shared (Redis) rate-limit counter fails and limits are counted by each process alone, else 0',
      registers: [registry],
    }),
    rateLimitFallbackHits: new Counter({
      name: 'rate_limit_fallback_hits_total',
      help: 'Rate-limit checks counted in process memory because the shared (Redis) counter was failing',
      registers: [registry],
    }),
    rateLimitCounterFull: new Counter({
      name: 'rate_limit_counter_full_total',
      help: 'Requests refused (429) because the in-memory rate counter held its most keys and could not count a new client',
      registers: [registry],
    }),
    reencrypted: new Counter({
      name: 'stored_values_reencrypted_total',
      help: 'Stored values (tokens, customer ids, scores, OCR data, idempotency responses) re-encrypted under the first DATA_ENCRYPTION_KEY by a key rotation',
      registers: [registry],
    }),
    oldKeyValues: new Gauge({
      name: 'stored_values_under_old_keys',
      help: 'Stored values found under another key than the first DATA_ENCRYPTION_KEY by the last complete re-encryption pass (0: older keys can be removed; -1: no pass has completed yet; with a single key, one pass at start counts values under keys no longer listed)',
      registers: [registry],
    }),
    requestsAborted: new Counter({
      name: 'http_requests_aborted_total',
      help: 'Requests whose client went away before their body was whole (uploads given up on), by route: answered to no one, so absent from http_request_duration_seconds',
      labelNames: ['route'],
      registers: [registry],
    }),
    logLinesDropped: new Counter({
      name: 'log_lines_dropped_total',
      help: 'Log lines dropped because stdout was not being read and 64 MiB of them were already waiting',
      registers: [registry],
    }),
    shed: new Counter({
      name: 'load_shed_total',
      help: 'Requests refused with 503 OVERLOADED, by reason: event_loop (it lagged) or upload_budget (POST /onboardings bodies in flight)',
      labelNames: ['reason'],
      registers: [registry],
    }),
  };
}

export type Metrics = ReturnType<typeof createMetrics>;

declare module 'fastify' {
  interface FastifyInstance {
    metrics: Metrics;
  }
}

export interface MetricsOptions {
  /** Bearer tokens that may read /metrics; empty: open. */
  tokens: readonly string[];
}

/** An answer in the latency histogram, by its route's pattern (`unmatched` when none, or none was reached). */
export function observeAnswer(metrics: Metrics, req: FastifyRequest, reply: FastifyReply): void {
  metrics.httpDuration.observe({ method: req.method, route: req.routeOptions.url ?? 'unmatched', status_code: String(reply.statusCode) }, reply.elapsedTime / 1000);
}

export default fp<MetricsOptions>(
  async (app, opts) => {
    const metrics = createMetrics();
    // Every circuit is closed until told otherwise: exported at 0 from the start, so alerts and dashboards see it.
    for (const group of OPERATION_GROUPS) metrics.circuitState.set({ group }, 0);
    metrics.rateLimitFallback.set(0);
    metrics.oldKeyValues.set(-1);
    app.decorate('metrics', metrics);
    app.addHook('onResponse', (req, reply, done) => {
      observeAnswer(metrics, req, reply);
      done();
    });
    // Volumes and decisions are business data: behind a token when one is configured.
    const onRequest = opts.tokens.length > 0 ? [bearerKeyGuard(opts.tokens, 'A metrics token is required (Authorization: Bearer <METRICS_TOKENS token>)')] : [];
    const schema = {
      summary: 'Prometheus metrics, in the text exposition format (Authorization: Bearer <METRICS_TOKENS token> when tokens are set)',
      tags: ['operations'],
      ...(opts.tokens.length > 0 ? { security: [{ metricsToken: [] }] } : {}),
      // Text, not JSON: the document says so by content type (the body is sent as the registry writes it).
      response: withErrors({ 200: { description: 'Prometheus text exposition format 0.0.4', content: { 'text/plain': { schema: Type.String() } } } as unknown as TSchema }, opts.tokens.length > 0 ? [401] : []),
    };
    app.get('/metrics', { schema, onRequest }, async (_req, reply) => {
      reply.header('content-type', metrics.registry.contentType);
      return metrics.registry.metrics();
    });
  },
  { name: 'metrics' },
);
