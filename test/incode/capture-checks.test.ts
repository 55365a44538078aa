// Every branch of the guide's capture checks and every selfie error code's message.
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import {
  DEFAULT_CAPTURE_THRESHOLDS,
  DEFAULT_SELFIE_MESSAGE,
  FACE_NO_MATCH,
  ID_MESSAGES,
  SELFIE_ERRORS,
  checkFaceMatch,
  checkIdCapture,
  checkSelfie,
  isFailedCall,
  isOneSided,
  selfieError,
  type SelfieResponse,
} from '../../src/incode/capture-checks';
import { IncodeError } from '../../src/incode/errors';

const goodId = { classification: true, glare: 97, sharpness: 88, horizontalResolution: 1540, readability: true, typeOfId: 'IdentificationCard' };

describe('checkIdCapture', () => {
  it('accepts a good capture', () => {
    expect(checkIdCapture(goodId)).toEqual({ ok: true });
  });

  it('accepts values exactly at the thresholds', () => {
    expect(checkIdCapture({ ...goodId, glare: 10, sharpness: 10, horizontalResolution: 155 })).toEqual({ ok: true });
  });

  it.each([
    ['classification false', { classification: false }, 'ID_NOT_CLASSIFIED'],
    ['classification missing', { classification: undefined }, 'ID_NOT_CLASSIFIED'],
    ['glare < 10', { glare: 9 }, 'ID_GLARE'],
    ['sharpness < 10', { sharpness: 9 }, 'ID_BLURRY'],
    ['horizontalResolution < 155', { horizontalResolution: 154 }, 'ID_LOW_RESOLUTION'],
    ['glare missing', { glare: undefined }, 'ID_GLARE'],
  ])('rejects %s', (_name, patch, reason) => {
    const r = checkIdCapture({ ...goodId, ...patch });
    expect(r).toEqual({ ok: false, reason, message: ID_MESSAGES[reason] });
  });

  it.each([
    ['UNKNOWN_DOCUMENT_TYPE', 'ID_NOT_CLASSIFIED'],
    ['WRONG_DOCUMENT_SIDE', 'ID_WRONG_SIDE'],
    ['WRONG_ONE_SIDED_DOCUMENT', 'ID_WRONG_ONE_SIDED_DOCUMENT'],
    ['WRONG_UNFOLDED_DOCUMENT', 'ID_WRONG_UNFOLDED_DOCUMENT'],
    ['UNFOLDED_DOCUMENT_PAGE_MISMATCH', 'ID_PAGE_MISMATCH'],
    ['DOCUMENT_NOT_READABLE', 'ID_NOT_READABLE'],
    ['UNABLE_TO_ALIGN_DOCUMENT', 'ID_NOT_ALIGNED'],
    ['ID_TYPE_UNACCEPTABLE', 'ID_TYPE_UNACCEPTABLE'],
    ['UNEXPECTED_ERROR_OCCURRED', 'ID_UNEXPECTED_ERROR'],
    ['SOMETHING_NEW', 'ID_NOT_CLASSIFIED'],
  ])('rejects failReason %s as %s, even with good metrics', (failReason, reason) => {
    const r = checkIdCapture({ ...goodId, failReason });
    expect(r).toMatchObject({ ok: false, reason, failReason, message: ID_MESSAGES[reason] });
  });

  it('says "not recognised" rather than "too small" for an unclassified document', () => {
    expect(checkIdCapture({ classification: false, failReason: 'UNKNOWN_DOCUMENT_TYPE', sharpness: 90, glare: 90, horizontalResolution: 0 })).toMatchObject({ reason: 'ID_NOT_CLASSIFIED' });
  });

  it('ignores a null failReason', () => {
    expect(checkIdCapture({ ...goodId, failReason: null })).toEqual({ ok: true });
  });

  it('uses configurable thresholds', () => {
    const strict = { minGlare: 50, minSharpness: 90, minHorizontalResolution: 2000 };
    expect(checkIdCapture({ ...goodId, glare: 40 }, strict)).toMatchObject({ reason: 'ID_GLARE' });
    expect(checkIdCapture({ ...goodId, glare: 60, sharpness: 80 }, strict)).toMatchObject({ reason: 'ID_BLURRY' });
    expect(checkIdCapture({ ...goodId, glare: 60, sharpness: 95 }, strict)).toMatchObject({ reason: 'ID_LOW_RESOLUTION' });
    expect(checkIdCapture({ ...goodId, glare: 5, sharpness: 5, horizontalResolution: 100 }, { minGlare: 0, minSharpness: 0, minHorizontalResolution: 0 })).toEqual({ ok: true });
    expect(DEFAULT_CAPTURE_THRESHOLDS).toEqual({ minGlare: 10, minSharpness: 10, minHorizontalResolution: 155 });
  });

  it("rejects Incode's error envelope as a client received it: its status is Incode's code", () => {
    const envelope = { timestamp: 1, status: 3006, error: 'Bad Request', message: 'blurry', path: '/omni/add/face/third-party' };
    expect(isFailedCall(envelope)).toBe(true);
    expect(checkSelfie(envelope)).toEqual({ ok: false, reason: 'SELFIE_BLURRY', message: 'Photo blurry, clean the lens and hold still', incodeCode: 3006 });
    // An answer with a status field but confidence is an answer, not an envelope.
    expect(isFailedCall({ confidence: 0, status: 200 })).toBe(false);
  });

  it('reads a failReason named like an Object.prototype member as unknown, with a message', () => {
    for (const failReason of ['constructor', '__proto__', 'toString', 'valueOf', 'hasOwnProperty']) {
      const r = checkIdCapture({ ...goodId, classification: false, failReason });
      expect(r).toMatchObject({ ok: false, reason: 'ID_NOT_CLASSIFIED', message: ID_MESSAGES.ID_NOT_CLASSIFIED, failReason });
    }
  });

  it('rejects a missing answer', () => {
    expect(checkIdCapture(null)).toMatchObject({ ok: false, reason: 'ID_NOT_CLASSIFIED' });
  });

  it('every reason has a message', () => {
    for (const m of Object.values(ID_MESSAGES)) expect(m.length).toBeGreaterThan(5);
  });
});

describe('isOneSided', () => {
  it('follows skipBackIdCapture and passports', () => {
    expect(isOneSided({ skipBackIdCapture: true, typeOfId: 'DriversLicense' })).toBe(true);
    expect(isOneSided({ typeOfId: 'Passport' })).toBe(true);
    expect(isOneSided({ skipBackIdCapture: false, typeOfId: 'IdentificationCard' })).toBe(false);
    expect(isOneSided(undefined)).toBe(false);
  });
});

describe('selfie error messages (the guide table)', () => {
  const table: Array<[number, string]> = [
    [100, 'Too dark'],
    [101, 'Take off your glasses'],
    [4010, 'Make sure you are the only one in the frame'],
    [4019, 'Position your face in the center of the frame'],
    [1003, 'Position your face in the center of the frame'],
    [3004, 'Position your face in the center of the frame'],
    [3005, 'Move closer so your face fits the frame'],
    [3006, 'Photo blurry, clean the lens and hold still'],
    [3007, 'Too dark, try moving elsewhere'],
    [3008, 'Something went wrong, please try later'],
    [3009, 'Something went wrong, please try later'],
    [3010, "Couldn't capture, try moving elsewhere"],
  ];

  it.each(table)('code %i → "%s"', (code, message) => {
    expect(selfieError(code).message).toBe(message);
    expect(selfieError(String(code)).message).toBe(message);
    expect(SELFIE_ERRORS[code].message).toBe(message);
  });

  it('the exported table is exactly the guide', () => {
    expect(Object.keys(SELFIE_ERRORS).map(Number).sort()).toEqual(table.map(([c]) => c).sort());
  });

  it.each([0, 1001, 3002, 4005, 405, 500, 6000, 99999, undefined, null, 'abc'])('unknown code %p → the default message', (code) => {
    expect(selfieError(code as number).message).toBe(DEFAULT_SELFIE_MESSAGE);
    expect(selfieError(code as number).reason).toBe('SELFIE_POOR_CONDITIONS');
  });

  it('gives each code a stable reason', () => {
    expect(selfieError(4019).reason).toBe('SELFIE_FACE_NOT_FOUND');
    expect(selfieError(3006).reason).toBe('SELFIE_BLURRY');
    expect(selfieError(4010).reason).toBe('SELFIE_MULTIPLE_FACES');
  });
});

describe('checkSelfie', () => {
  const good = { confidence: 0, isBright: true, hasLenses: false, hasFaceMask: false, age: 34 };

  it('accepts a live, bright selfie without lenses or mask', () => {
    expect(checkSelfie(good)).toEqual({ ok: true });
    expect(checkSelfie({ ...good, hasFaceMask: null })).toEqual({ ok: true });
  });

  it.each([
    ['confidence > 0 (spoof suspicion)', { confidence: 1 }, 'SELFIE_SPOOF_SUSPECTED', DEFAULT_SELFIE_MESSAGE],
    ['hasLenses', { hasLenses: true }, 'SELFIE_LENSES', 'Take off your glasses'],
    ['hasFaceMask', { hasFaceMask: true }, 'SELFIE_FACE_MASK', 'Take off your face mask'],
    ['isBright false', { isBright: false }, 'SELFIE_NOT_BRIGHT', 'Too dark'],
    // As the Web SDK: only a truthy isBright and a confidence of exactly 0 pass.
    ['isBright missing', { isBright: undefined }, 'SELFIE_NOT_BRIGHT', 'Too dark'],
    ['confidence missing (seen on a too-dark selfie)', { confidence: undefined }, 'SELFIE_POOR_CONDITIONS', DEFAULT_SELFIE_MESSAGE],
    ['confidence not a number', { confidence: '0' }, 'SELFIE_POOR_CONDITIONS', DEFAULT_SELFIE_MESSAGE],
  ])('rejects %s', (_n, patch, reason, message) => {
    expect(checkSelfie({ ...good, ...patch } as SelfieResponse)).toEqual({ ok: false, reason, message });
  });

  it('rejects a failed call with the message of its Incode code (IncodeError)', () => {
    const err = new IncodeError('INCODE_BAD_REQUEST', 'addFace', 'x', { httpStatus: 400, incodeStatus: 4019 });
    expect(isFailedCall(err)).toBe(true);
    expect(checkSelfie(err)).toEqual({ ok: false, reason: 'SELFIE_FACE_NOT_FOUND', message: 'Position your face in the center of the frame', incodeCode: 4019 });
  });

  it('rejects a failed call given as plain statuses, unknown code → default message', () => {
    expect(checkSelfie({ httpStatus: 400, incodeStatus: 4005 })).toMatchObject({ ok: false, reason: 'SELFIE_POOR_CONDITIONS', message: DEFAULT_SELFIE_MESSAGE, incodeCode: 4005 });
    expect(checkSelfie({ httpStatus: 500 })).toMatchObject({ ok: false, message: DEFAULT_SELFIE_MESSAGE, incodeCode: 500 });
  });

  it('rejects a missing answer', () => {
    expect(checkSelfie(undefined)).toMatchObject({ ok: false, message: DEFAULT_SELFIE_MESSAGE });
  });
});

describe('checkFaceMatch', () => {
  it('confidence 1 is a match', () => {
    expect(checkFaceMatch({ confidence: 1, existingUser: false })).toEqual({ ok: true, existingUser: false });
  });

  it('confidence 0 (or missing) is no match', () => {
    expect(checkFaceMatch({ confidence: 0, existingUser: false })).toMatchObject({ ok: false, reason: FACE_NO_MATCH, existingUser: false });
    expect(checkFaceMatch({})).toMatchObject({ ok: false, reason: FACE_NO_MATCH });
  });

  it('reports existingUser', () => {
    expect(checkFaceMatch({ confidence: 1, existingUser: true, existingInterviewId: 'abc' })).toEqual({ ok: true, existingUser: true, existingInterviewId: 'abc' });
    expect(checkFaceMatch({ confidence: 0, existingUser: true })).toMatchObject({ ok: false, existingUser: true });
  });
});

describe('no runtime dependencies', () => {
  it('imports nothing (bundled for the browser by the demo page)', () => {
    const src = readFileSync(join(__dirname, '../../src/incode/capture-checks.ts'), 'utf8');
    expect(src).not.toMatch(/^\s*import\s/m);
    expect(src).not.toMatch(/require\(/);
  });
});
