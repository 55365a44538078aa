// A PostgreSQL that stops answering mid-connection (behind a relay that goes silent) or refuses connections fails requests with 503
// DATABASE_UNAVAILABLE and /readyz with 503 within about DATABASE_TIMEOUT_MS, and both recover once it answers.
import net from 'node:net';
import { loadConfig } from '../../src/config';
import type { EmulatorApp } from '../../src/emulator/app';
import { Cipher, createStore } from '../../src/store';
import { migratePostgres } from '../../src/store/migrations';
import { PostgresStore } from '../../src/store/postgres-store';
import { isDatabaseUnavailable } from '../../src/store/unavailable';
import { brokerEnv, startBroker, startEmulator, waitFor, type Running } from '../helpers/harness';
import { dropSchema } from '../helpers/pg-schema';
import { describeWith, services } from '../helpers/services';

/** Relays to PostgreSQL on 127.0.0.1; frozen, it keeps every connection open and relays nothing either way. */
function silentRelay(target: URL) {
  let frozen = false;
  const sockets = new Set<net.Socket>();
  const track = (s: net.Socket) => {
    sockets.add(s);
    s.on('error', () => undefined);
    s.on('close', () => sockets.delete(s));
  };
  const server = net.createServer((client) => {
    const upstream = net.connect(Number(target.port || 5432), target.hostname);
    track(client);
    track(upstream);
    client.on('data', (d) => frozen || upstream.write(d));
    upstream.on('data', (d) => frozen || client.write(d));
    client.on('close', () => upstream.destroy());
    upstream.on('close', () => client.destroy());
  });
  let listening: Promise<number> | null = null;
  let port = 0;
  return {
    // Listens once; every caller gets the same port.
    listen: () => (listening ??= new Promise<number>((resolve) => server.listen(0, '127.0.0.1', () => resolve((port = (server.address() as net.AddressInfo).port))))),
    // Stops listening and drops every connection, so new ones are refused (ECONNREFUSED) until reopen().
    down: () => {
      for (const s of sockets) s.destroy();
      return new Promise<void>((resolve) => server.close(() => resolve()));
    },
    reopen: () => new Promise<void>((resolve) => server.listen(port, '127.0.0.1', () => resolve())),
    freeze: (on: boolean) => (frozen = on),
    close: () => {
      for (const s of sockets) s.destroy();
      return new Promise<void>((resolve) => (server.listening ? server.close(() => resolve()) : resolve()));
    },
  };
}

async function timed(url: string, init: RequestInit = {}) {
  const t = Date.now();
  const r = await fetch(url, { ...init, signal: AbortSignal.timeout(15_000) });
  return { status: r.status, headers: r.headers, body: (await r.json()) as Record<string, any>, ms: Date.now() - t };
}

describeWith('postgres', 'PostgreSQL that stalls (DATABASE_TIMEOUT_MS)', () => {
  const schema = `db_timeout_${process.pid}_${Date.now().toString(36)}`;
  const relay = silentRelay(new URL(services.postgres || 'postgres://127.0.0.1:5432/test'));
  let emu: Running<EmulatorApp>;

  beforeAll(async () => {
    emu = await startEmulator();
  });
  afterAll(async () => {
    relay.freeze(false);
    await relay.close();
    await emu.close();
    await dropSchema(schema);
  });

  it('does not bound migrations: one slower than DATABASE_TIMEOUT_MS still applies', async () => {
    const store = new PostgresStore({ url: services.postgres, cipher: new Cipher([{ id: 'k1', key: Buffer.alloc(32, 7) }]), schema: `${schema}_mig`, timeoutMs: 200 });
    try {
      const slow = [{ version: 1, name: 'slow', sqlite: '', postgres: 'SELECT pg_sleep(1.5)' }];
      expect(await migratePostgres(store.pool, `${schema}_mig`, slow)).toEqual([1]);
      // Requests' statements stay bounded on the same pool.
      expect(await store.pool.query('SELECT pg_sleep(1.5)').then(() => 'done', (e: { code?: string }) => e.code)).toBe('57014');
    } finally {
      await store.close();
      await dropSchema(`${schema}_mig`);
    }
  });

  it('cancels a slow statement server-side at the timeout, and the error reads as "unavailable", not as a bug', async () => {
    const store = new PostgresStore({ url: services.postgres, cipher: new Cipher([{ id: 'k1', key: Buffer.alloc(32, 7) }]), schema, timeoutMs: 200 });
    try {
      const t = Date.now();
      const err = await store.pool.query('SELECT pg_sleep(5)').then(() => null, (e: unknown) => e);
      expect(Date.now() - t).toBeLessThan(2000);
      expect(err).toMatchObject({ code: '57014' });
      expect(isDatabaseUnavailable(err)).toBe(true);
      // A wrong statement stays a bug (500), not an outage.
      expect(isDatabaseUnavailable(await store.pool.query('SELECT * FROM no_such_table').catch((e: unknown) => e))).toBe(false);
      expect(isDatabaseUnavailable(new Error('Query read timeout'))).toBe(true);
      expect(isDatabaseUnavailable(new SyntaxError('Unexpected token'))).toBe(false);
    } finally {
      await store.close();
    }
  });

  it('a deadlock between replicas reads as "unavailable" (a 503 to retry), not as a bug', async () => {
    const store = new PostgresStore({ url: services.postgres, cipher: new Cipher([{ id: 'k1', key: Buffer.alloc(32, 7) }]), schema: `${schema}_dl`, timeoutMs: 10_000 });
    const [a, b] = [await store.pool.connect(), await store.pool.connect()];
    try {
      await store.migrate();
      await store.upsertSession({ interviewId: 'i1', origin: 'broker', now: 1 });
      await store.upsertSession({ interviewId: 'i2', origin: 'broker', now: 1 });
      const touch = (c: typeof a, id: string) => c.query('UPDATE sessions SET updated_at = updated_at + 1 WHERE interview_id = $1', [id]);
      await a.query('BEGIN');
      await b.query('BEGIN');
      await touch(a, 'i1');
      await touch(b, 'i2');
      // Each waits for the other's row: PostgreSQL breaks the cycle by failing one of them.
      const outcomes = await Promise.all([touch(a, 'i2').then(() => null, (e: unknown) => e), touch(b, 'i1').then(() => null, (e: unknown) => e)]);
      const err = outcomes.find((e) => e !== null);
      expect(err).toMatchObject({ code: '40P01' });
      expect(isDatabaseUnavailable(err)).toBe(true);
    } finally {
      await a.query('ROLLBACK').catch(() => undefined);
      await b.query('ROLLBACK').catch(() => undefined);
      a.release();
      b.release();
      await store.close();
      await dropSchema(`${schema}_dl`);
    }
  });

  it('a PostgreSQL that is down or whose name does not resolve reads as "unavailable"', async () => {
    for (const url of ['postgres://127.0.0.1:1/test', 'postgres://no-such-host.invalid:5432/test']) {
      const store = new PostgresStore({ url, cipher: new Cipher([{ id: 'k1', key: Buffer.alloc(32, 7) }]), schema, timeoutMs: 1000 });
      try {
        const err = await store.getSession('i1').then(() => null, (e: unknown) => e);
        expect(err).toMatchObject({ code: expect.stringMatching(/^E(CONNREFUSED|NOTFOUND|AI_AGAIN)$/) });
        expect(isDatabaseUnavailable(err)).toBe(true);
      } finally {
        await store.close();
      }
    }
    // The code alone is not enough: only system errors (which name their syscall) match.
    expect(isDatabaseUnavailable(Object.assign(new Error('x'), { code: 'ECONNREFUSED' }))).toBe(false);
  });

  it('a transaction that stalls fails within one timeout and its connection is not reused', async () => {
    const port = await relay.listen();
    const pg = new URL(services.postgres);
    pg.host = `127.0.0.1:${port}`;
    const store = new PostgresStore({ url: pg.toString(), cipher: new Cipher([{ id: 'k1', key: Buffer.alloc(32, 7) }]), schema: `${schema}_tx`, timeoutMs: 1000, poolMax: 1 });
    try {
      await store.migrate();
      await store.upsertSession({ interviewId: 'i1', origin: 'broker', token: 't1', now: 1 });
      relay.freeze(true);
      const t = Date.now();
      const err = await store.eraseSession('i1', 'test', 2).then(() => null, (e: unknown) => e);
      // One client-side timeout (timeout + 1 s), not a second one spent on a ROLLBACK queued behind it.
      expect(isDatabaseUnavailable(err)).toBe(true);
      expect(Date.now() - t).toBeLessThan(3500);
      relay.freeze(false);
      // The pool's only client was the stalled one: the next call gets a fresh connection that works.
      expect((await store.getSession('i1'))?.interviewId).toBe('i1');
    } finally {
      relay.freeze(false);
      await store.close();
      await dropSchema(`${schema}_tx`);
    }
  }, 30_000);

  it('answers 503 DATABASE_UNAVAILABLE and /readyz 503 within about the timeout, then recovers', async () => {
    const port = await relay.listen();
    const pg = new URL(services.postgres);
    pg.host = `127.0.0.1:${port}`;
    const env = brokerEnv(emu.url, { DATABASE_URL: pg.toString(), DATABASE_TIMEOUT_MS: '1000' });
    const config = loadConfig(env);
    expect(config.database.timeoutMs).toBe(1000);
    // The store the app would build from this config, in a schema of its own.
    const store = createStore({ url: config.database.url, cipher: new Cipher(config.encryption.keys), pgSchema: schema, pgTimeoutMs: config.database.timeoutMs }) as PostgresStore;
    expect(store.pool.options).toMatchObject({ connectionTimeoutMillis: 1000, statement_timeout: 1000 });
    const b = await startBroker(env, { store, runWorker: false });
    try {
      expect((await timed(`${b.url}/session`, { method: 'POST' })).status).toBe(200);
      expect((await timed(`${b.url}/readyz`)).status).toBe(200);

      relay.freeze(true);
      const [session, ready] = await Promise.all([timed(`${b.url}/session`, { method: 'POST' }), timed(`${b.url}/readyz`)]);
      expect(session.status).toBe(503);
      expect(session.body).toEqual({ code: 'DATABASE_UNAVAILABLE', message: expect.any(String), requestId: expect.any(String) });
      expect(Number(session.headers.get('retry-after'))).toBeGreaterThanOrEqual(1);
      // The client-side bound is the timeout plus one second; the rest is slack for a loaded machine.
      expect(session.ms).toBeLessThan(6000);
      expect(ready.status).toBe(503);
      expect(ready.body.checks.database).toEqual({ ok: false, detail: 'unreachable' });
      expect(ready.ms).toBeLessThan(6000);

      relay.freeze(false);
      await waitFor(async () => (await timed(`${b.url}/readyz`)).status === 200, 20_000, 200);
      expect((await timed(`${b.url}/session`, { method: 'POST' })).status).toBe(200);
    } finally {
      relay.freeze(false);
      await b.close();
      await store.close();
    }
  }, 60_000);

  it('answers 503 DATABASE_UNAVAILABLE while PostgreSQL refuses connections, then recovers', async () => {
    const down = silentRelay(new URL(services.postgres || 'postgres://127.0.0.1:5432/test'));
    const port = await down.listen();
    const pg = new URL(services.postgres);
    pg.host = `127.0.0.1:${port}`;
    const env = brokerEnv(emu.url, { DATABASE_URL: pg.toString(), DATABASE_TIMEOUT_MS: '1000' });
    const config = loadConfig(env);
    const store = createStore({ url: config.database.url, cipher: new Cipher(config.encryption.keys), pgSchema: `${schema}_down`, pgTimeoutMs: config.database.timeoutMs });
    const b = await startBroker(env, { store, runWorker: false });
    try {
      expect((await timed(`${b.url}/session`, { method: 'POST' })).status).toBe(200);
      await down.down();
      for (let i = 0; i < 3; i++) {
        const session = await timed(`${b.url}/session`, { method: 'POST' });
        expect(session.status).toBe(503);
        expect(session.body).toEqual({ code: 'DATABASE_UNAVAILABLE', message: expect.any(String), requestId: expect.any(String) });
      }
      expect((await timed(`${b.url}/readyz`)).status).toBe(503);
      await down.reopen();
      await waitFor(async () => (await timed(`${b.url}/readyz`)).status === 200, 20_000, 200);
      expect((await timed(`${b.url}/session`, { method: 'POST' })).status).toBe(200);
    } finally {
      await b.close();
      await store.close();
      await down.close();
      await dropSchema(`${schema}_down`);
    }
  }, 60_000);
});
