// Test values: `emu:` directives in externalCustomerId/externalId select outcomes that pixels cannot express.

/** Selfie error codes the integration guide names (section 8 of the contract), with Incode-like texts. */
export const SELFIE_ERROR_CODES: Record<number, string> = {
  100: 'Image too dark.',
  101: 'Glasses detected.',
  4010: 'Multiple faces detected.',
  4019: 'Face not found.',
  1001: 'Face cropping failure.',
  1003: 'Face cropping failure.',
  3002: 'Face cropping failure.',
  3004: 'Face cropping failure.',
  3005: 'Face too small.',
  3006: 'Selfie blurry.',
  3007: 'Selfie glare.',
  3008: 'Image size unsupported.',
  3009: 'Wrong orientation.',
  3010: 'Bad image compression.',
  4005: 'Spoof attempt detected.',
  500: 'Processing error',
  6000: 'Processing error',
};

/**
 * The envelope's text for a code: the ID-image endpoints are seen refusing with the same face codes (1003, 4019:
 * incode-api.md 4.2, FP's mapping), so one table serves both; `fallback` for a code it lacks.
 */
export function selfieErrorText(code: number, fallback = 'Selfie could not be processed.'): string {
  return SELFIE_ERROR_CODES[code] ?? fallback;
}

/** 'always' applies to every attempt; 'once' only to the first attempt of that kind. */
export type Repeat = 'always' | 'once';

export interface Directives {
  decline: boolean;
  warn: boolean;
  noMatch: boolean;
  existingUser: boolean;
  spoof?: Repeat;
  lenses: boolean;
  mask: boolean;
  /** add/face answer variants seen in the field (shared doc 4.5): hasFaceMask null (the flow does not check masks), confidence left out. */
  maskNull: boolean;
  noConfidence: boolean;
  dark: boolean;
  selfieError?: { code: number; repeat: Repeat; http?: number };
  /** add front-id / back-id answering Incode's error envelope instead of an analysis (incode-api.md 4.2: 1003, 4019). */
  idError?: { side: 'front' | 'back'; code: number; http: number };
  unknownDocument?: Repeat;
  oneSided: boolean;
  /** The HTTP status of process/id's processing error (6000), 0 when none. */
  processIdError: number;
  processFaceError: number;
  expire: boolean;
  manual?: 'approved' | 'rejected';
  /** The overall score status a finished session gets instead of its checks' verdict: the ones no check sets. */
  overall?: 'UNKNOWN' | 'MANUAL' | '';
  gov: boolean;
  noAutoFinish: boolean;
  proofOfAddress: boolean;
}

export function emptyDirectives(): Directives {
  return {
    decline: false,
    warn: false,
    noMatch: false,
    existingUser: false,
    lenses: false,
    mask: false,
    maskNull: false,
    noConfidence: false,
    dark: false,
    oneSided: false,
    processIdError: 0,
    processFaceError: 0,
    expire: false,
    gov: false,
    noAutoFinish: false,
    proofOfAddress: false,
  };
}

interface DirectiveSpec {
  /** Matched against the directive without its `emu:` prefix. */
  pattern: RegExp;
  /** Example for the docs and the tests. */
  example: string;
  description: string;
  apply: (d: Directives, m: RegExpMatchArray) => void;
}

/** The one table of directives: add a row here to add a test value, and to src/emulator/README.md (a test compares them). */
export const DIRECTIVES: readonly DirectiveSpec[] = [
  { pattern: /^decline$/, example: 'emu:decline', description: 'score: idValidation and overall FAIL; finish-status action "rejected"', apply: (d) => { d.decline = true; } },
  { pattern: /^warn$/, example: 'emu:warn', description: 'score: idValidation and overall WARN', apply: (d) => { d.warn = true; } },
  { pattern: /^no-match$/, example: 'emu:no-match', description: 'process/face confidence 0; faceRecognition.overall FAIL; overall FAIL', apply: (d) => { d.noMatch = true; } },
  { pattern: /^existing-user$/, example: 'emu:existing-user', description: 'process/face existingUser true (+ existingInterviewId); score faceRecognition.existingUser true', apply: (d) => { d.existingUser = true; } },
  { pattern: /^spoof$/, example: 'emu:spoof', description: 'add/face confidence 1 (spoof suspicion) on every selfie; liveness FAIL', apply: (d) => { d.spoof = 'always'; } },
  { pattern: /^spoof-once$/, example: 'emu:spoof-once', description: 'add/face confidence 1 on the first selfie only', apply: (d) => { d.spoof = 'once'; } },
  { pattern: /^lenses$/, example: 'emu:lenses', description: 'add/face hasLenses true', apply: (d) => { d.lenses = true; } },
  { pattern: /^mask$/, example: 'emu:mask', description: 'add/face hasFaceMask true', apply: (d) => { d.mask = true; } },
  { pattern: /^mask-null$/, example: 'emu:mask-null', description: 'add/face hasFaceMask null (a flow without the mask check)', apply: (d) => { d.maskNull = true; } },
  { pattern: /^no-confidence$/, example: 'emu:no-confidence', description: 'add/face answers without confidence (seen by a production client on a brightness problem)', apply: (d) => { d.noConfidence = true; } },
  { pattern: /^dark$/, example: 'emu:dark', description: 'add/face isBright false whatever the pixels', apply: (d) => { d.dark = true; } },
  {
    pattern: /^selfie-error-(\d{1,6})(?:-http-([45]\d\d))?(-once)?$/,
    example: 'emu:selfie-error-4019',
    description: 'add/face answers the envelope with status <code> (HTTP = code when 400-499, else 400; "-http-<nnn>" another 4xx or 5xx, as which status each code comes with is unknown); "-once" only the first selfie',
    apply: (d, m) => { d.selfieError = { code: Number(m[1]), repeat: m[3] ? 'once' : 'always', ...(m[2] ? { http: Number(m[2]) } : {}) }; },
  },
  {
    pattern: /^(front|back)-error-(\d{1,6})(?:-http-([45]\d\d))?$/,
    example: 'emu:front-error-1003',
    description: 'add front-id (or back-id) answers the envelope with status <code> under HTTP 400 ("-http-<nnn>" another 4xx or 5xx), as Incode\'s refusals of an ID image (1003, 4019) come',
    apply: (d, m) => { d.idError = { side: m[1] as 'front' | 'back', code: Number(m[2]), http: m[3] ? Number(m[3]) : 400 }; },
  },
  { pattern: /^unknown-document$/, example: 'emu:unknown-document', description: 'add front: classification false, failReason UNKNOWN_DOCUMENT_TYPE, horizontalResolution 0', apply: (d) => { d.unknownDocument = 'always'; } },
  { pattern: /^unknown-document-once$/, example: 'emu:unknown-document-once', description: 'as above, first front upload only', apply: (d) => { d.unknownDocument = 'once'; } },
  { pattern: /^one-sided$/, example: 'emu:one-sided', description: 'front: typeOfId Passport, skipBackIdCapture true; process/id needs no back', apply: (d) => { d.oneSided = true; } },
  { pattern: /^process-id-error(?:-http-([45]\d\d))?$/, example: 'emu:process-id-error', description: 'process/id answers the envelope with status 6000, HTTP 400 (or "-http-<nnn>": 500 was seen too)', apply: (d, m) => { d.processIdError = m[1] ? Number(m[1]) : 400; } },
  { pattern: /^process-face-error(?:-http-([45]\d\d))?$/, example: 'emu:process-face-error', description: 'process/face answers the envelope with status 6000, HTTP 400 (or "-http-<nnn>")', apply: (d, m) => { d.processFaceError = m[1] ? Number(m[1]) : 400; } },
  { pattern: /^expire$/, example: 'emu:expire', description: 'once processing is done the status goes to EXPIRED instead of ONBOARDING_FINISHED', apply: (d) => { d.expire = true; } },
  { pattern: /^manual-approved$/, example: 'emu:manual-approved', description: 'after ONBOARDING_FINISHED: MANUAL_REVIEW_APPROVED; score overall MANUAL_PENDING then MANUAL_OK', apply: (d) => { d.manual = 'approved'; } },
  { pattern: /^manual-rejected$/, example: 'emu:manual-rejected', description: 'after ONBOARDING_FINISHED: MANUAL_REVIEW_REJECTED; score overall MANUAL_PENDING then MANUAL_FAIL', apply: (d) => { d.manual = 'rejected'; } },
  {
    pattern: /^no-auto-finish$/,
    example: 'emu:no-auto-finish',
    description:
      'a flow without "mark completed on status": processing done leaves the last module status (e.g. FACE_VALIDATION_FINISHED) until finish-status is called; a call before processing ends completes the session when it ends',
    apply: (d) => { d.noAutoFinish = true; },
  },
  {
    pattern: /^proof-of-address$/,
    example: 'emu:proof-of-address',
    description:
      'OCR also carries a proof of address: addressFromStatement, addressFieldsFromStatement (and addressFromStatementFields), invalidAddressFromStatement, addressStatementEmissionDate, documentType UTILITY_BILL',
    apply: (d) => { d.proofOfAddress = true; },
  },
  {
    pattern: /^overall-(unknown|manual|blank)$/,
    example: 'emu:overall-blank',
    description: 'score: overall status UNKNOWN, MANUAL or "" (blank, seen in the field) once ONBOARDING_FINISHED, whatever the checks gave',
    apply: (d, m) => { d.overall = m[1] === 'blank' ? '' : (m[1].toUpperCase() as 'UNKNOWN' | 'MANUAL'); },
  },
  { pattern: /^gov$/, example: 'emu:gov', description: 'ID processing also emits GOVERNMENT_VALIDATION_FINISHED; score governmentValidation filled', apply: (d) => { d.gov = true; } },
];

const PREFIX = 'emu:';

/** Parses every `emu:` word of the given ids; unknown directives are listed so the caller may reject them. */
export function parseDirectives(...ids: Array<string | undefined>): { directives: Directives; unknown: string[] } {
  const directives = emptyDirectives();
  const unknown: string[] = [];
  for (const id of ids) {
    // Cheap early exit: start is the hot path and almost no id carries directives.
    // Any case (EMU:WARN is emu:warn): a value that looks like a directive is never silently ignored.
    if (!id || !id.toLowerCase().includes(PREFIX)) continue;
    for (const word of id.split(/[\s,]+/)) {
      if (!word.toLowerCase().startsWith(PREFIX)) continue;
      const name = word.slice(PREFIX.length).toLowerCase();
      let matched = false;
      for (const spec of DIRECTIVES) {
        const m = name.match(spec.pattern);
        if (m) {
          spec.apply(directives, m);
          matched = true;
          break;
        }
      }
      if (!matched) unknown.push(word);
    }
  }
  return { directives, unknown };
}

/** The id without its directives, e.g. for display. */
export function stripDirectives(id: string): string {
  return id
    .split(/[\s,]+/)
    .filter((w) => w && !w.startsWith(PREFIX))
    .join(' ');
}
