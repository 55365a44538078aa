// Fault settings and their deterministic PRNG.
import { Faults, mulberry32 } from '../../src/emulator/faults';

describe('Faults', () => {
  it('repeats the same sequence for the same seed', () => {
    const a = mulberry32(7);
    const b = mulberry32(7);
    const xs = Array.from({ length: 10 }, () => a());
    expect(Array.from({ length: 10 }, () => b())).toEqual(xs);
    for (const x of xs) expect(x >= 0 && x < 1).toBe(true);
  });

  it('refuses settings out of range (none is clamped away), merges and resets them', () => {
    expect(() => new Faults({ errorRate: 2 })).toThrow(/errorRate must be a number from 0 to 1/);
    expect(() => new Faults({ latencyMs: -5 })).toThrow(/latencyMs/);
    expect(() => new Faults({ startLatencyMs: 3_000_000_000 })).toThrow(/startLatencyMs must be a number of milliseconds from 0 to 2147483647/);
    const f = new Faults({ errorRate: 1, latencyMs: 0, seed: 1 });
    expect(f.snapshot()).toMatchObject({ errorRate: 1, latencyMs: 0, seed: 1 });
    expect(() => f.set({ timeoutRate: 50 })).toThrow(/timeoutRate/);
    expect(f.shouldError()).toBe(true);
    f.set({ timeoutRate: 0.5 });
    expect(f.errorRate).toBe(1);
    expect(f.requestFaultsActive).toBe(true);
    f.reset();
    expect(f.requestFaultsActive).toBe(false);
    expect(f.shouldDropWebhook()).toBe(false);
  });

  it('hits roughly the configured rate', () => {
    const f = new Faults({ duplicateWebhookRate: 0.3, seed: 3 });
    let n = 0;
    for (let i = 0; i < 2000; i++) if (f.shouldDuplicateWebhook()) n++;
    expect(n / 2000).toBeGreaterThan(0.25);
    expect(n / 2000).toBeLessThan(0.35);
  });
});
