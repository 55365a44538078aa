// Starts the real broker and the real emulator on loopback ports for end-to-end tests.
import type { IncomingMessage, Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { Writable } from 'node:stream';
import type { FastifyInstance } from 'fastify';
import { buildApp, type AppDeps } from '../../src/app';
import { loadConfig, type Config } from '../../src/config';
import { buildEmulator, type EmulatorApp, type EmulatorOptions } from '../../src/emulator/app';

export const TEST_API_KEY = 'test-api-key-0123456789abcdef';
export const ADMIN_KEY = 'admin-key-0123456789abcdefghijkl';
export const WEBHOOK_CLIENT_ID = 'incode-webhooks';
export const WEBHOOK_CLIENT_SECRET = 'webhook-secret-0123456789abcdef';
export const EXEC_EMAIL = 'exec@example.com';
export const EXEC_PASSWORD = 'exec-password-123';
export const ENCRYPTION_KEY = 'k1:' + Buffer.alloc(32, 7).toString('base64');

export interface Running<T = FastifyInstance> {
  app: T;
  url: string;
  close: () => Promise<void>;
}

async function listen(app: FastifyInstance, port = 0): Promise<string> {
  await app.listen({ port, host: '127.0.0.1' });
  const { port: p } = app.server.address() as AddressInfo;
  return `http://127.0.0.1:${p}`;
}

import { freePort } from './free-port';
import { waitFor } from './wait';

export { freePort, waitFor };

export async function startEmulator(opts: Partial<EmulatorOptions> = {}): Promise<Running<EmulatorApp>> {
  const app = buildEmulator({ apiKey: TEST_API_KEY, clientId: 'testclient', executiveEmail: EXEC_EMAIL, executivePassword: EXEC_PASSWORD, processingDelayMs: 50, ...opts });
  const url = await listen(app);
  return { app, url, close: () => app.close() };
}

/** Captures every log line written by an app (to assert that no secret or PII is ever logged). */
export class LogCapture extends Writable {
  lines: string[] = [];
  override _write(chunk: Buffer, _enc: BufferEncoding, cb: () => void): void {
    this.lines.push(...chunk.toString('utf8').split('\n').filter(Boolean));
    cb();
  }
  get text(): string {
    return this.lines.join('\n');
  }
  /** Each line as pino wrote it: its level and message, and the fields it carries. */
  get records(): LogRecord[] {
    return this.lines.map((l) => JSON.parse(l) as LogRecord);
  }
  /** The lines an alert would wake someone for (error and fatal). */
  get errors(): LogRecord[] {
    return this.records.filter((l) => l.level >= 50);
  }
}

export interface LogRecord {
  level: number;
  msg: string;
  code?: string;
  [field: string]: unknown;
}

/** Environment of a broker pointed at a running emulator (non-sandbox: real API key flow). */
export function brokerEnv(incodeUrl: string, overrides: Record<string, string> = {}): Record<string, string> {
  return {
    NODE_ENV: 'test',
    LOG_LEVEL: 'info',
    INCODE_API_URL: incodeUrl,
    INCODE_API_KEY: TEST_API_KEY,
    INCODE_CLIENT_ID: 'testclient',
    INCODE_EXECUTIVE_EMAIL: EXEC_EMAIL,
    INCODE_EXECUTIVE_PASSWORD: EXEC_PASSWORD,
    INCODE_TIMEOUT_MS: '3000',
    INCODE_MAX_RETRIES: '2',
    DATABASE_URL: 'sqlite::memory:',
    DATA_ENCRYPTION_KEY: ENCRYPTION_KEY,
    ADMIN_API_KEYS: ADMIN_KEY,
    WEBHOOK_CLIENT_ID,
    WEBHOOK_CLIENT_SECRET,
    POLL_INTERVAL_MS: '200',
    POLL_MAX_INTERVAL_MS: '1000',
    JOB_BACKOFF_MS: '50',
    RATE_LIMIT_PER_IP: '0',
    RATE_LIMIT_PER_CUSTOMER: '0',
    RATE_LIMIT_PER_IPV6_SITE: '0',
    RATE_LIMIT_PER_SUBJECT: '0',
    EVENT_LOOP_MAX_LAG_MS: '0',
    // A stop is at once unless a test asks for the out-of-rotation delay.
    SHUTDOWN_DELAY_MS: '0',
    ...overrides,
  };
}

export async function startBroker(env: Record<string, string>, deps: AppDeps = {}, port = 0): Promise<Running & { config: Config; logs: LogCapture }> {
  const logs = new LogCapture();
  const config = loadConfig({ ...env, PORT: String(port) });
  const app = await buildApp(config, { logStream: logs, ...deps });
  const url = await listen(app, port);
  return { app, url, config, logs, close: () => app.close() };
}

/** A sandbox broker (no API key): the emulator is mounted in-process; needs a fixed port known before start. */
export async function startSandbox(overrides: Record<string, string> = {}, deps: AppDeps = {}) {
  const port = await freePort();
  const env = {
    NODE_ENV: 'test',
    LOG_LEVEL: 'info',
    DATABASE_URL: 'sqlite::memory:',
    ADMIN_API_KEYS: ADMIN_KEY,
    PUBLIC_URL: `http://127.0.0.1:${port}`,
    EMULATOR_PROCESSING_DELAY_MS: '50',
    POLL_INTERVAL_MS: '200',
    POLL_MAX_INTERVAL_MS: '1000',
    RATE_LIMIT_PER_IP: '0',
    RATE_LIMIT_PER_CUSTOMER: '0',
    RATE_LIMIT_PER_IPV6_SITE: '0',
    RATE_LIMIT_PER_SUBJECT: '0',
    EVENT_LOOP_MAX_LAG_MS: '0',
    ...overrides,
  };
  return startBroker(env, deps, port);
}


/** Waits until the results API shows the session's scores and OCR stored, and returns that view. */
export function waitForResults(brokerUrl: string, interviewId: string, timeoutMs = 20_000): Promise<Record<string, any>> {
  return waitFor(async () => {
    const r = await fetch(`${brokerUrl}/sessions/${interviewId}`, { headers: { authorization: `Bearer ${ADMIN_KEY}` } });
    const body = (await r.json()) as Record<string, any>;
    return r.status === 200 && body.resultsStatus === 'ready' && body;
  }, timeoutMs, 100);
}

/** Emulator webhook settings aimed at a broker at brokerUrl, with the OAuth client the test brokers accept. */
export function webhooksTo(brokerUrl: string, retryDelaysMs = [50, 100, 200]): NonNullable<EmulatorOptions['webhook']> {
  return {
    url: `${brokerUrl}/webhooks/incode`,
    oauth: { tokenUrl: `${brokerUrl}/webhooks/incode/token`, clientId: WEBHOOK_CLIENT_ID, clientSecret: WEBHOOK_CLIENT_SECRET },
    retryDelaysMs,
  };
}

/** The requests a server receives from now on (method and URL), as soon as their headers are in, until stop(). */
export function recordRequests(server: Server) {
  const requests: { method: string; url: string }[] = [];
  const onRequest = (req: IncomingMessage) => requests.push({ method: req.method ?? '', url: req.url ?? '' });
  server.on('request', onRequest);
  return {
    requests,
    get urls() {
      return requests.map((r) => r.url);
    },
    stop: () => void server.off('request', onRequest),
  };
}
