// `npm run bench:instructions`: instructions per POST /session (broker, floor proxy) counted under callgrind, for A/B checks timings cannot settle here.
import { execFileSync, spawn, spawnSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, readFileSync, readdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { request } from 'undici';
import { ROOT } from '../test/helpers/node-process';
import { brokerArgs, freePort, nodeArgs, tsArgs } from './processes';
import { SESSION_BODY } from './session-bench';
import { API_KEY, brokerEnv, startEmulator, type BenchContext } from './stack';

// Timings on a shared VM drift by 2x within minutes; instruction counts do not (the same binary and inputs give
// the same count to about 2 %, whatever else runs). Only the measured requests are counted: callgrind starts
// with instrumentation off and callgrind_control turns it on after the warm-up.
const env = process.env;
const WARMUP = Number(env.INSTR_WARMUP ?? 3000);
const MEASURED = Number(env.INSTR_REQUESTS ?? 1500);
const CONCURRENCY = 20;

export interface ThreadCounts {
  /** Instructions of the main thread (JavaScript, the event loop): what bounds one process's throughput. */
  main: number;
  /** All threads: the main one plus V8's compiler and GC helpers and libuv's pool. */
  all: number;
}

/** Sums callgrind's `totals:` line of each per-thread file (`<out>-01` is the main thread). */
export function readCounts(files: { name: string; text: string }[]): ThreadCounts {
  let main = 0;
  let all = 0;
  for (const f of files) {
    const m = /^totals: (\d+)/m.exec(f.text);
    if (!m) continue;
    all += Number(m[1]);
    if (/-0*1$/.test(f.name)) main += Number(m[1]);
  }
  return { main, all };
}

async function send(url: string, n: number): Promise<void> {
  let next = 0;
  await Promise.all(
    Array.from({ length: CONCURRENCY }, async () => {
      while (next++ < n) {
        const r = await request(`${url}/session`, { method: 'POST', body: SESSION_BODY, headers: { 'content-type': 'application/json' } });
        await r.body.text();
        if (r.statusCode !== 200) throw new Error(`POST /session answered ${r.statusCode}`);
      }
    }),
  );
}

async function count(ctx: BenchContext, target: 'broker' | 'floor', incodeUrl: string): Promise<ThreadCounts> {
  const port = await freePort();
  const out = mkdtempSync(join(ctx.tmpDir, `${target}-`));
  // Under valgrind the event loop lags and Incode answers slowly: neither may turn requests away here.
  const childEnv: Record<string, string> =
    target === 'broker'
      ? brokerEnv(ctx, port, incodeUrl, { EVENT_LOOP_MAX_LAG_MS: '0', INCODE_TIMEOUT_MS: '60000' })
      : { PORT: String(port), FLOOR_UPSTREAM: incodeUrl, FLOOR_API_KEY: API_KEY, HOST: '127.0.0.1' };
  // valgrind names its control pipe after USER and HOST, and callgrind_control looks for it by its own: both see the same.
  const identity = { HOST: childEnv.HOST, ...(env.USER ? { USER: env.USER } : {}), ...(env.LOGNAME ? { LOGNAME: env.LOGNAME } : {}) };
  // The processes `npm run bench` runs, with its BENCH_BROKER_NODE_ARGS / BENCH_FLOOR_NODE_ARGS (e.g. GC flags to count what they cost).
  const args = target === 'broker' ? brokerArgs('compiled') : [...nodeArgs('BENCH_FLOOR_NODE_ARGS'), ...tsArgs('floor-proxy.ts')];
  const vg = spawn('valgrind', ['--tool=callgrind', '--instr-atstart=no', '--separate-threads=yes', `--callgrind-out-file=${out}/cg.%p`, process.execPath, ...args], {
    cwd: ROOT,
    env: { PATH: env.PATH ?? '', HOME: env.HOME ?? '', ...childEnv, ...identity },
    stdio: ['ignore', 'ignore', 'pipe'],
  });
  let stderr = '';
  vg.stderr.on('data', (d: Buffer) => (stderr = (stderr + d.toString()).slice(-4000)));
  const exited = new Promise((resolve) => vg.once('exit', resolve));
  const control = (on: boolean) => execFileSync('callgrind_control', ['-i', on ? 'on' : 'off', String(vg.pid)], { env: { ...env, ...identity }, stdio: 'ignore' });
  try {
    const url = `http://127.0.0.1:${port}`;
    // Starting under valgrind takes a while; bounded all the same.
    for (let tries = 0; ; tries++) {
      const up = await request(`${url}/healthz`).then(
        async (r) => (await r.body.text(), true),
        () => false,
      );
      if (up) break;
      if (tries > 600 || vg.exitCode !== null) throw new Error(`${target} did not start under valgrind:\n${stderr}`);
      await new Promise((r) => setTimeout(r, 500));
    }
    await send(url, WARMUP);
    control(true);
    await send(url, MEASURED);
    control(false);
  } finally {
    vg.kill('SIGTERM');
    await exited;
  }
  return readCounts(readdirSync(out).map((name) => ({ name, text: readFileSync(join(out, name), 'utf8') })));
}

async function main(): Promise<number> {
  if (spawnSync('valgrind', ['--version']).status !== 0) {
    process.stderr.write('valgrind is not installed (apt-get install -y valgrind)\n');
    return 2;
  }
  if (env.BENCH_SKIP_BUILD !== '1' && spawnSync('npm', ['run', 'build'], { cwd: ROOT, stdio: 'ignore' }).status !== 0) {
    process.stderr.write('npm run build failed\n');
    return 1;
  }
  const logDir = join(ROOT, 'artifacts', 'bench-logs');
  mkdirSync(logDir, { recursive: true });
  const ctx: BenchContext = { logDir, tmpDir: mkdtempSync(join(tmpdir(), 'incode-instr-')), brokerMode: 'compiled', logLevel: env.BENCH_LOG_LEVEL ?? 'info', durationS: 0, warmupS: 0, rounds: 1 };
  const rows: [string, ThreadCounts][] = [];
  try {
    // INSTR_TARGETS=broker counts the broker alone (an A/B of its flags or code).
    const named = (env.INSTR_TARGETS ?? 'broker,floor').split(',');
    const targets = named.filter((t): t is 'broker' | 'floor' => t === 'broker' || t === 'floor');
    if (targets.length !== named.length) throw new Error(`INSTR_TARGETS takes broker and/or floor, not ${named.join(',')}`);
    for (const target of targets) {
      process.stderr.write(`${target}: ${WARMUP} requests of warm-up, then ${MEASURED} counted, under callgrind...\n`);
      const emu = await startEmulator(ctx, `instructions-${target}`, { faults: { startLatencyMs: 0 } });
      try {
        rows.push([target, await count(ctx, target, emu.url)]);
      } finally {
        await emu.stop();
      }
    }
  } finally {
    rmSync(ctx.tmpDir, { recursive: true, force: true });
  }
  const k = (n: number) => `${Math.round(n / MEASURED / 1000).toLocaleString('en-US')} k`;
  process.stdout.write(`\ninstructions per POST /session (${MEASURED} requests after ${WARMUP} of warm-up)\ntarget   main thread  all threads\n`);
  for (const [name, c] of rows) process.stdout.write(`${name.padEnd(8)} ${k(c.main).padStart(11)}  ${k(c.all).padStart(11)}\n`);
  const broker = rows.find(([n]) => n === 'broker')?.[1];
  const floor = rows.find(([n]) => n === 'floor')?.[1];
  if (broker && floor) process.stdout.write(`broker / floor, main thread: ${(broker.main / floor.main).toFixed(2)}x\n`);
  return 0;
}

if (require.main === module)
  main().then(
    (code) => process.exit(code),
    (err: unknown) => {
      process.stderr.write(`${(err as Error).stack ?? String(err)}\n`);
      process.exit(1);
    },
  );
