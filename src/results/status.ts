// Onboarding status ranks (statuses only move forward) and the decision taken from Incode's overall score.
import type { Decision } from '../store/types';

export const PROGRESS_RANK = 1;

// A Map, not an object literal: a status string from Incode must never resolve to Object.prototype's members.
const RANKS = new Map<string, number>(Object.entries({
  UNKNOWN: 0,
  ID_VALIDATION_FINISHED: PROGRESS_RANK,
  ID_VALIDATION_FINISHED_SECOND_ID: PROGRESS_RANK,
  GOVERNMENT_VALIDATION_FINISHED: PROGRESS_RANK,
  POST_PROCESSING_FINISHED: PROGRESS_RANK,
  FACE_VALIDATION_FINISHED: PROGRESS_RANK,
  ONBOARDING_FINISHED: 2,
  // EXPIRED ends a session that never finished, so it ranks with ONBOARDING_FINISHED and cannot replace it.
  EXPIRED: 2,
  MANUAL_REVIEW_APPROVED: 3,
  MANUAL_REVIEW_REJECTED: 3,
}));

export function isKnownStatus(status: string): boolean {
  return RANKS.has(status);
}

export function statusRank(status: string): number {
  return RANKS.get(status) ?? 0;
}

/** Statuses after which scores and OCR are final and worth fetching. */
export function hasResults(status: string): boolean {
  return status === 'ONBOARDING_FINISHED' || status === 'MANUAL_REVIEW_APPROVED' || status === 'MANUAL_REVIEW_REJECTED';
}

/** Nothing more will happen to a session in one of these (polling stops). */
export function isTerminal(status: string): boolean {
  return hasResults(status) || status === 'EXPIRED';
}

/** OK and MANUAL_OK approve, FAIL and MANUAL_FAIL decline, everything else (WARN included) goes to review. */
export function decisionFromOverall(overallStatus: unknown): Decision {
  if (overallStatus === 'OK' || overallStatus === 'MANUAL_OK') return 'approve';
  if (overallStatus === 'FAIL' || overallStatus === 'MANUAL_FAIL') return 'decline';
  return 'review';
}

/** The verdict status an overall score status shows a reviewer gave (MANUAL_OK, MANUAL_FAIL), or null for any other. */
export function verdictStatusOf(overallStatus: unknown): string | null {
  return overallStatus === 'MANUAL_OK' ? 'MANUAL_REVIEW_APPROVED' : overallStatus === 'MANUAL_FAIL' ? 'MANUAL_REVIEW_REJECTED' : null;
}

/**
 * A status as a log line may carry it: a reviewer's verdict is the decision itself, which with the interviewId says how
 * a person's verification ended, and logs outlive an erasure; it is logged as MANUAL_REVIEW_VERDICT.
 */
export function loggedStatus(status: unknown): unknown {
  if (typeof status === 'string' && verdictOf(status) !== null) return 'MANUAL_REVIEW_VERDICT';
  return recordedStatus(status);
}

/**
 * A status as a log line or an audit entry keeps it: Incode's status names are letters and underscores, and text of
 * any other shape a webhook or a status read may carry (a document number, an email, a date, words with spaces) is
 * kept as OTHER. A single word could still be a name: this narrows what an authenticated sender's text can put in a
 * line, it does not screen it.
 */
export function recordedStatus(status: unknown): string {
  return typeof status === 'string' && /^[A-Za-z_]{1,64}$/.test(status) ? status : 'OTHER';
}

const VERDICTS: Readonly<Record<string, Decision>> = { MANUAL_REVIEW_APPROVED: 'approve', MANUAL_REVIEW_REJECTED: 'decline' };

/** The statuses that are a reviewer's verdict: each settles the decision by itself. */
export const VERDICT_STATUSES: readonly string[] = Object.keys(VERDICTS);

/** The decision a status settles by itself (a reviewer's verdict), or null where the scores decide. */
export function verdictOf(status: string): Decision | null {
  return Object.hasOwn(VERDICTS, status) ? VERDICTS[status] : null;
}

/** A reviewer's decision replaces the automatic one. */
export function decisionFor(status: string, scores: { overall?: { status?: unknown } } | null | undefined): Decision {
  return verdictOf(status) ?? decisionFromOverall(scores?.overall?.status);
}
