// Resilience against a failing Incode: the circuit opens after consecutive failures and answers 503 at
// once without calling Incode, probes once when half-open, recovers after healing; bounded concurrency
// towards Incode; load shedding when the event loop lags.
import request from 'supertest';
import type { EmulatorApp } from '../../src/emulator/app';
import { brokerEnv, startBroker, startEmulator, startSandbox, waitFor, type Running } from '../helpers/harness';
import { startRecordingProxy, type RecordingProxy } from '../observability/recording-proxy';
import { metricValue } from '../helpers/metrics';

type Broker = Awaited<ReturnType<typeof startBroker>>;

// Long enough that a burst of requests on a loaded machine all fall within one open period (a later one would be the probe).
const RESET_MS = 2000;

const gauge = (url: string, group: string) => metricValue(url, `incode_circuit_state{group="${group}"}`);
const rejections = async (url: string) => (await metricValue(url, 'incode_circuit_rejections_total{operation="start"}')) ?? 0;

describe('circuit breaker against an emulator that fails, then heals', () => {
  let emu: Running<EmulatorApp>;
  let proxy: RecordingProxy;
  let broker: Broker;
  const starts = () => proxy.count('/omni/start');

  beforeAll(async () => {
    emu = await startEmulator();
    proxy = await startRecordingProxy(emu.url);
    broker = await startBroker(brokerEnv(proxy.url, { CIRCUIT_FAILURE_THRESHOLD: '3', CIRCUIT_RESET_MS: String(RESET_MS), RESULTS_MODE: 'webhook' }));
  });
  afterAll(async () => {
    await broker.close();
    await proxy.close();
    await emu.close();
  });
  afterEach(() => emu.app.emulator.resetFaults());

  /** Whatever an earlier test left: healed, and the circuit closed by a probe that succeeded (or was closed already). */
  async function closedCircuit(): Promise<void> {
    emu.app.emulator.resetFaults();
    await new Promise((r) => setTimeout(r, RESET_MS + 50));
    await request(broker.url).post('/session').send({}).expect(200);
    expect(await gauge(broker.url, 'start')).toBe(0);
  }

  /** Fails until the circuit opens: exactly threshold calls reach Incode. */
  async function openCircuit(): Promise<void> {
    emu.app.emulator.setFaults({ errorRate: 1 });
    const before = starts();
    for (let i = 0; i < 3; i++) {
      const res = await request(broker.url).post('/session').send({});
      expect(res.status).toBe(502);
      expect(res.body).toEqual({ code: 'INCODE_UNAVAILABLE', message: expect.any(String), requestId: expect.any(String) });
    }
    expect(starts()).toBe(before + 3);
  }

  it('opens after CIRCUIT_FAILURE_THRESHOLD failures, answers 503 with Retry-After at once, and stops calling Incode', async () => {
    expect((await request(broker.url).post('/session').send({}).expect(200)).body.token).toBeTruthy();
    await openCircuit();
    const calls = starts();
    const rejectedBefore = await rejections(broker.url);
    for (let i = 0; i < 10; i++) {
      const res = await request(broker.url).post('/session').send({});
      expect(res.status).toBe(503);
      expect(res.body).toEqual({ code: 'INCODE_UNAVAILABLE', message: expect.any(String), requestId: expect.any(String) });
      const retry = Number(res.headers['retry-after']);
      expect(retry).toBeGreaterThanOrEqual(1);
      expect(retry).toBeLessThanOrEqual(Math.ceil(RESET_MS / 1000));
      // No upstream body or internals.
      expect(JSON.stringify(res.body)).not.toMatch(/emulated|Service temporarily|stack|at /);
    }
    expect(starts()).toBe(calls);
    // Each refusal is one warn line without frames: an error line with a stack per request would bury the failures
    // that opened the circuit.
    const refusals = broker.logs.lines.filter((l) => l.includes('"INCODE_UNAVAILABLE"') && l.includes('"status":503')).map((l) => JSON.parse(l));
    expect(refusals.length).toBeGreaterThanOrEqual(10);
    for (const l of refusals) expect(l).toMatchObject({ level: 40, msg: 'request refused' });
    expect(await gauge(broker.url, 'start')).toBe(2);
    // Refusals are counted, not timed: a latency of 0 s per refusal would drag the call latency down in an outage.
    expect(await rejections(broker.url)).toBe(rejectedBefore + 10);
    const metrics = (await request(broker.url).get('/metrics')).text;
    expect(metrics).not.toMatch(/outcome="circuit_open"/);
    expect(metrics).toMatch(/incode_call_duration_seconds_count\{operation="start",outcome="http_503"\} \d+/);
  });

  it('a failed half-open probe reopens the circuit; after healing it closes and the gauge is 0', async () => {
    await closedCircuit();
    const entered = async (to: string) => (await metricValue(broker.url, `incode_circuit_transitions_total{group="start",to="${to}"}`)) ?? 0;
    const before = { open: await entered('open'), halfOpen: await entered('half-open'), closed: await entered('closed') };
    await openCircuit();
    expect(await entered('open')).toBe(before.open + 1);
    // Still failing after the reset delay: one probe reaches Incode, fails, and the circuit reopens.
    emu.app.emulator.setFaults({ errorRate: 1 });
    await new Promise((r) => setTimeout(r, RESET_MS + 50));
    // Its pause over with no call yet: reported half-open (the next call probes), not still open.
    expect(await gauge(broker.url, 'start')).toBe(1);
    const sent = starts();
    expect((await request(broker.url).post('/session').send({})).status).toBe(502);
    expect(starts()).toBe(sent + 1);
    expect((await request(broker.url).post('/session').send({})).status).toBe(503);
    expect(starts()).toBe(sent + 1);
    expect(await gauge(broker.url, 'start')).toBe(2);
    // Every change is counted, the probe's brief half-open too, which no scrape of the gauge would catch.
    expect(await entered('half-open')).toBe(before.halfOpen + 1);
    expect(await entered('open')).toBe(before.open + 2);

    // Healed: after CIRCUIT_RESET_MS the probe succeeds and the circuit closes.
    emu.app.emulator.resetFaults();
    const ok = await waitFor(async () => {
      const res = await request(broker.url).post('/session').send({});
      // Only "still open" until it heals (a failed expect inside waitFor fails the test at once).
      expect([200, 503]).toContain(res.status);
      return res.status === 200 && res.body;
    }, 5000, 100);
    expect(ok.interviewId).toMatch(/^[0-9a-f]{24}$/);
    expect(await gauge(broker.url, 'start')).toBe(0);
    expect(await entered('closed')).toBe(before.closed + 1);
    for (let i = 0; i < 3; i++) await request(broker.url).post('/session').send({}).expect(200);
  });

  it('lets exactly one probe through while half-open', async () => {
    await openCircuit();
    emu.app.emulator.resetFaults();
    emu.app.emulator.setFaults({ startLatencyMs: 1500 });
    await new Promise((r) => setTimeout(r, RESET_MS + 50));
    const before = starts();
    const statuses = await Promise.all(Array.from({ length: 6 }, () => request(broker.url).post('/session').send({}).then((r) => r.status)));
    expect(statuses.filter((s) => s === 200)).toHaveLength(1);
    expect(statuses.filter((s) => s === 503)).toHaveLength(5);
    expect(starts()).toBe(before + 1);
    expect(await gauge(broker.url, 'start')).toBe(0);
  });

  it('keeps circuits per operation group: reads still reach Incode while start is open', async () => {
    const s = (await request(broker.url).post('/session').send({}).expect(200)).body;
    await openCircuit();
    emu.app.emulator.resetFaults();
    const reads = proxy.count('/omni/get/onboarding/status');
    await request(broker.url).post(`/sessions/${s.interviewId}/refresh`).set('authorization', `Bearer ${broker.config.adminApiKeys[0]}`).expect(202);
    await waitFor(async () => proxy.count('/omni/get/onboarding/status') > reads, 5000);
    expect(await gauge(broker.url, 'start')).toBe(2);
    expect(broker.app.incode.circuitState('read')).toBe('closed');
    await new Promise((r) => setTimeout(r, RESET_MS + 50));
    await request(broker.url).post('/session').send({}).expect(200);
  });

  it('timeouts count as failures too, and are answered 504 before the circuit opens', async () => {
    const slow = await startBroker(brokerEnv(proxy.url, { CIRCUIT_FAILURE_THRESHOLD: '2', CIRCUIT_RESET_MS: '10000', INCODE_TIMEOUT_MS: '2000', INCODE_MAX_RETRIES: '0', RESULTS_MODE: 'webhook' }));
    try {
      emu.app.emulator.setFaults({ timeoutRate: 1 });
      expect((await request(slow.url).post('/session').send({})).status).toBe(504);
      expect((await request(slow.url).post('/session').send({})).status).toBe(504);
      const before = starts();
      const res = await request(slow.url).post('/session').send({});
      expect(res.status).toBe(503);
      expect(res.body.code).toBe('INCODE_UNAVAILABLE');
      expect(Number(res.headers['retry-after'])).toBeGreaterThanOrEqual(1);
      // Answered without waiting on Incode: no call reached it.
      expect(starts()).toBe(before);
      expect((await request(slow.url).get('/healthz')).status).toBe(200);
    } finally {
      await slow.close();
    }
  });
});

describe('bounded concurrency towards Incode', () => {
  let emu: Running<EmulatorApp>;
  let proxy: RecordingProxy;
  beforeAll(async () => {
    emu = await startEmulator({ faults: { startLatencyMs: 150 } });
    proxy = await startRecordingProxy(emu.url);
  });
  afterAll(async () => {
    await proxy.close();
    await emu.close();
  });

  it.each([
    ['INCODE_MAX_CONCURRENCY', { INCODE_MAX_CONCURRENCY: '2' }, 2],
    ['INCODE_POOL_CONNECTIONS', { INCODE_POOL_CONNECTIONS: '3' }, 3],
  ])('%s bounds the calls in flight; the rest wait in line and succeed', async (_name, env, bound) => {
    const b = await startBroker(brokerEnv(proxy.url, { ...env, RESULTS_MODE: 'webhook' }));
    try {
      proxy.resetMax();
      const statuses = await Promise.all(Array.from({ length: 10 }, () => request(b.url).post('/session').send({}).then((r) => r.status)));
      expect(statuses.every((s) => s === 200)).toBe(true);
      expect(proxy.maxInflight()).toBeLessThanOrEqual(bound);
      expect(proxy.maxInflight()).toBeGreaterThanOrEqual(Math.min(2, bound));
    } finally {
      await b.close();
    }
  });
});

/** Keeps this process's event loop lagging (~100 ms per turn) until the given time. */
async function lagLoop(until: number): Promise<void> {
  while (Date.now() < until) {
    const t = Date.now() + 100;
    while (Date.now() < t) {
      /* busy */
    }
    await new Promise((r) => setImmediate(r));
  }
}

describe('load shedding when the event loop lags', () => {
  it('answers 503 OVERLOADED with Retry-After while the loop is blocked, and recovers', async () => {
    const emu = await startEmulator();
    const b = await startBroker(brokerEnv(emu.url, { EVENT_LOOP_MAX_LAG_MS: '50' }));
    try {
      await request(b.url).get('/healthz').expect(200);
      // The broker runs in this process: keep its event loop lagging for a few sampling intervals, and ask while it lags.
      const lagUntil = Date.now() + 3500;
      const lagger = lagLoop(lagUntil);
      await new Promise((r) => setTimeout(r, 1500));
      let shed: request.Response | undefined;
      let health: number | undefined;
      let scrape: string | undefined;
      for (let i = 0; i < 5 && !shed && Date.now() < lagUntil; i++) {
        const res = await request(b.url).post('/session').send({});
        if (res.status === 503) {
          shed = res;
          // Liveness and the metrics scrape are still answered while requests are shed.
          health = (await request(b.url).get('/healthz')).status;
          scrape = (await request(b.url).get('/metrics')).text;
        }
      }
      await lagger;
      expect(health).toBe(200);
      expect(scrape).toMatch(/^load_shed_total\{reason="event_loop"\} [1-9]/m);
      expect(shed).toBeDefined();
      expect(shed!.body.code).toBe('OVERLOADED');
      expect(shed!.headers['retry-after']).toBe('5');
      await waitFor(async () => (await request(b.url).post('/session').send({})).status === 200, 5000, 200);
    } finally {
      await b.close();
      await emu.close();
    }
  }, 30_000);

  it("never sheds the sandbox's emulator, which stands for Incode: only the broker's own routes are refused", async () => {
    const b = await startSandbox({ EVENT_LOOP_MAX_LAG_MS: '50' });
    try {
      const lagUntil = Date.now() + 3500;
      const lagger = lagLoop(lagUntil);
      await new Promise((r) => setTimeout(r, 1500));
      let shed = false;
      const emulatorStatuses: number[] = [];
      for (let i = 0; i < 5 && !shed && Date.now() < lagUntil; i++) {
        shed = (await request(b.url).post('/session').send({})).status === 503;
        // Asked while the broker sheds: the emulator answers as Incode would (401 for a token it never issued).
        if (shed) emulatorStatuses.push((await request(b.url).get('/sandbox/incode/0/omni/get/onboarding/status').set('x-incode-hardware-id', 'not-a-token').set('api-version', '1.0')).status);
      }
      await lagger;
      expect(shed).toBe(true);
      expect(emulatorStatuses).toEqual([401]);
    } finally {
      await b.close();
    }
  }, 30_000);
});
