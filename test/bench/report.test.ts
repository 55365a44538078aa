// The bench's verdicts: paired measurements are matched by round and judged on the median of the rounds.
import { checks, render, type Report } from '../../bench/report';
import { LEAN_TARGET, type TargetRun } from '../../bench/session-bench';
import { median } from '../helpers/stats';

function run(scenario: string, target: string, round: number, okPerSec: number, p99: number, cpu: number | null = null, peakRssMb = 120): TargetRun {
  return {
    scenario,
    target,
    round,
    connections: 100,
    load: { okPerSec, total: okPerSec * 8, ok: okPerSec * 8, non2xx: 0, errors: 0, timeouts: 0, p50: 1, p90: 2, p99, max: p99, durationS: 8, statusCodes: { '200': okPerSec * 8 }, warmupOk: 0 },
    peakRssMb,
    startRssMb: 90,
    upstreamPeakRssMb: 150,
    cpuUsPerReq: cpu,
    upstreamCpuUsPerReq: 100,
  };
}

const find = (rep: Report, name: string) => checks(rep).find((c) => c.name === name)!;

describe('bench report', () => {
  it('median of a list, odd and even', () => {
    expect(median([3, 1, 2])).toBe(2);
    expect(median([4, 1, 3, 2])).toBe(2.5);
    expect(median([7])).toBe(7);
  });

  it('pairs the broker with the floor of the same round and reports the median ratio', () => {
    const rep: Report = {
      sessions: [
        run('at-once', 'broker', 1, 5000, 30),
        run('at-once', LEAN_TARGET, 1, 4000, 40),
        run('at-once', 'floor proxy', 1, 10000, 20),
        // Round 2 ran in a slow minute for both: its ratio is what counts, not its absolute numbers.
        run('at-once', 'floor proxy', 2, 5000, 40),
        run('at-once', 'broker', 2, 4250, 44),
        run('at-once', 'broker', 3, 8200, 25, null, 160),
        run('at-once', 'floor proxy', 3, 10000, 20),
      ],
      webhooks: [],
    };
    const t = find(rep, 'at once: broker/floor throughput');
    // Rounds 50 %, 85 %, 82 %: the median is 82 %, a pass, though round 1 alone would miss.
    expect(t.value).toBe('82.0% (median; rounds 50.0%, 85.0%, 82.0%)');
    expect(t.pass).toBe(true);
    const p = find(rep, 'at once: broker/floor p99');
    expect(p.value).toBe('1.25x (median; rounds 1.50x, 1.10x, 1.25x)');
    expect(p.pass).toBe(true);
    // Peak RSS is the worst round's.
    expect(find(rep, 'at once: broker peak RSS')).toMatchObject({ value: '160 MB', pass: false });
    // The lean broker runs in round 1 only, against round 1's floor.
    expect(find(rep, 'at once, lean GC: broker/floor throughput')).toMatchObject({ value: '40.0%', pass: false });
    expect(render(rep, { brokerMode: 'compiled', logLevel: 'info', durationS: 8, warmupS: 2 })).toContain('broker (round 3)');
  });

  it('judges the hardening on the median loss of its rounds', () => {
    const round = (r: number, off: number, on: number, offCpu: number, onCpu: number) => ({
      off: run('hardening', 'protections OFF', r, off, 30, offCpu),
      limits: run('hardening', 'app key + Redis limits', r, (off + on) / 2, 30, (offCpu + onCpu) / 2),
      on: run('hardening', 'all ON (+ Idempotency-Key)', r, on, 30, onCpu),
    });
    const rep: Report = { sessions: [], webhooks: [], hardening: [round(1, 6000, 3000, 100, 200), round(2, 5000, 4500, 100, 110), round(3, 4000, 3500, 100, 120)] };
    const loss = find(rep, 'protections ON: throughput loss vs OFF');
    expect(loss.value).toBe('12.5% (median; rounds 50.0%, 10.0%, 12.5%)');
    expect(loss.pass).toBe(true);
    const cpu = find(rep, 'protections ON: loss estimated from CPU µs/req');
    expect(cpu.value).toBe('16.7% (median; rounds 50.0%, 9.1%, 16.7%); 100 -> 120 µs');
    expect(cpu.pass).toBe(false);
  });
});
