// The instruction counter's reading of callgrind's per-thread files: the main thread apart, every thread summed.
import { readCounts } from '../../bench/instructions';

describe('readCounts', () => {
  it("takes the main thread from the '-01' file and sums every thread's totals", () => {
    const file = (name: string, totals: number | null) => ({ name, text: `# callgrind format\nevents: Ir\nsummary: 0\n${totals === null ? '' : `totals: ${totals}\n`}` });
    expect(readCounts([file('cg.4242-01', 900), file('cg.4242-02', 70), file('cg.4242-11', 30), file('cg.4242', null)])).toEqual({ main: 900, all: 1000 });
    // A pid that ends in 01 is not a thread number.
    expect(readCounts([file('cg.1201', 5), file('cg.1201-01', 7)])).toEqual({ main: 7, all: 12 });
  });
});
