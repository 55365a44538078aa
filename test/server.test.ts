// The real server process: graceful shutdown on SIGTERM, and no result lost when it is killed with SIGKILL mid-job.
import { writeFileSync } from 'node:fs';
import { createServer } from 'node:http';
import { createConnection, createServer as createNetServer, type AddressInfo } from 'node:net';
import { join } from 'node:path';
import Database from 'better-sqlite3';
import { request } from 'undici';
import { ADMIN_KEY, brokerEnv, freePort, recordRequests, startBroker, startEmulator, waitFor, waitForResults, webhooksTo } from './helpers/harness';
import { spawnBroker, startBrokerProcess, untilHealthy, type BrokerProcess } from './helpers/broker-process';
import { captureAll } from './helpers/flow';
import { tempDir } from './helpers/temp';
import { Client } from 'pg';
import { dropSchema, schemaName } from './helpers/pg-schema';
import { describeWith, services } from './helpers/services';

async function json(url: string, init: Parameters<typeof request>[1] = {}) {
  const r = await request(url, init);
  return { status: r.statusCode, body: (await r.body.json()) as any };
}

describe('server process', () => {
  const procs: BrokerProcess[] = [];
  afterEach(async () => {
    for (const p of procs.splice(0)) if (p.child.exitCode === null && p.child.signalCode === null) p.child.kill('SIGKILL');
  });

  /** A healthy broker process against the emulator at `incodeUrl` (killed after the test if still running). */
  async function brokerProcess(incodeUrl: string, env: Record<string, string>) {
    const p = await startBrokerProcess(brokerEnv(incodeUrl, env));
    procs.push(p);
    return { p, url: p.url };
  }

  it('in sandbox mode bound to one interface (HOST not loopback\'s 127.0.0.1), its emulator\'s webhooks reach it there', async () => {
    const port = await freePort();
    const url = `http://127.0.0.2:${port}`;
    const p = spawnBroker({ PORT: String(port), HOST: '127.0.0.2', PUBLIC_URL: url, DATABASE_URL: 'sqlite::memory:', ADMIN_API_KEYS: ADMIN_KEY, EMULATOR_PROCESSING_DELAY_MS: '50', RESULTS_MODE: 'webhook', SHUTDOWN_DELAY_MS: '0' });
    procs.push(p);
    await untilHealthy(p, url);
    const s = await json(`${url}/session`, { method: 'POST' });
    expect(s.body.apiUrl).toBe(`${url}/sandbox/incode/0/`);
    await captureAll(s.body.apiUrl, s.body.token);
    // Webhooks alone bring the results (no polling): they must have been delivered to 127.0.0.2.
    expect((await waitForResults(url, s.body.interviewId)).resultsStatus).toBe('ready');
  }, 30_000);

  /** A POST /session whose start is at the emulator (held there by its latency): a stop has it in flight. */
  async function heldSession(emu: Awaited<ReturnType<typeof startEmulator>>, url: string) {
    const incode = recordRequests(emu.app.server);
    // A connection cut by the stop is an answer of status 0 (handled here, so never an unhandled rejection).
    const answer = json(`${url}/session`, { method: 'POST' }).catch((e: unknown) => ({ status: 0, body: { error: String(e) } }));
    await waitFor(() => incode.urls.some((u) => u.startsWith('/omni/start')), 10_000, 10);
    incode.stop();
    // Wrapped: an async function returning the promise itself would wait for the answer.
    return { answer };
  }

  /** The held session is answered with its token, and then the process exits 0. */
  async function answeredThenExited(p: BrokerProcess, answer: Promise<{ status: number; body: any }>) {
    const res = await answer;
    expect(res.status).toBe(200);
    expect(res.body.token).toMatch(/^eyJ/);
    expect(await p.exited).toBe(0);
  }

  it('finishes in-flight requests on SIGTERM, then exits 0', async () => {
    const emu = await startEmulator({ faults: { startLatencyMs: 800 } });
    const { p, url } = await brokerProcess(emu.url, { DATABASE_URL: 'sqlite::memory:', SHUTDOWN_GRACE_MS: '5000' });
    // SIGTERM once the broker's call is at the emulator, not after a guessed delay.
    const { answer } = await heldSession(emu, url);
    p.child.kill('SIGTERM');
    await answeredThenExited(p, answer);
    expect(p.output()).toMatch(/shutting down/);
    await expect(request(`${url}/healthz`)).rejects.toThrow();
    await emu.close();
  }, 30_000);

  it('a second SIGTERM while draining changes nothing (the request in flight is answered, exit 0); a second Ctrl-C ends it at once', async () => {
    const emu = await startEmulator({ faults: { startLatencyMs: 1500 } });
    const { p, url } = await brokerProcess(emu.url, { DATABASE_URL: 'sqlite::memory:', SHUTDOWN_GRACE_MS: '5000' });
    const { answer } = await heldSession(emu, url);
    p.child.kill('SIGTERM');
    await waitFor(() => /shutting down/.test(p.output()) || null, 5000, 10);
    p.child.kill('SIGTERM');
    await answeredThenExited(p, answer);
    expect(p.output()).toMatch(/already stopping/);
    expect(p.output()).not.toMatch(/second signal/);
    // Ctrl-C twice: the person means now.
    const second = await brokerProcess(emu.url, { DATABASE_URL: 'sqlite::memory:', SHUTDOWN_GRACE_MS: '5000' });
    const held = await heldSession(emu, second.url);
    second.p.child.kill('SIGINT');
    await waitFor(() => /shutting down/.test(second.p.output()) || null, 5000, 10);
    second.p.child.kill('SIGINT');
    expect(await second.p.exited).toBe(1);
    expect(second.p.output()).toMatch(/second signal, exiting now/);
    await held.answer;
    await emu.close();
  }, 30_000);

  it('on SIGTERM leaves the rotation first: /readyz answers 503 while requests are still served, then it closes', async () => {
    const emu = await startEmulator();
    const { p, url } = await brokerProcess(emu.url, { SHUTDOWN_DELAY_MS: '8000' });
    expect((await json(`${url}/readyz`)).status).toBe(200);
    const signalled = Date.now();
    p.child.kill('SIGTERM');
    // Room on a loaded machine: the 503 is seen, then a request served, well inside the 8 s.
    await waitFor(async () => (await json(`${url}/readyz`)).status === 503, 5000, 20);
    const ready = await json(`${url}/readyz`);
    expect(ready.body).toMatchObject({ code: 'SHUTTING_DOWN' });
    // Out of rotation, not closed: a request the load balancer still sends is served on a new connection.
    const res = await json(`${url}/session`, { method: 'POST', headers: { connection: 'close' } });
    expect(res.status).toBe(200);
    expect(res.body.token).toMatch(/^eyJ/);
    expect(await p.exited).toBe(0);
    expect(Date.now() - signalled).toBeGreaterThanOrEqual(8000);
    expect(p.output()).toMatch(/"outOfRotationMs":8000/);
    // Its refusals are planned: an info line each, no warning or error with a stack per probe.
    const refusals = p.output().split('\n').filter((l) => l.includes('"SHUTTING_DOWN"'));
    expect(refusals.length).toBeGreaterThan(0);
    for (const line of refusals) expect(JSON.parse(line)).toMatchObject({ level: 30, msg: 'request refused' });
    await emu.close();
  }, 30_000);

  it('keeps a client\'s kept-alive connection through the out-of-rotation delay, and answers its request at the close with a 503, never a reset', async () => {
    const emu = await startEmulator();
    const { p, url } = await brokerProcess(emu.url, { SHUTDOWN_DELAY_MS: '2000' });
    const { port } = new URL(url);
    // A client sending on one pooled connection every 50 ms, from before the SIGTERM until the connection ends.
    const socket = createConnection(Number(port), '127.0.0.1');
    let received = '';
    let failure: string | null = null;
    socket.on('data', (d: Buffer) => (received += d.toString('latin1')));
    socket.on('error', (e: NodeJS.ErrnoException) => (failure = e.code ?? e.message));
    let open = true;
    const closed = new Promise<void>((r) => socket.on('close', () => r(void (open = false))));
    const answers = () => received.split(/(?=HTTP\/1\.1 )/).filter(Boolean);
    const sender = (async () => {
      for (let i = 0; open && i < 400; i++) {
        if (answers().length === i) socket.write('GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n');
        await new Promise((r) => setTimeout(r, 50));
      }
    })();
    await waitFor(() => answers().length >= 2 || null, 5000, 10);
    p.child.kill('SIGTERM');
    await closed;
    await sender;
    expect(failure).toBeNull();
    const all = answers();
    // Served all through the delay on the same connection, kept alive; then, once the listener closed, one 503 that
    // closes it.
    expect(all.length).toBeGreaterThan(10);
    for (const a of all.slice(0, -1)) {
      expect(a).toMatch(/^HTTP\/1\.1 200/);
      expect(a).not.toMatch(/^connection: close/im);
    }
    expect(all.at(-1)).toMatch(/^HTTP\/1\.1 503/);
    expect(all.at(-1)).toMatch(/^connection: close/im);
    expect(all.at(-1)).toContain('SHUTTING_DOWN');
    expect(await p.exited).toBe(0);
    await emu.close();
  }, 30_000);

  it('on SIGINT (an interactive stop) skips the out-of-rotation delay', async () => {
    const emu = await startEmulator();
    const { p } = await brokerProcess(emu.url, { SHUTDOWN_DELAY_MS: '60000' });
    p.child.kill('SIGINT');
    // The test's own timeout is well under the delay: exiting at all proves it was skipped.
    expect(await p.exited).toBe(0);
    expect(p.output()).not.toMatch(/outOfRotationMs/);
    await emu.close();
  }, 30_000);

  it('loses no result when killed with SIGKILL mid-job and restarted', async () => {
    const dir = tempDir('broker-kill-');
    const dbFile = join(dir, 'broker.db');
    const port = await freePort();
    const url = `http://127.0.0.1:${port}`;
    // Slow Incode: every call takes 1.5 s (from the captures' end), so jobs are mid-flight when the process dies, even
    // when this test's own polling of the database is slow to notice the last webhook.
    const emu = await startEmulator({
      processingDelayMs: 50,
      webhook: webhooksTo(url, [200, 400, 800, 1600]),
    });
    const env = brokerEnv(emu.url, { PORT: String(port), HOST: '127.0.0.1', DATABASE_URL: `sqlite:${dbFile}`, RESULTS_MODE: 'webhook', JOB_LEASE_MS: '1000', JOB_MAX_ATTEMPTS: '20' });
    const first = spawnBroker(env);
    procs.push(first);
    await untilHealthy(first, url);

    const sessions = [];
    for (let i = 0; i < 5; i++) sessions.push((await json(`${url}/session`, { method: 'POST' })).body as { token: string; interviewId: string; apiUrl: string });
    await Promise.all(sessions.map((s) => captureAll(s.apiUrl, s.token)));
    emu.app.emulator.setFaults({ latencyMs: 1500 });
    // Wait until every ONBOARDING_FINISHED webhook is durably recorded, then kill at once.
    const db = new Database(dbFile, { readonly: true, fileMustExist: true });
    await waitFor(async () => {
      const row = db.prepare("SELECT COUNT(*) AS n FROM events WHERE onboarding_status = 'ONBOARDING_FINISHED'").get() as { n: number };
      return row.n === sessions.length;
    }, 20_000);
    first.child.kill('SIGKILL');
    await first.exited;
    const pending = db.prepare("SELECT COUNT(*) AS n FROM jobs WHERE state IN ('queued', 'running')").get() as { n: number };
    const stored = db.prepare("SELECT COUNT(*) AS n FROM sessions WHERE results_status = 'ready'").get() as { n: number };
    db.close();
    // The kill landed mid-work: some results were not stored yet.
    expect(pending.n).toBeGreaterThan(0);
    expect(stored.n).toBeLessThan(sessions.length);

    emu.app.emulator.setFaults({ latencyMs: 0 });
    const second = spawnBroker(env);
    procs.push(second);
    await untilHealthy(second, url);
    for (const s of sessions) {
      const done = await waitForResults(url, s.interviewId);
      expect(done.decision).toBe('approve');
      expect(done.ocr.name.fullName).toEqual(expect.any(String));
    }
    second.child.kill('SIGTERM');
    expect(await second.exited).toBe(0);
    await emu.close();
  }, 90_000);

  it('exits 1 naming HOST and PORT when the port is taken, after closing the app (no job left leased)', async () => {
    // Incode slow enough that a job claimed before the failed bind is still running when the process ends.
    const emu = await startEmulator({ faults: { latencyMs: 3000 } });
    const dbFile = join(tempDir('broker-port-'), 'broker.db');
    const env = brokerEnv(emu.url, { DATABASE_URL: `sqlite:${dbFile}`, RESULTS_MODE: 'webhook', SHUTDOWN_GRACE_MS: '0' });
    // Jobs waiting in the database (written by a broker without a worker), for the worker that starts before the bind.
    const writer = await startBroker(env, { runWorker: false });
    for (let i = 0; i < 4; i++) await writer.app.store.enqueueJob({ kind: 'verify', subject: `${'a'.repeat(23)}${i}`, payload: { source: 'refresh' }, runAt: Date.now() }, Date.now());
    await writer.close();
    const taken = createServer();
    await new Promise<void>((r) => taken.listen(0, '127.0.0.1', r));
    const port = String((taken.address() as AddressInfo).port);
    try {
      const p = spawnBroker({ ...env, PORT: port, HOST: '127.0.0.1' });
      procs.push(p);
      expect(await p.exited).toBe(1);
      expect(p.output()).toMatch(new RegExp(`cannot listen on 127\\.0\\.0\\.1:${port} \\(HOST, PORT\\): EADDRINUSE`));
      const db = new Database(dbFile, { readonly: true });
      try {
        expect(db.prepare("SELECT COUNT(*) AS n FROM jobs WHERE state = 'running'").get()).toEqual({ n: 0 });
        // Not trivially: the worker did claim jobs before the bind failed, and handed them back on the way out.
        expect((db.prepare("SELECT COUNT(*) AS n FROM jobs WHERE state = 'queued' AND last_error = 'SHUTDOWN'").get() as { n: number }).n).toBeGreaterThan(0);
      } finally {
        db.close();
      }
    } finally {
      await new Promise<void>((r) => taken.close(() => r()));
      await emu.close();
    }
  }, 60_000);

  it('a shutdown whose grace runs past 10 s lets a job run out the grace and hands it back before the store closes', async () => {
    // Incode slower than the grace: the job is still waiting on it when the grace ends, and is stopped then.
    const emu = await startEmulator({ faults: { latencyMs: 13_000 } });
    const dbFile = join(tempDir('broker-grace-'), 'broker.db');
    const broker = await startBroker(brokerEnv(emu.url, { DATABASE_URL: `sqlite:${dbFile}`, RESULTS_MODE: 'webhook', SHUTDOWN_GRACE_MS: '10500', INCODE_TIMEOUT_MS: '60000' }));
    try {
      await broker.app.store.enqueueJob({ kind: 'verify', subject: 'b'.repeat(24), payload: { source: 'refresh' }, runAt: Date.now() }, Date.now());
      await waitFor(async () => (await broker.app.store.listJobs('b'.repeat(24)))[0]?.state === 'running');
      const started = Date.now();
      // Fastify's default plugin timeout (10 s) would reject here, having closed the store under the worker.
      await broker.close();
      expect(Date.now() - started).toBeGreaterThanOrEqual(10_000);
      const db = new Database(dbFile, { readonly: true });
      try {
        expect(db.prepare('SELECT state, last_error AS lastError FROM jobs').all()).toEqual([{ state: 'queued', lastError: 'SHUTDOWN' }]);
      } finally {
        db.close();
      }
    } finally {
      await broker.close().catch(() => undefined);
      await emu.close();
    }
  }, 40_000);

  it('exits 1 naming DATABASE_URL when the database cannot be opened (never its password)', async () => {
    const key = `k1:${Buffer.from(Array.from({ length: 32 }, (_, i) => i * 7 + 3)).toString('base64')}`;
    for (const url of ['postgres://broker:db-password-4477@127.0.0.1:1/test', `sqlite:${join(tempDir('broker-db-'), 'file')}/under-a-file.db`]) {
      if (url.startsWith('sqlite:')) writeFileSync(url.slice('sqlite:'.length).split('/under-a-file.db')[0], 'not a directory');
      const p = spawnBroker({ DATABASE_URL: url, DATA_ENCRYPTION_KEY: key, DATABASE_TIMEOUT_MS: '2000' });
      procs.push(p);
      expect(await p.exited).toBe(1);
      expect(p.output()).toMatch(/failed to start: the database of DATABASE_URL could not be opened or migrated: /);
      expect(p.output()).not.toContain('db-password-4477');
    }
  }, 30_000);

  it('a SIGTERM while start-up waits on a database that never answers exits 0 once the start gives up, not as a failed start', async () => {
    // Accepts the connection, never says a word: the PostgreSQL connect times out after DATABASE_TIMEOUT_MS.
    let connected = 0;
    const silent = createNetServer(() => void connected++);
    await new Promise<void>((r) => silent.listen(0, '127.0.0.1', r));
    const key = `k1:${Buffer.alloc(32, 5).toString('base64')}`;
    const p = spawnBroker({ DATABASE_URL: `postgres://broker@127.0.0.1:${(silent.address() as AddressInfo).port}/test`, DATA_ENCRYPTION_KEY: key, DATABASE_TIMEOUT_MS: '2000', SHUTDOWN_GRACE_MS: '10000', SHUTDOWN_DELAY_MS: '0' });
    procs.push(p);
    try {
      await waitFor(() => connected > 0 || null, 15_000, 20);
      p.child.kill('SIGTERM');
      expect(await p.exited).toBe(0);
      expect(p.output()).toMatch(/start-up failed while stopping/);
      expect(p.output()).not.toMatch(/failed to start/);
    } finally {
      silent.close();
    }
  }, 30_000);

  it('refuses to start (78) with another key under the id the database knows, and starts with the right one', async () => {
    const emu = await startEmulator();
    const dbFile = join(tempDir('broker-key-'), 'broker.db');
    const key = (fill: number) => `k1:${Buffer.alloc(32, fill).toString('base64')}`;
    const env = brokerEnv(emu.url, { DATABASE_URL: `sqlite:${dbFile}` });
    try {
      const first = await startBrokerProcess({ ...env, DATA_ENCRYPTION_KEY: key(1) });
      procs.push(first);
      await first.stop();
      const wrong = spawnBroker({ ...env, DATA_ENCRYPTION_KEY: key(2) });
      procs.push(wrong);
      expect(await wrong.exited).toBe(78);
      expect(wrong.output()).toMatch(/DATA_ENCRYPTION_KEY lists key k1, but the data stored under that id was written with another key/);
      expect(wrong.output()).not.toContain(Buffer.alloc(32, 2).toString('base64'));
      const right = await startBrokerProcess({ ...env, DATA_ENCRYPTION_KEY: key(1) });
      procs.push(right);
      await right.stop();
    } finally {
      await emu.close();
    }
  }, 60_000);

  it('refuses to start with a message naming the variable', async () => {
    const p = spawnBroker({ NODE_ENV: 'production' });
    expect(await p.exited).toBe(78);
    expect(p.output()).toMatch(/INCODE_API_KEY/);
  }, 20_000);
});

// A request waiting for an advisory lock this connection holds.
const WAITING_ON_MY_LOCK = `SELECT 1 FROM pg_locks w JOIN pg_locks h USING (locktype, database, classid, objid, objsubid)
  WHERE w.locktype = 'advisory' AND NOT w.granted AND h.granted AND h.pid = pg_backend_pid()`;

describeWith('postgres', 'server process on PostgreSQL', () => {
  it('a SIGTERM while start-up waits for another replica\'s migration lock exits 0 after the grace, not at the hard limit', async () => {
    const schema = schemaName('lockwait');
    const holder = new Client({ connectionString: services.postgres });
    await holder.connect();
    await holder.query('BEGIN');
    await holder.query('SELECT pg_advisory_xact_lock(hashtext($1))', [`incode-broker:migrations:${schema}`]);
    const key = `k1:${Buffer.alloc(32, 9).toString('base64')}`;
    const p = spawnBroker({ DATABASE_URL: services.postgres, DATABASE_SCHEMA: schema, DATA_ENCRYPTION_KEY: key, SHUTDOWN_GRACE_MS: '1000', SHUTDOWN_DELAY_MS: '0' });
    try {
      // Its start is held at the lock (it cannot be healthy): wait until PostgreSQL shows its request waiting there.
      await waitFor(async () => (await holder.query(WAITING_ON_MY_LOCK)).rowCount, 15_000, 50);
      expect(p.child.exitCode).toBeNull();
      const signalled = Date.now();
      p.child.kill('SIGTERM');
      // The hard limit would be 0 + 2 × 1 s + 5 s, and exit 1.
      expect(await p.exited).toBe(0);
      expect(Date.now() - signalled).toBeLessThan(5000);
      expect(p.output()).toMatch(/stopped before start-up finished/);
    } finally {
      if (p.child.exitCode === null && p.child.signalCode === null) p.child.kill('SIGKILL');
      await holder.query('ROLLBACK').catch(() => undefined);
      await holder.end();
      await dropSchema(schema);
    }
  }, 30_000);
});
