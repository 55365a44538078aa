// Entry point: load config (.env too), build the app, listen, and shut down gracefully on SIGTERM/SIGINT.
import 'dotenv/config';
import closeWithGrace from 'close-with-grace';
import pino from 'pino';
import { buildApp } from './app';
import { ConfigError, loadConfig } from './config';

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
  const logStream = pino.destination({ dest: 1, sync: !buffered, minLength: config.logBufferBytes, ...(buffered ? { periodicFlush: 250 } : {}) });
  const app = await buildApp(config, { logStream });
  // Readiness turns false, new connections are refused, in-flight requests and jobs finish, then pools close.
  // The delay bounds the whole close: requests still in their captures and then the result jobs each get up to the
  // grace (the shutdown steps run one after the other), plus a short wind-down each, before the pools and the store
  // close. A shorter delay would exit with a job still writing, and its handed-back state lost.
  closeWithGrace({ delay: 2 * config.shutdownGraceMs + 5000 }, async ({ signal, err }) => {
    if (err) app.log.error({ err: { message: err.message } }, 'fatal error, shutting down');
    else app.log.info({ signal }, 'shutting down');
    await app.close();
  });
  await app.listen({ port: config.port, host: config.host });
}

main().catch((err) => {
  process.stderr.write(`failed to start: ${(err as Error).message}\n`);
  process.exit(1);
});
