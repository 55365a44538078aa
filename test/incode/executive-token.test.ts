// The executive token cache: one login for many callers, renewal before expiry, no login storm after a failure.
import type { IncodeClient } from '../../src/incode/client';
import { ExecutiveTokenProvider } from '../../src/incode/executive-token';
import { IncodeError } from '../../src/incode/errors';

/** A JWT-shaped token (unsigned: the provider reads only iat and exp, as it would of Incode's). */
const jwt = (lifetimeS: number, n: number) =>
  `${Buffer.from('{"alg":"HS256"}').toString('base64url')}.${Buffer.from(JSON.stringify({ iat: 1_000_000, exp: 1_000_000 + lifetimeS, n })).toString('base64url')}.sig`;

/**
 * The provider's only collaborator is the client's executiveLogin; a stand-in that counts the logins and answers
 * what the test says (the real client's login against the emulator is tested in client.test.ts and observability).
 */
function loginCounter(answer: (n: number) => Promise<string>) {
  const calls: number[] = [];
  const client = { executiveLogin: async () => ({ token: await answer(calls.push(calls.length + 1)) }) } as unknown as IncodeClient;
  return { client, calls };
}

describe('ExecutiveTokenProvider', () => {
  const creds = { email: 'exec@example.com', password: 'pw' };

  it('renews a short-lived token before it expires, not at every call', async () => {
    const clock = { now: 0 };
    const { client, calls } = loginCounter(async (n) => jwt(1800, n));
    const p = new ExecutiveTokenProvider(client, creds, 60 * 60 * 1000, () => clock.now);
    const first = await p.get();
    for (let i = 0; i < 5; i++) expect(await p.get()).toBe(first);
    expect(calls).toHaveLength(1);
    // Renewed in the last quarter of its 30 minutes; the token still valid serves while the renewal runs.
    clock.now = 23 * 60 * 1000;
    expect(await p.get()).toBe(first);
    await new Promise((r) => setImmediate(r));
    expect(await p.get()).not.toBe(first);
    expect(calls).toHaveLength(2);
  });

  it('no caller waits on a renewal while the token still works; one whose signal aborts stops waiting for a first login', async () => {
    const clock = { now: 0 };
    const logins: ((token: string) => void)[] = [];
    const { client, calls } = loginCounter(() => new Promise<string>((r) => logins.push(r)));
    const p = new ExecutiveTokenProvider(client, creds, 60 * 60 * 1000, () => clock.now);
    // No token yet: callers wait for the login; one whose job is stopped gets a timeout at once, the others the token.
    const ac = new AbortController();
    const stopped = p.get({ signal: ac.signal });
    const waiting = p.get();
    ac.abort();
    await expect(stopped).rejects.toMatchObject({ code: 'INCODE_TIMEOUT', details: { notSent: true } });
    logins[0](jwt(24 * 3600, 1));
    const first = await waiting;
    // In the renewal window the renewal hangs (Incode slow): every caller still gets the held token at once.
    clock.now = 23.5 * 3600 * 1000;
    for (let i = 0; i < 5; i++) expect(await p.get()).toBe(first);
    expect(calls).toHaveLength(2);
    logins[1](jwt(24 * 3600, 2));
    await new Promise((r) => setImmediate(r));
    expect(await p.get()).not.toBe(first);
  });

  it('after a failed login, callers get its error (or the token still valid) instead of logging in again, for 30 s', async () => {
    const clock = { now: 0 };
    let refuse = false;
    const { client, calls } = loginCounter(async (n) => {
      if (refuse) throw new IncodeError('INCODE_UNAUTHORIZED', 'executiveLogin', 'refused', { httpStatus: 401 });
      return jwt(24 * 3600, n);
    });
    const failures: string[] = [];
    const p = new ExecutiveTokenProvider(client, creds, 60 * 60 * 1000, () => clock.now, (code) => failures.push(code));
    const held = await p.get();
    // The password was rotated: in the renewal window, the failed renewal is tried once, and the held token serves;
    // the failure is reported once (a log line), though no caller sees it.
    refuse = true;
    clock.now = 23.5 * 3600 * 1000;
    for (let i = 0; i < 10; i++) expect(await p.get()).toBe(held);
    expect(calls).toHaveLength(2);
    expect(failures).toEqual(['INCODE_UNAUTHORIZED']);
    // Expired, still refused: the error, without a login per caller.
    clock.now = 24 * 3600 * 1000 + 1;
    await expect(p.get()).rejects.toMatchObject({ code: 'INCODE_UNAUTHORIZED' });
    const afterExpiry = calls.length;
    for (let i = 0; i < 10; i++) await expect(p.get()).rejects.toMatchObject({ code: 'INCODE_UNAUTHORIZED' });
    expect(calls).toHaveLength(afterExpiry);
    // 30 s on, one more try.
    clock.now += 31_000;
    refuse = false;
    expect(await p.get()).not.toBe(held);
    expect(calls).toHaveLength(afterExpiry + 1);
  });

  it('invalidate(token) drops only that token: a newer one stored meanwhile stays', async () => {
    const clock = { now: 0 };
    const { client, calls } = loginCounter(async (n) => jwt(24 * 3600, n));
    const p = new ExecutiveTokenProvider(client, creds, 60 * 60 * 1000, () => clock.now);
    const t1 = await p.get();
    clock.now = 23.5 * 3600 * 1000;
    expect(await p.get()).toBe(t1);
    await new Promise((r) => setImmediate(r));
    const t2 = await p.get();
    expect(t2).not.toBe(t1);
    // A job that sent t1 gets a 401 for it now.
    p.invalidate(t1);
    expect(await p.get()).toBe(t2);
    expect(calls).toHaveLength(2);
    // The current one refused: dropped, and the next call logs in again.
    p.invalidate(t2);
    expect(await p.get()).not.toBe(t2);
    expect(calls).toHaveLength(3);
  });
});
