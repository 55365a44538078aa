// A Redis outage never fails billable or webhook requests: limits fall back to each process's memory, one warning
// and a metric say so, and the shared counter takes over again once Redis answers.
import { randomBytes } from 'node:crypto';
import net from 'node:net';
import { Redis } from 'ioredis';
import type { EmulatorApp } from '../../src/emulator/app';
import { FailoverRateCounter, RedisRateCounter } from '../../src/protection/rate-counter';
import { brokerEnv, startBroker, startEmulator, waitFor, WEBHOOK_CLIENT_ID, WEBHOOK_CLIENT_SECRET, type Running } from '../helpers/harness';
import { describeWith, services } from '../helpers/services';
import { metricValue } from '../helpers/metrics';

type Broker = Awaited<ReturnType<typeof startBroker>>;

const OUTAGE_LOG = /redis unavailable/;
const RECOVERY_LOG = /redis answers again/;

function postSession(url: string, xff?: string) {
  return fetch(`${url}/session`, { method: 'POST', headers: xff ? { 'x-forwarded-for': xff } : {}, signal: AbortSignal.timeout(10_000) });
}

function webhookToken(url: string, secret = WEBHOOK_CLIENT_SECRET) {
  const basic = Buffer.from(`${WEBHOOK_CLIENT_ID}:${secret}`).toString('base64');
  return fetch(`${url}/webhooks/incode/token`, {
    method: 'POST',
    headers: { authorization: `Basic ${basic}`, 'content-type': 'application/x-www-form-urlencoded' },
    body: 'grant_type=client_credentials',
    signal: AbortSignal.timeout(10_000),
  });
}

const metric = async (url: string, name: string) => (await metricValue(url, name)) ?? NaN;

const countLines = (b: Broker, re: RegExp) => b.logs.lines.filter((l) => re.test(l)).length;

/** A TCP relay on 127.0.0.1 the test can take down (refuse), stall (accept, never answer) and bring back. */
class Relay {
  private server: net.Server | null = null;
  private readonly pairs = new Set<[net.Socket, net.Socket | null]>();
  private stalled = false;
  /** What clients sent while stalled (read and dropped, never answered). */
  private heard = '';
  port = 0;

  constructor(private readonly target: { host: string; port: number }) {}

  async up(): Promise<void> {
    this.server = net.createServer((client) => {
      client.on('error', () => undefined);
      if (this.stalled) {
        const pair: [net.Socket, null] = [client, null];
        this.pairs.add(pair);
        client.on('close', () => this.pairs.delete(pair));
        client.on('data', (c: Buffer) => (this.heard += c.toString('latin1')));
        return;
      }
      const upstream = net.connect(this.target.port, this.target.host);
      upstream.on('error', () => undefined);
      const pair: [net.Socket, net.Socket] = [client, upstream];
      this.pairs.add(pair);
      upstream.on('close', () => client.destroy());
      client.on('close', () => {
        upstream.destroy();
        this.pairs.delete(pair);
      });
      client.pipe(upstream);
      upstream.pipe(client);
    });
    await new Promise<void>((resolve) => this.server!.listen(this.port, '127.0.0.1', resolve));
    this.port = (this.server.address() as net.AddressInfo).port;
  }

  /** Open connections go silent (nothing is relayed either way) and new ones are accepted but never answered. */
  stall(): void {
    this.stalled = true;
    for (const [client, upstream] of this.pairs) {
      if (!upstream) continue;
      client.unpipe(upstream);
      upstream.unpipe(client);
      upstream.pause();
      // Unpiped, the client side is paused: read on, never answering.
      client.on('data', (c: Buffer) => (this.heard += c.toString('latin1')));
      client.resume();
    }
  }

  /** Rate-limit script calls (EVALSHA, or EVAL after NOSCRIPT) sent to the stalled Redis so far; PINGs are not counted. */
  scriptCalls(): number {
    return (this.heard.match(/\$(?:7\r\nevalsha|4\r\neval)\r\n/gi) ?? []).length;
  }

  /** Stops listening and cuts every connection: reconnects are refused. */
  async down(): Promise<void> {
    for (const [client, upstream] of this.pairs) {
      client.destroy();
      upstream?.destroy();
    }
    this.pairs.clear();
    await new Promise<void>((resolve) => (this.server ? this.server.close(() => resolve()) : resolve()));
    this.server = null;
  }
}

describe('rate limits with Redis unreachable', () => {
  let emu: Running<EmulatorApp>;
  let b: Broker | null = null;
  beforeAll(async () => {
    emu = await startEmulator();
  });
  afterEach(async () => {
    await b?.close();
    b = null;
  });
  afterAll(async () => emu.close());

  it('answers POST /session from a closed Redis port, still enforces the per-IP limit, and issues webhook tokens', async () => {
    const env = { REDIS_URL: 'redis://:redis-password-not-for-logs@127.0.0.1:1', RATE_LIMIT_PER_IP: '3', RATE_LIMIT_WINDOW_MS: '60000', LOG_LEVEL: 'debug' };
    b = await startBroker(brokerEnv(emu.url, env), { runWorker: false });
    // The start-up check found the outage, so no request meets the dead Redis: each counts in memory at once.
    expect(await metric(b.url, 'rate_limit_fallback')).toBe(1);

    const statuses: number[] = [];
    for (let i = 0; i < 5; i++) {
      const r = await postSession(b.url);
      statuses.push(r.status);
      const body = (await r.json()) as { code?: string; token?: string };
      if (r.status === 429) expect(body.code).toBe('RATE_LIMITED');
      else expect(body.token).toMatch(/^eyJ/);
    }
    expect(await metric(b.url, 'rate_limit_fallback_hits_total')).toBe(5);
    expect(statuses).toEqual([200, 200, 200, 429, 429]);

    const tok = await webhookToken(b.url);
    expect(tok.status).toBe(200);
    expect(((await tok.json()) as { token_type: string }).token_type).toBe('Bearer');
    // A failed token request is what that endpoint counts: through the per-process fallback too.
    expect((await webhookToken(b.url, 'wrong-secret')).status).toBe(401);

    // One warning for the whole outage, not one per request; it says why, and no log line carries the URL's secret.
    expect(countLines(b, OUTAGE_LOG)).toBe(1);
    expect(b.logs.lines.filter((l) => /"level":(40|50)/.test(l) && /redis/i.test(l))).toHaveLength(1);
    expect(b.logs.lines.find((l) => OUTAGE_LOG.test(l))).toMatch(/ECONNREFUSED/);
    expect(b.logs.text).not.toContain('redis-password-not-for-logs');
    expect(b.logs.text).not.toMatch(/INTERNAL_ERROR/);
    expect(await metric(b.url, 'rate_limit_fallback')).toBe(1);
    expect(await metric(b.url, 'rate_limit_fallback_hits_total')).toBe(6);
  });

  it('exports rate_limit_fallback 0 without Redis trouble', async () => {
    b = await startBroker(brokerEnv(emu.url), { runWorker: false });
    expect(await metric(b.url, 'rate_limit_fallback')).toBe(0);
  });
});

describeWith('redis', 'rate limits when Redis goes away and comes back', () => {
  const target = new URL(services.redis || 'redis://127.0.0.1:6379');
  // Database 5 and a per-run client address keep this run's keys apart from anything else (as rate-limits.test.ts).
  const viaRelay = (port: number) => `redis://127.0.0.1:${port}/5`;
  const runIp = `10.${randomBytes(1)[0]}.${randomBytes(1)[0]}.${1 + (randomBytes(1)[0] % 250)}`;
  const key = `incode-broker:rl:ip:${runIp}`;
  let emu: Running<EmulatorApp>;
  let redis: Redis;
  let relay: Relay;
  let b: Broker | null = null;

  beforeAll(async () => {
    emu = await startEmulator();
    const direct = new URL(target);
    direct.pathname = '/5';
    redis = new Redis(direct.toString(), { maxRetriesPerRequest: 1 });
  });
  beforeEach(async () => {
    await redis.del(key);
    relay = new Relay({ host: target.hostname, port: Number(target.port || 6379) });
    await relay.up();
  });
  afterEach(async () => {
    await b?.close();
    b = null;
    await relay.down();
  });
  afterAll(async () => {
    await redis.del(key);
    await redis.quit();
    await emu.close();
  });

  const env = (port: number) =>
    brokerEnv(emu.url, { REDIS_URL: viaRelay(port), RATE_LIMIT_PER_IP: '1000', RATE_LIMIT_WINDOW_MS: '60000', TRUST_PROXY_HOPS: '1' });

  it('counts in memory while Redis refuses connections, then shares the count in Redis again', async () => {
    b = await startBroker(env(relay.port), { runWorker: false });
    expect((await postSession(b.url, runIp)).status).toBe(200);
    expect(await redis.get(key)).toBe('1');

    await relay.down();
    for (let i = 0; i < 3; i++) expect((await postSession(b.url, runIp)).status).toBe(200);
    expect(await redis.get(key)).toBe('1');
    expect(countLines(b, OUTAGE_LOG)).toBe(1);
    expect(await metric(b.url, 'rate_limit_fallback')).toBe(1);

    // Same port: ioredis reconnects by itself and the probe notices.
    await relay.up();
    const broker = b;
    await waitFor(async () => (await metric(broker.url, 'rate_limit_fallback')) === 0, 15_000, 100);
    expect(countLines(b, RECOVERY_LOG)).toBe(1);
    expect((await postSession(b.url, runIp)).status).toBe(200);
    expect(await redis.get(key)).toBe('2');
    expect(countLines(b, OUTAGE_LOG)).toBe(1);

    // Another outage of another kind later: its warning does not carry the first one's cause.
    relay.stall();
    expect((await postSession(b.url, runIp)).status).toBe(200);
    await waitFor(() => countLines(broker, OUTAGE_LOG) === 2, 10_000, 50);
    const second = b.logs.lines.filter((l) => OUTAGE_LOG.test(l))[1];
    expect(second).toMatch(/timed out/i);
    expect(second).not.toMatch(/ECONNREFUSED/);
  }, 30_000);

  it('a Redis that accepts but never answers costs a request at most the command timeout, then none', async () => {
    b = await startBroker(env(relay.port), { runWorker: false });
    expect((await postSession(b.url, runIp)).status).toBe(200);

    relay.stall();
    // Answered (within postSession's 10 s abort): the command timeout (2 s) gave the stalled script up.
    expect((await postSession(b.url, runIp)).status).toBe(200);
    expect(await metric(b.url, 'rate_limit_fallback_hits_total')).toBe(1);
    await waitFor(() => relay.scriptCalls() === 1, 5000, 10);
    // In the outage now: the next request counts in memory without asking the silent Redis at all (its probes are
    // PINGs; not one more script call reaches it).
    expect(await metric(b.url, 'rate_limit_fallback')).toBe(1);
    expect((await postSession(b.url, runIp)).status).toBe(200);
    expect(await metric(b.url, 'rate_limit_fallback_hits_total')).toBe(2);
    expect(relay.scriptCalls()).toBe(1);
    expect(countLines(b, OUTAGE_LOG)).toBe(1);
  }, 30_000);
});

describeWith('redis', 'failover on a Redis that answers PING but refuses the rate-limit script', () => {
  it('stays in one outage instead of flapping between outage and recovery', async () => {
    const target = new URL(services.redis || 'redis://127.0.0.1:6379');
    const admin = new Redis(target.toString(), { maxRetriesPerRequest: 1 });
    const user = `rl-noscript-${process.pid}`;
    // A user that may PING but not run scripts: what the counter sees of, e.g., a full Redis refusing writes.
    await admin.call('ACL', 'SETUSER', user, 'on', 'nopass', '~*', '+@connection', '-@scripting');
    const limited = new Redis({ host: target.hostname, port: Number(target.port || 6379), username: user, password: 'x', maxRetriesPerRequest: 0 });
    const events: string[] = [];
    const counter = new FailoverRateCounter(new RedisRateCounter(limited), { outage: () => events.push('outage'), recovered: () => events.push('recovered'), fallbackHit: () => undefined }, undefined, 50);
    try {
      await limited.ping();
      expect(await counter.hitAll([{ key: `flap-${process.pid}`, max: 5 }], 60_000)).toBeNull();
      await new Promise((r) => setTimeout(r, 600));
      expect(events).toEqual(['outage']);
    } finally {
      await counter.close();
      await admin.call('ACL', 'DELUSER', user);
      await admin.quit();
    }
  });
});

describeWith('redis', 'a REDIS_URL naming a database the server does not have', () => {
  it('is an outage that lasts (counted in memory, one warning naming the error), never counted in database 0', async () => {
    const emu = await startEmulator();
    const target = new URL(services.redis || 'redis://127.0.0.1:6379');
    const db0 = new Redis(target.toString(), { maxRetriesPerRequest: 1 });
    const runIp = `10.${randomBytes(1)[0]}.${randomBytes(1)[0]}.${1 + (randomBytes(1)[0] % 250)}`;
    const url = new URL(target);
    url.pathname = '/9999';
    const b = await startBroker(brokerEnv(emu.url, { REDIS_URL: url.toString(), RATE_LIMIT_PER_IP: '1000', TRUST_PROXY_HOPS: '1' }), { runWorker: false });
    try {
      for (let i = 0; i < 3; i++) expect((await postSession(b.url, runIp)).status).toBe(200);
      // Past a probe or two (one a second): still down, not "answers again" as the probes land in database 0.
      await new Promise((r) => setTimeout(r, 2500));
      expect(await metric(b.url, 'rate_limit_fallback')).toBe(1);
      expect(countLines(b, RECOVERY_LOG)).toBe(0);
      expect(countLines(b, OUTAGE_LOG)).toBe(1);
      expect(b.logs.lines.find((l) => OUTAGE_LOG.test(l))).toMatch(/DB index/);
      expect(await db0.get(`incode-broker:rl:ip:${runIp}`)).toBeNull();
    } finally {
      await b.close();
      await db0.quit();
      await emu.close();
    }
  }, 30_000);
});
