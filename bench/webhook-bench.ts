// Webhook acknowledgements per second on SQLite and PostgreSQL, with the background verify job left on.
import { randomBytes } from 'node:crypto';
import { Client } from 'pg';
import { request } from 'undici';
import { measure, type LoadResult } from './load';
import type { Child } from './processes';
import { cpuPerRequest } from './session-bench';
import { CLIENT_ID, WEBHOOK_CLIENT_ID, WEBHOOK_CLIENT_SECRET, startBroker, startEmulator, withChildren, type BenchContext } from './stack';

export const WEBHOOK_CONNECTIONS = 10;

export interface WebhookRun {
  store: 'sqlite' | 'postgres';
  connections: number;
  load: LoadResult;
  peakRssMb: number | null;
  /** Broker CPU µs per acknowledged webhook over the window (includes the background verify jobs it ran meanwhile). */
  cpuUsPerReq: number | null;
  /** Verify jobs finished by the end of the window (from /metrics): shows whether the worker keeps up. */
  verifyJobsDone: number | null;
  /** 2xx acknowledgements including the warm-up (compare with verifyJobsDone). */
  webhooksAcked: number;
  error?: string;
}

export async function webhookToken(brokerUrl: string): Promise<string> {
  const res = await request(`${brokerUrl}/webhooks/incode/token`, {
    method: 'POST',
    headers: {
      'content-type': 'application/x-www-form-urlencoded',
      authorization: `Basic ${Buffer.from(`${WEBHOOK_CLIENT_ID}:${WEBHOOK_CLIENT_SECRET}`).toString('base64')}`,
    },
    body: 'grant_type=client_credentials',
  });
  const json = (await res.body.json()) as { access_token?: string };
  if (res.statusCode !== 200 || !json.access_token) throw new Error(`token endpoint answered ${res.statusCode}`);
  return json.access_token;
}

async function verifyJobsDone(brokerUrl: string): Promise<number | null> {
  try {
    const res = await request(`${brokerUrl}/metrics`);
    const text = await res.body.text();
    let n = 0;
    for (const line of text.split('\n')) if (/^result_jobs_total\{[^}]*kind="verify"[^}]*outcome="done"/.test(line)) n += Number(line.split(' ').pop());
    return n;
  } catch {
    return null;
  }
}

/** Interview ids in Incode's shape (24 hex), unique per request: a run prefix plus a counter. */
function idFactory(): () => string {
  const prefix = randomBytes(6).toString('hex');
  let n = 0;
  return () => prefix + (n++).toString(16).padStart(12, '0');
}

async function runOne(ctx: BenchContext, store: 'sqlite' | 'postgres', databaseUrl: string | undefined, log: (m: string) => void): Promise<WebhookRun> {
  return withChildren(async (track) => {
    const emu = track(await startEmulator(ctx, `webhooks-${store}`));
    const broker: Child = track(await startBroker(ctx, `webhooks-${store}`, emu.url, databaseUrl ? { DATABASE_URL: databaseUrl } : {}));
    const token = await webhookToken(broker.url);
    const nextId = idFactory();
    log(`  webhooks / ${store}: ${WEBHOOK_CONNECTIONS} connections, ${ctx.warmupS} s warm-up + ${ctx.durationS} s`);
    let cpu0: number | null = null;
    const load = await measure({
      url: broker.url,
      method: 'POST',
      path: '/webhooks/incode',
      headers: { authorization: `Bearer ${token}` },
      perRequest: () => ({ body: `{"interviewId":"${nextId()}","onboardingStatus":"ONBOARDING_FINISHED","clientId":"${CLIENT_ID}"}` }),
      connections: WEBHOOK_CONNECTIONS,
      durationS: ctx.durationS,
      warmupS: ctx.warmupS,
    }, () => {
      cpu0 = broker.cpuSeconds();
    });
    const cpuUsPerReq = cpuPerRequest(broker, cpu0, load.total);
    return { store, connections: WEBHOOK_CONNECTIONS, load, peakRssMb: broker.peakRssMb(), cpuUsPerReq, verifyJobsDone: await verifyJobsDone(broker.url), webhooksAcked: load.ok + load.warmupOk };
  });
}

/** A throwaway database per run: created before, dropped after (FORCE ends the broker's leftover connections). */
async function withPgDatabase<T>(adminUrl: string, fn: (url: string) => Promise<T>): Promise<T> {
  const name = `bench_${Date.now()}_${randomBytes(3).toString('hex')}`;
  const admin = new Client({ connectionString: adminUrl });
  await admin.connect();
  try {
    await admin.query(`CREATE DATABASE ${name}`);
    const u = new URL(adminUrl);
    u.pathname = `/${name}`;
    try {
      return await fn(u.toString());
    } finally {
      await admin.query(`DROP DATABASE IF EXISTS ${name} WITH (FORCE)`).catch(() => undefined);
    }
  } finally {
    await admin.end().catch(() => undefined);
  }
}

export async function runWebhookScenarios(ctx: BenchContext, pgUrl: string, log: (m: string) => void): Promise<WebhookRun[]> {
  log('Webhooks: acknowledged per second with durable storage');
  const out: WebhookRun[] = [await runOne(ctx, 'sqlite', undefined, log)];
  try {
    out.push(await withPgDatabase(pgUrl, (url) => runOne(ctx, 'postgres', url, log)));
  } catch (err) {
    log(`  webhooks / postgres skipped: ${(err as Error).message}`);
    out.push({ store: 'postgres', connections: WEBHOOK_CONNECTIONS, load: emptyLoad(), peakRssMb: null, cpuUsPerReq: null, verifyJobsDone: null, webhooksAcked: 0, error: (err as Error).message });
  }
  return out;
}

export function emptyLoad(): LoadResult {
  return { okPerSec: 0, total: 0, ok: 0, non2xx: 0, errors: 0, timeouts: 0, p50: 0, p90: 0, p99: 0, max: 0, durationS: 0, statusCodes: {}, warmupOk: 0 };
}
