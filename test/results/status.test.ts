// Onboarding status ranks (only Incode's own statuses are known, nothing else ranks above UNKNOWN) and the decision.
import { decisionFor, decisionFromOverall, hasResults, isKnownStatus, isTerminal, loggedStatus, recordedStatus, statusRank } from '../../src/results/status';

describe('status ranks', () => {
  it('ranks Incode statuses so they only move forward', () => {
    expect(statusRank('UNKNOWN')).toBe(0);
    expect(statusRank('ID_VALIDATION_FINISHED')).toBe(1);
    expect(statusRank('ONBOARDING_FINISHED')).toBe(2);
    expect(statusRank('EXPIRED')).toBe(statusRank('ONBOARDING_FINISHED'));
    expect(statusRank('MANUAL_REVIEW_REJECTED')).toBe(3);
    expect(isTerminal('EXPIRED') && !hasResults('EXPIRED')).toBe(true);
  });

  // A status string comes from Incode's answers: Object.prototype's member names must not pass for statuses.
  it.each(['constructor', 'toString', '__proto__', 'hasOwnProperty', 'valueOf'])('%s is neither known nor ranked', (name) => {
    expect(isKnownStatus(name)).toBe(false);
    expect(statusRank(name)).toBe(0);
  });
});

// Incode's overall statuses (shared/incode-api.md 4.9: OK, WARN, FAIL, UNKNOWN, MANUAL, MANUAL_OK, MANUAL_FAIL,
// MANUAL_PENDING, and "" seen) and shapes it never documents: nothing but an explicit pass approves.
describe('decision from the overall score', () => {
  it.each([
    ['OK', 'approve'],
    ['MANUAL_OK', 'approve'],
    ['FAIL', 'decline'],
    ['MANUAL_FAIL', 'decline'],
    ['WARN', 'review'],
    ['UNKNOWN', 'review'],
    ['MANUAL', 'review'],
    ['MANUAL_PENDING', 'review'],
    ['', 'review'],
    ['ok', 'review'],
    [' OK', 'review'],
    [null, 'review'],
    [undefined, 'review'],
    [1, 'review'],
    [true, 'review'],
    [{ status: 'OK' }, 'review'],
    [['OK'], 'review'],
  ])('%j gives %s', (overall, decision) => {
    expect(decisionFromOverall(overall)).toBe(decision);
  });

  it('reads overall.status only, and a missing score or section is a review', () => {
    expect(decisionFor('ONBOARDING_FINISHED', { overall: { status: 'OK' } })).toBe('approve');
    expect(decisionFor('ONBOARDING_FINISHED', { overall: { value: '95.1' } as { status?: unknown } })).toBe('review');
    expect(decisionFor('ONBOARDING_FINISHED', {})).toBe('review');
    expect(decisionFor('ONBOARDING_FINISHED', null)).toBe('review');
    expect(decisionFor('ONBOARDING_FINISHED', undefined)).toBe('review');
  });

  it("a reviewer's verdict replaces the score's decision either way", () => {
    expect(decisionFor('MANUAL_REVIEW_APPROVED', { overall: { status: 'FAIL' } })).toBe('approve');
    expect(decisionFor('MANUAL_REVIEW_REJECTED', { overall: { status: 'OK' } })).toBe('decline');
    expect(decisionFor('MANUAL_REVIEW_APPROVED', null)).toBe('approve');
  });
});

describe('a status as logs and audit entries keep it', () => {
  it.each([
    ['ONBOARDING_FINISHED', 'ONBOARDING_FINISHED'],
    ['onboarding_finished', 'onboarding_finished'],
    ['MANUAL_REVIEW_APPROVED', 'MANUAL_REVIEW_VERDICT'],
    ['maria@example.com', 'OTHER'],
    ['X1234567', 'OTHER'],
    ['MARIA GONZALEZ', 'OTHER'],
    [42, 'OTHER'],
  ])('logs %j as %j', (status, logged) => expect(loggedStatus(status)).toBe(logged));

  it('keeps a status name as it is, anything else as OTHER', () => {
    expect(recordedStatus('NEW_STATUS')).toBe('NEW_STATUS');
    expect(recordedStatus('1987-02-03')).toBe('OTHER');
    expect(recordedStatus('A'.repeat(65))).toBe('OTHER');
  });
});
