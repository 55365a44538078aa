// `npm run bench`: builds the broker, runs every scenario in one go, prints the tables, writes artifacts/bench-latest.json.
import { spawnSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { checks, render, TARGETS, type Report } from './report';
import { ROOT } from '../test/helpers/node-process';
import { hasBuild } from './processes';
import { runResultsLatency } from './results-latency';
import { runHardening, runSessionScenarios } from './session-bench';
import type { BenchContext } from './stack';
import { runWebhookScenarios } from './webhook-bench';

const env = process.env;
const SECTIONS = ['sessions', 'hardening', 'webhooks', 'results'] as const;
type Section = (typeof SECTIONS)[number];
const only = new Set((env.BENCH_ONLY ?? SECTIONS.join(',')).split(',').map((s) => s.trim()) as Section[]);
const pgUrl = env.BENCH_PG_URL ?? 'postgres://postgres@127.0.0.1:5432/test';
// A database index of its own, so the bench's counters never meet a test's.
const redisUrl = env.BENCH_REDIS_URL ?? 'redis://127.0.0.1:6379/13';

const started = Date.now();
const log = (m: string) => process.stderr.write(`[${((Date.now() - started) / 1000).toFixed(0).padStart(3)} s] ${m}\n`);

function build(): 'compiled' | 'tsx' {
  if (env.BENCH_BROKER === 'tsx') return 'tsx';
  if (env.BENCH_SKIP_BUILD !== '1') {
    log('npm run build');
    const r = spawnSync('npm', ['run', 'build'], { cwd: ROOT, stdio: ['ignore', 'pipe', 'pipe'], encoding: 'utf8' });
    if (r.status !== 0) {
      log(`build failed; running the broker through tsx instead:\n${(r.stdout + r.stderr).split('\n').slice(-12).join('\n')}`);
      return 'tsx';
    }
  }
  return hasBuild() ? 'compiled' : 'tsx';
}

/** A positive integer from the environment, or the default; anything else stops the run with the variable's name. */
function positiveInt(name: string, dflt: number): number {
  const raw = env[name];
  if (raw === undefined || raw === '') return dflt;
  const n = Number(raw);
  if (!Number.isSafeInteger(n) || n < 1) {
    process.stderr.write(`${name} must be a positive integer, not ${JSON.stringify(raw)}\n`);
    process.exit(2);
  }
  return n;
}

async function main(): Promise<number> {
  const artifacts = join(ROOT, 'artifacts');
  const logDir = join(artifacts, 'bench-logs');
  rmSync(logDir, { recursive: true, force: true });
  mkdirSync(logDir, { recursive: true });
  const tmpDir = mkdtempSync(join(tmpdir(), 'incode-bench-'));
  const ctx: BenchContext = {
    logDir,
    tmpDir,
    brokerMode: build(),
    logLevel: env.BENCH_LOG_LEVEL ?? 'info',
    durationS: Number(env.BENCH_DURATION_S ?? 8),
    warmupS: Number(env.BENCH_WARMUP_S ?? 2),
    rounds: positiveInt('BENCH_ROUNDS', 3),
  };
  log(`broker: ${ctx.brokerMode}, LOG_LEVEL=${ctx.logLevel}, ${ctx.warmupS} s warm-up + ${ctx.durationS} s per measurement, ${ctx.rounds} interleaved rounds of the paired comparisons; child logs in ${logDir}`);

  const rep: Report = { sessions: [], webhooks: [] };
  const crashes: string[] = [];
  const section = async (name: Section, fn: () => Promise<void>) => {
    if (!only.has(name)) return;
    try {
      await fn();
    } catch (err) {
      crashes.push(`${name}: ${(err as Error).stack ?? String(err)}`);
      log(`${name} crashed: ${(err as Error).message}`);
    }
  };
  await section('sessions', async () => {
    rep.sessions = await runSessionScenarios(ctx, log);
  });
  await section('hardening', async () => {
    rep.hardening = await runHardening(ctx, redisUrl, log);
  });
  await section('webhooks', async () => {
    rep.webhooks = await runWebhookScenarios(ctx, pgUrl, log);
  });
  await section('results', async () => {
    rep.results = await runResultsLatency(ctx, log);
  });
  rmSync(tmpDir, { recursive: true, force: true });

  const meta = { brokerMode: ctx.brokerMode, logLevel: ctx.logLevel, durationS: ctx.durationS, warmupS: ctx.warmupS, rounds: ctx.rounds };
  process.stdout.write(`\n${render(rep, meta)}\n`);
  const out = join(artifacts, 'bench-latest.json');
  writeFileSync(
    out,
    JSON.stringify({ at: new Date().toISOString(), node: process.version, meta, targets: TARGETS, checks: checks(rep), ...rep, crashes }, null, 2),
  );
  log(`wrote ${out} in ${((Date.now() - started) / 1000).toFixed(0)} s total`);
  if (crashes.length) {
    process.stderr.write(`\nCrashed sections:\n${crashes.join('\n\n')}\n`);
    return 1;
  }
  return 0;
}

main().then(
  (code) => process.exit(code),
  (err: unknown) => {
    process.stderr.write(`bench crashed: ${(err as Error).stack ?? String(err)}\n`);
    process.exit(1);
  },
);
