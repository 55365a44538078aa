// Which optional services this run has; describeWith() skips a block by name when one is missing.

export const services = {
  postgres: process.env.TEST_PG_URL || '',
  redis: process.env.TEST_REDIS_URL_OK || '',
  chromium: process.env.TEST_CHROMIUM_PATH || '',
};

/** describe() when the service is present, else describe.skip() with the reason in the name. */
export function describeWith(service: keyof typeof services, name: string, fn: () => void): void {
  if (services[service]) describe(name, fn);
  else describe.skip(`${name} [skipped: ${service} not available]`, fn);
}
