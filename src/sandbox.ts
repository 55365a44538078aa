// What the built-in emulator needs from the configuration in sandbox mode (the server mounts it, the CLI listens on it).
import type { Config } from './config';
import type { EmulatorOptions } from './emulator/app';

export function sandboxEmulatorOptions(config: Config): EmulatorOptions {
  return {
    apiKey: config.incode.apiKey,
    clientId: config.incode.clientId ?? 'sandbox',
    executiveEmail: config.incode.executiveEmail,
    executivePassword: config.incode.executivePassword,
    processingDelayMs: config.emulator.processingDelayMs,
    // In the service's own process: a client's uploads may keep its event loop busy half a core's time at most (a 12 MP
    // photo costs 1-2 s to decode), with room for a few onboardings' captures at once.
    decodeBudget: { megapixelsPerSecond: 4, burstMegapixels: 48 },
  };
}
