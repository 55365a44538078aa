// Incode Omni API payload types, as published (see shared/incode-api.md); unknown fields are kept.

export const ONBOARDING_STATUSES = [
  'UNKNOWN',
  'ID_VALIDATION_FINISHED',
  'ID_VALIDATION_FINISHED_SECOND_ID',
  'POST_PROCESSING_FINISHED',
  'FACE_VALIDATION_FINISHED',
  'GOVERNMENT_VALIDATION_FINISHED',
  'ONBOARDING_FINISHED',
  'MANUAL_REVIEW_APPROVED',
  'MANUAL_REVIEW_REJECTED',
  'EXPIRED',
] as const;
export type OnboardingStatus = (typeof ONBOARDING_STATUSES)[number];

export interface StartRequest {
  countryCode?: string;
  configurationId?: string;
  externalCustomerId?: string;
  language?: string;
  redirectionUrl?: string;
  /** An existing session: Incode answers a fresh token for it. */
  interviewId?: string;
  customFields?: Record<string, string>;
}

export interface StartResponse {
  token: string;
  interviewId: string;
  interviewCode?: string;
  flowType?: string;
  idCaptureTimeout?: number;
  idCaptureRetries?: number;
  selfieCaptureTimeout?: number;
  selfieCaptureRetries?: number;
  curpValidationRetries?: number;
  clientId?: string;
  env?: string;
  existingSession?: boolean;
  [k: string]: unknown;
}

export interface AddIdResponse {
  classification: boolean;
  failReason?: string | null;
  sharpness: number;
  glare: number;
  horizontalResolution: number;
  readability?: boolean;
  typeOfId?: string;
  sessionStatus?: string;
  issueName?: string;
  issueYear?: number;
  countryCode?: string;
  correctGlare?: boolean;
  correctSharpness?: boolean;
  skipBackIdCapture?: boolean;
  [k: string]: unknown;
}

export interface ProcessIdResponse {
  success: boolean;
  [k: string]: unknown;
}

export interface AddFaceResponse {
  confidence?: number;
  isBright?: boolean;
  hasLenses?: boolean;
  hasFaceMask?: boolean | null;
  age?: number;
  sessionStatus?: unknown;
  [k: string]: unknown;
}

export interface ProcessFaceResponse {
  confidence: number;
  existingUser?: boolean;
  existingInterviewId?: string;
  existingExternalId?: string;
  nameMatched?: boolean;
  [k: string]: unknown;
}

export interface OnboardingStatusResponse {
  onboardingStatus: OnboardingStatus | string;
  [k: string]: unknown;
}

export interface PostProcessFinishedResponse {
  finished: boolean;
  [k: string]: unknown;
}

export interface FinishStatusResponse {
  redirectionUrl?: string | null;
  customerId?: string | null;
  action?: string;
  [k: string]: unknown;
}

export interface ValueStatusKey {
  value?: string | null;
  status?: string;
  key?: string;
  name?: string;
}

export interface ScoreResponse {
  idValidation?: Record<string, unknown>;
  liveness?: Record<string, unknown>;
  faceRecognition?: Record<string, unknown>;
  governmentValidation?: Record<string, unknown> | null;
  idOcrConfidence?: Record<string, unknown>;
  overall?: ValueStatusKey;
  reasonMsg?: string;
  [k: string]: unknown;
}

export type OcrDataResponse = Record<string, unknown> & {
  name?: Record<string, string>;
  address?: string;
  addressFields?: Record<string, string>;
  typeOfId?: string;
  /** Proof-of-address module: the statement's address, and which kind of document it was. */
  addressFromStatement?: string;
  addressFieldsFromStatement?: Record<string, string>;
  /** The integration guide's name for addressFieldsFromStatement. */
  addressFromStatementFields?: Record<string, string>;
  documentType?: string;
};

/** DELETE /omni/interview: the samples read a JSON body; its fields are not documented (shared doc 3). */
export interface DeleteInterviewResponse {
  success?: boolean;
  [k: string]: unknown;
}

export interface OnboardingUrlResponse {
  url: string;
}

export interface ExecutiveLoginResponse {
  token: string;
}

/** Incode's error envelope (4xx/5xx). `status` is Incode's own code or the HTTP code. */
export interface IncodeErrorBody {
  timestamp?: number;
  status?: number;
  error?: string;
  message?: string;
  path?: string;
}

/** Body Incode POSTs to the onboarding-status webhook URL. */
export interface OnboardingStatusWebhook {
  interviewId: string;
  onboardingStatus: string;
  externalId?: unknown;
  clientId?: unknown;
  flowId?: unknown;
  [k: string]: unknown;
}
