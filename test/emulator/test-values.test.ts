// Every emu: test value, parsed and exercised over HTTP.
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import * as samples from '../../src/emulator/sample-images';
import { DIRECTIVES, parseDirectives, SELFIE_ERROR_CODES, stripDirectives } from '../../src/emulator/test-values';
import type { Emu } from './helpers';
import { b64, expectEnvelope, recordStatusMoves, startEmulator, waitFor } from './helpers';

describe('parseDirectives', () => {
  it('reads directives from a whitespace/comma separated id and keeps the rest as the id', () => {
    const { directives, unknown } = parseDirectives('cust-1 emu:decline,emu:spoof-once  emu:selfie-error-3006-once', undefined);
    expect(unknown).toEqual([]);
    expect(directives).toMatchObject({ decline: true, spoof: 'once', selfieError: { code: 3006, repeat: 'once' } });
    expect(stripDirectives('cust-1 emu:decline,emu:warn')).toBe('cust-1');
    expect(parseDirectives('emu:nope').unknown).toEqual(['emu:nope']);
    // Any case: a value that looks like a test value is never silently ignored.
    expect(parseDirectives('EMU:WARN').directives.warn).toBe(true);
    expect(parseDirectives('Emu:Nope').unknown).toEqual(['Emu:Nope']);
    expect(parseDirectives('plain-id').directives.decline).toBe(false);
  });

  it('documents an example for every directive that parses', () => {
    for (const d of DIRECTIVES) expect(parseDirectives(d.example).unknown).toEqual([]);
  });

  it('the emulator README lists every directive, and only directives', () => {
    const readme = readFileSync(join(__dirname, '../../src/emulator/README.md'), 'utf8');
    const listed = [...readme.matchAll(/`(emu:[a-z0-9<>-]+)`/g)].map((m) => m[1].replace('<code>', '4019').replace('<nnn>', '500')).filter((v) => v !== 'emu:');
    expect(parseDirectives(listed.join(' ')).unknown).toEqual([]);
    for (const d of DIRECTIVES) expect(listed.filter((l) => d.pattern.test(l.slice('emu:'.length)))).not.toHaveLength(0);
  });
});

describe('test values over HTTP', () => {
  let emu: Emu;
  beforeAll(async () => {
    emu = await startEmulator({ processingDelayMs: 0 });
  });
  afterAll(async () => {
    await emu.close();
  });

  const front = () => ({ base64Image: b64(samples.idFront()) });
  const back = () => ({ base64Image: b64(samples.idBack()) });
  const face = () => ({ base64Image: b64(samples.selfie()) });
  const status = async (t: string) => (await emu.call('GET', '/omni/get/onboarding/status', { token: t })).body.onboardingStatus as string;

  /** Every capture and processing call of one session, on `on` (this suite's emulator by default). */
  async function flow(externalCustomerId: string, on: Emu = emu) {
    const s = await on.start({ externalCustomerId });
    const t = s.token;
    await on.call('POST', '/omni/add/front-id/v2', { token: t, body: front() });
    await on.call('POST', '/omni/add/back-id/v2', { token: t, body: back() });
    const pid = await on.call('POST', '/omni/process/id', { token: t });
    const sf = await on.call('POST', '/omni/add/face/third-party?imageType=selfie', { token: t, body: face() });
    const pf = await on.call('POST', '/omni/process/face?imageType=selfie', { token: t });
    return { ...s, pid, sf, pf };
  }
  const score = async (t: string) => (await emu.call('GET', '/omni/get/score', { token: t })).body;

  it.each(Object.keys(SELFIE_ERROR_CODES).map(Number).concat([9999]))('emu:selfie-error-%i answers the envelope every time', async (code) => {
    const s = await emu.start({ externalCustomerId: `u emu:selfie-error-${code}` });
    for (let i = 0; i < 2; i++) {
      const r = await emu.call('POST', '/omni/add/face/third-party?imageType=selfie', { token: s.token, body: face() });
      expectEnvelope(r, code >= 400 && code < 500 ? code : 400, code);
      expect(r.body.path).toBe('/omni/add/face/third-party');
    }
  });

  it('emu:selfie-error-<code>-once fails only the first selfie', async () => {
    const s = await emu.start({ externalCustomerId: 'emu:selfie-error-4019-once' });
    const first = await emu.call('POST', '/0/omni/add/face?imageType=selfie', { token: s.token, key: null, body: face() });
    expectEnvelope(first, 400, 4019);
    expect(first.body.error).toBe('Face not found.');
    expect((await emu.call('POST', '/0/omni/add/face?imageType=selfie', { token: s.token, key: null, body: face() })).status).toBe(200);
  });

  it('emu:spoof, emu:spoof-once, emu:lenses, emu:mask, emu:dark shape add-face', async () => {
    const spoof = await emu.start({ externalCustomerId: 'emu:spoof' });
    for (let i = 0; i < 2; i++) expect((await emu.call('POST', '/omni/add/face/third-party?imageType=selfie', { token: spoof.token, body: face() })).body.confidence).toBe(1);
    const once = await emu.start({ externalCustomerId: 'emu:spoof-once' });
    // A selfie that could not be decoded is no liveness check: the spoof comes with the first one looked at.
    expect((await emu.call('POST', '/omni/add/face/third-party?imageType=selfie', { token: once.token, body: { base64Image: Buffer.from('not an image at all, just text').toString('base64') } })).status).toBeGreaterThanOrEqual(400);
    expect((await emu.call('POST', '/omni/add/face/third-party?imageType=selfie', { token: once.token, body: face() })).body.confidence).toBe(1);
    expect((await emu.call('POST', '/omni/add/face/third-party?imageType=selfie', { token: once.token, body: face() })).body.confidence).toBe(0);
    const lm = await emu.start({ externalId: 'emu:lenses emu:mask emu:dark' });
    expect((await emu.call('POST', '/omni/add/face/third-party?imageType=selfie', { token: lm.token, body: face() })).body).toMatchObject({ confidence: 0, hasLenses: true, hasFaceMask: true, isBright: false });
  });

  it('emu:spoof fails liveness and the overall score', async () => {
    const f = await flow('emu:spoof');
    await waitFor(async () => (await status(f.token)) === 'ONBOARDING_FINISHED');
    const sc = await score(f.token);
    expect(sc.liveness.overall.status).toBe('FAIL');
    expect(sc.overall.status).toBe('FAIL');
  });

  it('emu:decline and emu:warn set the overall score', async () => {
    const d = await flow('a emu:decline');
    const w = await flow('b emu:warn');
    await waitFor(async () => (await status(d.token)) === 'ONBOARDING_FINISHED' && (await status(w.token)) === 'ONBOARDING_FINISHED');
    expect((await score(d.token)).overall.status).toBe('FAIL');
    expect((await score(d.token)).idValidation.overall.status).toBe('FAIL');
    expect((await emu.call('GET', '/omni/finish-status', { token: d.token })).body.action).toBe('rejected');
    expect((await score(w.token)).overall.status).toBe('WARN');
  });

  it.each([
    ['emu:overall-unknown', 'UNKNOWN', '0.0'],
    ['emu:overall-manual', 'MANUAL', expect.stringMatching(/^\d+\.\d$/)],
    ['emu:overall-blank', '', ''],
  ])('%s sets the overall status of a finished session, whatever its checks gave', async (value, overall, scoreValue) => {
    const f = await flow(value);
    await waitFor(async () => (await status(f.token)) === 'ONBOARDING_FINISHED');
    const sc = await score(f.token);
    expect(sc.overall).toEqual({ value: scoreValue, status: overall });
    // The checks themselves passed: only the overall is forced.
    expect(sc.idValidation.overall.status).toBe('OK');
  });

  it("leaves as Incode's own example shows them: a good selfie's photoQuality without a status, a passed lensesCheck without a value", async () => {
    const f = await flow('plain');
    await waitFor(async () => (await status(f.token)) === 'ONBOARDING_FINISHED');
    const sc = await score(f.token);
    expect(sc.liveness.photoQuality).toEqual({ value: '' });
    expect(sc.faceRecognition.lensesCheck).toEqual({ status: 'OK' });
    const lenses = await flow('emu:lenses');
    await waitFor(async () => (await status(lenses.token)) === 'ONBOARDING_FINISHED');
    expect((await score(lenses.token)).faceRecognition.lensesCheck).toEqual({ value: '1', status: 'FAIL' });
  });

  it('emu:no-match and emu:existing-user shape process-face and the score', async () => {
    const n = await flow('emu:no-match');
    expect(n.pf.body).toMatchObject({ confidence: 0, existingUser: false });
    const e = await flow('cust-9 emu:existing-user');
    expect(e.pf.body).toMatchObject({ confidence: 1, existingUser: true, existingInterviewId: expect.stringMatching(/^[0-9a-f]{24}$/), existingExternalId: expect.stringMatching(/^ext-[0-9a-f]{8}$/) });
    await waitFor(async () => (await status(n.token)) === 'ONBOARDING_FINISHED' && (await status(e.token)) === 'ONBOARDING_FINISHED');
    const ns = await score(n.token);
    expect(ns.faceRecognition.overall.status).toBe('FAIL');
    expect(ns.overall.status).toBe('FAIL');
    expect((await score(e.token)).faceRecognition).toMatchObject({
      existingUser: true,
      existingInterviewId: e.pf.body.existingInterviewId,
      // The earlier identity's externalId, as process/face named it: not this session's own.
      existingExternalId: e.pf.body.existingExternalId,
      nameMatch: { value: '1', status: 'OK' },
    });
    expect(ns.faceRecognition).not.toHaveProperty('existingExternalId');
  });

  it('emu:mask-null and emu:no-confidence shape add-face as Incode was seen to (hasFaceMask null, no confidence)', async () => {
    const m = await emu.start({ externalCustomerId: 'emu:mask-null' });
    const masked = (await emu.call('POST', '/omni/add/face/third-party?imageType=selfie', { token: m.token, body: face() })).body;
    expect(masked).toMatchObject({ confidence: 0, hasFaceMask: null });
    const n = await emu.start({ externalCustomerId: 'emu:no-confidence' });
    const none = (await emu.call('POST', '/omni/add/face/third-party?imageType=selfie', { token: n.token, body: face() })).body;
    expect(none).not.toHaveProperty('confidence');
    expect(none).toMatchObject({ isBright: true, hasLenses: false });
  });

  it('emu:unknown-document and emu:unknown-document-once reject the front', async () => {
    const a = await emu.start({ externalCustomerId: 'emu:unknown-document' });
    for (let i = 0; i < 2; i++) {
      const r = await emu.call('POST', '/omni/add/front-id/v2', { token: a.token, body: front() });
      expect(r.body).toMatchObject({ classification: false, failReason: 'UNKNOWN_DOCUMENT_TYPE', horizontalResolution: 0 });
    }
    const o = await emu.start({ externalCustomerId: 'emu:unknown-document-once' });
    expect((await emu.call('POST', '/omni/add/front-id/v2', { token: o.token, body: front() })).body.classification).toBe(false);
    expect((await emu.call('POST', '/omni/add/front-id/v2', { token: o.token, body: front() })).body.classification).toBe(true);
  });

  it('emu:front-error-<code> and emu:back-error-<code>(-http-<nnn>) refuse that side of the ID with the envelope', async () => {
    const f = await emu.start({ externalCustomerId: 'emu:front-error-1003' });
    const refused = await emu.call('POST', '/omni/add/front-id/v2', { token: f.token, body: front() });
    expectEnvelope(refused, 400, 1003);
    expect(refused.body).toMatchObject({ error: 'Face cropping failure.', path: '/omni/add/front-id/v2' });
    const b = await emu.start({ externalCustomerId: 'emu:back-error-4019-http-500' });
    expect((await emu.call('POST', '/omni/add/front-id/v2', { token: b.token, body: front() })).body.classification).toBe(true);
    expectEnvelope(await emu.call('POST', '/omni/add/back-id/v2', { token: b.token, body: back() }), 500, 4019);
  });

  it('emu:one-sided answers a passport and needs no back', async () => {
    const s = await emu.start({ externalCustomerId: 'emu:one-sided' });
    const r = await emu.call('POST', '/omni/add/front-id/v2', { token: s.token, body: front() });
    expect(r.body).toMatchObject({ classification: true, typeOfId: 'Passport', skipBackIdCapture: true });
    expect((await emu.call('POST', '/omni/process/id', { token: s.token })).body).toEqual({ success: true });
  });

  it('emu:process-id-error answers 6000', async () => {
    const f = await flow('emu:process-id-error');
    expectEnvelope(f.pid, 400, 6000);
  });

  it('"-http-<nnn>" answers the same envelope under another status (process/id, process/face, add/face)', async () => {
    expectEnvelope((await flow('emu:process-id-error-http-500')).pid, 500, 6000);
    expectEnvelope((await flow('emu:process-face-error-http-503')).pf, 503, 6000);
    const s = await emu.start({ externalCustomerId: 'emu:selfie-error-3008-http-500' });
    expectEnvelope(await emu.call('POST', '/omni/add/face/third-party?imageType=selfie', { token: s.token, body: face() }), 500, 3008);
  });

  it('emu:process-face-error answers 6000 on process/face, and the face is never processed', async () => {
    const f = await flow('emu:process-face-error');
    expectEnvelope(f.pf, 400, 6000);
    expect(f.pf.body.path).toBe('/omni/process/face');
    expect(emu.app.emulator.sessions.get(f.interviewId)!.facePhase).toBe(0);
  });

  it('emu:expire ends in EXPIRED instead of finishing', async () => {
    const f = await flow('emu:expire');
    await waitFor(async () => (await status(f.token)) === 'EXPIRED');
    expect(await status(f.token)).toBe('EXPIRED');
  });

  it('emu:manual-approved and emu:manual-rejected move on to manual review', async () => {
    const a = await flow('emu:manual-approved');
    const r = await flow('emu:manual-rejected');
    await waitFor(async () => (await status(a.token)) === 'MANUAL_REVIEW_APPROVED' && (await status(r.token)) === 'MANUAL_REVIEW_REJECTED');
    expect((await score(a.token)).overall.status).toBe('MANUAL_OK');
    expect((await score(r.token)).overall.status).toBe('MANUAL_FAIL');
  });

  it('emu:no-auto-finish waits for finish-status, which completes it (and fires the status change)', async () => {
    const recorder = recordStatusMoves(emu);
    const f = await flow('emu:no-auto-finish');
    await waitFor(async () => (await emu.call('GET', '/omni/get/postprocess/isfinished', { token: f.token })).body.finished === true);
    await waitFor(async () => (await status(f.token)) === 'FACE_VALIDATION_FINISHED' || (await status(f.token)) === 'POST_PROCESSING_FINISHED');
    // Processing is done and nothing completes the session by itself.
    await new Promise((r) => setTimeout(r, 100));
    expect(['FACE_VALIDATION_FINISHED', 'POST_PROCESSING_FINISHED']).toContain(await status(f.token));
    const fin = await emu.call('GET', '/omni/finish-status', { token: f.token });
    expect(fin.status).toBe(200);
    expect(await status(f.token)).toBe('ONBOARDING_FINISHED');
    recorder.stop();
    expect(recorder.movesOf(f.interviewId).at(-1)).toBe('ONBOARDING_FINISHED');

    // Called before processing ends, finish-status completes the session once it does (processing long enough that
    // finish-status surely arrives while it runs, even on a loaded machine).
    const slow = await startEmulator({ processingDelayMs: 2000 });
    try {
      const { token: t } = await flow('emu:no-auto-finish', slow);
      await slow.call('GET', '/omni/finish-status', { token: t });
      expect((await slow.call('GET', '/omni/get/onboarding/status', { token: t })).body.onboardingStatus).not.toBe('ONBOARDING_FINISHED');
      await waitFor(async () => (await slow.call('GET', '/omni/get/onboarding/status', { token: t })).body.onboardingStatus === 'ONBOARDING_FINISHED', 15_000);
    } finally {
      await slow.close();
    }
  });

  it('emu:proof-of-address adds the proof-of-address OCR objects; without it they are absent', async () => {
    const f = await flow('emu:proof-of-address');
    const plain = await flow('cust-plain');
    await waitFor(async () => (await status(f.token)) === 'ONBOARDING_FINISHED' && (await status(plain.token)) === 'ONBOARDING_FINISHED');
    const ocr = (await emu.call('GET', '/omni/get/ocr-data', { token: f.token })).body;
    expect(ocr).toMatchObject({
      addressFromStatement: ocr.address,
      addressFieldsFromStatement: ocr.addressFields,
      addressFromStatementFields: ocr.addressFields,
      invalidAddressFromStatement: false,
      addressStatementEmissionDate: expect.stringMatching(/^\d{12,13}$/),
      documentType: 'UTILITY_BILL',
    });
    const none = (await emu.call('GET', '/omni/get/ocr-data', { token: plain.token })).body;
    for (const k of ['addressFromStatement', 'addressFieldsFromStatement', 'addressFromStatementFields', 'documentType']) expect(none).not.toHaveProperty(k);
  });

  it('emu:gov passes through GOVERNMENT_VALIDATION_FINISHED', async () => {
    const recorder = recordStatusMoves(emu);
    const f = await flow('emu:gov');
    await waitFor(async () => (await status(f.token)) === 'ONBOARDING_FINISHED');
    recorder.stop();
    const moves = recorder.movesOf(f.interviewId);
    expect(moves.indexOf('ID_VALIDATION_FINISHED')).toBeGreaterThanOrEqual(0);
    expect(moves.indexOf('GOVERNMENT_VALIDATION_FINISHED')).toBeGreaterThan(moves.indexOf('ID_VALIDATION_FINISHED'));
    expect(moves.indexOf('POST_PROCESSING_FINISHED')).toBeGreaterThan(moves.indexOf('GOVERNMENT_VALIDATION_FINISHED'));
    expect(moves.at(-1)).toBe('ONBOARDING_FINISHED');
    expect((await score(f.token)).governmentValidation).toMatchObject({ overall: { status: 'OK' } });
  });
});
