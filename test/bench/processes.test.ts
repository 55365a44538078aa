// The bench measures the broker as it ships: the node command of `npm start` and of the Dockerfile's CMD.
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { brokerArgs } from '../../bench/processes';
import { ROOT } from '../helpers/node-process';

/** The node flags of a `node <flags> dist/server.js` command, or null when it is not one. */
function flagsOf(argv: string[]): string[] | null {
  return argv[0] === 'node' && argv.at(-1) === 'dist/server.js' ? argv.slice(1, -1) : null;
}

describe('bench processes', () => {
  it('runs the compiled broker with the same node flags as npm start and the Docker image (none added)', () => {
    const pkg = JSON.parse(readFileSync(join(ROOT, 'package.json'), 'utf8')) as { scripts: Record<string, string> };
    const start = flagsOf(pkg.scripts.start.split(/\s+/));
    const cmd = /^CMD (\[.*\])\s*$/m.exec(readFileSync(join(ROOT, 'Dockerfile'), 'utf8'));
    const docker = flagsOf(JSON.parse(cmd![1]) as string[]);
    const saved = process.env.BENCH_BROKER_NODE_ARGS;
    delete process.env.BENCH_BROKER_NODE_ARGS;
    try {
      const bench = brokerArgs('compiled');
      expect(bench.at(-1)).toBe(join(ROOT, 'dist', 'server.js'));
      expect(start).toEqual(bench.slice(0, -1));
      expect(docker).toEqual(start);
    } finally {
      if (saved !== undefined) process.env.BENCH_BROKER_NODE_ARGS = saved;
    }
  });
});
