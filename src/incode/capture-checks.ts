// The integration guide's capture checks (shared/incode-api.md §8) as pure functions; no imports so browsers can bundle it.

/** Limits below which an ID capture must be repeated (the guide's values are the defaults). */
export interface CaptureThresholds {
  minGlare: number;
  minSharpness: number;
  minHorizontalResolution: number;
}

export const DEFAULT_CAPTURE_THRESHOLDS: Readonly<CaptureThresholds> = Object.freeze({ minGlare: 10, minSharpness: 10, minHorizontalResolution: 155 });

export interface CheckPassed {
  ok: true;
}

export interface CheckRejected {
  ok: false;
  /** Stable machine-readable reason; never changes wording with the message. */
  reason: string;
  /** What to show the user whose capture must be repeated. */
  message: string;
  /** Incode's own error code when the rejection came from one (selfie error envelope). */
  incodeCode?: number;
  /** Incode's failReason when the rejection came from one (ID captures). */
  failReason?: string;
}

export type CheckResult = CheckPassed | CheckRejected;

/** The shape of an Incode call that failed: IncodeError fits (details), so does a plain {httpStatus, incodeStatus}. */
export interface FailedCall {
  httpStatus?: number;
  incodeStatus?: number;
  details?: { httpStatus?: number; incodeStatus?: number };
  /** Incode's error envelope as a client received it ({timestamp, status, error, message, path}): status is its code. */
  status?: number;
}

// ---------------------------------------------------------------- ID captures

/** The fields of add/front-id and add/back-id the checks read. */
export interface IdCaptureResponse {
  classification?: boolean;
  failReason?: string | null;
  glare?: number;
  sharpness?: number;
  horizontalResolution?: number;
  [k: string]: unknown;
}

export const ID_REASONS = {
  NOT_CLASSIFIED: 'ID_NOT_CLASSIFIED',
  WRONG_SIDE: 'ID_WRONG_SIDE',
  WRONG_ONE_SIDED: 'ID_WRONG_ONE_SIDED_DOCUMENT',
  WRONG_UNFOLDED: 'ID_WRONG_UNFOLDED_DOCUMENT',
  PAGE_MISMATCH: 'ID_PAGE_MISMATCH',
  NOT_READABLE: 'ID_NOT_READABLE',
  NOT_ALIGNED: 'ID_NOT_ALIGNED',
  TYPE_UNACCEPTABLE: 'ID_TYPE_UNACCEPTABLE',
  UNEXPECTED: 'ID_UNEXPECTED_ERROR',
  GLARE: 'ID_GLARE',
  BLURRY: 'ID_BLURRY',
  LOW_RESOLUTION: 'ID_LOW_RESOLUTION',
  BACK_REQUIRED: 'ID_BACK_REQUIRED',
  IMAGE_REFUSED: 'ID_IMAGE_REFUSED',
  PROCESSING_FAILED: 'ID_PROCESSING_FAILED',
} as const;

/** User-facing message of every ID rejection reason. */
export const ID_MESSAGES: Readonly<Record<string, string>> = Object.freeze({
  [ID_REASONS.NOT_CLASSIFIED]: "We couldn't recognise the document. Place the whole ID on a plain, flat surface and try again.",
  [ID_REASONS.WRONG_SIDE]: 'That is the other side of the ID. Turn it over and try again.',
  [ID_REASONS.WRONG_ONE_SIDED]: 'This document has two sides. Take a photo of the front and of the back.',
  [ID_REASONS.WRONG_UNFOLDED]: 'Unfold the document and take the photo again.',
  [ID_REASONS.PAGE_MISMATCH]: 'The pages do not belong to the same document. Take both photos of the same ID.',
  [ID_REASONS.NOT_READABLE]: "We couldn't read the document. Make sure the text is in focus and well lit.",
  [ID_REASONS.NOT_ALIGNED]: 'Place the ID inside the frame with all four corners visible.',
  [ID_REASONS.TYPE_UNACCEPTABLE]: 'This type of document is not accepted. Use another ID.',
  [ID_REASONS.UNEXPECTED]: 'Something went wrong, please try later',
  [ID_REASONS.GLARE]: 'There is glare on the ID. Move away from direct light and try again.',
  [ID_REASONS.BLURRY]: 'The photo of the ID is blurry. Hold still and make sure it is in focus.',
  [ID_REASONS.LOW_RESOLUTION]: 'The photo of the ID is too small. Move closer so the ID fills the frame.',
  [ID_REASONS.BACK_REQUIRED]: 'This ID has a back side. Take a photo of the back too.',
  [ID_REASONS.IMAGE_REFUSED]: "We couldn't use this photo of the ID. Take it again.",
  [ID_REASONS.PROCESSING_FAILED]: "We couldn't process the photos of the ID. Take them again.",
});

/**
 * Incode failReason → stable reason; unknown failReasons fall back to ID_NOT_CLASSIFIED. A Map, so that a failReason
 * such as "constructor" is unknown rather than an Object.prototype member.
 */
const FAIL_REASONS: ReadonlyMap<string, string> = new Map([
  ['UNKNOWN_DOCUMENT_TYPE', ID_REASONS.NOT_CLASSIFIED],
  ['WRONG_DOCUMENT_SIDE', ID_REASONS.WRONG_SIDE],
  ['WRONG_ONE_SIDED_DOCUMENT', ID_REASONS.WRONG_ONE_SIDED],
  ['WRONG_UNFOLDED_DOCUMENT', ID_REASONS.WRONG_UNFOLDED],
  ['UNFOLDED_DOCUMENT_PAGE_MISMATCH', ID_REASONS.PAGE_MISMATCH],
  ['DOCUMENT_NOT_READABLE', ID_REASONS.NOT_READABLE],
  ['UNABLE_TO_ALIGN_DOCUMENT', ID_REASONS.NOT_ALIGNED],
  ['ID_TYPE_UNACCEPTABLE', ID_REASONS.TYPE_UNACCEPTABLE],
  ['UNEXPECTED_ERROR_OCCURRED', ID_REASONS.UNEXPECTED],
]);

function reject(reason: string, message: string, extra: Partial<CheckRejected> = {}): CheckRejected {
  return { ok: false, reason, message, ...extra };
}

const idReject = (reason: string, extra: Partial<CheckRejected> = {}) => reject(reason, ID_MESSAGES[reason], extra);

/** A number below the limit; a missing or non-numeric metric counts as failing (Incode always sends them). */
const below = (v: unknown, min: number) => typeof v !== 'number' || Number.isNaN(v) || v < min;

/**
 * Checks an add/front-id or add/back-id answer. The order matters: an unclassified document also
 * reports horizontalResolution 0, and the user should hear "not recognised", not "too small".
 */
export function checkIdCapture(res: IdCaptureResponse | null | undefined, thresholds: CaptureThresholds = DEFAULT_CAPTURE_THRESHOLDS): CheckResult {
  if (!res || typeof res !== 'object') return idReject(ID_REASONS.NOT_CLASSIFIED);
  const failReason = typeof res.failReason === 'string' && res.failReason ? res.failReason : undefined;
  if (failReason) return idReject(FAIL_REASONS.get(failReason) ?? ID_REASONS.NOT_CLASSIFIED, { failReason });
  if (res.classification !== true) return idReject(ID_REASONS.NOT_CLASSIFIED);
  if (below(res.glare, thresholds.minGlare)) return idReject(ID_REASONS.GLARE);
  if (below(res.sharpness, thresholds.minSharpness)) return idReject(ID_REASONS.BLURRY);
  if (below(res.horizontalResolution, thresholds.minHorizontalResolution)) return idReject(ID_REASONS.LOW_RESOLUTION);
  return { ok: true };
}

/** True when the front says the document has no back worth capturing (passports, some cards). */
export function isOneSided(front: { skipBackIdCapture?: unknown; typeOfId?: unknown } | null | undefined): boolean {
  return front?.skipBackIdCapture === true || front?.typeOfId === 'Passport';
}

// ---------------------------------------------------------------- selfie

// Several codes share one outcome in the guide's table.
const FACE_NOT_FOUND = { reason: 'SELFIE_FACE_NOT_FOUND', message: 'Position your face in the center of the frame' };
const IMAGE_UNSUPPORTED = { reason: 'SELFIE_IMAGE_UNSUPPORTED', message: 'Something went wrong, please try later' };

/** The guide's table (§8): Incode selfie error code → a stable reason and the message to show. */

export const SELFIE_ERRORS: Readonly<Record<number, { reason: string; message: string }>> = Object.freeze({
  100: { reason: 'SELFIE_TOO_DARK', message: 'Too dark' },
  101: { reason: 'SELFIE_GLASSES', message: 'Take off your glasses' },
  4010: { reason: 'SELFIE_MULTIPLE_FACES', message: 'Make sure you are the only one in the frame' },
  4019: FACE_NOT_FOUND,
  1003: FACE_NOT_FOUND,
  3004: FACE_NOT_FOUND,
  3005: { reason: 'SELFIE_FACE_TOO_SMALL', message: 'Move closer so your face fits the frame' },
  3006: { reason: 'SELFIE_BLURRY', message: 'Photo blurry, clean the lens and hold still' },
  3007: { reason: 'SELFIE_GLARE', message: 'Too dark, try moving elsewhere' },
  3008: IMAGE_UNSUPPORTED,
  3009: IMAGE_UNSUPPORTED,
  3010: { reason: 'SELFIE_BAD_COMPRESSION', message: "Couldn't capture, try moving elsewhere" },
});

/** Incode's "Processing error": the document or the selfie must be captured again. */
export const PROCESSING_ERROR_CODE = 6000;

/**
 * Capture codes Incode's add/face is seen answering that the guide's table leaves to "any other" (incode-api.md 4.5:
 * 1001 and 3002 face cropping failures, 4005 "Spoof attempt detected").
 */
const OTHER_CAPTURE_CODES: ReadonlySet<number> = new Set([1001, 3002, 4005]);

/**
 * A code by which Incode tells that a capture must be repeated (a selfie error, a processing error). Which HTTP status
 * each comes with is unknown, so such an answer under a 5xx, or a 404 or 409, is Incode answering, not failing.
 */
export function isCaptureCode(code: number | undefined): boolean {
  return code !== undefined && (code === PROCESSING_ERROR_CODE || code in SELFIE_ERRORS || OTHER_CAPTURE_CODES.has(code));
}

/** The guide's message for every code not in the table (reason SELFIE_POOR_CONDITIONS). */
export const DEFAULT_SELFIE_MESSAGE = 'Poor conditions for selfie, try in another place';

export const SELFIE_REASONS = {
  SPOOF: 'SELFIE_SPOOF_SUSPECTED',
  LENSES: 'SELFIE_LENSES',
  FACE_MASK: 'SELFIE_FACE_MASK',
  NOT_BRIGHT: 'SELFIE_NOT_BRIGHT',
  POOR_CONDITIONS: 'SELFIE_POOR_CONDITIONS',
  PROCESSING_FAILED: 'SELFIE_PROCESSING_FAILED',
} as const;

/** Messages of the checks on a 200 answer, reusing the table's wording where the guide has one. */
export const SELFIE_CHECK_MESSAGES: Readonly<Record<string, string>> = Object.freeze({
  // A spoof suspicion is not said as such: the user may be honest and the wording must not help an attacker.
  [SELFIE_REASONS.SPOOF]: DEFAULT_SELFIE_MESSAGE,
  [SELFIE_REASONS.LENSES]: SELFIE_ERRORS[101].message,
  [SELFIE_REASONS.FACE_MASK]: 'Take off your face mask',
  [SELFIE_REASONS.NOT_BRIGHT]: SELFIE_ERRORS[100].message,
  [SELFIE_REASONS.POOR_CONDITIONS]: DEFAULT_SELFIE_MESSAGE,
  [SELFIE_REASONS.PROCESSING_FAILED]: "We couldn't process the selfie. Take it again.",
});

function toCode(code: unknown): number | undefined {
  if (typeof code === 'number' && Number.isInteger(code)) return code;
  if (typeof code === 'string' && /^\d{1,9}$/.test(code.trim())) return Number(code.trim());
  return undefined;
}

/** The stable reason and the message the guide says to show for a selfie error code (poor conditions for any other). */
export function selfieError(code: number | string | null | undefined): { reason: string; message: string } {
  const c = toCode(code);
  return (c !== undefined ? SELFIE_ERRORS[c] : undefined) ?? { reason: SELFIE_REASONS.POOR_CONDITIONS, message: DEFAULT_SELFIE_MESSAGE };
}

/** The fields of add/face the checks read. */
export interface SelfieResponse {
  confidence?: number;
  isBright?: boolean;
  hasLenses?: boolean;
  hasFaceMask?: boolean | null;
  [k: string]: unknown;
}

/** Tells a failed call from an answer: Errors, or objects carrying an HTTP/Incode status instead of selfie fields. */
export function isFailedCall(x: unknown): x is FailedCall {
  if (!x || typeof x !== 'object') return false;
  if (x instanceof Error) return true;
  const o = x as Record<string, unknown>;
  const d = o.details as Record<string, unknown> | undefined;
  return (
    typeof o.httpStatus === 'number' ||
    typeof o.incodeStatus === 'number' ||
    // The envelope: a numeric status and no confidence (an add/face answer always carries confidence).
    (typeof o.status === 'number' && !('confidence' in o)) ||
    (!!d && typeof d === 'object' && (typeof d.incodeStatus === 'number' || typeof d.httpStatus === 'number'))
  );
}

/** Incode's own code of a failed call: the envelope's status first, the HTTP status otherwise. */
export function failedCallCode(f: FailedCall): number | undefined {
  return f.details?.incodeStatus ?? f.incodeStatus ?? f.status ?? f.details?.httpStatus ?? f.httpStatus;
}

/**
 * Checks an add/face answer, or the failure of that call (any non-200 means "repeat the selfie").
 * Note the polarity: here confidence > 0 is a spoof suspicion, while process/face confidence 0 is a mismatch.
 * What passes is what the Web SDK lets through (confidence exactly 0, isBright truthy, lenses and mask falsy): an answer
 * missing confidence or isBright is retaken, not accepted (one without confidence was seen on a too-dark selfie).
 */
export function checkSelfie(resOrError: SelfieResponse | FailedCall | null | undefined): CheckResult {
  if (!resOrError || typeof resOrError !== 'object') return reject(SELFIE_REASONS.POOR_CONDITIONS, DEFAULT_SELFIE_MESSAGE);
  if (isFailedCall(resOrError)) {
    // Only an integer is a code: a JSON 1e400 parses to Infinity, which no answer schema can carry.
    const code = toCode(failedCallCode(resOrError));
    const { reason, message } = selfieError(code);
    return reject(reason, message, code !== undefined ? { incodeCode: code } : {});
  }
  const r = resOrError as SelfieResponse;
  const selfieReject = (reason: string) => reject(reason, SELFIE_CHECK_MESSAGES[reason]);
  if (typeof r.confidence === 'number' && r.confidence > 0) return selfieReject(SELFIE_REASONS.SPOOF);
  if (r.hasLenses) return selfieReject(SELFIE_REASONS.LENSES);
  if (r.hasFaceMask) return selfieReject(SELFIE_REASONS.FACE_MASK);
  if (!r.isBright) return selfieReject(SELFIE_REASONS.NOT_BRIGHT);
  if (r.confidence !== 0) return reject(SELFIE_REASONS.POOR_CONDITIONS, DEFAULT_SELFIE_MESSAGE);
  return { ok: true };
}

// ---------------------------------------------------------------- face match

export interface FaceMatchResponse {
  confidence?: number;
  existingUser?: boolean;
  existingInterviewId?: string;
  [k: string]: unknown;
}

export const FACE_NO_MATCH = 'FACE_NO_MATCH';
export const FACE_NO_MATCH_MESSAGE = 'The selfie does not match the photo on the ID';

export type FaceMatchResult = (CheckPassed | CheckRejected) & {
  /** The person is already registered with this Incode client (1:N search). */
  existingUser: boolean;
  existingInterviewId?: string;
};

/** process/face: confidence 0 (or none) means the selfie does not match the ID photo. */
export function checkFaceMatch(res: FaceMatchResponse | null | undefined): FaceMatchResult {
  const existingUser = res?.existingUser === true;
  const extra = existingUser && typeof res?.existingInterviewId === 'string' ? { existingInterviewId: res.existingInterviewId } : {};
  const matched = typeof res?.confidence === 'number' && res.confidence > 0;
  if (!matched) return { ok: false, reason: FACE_NO_MATCH, message: FACE_NO_MATCH_MESSAGE, existingUser, ...extra };
  return { ok: true, existingUser, ...extra };
}
