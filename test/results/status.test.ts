// Onboarding status ranks: only Incode's own statuses are known, and nothing else ranks above UNKNOWN.
import { hasResults, isKnownStatus, isTerminal, statusRank } from '../../src/results/status';

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
