// Starts the bench's children (emulator, broker, floor proxy) with shared credentials, and stops them whatever happens.
import { randomBytes } from 'node:crypto';
import { join } from 'node:path';
import type { EmulatorOptions } from '../src/emulator/app';
import { brokerArgs, freePort, nodeArgs, startChild, tsArgs, type Child } from './processes';

export const API_KEY = 'bench-api-key-0123456789abcdef';
export const CLIENT_ID = 'benchclient';
export const ADMIN_KEY = 'bench-admin-key-0123456789abcdefghij';
export const APP_KEY = 'bench-app-key-0123456789abcdefghij';
export const WEBHOOK_CLIENT_ID = 'bench-incode-webhooks';
export const WEBHOOK_CLIENT_SECRET = 'bench-webhook-secret-0123456789abcdef';
export const EXEC_EMAIL = 'bench-exec@example.com';
export const EXEC_PASSWORD = 'bench-exec-password-0123';
const ENCRYPTION_KEY = `k1:${randomBytes(32).toString('base64')}`;

export interface BenchContext {
  logDir: string;
  tmpDir: string;
  brokerMode: 'compiled' | 'tsx';
  logLevel: string;
  durationS: number;
  warmupS: number;
  /** Interleaved rounds of the paired comparisons (broker vs floor at once, protections OFF vs ON). */
  rounds: number;
}

let seq = 0;
const label = (name: string) => `${String(++seq).padStart(2, '0')}-${name.toLowerCase().replace(/[^a-z0-9]+/g, '-').replace(/-$/, '')}`;

export async function startEmulator(ctx: BenchContext, name: string, opts: Partial<EmulatorOptions> = {}): Promise<Child> {
  const port = await freePort();
  const options: EmulatorOptions = {
    apiKey: API_KEY,
    clientId: CLIENT_ID,
    executiveEmail: EXEC_EMAIL,
    executivePassword: EXEC_PASSWORD,
    processingDelayMs: 1500,
    ...opts,
  };
  return startChild({ name: label(`emulator-${name}`), args: tsArgs('emulator-server.ts'), env: { PORT: String(port), BENCH_EMULATOR_OPTIONS: JSON.stringify(options) }, port, logDir: ctx.logDir });
}

/** Production-like broker env against an emulator child; overrides win. */
export function brokerEnv(ctx: BenchContext, port: number, incodeUrl: string, overrides: Record<string, string> = {}): Record<string, string> {
  return {
    NODE_ENV: 'production',
    PORT: String(port),
    HOST: '127.0.0.1',
    LOG_LEVEL: ctx.logLevel,
    INCODE_API_URL: incodeUrl,
    INCODE_API_KEY: API_KEY,
    INCODE_CLIENT_ID: CLIENT_ID,
    INCODE_EXECUTIVE_EMAIL: EXEC_EMAIL,
    INCODE_EXECUTIVE_PASSWORD: EXEC_PASSWORD,
    DATABASE_URL: `sqlite:${join(ctx.tmpDir, `broker-${port}.db`)}`,
    DATA_ENCRYPTION_KEY: ENCRYPTION_KEY,
    ADMIN_API_KEYS: ADMIN_KEY,
    WEBHOOK_CLIENT_ID,
    WEBHOOK_CLIENT_SECRET,
    // Webhooks only: the poller would add background status reads unrelated to what is measured.
    RESULTS_MODE: 'webhook',
    CALLER_AUTH: 'none',
    RATE_LIMIT_PER_IP: '0',
    RATE_LIMIT_PER_CUSTOMER: '0',
    RATE_LIMIT_PER_IPV6_SITE: '0',
    RATE_LIMIT_PER_SUBJECT: '0',
    RATE_LIMIT_GLOBAL: '0',
    SHUTDOWN_GRACE_MS: '1000',
    SHUTDOWN_DELAY_MS: '0',
    ...overrides,
  };
}

/**
 * V8 flags that trade CPU for memory, both allowed in NODE_OPTIONS. V8's heap growing factor scales with the heap
 * limit: under a 1 GiB limit the heap grows to about 2x what the last full GC kept before the next one, instead of 4x
 * under the 4 GiB default of a large machine (--trace-gc: 30 MB live, a full GC at about 60 MB instead of 125 MB).
 * 8 MB semi-spaces halve the young generation. The README shows how to use them.
 */
export const LEAN_GC_NODE_ARGS = ['--max-old-space-size=1024', '--max-semi-space-size=8'];

export async function startBroker(ctx: BenchContext, name: string, incodeUrl: string, overrides: Record<string, string> = {}, extraNodeArgs: string[] = []): Promise<Child> {
  const port = await freePort();
  return startChild({ name: label(`broker-${name}`), args: [...extraNodeArgs, ...brokerArgs(ctx.brokerMode)], env: brokerEnv(ctx, port, incodeUrl, overrides), port, logDir: ctx.logDir });
}

export async function startFloor(ctx: BenchContext, name: string, incodeUrl: string): Promise<Child> {
  const port = await freePort();
  return startChild({ name: label(`floor-${name}`), args: [...nodeArgs('BENCH_FLOOR_NODE_ARGS'), ...tsArgs('floor-proxy.ts')], env: { PORT: String(port), FLOOR_UPSTREAM: incodeUrl, FLOOR_API_KEY: API_KEY }, port, logDir: ctx.logDir });
}

/** Runs fn with the children it starts, stopping all of them afterwards (also on failure). */
export async function withChildren<T>(fn: (track: (c: Child) => Child) => Promise<T>): Promise<T> {
  const started: Child[] = [];
  try {
    return await fn((c) => {
      started.push(c);
      return c;
    });
  } finally {
    for (const c of started.reverse()) await c.stop().catch(() => undefined);
  }
}
