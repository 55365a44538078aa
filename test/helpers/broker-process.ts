// The broker as its own OS process (node --import tsx src/server.ts), with only the env it is given: no .env file.
import { join } from 'node:path';
import { ROOT, spawnNode, type NodeProcess } from './node-process';

export interface BrokerProcess extends NodeProcess {
  /** Everything it printed so far (stdout and stderr). */
  output: () => string;
}

export function spawnBroker(env: Record<string, string>): BrokerProcess {
  const p = spawnNode(['--import', 'tsx', join(ROOT, 'src', 'server.ts')], env, ['ignore', 'pipe', 'pipe']);
  let out = '';
  p.child.stdout!.on('data', (d: Buffer) => (out += d.toString()));
  p.child.stderr!.on('data', (d: Buffer) => (out += d.toString()));
  return { ...p, output: () => out };
}
