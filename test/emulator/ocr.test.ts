// The emulator's synthetic document: its dates agree with its scores in any year the emulator runs.
import { buildOcr } from '../../src/emulator/ocr';
import { newInterviewId, type Session } from '../../src/emulator/state';
import { emptyDirectives } from '../../src/emulator/test-values';

function session(createdAt: number, decline = false): Session {
  const directives = { ...emptyDirectives(), decline };
  return { interviewId: newInterviewId(), createdAt, countryCode: 'ALL', idValidated: true, directives } as unknown as Session;
}

const YEAR = 365.25 * 86_400_000;

describe('emulator OCR document dates', () => {
  test.each([Date.UTC(2026, 10, 27), Date.UTC(2031, 0, 1), Date.UTC(2040, 1, 29)])('a passing session shows a valid ten-year document (session at %d)', (createdAt) => {
    for (let i = 0; i < 400; i++) {
      const ocr = buildOcr(session(createdAt));
      const issued = new Date(Number(ocr.issuedAt));
      const expires = new Date(Number(ocr.expireAt));
      expect(issued.getTime()).toBeLessThan(createdAt);
      expect(createdAt - issued.getTime()).toBeLessThan(9 * YEAR);
      // Ten years to the day (no leap-day drift), and after the session.
      expect([expires.getUTCFullYear(), expires.getUTCMonth(), expires.getUTCDate()]).toEqual([issued.getUTCFullYear() + 10, issued.getUTCMonth(), issued.getUTCDate()]);
      expect(expires.getTime()).toBeGreaterThan(createdAt);
      expect(ocr.issueDate).toBe(issued.getUTCFullYear());
      expect(ocr.expirationDate).toBe(expires.getUTCFullYear());
    }
  });

  test('an emu:decline session shows an expired document, as its documentExpired FAIL says', () => {
    const createdAt = Date.UTC(2026, 10, 27);
    for (let i = 0; i < 200; i++) expect(Number(buildOcr(session(createdAt, true)).expireAt)).toBeLessThan(createdAt);
  });
});
