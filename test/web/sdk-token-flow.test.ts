// Incode's real Web SDK (UMD 1.51.0) in Chromium, on a page of another origin, drives the broker's token-only /0/ surface.
import Fastify, { type FastifyInstance } from 'fastify';
import { idBack, idFront, selfie } from '../../src/emulator/sample-images';
import { freePort, startSandbox, waitForResults } from '../helpers/harness';
import { describeBrowser, launch, sdkTaggedBase64, type Browser } from './browser';

describeBrowser('Web SDK token-only flow (real @incodetech/welcome in Chromium)', () => {
  let pageServer: FastifyInstance;
  let pageOrigin: string;
  let broker: Awaited<ReturnType<typeof startSandbox>>;
  let browser: Browser;

  beforeAll(async () => {
    // A second loopback origin, so every SDK call is cross-origin and Chromium sends real CORS preflights.
    const pagePort = await freePort();
    pageOrigin = `http://127.0.0.1:${pagePort}`;
    broker = await startSandbox({ CORS_ORIGINS: pageOrigin });
    pageServer = Fastify();
    pageServer.get('/', async (_req, reply) =>
      reply.type('text/html').send(
        `<!doctype html><html><head><meta charset="utf-8"><title>sdk</title></head><body><div id="app"></div>
<script src="${broker.url}/demo/vendor/react.production.min.js"></script>
<script src="${broker.url}/demo/vendor/react-dom.production.min.js"></script>
<script src="${broker.url}/demo/vendor/onBoarding.umd.js"></script></body></html>`,
      ),
    );
    await pageServer.listen({ port: pagePort, host: '127.0.0.1' });
    browser = await launch();
  }, 60_000);

  afterAll(async () => {
    await browser?.close();
    await pageServer?.close();
    await broker?.close();
  });

  test('POST /session -> create({apiURL}) -> status, ID both modes, process ID, selfie both modes, face, geolocation, score, OCR; then the results API', async () => {
    const { page } = browser;
    await page.goto(`${pageOrigin}/`);
    await page.waitForFunction(() => typeof (window as any).OnBoarding?.create === 'function', null, { timeout: 30_000 });

    const images = {
      front: idFront().toString('base64'),
      back: idBack().toString('base64'),
      selfie: selfie().toString('base64'),
      selfieTagged: sdkTaggedBase64(selfie().toString('base64')),
    };
    const out = await page.evaluate(
      async ({ brokerUrl, images, cameraMode }) => {
        const w = window as any;
        const blob = (b64: string) => new Blob([Uint8Array.from(atob(b64), (c) => c.charCodeAt(0))], { type: 'image/jpeg' });
        const res = await fetch(`${brokerUrl}/session`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ externalCustomerId: 'sdk-browser-test' }) });
        const session = await res.json();
        const token = session.token as string;
        const incode = w.OnBoarding.create({ apiURL: session.apiUrl });
        const r: Record<string, any> = { session: { interviewId: session.interviewId, apiUrl: session.apiUrl } };
        // Names the failing SDK call and keeps the server's answer, so a failure says which shape or header is wrong.
        let step = 'start';
        const at = async (name: string, p: () => Promise<any>): Promise<any> => {
          step = name;
          return p();
        };
        try {
        r.statusStart = await at('statusStart', () => incode.getOnboardingStatus(session));
        r.startInfo = await at('startInfo', () => incode.getStartInfo({ token }));
        r.frontBase64 = await at('frontBase64', () => incode.capture({ type: 'front', token, image: images.front, sendBase64: true }));
        r.frontBytes = await at('frontBytes', () => incode.capture({ type: 'front', token, image: blob(images.front), sendBase64: false }));
        r.backBytes = await at('backBytes', () => incode.capture({ type: 'back', token, image: blob(images.back), sendBase64: false }));
        r.backBase64 = await at('backBase64', () => incode.capture({ type: 'back', token, image: images.back, sendBase64: true }));
        r.images = await at('images', () => incode.getImages({ token, body: { images: ['croppedIDFace'] } }));
        r.processId = (await at('processId', () => incode.processId({ token }))).data;
        r.selfiePlain = await at('selfiePlain', () => incode.capture({ type: 'selfie', token, image: images.selfie }));
        if (cameraMode) r.selfieCamera = await at('selfieCamera', () => incode.capture({ type: 'selfie', token, image: images.selfieTagged, encrypted: true }));
        r.processFace = await at('processFace', () => incode.processFace({ token }));
        r.geolocation = await at('geolocation', () => incode.addGeolocation({ token: session, latitude: 40.4168, longitude: -3.7038 }));
        await incode.addEvent({ token, eventName: 'browserTest', eventData: {}, eventType: 'text' });
        // The SDK takes them as `fields` and posts them as {customFields}.
        r.customFields = await at('customFields', () => incode.addCustomFields({ token, fields: { plan: 'test' } }));
        r.customFieldsRead = (await at('customFieldsRead', () => incode.getCustomFields({ token }))).data;
        const deadline = Date.now() + 20_000;
        do {
          r.statusEnd = await at('statusEnd', () => incode.getOnboardingStatus(session));
          if (r.statusEnd.onboardingStatus === 'ONBOARDING_FINISHED') break;
          await new Promise((ok) => setTimeout(ok, 100));
        } while (Date.now() < deadline);
        r.finish = await at('finish', () => incode.getFinishStatus(null, { token }));
        r.score = await at('score', () => incode.getScore({ token }));
        r.ocr = await at('ocr', () => incode.ocrData({ token }));
        } catch (e: any) {
          r.failed = { step, message: e?.message ?? String(e), status: e?.response?.status, data: e?.response?.data ?? e };
        }
        return r;
      },
      { brokerUrl: broker.url, images, cameraMode: true },
    );

    expect(out.failed).toBeUndefined();
    expect(out.session.apiUrl).toBe(`${broker.url}/sandbox/incode/0/`);
    expect(out.statusStart).toEqual({ onboardingStatus: 'UNKNOWN' });
    expect(out.startInfo).toEqual(expect.objectContaining({ country: expect.any(String), phonePrefix: expect.any(String) }));
    // The camera UI accepts an ID capture only with these (web-sdk.md §5).
    for (const k of ['frontBase64', 'frontBytes', 'backBytes', 'backBase64']) {
      expect(out[k]).toEqual(expect.objectContaining({ classification: true }));
      expect(out[k].glare).toBeGreaterThanOrEqual(10);
      expect(out[k].sharpness).toBeGreaterThanOrEqual(10);
      expect(out[k].horizontalResolution).toBeGreaterThanOrEqual(155);
    }
    expect(typeof out.images.croppedIDFace).toBe('string');
    expect(out.processId).toEqual(expect.objectContaining({ success: true }));
    // ... and a selfie only with these.
    for (const k of ['selfiePlain', 'selfieCamera']) expect(out[k]).toEqual(expect.objectContaining({ confidence: 0, isBright: true, hasLenses: false, hasFaceMask: false }));
    expect(out.processFace).toEqual(expect.objectContaining({ confidence: expect.any(Number), existingUser: false }));
    expect(out.processFace.confidence).toBeGreaterThan(0);
    expect(out.geolocation).toEqual({ success: true });
    expect(out.customFieldsRead).toEqual({ customFields: { plan: 'test' } });
    expect(out.statusEnd).toEqual({ onboardingStatus: 'ONBOARDING_FINISHED' });
    expect(out.finish).toEqual(expect.objectContaining({ action: 'approved' }));
    expect(out.score.overall.status).toBe('OK');
    expect(out.ocr.name.fullName).toEqual(expect.any(String));

    // Every cross-origin call with the SDK's headers was preceded by a preflight that the server answered.
    const preflights = broker.logs.lines.filter((l) => /"method":"OPTIONS"/.test(l) && /\/sandbox\/incode\/0\/omni\//.test(l));
    expect(preflights.length).toBeGreaterThan(0);
    expect(broker.logs.lines.some((l) => /"method":"OPTIONS"/.test(l) && /"url":"\/session"/.test(l))).toBe(true);

    // The customer's backend then reads the finished session from the results API (webhook or polling).
    const detail = await waitForResults(broker.url, out.session.interviewId);
    expect(detail.decision).toBe('approve');
    expect(detail.onboardingStatus).toBe('ONBOARDING_FINISHED');
    expect(detail.scores.overall.status).toBe('OK');
    expect(detail.ocr.name.fullName).toBe(out.ocr.name.fullName);
  }, 60_000);
});
