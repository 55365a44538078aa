// HTTP behaviour of the emulator: auth, envelope, start, captures, status machine, results, CORS, faults, plugin mounting.
import { MAX_MEGAPIXELS } from '../../src/emulator/image-analysis';
import Fastify from 'fastify';
import * as jpeg from 'jpeg-js';
import { request } from 'undici';
import { emulatorPlugin } from '../../src/emulator/app';
import * as samples from '../../src/emulator/sample-images';
import { decodeClaims } from '../../src/emulator/tokens';
import { loadConfig } from '../../src/config';
import { sandboxEmulatorOptions } from '../../src/sandbox';
import type { Emu } from './helpers';
import { API_KEY, b64, expectEnvelope, recordStatusMoves, sdkTagged, startEmulator, waitFor } from './helpers';

async function fullFlow(emu: Emu, startBody: Record<string, unknown> = {}) {
  const s = await emu.start(startBody);
  const t = s.token;
  expect((await emu.call('POST', '/omni/add/front-id/v2', { token: t, body: { base64Image: b64(samples.idFront()) } })).status).toBe(200);
  expect((await emu.call('POST', '/omni/add/back-id/v2', { token: t, body: { base64Image: b64(samples.idBack()) } })).status).toBe(200);
  expect((await emu.call('POST', '/omni/process/id', { token: t })).body).toEqual({ success: true });
  expect((await emu.call('POST', '/omni/add/face/third-party?imageType=selfie', { token: t, body: { base64Image: b64(samples.selfie()) } })).status).toBe(200);
  const face = await emu.call('POST', '/omni/process/face?imageType=selfie', { token: t, body: {} });
  expect(face.status).toBe(200);
  return { ...s, face: face.body };
}

const statusOf = async (emu: Emu, token: string) => (await emu.call('GET', '/omni/get/onboarding/status', { token })).body.onboardingStatus as string;

describe('emulator app', () => {
  let emu: Emu;
  beforeAll(async () => {
    emu = await startEmulator();
  });
  afterAll(async () => {
    await emu.close();
  });

  describe('auth and envelope', () => {
    it('rejects a missing or wrong API key on /omni with 403', async () => {
      expectEnvelope(await emu.call('POST', '/omni/start', { body: {}, key: null }), 403);
      const r = await emu.call('POST', '/omni/start', { body: {}, key: 'nope' });
      expectEnvelope(r, 403);
      expect(r.body.path).toBe('/omni/start');
    });

    it('rejects missing, bad and expired tokens with 401', async () => {
      const s = await emu.start();
      expectEnvelope(await emu.call('GET', '/omni/get/onboarding/status'), 401);
      expectEnvelope(await emu.call('GET', '/omni/get/onboarding/status', { token: s.token + 'x' }), 401);
      expectEnvelope(await emu.call('GET', '/omni/get/onboarding/status', { token: 'not.a.jwt' }), 401);
      const expired = emu.app.emulator.mintSessionToken(s.interviewId, -10);
      expectEnvelope(await emu.call('GET', '/omni/get/onboarding/status', { token: expired }), 401);
    });

    it('serves /0/ with a token and no key, and ignores a key sent there', async () => {
      const s = await emu.start();
      const r = await emu.call('GET', '/0/omni/get/onboarding/status', { token: s.token, key: null });
      expect(r).toMatchObject({ status: 200, body: { onboardingStatus: 'UNKNOWN' } });
      expect((await emu.call('GET', '/0/omni/get/onboarding/status', { token: s.token, key: 'whatever' })).status).toBe(200);
      // Without /0 the key is mandatory even with a valid token.
      expectEnvelope(await emu.call('GET', '/omni/get/onboarding/status', { token: s.token, key: null }), 403);
    });

    it('answers the SDK status query with no key name (?=<interviewId>)', async () => {
      const s = await emu.start();
      const r = await emu.call('GET', `/0/omni/get/onboarding/status?=${s.interviewId}`, { token: s.token, key: null });
      expect(r).toMatchObject({ status: 200, body: { onboardingStatus: 'UNKNOWN' } });
    });

    it('refuses a session token for another session', async () => {
      const a = await emu.start();
      const b = await emu.start();
      expectEnvelope(await emu.call('GET', `/omni/get/score?id=${b.interviewId}`, { token: a.token }), 401);
    });

    it('issues executive tokens that read any session by id, never under /0/', async () => {
      const bad = await emu.call('POST', '/executive/log-in', { body: { email: 'exec@example.com', password: 'wrong' } });
      expectEnvelope(bad, 401);
      expectEnvelope(await emu.call('POST', '/executive/log-in', { body: { email: 'exec@example.com', password: 'secret' }, key: 'bad' }), 403);
      const login = await emu.call('POST', '/executive/log-in', { body: { email: 'exec@example.com', password: 'secret' } });
      expect(login.status).toBe(200);
      const claims = decodeClaims(login.body.token);
      expect(claims.exp - claims.iat).toBe(24 * 3600);
      const s = await emu.start();
      expect((await emu.call('GET', `/omni/get/onboarding/status?id=${s.interviewId}`, { token: login.body.token })).body).toEqual({ onboardingStatus: 'UNKNOWN' });
      expectEnvelope(await emu.call('GET', '/omni/get/onboarding/status', { token: login.body.token }), 400);
      expectEnvelope(await emu.call('GET', '/omni/get/score?id=aaaaaaaaaaaaaaaaaaaaaaaa', { token: login.body.token }), 404);
      expectEnvelope(await emu.call('GET', `/0/omni/get/score?id=${s.interviewId}`, { token: login.body.token, key: null }), 401);
      expectEnvelope(await emu.call('POST', '/0/executive/log-in', { body: { email: 'exec@example.com', password: 'secret' } }), 404);
    });

    it("takes each kind of token only where Incode's endpoint table lists it: captures and finish-status a session token, a deletion an executive one", async () => {
      const exec = (await emu.call('POST', '/executive/log-in', { body: { email: 'exec@example.com', password: 'secret' } })).body.token as string;
      const s = await emu.start();
      const id = `?id=${s.interviewId}`;
      for (const [method, path] of [
        ['POST', '/omni/add/front-id/v2'],
        ['POST', '/omni/add/back-id/v2'],
        ['POST', '/omni/process/id'],
        ['POST', '/omni/add/face/third-party'],
        ['POST', '/omni/process/face'],
        ['GET', '/omni/get/postprocess/isfinished'],
        ['GET', '/omni/finish-status'],
      ] as const) {
        const r = await emu.call(method, `${path}${id}`, { token: exec, ...(method === 'POST' ? { body: {} } : {}) });
        expectEnvelope(r, 401);
        expect(r.body.message).toMatch(/session token/);
      }
      // Reads take either (Incode's "token/exec").
      expect((await emu.call('GET', `/omni/get/onboarding/status${id}`, { token: exec })).status).toBe(200);
      expect((await emu.call('GET', `/omni/get/onboarding/status${id}`, { token: s.token })).status).toBe(200);
      const refused = await emu.call('DELETE', `/omni/interview${id}`, { token: s.token });
      expectEnvelope(refused, 401);
      expect(emu.app.emulator.sessions.get(s.interviewId)).toBeDefined();
      // A deletion names its session as Incode's sample does (interviewId), and only so: a client sending id would pass
      // an emulator that took either, and fail against Incode.
      expectEnvelope(await emu.call('DELETE', `/omni/interview${id}`, { token: exec }), 400);
      // So does an approval under an executive token (Incode's samples: approve?interviewId=).
      const approved = await emu.call('POST', `/omni/process/approve?interviewId=${s.interviewId}`, { token: exec, body: {} });
      expect([approved.status, approved.body.success]).toEqual([200, true]);
      expectEnvelope(await emu.call('POST', `/omni/process/approve${id}`, { token: exec, body: {} }), 400);
      expect((await emu.call('DELETE', `/omni/interview?interviewId=${s.interviewId}`, { token: exec })).body).toEqual({ success: true });
      expect(emu.app.emulator.sessions.get(s.interviewId)).toBeUndefined();
    });

    it('answers 405 for a wrong method and 404 for an unknown path, both as envelopes', async () => {
      const r = await emu.call('GET', '/omni/start');
      expectEnvelope(r, 405);
      expect(r.headers.allow).toContain('POST');
      expectEnvelope(await emu.call('DELETE', '/omni/get/score'), 405);
      expectEnvelope(await emu.call('GET', '/omni/does-not-exist'), 404);
      expectEnvelope(await emu.call('GET', '/'), 404);
      // Paths with a parameter too: any id on a known admin path is a known path.
      const admin = await emu.call('DELETE', '/__emulator/sessions/0123456789abcdef01234567/expire');
      expectEnvelope(admin, 405);
      expect(admin.headers.allow).toBe('POST');
    });

    it('requires api-version: 1.0, as every client of Incode sends it', async () => {
      expect((await emu.call('POST', '/omni/start', { body: {}, headers: { 'api-version': '1.0' } })).status).toBe(200);
      const res = await request(`${emu.base}/omni/start`, { method: 'POST', headers: { 'x-api-key': API_KEY, 'content-type': 'application/json' }, body: '{}' });
      expect(res.statusCode).toBe(400);
      expect(await res.body.json()).toMatchObject({ status: 400, message: expect.stringMatching(/api-version header is required/) });
      expectEnvelope(await emu.call('POST', '/omni/start', { body: {}, headers: { 'api-version': '2.0' } }), 400);
    });

    it('reads a session id under the name its endpoint takes (id; the Web SDK sends none), not any other', async () => {
      const s = await emu.start({});
      const exec = (await emu.call('POST', '/executive/log-in', { body: { email: 'exec@example.com', password: 'secret' } })).body.token as string;
      expect((await emu.call('GET', `/omni/get/score?id=${s.interviewId}`, { token: exec })).status).toBe(200);
      expect((await emu.call('GET', `/omni/get/onboarding/status?=${s.interviewId}`, { token: s.token })).status).toBe(200);
      expectEnvelope(await emu.call('GET', `/omni/get/score?interviewId=${s.interviewId}`, { token: exec }), 400);
    });

    it("takes only the account's own clientId for a hosted-flow link", async () => {
      const s = await emu.start({});
      expectEnvelope(await emu.call('GET', '/omni/onboarding-url?clientId=someone-else', { token: s.token }), 400);
    });

    it('turns malformed JSON and bodies over 10 MB into envelopes', async () => {
      const s = await emu.start();
      const res = await request(`${emu.base}/omni/add/front-id/v2`, {
        method: 'POST',
        headers: { 'x-api-key': API_KEY, 'x-incode-hardware-id': s.token, 'content-type': 'application/json' },
        body: '{"base64Image":',
      });
      expect(res.statusCode).toBe(400);
      expect(await res.body.json()).toMatchObject({ status: 400, path: '/omni/add/front-id/v2' });
      const big = await emu.call('POST', '/omni/add/front-id', { token: s.token, raw: Buffer.alloc(11 * 1024 * 1024, 1) });
      expectEnvelope(big, 413);
    });

    it('sends Processing-Time on every answer', async () => {
      const r = await emu.call('POST', '/omni/start', { body: {} });
      expect(Number(r.headers['processing-time'])).toBeGreaterThanOrEqual(0);
      expect(Number((await emu.call('GET', '/nope')).headers['processing-time'])).toBeGreaterThanOrEqual(0);
    });
  });

  describe('start', () => {
    it('returns the documented fields and types and an Incode-shaped JWT', async () => {
      const r = await emu.call('POST', '/omni/start', { body: { countryCode: 'ALL', externalCustomerId: 'cust-1', configurationId: '6650c1a9e4b0f2a7d3c91e55', language: 'en-US' } });
      expect(r.status).toBe(200);
      expect(r.body).toEqual({
        token: expect.any(String),
        interviewId: expect.stringMatching(/^[0-9a-f]{24}$/),
        interviewCode: expect.stringMatching(/^[A-Z0-9]{6}$/),
        flowType: 'flow',
        idCaptureTimeout: expect.any(Number),
        idCaptureRetries: expect.any(Number),
        selfieCaptureTimeout: expect.any(Number),
        selfieCaptureRetries: expect.any(Number),
        curpValidationRetries: expect.any(Number),
        clientId: 'acme',
        env: 'demo',
        existingSession: false,
      });
      const [header] = r.body.token.split('.');
      expect(JSON.parse(Buffer.from(header, 'base64url').toString())).toEqual({ alg: 'HS256' });
      const c = decodeClaims(r.body.token);
      expect(c).toEqual({ externalUserId: r.body.interviewId, role: 'ACCESS', T: 'I', keyRef: expect.stringMatching(/^[0-9a-f]{24}$/), iat: expect.any(Number), exp: expect.any(Number) });
      expect(c.exp - c.iat).toBe(90 * 24 * 3600);
      expect(r.body.token.length).toBeLessThanOrEqual(256);
    });

    it('answers flowType only when the request sent a configurationId (contract 4.1)', async () => {
      const plain = await emu.call('POST', '/omni/start', { body: { countryCode: 'ALL' } });
      expect(plain.status).toBe(200);
      expect(plain.body).not.toHaveProperty('flowType');
      const refresh = await emu.call('POST', '/omni/start', { body: { interviewId: plain.body.interviewId } });
      expect(refresh.body).toMatchObject({ interviewId: plain.body.interviewId, existingSession: true });
      expect(refresh.body).not.toHaveProperty('flowType');
      const withFlow = await emu.call('POST', '/omni/start', { body: { countryCode: 'ALL', configurationId: '6650c1a9e4b0f2a7d3c91e55' } });
      expect(withFlow.body.flowType).toBe('flow');
    });

    it('accepts ISO2/ISO3/ALL country codes and rejects others', async () => {
      for (const cc of ['ALL', 'BR', 'BRA', 'us', 'MEX', undefined]) expect((await emu.call('POST', '/omni/start', { body: { countryCode: cc } })).status).toBe(200);
      expectEnvelope(await emu.call('POST', '/omni/start', { body: { countryCode: 'XYZ' } }), 400);
      expectEnvelope(await emu.call('POST', '/omni/start', { body: { countryCode: 12 } }), 400);
    });

    it('gives a new token for an existing interviewId and 404 for an unknown one', async () => {
      const s = await emu.start({ uuid: 'u-123' });
      const again = await emu.call('POST', '/omni/start', { body: { interviewId: s.interviewId } });
      expect(again.body).toMatchObject({ interviewId: s.interviewId, existingSession: true });
      expect((await emu.call('GET', '/omni/get/onboarding/status', { token: again.body.token })).status).toBe(200);
      const byUuid = await emu.call('POST', '/omni/start', { body: { uuid: 'u-123' } });
      expect(byUuid.body).toMatchObject({ interviewId: s.interviewId, existingSession: true });
      expectEnvelope(await emu.call('POST', '/omni/start', { body: { interviewId: 'ffffffffffffffffffffffff' } }), 404);
    });

    it('rejects unknown emu: directives', async () => {
      expectEnvelope(await emu.call('POST', '/omni/start', { body: { externalCustomerId: 'x emu:bogus' } }), 400);
    });

    it('has no token-only variant under /0/, with or without an API key', async () => {
      expectEnvelope(await emu.call('POST', '/0/omni/start', { body: {}, key: null }), 404);
      expectEnvelope(await emu.call('POST', '/0/omni/start', { body: {} }), 404);
    });
  });

  describe('ID capture', () => {
    it('accepts the good front and back through JSON v2 and raw legacy uploads', async () => {
      const s = await emu.start();
      const front = await emu.call('POST', '/0/omni/add/front-id/v2?onlyFront=false', { token: s.token, key: null, body: { base64Image: b64(samples.idFront()) } });
      expect(front.status).toBe(200);
      expect(front.body).toMatchObject({
        classification: true,
        sharpness: expect.any(Number),
        glare: expect.any(Number),
        horizontalResolution: 1200,
        readability: true,
        typeOfId: 'DriversLicense',
        sessionStatus: 'Alive',
        issueName: 'USA DriversLicense DRIVERS_LICENSE',
        issueYear: expect.any(Number),
        countryCode: 'USA',
        correctGlare: true,
        correctSharpness: true,
        skipBackIdCapture: false,
      });
      expect(front.body.sharpness).toBeGreaterThanOrEqual(50);
      expect(front.body.glare).toBeGreaterThanOrEqual(50);
      expect(front.body.failReason).toBeUndefined();
      const rawFront = await emu.call('POST', '/0/omni/add/front-id', { token: s.token, key: null, raw: samples.idFront() });
      expect(rawFront.body.classification).toBe(true);
      const rawBack = await emu.call('POST', '/omni/add/back-id?retry=true', { token: s.token, raw: samples.idBack() });
      expect(rawBack.body).toMatchObject({ classification: true, horizontalResolution: 1200 });
      const jsonLegacy = await emu.call('POST', '/omni/add/back-id', { token: s.token, body: { base64Image: b64(samples.idBack()) } });
      expect(jsonLegacy.body.classification).toBe(true);
      // Incode documents the body as base64 without a data: prefix: a client that forgets to strip it is refused.
      const dataUrl = await emu.call('POST', '/omni/add/back-id/v2', { token: s.token, body: { base64Image: `data:image/jpeg;base64,${b64(samples.idBack())}` } });
      expect(dataUrl.status).toBe(400);
      expect(dataUrl.body.message).toMatch(/not valid base64/);
      const octet = await emu.call('POST', '/omni/add/back-id', { token: s.token, raw: samples.idBack(), contentType: 'application/octet-stream' });
      expect(octet.body.classification).toBe(true);
    });

    it('reports Brazilian documents for countryCode BRA', async () => {
      const s = await emu.start({ countryCode: 'BRA' });
      const r = await emu.call('POST', '/omni/add/front-id/v2', { token: s.token, body: { base64Image: b64(samples.idFront()) } });
      expect(r.body).toMatchObject({ countryCode: 'BRA', typeOfId: 'IdentificationCard', issueName: 'BRA IdentificationCard IDENTIFICATION_CARD' });
    });

    it('derives rejections from pixels: blurry, glare, small', async () => {
      const s = await emu.start();
      const blurry = await emu.call('POST', '/omni/add/front-id/v2', { token: s.token, body: { base64Image: b64(samples.blurryIdFront()) } });
      expect(blurry.status).toBe(200);
      expect(blurry.body.sharpness).toBeLessThan(10);
      expect(blurry.body.correctSharpness).toBe(false);
      const glare = await emu.call('POST', '/omni/add/front-id/v2', { token: s.token, body: { base64Image: b64(samples.glareIdFront()) } });
      expect(glare.body.glare).toBeLessThan(10);
      expect(glare.body.sharpness).toBeGreaterThanOrEqual(10);
      expect(glare.body.correctGlare).toBe(false);
      const small = await emu.call('POST', '/omni/add/front-id/v2', { token: s.token, body: { base64Image: b64(samples.smallIdFront()) } });
      expect(small.body.horizontalResolution).toBeLessThan(155);
      expect(small.body.classification).toBe(true);
    });

    it('detects the wrong document side', async () => {
      const s = await emu.start();
      const asFront = await emu.call('POST', '/omni/add/front-id/v2', { token: s.token, body: { base64Image: b64(samples.idBack()) } });
      expect(asFront.body).toMatchObject({ classification: false, failReason: 'WRONG_DOCUMENT_SIDE', horizontalResolution: 0 });
      const asBack = await emu.call('POST', '/omni/add/back-id/v2', { token: s.token, body: { base64Image: b64(samples.idFront()) } });
      expect(asBack.body).toMatchObject({ classification: false, failReason: 'WRONG_DOCUMENT_SIDE' });
    });

    it('rejects payloads that are not images with a 400 envelope (3010) and a missing image with 400', async () => {
      const s = await emu.start();
      expectEnvelope(await emu.call('POST', '/omni/add/front-id/v2', { token: s.token, body: { base64Image: b64(samples.notAnImage()) } }), 400, 3010);
      expectEnvelope(await emu.call('POST', '/omni/add/front-id', { token: s.token, raw: samples.notAnImage() }), 400, 3010);
      expectEnvelope(await emu.call('POST', '/omni/add/front-id/v2', { token: s.token, body: {} }), 400);
      expectEnvelope(await emu.call('POST', '/omni/add/face/third-party?imageType=selfie', { token: s.token, body: { base64Image: '!!!' } }), 400);
    });

    it('accepts frames from Chromium fake camera as front, back and selfie', async () => {
      const { readFileSync } = await import('node:fs');
      const frame = readFileSync(`${__dirname}/fixtures/chromium-fake-camera.jpg`);
      const s = await emu.start();
      for (const p of ['/0/omni/add/front-id', '/0/omni/add/back-id']) {
        const r = await emu.call('POST', p, { token: s.token, key: null, raw: frame });
        expect(r.body.classification).toBe(true);
        expect(r.body.sharpness).toBeGreaterThanOrEqual(10);
        expect(r.body.glare).toBeGreaterThanOrEqual(10);
        expect(r.body.horizontalResolution).toBeGreaterThanOrEqual(155);
      }
      const face = await emu.call('POST', '/0/omni/add/face?imageType=selfie', { token: s.token, key: null, body: { base64Image: sdkTagged(b64(frame)), encrypted: true, faceCoordinates: null } });
      expect(face.body).toMatchObject({ confidence: 0, isBright: true, hasLenses: false, hasFaceMask: false });
    });

    it('requires the front (and the back of a two-sided document) before process/id', async () => {
      const s = await emu.start();
      expectEnvelope(await emu.call('POST', '/omni/process/id', { token: s.token }), 400);
      await emu.call('POST', '/omni/add/front-id/v2', { token: s.token, body: { base64Image: b64(samples.idFront()) } });
      expectEnvelope(await emu.call('POST', '/omni/process/id?queueName=q', { token: s.token, body: {} }), 400);
      const only = await emu.start();
      await emu.call('POST', '/omni/add/front-id/v2?onlyFront=true', { token: only.token, body: { base64Image: b64(samples.idFront()) } });
      expect((await emu.call('POST', '/omni/process/id', { token: only.token, body: {} })).body).toEqual({ success: true });
    });
  });

  describe('selfie and face', () => {
    it('reports liveness, brightness and age; a dark selfie is not bright', async () => {
      const s = await emu.start();
      const good = await emu.call('POST', '/omni/add/face/third-party?imageType=selfie', { token: s.token, body: { base64Image: b64(samples.selfie()) } });
      expect(good.body).toEqual({ confidence: 0, isBright: true, hasLenses: false, hasFaceMask: false, age: expect.any(Number), sessionStatus: 'Alive' });
      const sdk = await emu.call('POST', '/0/omni/add/face?imageType=selfie', { token: s.token, key: null, body: { base64Image: sdkTagged(b64(samples.darkSelfie())), encrypted: true, faceCoordinates: { x: 1 } } });
      expect(sdk.body).toMatchObject({ confidence: 0, isBright: false });
    });

    it('requires selfie and front before process/face', async () => {
      const s = await emu.start();
      expectEnvelope(await emu.call('POST', '/omni/process/face?imageType=selfie', { token: s.token }), 400);
      await emu.call('POST', '/omni/add/face/third-party?imageType=selfie', { token: s.token, body: { base64Image: b64(samples.selfie()) } });
      expectEnvelope(await emu.call('POST', '/omni/process/face?imageType=selfie', { token: s.token }), 400);
    });
  });

  describe('status machine and results', () => {
    it('runs to ONBOARDING_FINISHED through the documented statuses', async () => {
      const recorder = recordStatusMoves(emu);
      const f = await fullFlow(emu);
      expect(f.face).toEqual({ confidence: 1, existingUser: false });
      await waitFor(async () => (await statusOf(emu, f.token)) === 'ONBOARDING_FINISHED');
      recorder.stop();
      // ID and face processing run side by side, so their order is not fixed; each status comes once, finished last.
      const moves = recorder.movesOf(f.interviewId);
      expect([...moves].sort()).toEqual(['FACE_VALIDATION_FINISHED', 'ID_VALIDATION_FINISHED', 'ONBOARDING_FINISHED', 'POST_PROCESSING_FINISHED']);
      expect(moves.at(-1)).toBe('ONBOARDING_FINISHED');
      expect(moves.indexOf('ID_VALIDATION_FINISHED')).toBeLessThan(moves.indexOf('POST_PROCESSING_FINISHED'));
      expect((await emu.call('GET', '/omni/get/postprocess/isfinished', { token: f.token })).body).toEqual({ finished: true });
      const fin = await emu.call('GET', '/omni/finish-status', { token: f.token });
      expect(fin.body).toEqual({ redirectionUrl: null, customerId: null, action: 'approved' });
      const put = await emu.call('PUT', '/0/omni/finish-status?flowId=abc', { token: f.token, key: null });
      expect(put.status).toBe(200);
      expect(await statusOf(emu, f.token)).toBe('ONBOARDING_FINISHED');
    });

    it('finish-status finishes at once when processing is done, and statuses never go back', async () => {
      // A flow that waits for finish-status (no automatic finish to race, however slow the machine).
      const slow = await startEmulator({ processingDelayMs: 800 });
      try {
        const f = await fullFlow(slow, { redirectionUrl: 'https://app.example.com/done', externalCustomerId: 'emu:no-auto-finish' });
        await waitFor(() => slow.app.emulator.sessions.get(f.interviewId)!.idPhase === 2 && slow.app.emulator.sessions.get(f.interviewId)!.facePhase === 2);
        // Processing is done and nothing else finishes the session; finish-status does it now.
        expect(['FACE_VALIDATION_FINISHED', 'POST_PROCESSING_FINISHED']).toContain(await statusOf(slow, f.token));
        const fin = await slow.call('GET', '/omni/finish-status', { token: f.token });
        expect(fin.body).toMatchObject({ redirectionUrl: 'https://app.example.com/done', action: 'approved' });
        expect(await statusOf(slow, f.token)).toBe('ONBOARDING_FINISHED');
        expect(slow.app.emulator.setStatus(f.interviewId, 'ID_VALIDATION_FINISHED')).toBe(false);
        expect(slow.app.emulator.expire(f.interviewId)).toBe(false);
      } finally {
        await slow.close();
      }
    });

    it('finish-status asked during processing completes the session as soon as processing ends', async () => {
      // The automatic finish would come processingDelayMs after processing; finish-status brings it forward.
      // Long enough that finish-status surely arrives while processing runs, even on a loaded machine.
      const slow = await startEmulator({ processingDelayMs: 2000 });
      try {
        const f = await fullFlow(slow);
        const fin = await slow.call('GET', '/omni/finish-status', { token: f.token });
        expect(fin.body.action).toBe('none');
        expect(await statusOf(slow, f.token)).not.toBe('ONBOARDING_FINISHED');
        const s = slow.app.emulator.sessions.get(f.interviewId)!;
        await waitFor(() => s.idPhase === 2 && s.facePhase === 2, 5000, 5);
        expect(s.status).toBe('ONBOARDING_FINISHED');
      } finally {
        await slow.close();
      }
    });

    it('finish-status completes at once a session with nothing in processing, even one that captured nothing', async () => {
      const s = await emu.start();
      const fin = await emu.call('GET', '/omni/finish-status', { token: s.token });
      // Completed at once, so the answer already carries the verdict: nothing was validated, so nothing passed.
      expect(fin.status).toBe(200);
      expect(fin.body.action).toBe('rejected');
      expect(await statusOf(emu, s.token)).toBe('ONBOARDING_FINISHED');
      const score = (await emu.call('GET', '/omni/get/score', { token: s.token })).body;
      expect(score.overall).toEqual({ value: expect.any(String), status: 'FAIL' });
      expect(score.reasonMsg).toBe('ID never validated, no selfie, face never matched');
    });

    it('builds the score with string leaves, UNKNOWN before processing and OK after', async () => {
      const s = await emu.start();
      const early = await emu.call('GET', '/omni/get/score', { token: s.token });
      expect(early.body.overall).toEqual({ value: expect.any(String), status: 'UNKNOWN' });
      const f = await fullFlow(emu);
      await waitFor(async () => (await statusOf(emu, f.token)) === 'ONBOARDING_FINISHED');
      const score = (await emu.call('GET', `/omni/get/score?id=${f.interviewId}&verbose=true`, { token: f.token })).body;
      expect(score.overall.status).toBe('OK');
      expect(score.idValidation.overall.status).toBe('OK');
      expect(score.liveness.overall.status).toBe('OK');
      expect(score.faceRecognition.overall.status).toBe('OK');
      expect(score.faceRecognition.existingUser).toBe(false);
      expect(score.governmentValidation).toBeNull();
      expect(score.idOcrConfidence.overallConfidence.status).toBe('OK');
      const leaves: Array<{ value: unknown; status: unknown }> = [];
      const walk = (o: unknown): void => {
        if (Array.isArray(o)) o.forEach(walk);
        else if (o && typeof o === 'object') {
          if ('status' in o && 'value' in o) leaves.push(o as { value: unknown; status: unknown });
          else Object.values(o).forEach(walk);
        }
      };
      walk(score);
      expect(leaves.length).toBeGreaterThan(15);
      for (const l of leaves) {
        expect(typeof l.value).toBe('string');
        expect(typeof l.status).toBe('string');
      }
      const sharp = score.idValidation.photoSecurityAndQuality.find((x: { key: string }) => x.key === 'sharpnessFront');
      expect(sharp).toEqual({ key: 'sharpnessFront', value: expect.stringMatching(/^\d+$/), status: 'OK' });
      expect((await emu.call('GET', '/0/omni/get/score', { token: f.token, key: null })).status).toBe(200);
    });

    it('fails the score when a capture failed the quality checks', async () => {
      const s = await emu.start();
      await emu.call('POST', '/omni/add/front-id/v2?onlyFront=true', { token: s.token, body: { base64Image: b64(samples.blurryIdFront()) } });
      await emu.call('POST', '/omni/process/id', { token: s.token });
      await waitFor(async () => (await statusOf(emu, s.token)) === 'POST_PROCESSING_FINISHED');
      const score = (await emu.call('GET', '/omni/get/score', { token: s.token })).body;
      expect(score.idValidation.overall.status).toBe('FAIL');
      expect(score.overall.status).toBe('FAIL');
    });

    it('returns OCR data flat and wrapped in v2, with Incode date formats', async () => {
      const f = await fullFlow(emu);
      await waitFor(async () => (await statusOf(emu, f.token)) === 'ONBOARDING_FINISHED');
      const ocr = (await emu.call('GET', `/omni/get/ocr-data?id=${f.interviewId}`, { token: f.token })).body;
      expect(ocr).toMatchObject({
        name: { fullName: expect.any(String), firstName: expect.any(String), paternalLastName: expect.any(String) },
        address: expect.stringContaining('\n'),
        addressFields: { street: expect.any(String), postalCode: expect.any(String), city: expect.any(String), state: expect.any(String) },
        typeOfId: 'DriversLicense',
        documentFrontSubtype: 'DRIVERS_LICENSE',
        birthDate: expect.any(Number),
        issuedAt: expect.stringMatching(/^\d{12,13}$/),
        expireAt: expect.stringMatching(/^\d{12,13}$/),
        issueDate: expect.any(Number),
        expirationDate: expect.any(Number),
        documentNumber: expect.any(String),
        gender: expect.stringMatching(/^[MF]$/),
        issuingCountry: 'USA',
        nationality: 'USA',
        ocrDataConfidence: expect.any(Object),
      });
      expect(ocr.issueDate).toBe(new Date(Number(ocr.issuedAt)).getUTCFullYear());
      expect(ocr.addressFromStatement).toBeUndefined();
      const v2 = (await emu.call('GET', '/0/omni/get/ocr-data/v2', { token: f.token, key: null })).body;
      expect(v2).toEqual({ ocrData: ocr });
      // Deterministic per interviewId.
      expect((await emu.call('GET', '/omni/get/ocr-data', { token: f.token })).body).toEqual(ocr);
    });

    it('produces a Brazilian person for BRA sessions', async () => {
      const f = await fullFlow(emu, { countryCode: 'BRA' });
      await waitFor(async () => (await statusOf(emu, f.token)) === 'ONBOARDING_FINISHED');
      const ocr = (await emu.call('GET', '/omni/get/ocr-data', { token: f.token })).body;
      expect(ocr).toMatchObject({ issuingCountry: 'BRA', nationality: 'BRA', typeOfId: 'IdentificationCard', addressFields: { city: 'SAO PAULO', state: 'SP' } });
      expect(ocr.address).toMatch(/SAO PAULO SP \d{5}-\d{3}$/);
    });

    it('serves onboarding-url, approve, images and the SDK extras', async () => {
      const f = await fullFlow(emu, { configurationId: 'flow123' });
      const t = { token: f.token, key: null } as const;
      const url = await emu.call('GET', '/0/omni/onboarding-url?clientId=acme', t);
      expect(url.body.url).toMatch(/^https:\/\/demo-onboarding\.incodesmile\.com\/acme\/flow\/flow123\?interviewId=[0-9a-f]{24}/);
      expect((await emu.call('GET', '/omni/onboarding-url?clientId=acme', { token: f.token })).status).toBe(200);
      // clientId is required.
      expectEnvelope(await emu.call('GET', '/omni/onboarding-url', { token: f.token }), 400);
      expect((await emu.call('GET', '/0/omni/start-info', t)).body).toEqual({ phonePrefix: '+1', country: 'US' });
      expect((await emu.call('POST', '/0/omni/add/geolocation', { ...t, body: { longitude: 1.5, latitude: 2.5 } })).body).toEqual({ success: true });
      expect((await emu.call('POST', '/0/omni/add/event', { ...t, body: { eventName: 'x', eventData: {}, eventType: 'y' } })).body).toEqual({ success: true });
      const imgs = await emu.call('POST', '/0/omni/get/images', { ...t, body: { images: ['croppedIDFace', 'unknownKind'] } });
      expect(Object.keys(imgs.body)).toEqual(['croppedIDFace']);
      expect(Buffer.from(imgs.body.croppedIDFace, 'base64').subarray(0, 2).toString('hex')).toBe('ffd8');
      expect(Object.keys((await emu.call('POST', '/0/omni/get/images/v2', { ...t, body: { images: ['selfie'] } })).body)).toEqual(['selfie']);
      expect((await emu.call('POST', '/0/omni/add/custom-fields', { ...t, body: { customFields: { a: 1 } } })).body).toEqual({ success: true });
      expect((await emu.call('GET', '/0/omni/get/custom-fields', t)).body).toEqual({ customFields: { a: 1 } });
      // Sessions stay small: a flood of fields is refused, and what was there stays.
      const many = Object.fromEntries(Array.from({ length: 101 }, (_, i) => [`f${i}`, i]));
      expectEnvelope(await emu.call('POST', '/0/omni/add/custom-fields', { ...t, body: { customFields: many } }), 400);
      expectEnvelope(await emu.call('POST', '/0/omni/add/custom-fields', { ...t, body: { customFields: { big: 'x'.repeat(70_000) } } }), 400);
      // Flat key/value metadata: a nested value is refused, which keeps a few bytes of JSON from holding thousands of
      // objects in memory, and a deep one from overflowing the stack (a 500 once).
      expectEnvelope(await emu.call('POST', '/0/omni/add/custom-fields', { ...t, body: { customFields: { a: Array.from({ length: 20_000 }, () => ({})) } } }), 400);
      const deep = `{"customFields":{"a":${'['.repeat(100_000)}${']'.repeat(100_000)}}}`;
      expectEnvelope(await emu.call('POST', '/0/omni/add/custom-fields', { ...t, raw: Buffer.from(deep), contentType: 'application/json' }), 400);
      expect((await emu.call('GET', '/0/omni/get/custom-fields', t)).body).toEqual({ customFields: { a: 1 } });
      expect((await emu.call('PUT', '/0/omni/update', { ...t, body: { phone: '1' } })).body).toEqual({ success: true });
      expect((await emu.call('POST', '/0/omni/add/device-fingerprint', { ...t, body: { hash: 'h' } })).body).toEqual({ success: true });
      expect((await emu.call('POST', '/0/omni/session/status/set?action=abandon', { ...t, body: {} })).body).toEqual({ success: true });
      expect((await emu.call('GET', '/0/omni/get/onboarding-modules', t)).status).toBe(200);
      expect((await emu.call('GET', '/0/omni/asset/fetch-all', t)).status).toBe(200);
      expect((await emu.call('GET', '/0/omni/get/data', t)).body).toMatchObject({ interviewId: f.interviewId });
      expect((await emu.call('GET', '/0/omni/web-libs?type=face', { key: null })).status).toBe(200);
      expect((await emu.call('GET', '/0/omni/getRegions', { key: null })).status).toBe(200);
      expectEnvelope(await emu.call('GET', '/omni/getRegions', { key: null }), 403);
      const approve = await emu.call('POST', `/omni/process/approve?interviewId=${f.interviewId}`, { token: f.token });
      expect(approve.body).toEqual({ success: true, uuid: expect.any(String), token: expect.any(String), totalScore: expect.any(String), existingCustomer: false });
    });
  });

  describe('CORS', () => {
    it('answers preflights with the allowed headers and methods', async () => {
      const res = await request(`${emu.base}/0/omni/add/front-id/v2`, {
        method: 'OPTIONS',
        headers: { origin: 'http://localhost:3000', 'access-control-request-method': 'POST', 'access-control-request-headers': 'x-incode-hardware-id,api-version,content-type' },
      });
      await res.body.text();
      expect(res.statusCode).toBe(204);
      expect(res.headers['access-control-allow-origin']).toBe('*');
      for (const h of ['api-version', 'x-api-key', 'x-incode-hardware-id', 'content-type', 'accept', 'sessionid']) expect(String(res.headers['access-control-allow-headers'])).toContain(h);
      for (const m of ['GET', 'POST', 'PUT', 'DELETE', 'OPTIONS']) expect(String(res.headers['access-control-allow-methods'])).toContain(m);
      const s = await emu.start();
      const get = await emu.call('GET', '/0/omni/get/onboarding/status', { token: s.token, key: null, headers: { origin: 'http://localhost:3000' } });
      expect(get.headers['access-control-allow-origin']).toBe('*');
      const err = await emu.call('GET', '/0/omni/get/onboarding/status', { key: null, headers: { origin: 'http://localhost:3000' } });
      expect(err.status).toBe(401);
      expect(err.headers['access-control-allow-origin']).toBe('*');
    });

    it('limits origins when a list is configured', async () => {
      const e = await startEmulator({ corsOrigins: ['https://good.example'] });
      try {
        const good = await request(`${e.base}/0/omni/start-info`, { method: 'OPTIONS', headers: { origin: 'https://good.example', 'access-control-request-method': 'GET' } });
        await good.body.text();
        expect(good.headers['access-control-allow-origin']).toBe('https://good.example');
        const bad = await request(`${e.base}/0/omni/start-info`, { method: 'OPTIONS', headers: { origin: 'https://evil.example', 'access-control-request-method': 'GET' } });
        await bad.body.text();
        expect(bad.headers['access-control-allow-origin']).toBeUndefined();
      } finally {
        await e.close();
      }
    });
  });

  describe('faults', () => {
    afterEach(() => emu.app.emulator.resetFaults());

    it('adds latency to every response and extra latency to start only', async () => {
      emu.app.emulator.setFaults({ latencyMs: 80 });
      let t = Date.now();
      await emu.call('GET', '/omni/getRegions');
      expect(Date.now() - t).toBeGreaterThanOrEqual(75);
      // Start's latency far above what a loaded machine adds to a plain call, so the two cannot be confused.
      emu.app.emulator.setFaults({ latencyMs: 0, startLatencyMs: 3000 });
      t = Date.now();
      await emu.call('GET', '/omni/getRegions');
      expect(Date.now() - t).toBeLessThan(2500);
      t = Date.now();
      await emu.call('POST', '/omni/start', { body: {} });
      expect(Date.now() - t).toBeGreaterThanOrEqual(2995);
    });

    it('answers 503 envelopes at the error rate (seeded) and exempts admin routes', async () => {
      emu.app.emulator.setFaults({ errorRate: 1 });
      expectEnvelope(await emu.call('POST', '/omni/start', { body: {} }), 503);
      expect((await emu.call('GET', '/__emulator/faults')).body.errorRate).toBe(1);
      emu.app.emulator.setFaults({ errorRate: 0.5, seed: 42 });
      const a: number[] = [];
      for (let i = 0; i < 20; i++) a.push((await emu.call('GET', '/omni/getRegions')).status);
      emu.app.emulator.setFaults({ seed: 42 });
      const b: number[] = [];
      for (let i = 0; i < 20; i++) b.push((await emu.call('GET', '/omni/getRegions')).status);
      expect(a).toEqual(b);
      expect(a).toContain(503);
      expect(a).toContain(200);
    });

    it('answers the errorStatuses given, and with errorAfterHandler only after the call was carried out (a reply lost on its way back)', async () => {
      emu.app.emulator.setFaults({ errorRate: 1, errorStatuses: [500, 502, 504], seed: 9 });
      const seen = new Set<number>();
      for (let i = 0; i < 30; i++) {
        const r = await emu.call('GET', '/omni/getRegions');
        expectEnvelope(r, r.status);
        expect(r.body.status).toBe(r.status);
        seen.add(r.status);
      }
      expect([...seen].sort()).toEqual([500, 502, 504]);
      // Refused before it runs (the default): no session.
      const before = emu.app.emulator.sessions.size;
      expect((await emu.call('POST', '/omni/start', { body: {} })).status).toBeGreaterThanOrEqual(500);
      expect(emu.app.emulator.sessions.size).toBe(before);
      // Carried out, its answer lost: the session exists though the caller saw a 504.
      emu.app.emulator.setFaults({ errorStatuses: [504], errorAfterHandler: true });
      expectEnvelope(await emu.call('POST', '/omni/start', { body: {} }), 504);
      expect(emu.app.emulator.sessions.size).toBe(before + 1);
      expect((await emu.call('GET', '/__emulator/faults')).body).toMatchObject({ errorStatuses: [504], errorAfterHandler: true });
      emu.app.emulator.resetFaults();
      expect((await emu.call('GET', '/__emulator/faults')).body).toMatchObject({ errorStatuses: [503], errorAfterHandler: false });
    });

    it('refuses fault settings it would otherwise clamp away or ignore (400), and changes nothing', async () => {
      const before = (await emu.call('GET', '/__emulator/faults')).body;
      for (const body of [{ errorRate: 50 }, { errorRate: -0.1 }, { timeoutRate: '0.5' }, { latencyMs: -5 }, { errorStatuses: [404] }, { errorStatuses: [] }, { bogus: 1 }, { faultPaths: '/omni/add/' }, { errorAfterHandler: 'yes' }, { seed: 'abc' }]) {
        const res = await emu.call('POST', '/__emulator/faults', { body });
        expect([res.status, res.body.message]).toEqual([400, expect.any(String)]);
      }
      expect((await emu.call('GET', '/__emulator/faults')).body).toEqual(before);
    });

    it('limits the faults to faultPaths when given (a partial outage: image uploads fail, start works)', async () => {
      const set = await emu.call('POST', '/__emulator/faults', { body: { errorRate: 1, faultPaths: ['/omni/add/'] } });
      expect(set.body.faultPaths).toEqual(['/omni/add/']);
      const s = await emu.start();
      expectEnvelope(await emu.call('POST', '/omni/add/front-id/v2', { token: s.token, body: { base64Image: 'AAAA' } }), 503);
      expectEnvelope(await emu.call('POST', '/0/omni/add/face/third-party?imageType=selfie', { token: s.token, key: null, body: { base64Image: 'AAAA' } }), 503);
      expect((await emu.call('GET', `/omni/get/onboarding/status?id=${s.interviewId}`, { token: s.token })).status).toBe(200);
      expect((await emu.call('DELETE', '/__emulator/faults')).body.faultPaths).toEqual([]);
      expect((await emu.call('POST', '/omni/add/front-id/v2', { token: s.token, body: { base64Image: 'AAAA' } })).status).not.toBe(503);
    });

    it('holds requests without answering at the timeout rate', async () => {
      const r = await emu.call('POST', '/__emulator/faults', { body: { timeoutRate: 1 } });
      expect(r.body.timeoutRate).toBe(1);
      await expect(request(`${emu.base}/omni/start`, { method: 'POST', headers: { 'x-api-key': API_KEY }, headersTimeout: 200 })).rejects.toMatchObject({ code: 'UND_ERR_HEADERS_TIMEOUT' });
      expect((await emu.call('GET', '/__emulator/stats')).status).toBe(200);
      expect((await emu.call('DELETE', '/__emulator/faults')).body.timeoutRate).toBe(0);
      expect((await emu.call('POST', '/omni/start', { body: {} })).status).toBe(200);
    });

    it('requires the API key on admin routes', async () => {
      expectEnvelope(await emu.call('GET', '/__emulator/faults', { key: null }), 403);
    });
  });

  describe('admin routes', () => {
    it('expires a session, forces statuses and mints tokens', async () => {
      const s = await emu.start();
      expect((await emu.call('GET', `/__emulator/sessions/${s.interviewId}`)).body.status).toBe('UNKNOWN');
      expect((await emu.call('POST', `/__emulator/sessions/${s.interviewId}/expire`)).body).toEqual({ onboardingStatus: 'EXPIRED' });
      expect(await statusOf(emu, s.token)).toBe('EXPIRED');
      expectEnvelope(await emu.call('POST', `/__emulator/sessions/${s.interviewId}/status`, { body: { onboardingStatus: 'ONBOARDING_FINISHED' } }), 409);
      const s2 = await emu.start();
      expect((await emu.call('POST', `/__emulator/sessions/${s2.interviewId}/status`, { body: { onboardingStatus: 'ONBOARDING_FINISHED' } })).status).toBe(200);
      expect((await emu.call('POST', `/__emulator/sessions/${s2.interviewId}/status`, { body: { onboardingStatus: 'MANUAL_REVIEW_APPROVED' } })).status).toBe(200);
      expectEnvelope(await emu.call('POST', `/__emulator/sessions/${s2.interviewId}/status`, { body: { onboardingStatus: 'NOPE' } }), 400);
      const tok = await emu.call('POST', `/__emulator/sessions/${s2.interviewId}/token`, { body: { ttlSeconds: -1 } });
      expectEnvelope(await emu.call('GET', '/omni/get/score', { token: tok.body.token }), 401);
      expectEnvelope(await emu.call('GET', '/__emulator/sessions/ffffffffffffffffffffffff'), 404);
    });
  });
});

describe('emulatorPlugin inside a host app', () => {
  it('mounts under a prefix without leaking CORS, parsers or 404s into the host', async () => {
    const host = Fastify();
    host.get('/health', async () => ({ ok: true }));
    host.post('/echo', async (req) => ({ type: typeof req.body }));
    const plugin = emulatorPlugin({ apiKey: API_KEY, clientId: 'acme', prefix: '/sandbox/incode', processingDelayMs: 0 });
    await host.register(plugin);
    await host.listen({ port: 0, host: '127.0.0.1' });
    const base = `http://127.0.0.1:${(host.server.address() as { port: number }).port}`;
    try {
      const start = await request(`${base}/sandbox/incode/omni/start`, { method: 'POST', headers: { 'x-api-key': API_KEY, 'api-version': '1.0', 'content-type': 'application/json' }, body: '{}' });
      const s = (await start.body.json()) as { token: string; interviewId: string };
      expect(start.statusCode).toBe(200);
      expect(plugin.emulator.sessions.get(s.interviewId)).toBeDefined();
      const st = await request(`${base}/sandbox/incode/0/omni/get/onboarding/status`, { headers: { 'x-incode-hardware-id': s.token, 'api-version': '1.0', origin: 'http://x' } });
      expect(await st.body.json()).toEqual({ onboardingStatus: 'UNKNOWN' });
      expect(st.headers['access-control-allow-origin']).toBe('*');
      const nf = await request(`${base}/sandbox/incode/omni/nope`);
      expect(await nf.body.json()).toMatchObject({ status: 404, path: '/omni/nope' });
      const h = await request(`${base}/health`, { headers: { origin: 'http://x' } });
      await h.body.text();
      expect(h.headers['access-control-allow-origin']).toBeUndefined();
      expect(h.headers['processing-time']).toBeUndefined();
      const echo = await request(`${base}/echo`, { method: 'POST', headers: { 'content-type': 'image/jpeg' }, body: Buffer.from([1, 2]) });
      expect(echo.statusCode).toBe(415);
      await echo.body.text();
      const hostNf = await request(`${base}/elsewhere`);
      expect(hostNf.statusCode).toBe(404);
      expect(((await hostNf.body.json()) as { timestamp?: number }).timestamp).toBeUndefined();
    } finally {
      await host.close();
    }
  });
});

describe('emulator decode budget', () => {
  it('answers Incode\'s 429 with Retry-After, before decoding, once uploads pass their megapixels a second', async () => {
    // 1.5 MP of burst, refilled at 0.01 MP/s: one 1200 x 760 front (0.91 MP) fits, a second does not for a minute.
    const emu = await startEmulator({ decodeBudget: { megapixelsPerSecond: 0.01, burstMegapixels: 1.5 } });
    try {
      const s = await emu.start({});
      // An image refused for its size is refused before the budget is asked: it costs nothing (a 20 MP frame header on a
      // small file would otherwise take the whole burst).
      const small = Buffer.from(jpeg.encode({ width: 16, height: 16, data: Buffer.alloc(16 * 16 * 4, 200) }, 90).data);
      const sof = small.indexOf(Buffer.from([0xff, 0xc0]), 2);
      const huge = Buffer.from(small);
      huge.writeUInt16BE(4000, sof + 5);
      huge.writeUInt16BE(5000, sof + 7);
      expectEnvelope(await emu.call('POST', '/omni/add/front-id/v2', { token: s.token, body: { base64Image: b64(huge) } }), 400, 3008);
      const front = { base64Image: b64(samples.idFront()) };
      expect((await emu.call('POST', '/omni/add/front-id/v2', { token: s.token, body: front })).status).toBe(200);
      const refused = await emu.call('POST', '/omni/add/back-id/v2', { token: s.token, body: { base64Image: b64(samples.idBack()) } });
      expectEnvelope(refused, 429);
      expect(Number(refused.headers['retry-after'])).toBeGreaterThan(30);
      // What is not an image costs nothing and is refused as before.
      expectEnvelope(await emu.call('POST', '/omni/add/back-id/v2', { token: s.token, body: { base64Image: b64(Buffer.from('not an image at all, just text')) } }), 400, 3010);
    } finally {
      await emu.close();
    }
  });

  it('lets large images through one burst of their own, small ones through the whole budget', async () => {
    // Images over 0.5 MP share 1 MP of burst (one 0.91 MP ID side), while the budget as a whole has 48.
    const emu = await startEmulator({ decodeBudget: { megapixelsPerSecond: 0.01, burstMegapixels: 48, large: { overMegapixels: 0.5, burstMegapixels: 1 } } });
    try {
      const s = await emu.start({});
      expect((await emu.call('POST', '/omni/add/front-id/v2', { token: s.token, body: { base64Image: b64(samples.idFront()) } })).status).toBe(200);
      const refused = await emu.call('POST', '/omni/add/back-id/v2', { token: s.token, body: { base64Image: b64(samples.idBack()) } });
      expectEnvelope(refused, 429);
      // A small image still passes: the whole budget has room.
      const small = Buffer.from(jpeg.encode({ width: 400, height: 300, data: Buffer.alloc(400 * 300 * 4, 128) }, 90).data);
      expect((await emu.call('POST', '/omni/add/back-id/v2', { token: s.token, body: { base64Image: b64(small) } })).status).not.toBe(429);
    } finally {
      await emu.close();
    }
  });

  it('refills on a monotonic clock: the wall clock stepped back an hour does not refuse every upload for that hour', async () => {
    const realNow = Date.now.bind(Date);
    let offset = 0;
    const spy = jest.spyOn(Date, 'now').mockImplementation(() => realNow() + offset);
    const emu = await startEmulator({ decodeBudget: { megapixelsPerSecond: 1, burstMegapixels: 1.5 } });
    try {
      const s = await emu.start({});
      offset = -3_600_000;
      expect((await emu.call('POST', '/omni/add/front-id/v2', { token: s.token, body: { base64Image: b64(samples.idFront()) } })).status).toBe(200);
    } finally {
      spy.mockRestore();
      await emu.close();
    }
  });

  it('is on for the sandbox, the emulator in the service\'s own process', () => {
    const options = sandboxEmulatorOptions(loadConfig({}));
    expect(options.decodeBudget).toEqual({ megapixelsPerSecond: expect.any(Number), burstMegapixels: expect.any(Number), large: expect.any(Object) });
    // Room for a few onboardings' captures at once (three 2 MP images each), and, for large images, for one of the
    // largest the emulator takes (16 MP) and no more: three 12 MP photos at once held the service's event loop past
    // EVENT_LOOP_MAX_LAG_MS, and load shedding refused everyone else.
    expect(options.decodeBudget!.burstMegapixels).toBeGreaterThanOrEqual(24);
    expect(options.decodeBudget!.large).toEqual({ overMegapixels: expect.any(Number), burstMegapixels: MAX_MEGAPIXELS });
    expect(options.decodeBudget!.large!.overMegapixels).toBeLessThanOrEqual(4);
  });
});
