// Time from an ONBOARDING_FINISHED webhook to scores and OCR stored, read back from the results API afterwards.
import { Pool } from 'undici';
import * as samples from '../src/emulator/sample-images';
import { captureAll } from '../test/helpers/flow';
import { mapLimit, percentile } from '../test/helpers/stats';
import { ADMIN_KEY, CLIENT_ID, startBroker, startEmulator, withChildren, type BenchContext } from './stack';
import { webhookToken } from './webhook-bench';

export const RESULTS_SESSIONS = 200;
/** Webhooks per second: a steady rate, so the figure is latency rather than the drain time of a burst. */
export const RESULTS_RATE = 50;

export interface ResultsLatencyRun {
  sessions: number;
  ratePerSec: number;
  stored: number;
  p50: number | null;
  p90: number | null;
  p99: number | null;
  max: number | null;
  ackP50: number | null;
  ackP99: number | null;
  peakRssMb: number | null;
  method: string;
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

async function json<T>(pool: Pool, method: 'GET' | 'POST', path: string, headers: Record<string, string>, body?: unknown): Promise<{ status: number; body: T }> {
  const res = await pool.request({ method, path, headers: body === undefined ? headers : { ...headers, 'content-type': 'application/json' }, body: body === undefined ? undefined : JSON.stringify(body) });
  const text = await res.body.text();
  return { status: res.statusCode, body: (text ? JSON.parse(text) : {}) as T };
}

export const RESULTS_METHOD =
  `${RESULTS_SESSIONS} sessions are created through the broker's POST /session and completed on the emulator with its token-only ` +
  'capture endpoints (small sample images, 10 ms processing, no emulator webhooks). Once the emulator says ONBOARDING_FINISHED for all, ' +
  `the bench sends each session's ONBOARDING_FINISHED webhook itself at ${RESULTS_RATE}/s and notes the send time t0. The broker verifies ` +
  'the status with the emulator, fetches score and OCR, encrypts and stores them. GET /sessions?resultsStatus=ready then lists ' +
  'every stored session with its updatedAt (set to the storing time; reading does not change it), every 250 ms until all are there; ' +
  'latency = updatedAt - t0 (same clock, ms resolution). The broker does no status polling during the run.';

export async function runResultsLatency(ctx: BenchContext, log: (m: string) => void): Promise<ResultsLatencyRun> {
  log(`Results latency: ${RESULTS_SESSIONS} sessions, ONBOARDING_FINISHED webhooks at ${RESULTS_RATE}/s`);
  return withChildren(async (track) => {
    const emu = track(await startEmulator(ctx, 'results', { processingDelayMs: 10 }));
    const broker = track(await startBroker(ctx, 'results', emu.url));
    const bp = new Pool(broker.url, { connections: 16 });
    const ep = new Pool(emu.url, { connections: 8 });
    try {
      // 1. Sessions through the broker, as an app would create them.
      const sessions = await mapLimit(
        Array.from({ length: RESULTS_SESSIONS }, (_, i) => i),
        10,
        async (i) => {
          const r = await json<{ interviewId: string; token: string }>(bp, 'POST', '/session', {}, { countryCode: 'ALL', externalCustomerId: `bench-results-${i}` });
          if (r.status !== 200) throw new Error(`POST /session answered ${r.status}`);
          return { interviewId: r.body.interviewId, token: r.body.token };
        },
      );
      // 2. Complete them on the emulator (what the Web SDK does from the browser).
      const thumbnails = {
        front: samples.idFrontThumbnail().toString('base64'),
        back: samples.idBackThumbnail().toString('base64'),
        selfie: samples.croppedIdFace().toString('base64'),
      };
      await mapLimit(sessions, 4, (s) => captureAll(`${emu.url}/0`, s.token, thumbnails));
      const deadline = Date.now() + 20_000;
      for (const s of sessions) {
        for (;;) {
          const r = await json<{ onboardingStatus: string }>(ep, 'GET', '/0/omni/get/onboarding/status', { 'x-incode-hardware-id': s.token, 'api-version': '1.0' });
          if (r.body.onboardingStatus === 'ONBOARDING_FINISHED') break;
          if (Date.now() > deadline) throw new Error(`session ${s.interviewId} did not finish on the emulator (${r.body.onboardingStatus})`);
          await sleep(20);
        }
      }
      // 3. The webhooks, paced.
      const token = await webhookToken(broker.url);
      const sentAt = new Map<string, number>();
      const acks: number[] = [];
      const gap = 1000 / RESULTS_RATE;
      const start = Date.now();
      const inflight: Promise<void>[] = [];
      for (let i = 0; i < sessions.length; i++) {
        const wait = start + i * gap - Date.now();
        if (wait > 0) await sleep(wait);
        const s = sessions[i];
        const t0 = Date.now();
        sentAt.set(s.interviewId, t0);
        inflight.push(
          json(bp, 'POST', '/webhooks/incode', { authorization: `Bearer ${token}` }, { interviewId: s.interviewId, onboardingStatus: 'ONBOARDING_FINISHED', clientId: CLIENT_ID }).then((r) => {
            if (r.status !== 200) throw new Error(`webhook answered ${r.status}`);
            acks.push(Date.now() - t0);
          }),
        );
      }
      await Promise.all(inflight);
      // 4. Read the storing times once everything is there (one light list call every 250 ms).
      const stored = new Map<string, number>();
      const until = Date.now() + 30_000;
      while (stored.size < sessions.length && Date.now() < until) {
        await sleep(250);
        let cursor: string | null = null;
        stored.clear();
        do {
          const q: string = `/sessions?resultsStatus=ready&limit=200${cursor ? `&cursor=${encodeURIComponent(cursor)}` : ''}`;
          const r: { status: number; body: { items: { interviewId: string; updatedAt: string }[]; nextCursor: string | null } } = await json(bp, 'GET', q, { authorization: `Bearer ${ADMIN_KEY}` });
          if (r.status !== 200) throw new Error(`GET /sessions answered ${r.status}`);
          for (const it of r.body.items) if (sentAt.has(it.interviewId)) stored.set(it.interviewId, Date.parse(it.updatedAt));
          cursor = r.body.nextCursor;
        } while (cursor);
      }
      const lat = [...stored].map(([id, at]) => at - sentAt.get(id)!);
      return {
        sessions: sessions.length,
        ratePerSec: RESULTS_RATE,
        stored: stored.size,
        p50: percentile(lat, 50),
        p90: percentile(lat, 90),
        p99: percentile(lat, 99),
        max: percentile(lat, 100),
        ackP50: percentile(acks, 50),
        ackP99: percentile(acks, 99),
        peakRssMb: broker.peakRssMb(),
        method: RESULTS_METHOD,
      };
    } finally {
      await bp.close();
      await ep.close();
    }
  });
}
