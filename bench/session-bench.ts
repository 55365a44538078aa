// POST /session: broker (default and lean GC) vs emulator direct vs floor proxy (at once, 200 ms upstream), and protections ON vs OFF.
import { randomUUID } from 'node:crypto';
import { measure, type LoadResult, type LoadSpec } from './load';
import type { Child } from './processes';
import { API_KEY, APP_KEY, LEAN_GC_NODE_ARGS, startBroker, startEmulator, startFloor, withChildren, type BenchContext } from './stack';

export const SESSION_BODY = JSON.stringify({ countryCode: 'ALL', externalCustomerId: 'bench-customer-0001', language: 'en-US' });

export interface Scenario {
  id: 'at-once' | '200ms';
  title: string;
  startLatencyMs: number;
  connections: number;
}

export const SCENARIOS: Scenario[] = [
  { id: 'at-once', title: 'emulator answers /omni/start at once', startLatencyMs: 0, connections: 100 },
  { id: '200ms', title: 'emulator answers /omni/start after 200 ms', startLatencyMs: 200, connections: 500 },
];

type TargetName = 'broker' | 'broker-lean' | 'emulator' | 'floor';

export const LEAN_TARGET = `broker, lean GC (${LEAN_GC_NODE_ARGS.join(' ')})`;

export interface TargetRun {
  scenario: string;
  target: string;
  /** 1 for the first measurement of a target; paired comparisons repeat in interleaved rounds. */
  round: number;
  connections: number;
  load: LoadResult;
  /** Peak RSS of the process under test (the emulator itself for the emulator-direct target). */
  peakRssMb: number | null;
  /** Its RSS when it had just started, before any load. */
  startRssMb: number | null;
  /** Peak RSS of the emulator behind a broker or floor proxy. */
  upstreamPeakRssMb: number | null;
  /** CPU time (user + system) the process under test spent per answered request in the measured window, in µs. */
  cpuUsPerReq: number | null;
  /** The same for the emulator behind it. */
  upstreamCpuUsPerReq: number | null;
}

/** CPU µs per request of a child over the measured window (start is read when the window opens). */
export function cpuPerRequest(c: Child | null, start: number | null, requests: number): number | null {
  const end = c?.cpuSeconds() ?? null;
  return start === null || end === null || requests <= 0 ? null : ((end - start) * 1e6) / requests;
}

function spec(ctx: BenchContext, url: string, path: string, connections: number, extra: Partial<LoadSpec> = {}): LoadSpec {
  return { url, method: 'POST', path, body: SESSION_BODY, connections, durationS: ctx.durationS, warmupS: ctx.warmupS, timeoutS: 10, ...extra };
}

async function measureOn(target: Child, upstream: Child | null, s: LoadSpec, scenario: string, name: string, round: number, log: (m: string) => void): Promise<TargetRun> {
  log(`  ${scenario} / ${name}${round > 1 ? ` (round ${round})` : ''}: ${s.connections} connections, ${s.warmupS} s warm-up + ${s.durationS} s`);
  let cpu0: number | null = null;
  let upCpu0: number | null = null;
  const load = await measure(s, () => {
    cpu0 = target.cpuSeconds();
    upCpu0 = upstream?.cpuSeconds() ?? null;
  });
  return {
    scenario,
    target: name,
    round,
    connections: s.connections,
    load,
    peakRssMb: target.peakRssMb(),
    startRssMb: target.startRssMb,
    upstreamPeakRssMb: upstream?.peakRssMb() ?? null,
    cpuUsPerReq: cpuPerRequest(target, cpu0, load.total),
    upstreamCpuUsPerReq: cpuPerRequest(upstream, upCpu0, load.total),
  };
}

/** One fresh emulator (and target) per measurement, so peak RSS and session maps start from zero. */
async function runTarget(ctx: BenchContext, sc: Scenario, target: TargetName, round: number, log: (m: string) => void): Promise<TargetRun> {
  return withChildren(async (track) => {
    const emu = track(await startEmulator(ctx, `${sc.id}-${target}`, { faults: { startLatencyMs: sc.startLatencyMs } }));
    if (target === 'emulator') {
      return measureOn(emu, null, spec(ctx, emu.url, '/omni/start', sc.connections, { headers: { 'x-api-key': API_KEY, 'api-version': '1.0' } }), sc.id, 'emulator direct', round, log);
    }
    if (target === 'floor') {
      const floor = track(await startFloor(ctx, sc.id, emu.url));
      return measureOn(floor, emu, spec(ctx, floor.url, '/session', sc.connections), sc.id, 'floor proxy', round, log);
    }
    const lean = target === 'broker-lean';
    const broker = track(await startBroker(ctx, lean ? `${sc.id}-lean` : sc.id, emu.url, {}, lean ? LEAN_GC_NODE_ARGS : []));
    return measureOn(broker, emu, spec(ctx, broker.url, '/session', sc.connections), sc.id, lean ? LEAN_TARGET : 'broker', round, log);
  });
}

/** Odd rounds in the given order, even rounds reversed: a drift of the machine's speed favours neither side. */
function alternate<T>(round: number, items: readonly T[]): readonly T[] {
  return round % 2 === 1 ? items : [...items].reverse();
}

export async function runSessionScenarios(ctx: BenchContext, log: (m: string) => void): Promise<TargetRun[]> {
  const out: TargetRun[] = [];
  for (const sc of SCENARIOS) {
    log(`POST /session, ${sc.title}`);
    // The broker and the floor back to back: the pair the checks compare.
    for (const t of ['broker', 'floor', 'broker-lean', 'emulator'] as const) out.push(await runTarget(ctx, sc, t, 1, log));
    // The machine's speed drifts over minutes (shared cores), so the broker/floor ratio at once is measured again in
    // alternating order (floor first, then broker first...), and the checks take the median of the rounds.
    if (sc.id !== 'at-once') continue;
    for (let round = 2; round <= ctx.rounds; round++) for (const t of alternate(round, ['broker', 'floor'] as const)) out.push(await runTarget(ctx, sc, t, round, log));
  }
  return out;
}

export interface HardeningRound {
  off: TargetRun;
  limits: TargetRun;
  on: TargetRun;
}

/**
 * Protections OFF, auth + Redis rate limits, all ON (+ a unique Idempotency-Key per request), same load, in
 * ctx.rounds rounds whose order alternates (OFF first, then ON first...) so that a drift of the machine's speed
 * does not always favour the same side.
 */
export async function runHardening(ctx: BenchContext, redisUrl: string, log: (m: string) => void): Promise<HardeningRound[]> {
  const sc = SCENARIOS[0];
  log('POST /session, protections OFF vs ON (emulator answers at once)');
  const run = (name: string, env: Record<string, string>, headers: () => Record<string, string>, round: number) =>
    withChildren(async (track) => {
      const emu = track(await startEmulator(ctx, `hardening-${name}`, { faults: { startLatencyMs: 0 } }));
      const broker = track(await startBroker(ctx, `hardening-${name}`, emu.url, env));
      // Every run builds each request the same way (setupRequest), so the load generator's cost is the same.
      return measureOn(broker, emu, spec(ctx, broker.url, '/session', sc.connections, { perRequest: () => ({ headers: headers() }) }), 'hardening', name, round, log);
    });
  const protectedEnv = {
    CALLER_AUTH: 'app-keys',
    APP_API_KEYS: APP_KEY,
    // High enough never to trigger, and still counted on every request.
    RATE_LIMIT_PER_IP: '1000000',
    RATE_LIMIT_PER_CUSTOMER: '1000000',
    RATE_LIMIT_GLOBAL: '100000000',
    REDIS_URL: redisUrl,
  };
  const variants = {
    off: (round: number) => run('protections OFF', {}, () => ({}), round),
    limits: (round: number) => run('app key + Redis limits', protectedEnv, () => ({ 'x-app-key': APP_KEY }), round),
    on: (round: number) => run('all ON (+ Idempotency-Key)', protectedEnv, () => ({ 'x-app-key': APP_KEY, 'idempotency-key': randomUUID() }), round),
  };
  const rounds: HardeningRound[] = [];
  for (let round = 1; round <= ctx.rounds; round++) {
    const r = {} as HardeningRound;
    for (const k of alternate(round, ['off', 'limits', 'on'] as const)) r[k] = await variants[k](round);
    rounds.push(r);
  }
  return rounds;
}
