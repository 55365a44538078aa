// docker-compose.yml as deployed: the broker's environment passes the production checks, and the data services stay private.
import { spawn, execFileSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { Redis } from 'ioredis';
import { parse } from 'yaml';
import { loadConfig } from '../../src/config';
import { freePort } from '../helpers/free-port';
import { ROOT } from '../helpers/node-process';
import { waitFor } from '../helpers/wait';

type Service = {
  environment?: Record<string, string | number>;
  env_file?: string | string[];
  ports?: string[];
  networks?: string[];
  command?: string[];
  volumes?: string[];
  stop_grace_period?: string;
  mem_limit?: string;
  logging?: { options?: Record<string, string> };
};
const compose = parse(readFileSync(join(ROOT, 'docker-compose.yml'), 'utf8')) as { services: Record<string, Service>; networks: Record<string, { internal?: boolean }> };
const { broker, postgres, redis } = compose.services;

/** A filled .env as the README asks for (secrets of the lengths and variety production requires). */
const secret = (c: string) => `${c}9Zq8Wm2Xr7Tp4Vn6Ys1Lb9Hd5Kc3Jf0`;
const DOT_ENV: Record<string, string> = {
  POSTGRES_PASSWORD: 'a1b2c3d4e5f60718293a4b5c6d7e8f90',
  BROKER_DB_PASSWORD: 'b1c2d3e4f5a60718293a4b5c6d7e8f91',
  REDIS_PASSWORD: 'c1d2e3f4a5b60718293a4b5c6d7e8f92',
  INCODE_API_URL: 'https://saas-api.incodesmile.com',
  INCODE_API_KEY: 'live-api-key-0123456789',
  DATA_ENCRYPTION_KEY: `k1:${Buffer.from(Array.from({ length: 32 }, (_, i) => (i * 37 + 11) % 256)).toString('base64')}`,
  ADMIN_API_KEYS: secret('a'),
  WEBHOOK_CLIENT_ID: 'incode-webhooks',
  WEBHOOK_CLIENT_SECRET: secret('w'),
  METRICS_TOKENS: secret('m'),
};

/** Compose's interpolation of ${NAME}, ${NAME:?message} and ${NAME:-default}, failing as compose does on a missing required one. */
function interpolate(value: string, vars: Record<string, string>): string {
  return value.replace(/\$\{([A-Z0-9_]+)(?::([?-])([^}]*))?\}/g, (_m, name: string, op?: string, arg?: string) => {
    const v = vars[name];
    if (v !== undefined && v !== '') return v;
    if (op === '?') throw new Error(`compose: ${arg}`);
    return op === '-' ? (arg ?? '') : '';
  });
}

/** The broker container's environment: the .env file (env_file), then the compose file's own environment over it. */
function brokerEnvironment(dotEnv: Record<string, string>): Record<string, string> {
  const own = Object.fromEntries(Object.entries(broker.environment ?? {}).map(([k, v]) => [k, interpolate(String(v), dotEnv)]));
  return { ...dotEnv, ...own };
}

describe('docker-compose.yml', () => {
  it("gives the broker an environment production accepts, with PostgreSQL and Redis as the compose file names them", () => {
    expect(broker.env_file).toBe('.env');
    const config = loadConfig(brokerEnvironment(DOT_ENV));
    expect(config.sandbox).toBe(false);
    expect(config.database.url).toBe('postgres://broker@postgres:5432/broker');
    expect(config.redisUrl).toBe(`redis://:${DOT_ENV.REDIS_PASSWORD}@redis:6379`);
    expect(config.metricsTokens).toHaveLength(1);
    // The broker's own role's password, never the superuser's (which env_file would otherwise hand it with all of .env).
    expect(brokerEnvironment(DOT_ENV).PGPASSWORD).toBe(DOT_ENV.BROKER_DB_PASSWORD);
    expect(brokerEnvironment(DOT_ENV).POSTGRES_PASSWORD).toBe('');
  });

  it.each(['POSTGRES_PASSWORD', 'BROKER_DB_PASSWORD', 'REDIS_PASSWORD', 'INCODE_API_URL', 'INCODE_API_KEY', 'DATA_ENCRYPTION_KEY', 'ADMIN_API_KEYS', 'METRICS_TOKENS'])(
    'refuses to start without %s, naming it',
    (name) => {
      const without = { ...DOT_ENV, [name]: '' };
      const all = () => {
        brokerEnvironment(without);
        for (const s of [postgres, redis]) {
          for (const v of Object.values(s.environment ?? {})) interpolate(String(v), without);
          for (const c of s.command ?? []) interpolate(c, without);
        }
      };
      expect(all).toThrow(new RegExp(`set ${name} in \\.env`));
    },
  );

  it('keeps PostgreSQL and Redis private: no published port, an internal network only, a Redis password', () => {
    expect(compose.networks.backend.internal).toBe(true);
    for (const s of [postgres, redis]) {
      expect(s.ports).toBeUndefined();
      expect(s.networks).toEqual(['backend']);
    }
    expect(broker.networks).toEqual(expect.arrayContaining(['backend', 'default']));
    expect(broker.ports).toEqual(['127.0.0.1:3000:3000']);
    expect(redis.command?.join(' ')).toMatch(/requirepass \$\$REDIS_PASSWORD/);
    // Healthy only when the password works: redis-cli exits 0 on NOAUTH unless told -e.
    expect((redis as { healthcheck?: { test?: string[] } }).healthcheck?.test).toEqual(['CMD', 'redis-cli', '-e', 'ping']);
    // The broker's role is created on PostgreSQL's first start, by the script mounted for it.
    expect(postgres.volumes).toEqual(expect.arrayContaining(['./deploy/postgres-init.sh:/docker-entrypoint-initdb.d/10-broker-role.sh:ro']));
    expect(readFileSync(join(ROOT, 'deploy', 'postgres-init.sh'), 'utf8')).toMatch(/CREATE ROLE broker LOGIN PASSWORD :'pw' NOSUPERUSER/);
    for (const s of [broker, postgres, redis]) {
      expect(s.mem_limit).toEqual(expect.any(String));
      expect(s.logging?.options?.['max-size']).toEqual(expect.any(String));
    }
  });

  it("gives the broker time to drain: stop_grace_period covers the shutdown its pinned settings take", () => {
    const env = brokerEnvironment(DOT_ENV);
    const { shutdownDelayMs, shutdownGraceMs } = loadConfig(env);
    // The values compose pins win over any .env.
    expect(loadConfig(brokerEnvironment({ ...DOT_ENV, SHUTDOWN_GRACE_MS: '60000' })).shutdownGraceMs).toBe(shutdownGraceMs);
    const grace = /^(\d+)s$/.exec(broker.stop_grace_period ?? '');
    expect(Number(grace![1]) * 1000).toBeGreaterThanOrEqual(shutdownDelayMs + 2 * shutdownGraceMs + 5000);
  });

  // The image's entrypoint script is replaced by the redis-server it ends in (it only drops root first); the rest of
  // the command runs as compose would run it, with the machine's own redis-server.
  const redisServer = (() => {
    try {
      return execFileSync('sh', ['-c', 'command -v redis-server'], { encoding: 'utf8' }).trim();
    } catch {
      return '';
    }
  })();
  (redisServer ? it : it.skip)(`runs Redis with its password kept off the command line${redisServer ? '' : ' [skipped: redis-server not installed]'}`, async () => {
    const script = redis.command![2].replace(/\$\$/g, '$').replace('docker-entrypoint.sh redis-server -', 'redis-server - --port PORT --bind 127.0.0.1');
    expect(script).toContain('--port PORT');
    const port = await freePort();
    const env = { PATH: process.env.PATH, ...Object.fromEntries(Object.entries(redis.environment ?? {}).map(([k, v]) => [k, interpolate(String(v), DOT_ENV)])) };
    const child = spawn(redis.command![0], [redis.command![1], script.replace('PORT', String(port))], { env, stdio: 'ignore' });
    const exited = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)));
    const client = (password?: string) => {
      // No ready check: without the password it is refused, which is what is being looked at.
      const r = new Redis({ host: '127.0.0.1', port, password, lazyConnect: true, enableReadyCheck: false, maxRetriesPerRequest: 0, retryStrategy: () => null });
      r.on('error', () => undefined);
      return r;
    };
    try {
      const ok = await waitFor(async () => {
        const r = client(DOT_ENV.REDIS_PASSWORD);
        await r.connect().catch(() => r.disconnect());
        return r.status === 'ready' ? r : null;
      }, 10_000);
      expect(await ok.ping()).toBe('PONG');
      expect(await ok.config('GET', 'maxmemory-policy')).toEqual(['maxmemory-policy', 'volatile-ttl']);
      ok.disconnect();
      const anonymous = client();
      await anonymous.connect();
      await expect(anonymous.ping()).rejects.toThrow(/NOAUTH/);
      anonymous.disconnect();
      // exec: the shell became Redis, which the stop signal reaches, and whose arguments do not hold the password.
      const cmdline = readFileSync(`/proc/${child.pid}/cmdline`, 'utf8');
      expect(cmdline).toMatch(/^redis-server/);
      expect(cmdline).not.toContain(DOT_ENV.REDIS_PASSWORD);
      child.kill('SIGTERM');
      expect(await exited).toBe(0);
    } finally {
      child.kill('SIGKILL');
    }
  });
});
