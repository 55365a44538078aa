// Probes PostgreSQL, Redis and Chromium once; tests needing one are skipped by name when it is absent or unusable.
import { existsSync } from 'node:fs';
import { Client } from 'pg';
import { Redis } from 'ioredis';

// Before any test runs, so a loaded machine is not the reason; a refused connection answers at once anyway. Usable,
// not merely listening: a server that asks for a password, or has no `test` database, skips its tests (saying why)
// instead of failing them.
async function postgresUsable(url: string): Promise<string | null> {
  const c = new Client({ connectionString: url, connectionTimeoutMillis: 2000, statement_timeout: 2000 });
  try {
    await c.connect();
    await c.query('SELECT 1');
    return null;
  } catch (err) {
    return (err as Error).message || String(err);
  } finally {
    await c.end().catch(() => undefined);
  }
}

async function redisUsable(url: string): Promise<string | null> {
  const r = new Redis(url, { lazyConnect: true, connectTimeout: 2000, maxRetriesPerRequest: 0, retryStrategy: () => null, enableOfflineQueue: false });
  r.on('error', () => undefined);
  try {
    await r.connect();
    return (await r.ping()) === 'PONG' ? null : 'no PONG';
  } catch (err) {
    return (err as Error).message || String(err);
  } finally {
    r.disconnect();
  }
}

export default async function globalSetup(): Promise<void> {
  const pgUrl = process.env.TEST_DATABASE_URL ?? 'postgres://postgres@127.0.0.1:5432/test';
  const redisUrl = process.env.TEST_REDIS_URL ?? 'redis://127.0.0.1:6379';
  const chromium = process.env.CHROMIUM_PATH ?? '/usr/bin/chromium';
  const [pgWhy, redisWhy] = await Promise.all([postgresUsable(pgUrl), redisUsable(redisUrl)]);
  // Credentials are not echoed: only the host and the reason.
  const where = (u: string) => new URL(u).host;
  if (pgWhy) process.stderr.write(`PostgreSQL at ${where(pgUrl)} is not usable (${pgWhy}): its tests are skipped (TEST_DATABASE_URL names another)\n`);
  if (redisWhy) process.stderr.write(`Redis at ${where(redisUrl)} is not usable (${redisWhy}): its tests are skipped (TEST_REDIS_URL names another)\n`);
  process.env.TEST_PG_URL = pgWhy ? '' : pgUrl;
  process.env.TEST_REDIS_URL_OK = redisWhy ? '' : redisUrl;
  process.env.TEST_CHROMIUM_PATH = existsSync(chromium) ? chromium : '';
}
