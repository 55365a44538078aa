// Session store and the forward-only onboarding status machine, with the async processing timers.
import { randomBytes } from 'node:crypto';
import type { Directives } from './test-values';
import { emptyDirectives } from './test-values';
import type { TimerSet } from './timer-set';

export const ONBOARDING_STATUSES = [
  'UNKNOWN',
  'ID_VALIDATION_FINISHED',
  'ID_VALIDATION_FINISHED_SECOND_ID',
  'GOVERNMENT_VALIDATION_FINISHED',
  'POST_PROCESSING_FINISHED',
  'FACE_VALIDATION_FINISHED',
  'ONBOARDING_FINISHED',
  'MANUAL_REVIEW_APPROVED',
  'MANUAL_REVIEW_REJECTED',
  'EXPIRED',
] as const;
export type OnboardingStatus = (typeof ONBOARDING_STATUSES)[number];

// Progress statuses share one rank (Incode does not fix their order); the latest wins within it.
const RANK: Record<OnboardingStatus, number> = {
  UNKNOWN: 0,
  ID_VALIDATION_FINISHED: 1,
  ID_VALIDATION_FINISHED_SECOND_ID: 1,
  GOVERNMENT_VALIDATION_FINISHED: 1,
  POST_PROCESSING_FINISHED: 1,
  FACE_VALIDATION_FINISHED: 1,
  ONBOARDING_FINISHED: 2,
  MANUAL_REVIEW_APPROVED: 3,
  MANUAL_REVIEW_REJECTED: 3,
  EXPIRED: 3,
};

/** Whether a session may move from one status to another (statuses only move forward). */
export function canMove(from: OnboardingStatus, to: OnboardingStatus): boolean {
  if (from === to || to === 'UNKNOWN') return false;
  if (RANK[from] === 3) return false; // manual decisions and EXPIRED are final
  if (to === 'EXPIRED') return RANK[from] < 2; // only a session that never finished expires
  if (RANK[to] === 3) return RANK[from] >= 1; // a review decides a session that got somewhere
  return RANK[to] >= RANK[from];
}

/** What an ID capture left behind: numbers only, never the image (sessions must stay small). */
export interface CaptureRecord {
  classification: boolean;
  failReason: string | null;
  sharpness: number;
  glare: number;
  horizontalResolution: number;
  typeOfId: string;
  /** One-sided document (or onlyFront=true): process/id needs no back. */
  skipBack?: boolean;
}

export interface SelfieRecord {
  spoof: boolean;
  isBright: boolean;
  hasLenses: boolean;
  hasFaceMask: boolean;
  age: number;
  brightness: number;
}

/** 0 = not started, 1 = running, 2 = done. */
export type Phase = 0 | 1 | 2;

export interface Session {
  interviewId: string;
  interviewCode: string;
  createdAt: number;
  /** 'ALL' or ISO3. */
  countryCode: string;
  configurationId?: string;
  externalCustomerId?: string;
  externalId?: string;
  language?: string;
  redirectionUrl?: string;
  uuid?: string;
  customFields?: CustomFields;
  directives: Directives;
  status: OnboardingStatus;
  front?: CaptureRecord;
  back?: CaptureRecord;
  frontAttempts: number;
  selfie?: SelfieRecord;
  selfieAttempts: number;
  idPhase: Phase;
  /** ID validation done: OCR and ID scores are readable (before post-processing ends). */
  idValidated?: boolean;
  facePhase: Phase;
  faceMatch?: boolean;
  finishScheduled?: boolean;
  /** finish-status was called (a flow without "mark completed on status" completes only then). */
  finishRequested?: boolean;
  reviewScheduled?: boolean;
  finishedAt?: number;
  approvedCustomerId?: string;
}

// Shared by every session without directives, so 100k plain sessions do not carry 100k copies.
const NO_DIRECTIVES: Directives = Object.freeze(emptyDirectives()) as Directives;

type StatusListener = (s: Session, status: OnboardingStatus) => void;

/** Incode's custom fields: flat key/value metadata (incode-api.md 4.1), so a session's are a few kilobytes at most. */
export type CustomFields = Readonly<Record<string, string | number | boolean | null>>;

const charsOf = (f: CustomFields | undefined): number => (f ? JSON.stringify(f).length : 0);

/** Custom fields of every session together, in characters of JSON: past it, the oldest sessions are forgotten. */
const MAX_CUSTOM_FIELD_CHARS = 64 * 1024 * 1024;

export interface StoreOptions {
  processingDelayMs: number;
  timers: TimerSet;
  /** The most sessions kept; past it the oldest are forgotten (as if Incode had deleted them). */
  maxSessions?: number;
  /** The most characters of custom-field JSON kept over all sessions (each session's are capped by the API too). */
  maxCustomFieldChars?: number;
}

/**
 * Half a million sessions, a few hundred MB: more than any test or benchmark run makes, and a bound for an emulator left
 * running (the sandbox's, on a reachable HOST) that anyone can start sessions on.
 */
const MAX_SESSIONS = 500_000;

// ObjectId-like ids (time + per-process random + counter): unique, 24 hex, and free to make.
const PROCESS_PART = randomBytes(5).toString('hex');
let counter = randomBytes(3).readUIntBE(0, 3);
const CODE_ALPHABET = 'ABCDEFGHJKLMNPQRSTUVWXYZ23456789';

export function newInterviewId(): string {
  counter = (counter + 1) & 0xffffff;
  const t = Math.floor(Date.now() / 1000)
    .toString(16)
    .padStart(8, '0');
  return t + PROCESS_PART + counter.toString(16).padStart(6, '0');
}

function interviewCodeFor(id: string): string {
  let n = parseInt(id.slice(-10), 16);
  let code = '';
  for (let i = 0; i < 6; i++) {
    code += CODE_ALPHABET[n % CODE_ALPHABET.length];
    n = Math.floor(n / CODE_ALPHABET.length);
  }
  return code;
}

/** ID and face processing both done (what finish-status and the automatic finish wait for). */
const isProcessed = (s: Session): boolean => s.idPhase === 2 && s.facePhase === 2;
const isProcessing = (s: Session): boolean => s.idPhase === 1 || s.facePhase === 1;

export type NewSession = Omit<
  Session,
  'interviewId' | 'interviewCode' | 'createdAt' | 'status' | 'frontAttempts' | 'selfieAttempts' | 'idPhase' | 'facePhase' | 'directives'
> & { directives?: Directives };

export class SessionStore {
  readonly sessions = new Map<string, Session>();
  private readonly byUuid = new Map<string, string>();
  private customFieldChars = 0;
  // Who hears of status moves: the webhook sender, and tests that must see a status lasting only a few ms.
  private readonly watchers = new Set<StatusListener>();

  constructor(private readonly opts: StoreOptions) {}

  /** Calls fn on every real status move; returns the function that stops it. */
  watchStatus(fn: StatusListener): () => void {
    this.watchers.add(fn);
    return () => void this.watchers.delete(fn);
  }

  get size(): number {
    return this.sessions.size;
  }

  create(init: NewSession): Session {
    const interviewId = newInterviewId();
    const s: Session = {
      ...init,
      customFields: undefined,
      directives: init.directives ?? NO_DIRECTIVES,
      interviewId,
      interviewCode: interviewCodeFor(interviewId),
      createdAt: Date.now(),
      status: 'UNKNOWN',
      frontAttempts: 0,
      selfieAttempts: 0,
      idPhase: 0,
      facePhase: 0,
    };
    // The oldest first: a Map iterates in insertion order.
    const max = this.opts.maxSessions ?? MAX_SESSIONS;
    while (this.sessions.size >= max) this.delete(this.sessions.keys().next().value as string);
    this.sessions.set(interviewId, s);
    if (s.uuid) this.byUuid.set(s.uuid, interviewId);
    if (init.customFields) this.setCustomFields(s, init.customFields);
    return s;
  }

  /**
   * Sets a session's custom fields. Sessions are kept in memory, and anyone who can start them can fill each one's
   * fields to the API's cap: past the store's budget the oldest other sessions are forgotten, as past maxSessions.
   */
  setCustomFields(s: Session, fields: CustomFields | undefined): boolean {
    // Forgotten meanwhile (its request was read before its body arrived): nothing to count, and nothing to keep.
    if (this.sessions.get(s.interviewId) !== s) return false;
    this.customFieldChars += charsOf(fields) - charsOf(s.customFields);
    s.customFields = fields;
    const budget = this.opts.maxCustomFieldChars ?? MAX_CUSTOM_FIELD_CHARS;
    for (const id of this.sessions.keys()) {
      if (this.customFieldChars <= budget) break;
      if (id !== s.interviewId) this.delete(id);
    }
    return true;
  }

  /** Characters of custom-field JSON held over all sessions. */
  get customFieldsSize(): number {
    return this.customFieldChars;
  }

  get(id: string | undefined): Session | undefined {
    return id ? this.sessions.get(id) : undefined;
  }

  delete(id: string): boolean {
    const s = this.sessions.get(id);
    if (!s) return false;
    if (s.uuid) this.byUuid.delete(s.uuid);
    this.customFieldChars -= charsOf(s.customFields);
    return this.sessions.delete(id);
  }

  getByUuid(uuid: string | undefined): Session | undefined {
    return uuid ? this.get(this.byUuid.get(uuid)) : undefined;
  }

  /** Moves the status if the machine allows it; notifies (webhook) only on a real change. */
  setStatus(s: Session, status: OnboardingStatus): boolean {
    if (!canMove(s.status, status)) return false;
    s.status = status;
    if (status === 'ONBOARDING_FINISHED') s.finishedAt = Date.now();
    for (const fn of this.watchers) fn(s, status);
    return true;
  }

  /** process/id: ID validation, then (optionally) government validation, then post-processing. */
  startIdProcessing(s: Session): void {
    s.idPhase = 1;
    const d = this.opts.processingDelayMs;
    this.opts.timers.set(() => {
      s.idValidated = true;
      this.setStatus(s, 'ID_VALIDATION_FINISHED');
      if (s.directives.gov) this.setStatus(s, 'GOVERNMENT_VALIDATION_FINISHED');
      this.opts.timers.set(() => {
        this.setStatus(s, 'POST_PROCESSING_FINISHED');
        s.idPhase = 2;
        this.maybeFinish(s);
      }, Math.round(d / 2));
    }, d);
  }

  startFaceProcessing(s: Session): void {
    s.facePhase = 1;
    this.opts.timers.set(() => {
      s.facePhase = 2;
      this.setStatus(s, 'FACE_VALIDATION_FINISHED');
      this.maybeFinish(s);
    }, this.opts.processingDelayMs);
  }

  /**
   * finish-status marks the session completed whatever was captured (Incode then scores what it has); one still
   * processing completes as soon as that processing ends.
   */
  requestFinish(s: Session): void {
    s.finishRequested = true;
    if (!isProcessing(s)) this.complete(s);
  }

  private maybeFinish(s: Session): void {
    if (isProcessing(s)) return;
    if (s.finishRequested) {
      this.complete(s);
      return;
    }
    if (!isProcessed(s) || s.finishScheduled) return;
    // A flow without "mark completed on status" waits for finish-status (a session left unfinished still expires).
    if (s.directives.noAutoFinish && !s.directives.expire) return;
    s.finishScheduled = true;
    this.opts.timers.set(() => this.complete(s), this.opts.processingDelayMs);
  }

  /** Ends the flow: ONBOARDING_FINISHED (or EXPIRED by test value), then a scheduled manual review if asked. */
  complete(s: Session): void {
    if (s.directives.expire) {
      this.setStatus(s, 'EXPIRED');
      return;
    }
    this.setStatus(s, 'ONBOARDING_FINISHED');
    const manual = s.directives.manual;
    if (manual && !s.reviewScheduled && s.status === 'ONBOARDING_FINISHED') {
      s.reviewScheduled = true;
      this.opts.timers.set(
        () => this.setStatus(s, manual === 'approved' ? 'MANUAL_REVIEW_APPROVED' : 'MANUAL_REVIEW_REJECTED'),
        this.opts.processingDelayMs,
      );
    }
  }
}
