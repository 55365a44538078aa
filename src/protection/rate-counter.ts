// Fixed-window hit counters: in memory for one process, in Redis when replicas must share one limit.
import type { Redis } from 'ioredis';

export interface RateLimitEntry {
  key: string;
  max: number;
}

/** The first limit a hit went over: which entry, its count and ms until its window resets. */
export interface RateLimitExceeded {
  index: number;
  count: number;
  resetMs: number;
}

export interface RateCounter {
  /**
   * Counts one hit on each key in order, in one step, and stops at the first one over its max (later keys are
   * not charged: a caller refused by its per-IP limit must not spend the global budget). null = all within.
   */
  hitAll(entries: RateLimitEntry[], windowMs: number): Promise<RateLimitExceeded | null>;
  close(): Promise<void>;
}

export class MemoryRateCounter implements RateCounter {
  private windows = new Map<string, { count: number; resetAt: number }>();
  private sweeps = 0;

  async hitAll(entries: RateLimitEntry[], windowMs: number) {
    const now = Date.now();
    // Bounded memory: drop expired windows now and then.
    if (++this.sweeps % 1000 === 0) for (const [k, v] of this.windows) if (v.resetAt <= now) this.windows.delete(k);
    for (let index = 0; index < entries.length; index++) {
      const { key, max } = entries[index];
      let w = this.windows.get(key);
      if (!w || w.resetAt <= now) {
        w = { count: 0, resetAt: now + windowMs };
        this.windows.set(key, w);
      }
      w.count += 1;
      if (w.count > max) return { index, count: w.count, resetMs: w.resetAt - now };
    }
    return null;
  }

  async close() {
    this.windows.clear();
  }
}

// INCR each key (expiry set on its first hit) in one atomic script, so every replica sees one counter per
// window and a request costs one round trip whatever the number of limits. ARGV[1] = window, ARGV[1+i] = max i.
const SCRIPT = `for i, key in ipairs(KEYS) do
  local c = redis.call('INCR', key)
  if c == 1 then redis.call('PEXPIRE', key, ARGV[1]) end
  if c > tonumber(ARGV[i + 1]) then return {i, c, redis.call('PTTL', key)} end
end
return {0, 0, 0}`;

type RateRedis = Redis & { rateLimitHits(numKeys: number, ...args: (string | number)[]): Promise<[number, number, number]> };

export class RedisRateCounter implements RateCounter {
  private readonly redis: RateRedis;
  constructor(
    redis: Redis,
    private readonly prefix = 'incode-broker:rl:',
  ) {
    // defineCommand sends the script by its SHA (EVALSHA), not its text, on every call.
    redis.defineCommand('rateLimitHits', { lua: SCRIPT });
    this.redis = redis as RateRedis;
  }

  async hitAll(entries: RateLimitEntry[], windowMs: number) {
    if (!entries.length) return null;
    const [i, count, ttl] = await this.redis.rateLimitHits(entries.length, ...entries.map((e) => this.prefix + e.key), windowMs, ...entries.map((e) => e.max));
    return i === 0 ? null : { index: i - 1, count, resetMs: ttl > 0 ? ttl : windowMs };
  }

  async close() {
    await this.redis.quit().catch(() => undefined);
  }
}
