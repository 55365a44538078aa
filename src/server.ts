// Entry point: load config (.env too), build the app, listen, and shut down gracefully on SIGTERM/SIGINT.
import 'dotenv/config';
import { setTimeout as sleep } from 'node:timers/promises';
import closeWithGrace from 'close-with-grace';
import type { FastifyInstance } from 'fastify';
import pino from 'pino';
import { buildApp } from './app';
import { errSerializer } from './logging';
import { ConfigError, loadConfig } from './config';

/** The most log output held in memory while stdout is not read. */
const MAX_LOG_BACKLOG_BYTES = 64 * 1024 * 1024;

/** What a fatal error's log line keeps: its kind, message and stack, never the properties an error may carry. */
function fatal(err: unknown) {
  return err instanceof Error ? { type: err.name, message: err.message, stack: err.stack } : { type: typeof err, message: String(err) };
}

async function main(): Promise<void> {
  let config;
  try {
    config = loadConfig(process.env);
  } catch (err) {
    if (err instanceof ConfigError) {
      process.stderr.write(`${err.message}\n`);
      process.exit(78); // EX_CONFIG
    }
    throw err;
  }
  // One write per few kilobytes instead of one per line: a synchronous write per request is measurable CPU. pino
  // flushes the buffer at exit, including after a fatal error; only a SIGKILL loses it.
  const buffered = config.logBufferBytes > 0;
  // Buffered, a stdout that stops being read (a stalled log driver) would hold every line in memory: past 64 MiB
  // waiting, lines are dropped rather than the process running out of memory, and counted (log_lines_dropped_total;
  // not written anywhere, since stderr often goes to the same stalled driver).
  const logStream = pino.destination({ dest: 1, sync: !buffered, minLength: config.logBufferBytes, ...(buffered ? { periodicFlush: 250, maxLength: MAX_LOG_BACKLOG_BYTES } : {}) });
  // Until the app exists (its log has the redaction and request-id setup), the same stream without them: start-up
  // writes no request data.
  const bootLog = pino({ level: config.logLevel, serializers: { err: errSerializer } }, logStream);
  // Filled in as start-up goes: the shutdown below may run at any point of it.
  const live: { app?: FastifyInstance; stopping: boolean } = { stopping: false };
  logStream.on('drop', () => live.app?.metrics.logLinesDropped.inc());
  const log = () => live.app?.log ?? bootLog;
  const { shutdownDelayMs, shutdownGraceMs } = config;
  // A rejection without an Error (Promise.reject()) would reach close-with-grace as a normal exit, code 0.
  process.on('unhandledRejection', (reason) => {
    throw reason instanceof Error ? reason : new Error(`unhandled rejection: ${String(reason)}`);
  });
  // Installed before the app is built: a SIGTERM during a long migration or a slow database connect is answered
  // (as PID 1 in a container, Node would otherwise ignore it until the orchestrator's SIGKILL).
  // The delay bounds the whole close: out of rotation first (SIGTERM), then the result jobs get up to the grace while
  // requests still in their captures run on within the same grace (counted from the start of the close), plus a short
  // wind-down each,
  // before the pools and the store close. A shorter delay would exit with a job still writing, and its handed-back
  // state lost.
  // SIGTERM is handled here, not by close-with-grace, which exits at once on any second signal: a SIGTERM sent again
  // (an impatient operator, a supervisor's retry) must not cut the requests and jobs the first one is draining; the
  // overall limit still bounds the stop. A second Ctrl-C (SIGINT) still ends it at once, as a person means it to.
  process.on('SIGTERM', () => {
    // Stopping already (this signal before, a Ctrl-C, a fatal error): the stop under way goes on as it is.
    if (live.stopping) return void log().info({ signal: 'SIGTERM' }, 'already stopping: the signal again changes nothing');
    live.stopping = true;
    void closer.close();
  });
  const closer = closeWithGrace(
    {
      delay: shutdownDelayMs + 2 * shutdownGraceMs + 5000,
      skip: ['unhandledRejection', 'SIGTERM'],
      logger: { error: (m: unknown) => log().error(typeof m === 'string' ? {} : { err: fatal(m) }, typeof m === 'string' ? m : 'shutdown failed') },
      onSecondSignal: (signal: string) => log().error({ signal }, 'second signal, exiting now'),
      onSecondError: (e: unknown) => log().error({ err: fatal(e) }, 'second fatal error while shutting down, exiting now'),
      onTimeout: (ms: number) => log().error({ delayMs: ms }, 'shutdown did not finish in time, exiting now'),
    },
    async (out) => {
      // A SIGTERM arrives as the manual close above.
      const signal = out.manual ? 'SIGTERM' : out.signal;
      live.stopping = true;
      // An uncaught throw of a non-Error (even undefined) is fatal too: close-with-grace exits 1 only for a truthy err.
      const failed = 'err' in out;
      // An orchestrator's SIGTERM: out of the load balancer's rotation while still serving, then close. A Ctrl-C
      // (SIGINT) has no load balancer to wait for; a fatal error no time.
      const leaving = signal === 'SIGTERM' && shutdownDelayMs > 0 && live.app?.server.listening === true;
      if (failed) log().error({ err: fatal(out.err) }, 'fatal error, shutting down');
      else log().info({ signal, ...(leaving ? { outOfRotationMs: shutdownDelayMs } : {}) }, 'shutting down');
      // A start still under way (a migration waiting for another replica's lock, a database slow to connect) gets the
      // grace, then is left: nothing has served yet, and a migration's transaction rolls back with its connection.
      const built = await Promise.race([building.catch(() => null), sleep(shutdownGraceMs).then(() => undefined)]);
      // undefined: the grace ran out first; null: the start failed (main() says why).
      if (built === undefined) log().warn({ graceMs: shutdownGraceMs }, 'stopped before start-up finished');
      if (built) {
        if (leaving) {
          built.leaveRotation();
          await sleep(shutdownDelayMs);
        }
        await built.close();
      }
      if (failed && !out.err) process.exit(1);
    },
  );
  // Declared after the handlers, which can run only once this line has (a signal is handled on a later turn).
  const building = buildApp(config, { logStream });
  let app: FastifyInstance;
  try {
    app = await building;
  } catch (err) {
    // Asked to stop meanwhile: the stop is what was asked for, and it exits 0 (a database that never answered, say,
    // is said once, not as a failed start).
    if (!live.stopping) throw err;
    log().warn({ reason: (err as Error).message }, 'start-up failed while stopping');
    return;
  }
  live.app = app;
  if (live.stopping) return;
  try {
    await app.listen({ port: config.port, host: config.host });
  } catch (err) {
    // The worker started when the app became ready, before the bind: closed, it hands back the jobs it claimed
    // instead of leaving them leased for JOB_LEASE_MS. The message names where it could not listen.
    await app.close().catch(() => undefined);
    const code = (err as { code?: unknown }).code;
    throw new Error(`cannot listen on ${config.host}:${config.port} (HOST, PORT)${typeof code === 'string' ? `: ${code}` : ''}`, { cause: err });
  }
}

main().catch((err) => {
  process.stderr.write(`failed to start: ${(err as Error).message}\n`);
  // A setting found wrong only once the database is open (a key that is not the one its id stood for) is still one.
  process.exit(err instanceof ConfigError ? 78 : 1);
});
