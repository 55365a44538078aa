// The forward-only status machine and the session store.
import { canMove, newInterviewId, SessionStore } from '../../src/emulator/state';
import type { OnboardingStatus } from '../../src/emulator/state';
import { TimerSet } from '../../src/emulator/timer-set';

describe('status machine', () => {
  it('only moves forward', () => {
    expect(canMove('UNKNOWN', 'ID_VALIDATION_FINISHED')).toBe(true);
    expect(canMove('FACE_VALIDATION_FINISHED', 'POST_PROCESSING_FINISHED')).toBe(true);
    expect(canMove('ONBOARDING_FINISHED', 'FACE_VALIDATION_FINISHED')).toBe(false);
    expect(canMove('ONBOARDING_FINISHED', 'MANUAL_REVIEW_APPROVED')).toBe(true);
    expect(canMove('MANUAL_REVIEW_APPROVED', 'MANUAL_REVIEW_REJECTED')).toBe(false);
    expect(canMove('ONBOARDING_FINISHED', 'EXPIRED')).toBe(false);
    expect(canMove('ID_VALIDATION_FINISHED', 'EXPIRED')).toBe(true);
    expect(canMove('EXPIRED', 'ONBOARDING_FINISHED')).toBe(false);
    expect(canMove('ID_VALIDATION_FINISHED', 'UNKNOWN')).toBe(false);
  });

  it('notifies each real change once and never UNKNOWN', () => {
    const seen: OnboardingStatus[] = [];
    const timers = new TimerSet();
    const store = new SessionStore({ processingDelayMs: 0, timers });
    store.watchStatus((_s, st) => seen.push(st));
    const s = store.create({ countryCode: 'ALL' });
    expect(store.setStatus(s, 'UNKNOWN')).toBe(false);
    expect(store.setStatus(s, 'ID_VALIDATION_FINISHED')).toBe(true);
    expect(store.setStatus(s, 'ID_VALIDATION_FINISHED')).toBe(false);
    store.complete(s);
    expect(seen).toEqual(['ID_VALIDATION_FINISHED', 'ONBOARDING_FINISHED']);
    expect(store.delete(s.interviewId)).toBe(true);
    expect(store.get(s.interviewId)).toBeUndefined();
    timers.clear();
  });

  it('keeps at most maxSessions, forgetting the oldest (with its uuid) first', () => {
    const timers = new TimerSet();
    const store = new SessionStore({ processingDelayMs: 0, timers, maxSessions: 3 });
    const made = Array.from({ length: 5 }, (_, i) => store.create({ countryCode: 'ALL', uuid: `u${i}` }));
    expect(store.size).toBe(3);
    expect(made.map((m) => store.get(m.interviewId) !== undefined)).toEqual([false, false, true, true, true]);
    expect(store.getByUuid('u0')).toBeUndefined();
    expect(store.getByUuid('u4')?.interviewId).toBe(made[4].interviewId);
    timers.clear();
  });

  it('keeps at most maxCustomFieldChars of custom fields over all sessions, forgetting the oldest others first', () => {
    const timers = new TimerSet();
    const store = new SessionStore({ processingDelayMs: 0, timers, maxCustomFieldChars: 100 });
    const field = { note: 'x'.repeat(30) }; // 41 characters of JSON
    const a = store.create({ countryCode: 'ALL', customFields: field });
    const b = store.create({ countryCode: 'ALL' });
    store.setCustomFields(b, field);
    expect(store.customFieldsSize).toBe(82);
    const c = store.create({ countryCode: 'ALL' });
    // Over the budget: the oldest session goes, not the one being written.
    store.setCustomFields(c, field);
    expect([a, b, c].map((s) => store.get(s.interviewId) !== undefined)).toEqual([false, true, true]);
    expect(store.customFieldsSize).toBe(82);
    // Replacing a session's fields counts the difference; deleting it gives its share back.
    store.setCustomFields(c, { n: 1 });
    expect(store.customFieldsSize).toBe(41 + 7);
    store.delete(b.interviewId);
    expect(store.customFieldsSize).toBe(7);
    // A session forgotten while its request was being read: its write counts nothing and is not kept.
    store.delete(c.interviewId);
    expect(store.setCustomFields(c, field)).toBe(false);
    expect(store.customFieldsSize).toBe(0);
    timers.clear();
  });

  it('tells status watchers of every real move until they stop watching', () => {
    const timers = new TimerSet();
    const store = new SessionStore({ processingDelayMs: 0, timers });
    const watched: string[] = [];
    const stop = store.watchStatus((s, st) => watched.push(`${s.interviewId}:${st}`));
    const s = store.create({ countryCode: 'ALL' });
    store.setStatus(s, 'ID_VALIDATION_FINISHED');
    store.setStatus(s, 'ID_VALIDATION_FINISHED');
    stop();
    store.complete(s);
    expect(watched).toEqual([`${s.interviewId}:ID_VALIDATION_FINISHED`]);
    timers.clear();
  });

  it('makes unique 24-hex interview ids', () => {
    const ids = new Set(Array.from({ length: 1000 }, () => newInterviewId()));
    expect(ids.size).toBe(1000);
    for (const id of ids) expect(id).toMatch(/^[0-9a-f]{24}$/);
  });
});
