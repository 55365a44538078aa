// Fault injection (latency, 503s, hung requests, dropped/duplicated webhooks) with a seedable PRNG for repeatable runs.

export interface FaultOptions {
  latencyMs?: number;
  /** Extra delay only on /omni/start. */
  startLatencyMs?: number;
  /** 0..1: answer a 5xx envelope instead. */
  errorRate?: number;
  /** The statuses of the error fault, one picked at random each time (500-599; default [503]). */
  errorStatuses?: number[];
  /**
   * The error replaces the answer after the call was carried out, as a reply lost on its way back (a gateway's 502 or
   * 504): a start then created its session, a capture was stored. By default the call is refused before it runs.
   */
  errorAfterHandler?: boolean;
  /** 0..1: never answer (until the client gives up, or 60 s). */
  timeoutRate?: number;
  dropWebhookRate?: number;
  duplicateWebhookRate?: number;
  /**
   * When not empty, latency, errors and timeouts hit only requests whose path contains one of these (["/omni/add/"]:
   * Incode's image endpoints failing while start still works, a partial outage).
   */
  faultPaths?: string[];
  seed?: number;
}

/** mulberry32: tiny, fast and good enough to make fault sequences reproducible. */
export function mulberry32(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** The longest delay a Node timer takes: a longer one fires after 1 ms (with a TimeoutOverflowWarning). */
export const MAX_TIMER_MS = 2_147_483_647;

const RATES = ['errorRate', 'timeoutRate', 'dropWebhookRate', 'duplicateWebhookRate'] as const;
const DELAYS = ['latencyMs', 'startLatencyMs'] as const;
const KNOWN: ReadonlySet<string> = new Set([...RATES, ...DELAYS, 'errorStatuses', 'errorAfterHandler', 'faultPaths', 'seed']);

/**
 * Why fault settings cannot be taken as given, or null: a fault test must not pass because its fault was silently
 * clamped away or ignored (a rate of 50 meant as 50 %, a misspelt field).
 */
export function faultSettingsError(given: Record<string, unknown>): string | null {
  // A field left undefined is one not given (an options object built from variables that are unset).
  const opts = Object.fromEntries(Object.entries(given).filter(([, v]) => v !== undefined));
  for (const k of Object.keys(opts)) if (!KNOWN.has(k)) return `unknown fault setting ${k} (known: ${[...KNOWN].join(', ')})`;
  for (const k of RATES) if (k in opts && !(typeof opts[k] === 'number' && opts[k] >= 0 && opts[k] <= 1)) return `${k} must be a number from 0 to 1`;
  for (const k of DELAYS) if (k in opts && !(typeof opts[k] === 'number' && opts[k] >= 0 && opts[k] <= MAX_TIMER_MS)) return `${k} must be a number of milliseconds from 0 to ${MAX_TIMER_MS}`;
  const statuses = opts.errorStatuses;
  if (statuses !== undefined && !(Array.isArray(statuses) && statuses.length > 0 && statuses.every((s) => Number.isInteger(s) && s >= 500 && s <= 599)))
    return 'errorStatuses must be a list of HTTP statuses from 500 to 599';
  if ('errorAfterHandler' in opts && typeof opts.errorAfterHandler !== 'boolean') return 'errorAfterHandler must be true or false';
  if ('faultPaths' in opts && !(Array.isArray(opts.faultPaths) && opts.faultPaths.every((p) => typeof p === 'string' && p !== ''))) return 'faultPaths must be a list of path parts';
  if ('seed' in opts && !(typeof opts.seed === 'number' && Number.isFinite(opts.seed))) return 'seed must be a number';
  return null;
}

const clampRate = (v: number | undefined): number => (typeof v === 'number' && v > 0 ? Math.min(1, v) : 0);
const clampMs = (v: number | undefined): number => (typeof v === 'number' && v > 0 ? Math.floor(v) : 0);

export class Faults {
  latencyMs = 0;
  startLatencyMs = 0;
  errorRate = 0;
  errorStatuses: number[] = [503];
  errorAfterHandler = false;
  timeoutRate = 0;
  dropWebhookRate = 0;
  duplicateWebhookRate = 0;
  faultPaths: string[] = [];
  seed?: number;
  private rand: () => number = Math.random;

  constructor(opts: FaultOptions = {}) {
    this.set(opts);
  }

  /** Merges the given fields; a seed (re)starts the deterministic sequence. Settings out of range throw (faultSettingsError). */
  set(opts: FaultOptions): void {
    const invalid = faultSettingsError(opts as Record<string, unknown>);
    if (invalid) throw new Error(`invalid fault settings: ${invalid}`);
    if ('latencyMs' in opts) this.latencyMs = clampMs(opts.latencyMs);
    if ('startLatencyMs' in opts) this.startLatencyMs = clampMs(opts.startLatencyMs);
    if ('errorRate' in opts) this.errorRate = clampRate(opts.errorRate);
    if ('errorStatuses' in opts) {
      const valid = Array.isArray(opts.errorStatuses) ? opts.errorStatuses.filter((s): s is number => Number.isInteger(s) && s >= 500 && s <= 599).slice(0, 16) : [];
      this.errorStatuses = valid.length ? valid : [503];
    }
    if ('errorAfterHandler' in opts) this.errorAfterHandler = opts.errorAfterHandler === true;
    if ('timeoutRate' in opts) this.timeoutRate = clampRate(opts.timeoutRate);
    if ('dropWebhookRate' in opts) this.dropWebhookRate = clampRate(opts.dropWebhookRate);
    if ('duplicateWebhookRate' in opts) this.duplicateWebhookRate = clampRate(opts.duplicateWebhookRate);
    if ('faultPaths' in opts) this.faultPaths = Array.isArray(opts.faultPaths) ? opts.faultPaths.filter((p): p is string => typeof p === 'string' && p !== '').slice(0, 32) : [];
    if (typeof opts.seed === 'number') {
      this.seed = opts.seed;
      this.rand = mulberry32(opts.seed);
    }
  }

  reset(): void {
    this.set({ latencyMs: 0, startLatencyMs: 0, errorRate: 0, errorStatuses: [503], errorAfterHandler: false, timeoutRate: 0, dropWebhookRate: 0, duplicateWebhookRate: 0, faultPaths: [] });
  }

  snapshot(): Required<Omit<FaultOptions, 'seed'>> & { seed?: number } {
    return {
      latencyMs: this.latencyMs,
      startLatencyMs: this.startLatencyMs,
      errorRate: this.errorRate,
      errorStatuses: [...this.errorStatuses],
      errorAfterHandler: this.errorAfterHandler,
      timeoutRate: this.timeoutRate,
      dropWebhookRate: this.dropWebhookRate,
      duplicateWebhookRate: this.duplicateWebhookRate,
      faultPaths: [...this.faultPaths],
      seed: this.seed,
    };
  }

  /** True when any per-request fault is on, so the request hook can skip all work otherwise. */
  get requestFaultsActive(): boolean {
    return this.latencyMs > 0 || this.errorRate > 0 || this.timeoutRate > 0;
  }

  /** Whether the per-request faults apply to a request for this URL (faultPaths). */
  appliesTo(url: string): boolean {
    return this.faultPaths.length === 0 || this.faultPaths.some((p) => url.includes(p));
  }

  private roll(rate: number): boolean {
    return rate > 0 && (rate >= 1 || this.rand() < rate);
  }

  shouldError(): boolean {
    return this.roll(this.errorRate);
  }

  /** The status of an error the fault answers: one of errorStatuses. */
  errorStatus(): number {
    const list = this.errorStatuses;
    return list.length === 1 ? list[0] : list[Math.min(list.length - 1, Math.floor(this.rand() * list.length))];
  }

  shouldTimeout(): boolean {
    return this.roll(this.timeoutRate);
  }

  shouldDropWebhook(): boolean {
    return this.roll(this.dropWebhookRate);
  }

  shouldDuplicateWebhook(): boolean {
    return this.roll(this.duplicateWebhookRate);
  }
}
