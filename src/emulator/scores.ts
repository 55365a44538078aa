// Score payload builder: Incode's nested blocks with string leaf values, driven by capture metrics, face result and test values.
import { THRESHOLDS } from './image-analysis';
import { seedOf } from './ocr';
import type { CaptureRecord, Session } from './state';

/** Incode's ValueStatusKey. Either half may be missing: its own composed example has `{"value":""}` and `{"status":"OK"}`. */
export interface Leaf {
  value?: string;
  status?: string;
  key?: string;
}

type Verdict = 'OK' | 'WARN' | 'FAIL' | 'UNKNOWN';

const leaf = (value: string | number, status: string, key?: string): Leaf => (key ? { key, value: String(value), status } : { value: String(value), status });
const pct = (base: number, s: Session, salt: number): string => (base + (seedOf(s.interviewId, salt) % 40) / 10).toFixed(1);

/** A capture passes when the integration guide's recapture checks would not fire. */
export function captureOk(c: CaptureRecord | undefined): boolean {
  return !!c && c.classification && !c.failReason && c.sharpness >= THRESHOLDS.sharpness && c.glare >= THRESHOLDS.glare && c.horizontalResolution >= THRESHOLDS.horizontalResolution;
}

function captureLeaves(side: 'Front' | 'Back', c: CaptureRecord): Leaf[] {
  return [
    leaf(c.glare, c.glare >= THRESHOLDS.glare ? 'OK' : 'FAIL', `balancedLight${side}`),
    leaf(c.sharpness, c.sharpness >= THRESHOLDS.sharpness ? 'OK' : 'FAIL', `sharpness${side}`),
  ];
}

function worst(verdicts: Verdict[]): Verdict {
  if (verdicts.includes('FAIL')) return 'FAIL';
  if (verdicts.includes('UNKNOWN')) return 'UNKNOWN';
  if (verdicts.includes('WARN')) return 'WARN';
  return 'OK';
}

export function buildScore(s: Session): Record<string, unknown> {
  const d = s.directives;

  // ID block: capture metrics are known at upload time; the rest only after ID validation.
  const psq: Leaf[] = [];
  if (s.front) psq.push(...captureLeaves('Front', s.front));
  if (s.back) psq.push(...captureLeaves('Back', s.back));
  let idVerdict: Verdict = 'UNKNOWN';
  const idSpecific: Leaf[] = [];
  if (s.idValidated) {
    const capturesOk = captureOk(s.front) && (!!s.directives.oneSided || !s.back || captureOk(s.back));
    idVerdict = d.decline || !capturesOk ? 'FAIL' : d.warn ? 'WARN' : 'OK';
    psq.push(
      leaf('PASSED', 'OK', 'tamperCheck'),
      leaf('PASSED', 'OK', 'postitCheck'),
      leaf('PASSED', 'OK', 'alignment'),
      leaf('OK', 'OK', 'screenIdLiveness'),
      d.warn ? leaf('WARN', 'WARN', 'paperIdLiveness') : leaf('OK', 'OK', 'paperIdLiveness'),
      leaf('PASSED', 'OK', 'idAlreadyUsedCheck'),
      leaf(s.front?.classification ? 'PASSED' : 'FAIL', s.front?.classification ? 'OK' : 'FAIL', 'readabilityCheck'),
    );
    idSpecific.push(
      leaf(s.front?.classification ? '100' : '0', s.front?.classification ? 'OK' : 'FAIL', 'documentClassification'),
      leaf('100', 'OK', 'visiblePhotoFeatures'),
      leaf('100', 'OK', 'issueDateValidity'),
      leaf('100', 'OK', 'birthDateValidity'),
      leaf('100', 'OK', 'expirationDateValidity'),
      d.decline ? leaf('0', 'FAIL', 'documentExpired') : leaf('100', 'OK', 'documentExpired'),
      leaf('100', 'OK', 'issuingStateValidity'),
      leaf('100', 'OK', 'underageCheck'),
    );
  }
  const idValue = idVerdict === 'OK' ? pct(94, s, 1) : idVerdict === 'WARN' ? pct(70, s, 1) : idVerdict === 'FAIL' ? pct(10, s, 1) : '0.0';
  let customFields: Leaf[] | null = null;
  if (s.customFields && ('firstName' in s.customFields || 'lastName' in s.customFields)) {
    customFields = [];
    if ('firstName' in s.customFields) customFields.push(leaf('100', 'OK', 'firstNameMatch'));
    if ('lastName' in s.customFields) customFields.push(leaf('100', 'OK', 'lastNameMatch'));
  }

  // Liveness reflects the latest selfie.
  const sf = s.selfie;
  const liveVerdict: Verdict = !sf ? 'UNKNOWN' : sf.spoof ? 'FAIL' : 'OK';
  const liveValue = !sf ? '' : sf.spoof ? pct(5, s, 2) : pct(96, s, 2);

  const faceDone = s.facePhase === 2;
  const faceVerdict: Verdict = !faceDone ? 'UNKNOWN' : s.faceMatch ? 'OK' : 'FAIL';
  const faceValue = !faceDone ? '' : s.faceMatch ? pct(90, s, 3) : pct(4, s, 3);
  const faceRecognition: Record<string, unknown> = {
    existingUser: faceDone && d.existingUser,
    maskCheck: sf ? leaf(sf.hasFaceMask ? '1' : '0', sf.hasFaceMask ? 'FAIL' : 'OK') : leaf('', 'UNKNOWN'),
    // As Incode's example shows a passed one: a status and no value.
    lensesCheck: sf ? (sf.hasLenses ? leaf('1', 'FAIL') : { status: 'OK' }) : leaf('', 'UNKNOWN'),
    faceBrightness: sf ? leaf(sf.brightness.toFixed(1), sf.isBright ? 'OK' : 'FAIL') : leaf('', 'UNKNOWN'),
    appliedRule: null,
    overall: leaf(faceValue, faceVerdict),
  };
  if (faceDone && d.existingUser) {
    faceRecognition.existingInterviewId = existingInterviewIdFor(s);
    faceRecognition.customerId = `cust-${existingInterviewIdFor(s).slice(-8)}`;
    faceRecognition.existingExternalId = existingExternalIdFor(s);
    faceRecognition.nameMatch = leaf('1', 'OK');
  }

  const governmentValidation =
    d.gov && s.idValidated
      ? {
          validationStatus: leaf('0', 'OK', 'ok'),
          ocrValidation: [leaf('true', 'OK', 'name'), leaf('true', 'OK', 'birthDate'), leaf('true', 'OK', 'documentNumber')],
          ocrValidationOverall: leaf('100', 'OK'),
          overall: leaf('100', 'OK'),
        }
      : null;

  let overall: Verdict | 'MANUAL' | 'MANUAL_OK' | 'MANUAL_FAIL' | 'MANUAL_PENDING' | '' = worst([idVerdict, liveVerdict, faceVerdict]);
  // A session completed with a module never run (finish-status on an abandoned flow) is scored as it stands: what
  // was never checked did not pass.
  if (overall === 'UNKNOWN' && s.status === 'ONBOARDING_FINISHED') overall = 'FAIL';
  if (s.status === 'MANUAL_REVIEW_APPROVED') overall = 'MANUAL_OK';
  else if (s.status === 'MANUAL_REVIEW_REJECTED') overall = 'MANUAL_FAIL';
  else if (d.manual && s.status === 'ONBOARDING_FINISHED') overall = 'MANUAL_PENDING';
  else if (d.overall !== undefined && s.status === 'ONBOARDING_FINISHED') overall = d.overall;
  const overallValue = overallValueOf(overall, s);

  return {
    idValidation: {
      photoSecurityAndQuality: psq,
      idSpecific,
      customFields,
      appliedRule: null,
      overall: leaf(idValue, idVerdict),
    },
    liveness: {
      livenessScore: leaf(liveValue, liveVerdict),
      // A selfie of good quality as Incode's example shows it: an empty value and no status.
      photoQuality: sf && !sf.isBright ? leaf(sf.brightness.toFixed(1), 'FAIL') : sf ? { value: '' } : leaf('', 'UNKNOWN'),
      overall: leaf(liveValue, liveVerdict),
    },
    faceRecognition,
    governmentValidation,
    idOcrConfidence: { overallConfidence: s.idValidated ? leaf(pct(93, s, 5), 'OK') : leaf('', 'UNKNOWN') },
    overall: leaf(overallValue, overall),
    reasonMsg: reasonFor(overall, idVerdict, liveVerdict, faceVerdict),
  };
}

/** The overall score's value for its status: high for a pass, middling for a review, none for a blank. */
function overallValueOf(overall: string, s: Session): string {
  switch (overall) {
    case 'OK':
    case 'MANUAL_OK':
      return pct(92, s, 4);
    case 'WARN':
    case 'MANUAL_PENDING':
    case 'MANUAL':
      return pct(70, s, 4);
    case 'UNKNOWN':
      return '0.0';
    case '':
      return '';
    default:
      return pct(8, s, 4);
  }
}

function reasonFor(overall: string, id: Verdict, live: Verdict, face: Verdict): string {
  if (overall === 'MANUAL_OK') return 'Session approved in manual review';
  if (overall === 'MANUAL_FAIL') return 'Session rejected in manual review';
  if (overall === 'MANUAL_PENDING' || overall === 'MANUAL') return 'Session needs manual review';
  if (overall === '') return '';
  if (overall === 'OK') return 'Session passed ID, face and liveness checks';
  if (overall === 'UNKNOWN') return 'Session is still being processed';
  const parts: string[] = [];
  if (id === 'FAIL' || id === 'WARN') parts.push(`ID validation ${id}`);
  if (live === 'FAIL') parts.push('liveness FAIL');
  if (face === 'FAIL') parts.push('face match FAIL');
  if (id === 'UNKNOWN') parts.push('ID never validated');
  if (live === 'UNKNOWN') parts.push('no selfie');
  if (face === 'UNKNOWN') parts.push('face never matched');
  return parts.join(', ') || `Session ${overall}`;
}

/** The earlier session a duplicate "already exists" in (emu:existing-user). */
export function existingInterviewIdFor(s: Session): string {
  return seedOf(s.interviewId, 9).toString(16).padStart(8, '0') + s.interviewId.slice(8);
}

/** That earlier session's externalId (not this one's: Incode names the identity the person already has). */
export function existingExternalIdFor(s: Session): string {
  return `ext-${existingInterviewIdFor(s).slice(0, 8)}`;
}
