// Servers under test as child processes: spawn with a clean env, wait until they listen, read peak RSS, stop.
import { closeSync, existsSync, openSync, readFileSync } from 'node:fs';
import { connect } from 'node:net';
import { join } from 'node:path';
import { ROOT, spawnNode } from '../test/helpers/node-process';

export interface Child {
  name: string;
  pid: number;
  url: string;
  port: number;
  logFile: string;
  /** RSS in MB right after the child started listening (before any load). */
  startRssMb: number | null;
  /** Peak resident set size (VmHWM) in MB; read it before stop(). null once the process is gone. */
  peakRssMb(): number | null;
  /** User + system CPU seconds used so far (from /proc/<pid>/stat). */
  cpuSeconds(): number | null;
  stop(): Promise<void>;
}

export { freePort } from '../test/helpers/free-port';

function procStatusKb(pid: number, field: 'VmHWM' | 'VmRSS'): number | null {
  try {
    const m = new RegExp(`^${field}:\\s+(\\d+)\\s+kB`, 'm').exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
    return m ? Number(m[1]) : null;
  } catch {
    return null;
  }
}

// Clock ticks per second of /proc/<pid>/stat: 100 on every Linux this runs on (getconf CLK_TCK).
const CLK_TCK = 100;

function procCpuSeconds(pid: number): number | null {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    // Fields after the command name (which may hold spaces): state is field 3, utime 14, stime 15.
    const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    return (Number(f[11]) + Number(f[12])) / CLK_TCK;
  } catch {
    return null;
  }
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

function canConnect(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const s = connect({ port, host: '127.0.0.1' });
    s.once('connect', () => {
      s.destroy();
      resolve(true);
    });
    s.once('error', () => resolve(false));
  });
}

export function logTail(file: string, lines = 15): string {
  try {
    return readFileSync(file, 'utf8').split('\n').slice(-lines).join('\n');
  } catch {
    return '(no log)';
  }
}

export interface SpawnSpec {
  name: string;
  /** Arguments after the node executable. */
  args: string[];
  env: Record<string, string>;
  port: number;
  logDir: string;
  readyTimeoutMs?: number;
}

/** Starts `node <args>` directly (no npm/tsx wrapper process), so the pid is the server's own. */
export async function startChild(spec: SpawnSpec): Promise<Child> {
  const logFile = join(spec.logDir, `${spec.name}.log`);
  const fd = openSync(logFile, 'a');
  const { child: proc, stop } = spawnNode(spec.args, spec.env, ['ignore', fd, fd]);
  closeSync(fd);
  let exited: { code: number | null; signal: NodeJS.Signals | null } | null = null;
  proc.once('exit', (code, signal) => (exited = { code, signal }));
  const pid = proc.pid!;
  const deadline = Date.now() + (spec.readyTimeoutMs ?? 30_000);
  for (;;) {
    if (exited) throw new Error(`${spec.name} exited before listening (${JSON.stringify(exited)}):\n${logTail(logFile)}`);
    if (await canConnect(spec.port)) break;
    if (Date.now() > deadline) {
      proc.kill('SIGKILL');
      throw new Error(`${spec.name} did not listen on ${spec.port} within ${spec.readyTimeoutMs ?? 30_000} ms:\n${logTail(logFile)}`);
    }
    await sleep(50);
  }
  return {
    name: spec.name,
    pid,
    port: spec.port,
    url: `http://127.0.0.1:${spec.port}`,
    logFile,
    startRssMb: (() => {
      const kb = procStatusKb(pid, 'VmRSS');
      return kb === null ? null : kb / 1024;
    })(),
    peakRssMb: () => {
      const kb = exited ? null : procStatusKb(pid, 'VmHWM');
      return kb === null ? null : kb / 1024;
    },
    cpuSeconds: () => (exited ? null : procCpuSeconds(pid)),
    stop,
  };
}

/** Node flags given in an environment variable (BENCH_BROKER_NODE_ARGS, BENCH_FLOOR_NODE_ARGS), space-separated. */
export function nodeArgs(name: string, env: Record<string, string | undefined> = process.env): string[] {
  return (env[name] ?? '').split(' ').filter(Boolean);
}

/** How the broker is run: compiled (dist/server.js) when the build is there, else through tsx. */
export function brokerArgs(mode: 'compiled' | 'tsx'): string[] {
  // BENCH_BROKER_NODE_ARGS (e.g. "--cpu-prof --cpu-prof-dir=/tmp/prof") profiles the broker under the bench's load.
  const extra = nodeArgs('BENCH_BROKER_NODE_ARGS');
  return mode === 'compiled' ? [...extra, join(ROOT, 'dist', 'server.js')] : [...extra, '--import', 'tsx', join(ROOT, 'src', 'server.ts')];
}

export function hasBuild(): boolean {
  return existsSync(join(ROOT, 'dist', 'server.js'));
}

/** Bench helpers (emulator wrapper, floor proxy) are TypeScript run through tsx's loader in the same process. */
export function tsArgs(file: string): string[] {
  return ['--import', 'tsx', join(ROOT, 'bench', file)];
}
