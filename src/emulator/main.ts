// Standalone emulator runner (`npm run emulator`): configuration from EMULATOR_* environment variables.
import { buildEmulator } from './app';
import type { EmulatorOptions } from './app';
import { MAX_TIMER_MS, faultSettingsError, type FaultOptions } from './faults';

const env = process.env;
/** A number in its range read from a variable's text; anything else stops the start, naming the variable. */
function inRange(name: string, raw: string, min: number, max: number): number {
  const n = Number(raw);
  if (!Number.isFinite(n) || n < min || n > max) throw new Error(`${name} must be a number from ${min} to ${max}, got "${raw}"`);
  return n;
}
/** A numeric variable, or undefined when unset. */
const num = (name: string, min = 0, max = Number.MAX_SAFE_INTEGER): number | undefined => {
  const raw = env[name];
  return raw === undefined || raw.trim() === '' ? undefined : inRange(name, raw, min, max);
};
/** The variable of each fault setting: faultSettingsError judges the values, the message names the variable. */
const FAULT_VARIABLES: Record<keyof FaultOptions, string> = {
  latencyMs: 'EMULATOR_LATENCY_MS',
  startLatencyMs: 'EMULATOR_START_LATENCY_MS',
  errorRate: 'EMULATOR_ERROR_RATE',
  errorStatuses: 'EMULATOR_ERROR_STATUSES',
  errorAfterHandler: 'EMULATOR_ERROR_AFTER_HANDLER',
  timeoutRate: 'EMULATOR_TIMEOUT_RATE',
  dropWebhookRate: 'EMULATOR_DROP_WEBHOOK_RATE',
  duplicateWebhookRate: 'EMULATOR_DUPLICATE_WEBHOOK_RATE',
  faultPaths: 'EMULATOR_FAULT_PATHS',
  seed: 'EMULATOR_SEED',
};

function faults(): FaultOptions {
  // Numbers as written (text is NaN, which the check refuses); ranges are faultSettingsError's to judge.
  const given = (key: keyof FaultOptions) => {
    const raw = env[FAULT_VARIABLES[key]];
    return raw === undefined || raw.trim() === '' ? undefined : Number(raw);
  };
  const opts: FaultOptions = {
    latencyMs: given('latencyMs'),
    startLatencyMs: given('startLatencyMs'),
    errorRate: given('errorRate'),
    errorStatuses: list(FAULT_VARIABLES.errorStatuses)?.map(Number),
    errorAfterHandler: env.EMULATOR_ERROR_AFTER_HANDLER === '1' || env.EMULATOR_ERROR_AFTER_HANDLER === 'true',
    timeoutRate: given('timeoutRate'),
    dropWebhookRate: given('dropWebhookRate'),
    duplicateWebhookRate: given('duplicateWebhookRate'),
    seed: given('seed'),
    faultPaths: list(FAULT_VARIABLES.faultPaths),
  };
  const invalid = faultSettingsError(opts as Record<string, unknown>);
  if (invalid) {
    const key = (Object.keys(FAULT_VARIABLES) as (keyof FaultOptions)[]).find((k) => invalid.startsWith(k)) ?? 'errorRate';
    throw new Error(`${FAULT_VARIABLES[key]}: ${invalid}, got "${env[FAULT_VARIABLES[key]] ?? ''}"`);
  }
  return opts;
}
/** A comma-separated variable's entries, trimmed, empty ones left out (undefined when the variable is unset). */
const list = (name: string): string[] | undefined => env[name]?.split(',').map((v) => v.trim()).filter(Boolean);

function options(): EmulatorOptions {
  const webhookUrl = env.EMULATOR_WEBHOOK_URL;
  return {
    apiKey: env.EMULATOR_API_KEY ?? 'emulator-api-key',
    clientId: env.EMULATOR_CLIENT_ID ?? 'emulator',
    executiveEmail: env.EMULATOR_EXECUTIVE_EMAIL ?? 'executive@example.com',
    executivePassword: env.EMULATOR_EXECUTIVE_PASSWORD ?? 'executive',
    processingDelayMs: num('EMULATOR_PROCESSING_DELAY_MS', 0, MAX_TIMER_MS),
    jwtSecret: env.EMULATOR_JWT_SECRET || undefined,
    webhook: webhookUrl
      ? {
          url: webhookUrl,
          oauth: env.EMULATOR_WEBHOOK_TOKEN_URL
            ? { tokenUrl: env.EMULATOR_WEBHOOK_TOKEN_URL, clientId: env.EMULATOR_WEBHOOK_CLIENT_ID ?? '', clientSecret: env.EMULATOR_WEBHOOK_CLIENT_SECRET ?? '' }
            : undefined,
          headers: env.EMULATOR_WEBHOOK_HEADERS ? (JSON.parse(env.EMULATOR_WEBHOOK_HEADERS) as Record<string, string>) : undefined,
          // Comma-separated delays before each retry ("" for none: the single delivery older Incode docs describe).
          retryDelaysMs: list('EMULATOR_WEBHOOK_RETRY_DELAYS_MS')?.map((d) => inRange('EMULATOR_WEBHOOK_RETRY_DELAYS_MS', d, 0, MAX_TIMER_MS)),
          timeoutMs: num('EMULATOR_WEBHOOK_TIMEOUT_MS', 0, MAX_TIMER_MS),
        }
      : undefined,
    faults: faults(),
    logger: env.EMULATOR_LOG === '1' || env.EMULATOR_LOG === 'true',
  };
}

async function main(): Promise<void> {
  const app = buildEmulator(options());
  const port = num('EMULATOR_PORT', 0, 65535) ?? 8701;
  const host = env.EMULATOR_HOST ?? '127.0.0.1';
  const address = await app.listen({ port, host });
  process.stdout.write(`Incode emulator listening on ${address} (token-only surface: ${address}/0)\n`);
  let closing = false;
  const stop = () => {
    if (closing) return;
    closing = true;
    app.close().then(
      () => process.exit(0),
      () => process.exit(1),
    );
  };
  process.once('SIGTERM', stop);
  process.once('SIGINT', stop);
}

main().catch((e: unknown) => {
  process.stderr.write(`emulator failed to start: ${(e as Error).message}\n`);
  process.exit(1);
});
