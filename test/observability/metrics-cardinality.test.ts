// /metrics is safe to scrape forever: label values come from bounded sets (many distinct hostile paths, methods,
// webhook statuses and upstream answers add no series), and a database outage does not fail the scrape.
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { connect } from 'node:net';
import request from 'supertest';
import { loadConfig } from '../../src/config';
import { Cipher } from '../../src/store/crypto';
import { createStore } from '../../src/store/index';
import { storeWith } from '../helpers/store-proxy';
import { ADMIN_KEY, ENCRYPTION_KEY, WEBHOOK_CLIENT_ID, WEBHOOK_CLIENT_SECRET, brokerEnv, startBroker, startSandbox } from '../helpers/harness';

type Broker = Awaited<ReturnType<typeof startBroker>>;

/** Label sets per family: histograms by their _count line, counters and gauges by their sample line. */
function seriesCounts(text: string): Record<string, number> {
  const out: Record<string, number> = {};
  for (const line of text.split('\n')) {
    if (!line || line.startsWith('#') || /_(bucket|sum)\{/.test(line)) continue;
    const name = line.replace(/[{ ].*$/, '').replace(/_count$/, '');
    out[name] = (out[name] ?? 0) + 1;
  }
  return out;
}

const metricsOf = async (b: Broker) => (await request(b.url).get('/metrics').expect(200)).text;

/** One request written by hand: methods and paths no HTTP client would send. */
function raw(url: string, head: string): Promise<void> {
  return new Promise((resolve) => {
    const s = connect(Number(new URL(url).port), '127.0.0.1', () => s.write(`${head}\r\nHost: x\r\nConnection: close\r\n\r\n`));
    s.on('data', () => undefined);
    s.on('error', () => resolve());
    s.on('close', () => resolve());
  });
}

/** Hostile requests whose paths, methods and statuses all carry `tag`. */
async function hostileRequests(url: string, tag: string, sandbox: boolean): Promise<void> {
  const cors = { origin: 'http://evil.example', 'access-control-request-method': 'POST' };
  await Promise.all([
    request(url).get(`/nope/${tag}`),
    request(url).post(`/${tag}`).send({}),
    request(url).head(`/healthz/${tag}`),
    request(url).options(`/session/${tag}`).set(cors),
    request(url).delete(`/sessions/${tag}`).set('authorization', `Bearer ${ADMIN_KEY}`),
    request(url).get(`/sessions/${tag}`).set('authorization', `Bearer ${ADMIN_KEY}`),
    request(url).get(`/docs/static/${tag}.js`),
    raw(url, `PROPFIND /${tag} HTTP/1.1`),
    raw(url, `${tag.toUpperCase().replace(/[^A-Z]/g, '')} /x HTTP/1.1`),
    ...(sandbox
      ? [
          request(url).get(`/sandbox/incode/${tag}`),
          request(url).post(`/sandbox/incode/0/omni/${tag}`).send({}),
          request(url).options(`/sandbox/incode/0/omni/${tag}`).set(cors),
          request(url).get(`/sandbox/incode/0/omni/get/score?id=${tag}`),
        ]
      : []),
  ]);
}

describe('metrics cardinality', () => {
  let upstream: Server;
  let broker: Broker;
  let sandbox: Broker;
  // Incode, or a proxy before it, answering /omni/start with any three digits it likes.
  const statuses: number[] = [];

  beforeAll(async () => {
    upstream = createServer((req, res) => {
      req.resume();
      const status = req.url?.startsWith('/omni/start') ? (statuses.shift() ?? 503) : 404;
      res.writeHead(status, { 'content-type': 'application/json' }).end(JSON.stringify({ status, error: 'nope' }));
    });
    await new Promise<void>((r) => upstream.listen(0, '127.0.0.1', r));
    const url = `http://127.0.0.1:${(upstream.address() as AddressInfo).port}`;
    broker = await startBroker(brokerEnv(url, { INCODE_MAX_RETRIES: '0', CIRCUIT_FAILURE_THRESHOLD: '1000', RESULTS_MODE: 'webhook', CORS_ORIGINS: '*' }));
    sandbox = await startSandbox({ CORS_ORIGINS: '*' });
  });
  afterAll(async () => {
    await broker?.close();
    await sandbox?.close();
    await new Promise((r) => upstream?.close(r));
  });

  it('adds no series for new hostile paths, methods, webhook statuses or upstream status codes', async () => {
    const token = (
      await request(broker.url)
        .post('/webhooks/incode/token')
        .auth(WEBHOOK_CLIENT_ID, WEBHOOK_CLIENT_SECRET)
        .type('form')
        .send({ grant_type: 'client_credentials' })
        .expect(200)
    ).body.access_token as string;

    const round = async (n: number) => {
      for (let i = 0; i < 20; i++) {
        const tag = `hostile-${n}-${i}-${'q'.repeat(i)}`;
        // One unusual client error and one unusual server error per request: 4xx and 5xx beyond the named ones.
        statuses.push(430 + n * 20 + i, 505 + n * 20 + i);
        await request(broker.url).post('/session').send({}).expect(502);
        await request(broker.url).post('/session').send({}).expect(502);
        await request(broker.url)
          .post('/webhooks/incode')
          .set('authorization', `Bearer ${token}`)
          .send({ interviewId: `iv${n}x${i}`, onboardingStatus: `EVIL_STATUS_${n}_${i}` })
          .expect(200);
        await request(broker.url).post('/webhooks/incode').set('authorization', `Bearer forged-${tag}`).send({ interviewId: 'x', onboardingStatus: 'X' }).expect(401);
        await hostileRequests(broker.url, tag, false);
        await hostileRequests(sandbox.url, tag, true);
      }
    };

    // A scrape is a request too: its own series exists from the second scrape on.
    await metricsOf(broker);
    await metricsOf(sandbox);
    await round(0);
    const [first, firstSandbox] = [await metricsOf(broker), await metricsOf(sandbox)];
    await round(1);
    const [second, secondSandbox] = [await metricsOf(broker), await metricsOf(sandbox)];

    // Families whose labels come from requests or upstream answers: the second round added none (jobs and the
    // process's own metrics move with time, not with input).
    const fromInput = ['http_request_duration_seconds', 'incode_call_duration_seconds', 'webhooks_received_total', 'sessions_created_total', 'load_shed_total'];
    const pick = (c: Record<string, number>) => Object.fromEntries(fromInput.map((f) => [f, c[f] ?? 0]));
    expect(pick(seriesCounts(second))).toEqual(pick(seriesCounts(first)));
    expect(pick(seriesCounts(secondSandbox))).toEqual(pick(seriesCounts(firstSandbox)));
    for (const text of [second, secondSandbox]) {
      expect(text).not.toMatch(/hostile|EVIL_STATUS|forged|iv1x/i);
      const total = Object.values(seriesCounts(text)).reduce((a, b) => a + b, 0);
      expect(total).toBeLessThan(300);
    }
    // Unusual statuses are told by class; a status the broker acts on keeps its own label.
    expect(second).toMatch(/^incode_call_duration_seconds_count\{operation="start",outcome="http_4xx"\} 40$/m);
    expect(second).toMatch(/^incode_call_duration_seconds_count\{operation="start",outcome="http_5xx"\} 40$/m);
    expect(second).toMatch(/^webhooks_received_total\{status="OTHER",auth="oauth",outcome="recorded"\} 40$/m);
    expect(second).toMatch(/^http_request_duration_seconds_count\{method="GET",route="unmatched",status_code="404"\} [1-9]/m);
  }, 60_000);
});

describe('metrics while the database is down', () => {
  it('still answers every other metric, without the queue depth it cannot read and without the error', async () => {
    const real = createStore({ url: 'sqlite::memory:', cipher: new Cipher(loadConfig({ NODE_ENV: 'test', INCODE_API_KEY: 'k', DATA_ENCRYPTION_KEY: ENCRYPTION_KEY }).encryption.keys) });
    let down = false;
    const refused = () => Promise.reject(Object.assign(new Error('connect ECONNREFUSED 10.9.8.7:5432'), { code: 'ECONNREFUSED', syscall: 'connect' }));
    const store = storeWith(real, (method) => (method === 'countJobs' && down ? refused : null));
    const b = await startSandbox({}, { store });
    try {
      expect(await metricsOf(b)).toMatch(/^result_jobs_queue_depth\{state="queued"\} \d+$/m);
      down = true;
      const res = await request(b.url).get('/metrics');
      expect(res.status).toBe(200);
      expect(res.text).toMatch(/^http_request_duration_seconds_count\{method="GET",route="\/metrics",status_code="200"\} 1$/m);
      expect(res.text).not.toMatch(/^result_jobs_queue_depth\{/m);
      expect(res.text).not.toContain('10.9.8.7');
      down = false;
      expect(await metricsOf(b)).toMatch(/^result_jobs_queue_depth\{state="queued"\} \d+$/m);
    } finally {
      await b.close();
      await real.close();
    }
  });
});
