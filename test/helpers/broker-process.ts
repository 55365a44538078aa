// The broker as its own OS process (node --import tsx src/server.ts), with only the env it is given: no .env file.
import { spawn, type ChildProcess } from 'node:child_process';
import { join } from 'node:path';

const ROOT = join(__dirname, '..', '..');

export interface BrokerProcess {
  child: ChildProcess;
  /** Everything it printed so far (stdout and stderr). */
  output: () => string;
  /** Its exit code once it has exited. */
  exited: Promise<number | null>;
  /** SIGTERM, then SIGKILL after 5 s; resolves when it is gone. */
  stop: () => Promise<void>;
}

export function spawnBroker(env: Record<string, string>): BrokerProcess {
  const child = spawn(process.execPath, ['--import', 'tsx', join(ROOT, 'src', 'server.ts')], {
    cwd: ROOT,
    // DOTENV_CONFIG_PATH points dotenv away from a developer's .env, which would change what is tested.
    env: { PATH: process.env.PATH ?? '', HOME: process.env.HOME ?? '/tmp', DOTENV_CONFIG_PATH: join(ROOT, 'test', '.no-such-env-file'), ...env },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let out = '';
  child.stdout!.on('data', (d: Buffer) => (out += d.toString()));
  child.stderr!.on('data', (d: Buffer) => (out += d.toString()));
  const exited = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)));
  const stop = async () => {
    if (child.exitCode !== null || child.signalCode !== null) return;
    const t = setTimeout(() => child.kill('SIGKILL'), 5000);
    child.kill('SIGTERM');
    await exited;
    clearTimeout(t);
  };
  return { child, output: () => out, exited, stop };
}
