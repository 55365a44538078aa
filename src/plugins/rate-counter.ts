// Decorates the app with the rate-limit counter: Redis (shared by every replica) when REDIS_URL is set, else memory; closes it on close.
import fp from 'fastify-plugin';
import type { FastifyInstance } from 'fastify';
import type { Config } from '../config';
import { FailoverRateCounter, MemoryRateCounter, RedisRateCounter, type RateCounter } from '../protection/rate-counter';

declare module 'fastify' {
  interface FastifyInstance {
    rateCounter: RateCounter;
  }
}

export interface RateCounterPluginOptions {
  config: Config;
  /** A counter the caller owns (tests share one between apps): used as is and not closed with the app. */
  counter?: RateCounter;
}

/** The in-memory counter (alone, or Redis's failover), which says when it is full: a metric, and a warning a minute. */
function memoryCounter(app: FastifyInstance, maxKeys: number): MemoryRateCounter {
  let warnedAt = 0;
  return new MemoryRateCounter({
    maxKeys,
    full: () => {
      app.metrics.rateLimitCounterFull.inc();
      const now = Date.now();
      if (now - warnedAt < 60_000) return;
      warnedAt = now;
      app.log.warn({ maxKeys }, 'the in-memory rate counter is full: clients it is not counting yet are refused (429) until windows end; many addresses or customer ids at once (a flood?), or set REDIS_URL');
    },
  });
}

/** A Redis counter that counts in this process's memory while Redis is down, with a warning and a metric per outage. */
async function redisCounter(app: FastifyInstance, url: string, maxKeys: number): Promise<RateCounter> {
  // Loaded only when configured: ioredis costs memory a single-replica deployment does not need.
  const { Redis } = await import('ioredis');
  // No auto-pipelining: the counter already sends one script call per event-loop turn. Fail fast rather than
  // queue: without a connection a command is refused at once (no offline queue, no resend after a reconnect) and
  // a server that accepts but never answers costs at most commandTimeout; the failover then counts in memory.
  const redis = new Redis(url, { maxRetriesPerRequest: 0, enableOfflineQueue: false, commandTimeout: 2000, lazyConnect: false });
  // Every reconnect attempt emits one: the failover's single warning per outage is the one worth reading, and it
  // carries the last of these (a refused command only says the connection is down, this says why).
  let connectionError: string | undefined;
  // A database number the server does not have (REDIS_URL's /N past its `databases`): ioredis reports the failed
  // SELECT as an error event and goes on in database 0, where another deployment's counters may live. Until a
  // connection has selected it, the shared counter counts as down (the outage's warning names the error).
  let selectFailed: Error | null = null;
  redis.on('connect', () => (selectFailed = null));
  // This connection's trouble is over: an outage that comes later must not be reported with an earlier cause.
  redis.on('ready', () => (connectionError = undefined));
  redis.on('error', (err: Error & { command?: { name?: string } }) => {
    if (err.command?.name === 'select') selectFailed = err;
    connectionError = err.message;
    app.log.debug({ err: { message: err.message } }, 'redis error');
  });
  const shared = new RedisRateCounter(redis);
  const selected: RateCounter = {
    hitAll: (entries, windowMs) => (selectFailed ? Promise.reject(selectFailed) : shared.hitAll(entries, windowMs)),
    peek: (key, windowMs) => (selectFailed ? Promise.reject(selectFailed) : shared.peek(key, windowMs)),
    close: () => shared.close(),
  };
  const failover = new FailoverRateCounter(selected, {
    // Only the message and code: never the URL, which may carry a password.
    outage: (err) => {
      app.metrics.rateLimitFallback.set(1);
      const { message, code } = err as { message?: string; code?: string };
      app.log.warn({ err: { message, code }, connectionError }, 'redis unavailable: rate limits are counted by this process alone until it answers again');
    },
    recovered: (downMs) => {
      app.metrics.rateLimitFallback.set(0);
      app.log.warn({ downMs }, 'redis answers again: rate limits are shared again');
    },
    fallbackHit: () => app.metrics.rateLimitFallbackHits.inc(),
  }, memoryCounter(app, maxKeys));
  // Commands are refused until the connection is ready, so the first requests would take a Redis still
  // connecting for an outage: wait for it, briefly (a dead server is known at its first error, and a start with
  // Redis down goes on in fallback).
  if (redis.status !== 'ready')
    await new Promise<void>((resolve) => {
      const done = () => {
        clearTimeout(timer);
        redis.off('ready', done).off('error', done);
        resolve();
      };
      const timer = setTimeout(done, 2000);
      redis.once('ready', done).once('error', done);
    });
  await failover.check();
  return failover;
}

export default fp<RateCounterPluginOptions>(
  async (app, opts) => {
    const owned = !opts.counter;
    const { redisUrl, rateLimit } = opts.config;
    const counter = opts.counter ?? (redisUrl ? await redisCounter(app, redisUrl, rateLimit.memoryMaxKeys) : memoryCounter(app, rateLimit.memoryMaxKeys));
    app.decorate('rateCounter', counter);
    if (owned) app.addHook('onClose', async () => counter.close());
  },
  { name: 'rate-counter', dependencies: ['metrics'] },
);
