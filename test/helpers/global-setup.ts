// Probes PostgreSQL, Redis and Chromium once; tests needing one are skipped by name when it is absent.
import { existsSync } from 'node:fs';
import { Socket } from 'node:net';

// Before any test runs, so a loaded machine is not the reason; a refused connection answers at once anyway.
function reachable(host: string, port: number, ms = 2000): Promise<boolean> {
  return new Promise((resolve) => {
    const s = new Socket();
    const done = (ok: boolean) => {
      s.destroy();
      resolve(ok);
    };
    s.setTimeout(ms, () => done(false));
    s.once('error', () => done(false));
    s.connect(port, host, () => done(true));
  });
}

export default async function globalSetup(): Promise<void> {
  const pgUrl = process.env.TEST_DATABASE_URL ?? 'postgres://postgres@127.0.0.1:5432/test';
  const redisUrl = process.env.TEST_REDIS_URL ?? 'redis://127.0.0.1:6379';
  const pg = new URL(pgUrl);
  const redis = new URL(redisUrl);
  const chromium = process.env.CHROMIUM_PATH ?? '/usr/bin/chromium';
  process.env.TEST_PG_URL = (await reachable(pg.hostname, Number(pg.port || 5432))) ? pgUrl : '';
  process.env.TEST_REDIS_URL_OK = (await reachable(redis.hostname, Number(redis.port || 6379))) ? redisUrl : '';
  process.env.TEST_CHROMIUM_PATH = existsSync(chromium) ? chromium : '';
}
