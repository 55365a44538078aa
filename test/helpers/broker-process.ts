// The broker as its own OS process (node --import tsx src/server.ts), with only the env it is given: no .env file.
import { join } from 'node:path';
import { request } from 'undici';
import { freePort } from './free-port';
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

async function healthy(url: string): Promise<boolean> {
  try {
    const r = await request(`${url}/healthz`);
    await r.body.dump();
    return r.statusCode === 200;
  } catch {
    return false;
  }
}

/** Resolves once the broker answers /healthz at url; fails at once, with its output, if it exits first. */
export async function untilHealthy(p: BrokerProcess, url: string, timeoutMs = 20_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    if (p.child.exitCode !== null || p.child.signalCode !== null)
      throw new Error(`broker exited (${p.child.exitCode ?? p.child.signalCode}) before it was healthy:\n${p.output()}`);
    if (await healthy(url)) return;
    if (Date.now() > deadline) throw new Error(`broker not healthy within ${timeoutMs} ms:\n${p.output()}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

/** A broker process on a free loopback port, once healthy (stopped again if it never gets there). */
export async function startBrokerProcess(env: Record<string, string>): Promise<BrokerProcess & { url: string }> {
  const port = await freePort();
  const p = spawnBroker({ ...env, PORT: String(port), HOST: '127.0.0.1' });
  const url = `http://127.0.0.1:${port}`;
  try {
    await untilHealthy(p, url);
  } catch (err) {
    await p.stop();
    throw err;
  }
  return { ...p, url };
}
