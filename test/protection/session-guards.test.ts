// The guards' pure rules: when an Idempotency-Key claim's start may still go out, and how customer ids fold.
import type { Config } from '../../src/config';
import { claimDeadlines, foldCustomerId } from '../../src/protection/session-guards';

const config = (timeoutMs: number, idempotencyTtlSeconds: number) =>
  ({ idempotencyTtlSeconds, incode: { timeoutMs } }) as unknown as Pick<Config, 'idempotencyTtlSeconds' | 'incode'>;

describe('claimDeadlines', () => {
  it.each([
    [15_000, 86_400],
    [100, 86_400],
    [60_000, 86_400],
    [300_000, 86_400],
    [15_000, 90],
    // A TTL shorter than a start could take does not shorten the pending claim: the start keeps its send deadline.
    [15_000, 1],
    [60_000, 120],
  ])('a start sent at its deadline ends before the claim lapses, its headers and its body each taking the whole timeout (INCODE_TIMEOUT_MS %i, TTL %i s)', (timeoutMs, ttl) => {
    const now = 1_000_000;
    const { leaseExpiresAt, sendBefore } = claimDeadlines(config(timeoutMs, ttl), now);
    expect(leaseExpiresAt).toBeGreaterThanOrEqual(now + Math.max(60_000, 4 * timeoutMs));
    expect(sendBefore).toBeGreaterThan(now);
    expect(sendBefore + 2 * timeoutMs).toBeLessThan(leaseExpiresAt);
  });
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
