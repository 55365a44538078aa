// The Incode emulator as a bench child: buildEmulator(BENCH_EMULATOR_OPTIONS as JSON) listening on 127.0.0.1:PORT.
import { buildEmulator, type EmulatorOptions } from '../src/emulator/app';

async function main(): Promise<void> {
  const port = Number(process.env.PORT);
  const opts = JSON.parse(process.env.BENCH_EMULATOR_OPTIONS ?? '{}') as EmulatorOptions;
  const app = buildEmulator({ logger: false, ...opts });
  const stop = () => {
    void app.close().finally(() => process.exit(0));
  };
  process.once('SIGTERM', stop);
  process.once('SIGINT', stop);
  await app.listen({ port, host: '127.0.0.1' });
}

main().catch((err) => {
  process.stderr.write(`emulator failed to start: ${(err as Error).stack}\n`);
  process.exit(1);
});
