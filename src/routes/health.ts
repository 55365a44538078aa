// Liveness (/healthz) and readiness (/readyz: configuration valid, database and Incode reachable or, without READINESS_REQUIRES_INCODE, degraded; 503 once out of rotation at shutdown).
import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox';
import { Type } from '@sinclair/typebox';
import { request } from '../util/undici';
import { shuttingDownError } from '../errors';
import { suggestsDatabaseDown } from '../store/unavailable';
import { orError, withErrors } from '../schemas';
import { httpOutcome } from '../incode/client';
import { incodeErrorFromTransport } from '../incode/errors';

const Check = Type.Object({ ok: Type.Boolean(), detail: Type.Optional(Type.String()) });
const Ready = Type.Object({ status: Type.Union([Type.Literal('ready'), Type.Literal('degraded'), Type.Literal('not ready')]), sandbox: Type.Boolean(), checks: Type.Object({ config: Check, database: Check, incode: Check }) });

export interface HealthOptions {
  sandbox: boolean;
  upstreamUrl: string;
  /** Sent with the probe, so a key Incode refuses (a production key against the demo host, say) is not "ready". */
  apiKey: string;
  /** false: Incode unreachable leaves readiness at 200, "degraded" (READINESS_REQUIRES_INCODE). */
  requireIncode: boolean;
  /** false once a SIGTERM took the instance out of rotation (it still serves everything else). */
  inRotation: () => boolean;
}

const healthRoutes: FastifyPluginAsyncTypebox<HealthOptions> = async (app, opts) => {
  let cached: { at: number; ok: boolean; keyRefused?: boolean; detail?: string } = { at: 0, ok: false };
  let checking: Promise<{ ok: boolean; keyRefused?: boolean; detail?: string }> | null = null;

  // Any HTTP answer but a 5xx proves Incode is reachable, and any but a 403 that it takes the API key (the probe has no
  // session token: a 401 is the answer when the key is good). Cached briefly, and one check at a time however many
  // probes arrive (the route is unauthenticated: a burst of probes must not become a burst of calls to Incode). Once a
  // first answer is known, a probe gets the last one at once while the next is fetched: an orchestrator's probe
  // (often timed out after 1 s) never waits on a slow or unreachable Incode.
  function upstream(requestId: string): Promise<{ ok: boolean; keyRefused?: boolean; detail?: string }> {
    if (Date.now() - cached.at < 5000) return Promise.resolve(cached);
    checking ??= check(requestId).finally(() => (checking = null));
    return cached.at > 0 ? Promise.resolve(cached) : checking;
  }

  async function check(requestId: string): Promise<{ ok: boolean; keyRefused?: boolean; detail?: string }> {
    const started = performance.now();
    // Timed like every other Incode call; its usual answer is a 401 (no session token), which says the key is taken.
    const observe = (outcome: string) => app.metrics.incodeDuration.observe({ operation: 'readinessProbe', outcome }, (performance.now() - started) / 1000);
    try {
      const headers = { 'api-version': '1.0', 'x-api-key': opts.apiKey, 'x-request-id': requestId };
      // One deadline for the whole probe, connecting included: undici's connect timeout is 10 s, and an abort signal
      // does not stop a connection attempt still under way, so the probe is raced against the deadline (the request
      // itself is aborted, and ends at its own timeouts).
      const ac = new AbortController();
      const sent = request(opts.upstreamUrl + '/omni/get/onboarding/status', { method: 'GET', headers, headersTimeout: 2000, bodyTimeout: 2000, signal: ac.signal });
      let timer: NodeJS.Timeout | undefined;
      const deadline = new Promise<never>((_, reject) => {
        timer = setTimeout(() => {
          ac.abort();
          reject(Object.assign(new Error('readiness probe timed out'), { code: 'TIMEOUT' }));
        }, 2000);
      });
      // The body read inside the same deadline: the probe is bounded whole, answer included.
      const answered = sent.then(async (r) => (await r.body.dump(), r));
      answered.catch(() => undefined);
      const res = await Promise.race([answered, deadline]).finally(() => clearTimeout(timer));
      observe(res.statusCode >= 200 && res.statusCode < 300 ? 'ok' : httpOutcome(res.statusCode));
      const keyRefused = res.statusCode === 403;
      // A 404 for the status route itself: INCODE_API_URL is not the API's base (a wrong path prefix), and every
      // call of the flow would answer the same.
      const misrouted = res.statusCode === 404;
      cached = { at: Date.now(), ok: res.statusCode < 500 && !keyRefused && !misrouted };
      if (keyRefused) cached = { ...cached, keyRefused, detail: 'INCODE_API_KEY refused (HTTP 403): is INCODE_API_URL the environment of this key?' };
      else if (misrouted) cached.detail = "HTTP 404: is INCODE_API_URL the API's base URL (e.g. https://saas-api.incodesmile.com)?";
      else if (!cached.ok) cached.detail = `HTTP ${res.statusCode}`;
    } catch (err) {
      const { code } = (err ?? {}) as { code?: unknown };
      // The probe's own deadline, or undici's timeouts as the client classes them.
      observe(code === 'TIMEOUT' || incodeErrorFromTransport('readinessProbe', err).code === 'INCODE_TIMEOUT' ? 'timeout' : 'connection_error');
      cached = { at: Date.now(), ok: false, detail: typeof code === 'string' ? code : 'unreachable' };
    }
    return cached;
  }

  app.get('/healthz', { schema: { summary: 'Liveness', tags: ['health'], response: withErrors({ 200: Type.Object({ status: Type.Literal('ok') }) }) } }, async () => ({ status: 'ok' as const }));

  // 503 is the checks when one fails, or the error body when the request is turned away (shutdown, load shedding).
  app.get('/readyz', { schema: { summary: 'Readiness', tags: ['health'], response: withErrors({ 200: Ready, 503: orError(Ready) }) } }, async (req, reply) => {
    if (!opts.inRotation()) throw shuttingDownError();
    const database = await app.store.ping().then(
      // Ready means ready for new sessions too: an answer clears the latch at once, without waiting for its probe.
      () => (app.databaseOutage.answered(), { ok: true }),
      (err: unknown) => {
        // Down as requests find it down: a refused login or a missing database is a configuration to fix, not an outage.
        if (suggestsDatabaseDown(err)) app.databaseOutage.noticed();
        return { ok: false, detail: 'unreachable' };
      },
    );
    const probe = await upstream(req.id);
    const { keyRefused } = probe;
    // What the answer says of Incode, and not the cache's own bookkeeping (its time).
    const incode = { ok: probe.ok, ...(probe.detail !== undefined ? { detail: probe.detail } : {}) };
    // READINESS_REQUIRES_INCODE=false rides out an Incode that cannot be reached, not a key it refuses: that is this
    // instance's configuration, and every call it makes would fail.
    const ok = database.ok && !keyRefused && (incode.ok || !opts.requireIncode);
    // Every 503 says when to ask again: Incode's check is cached for 5 s, so sooner would read the same answer of it.
    if (ok) reply.status(200);
    else reply.status(503).header('retry-after', '5');
    return { status: !ok ? 'not ready' : incode.ok ? 'ready' : 'degraded', sandbox: opts.sandbox, checks: { config: { ok: true }, database, incode } };
  });
};

export default healthRoutes;
