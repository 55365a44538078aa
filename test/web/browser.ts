// Headless Debian Chromium for the browser tests: offline (only 127.0.0.1 resolves), fake camera, fresh profile.
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { chromium, type BrowserContext, type Page } from 'playwright-core';
import { VENDOR_FILES } from '../../src/routes/web';
import { startSandbox } from '../helpers/harness';
import { describeWith, services } from '../helpers/services';

export const VENDOR_DIR = path.join(__dirname, '..', '..', 'vendor', 'web-sdk');
export const ARTIFACTS_DIR = path.join(__dirname, '..', '..', 'artifacts');

const vendorReady = VENDOR_FILES.every((f) => existsSync(path.join(VENDOR_DIR, f)));

/** describeWith('chromium') that also skips, by name, when scripts/fetch-web-sdk.js has not fetched the SDK. */
export function describeBrowser(name: string, fn: () => void): void {
  if (!vendorReady) describe.skip(`${name} [skipped: Web SDK not in vendor/web-sdk; run node scripts/fetch-web-sdk.js]`, fn);
  else describeWith('chromium', name, fn);
}

export interface Browser {
  context: BrowserContext;
  page: Page;
  /** Uncaught page errors and console errors, for diagnosis (blocked outside hosts make some; they do not fail tests). */
  errors: string[];
  close: () => Promise<void>;
}

/**
 * No request interception anywhere: the SDK's requests and Chromium's CORS preflights reach the servers for real.
 * Every host but 127.0.0.1 fails to resolve, so the SDK's translation/model/OpenCV fetches fail fast and offline.
 */
export async function launch(opts: { fakeVideo?: string } = {}): Promise<Browser> {
  const profile = mkdtempSync(path.join(os.tmpdir(), 'broker-chromium-'));
  const args = [
    '--headless',
    '--no-sandbox',
    '--disable-gpu',
    '--disable-quic',
    '--no-first-run',
    '--disable-background-networking',
    '--disable-component-update',
    '--disable-sync',
    '--disable-dev-shm-usage',
    '--host-resolver-rules=MAP * ~NOTFOUND , EXCLUDE 127.0.0.1',
    '--use-fake-device-for-media-stream',
    '--use-fake-ui-for-media-stream',
    ...(opts.fakeVideo ? [`--use-file-for-fake-video-capture=${opts.fakeVideo}`] : []),
  ];
  const context = await chromium.launchPersistentContext(profile, {
    executablePath: services.chromium || process.env.CHROMIUM_PATH || '/usr/bin/chromium',
    headless: true,
    args,
    viewport: { width: 1280, height: 900 },
    permissions: ['camera', 'geolocation'],
    timeout: 30_000,
  });
  context.setDefaultTimeout(20_000);
  const page = context.pages()[0] ?? (await context.newPage());
  const errors: string[] = [];
  page.on('pageerror', (e) => errors.push(`pageerror: ${e.message}`));
  page.on('console', (m) => {
    if (m.type() === 'error') errors.push(`console: ${m.text()}`);
  });
  return {
    context,
    page,
    errors,
    close: async () => {
      await context.close().catch(() => undefined);
      rmSync(profile, { recursive: true, force: true });
    },
  };
}

/** What the SDK's camera UI sends as an "encrypted" selfie (its encryptImage): the base64 with a 64-hex HMAC spliced in. */
export { sdkTagged as sdkTaggedBase64 } from '../emulator/helpers';


/**
 * A sandbox broker and a fresh Chromium shared by one describe block: started in beforeAll, closed in
 * afterAll. Read `.broker` and `.browser` inside tests (they are set once beforeAll has run).
 */
export function sandboxWithBrowser(): { broker: Awaited<ReturnType<typeof startSandbox>>; browser: Browser } {
  const env = {} as { broker: Awaited<ReturnType<typeof startSandbox>>; browser: Browser };
  beforeAll(async () => {
    env.broker = await startSandbox();
    // Chromium's default fake camera (a green test pattern) passes the emulator's pixel checks for front and back.
    env.browser = await launch();
  }, 60_000);
  afterAll(async () => {
    await env.browser?.close();
    await env.broker?.close();
  });
  return env;
}
