// Bounded polling for tests, with no dependency on the app (the emulator's tests use it too).

/**
 * Polls fn until it returns a truthy value or the deadline passes (bounded wait, no fixed sleeps). A thrown error
 * (a server not up yet) is retried, except a failed `expect`: an assertion inside fn fails the test at once.
 */
export async function waitFor<T>(fn: () => Promise<T | undefined | null | false> | T | undefined | null | false, timeoutMs = 10_000, stepMs = 50): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  let last: unknown;
  while (Date.now() < deadline) {
    try {
      const v = await fn();
      if (v) return v;
    } catch (err) {
      if (err && typeof err === 'object' && 'matcherResult' in err) throw err;
      last = err;
    }
    await new Promise((r) => setTimeout(r, stepMs));
  }
  throw new Error(`waitFor timed out after ${timeoutMs} ms${last ? `: ${(last as Error).message}` : ''}`);
}
