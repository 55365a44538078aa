// Node child processes for the tests and the bench: a clean environment (no .env file, no stray config) and a graceful stop.
import { spawn, type ChildProcess, type StdioOptions } from 'node:child_process';
import { join } from 'node:path';

export const ROOT = join(__dirname, '..', '..');

export interface NodeProcess {
  child: ChildProcess;
  /** Exit code once it has exited (null when a signal ended it). */
  exited: Promise<number | null>;
  /** SIGTERM, then SIGKILL after 5 s; resolves when it is gone. */
  stop: () => Promise<void>;
}

/**
 * `node <args>` (in the project root unless told) with only the variables it is given, plus the few a process needs
 * from ours. DOTENV_CONFIG_PATH points dotenv away from a developer's .env, which would change what is measured or tested.
 */
export function spawnNode(args: string[], env: Record<string, string>, stdio: StdioOptions, cwd = ROOT): NodeProcess {
  const base: Record<string, string> = { DOTENV_CONFIG_PATH: join(ROOT, 'test', '.no-such-env-file') };
  for (const k of ['PATH', 'HOME', 'TMPDIR', 'LANG', 'TZ']) if (process.env[k]) base[k] = process.env[k]!;
  const child = spawn(process.execPath, args, { cwd, env: { ...base, ...env }, stdio });
  const exited = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)));
  const stop = async () => {
    if (child.exitCode !== null || child.signalCode !== null) return;
    const t = setTimeout(() => child.kill('SIGKILL'), 5000);
    child.kill('SIGTERM');
    await exited;
    clearTimeout(t);
  };
  return { child, exited, stop };
}
