// The guards' pure rules: when an Idempotency-Key claim's start may still go out, and how customer ids fold.
import type { Config } from '../../src/config';
import { claimDeadlines, foldCustomerId } from '../../src/protection/session-guards';

const config = (timeoutMs: number) => ({ incode: { timeoutMs } }) as unknown as Pick<Config, 'incode'>;

describe('claimDeadlines', () => {
  // The TTL is no input: a short one cannot shorten the pending claim (the route test shows a retry past it waits).
  it.each([15_000, 100, 60_000, 300_000])(
    'a start sent at its deadline ends before the claim lapses, its headers and its body each taking the whole timeout (INCODE_TIMEOUT_MS %i)',
    (timeoutMs) => {
      const now = 1_000_000;
      const { leaseExpiresAt, sendBefore } = claimDeadlines(config(timeoutMs), now);
      expect(leaseExpiresAt).toBe(now + Math.max(60_000, 4 * timeoutMs));
      expect(sendBefore).toBeGreaterThan(now);
      expect(sendBefore + 2 * timeoutMs).toBeLessThan(leaseExpiresAt);
    },
  );
});

describe('foldCustomerId', () => {
  it('spells one customer one way: case, compatibility forms, invisible characters wherever they sit', () => {
    const jose = foldCustomerId('José');
    for (const id of ['JOSÉ', 'JOSE\u0301', 'Jose\u200b\u0301', 'jose\u034f\u0301', ' jos\u00e9\u2060 ', 'ｊｏｓé']) expect(foldCustomerId(id)).toBe(jose);
    expect(foldCustomerId('Straße')).toBe(foldCustomerId('STRASSE'));
    expect(foldCustomerId('STRAẞE')).toBe(foldCustomerId('strasse'));
    expect(foldCustomerId('victim\ufe0f')).toBe('victim');
    expect(foldCustomerId('josef')).not.toBe(jose);
  });
});
