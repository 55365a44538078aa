// Fixed-window hit counters: in memory for one process, in Redis when replicas must share one limit, and a failover
// that counts in memory while Redis is down.
import { isIPv4, isIPv6 } from 'node:net';
import type { Redis } from 'ioredis';
import { TurnBatch } from '../util/turn-batch';

/**
 * The unit every per-IP limit counts: an IPv4 address, or the /64 of an IPv6 one (one subscriber's whole prefix, which
 * it can hop through at will). IPv4-mapped IPv6 addresses, however written, count as their IPv4 address. The address
 * comes from X-Forwarded-For behind a proxy, written as that proxy writes it ("[v6]:port", "v4:port"): anything that
 * is not an address then is counted as `fallback` (the peer's own address), never as the text itself, which would
 * give every made-up value a budget and a counter of its own.
 */
export function clientNetwork(ip: string, fallback?: string): string {
  // A link-local peer's zone id (fe80::1%eth0) names an interface of this host, not the client.
  const bare = (/^\[([^\]]+)\](?::\d+)?$/.exec(ip)?.[1] ?? /^(\d{1,3}(?:\.\d{1,3}){3}):\d+$/.exec(ip)?.[1] ?? ip).replace(/%.*$/, '');
  if (isIPv4(bare)) return bare;
  if (!isIPv6(bare)) return fallback !== undefined && fallback !== ip ? clientNetwork(fallback) : 'unknown';
  // ::ffff:1.2.3.4, ::ffff:102:304, 0:0:0:0:0:ffff:1.2.3.4...: the URL parser writes every spelling one way (asked
  // only of an address that can be one: every spelling has its ffff).
  const mapped = /ffff/i.test(bare) ? /^\[::ffff:([0-9a-f]{1,4}):([0-9a-f]{1,4})\]$/.exec(new URL(`http://[${bare}]`).hostname) : null;
  if (mapped) {
    const [hi, lo] = [parseInt(mapped[1], 16), parseInt(mapped[2], 16)];
    return `${hi >> 8}.${hi & 255}.${lo >> 8}.${lo & 255}`;
  }
  ip = bare;
  // Expand a "::" gap to the zero groups it stands for; only the first four groups are kept.
  const gap = ip.indexOf('::');
  const left = (gap < 0 ? ip : ip.slice(0, gap)).split(':').filter(Boolean);
  const right = gap < 0 ? [] : ip.slice(gap + 2).split(':').filter(Boolean);
  const groups = gap < 0 ? left : [...left, ...Array(Math.max(0, 8 - left.length - right.length)).fill('0'), ...right];
  return `${groups.slice(0, 4).map((g) => (parseInt(g, 16) || 0).toString(16)).join(':')}::/64`;
}

/**
 * The /48 an IPv6 network (clientNetwork's "a:b:c:d::/64") belongs to, null for IPv4: one site's allocation (a tunnel
 * broker hands out a /48 for free), whose 65,536 /64s would each get the per-IP budget of their own.
 */
export function ipv6Site(network: string): string | null {
  if (!network.endsWith('::/64')) return null;
  return `${network.split(':', 3).join(':')}::/48`;
}

/** The client network of a request: its address as TRUST_PROXY_HOPS reads it, else the peer's own. */
export function requestNetwork(req: { ip: string; socket: { remoteAddress?: string } }): string {
  return clientNetwork(req.ip, req.socket.remoteAddress);
}

export interface RateLimitEntry {
  key: string;
  max: number;
  /** One key every client shares (the service's budget): never refused for room in a full counter, being one. */
  shared?: boolean;
}

/**
 * The first limit a hit went over: which entry, its count and ms until its window resets. `full`: not over its max,
 * but a key it needed could not be counted (an in-memory counter holding its most keys), so it is refused as over.
 */
export interface RateLimitExceeded {
  index: number;
  count: number;
  resetMs: number;
  full?: boolean;
}

export interface RateWindow {
  count: number;
  resetMs: number;
}

export interface RateCounter {
  /**
   * Counts one hit on each key in order, in one step, and stops at the first one over its max (later keys are
   * not charged: a caller refused by its per-IP limit must not spend the global budget). null = all within.
   */
  hitAll(entries: RateLimitEntry[], windowMs: number): Promise<RateLimitExceeded | null>;
  /** The key's count in its current window and the ms left of it, without counting a hit (0 and windowMs when none). */
  peek(key: string, windowMs: number): Promise<RateWindow>;
  close(): Promise<void>;
}

/**
 * The most keys an in-memory counter holds: about 140 bytes each, so some 30 MB. Each address, IPv6 /64 and customer
 * id gets a key, which clients choose: without a bound, a flood from changing addresses (a free IPv6 /48 has 65,536
 * /64s) would grow memory for as long as a window lasts (RATE_LIMIT_WINDOW_MS may be a day).
 */
export const MEMORY_COUNTER_MAX_KEYS = 200_000;

export interface MemoryRateCounterOptions {
  /** MEMORY_COUNTER_MAX_KEYS by default. */
  maxKeys?: number;
  /** Called when a hit needs a new key and the counter is full (once per hit so refused). */
  full?: () => void;
  /** The clock, monotonic by default: windows measured on the wall clock would stretch by any step NTP takes back. */
  now?: () => number;
}

/** Drops the windows of one length that ended: they sit at the front of its map, which is in the order they end. */
function dropEndedOf(windows: Map<string, { resetAt: number }>, now: number): void {
  for (const [k, v] of windows) {
    if (v.resetAt > now) break;
    windows.delete(k);
  }
}

export class MemoryRateCounter implements RateCounter {
  private readonly maxKeys: number;

  private readonly now: () => number;

  constructor(private readonly opts: MemoryRateCounterOptions = {}) {
    this.maxKeys = opts.maxKeys ?? MEMORY_COUNTER_MAX_KEYS;
    this.now = opts.now ?? (() => performance.now());
  }

  // One map per window length (POST /session's RATE_LIMIT_WINDOW_MS, the webhook token endpoint's minute), each in the
  // order its windows began (a window that starts again is moved to the end), so in the order they end: the ended
  // ones are always at the front, and no long window holds short ones behind it.
  private byLength = new Map<number, Map<string, { count: number; resetAt: number }>>();

  private windows(windowMs: number) {
    let w = this.byLength.get(windowMs);
    if (!w) this.byLength.set(windowMs, (w = new Map()));
    return w;
  }

  async hitAll(entries: RateLimitEntry[], windowMs: number) {
    const now = this.now();
    const windows = this.windows(windowMs);
    // Bounded memory at a constant cost per hit: the windows that ended are dropped from the front (a key per address
    // or customer id a client can vary, so the map holds only the current windows' keys).
    dropEndedOf(windows, now);
    // Full, a new key is refused rather than an old one forgotten: forgetting would reset the count of whoever is over
    // a limit, so a flood could buy an address a fresh budget. Those already counted go on as before; a new client
    // waits, at most until the earliest window ends. Checked for all of a request's keys before any is charged.
    let missing = 0;
    let firstMissing = -1;
    for (let index = 0; index < entries.length; index++)
      if (!entries[index].shared && !windows.has(entries[index].key)) {
        missing++;
        if (firstMissing < 0) firstMissing = index;
      }
    if (missing > 0 && this.size + missing > this.maxKeys) {
      for (const w of this.byLength.values()) dropEndedOf(w, now);
      if (this.size + missing > this.maxKeys) {
        this.opts.full?.();
        return { index: firstMissing, count: 0, resetMs: Math.max(1, this.earliestEnd() - now), full: true };
      }
    }
    for (let index = 0; index < entries.length; index++) {
      const { key, max } = entries[index];
      let w = windows.get(key);
      if (!w || w.resetAt <= now) {
        w = { count: 0, resetAt: now + windowMs };
        windows.delete(key);
        windows.set(key, w);
      }
      w.count += 1;
      if (w.count > max) return { index, count: w.count, resetMs: w.resetAt - now };
    }
    return null;
  }

  /** When the first of the held windows ends (each map is in the order its windows end). */
  private earliestEnd(): number {
    let end = Infinity;
    for (const windows of this.byLength.values()) {
      const first = windows.values().next().value as { resetAt: number } | undefined;
      if (first && first.resetAt < end) end = first.resetAt;
    }
    return end === Infinity ? this.now() + 1000 : end;
  }

  async peek(key: string, windowMs: number) {
    const now = this.now();
    const w = this.byLength.get(windowMs)?.get(key);
    return w && w.resetAt > now ? { count: w.count, resetMs: w.resetAt - now } : { count: 0, resetMs: windowMs };
  }

  /** How many keys have a window held in memory (what bounds this counter's memory). */
  get size(): number {
    let n = 0;
    for (const w of this.byLength.values()) n += w.size;
    return n;
  }

  /** Forgets every count (the failover's, once the shared counter counts again). */
  clear(): void {
    this.byLength.clear();
  }

  async close() {
    this.clear();
  }
}

// One atomic script per event-loop turn for every request that turn brought: each request's keys are INCRed in
// order (expiry set on a key's first hit) and its later keys are not charged once one is over its max. Every
// replica sees one counter per key and window; a request costs a share of one round trip and one script call
// instead of its own (a third of the client CPU and half of Redis's, measured). ARGV = window, number of
// requests, then per request its key count and the max of each key; the reply holds three numbers a request:
// the 1-based index of the limit it went over (0 = none), that key's count and its PTTL.
const SCRIPT = `local out, k, a = {}, 1, 3
for r = 1, tonumber(ARGV[2]) do
  local over = 0
  local n = tonumber(ARGV[a]); a = a + 1
  for j = 1, n do
    local key, max = KEYS[k], tonumber(ARGV[a]); k = k + 1; a = a + 1
    if over == 0 then
      local c = redis.call('INCR', key)
      if c == 1 then redis.call('PEXPIRE', key, ARGV[1]) end
      if c > max then over = j; out[#out + 1] = j; out[#out + 1] = c; out[#out + 1] = redis.call('PTTL', key) end
    end
  end
  if over == 0 then out[#out + 1] = 0; out[#out + 1] = 0; out[#out + 1] = 0 end
end
return out`;

// A cap on one script call, so a burst never builds one huge command.
const MAX_BATCH = 256;

type RateRedis = Redis & { rateLimitBatch(numKeys: number, ...args: (string | number)[]): Promise<number[]> };

interface PendingHit {
  entries: RateLimitEntry[];
  windowMs: number;
  resolve: (v: RateLimitExceeded | null) => void;
  reject: (e: unknown) => void;
}

export class RedisRateCounter implements RateCounter {
  private readonly redis: RateRedis;
  private readonly hits = new TurnBatch<PendingHit>((batch) => this.flush(batch));

  constructor(
    redis: Redis,
    private readonly prefix = 'incode-broker:rl:',
  ) {
    redis.defineCommand('rateLimitBatch', { lua: SCRIPT });
    this.redis = redis as RateRedis;
  }

  hitAll(entries: RateLimitEntry[], windowMs: number): Promise<RateLimitExceeded | null> {
    if (!entries.length) return Promise.resolve(null);
    return new Promise((resolve, reject) => this.hits.add({ entries, windowMs, resolve, reject }));
  }

  private flush(batch: PendingHit[]): void {
    // One script call per window length (the same window for every hit in practice), at most MAX_BATCH hits each.
    const byWindow = new Map<number, PendingHit[]>();
    for (const h of batch) {
      const list = byWindow.get(h.windowMs);
      if (list) list.push(h);
      else byWindow.set(h.windowMs, [h]);
    }
    for (const [windowMs, hits] of byWindow) for (let i = 0; i < hits.length; i += MAX_BATCH) this.send(windowMs, hits.slice(i, i + MAX_BATCH));
  }

  private send(windowMs: number, hits: PendingHit[]): void {
    const keys: string[] = [];
    const args: number[] = [windowMs, hits.length];
    for (const h of hits) {
      args.push(h.entries.length);
      for (const e of h.entries) {
        keys.push(this.prefix + e.key);
        args.push(e.max);
      }
    }
    this.redis.rateLimitBatch(keys.length, ...keys, ...args).then(
      (out) =>
        hits.forEach((h, i) => {
          const [over, count, ttl] = [out[3 * i], out[3 * i + 1], out[3 * i + 2]];
          h.resolve(over === 0 ? null : { index: over - 1, count, resetMs: ttl > 0 ? ttl : windowMs });
        }),
      (err: unknown) => hits.forEach((h) => h.reject(err)),
    );
  }

  async peek(key: string, windowMs: number) {
    // Rare (the webhook token endpoint), so plain commands rather than a place in the batched script.
    const [count, ttl] = await Promise.all([this.redis.get(this.prefix + key), this.redis.pttl(this.prefix + key)]);
    return { count: Number(count) || 0, resetMs: ttl > 0 ? ttl : windowMs };
  }

  async close() {
    // Hits queued this turn go out before the connection does.
    this.hits.drain();
    // QUIT needs a live connection; without one, disconnect() is what stops the reconnection timer.
    if (this.redis.status === 'ready') await this.redis.quit().catch(() => undefined);
    else this.redis.disconnect();
  }
}

/** What a FailoverRateCounter reports; the app turns these into one log line per outage and metrics. */
export interface FailoverEvents {
  /** The shared counter failed: limits are counted by this process alone from now on. Once per outage. */
  outage(err: unknown): void;
  /** The shared counter answers again after an outage of downMs; limits are shared again. */
  recovered(downMs: number): void;
  /** One request counted by the fallback during an outage. */
  fallbackHit(): void;
}

/**
 * A shared counter (Redis) that, while it fails, gives way to a per-process one: the limits stay enforced, only no
 * longer summed across replicas, instead of every billable request failing with the limiter's outage. During an
 * outage requests do not wait on the shared counter at all; a probe every probeIntervalMs brings it back.
 */
export class FailoverRateCounter implements RateCounter {
  private downSince: number | null = null;
  private probeTimer: NodeJS.Timeout | null = null;
  private probing = false;
  private closed = false;

  constructor(
    private readonly shared: RateCounter,
    private readonly events: FailoverEvents,
    private readonly fallback: MemoryRateCounter = new MemoryRateCounter(),
    private readonly probeIntervalMs = 1000,
  ) {}

  hitAll(entries: RateLimitEntry[], windowMs: number): Promise<RateLimitExceeded | null> {
    // Not async: one .catch on the shared counter's promise is all the failover adds on the hot path.
    if (this.downSince !== null) return this.counted(entries, windowMs);
    return this.shared.hitAll(entries, windowMs).catch((err: unknown) => {
      this.fail(err);
      return this.counted(entries, windowMs);
    });
  }

  peek(key: string, windowMs: number): Promise<RateWindow> {
    if (this.downSince !== null) return this.fallback.peek(key, windowMs);
    return this.shared.peek(key, windowMs).catch((err: unknown) => {
      this.fail(err);
      return this.fallback.peek(key, windowMs);
    });
  }

  private counted(entries: RateLimitEntry[], windowMs: number): Promise<RateLimitExceeded | null> {
    this.events.fallbackHit();
    return this.fallback.hitAll(entries, windowMs);
  }

  /** Checks the shared counter now (at start, so an outage is reported before the first request meets it). */
  async check(): Promise<void> {
    await this.probeOnce().catch((err: unknown) => this.fail(err));
  }

  private fail(err: unknown): void {
    // Requests in flight when it broke all fail together: the first one opens the outage, the rest join it. Once
    // closed, the hits that closing the client rejects open none (nor a probe timer nothing would ever clear).
    if (this.downSince !== null || this.closed) return;
    this.downSince = Date.now();
    this.events.outage(err);
    this.probeTimer = setInterval(() => this.probe(), this.probeIntervalMs);
    // A probe must never keep a finished process alive.
    this.probeTimer.unref();
  }

  private probe(): void {
    if (this.probing || this.downSince === null) return;
    this.probing = true;
    this.probeOnce().then(
      () => {
        const downMs = Date.now() - (this.downSince ?? Date.now());
        this.stopProbing();
        this.downSince = null;
        // What this process counted alone is the shared counter's to count again: not kept until the next outage.
        this.fallback.clear();
        this.events.recovered(downMs);
      },
      () => undefined,
    ).finally(() => (this.probing = false));
  }

  // A real count on a key of its own, not a PING: an error PING does not see (a full Redis refusing writes) must keep
  // the outage open instead of flapping between outage and recovery at every probe.
  private probeOnce(): Promise<unknown> {
    return this.shared.hitAll([{ key: 'failover-probe', max: Number.MAX_SAFE_INTEGER }], 10_000);
  }

  private stopProbing(): void {
    if (this.probeTimer) clearInterval(this.probeTimer);
    this.probeTimer = null;
  }

  async close() {
    this.closed = true;
    this.stopProbing();
    await Promise.all([this.shared.close(), this.fallback.close()]);
  }
}

/** What a failure-limited check came to: passed, failed (and counted), or not run because the key is over its limit. */
export type LimitedCheck = { outcome: 'passed' } | { outcome: 'failed' } | { outcome: 'refused'; resetMs: number };

/**
 * Limits the failures of a check (a credential guess) per key: once `max` failures are counted in a window, the key is
 * refused before the check even runs, so a right guess among the refusals earns nothing; a passing check is never
 * counted. Checks of one key run one at a time in this process, so a burst cannot read the count before any of its
 * failures is added to it (a shared counter answers over the network); replicas each add at most one more.
 */
export function failureLimiter(counter: RateCounter, max: number, windowMs: number) {
  const tails = new Map<string, Promise<unknown>>();
  // The failures a full in-memory counter could not take, counted together as if from one key: guessing from keys it is
  // not counting is limited too. While that shared budget is spent, a key with no failures of its own is refused
  // unchecked (a right guess among the refusals earns nothing), until the shared window ends.
  let overflow = { count: 0, resetAt: 0 };
  const limited = async (key: string, check: () => boolean): Promise<LimitedCheck> => {
    const seen = await counter.peek(key, windowMs);
    if (seen.count >= max) return { outcome: 'refused', resetMs: seen.resetMs };
    // Monotonic, as the in-memory counter's own windows: a wall clock stepped back would stretch this one too.
    const now = performance.now();
    if (seen.count === 0 && overflow.resetAt > now && overflow.count >= max) return { outcome: 'refused', resetMs: overflow.resetAt - now };
    if (check()) return { outcome: 'passed' };
    const over = await counter.hitAll([{ key, max }], windowMs);
    if (over?.full) {
      const at = performance.now();
      if (overflow.resetAt <= at) overflow = { count: 0, resetAt: at + windowMs };
      overflow.count++;
      return { outcome: 'failed' };
    }
    return over ? { outcome: 'refused', resetMs: over.resetMs } : { outcome: 'failed' };
  };
  return async (key: string, check: () => boolean): Promise<LimitedCheck> => {
    const run = (tails.get(key) ?? Promise.resolve()).then(() => limited(key, check));
    const tail = run.catch(() => undefined);
    tails.set(key, tail);
    try {
      return await run;
    } finally {
      if (tails.get(key) === tail) tails.delete(key);
    }
  };
}
