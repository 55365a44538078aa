// autocannon wrapper: a discarded warm-up, then one measured window; returns 2xx/s, latency percentiles and failures.
import autocannon from 'autocannon';

export interface LoadSpec {
  url: string;
  method: 'GET' | 'POST';
  path: string;
  headers?: Record<string, string>;
  body?: string;
  /** Called per request: returns the body and extra headers of that request (unique ids etc.). */
  perRequest?: () => { body?: string; headers?: Record<string, string> };
  connections: number;
  durationS: number;
  warmupS: number;
  timeoutS?: number;
}

export interface LoadResult {
  /** Acknowledged (2xx) responses per second over the measured window. */
  okPerSec: number;
  total: number;
  ok: number;
  non2xx: number;
  /** Connection errors and timeouts. */
  errors: number;
  timeouts: number;
  p50: number;
  p90: number;
  p99: number;
  max: number;
  durationS: number;
  statusCodes: Record<string, number>;
  /** 2xx answers during the discarded warm-up. */
  warmupOk: number;
}

function run(spec: LoadSpec, durationS: number): Promise<autocannon.Result> {
  const base = { 'content-type': 'application/json', ...(spec.headers ?? {}) };
  const request: autocannon.Request = { method: spec.method, path: spec.path, headers: base, body: spec.body };
  if (spec.perRequest) {
    const make = spec.perRequest;
    request.setupRequest = (req) => {
      const r = make();
      return { ...req, body: r.body ?? req.body, headers: { ...base, ...(r.headers ?? {}) } };
    };
  }
  return autocannon({
    url: spec.url,
    connections: spec.connections,
    duration: durationS,
    timeout: spec.timeoutS ?? 10,
    requests: [request],
  });
}

/** onMeasureStart runs between the warm-up and the measured window (e.g. to read CPU counters). */
export async function measure(spec: LoadSpec, onMeasureStart?: () => void): Promise<LoadResult> {
  const warm = spec.warmupS > 0 ? await run(spec, spec.warmupS) : null;
  onMeasureStart?.();
  const r = await run(spec, spec.durationS);
  const statusCodes: Record<string, number> = {};
  for (const [code, v] of Object.entries(r.statusCodeStats ?? {})) statusCodes[code] = v?.count ?? 0;
  const durationS = r.duration || spec.durationS;
  return {
    okPerSec: r['2xx'] / durationS,
    total: r['1xx'] + r['2xx'] + r['3xx'] + r['4xx'] + r['5xx'],
    ok: r['2xx'],
    non2xx: r.non2xx,
    errors: r.errors,
    timeouts: r.timeouts,
    p50: r.latency.p50,
    p90: r.latency.p90,
    p99: r.latency.p99,
    max: r.latency.max,
    durationS,
    statusCodes,
    warmupOk: warm?.['2xx'] ?? 0,
  };
}
