// Targets, PASS/MISS checks and the printed tables of one bench run.
import { median } from '../test/helpers/stats';
import type { ResultsLatencyRun } from './results-latency';
import { LEAN_TARGET, type HardeningRound, type TargetRun } from './session-bench';
import type { WebhookRun } from './webhook-bench';

export const TARGETS = {
  atOnceThroughputVsFloor: 0.8,
  atOnceP99VsFloor: 1.5,
  physicalLimit200ms: 500 / 0.2,
  throughputVsLimit200ms: 0.9,
  p99Max200msMs: 300,
  peakRssMaxMb: 150,
  webhooksSqlitePerSec: 1000,
  webhookP99MaxMs: 20,
  resultsP50MaxMs: 100,
  hardeningMaxLoss: 0.15,
};

export interface Check {
  name: string;
  value: string;
  target: string;
  pass: boolean;
}

export interface Report {
  sessions: TargetRun[];
  hardening?: HardeningRound[];
  webhooks: WebhookRun[];
  results?: ResultsLatencyRun;
}

const num = (n: number | null | undefined, digits = 0) =>
  n === null || n === undefined || !Number.isFinite(n) ? '-' : n.toLocaleString('en-US', { minimumFractionDigits: digits, maximumFractionDigits: digits });
const pct = (r: number) => `${(r * 100).toFixed(1)}%`;

/** The median of per-round values, with every round's value when there are several. */
function perRound(values: number[], fmt: (v: number) => string): { value: number; text: string } {
  const value = median(values);
  return { value, text: values.length > 1 ? `${fmt(value)} (median; rounds ${values.map(fmt).join(', ')})` : fmt(value) };
}

function table(headers: string[], rows: string[][]): string {
  const widths = headers.map((h, i) => Math.max(h.length, ...rows.map((r) => r[i].length)));
  const line = (cells: string[]) => cells.map((c, i) => (i === 0 ? c.padEnd(widths[i]) : c.padStart(widths[i]))).join('  ');
  return [line(headers), widths.map((w) => '-'.repeat(w)).join('  '), ...rows.map(line)].join('\n');
}

const failures = (r: TargetRun) => {
  const codes = Object.entries(r.load.statusCodes)
    .filter(([c]) => !c.startsWith('2'))
    .map(([c, n]) => `${n}x${c}`)
    .join(' ');
  return `${num(r.load.errors)} / ${num(r.load.non2xx)}${codes ? ` (${codes})` : ''}`;
};

function sessionRows(runs: TargetRun[]): string[][] {
  return runs.map((r) => [r.round > 1 ? `${r.target} (round ${r.round})` : r.target, num(r.load.okPerSec, 0), num(r.load.p50), num(r.load.p90), num(r.load.p99), failures(r), `${num(r.startRssMb, 0)} -> ${num(r.peakRssMb, 0)}`, num(r.cpuUsPerReq), num(r.upstreamPeakRssMb, 0), num(r.upstreamCpuUsPerReq)]);
}

const SESSION_HEADERS = ['target', 'req/s (2xx)', 'p50 ms', 'p90 ms', 'p99 ms', 'errors / non-2xx', 'RSS MB start -> peak', 'CPU µs/req', 'emulator peak RSS MB', 'emulator CPU µs/req'];

export function checks(rep: Report): Check[] {
  const out: Check[] = [];
  const find = (sc: string, t: string, round = 1) => rep.sessions.find((r) => r.scenario === sc && r.target === t && r.round === round);
  const rss = (r: TargetRun | undefined, what: string) => {
    if (r?.peakRssMb != null) out.push({ name: `${what}: broker peak RSS`, value: `${num(r.peakRssMb, 0)} MB`, target: `< ${TARGETS.peakRssMaxMb} MB`, pass: r.peakRssMb < TARGETS.peakRssMaxMb });
  };
  // The broker as started by default, then with V8 flags that trade CPU for memory: both sides of the trade. The
  // default broker and the floor are paired in every round; the lean broker is measured in the first only.
  for (const [target, tag] of [['broker', ''], [LEAN_TARGET, ', lean GC']]) {
    const runs = rep.sessions.filter((r) => r.scenario === 'at-once' && r.target === target);
    const pairs = runs.flatMap((b): [TargetRun, TargetRun][] => {
      const f = find('at-once', 'floor proxy', b.round);
      return f ? [[b, f]] : [];
    });
    if (pairs.length) {
      const t = perRound(pairs.map(([b, f]) => b.load.okPerSec / f.load.okPerSec), pct);
      out.push({ name: `at once${tag}: broker/floor throughput`, value: t.text, target: `>= ${pct(TARGETS.atOnceThroughputVsFloor)}`, pass: t.value >= TARGETS.atOnceThroughputVsFloor });
      const p = perRound(pairs.map(([b, f]) => b.load.p99 / Math.max(1, f.load.p99)), (v) => `${v.toFixed(2)}x`);
      out.push({ name: `at once${tag}: broker/floor p99`, value: p.text, target: `<= ${TARGETS.atOnceP99VsFloor}x`, pass: p.value <= TARGETS.atOnceP99VsFloor });
    }
    const peak = [...runs].sort((a, b) => (b.peakRssMb ?? 0) - (a.peakRssMb ?? 0))[0];
    rss(peak, `at once${tag}`);
    const b2 = find('200ms', target);
    if (b2) {
      const r = b2.load.okPerSec / TARGETS.physicalLimit200ms;
      out.push({ name: `200 ms${tag}: broker throughput / 2,500`, value: `${pct(r)} (${num(b2.load.okPerSec)}/s)`, target: `>= ${pct(TARGETS.throughputVsLimit200ms)}`, pass: r >= TARGETS.throughputVsLimit200ms });
      out.push({ name: `200 ms${tag}: broker p99`, value: `${num(b2.load.p99)} ms`, target: `< ${TARGETS.p99Max200msMs} ms`, pass: b2.load.p99 < TARGETS.p99Max200msMs });
    }
    rss(b2, `200 ms${tag}`);
  }
  for (const w of rep.webhooks) {
    if (w.error) continue;
    if (w.store === 'sqlite')
      out.push({ name: 'webhooks (SQLite): acknowledged/s', value: num(w.load.okPerSec), target: `>= ${num(TARGETS.webhooksSqlitePerSec)}`, pass: w.load.okPerSec >= TARGETS.webhooksSqlitePerSec });
    out.push({ name: `webhooks (${w.store === 'sqlite' ? 'SQLite' : 'PostgreSQL'}): ack p99`, value: `${num(w.load.p99)} ms`, target: `< ${TARGETS.webhookP99MaxMs} ms`, pass: w.load.p99 < TARGETS.webhookP99MaxMs });
  }
  if (rep.results && rep.results.p50 !== null)
    out.push({ name: 'ONBOARDING_FINISHED -> results stored p50', value: `${num(rep.results.p50)} ms`, target: `< ${TARGETS.resultsP50MaxMs} ms`, pass: rep.results.p50 < TARGETS.resultsP50MaxMs && rep.results.stored === rep.results.sessions });
  if (rep.hardening?.length) {
    const loss = perRound(rep.hardening.map((h) => 1 - h.on.load.okPerSec / h.off.load.okPerSec), pct);
    out.push({ name: 'protections ON: throughput loss vs OFF', value: loss.text, target: `< ${pct(TARGETS.hardeningMaxLoss)}`, pass: loss.value < TARGETS.hardeningMaxLoss });
    // On a saturated machine throughput follows 1 / CPU per request; this estimate is far less noisy.
    const cpu = rep.hardening.filter((h) => h.off.cpuUsPerReq && h.on.cpuUsPerReq);
    if (cpu.length) {
      const est = perRound(cpu.map((h) => 1 - h.off.cpuUsPerReq! / h.on.cpuUsPerReq!), pct);
      const us = (k: 'off' | 'on') => num(median(cpu.map((h) => h[k].cpuUsPerReq!)));
      out.push({ name: 'protections ON: loss estimated from CPU µs/req', value: `${est.text}; ${us('off')} -> ${us('on')} µs`, target: `< ${pct(TARGETS.hardeningMaxLoss)}`, pass: est.value < TARGETS.hardeningMaxLoss });
    }
  }
  return out;
}

export function render(rep: Report, meta: { brokerMode: string; logLevel: string; durationS: number; warmupS: number }): string {
  const parts: string[] = [];
  const window = `${meta.warmupS} s warm-up (discarded) + ${meta.durationS} s measured`;
  const by = (sc: string) => rep.sessions.filter((r) => r.scenario === sc);
  if (rep.sessions.length) {
    const rounds = Math.max(...by('at-once').map((r) => r.round));
    const again = rounds > 1 ? `; broker and floor again in ${rounds - 1} more round(s), alternating which goes first` : '';
    parts.push(`POST /session, emulator answers at once, ${by('at-once')[0]?.connections ?? '-'} connections, ${window}${again}`);
    parts.push(table(SESSION_HEADERS, sessionRows(by('at-once'))));
    parts.push('');
    parts.push(`POST /session, emulator answers after 200 ms, ${by('200ms')[0]?.connections ?? '-'} connections (physical limit 500 / 0.2 s = 2,500 req/s), ${window}`);
    parts.push(table(SESSION_HEADERS, sessionRows(by('200ms'))));
    parts.push('');
  }
  if (rep.hardening?.length) {
    parts.push(
      `POST /session, protections OFF vs ON (app key, Redis rate counters, unique Idempotency-Key), ${rep.hardening[0].off.connections} connections, ${rep.hardening.length} rounds in alternating order`,
    );
    parts.push(table(SESSION_HEADERS, sessionRows(rep.hardening.flatMap((h) => [h.off, h.limits, h.on]))));
    parts.push('');
  }
  if (rep.webhooks.length) {
    parts.push(`Webhooks: POST /webhooks/incode (Bearer), unique interviewIds, ${rep.webhooks[0].connections} connections, ${window}`);
    parts.push(
      table(
        ['store', 'acked/s', 'p50 ms', 'p90 ms', 'p99 ms', 'errors / non-2xx', 'peak RSS MB', 'CPU µs/req', 'verify jobs done / acked'],
        rep.webhooks.map((w) =>
          w.error
            ? [w.store, '-', '-', '-', '-', `skipped: ${w.error.slice(0, 60)}`, '-', '-', '-']
            : [w.store, num(w.load.okPerSec), num(w.load.p50), num(w.load.p90), num(w.load.p99), `${num(w.load.errors)} / ${num(w.load.non2xx)}`, num(w.peakRssMb, 0), num(w.cpuUsPerReq), `${num(w.verifyJobsDone)} / ${num(w.webhooksAcked)}`],
        ),
      ),
    );
    parts.push('');
  }
  if (rep.results) {
    const r = rep.results;
    parts.push(`ONBOARDING_FINISHED -> results stored (${r.stored}/${r.sessions} sessions stored, webhooks at ${r.ratePerSec}/s)`);
    parts.push(table(['measure', 'p50 ms', 'p90 ms', 'p99 ms', 'max ms'], [
      ['webhook sent -> results stored', num(r.p50), num(r.p90), num(r.p99), num(r.max)],
      ['webhook acknowledged', num(r.ackP50), '-', num(r.ackP99), '-'],
    ]));
    parts.push(`  method: ${r.method}`);
    parts.push('');
  }
  const cs = checks(rep);
  if (cs.length) {
    parts.push('Targets (a MISS never fails the run; numbers from a shared 2-core machine are noisy, compare ratios)');
    parts.push(table(['check', 'value', 'target', 'result'], cs.map((c) => [c.name, c.value, c.target, c.pass ? 'PASS' : 'MISS'])));
  }
  parts.push('');
  parts.push(`Broker run ${meta.brokerMode === 'compiled' ? 'compiled (node dist/server.js)' : 'through tsx (node --import tsx src/server.ts)'}, NODE_ENV=production, LOG_LEVEL=${meta.logLevel} (logs to a file), RESULTS_MODE=webhook, SQLite unless stated.`);
  return parts.join('\n');
}
