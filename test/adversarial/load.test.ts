// A bounded load run against an emulator that fails 30% of calls and times out 5% of the others:
// POST /session latency stays bounded with only 200/502/503/504, the process stays healthy, and once
// Incode heals every session whose captures completed gets its results stored.
import request from 'supertest';
import { mapLimit, percentile } from '../helpers/stats';
import type { EmulatorApp } from '../../src/emulator/app';
import { captureAll } from '../helpers/flow';
import { ADMIN_KEY, brokerEnv, startBroker, startEmulator, waitFor, type Running } from '../helpers/harness';

type Broker = Awaited<ReturnType<typeof startBroker>>;

const SESSIONS = 200;
const CONCURRENCY = 20;
const CAPTURED = 40;
const TIMEOUT_MS = 500;

describe('load with a failing and slow Incode', () => {
  let emu: Running<EmulatorApp>;
  let broker: Broker;
  beforeAll(async () => {
    emu = await startEmulator({ processingDelayMs: 50 });
    broker = await startBroker(
      brokerEnv(emu.url, {
        LOG_LEVEL: 'warn',
        RESULTS_MODE: 'polling',
        INCODE_TIMEOUT_MS: String(TIMEOUT_MS),
        INCODE_MAX_RETRIES: '2',
        JOB_MAX_ATTEMPTS: '100',
        JOB_BACKOFF_MS: '50',
        POLL_INTERVAL_MS: '200',
        POLL_MAX_INTERVAL_MS: '1000',
        WORKER_CONCURRENCY: '16',
        // The circuit's own behaviour is proven in circuit.test.ts. Here, five failures in a row (which the order calls
        // happen to finish in can produce) would open it, and its instant 503s could take most of the requests left.
        CIRCUIT_FAILURE_THRESHOLD: '1000',
        EVENT_LOOP_MAX_LAG_MS: '0',
      }),
    );
  });
  afterAll(async () => {
    emu?.app.emulator.resetFaults();
    await broker?.close();
    await emu?.close();
  });

  it('keeps latency bounded and the process healthy, and stores every finished session after healing', async () => {
    emu.app.emulator.setFaults({ errorRate: 0.3, timeoutRate: 0.05, seed: 20240601 });

    // Phase 1: 200 session starts, 20 at a time, under faults.
    const started = await mapLimit(Array.from({ length: SESSIONS }, (_, i) => i), CONCURRENCY, async (i) => {
      const t0 = performance.now();
      const res = await request(broker.url).post('/session').send({ externalCustomerId: `load-${i}` }).timeout(10_000);
      return { ms: performance.now() - t0, status: res.status, body: res.body as { token?: string; interviewId?: string; apiUrl?: string; code?: string } };
    });
    const latencies = started.map((s) => s.ms);
    const byStatus = started.reduce<Record<number, number>>((acc, s) => ({ ...acc, [s.status]: (acc[s.status] ?? 0) + 1 }), {});
    for (const s of started) {
      expect([200, 502, 503, 504]).toContain(s.status);
      if (s.status !== 200) expect(['INCODE_UNAVAILABLE', 'INCODE_TIMEOUT']).toContain(s.body.code);
    }
    // Bounded by the Incode timeout (no request hangs), not a speed target: a few timeouts' worth, with slack for a
    // loaded machine.
    expect(percentile(latencies, 99)).toBeLessThan(TIMEOUT_MS * 4 + 1000);
    expect(Math.max(...latencies)).toBeLessThan(TIMEOUT_MS * 8 + 2000);
    expect(byStatus[200] ?? 0).toBeGreaterThan(SESSIONS * 0.3);
    expect((byStatus[502] ?? 0) + (byStatus[503] ?? 0) + (byStatus[504] ?? 0)).toBeGreaterThan(0);
    expect((await request(broker.url).get('/healthz')).status).toBe(200);

    // Phase 2: captures of some sessions while Incode still fails 30% (no hangs: captureAll retries 5xx,
    // and timeouts are switched off so every capture answers), with polling and result jobs under faults.
    emu.app.emulator.setFaults({ timeoutRate: 0 });
    const ok = started.filter((s) => s.status === 200).map((s) => s.body as { token: string; interviewId: string; apiUrl: string });
    const captured = ok.slice(0, CAPTURED);
    const outcomes = await mapLimit(captured, 8, async (s) =>
      captureAll(s.apiUrl, s.token).then(
        () => true,
        () => false,
      ),
    );
    const finished = captured.filter((_, i) => outcomes[i]);
    expect(finished.length).toBeGreaterThan(CAPTURED * 0.9);
    // Let the pipeline work against the failing Incode for a while, then heal.
    await new Promise((r) => setTimeout(r, 1500));
    expect((await request(broker.url).get('/healthz')).status).toBe(200);
    emu.app.emulator.resetFaults();

    // Phase 3: after healing, every finished session's results are stored (bounded wait).
    const admin = (id: string) => request(broker.url).get(`/sessions/${id}`).set('authorization', `Bearer ${ADMIN_KEY}`);
    await waitFor(
      async () => {
        const rows = await Promise.all(finished.map((s) => admin(s.interviewId).then((r) => r.body as { resultsStatus: string })));
        return rows.every((r) => r.resultsStatus === 'ready');
      },
      40_000,
      500,
    );
    for (const s of finished.slice(0, 5)) {
      const r = (await admin(s.interviewId).expect(200)).body;
      expect(r).toMatchObject({ onboardingStatus: 'ONBOARDING_FINISHED', resultsStatus: 'ready' });
      expect(r.scores).toBeTruthy();
      expect(r.ocr).toBeTruthy();
    }
    // Nothing was dead-lettered, and sessions that were never captured are still pending, not failed.
    const metrics = (await request(broker.url).get('/metrics')).text;
    expect(metrics).not.toMatch(/^result_jobs_dead_letters_total\{[^}]*\} [1-9]/m);
    const uncaptured = ok.slice(CAPTURED, CAPTURED + 3);
    for (const s of uncaptured) expect((await admin(s.interviewId).expect(200)).body.resultsStatus).toBe('pending');

    // Healthy and ready again.
    expect((await request(broker.url).get('/healthz')).status).toBe(200);
    await waitFor(async () => (await request(broker.url).get('/readyz')).status === 200, 10_000, 250);
    await request(broker.url).post('/session').send({}).expect(200);
  }, 120_000);
});
