// What the built-in emulator needs from the configuration in sandbox mode (the server mounts it, the CLI listens on it).
import type { Config } from './config';
import type { EmulatorOptions } from './emulator/app';
import { MAX_MEGAPIXELS } from './emulator/image-analysis';

export function sandboxEmulatorOptions(config: Config): EmulatorOptions {
  return {
    apiKey: config.incode.apiKey,
    clientId: config.incode.clientId ?? 'sandbox',
    executiveEmail: config.incode.executiveEmail,
    executivePassword: config.incode.executivePassword,
    processingDelayMs: config.emulator.processingDelayMs,
    // In the service's own process: uploads may keep its event loop busy half a core's time at most (a 12 MP photo
    // costs 1-2 s to decode), with room for many onboardings' small captures at once (about 17 of the samples'). Images
    // over 4 MP also share a burst of one largest image (16 MP): three 12 MP photos let in at once held the loop long
    // enough for load shedding to refuse every other request.
    decodeBudget: { megapixelsPerSecond: 4, burstMegapixels: 48, large: { overMegapixels: 4, burstMegapixels: MAX_MEGAPIXELS } },
  };
}
