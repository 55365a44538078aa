// The sandbox demo: its page's Content-Security-Policy, and its capture-check route (the verdict and message the page shows for what the SDK's camera got back).
import request from 'supertest';
import { SELFIE_ERRORS, SELFIE_REASONS } from '../../src/incode/capture-checks';
import { brokerEnv, startBroker, startEmulator, startSandbox } from '../helpers/harness';

let sandbox: Awaited<ReturnType<typeof startSandbox>>;
beforeAll(async () => {
  sandbox = await startSandbox();
});
afterAll(async () => {
  await sandbox?.close();
});

describe('the demo page', () => {
  it("lets the SDK fetch its translations, models and the API, but run script only from the hosts of its code", async () => {
    const res = await request(sandbox.url).get('/').expect(200);
    const csp = Object.fromEntries(String(res.headers['content-security-policy']).split('; ').map((d) => [d.split(' ')[0], d.split(' ').slice(1)]));
    expect(csp['script-src']).toEqual(["'self'", "'unsafe-eval'", "'wasm-unsafe-eval'", 'https://template-console.s3.amazonaws.com', 'https://sdk.incode.com']);
    expect(csp['connect-src']).toEqual(expect.arrayContaining(["'self'", 'https://api.i18nexus.com', 'https://template-console.s3.amazonaws.com', 'https://sdk.incode.com']));
    expect(csp['frame-ancestors']).toEqual(["'none'"]);
  });
});

describe('the API docs page', () => {
  it('has a CSP of its own, written out whole: nothing from other origins, never framed, no form posts, no inline script', async () => {
    const res = await request(sandbox.url).get('/docs').redirects(3).expect(200);
    expect(res.text).toMatch(/swagger-ui/);
    const csp = Object.fromEntries(String(res.headers['content-security-policy']).split(';').map((d) => d.trim()).filter(Boolean).map((d) => [d.split(' ')[0], d.split(' ').slice(1)]));
    expect(csp).toEqual({
      'default-src': ["'self'"],
      'base-uri': ["'self'"],
      'font-src': ["'self'", 'data:'],
      'frame-ancestors': ["'none'"],
      'img-src': ["'self'", 'data:'],
      'object-src': ["'none'"],
      'script-src': ["'self'"],
      'script-src-attr': ["'none'"],
      'style-src': ["'self'"],
      'form-action': ["'none'"],
    });
  });
});

describe('POST /demo/capture-check', () => {
  const check = (body: unknown) => request(sandbox.url).post('/demo/capture-check').send(body as object);

  it("words a refused selfie from Incode's error envelope (its status is Incode's error code, not HTTP)", async () => {
    const res = await check({ kind: 'selfie', response: { status: 3006, message: 'blurry' } }).expect(200);
    // With Incode's code, as POST /onboardings' 422 carries it.
    expect(res.body).toEqual({ ok: false, ...SELFIE_ERRORS[3006], incodeCode: 3006 });
  });

  it('judges a selfie answer by its flags, and an accepted one as ok', async () => {
    expect((await check({ kind: 'selfie', response: { confidence: 0, isBright: true } }).expect(200)).body).toEqual({ ok: true });
    const spoof = (await check({ kind: 'selfie', response: { confidence: 0.9, status: 200 } }).expect(200)).body;
    expect(spoof).toMatchObject({ ok: false, reason: SELFIE_REASONS.SPOOF });
  });

  it('refuses a body with fields it does not know', async () => {
    expect((await check({ kind: 'selfie', httpStatus: 3006, response: {} }).expect(400)).body.code).toBe('VALIDATION_FAILED');
  });
});

describe('outside sandbox mode', () => {
  it('serves neither the demo page nor the emulator: only the operator page and its assets', async () => {
    const emulator = await startEmulator();
    const broker = await startBroker(brokerEnv(emulator.url, {}), { runWorker: false });
    try {
      for (const path of ['/', '/demo/demo.js', '/demo/results']) expect([path, (await request(broker.url).get(path)).status]).toEqual([path, 404]);
      expect((await request(broker.url).post('/sandbox/incode/omni/start').send({})).status).toBe(404);
      expect((await request(broker.url).post('/demo/capture-check').send({ kind: 'selfie', response: {} })).status).toBe(404);
      expect((await request(broker.url).get('/operator')).status).toBe(200);
    } finally {
      await broker.close();
      await emulator.close();
    }
  });
});
