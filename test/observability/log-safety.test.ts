// Risky paths at LOG_LEVEL=trace log no secret or personal data: an Incode that echoes tokens, keys, customer ids,
// passwords and images in its error bodies, and database and Redis URLs with passwords that fail to connect.
import { randomBytes } from 'node:crypto';
import { createServer, type IncomingMessage, type Server } from 'node:http';
import { connect } from 'node:net';
import type { AddressInfo } from 'node:net';
import request from 'supertest';
import { buildApp } from '../../src/app';
import { errSerializer, requestPath } from '../../src/logging';
import { loadConfig } from '../../src/config';
import { sampleImages } from '../helpers/flow';
import {
  ADMIN_KEY,
  ENCRYPTION_KEY,
  EXEC_PASSWORD,
  LogCapture,
  TEST_API_KEY,
  WEBHOOK_CLIENT_ID,
  WEBHOOK_CLIENT_SECRET,
  brokerEnv,
  freePort,
  startBroker,
  startSandbox,
  waitFor,
} from '../helpers/harness';
import { describeWith, services } from '../helpers/services';

type Broker = Awaited<ReturnType<typeof startBroker>>;

/** Fails with the first forbidden string found in the captured log, quoting the line (shortened). */
function expectNoLeak(logs: LogCapture, forbidden: string[]): void {
  expect(logs.lines.length).toBeGreaterThan(0);
  for (const f of forbidden) {
    expect(f.length).toBeGreaterThanOrEqual(6);
    const line = logs.lines.find((l) => l.includes(f));
    if (line) throw new Error(`log leaks "${f.slice(0, 14)}…": ${line.slice(0, 300)}`);
  }
}

describe('an Incode that echoes what it was sent in its error bodies', () => {
  let upstream: Server;
  let broker: Broker;
  const tokens: string[] = [];
  /** How /omni/add/front-id answers: 500 fails the step, 400 refuses the image. */
  let frontStatus = 500;
  /** Paths Incode was asked for: the risky calls must have happened for their absence from the logs to mean anything. */
  const asked = new Set<string>();

  const body = (req: IncomingMessage) =>
    new Promise<string>((resolve) => {
      const chunks: Buffer[] = [];
      req.on('data', (c: Buffer) => chunks.push(c));
      req.on('end', () => resolve(Buffer.concat(chunks).toString('utf8')));
    });

  beforeAll(async () => {
    upstream = createServer((req, res) => {
      void body(req).then((text) => {
        const path = (req.url ?? '').split('?')[0];
        asked.add(path);
        const fresh = path === '/omni/start' && !text.includes('interviewId') && !text.includes('fail-start');
        if (fresh) {
          // Opaque, not JWT-shaped: nothing may depend on a pattern to keep it out of the logs.
          const token = `tok.${randomBytes(9).toString('hex')}.session`;
          tokens.push(token);
          return res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify({ token, interviewId: randomBytes(12).toString('hex') }));
        }
        const status = path === '/omni/add/front-id/v2' ? frontStatus : path === '/executive/log-in' ? 401 : path === '/omni/start' ? 400 : 500;
        const echoed = `${req.headers['x-incode-hardware-id'] ?? ''} ${req.headers['x-api-key'] ?? ''} ${req.url} ${text}`;
        res.writeHead(status, { 'content-type': 'application/json' }).end(JSON.stringify({ status: 4000 + status, error: `Bad request: ${echoed}`, message: echoed, path: req.url }));
      });
    });
    await new Promise<void>((r) => upstream.listen(0, '127.0.0.1', r));
    const { port } = upstream.address() as AddressInfo;
    broker = await startBroker(
      brokerEnv(`http://127.0.0.1:${port}`, {
        LOG_LEVEL: 'trace',
        RESULTS_MODE: 'both',
        INCODE_MAX_RETRIES: '0',
        JOB_MAX_ATTEMPTS: '2',
        CIRCUIT_FAILURE_THRESHOLD: '1000',
      }),
    );
  });
  afterAll(async () => {
    await broker?.close();
    await new Promise((r) => upstream?.close(r));
  });

  it('logs none of them on any route, in the background jobs or the server-side flow with images', async () => {
    const ext = 'ext-customer-PII-3141';
    const extOnb = 'ext-onboarding-PII-2718';
    const s = (await request(broker.url).post('/session').send({ externalCustomerId: ext }).expect(200)).body;
    await request(broker.url).post('/session/resume').send({ resumeToken: s.resumeToken }).expect(502);
    await request(broker.url).get('/session/onboarding-url').set('x-incode-hardware-id', s.token).expect(502);
    await request(broker.url).post('/session').send({ externalCustomerId: 'fail-start' }).expect(502);

    const images = sampleImages();
    const admin = (r: request.Test) => r.set('authorization', `Bearer ${ADMIN_KEY}`);
    await admin(request(broker.url).post('/onboardings')).send({ front: images.front, back: images.back, selfie: images.selfie, externalCustomerId: extOnb }).expect(502);
    frontStatus = 400;
    await admin(request(broker.url).post('/onboardings')).send({ front: images.front, back: images.back, selfie: images.selfie, externalCustomerId: extOnb }).expect(422);

    // A webhook for the session (its check fails until dead) and one for a session created elsewhere (an executive
    // login, refused with the password echoed).
    const auth = (
      await request(broker.url).post('/webhooks/incode/token').auth(WEBHOOK_CLIENT_ID, WEBHOOK_CLIENT_SECRET).type('form').send({ grant_type: 'client_credentials' }).expect(200)
    ).body.access_token as string;
    const elsewhere = 'abcdef0123456789abcdef01';
    for (const interviewId of [s.interviewId, elsewhere])
      await request(broker.url).post('/webhooks/incode').set('authorization', `Bearer ${auth}`).send({ interviewId, onboardingStatus: 'ONBOARDING_FINISHED', externalId: ext }).expect(200);
    const dead = (id: string) => broker.logs.lines.some((l) => l.includes('job dead-lettered') && l.includes(id));
    await waitFor(() => dead(s.interviewId) && dead(elsewhere), 10_000, 50);
    // The refresh's job fails the same way: its lines are in the log before it is read.
    const deadLines = (id: string) => broker.logs.lines.filter((l) => l.includes('job dead-lettered') && l.includes(id)).length;
    const deadBefore = deadLines(s.interviewId);
    await admin(request(broker.url).post(`/sessions/${s.interviewId}/refresh`)).expect(202);
    await waitFor(() => deadLines(s.interviewId) > deadBefore, 15_000, 50);
    for (const path of ['/omni/start', '/omni/onboarding-url', '/omni/add/front-id/v2', '/omni/get/onboarding/status', '/executive/log-in']) expect([...asked]).toContain(path);

    // The capture works, and background job lines name their session (not its data) for an operator to follow.
    expect(broker.logs.text).toContain(s.interviewId);
    const jobLines = broker.logs.lines.map((l) => JSON.parse(l) as Record<string, unknown>).filter((l) => 'jobKind' in l);
    expect(jobLines.length).toBeGreaterThan(0);
    for (const l of jobLines) expect(l.interviewId).toMatch(/^[0-9a-f]{24}$/);

    expect(tokens.length).toBeGreaterThanOrEqual(3);
    expectNoLeak(broker.logs, [
      ...tokens,
      s.resumeToken,
      s.resumeToken.split('.')[1],
      TEST_API_KEY,
      ADMIN_KEY,
      WEBHOOK_CLIENT_SECRET,
      auth,
      EXEC_PASSWORD,
      ext,
      extOnb,
      'Bad request:',
      images.front.slice(0, 40),
      images.back.slice(2000, 2040),
      images.selfie.slice(1000, 1040),
    ]);
  }, 45_000);
});

describe('database and Redis URLs with passwords that fail to connect', () => {
  async function failedStart(databaseUrl: string): Promise<{ logs: LogCapture; message: string }> {
    const logs = new LogCapture();
    const port = await freePort();
    const config = loadConfig({ NODE_ENV: 'test', LOG_LEVEL: 'trace', PORT: String(port), PUBLIC_URL: `http://127.0.0.1:${port}`, DATABASE_URL: databaseUrl, DATA_ENCRYPTION_KEY: ENCRYPTION_KEY, ADMIN_API_KEYS: ADMIN_KEY, DATABASE_TIMEOUT_MS: '2000' });
    // The start fails; server.ts prints the message to stderr, so it must not carry the URL either.
    const err = await buildApp(config, { logStream: logs }).then(
      async (app) => {
        await app.close();
        return new Error('started');
      },
      (e: Error) => e,
    );
    expect(err.message).not.toBe('started');
    return { logs, message: err.message };
  }

  it('a PostgreSQL that refuses the connection', async () => {
    const port = await freePort();
    const { logs, message } = await failedStart(`postgres://broker:pg-password-closed-1717@127.0.0.1:${port}/test`);
    expect(message).toMatch(/ECONNREFUSED/);
    expect(message).not.toContain('pg-password');
    expectNoLeak(logs, ['pg-password-closed-1717']);
  });

  describeWith('postgres', 'on the test PostgreSQL', () => {
    it('a role or database that does not exist', async () => {
      const u = new URL(services.postgres);
      for (const url of [`postgres://no_such_role:pg-password-role-1818@${u.host}/test`, `postgres://postgres:pg-password-db-1919@${u.host}/no_such_database`]) {
        const { logs, message } = await failedStart(url);
        expect(message).toMatch(/does not exist/);
        expect(message).not.toContain('pg-password');
        expectNoLeak(logs, [new URL(url).password]);
      }
    });
  });

  describeWith('redis', 'on the test Redis', () => {
    it('a Redis user and password it refuses', async () => {
      const u = new URL(services.redis);
      const b = await startSandbox({ LOG_LEVEL: 'trace', REDIS_URL: `redis://no-such-user:redis-password-wrong-2121@${u.host}`, RATE_LIMIT_PER_IP: '100' });
      try {
        for (let i = 0; i < 3; i++) await request(b.url).post('/session').send({}).expect(200);
      } finally {
        await b.close();
      }
      // The outage is logged (with Redis's reason), the password is not.
      expect(b.logs.text).toMatch(/WRONGPASS|NOAUTH/);
      expectNoLeak(b.logs, ['redis-password-wrong-2121']);
    });
  });
});

describe('an error logged as a whole', () => {
  it('keeps its type, code, message and stack, none of the values a library hangs on it (a pg error detail, a cause)', () => {
    const err = Object.assign(new Error('null value in column "token_enc" violates not-null constraint'), {
      code: '23502',
      detail: 'Failing row contains (ext-customer-PII-4411, secret-token-value).',
      where: 'SQL statement "INSERT INTO sessions ..."',
      cause: new Error('ext-customer-PII-4411'),
    });
    const out = JSON.stringify(errSerializer(err));
    expect(JSON.parse(out)).toMatchObject({ type: 'Error', code: '23502', message: err.message, stack: expect.stringContaining('log-safety') });
    expect(out).not.toContain('ext-customer-PII-4411');
    expect(out).not.toContain('secret-token-value');
    // What is already cut down to what may be logged passes as it is.
    expect(errSerializer({ type: 'X', code: 'Y', message: 'z' } as unknown as Error)).toEqual({ type: 'X', code: 'Y', message: 'z' });
  });
});

describe('a request target with credentials in it', () => {
  it('is logged and named by its path alone: no user info, host, query or fragment', async () => {
    // Debug: a passing probe's access line is written only there.
    const b = await startSandbox({ LOG_LEVEL: 'debug' });
    const { port } = new URL(b.url);
    const rawGet = (target: string) =>
      new Promise<string>((resolve, reject) => {
        const socket = connect(Number(port), '127.0.0.1', () => socket.end(`GET ${target} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n`));
        let text = '';
        socket.on('data', (d) => (text += d.toString()));
        socket.on('end', () => resolve(text));
        socket.on('error', reject);
      });
    try {
      const absolute = await rawGet(`http://user:absform-PASSWORD-77@127.0.0.1:${port}/nope?t=query-SECRET-88`);
      expect(absolute).toMatch(/^HTTP\/1\.1 404/);
      expect(absolute).toContain('No route GET /nope');
      expect(await rawGet('/healthz#frag-SECRET-99')).toMatch(/^HTTP\/1\.1 200/);
      await waitFor(() => b.logs.lines.some((l) => l.includes('"url":"/nope"')) && b.logs.lines.some((l) => l.includes('"url":"/healthz"')), 5000, 10);
      for (const secret of ['absform-PASSWORD-77', 'query-SECRET-88']) expect(absolute).not.toContain(secret);
      expectNoLeak(b.logs, ['absform-PASSWORD-77', 'query-SECRET-88', 'frag-SECRET-99']);
    } finally {
      await b.close();
    }
  });

  it.each([
    ['/sessions/abc?x=1', '/sessions/abc'],
    ['/healthz#frag', '/healthz'],
    ['http://u:p@host:1/sessions?x', '/sessions'],
    ['HTTPS://host', ''],
    ['*', '*'],
    ['host:443', ''],
  ])('requestPath(%j) is %j', (url, path) => expect(requestPath(url)).toBe(path));
});
