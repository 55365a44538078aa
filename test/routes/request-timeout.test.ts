// REQUEST_TIMEOUT_MS: an upload that stops arriving is answered and closed, so it gives back its share of the upload
// budget and lets app.close() finish; a slow handler is not cut short by it.
import net from 'node:net';
import type { Server } from 'node:http';
import type { EmulatorApp } from '../../src/emulator/app';
import { sampleImages } from '../helpers/flow';
import { ADMIN_KEY, brokerEnv, recordRequests, startBroker, startEmulator, waitFor, type Running } from '../helpers/harness';
import { metricValue } from '../helpers/metrics';

const BUDGET = 1_000_000;

/**
 * Sends the headers of a POST /onboardings announcing `length` bytes and the first few, then nothing more. `admitted`
 * waits (up to 5 s) until the broker's server has taken the request in (not merely until the client wrote it).
 */
function stalledUpload(broker: { url: string; app: { server: Server } }, length: number) {
  const u = new URL(broker.url);
  const seen = recordRequests(broker.app.server);
  const admitted = () => waitFor(() => seen.urls.includes('/onboardings'), 5000, 5).finally(seen.stop);
  const socket = net.connect(Number(u.port), u.hostname);
  let received = '';
  socket.on('data', (d) => (received += d.toString()));
  socket.on('error', () => undefined);
  const closed = new Promise<number>((resolve) => socket.once('close', () => resolve(Date.now())));
  const sent = new Promise<number>((resolve) =>
    socket.once('connect', () =>
      socket.write(
        `POST /onboardings HTTP/1.1\r\nHost: ${u.host}\r\nAuthorization: Bearer ${ADMIN_KEY}\r\nContent-Type: application/json\r\nContent-Length: ${length}\r\n\r\n{"front":"`,
        () => resolve(Date.now()),
      ),
    ),
  );
  return { socket, sent, admitted, closed, received: () => received };
}

async function upload(brokerUrl: string) {
  const { front, back, selfie } = sampleImages();
  const r = await fetch(`${brokerUrl}/onboardings`, {
    method: 'POST',
    headers: { authorization: `Bearer ${ADMIN_KEY}`, 'content-type': 'application/json' },
    body: JSON.stringify({ front, back, selfie }),
    signal: AbortSignal.timeout(20_000),
  });
  return { status: r.status, body: (await r.json()) as Record<string, unknown> };
}

const bounded = <T>(p: Promise<T>, ms: number) =>
  Promise.race([p, new Promise<never>((_, reject) => setTimeout(() => reject(new Error(`not within ${ms} ms`)), ms).unref())]);

describe('REQUEST_TIMEOUT_MS', () => {
  let emu: Running<EmulatorApp>;
  beforeAll(async () => {
    emu = await startEmulator({ processingDelayMs: 50 });
    // Made once and cached: on a slow machine making them inside the timed window took longer than the timeout.
    sampleImages();
  });
  afterAll(async () => emu.close());

  it('counts an upload its client gave up on before the body was whole, which no latency sample records', async () => {
    const b = await startBroker(brokerEnv(emu.url, { ONBOARDING_MAX_INFLIGHT_BYTES: String(BUDGET) }), { runWorker: false });
    try {
      const aborted = () => metricValue(b.url, 'http_requests_aborted_total{route="/onboardings"}');
      const stalled = stalledUpload(b, BUDGET);
      await stalled.sent;
      await stalled.admitted();
      stalled.socket.destroy();
      await waitFor(async () => (await aborted()) === 1, 5000, 20);
    } finally {
      await b.close();
    }
  });

  it('closes a stalled upload after the timeout and gives its upload budget back', async () => {
    const b = await startBroker(brokerEnv(emu.url, { REQUEST_TIMEOUT_MS: '2000', ONBOARDING_MAX_INFLIGHT_BYTES: String(BUDGET) }), { runWorker: false });
    const stalled = stalledUpload(b, BUDGET);
    try {
      const sentAt = await stalled.sent;
      // The refusal below needs the stalled upload admitted first, not merely written by the client.
      await stalled.admitted();
      // While it holds the whole budget, a real upload is turned away: the stalled one really holds it.
      const refused = await upload(b.url);
      expect(refused.status).toBe(503);
      expect(refused.body.code).toBe('OVERLOADED');

      // Closed at the timeout plus at most a quarter of it (Node's check interval); the rest is slack.
      const closedAt = await bounded(stalled.closed, 8000);
      expect(closedAt - sentAt).toBeGreaterThanOrEqual(1900);
      expect(stalled.received()).toMatch(/^HTTP\/1\.1 408 /);

      const admitted = await upload(b.url);
      expect(admitted.status).toBe(202);
      expect(admitted.body.interviewId).toEqual(expect.any(String));
    } finally {
      stalled.socket.destroy();
      await b.close();
    }
  }, 30_000);

  it('lets app.close() finish within SHUTDOWN_GRACE_MS while an upload is stalled (Node stops its timeouts once closing)', async () => {
    const env = brokerEnv(emu.url, { REQUEST_TIMEOUT_MS: '60000', SHUTDOWN_GRACE_MS: '1000', ONBOARDING_MAX_INFLIGHT_BYTES: String(BUDGET) });
    const b = await startBroker(env, { runWorker: false });
    const stalled = stalledUpload(b, BUDGET);
    try {
      await stalled.sent;
      // Admitted first, so the real upload below is the one turned away.
      await stalled.admitted();
      // Only once the route holds it is the connection busy (an idle one is closed by close() anyway).
      expect((await upload(b.url)).status).toBe(503);
      const t = Date.now();
      await bounded(b.close(), 5000);
      expect(Date.now() - t).toBeGreaterThanOrEqual(900);
      await bounded(stalled.closed, 1000);
    } finally {
      stalled.socket.destroy();
    }
  }, 30_000);

  it('does not count the handler: an Incode call longer than the timeout still answers', async () => {
    const slow = await startEmulator({ processingDelayMs: 50, faults: { startLatencyMs: 1800 } });
    const b = await startBroker(brokerEnv(slow.url, { REQUEST_TIMEOUT_MS: '1000' }), { runWorker: false });
    try {
      const t = Date.now();
      const r = await fetch(`${b.url}/session`, { method: 'POST', signal: AbortSignal.timeout(10_000) });
      expect(r.status).toBe(200);
      expect(Date.now() - t).toBeGreaterThanOrEqual(1800);
      expect(((await r.json()) as { token: string }).token).toMatch(/^eyJ/);
    } finally {
      await b.close();
      await slow.close();
    }
  }, 30_000);
});
