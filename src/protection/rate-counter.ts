// Fixed-window hit counters: in memory for one process, in Redis when replicas must share one limit.
import type { Redis } from 'ioredis';

export interface RateCounter {
  /** Counts one hit on key in the current window; returns the count so far and ms until the window resets. */
  hit(key: string, windowMs: number): Promise<{ count: number; resetMs: number }>;
  close(): Promise<void>;
}

export class MemoryRateCounter implements RateCounter {
  private windows = new Map<string, { count: number; resetAt: number }>();
  private sweeps = 0;

  async hit(key: string, windowMs: number) {
    const now = Date.now();
    let w = this.windows.get(key);
    if (!w || w.resetAt <= now) {
      w = { count: 0, resetAt: now + windowMs };
      this.windows.set(key, w);
    }
    w.count += 1;
    // Bounded memory: drop expired windows now and then.
    if (++this.sweeps % 1000 === 0) for (const [k, v] of this.windows) if (v.resetAt <= now) this.windows.delete(k);
    return { count: w.count, resetMs: w.resetAt - now };
  }

  async close() {
    this.windows.clear();
  }
}

// INCR and set the expiry on the first hit, atomically, so every replica sees one counter per window.
const SCRIPT = `local c = redis.call('INCR', KEYS[1])
if c == 1 then redis.call('PEXPIRE', KEYS[1], ARGV[1]) end
local t = redis.call('PTTL', KEYS[1])
return {c, t}`;

export class RedisRateCounter implements RateCounter {
  constructor(
    private readonly redis: Redis,
    private readonly prefix = 'incode-broker:rl:',
  ) {}

  async hit(key: string, windowMs: number) {
    const [count, ttl] = (await this.redis.eval(SCRIPT, 1, this.prefix + key, String(windowMs))) as [number, number];
    return { count, resetMs: ttl > 0 ? ttl : windowMs };
  }

  async close() {
    await this.redis.quit().catch(() => undefined);
  }
}
