// Waits for promises to settle, but no longer than a deadline: shutdown steps that must not hold the process forever.

/** After a shutdown's grace, how long stopped work gets to record that it stopped (a job handed back, a step). */
export const STOP_WIND_DOWN_MS = 2_000;

/** true when every promise settled within `ms`; false when the time ran out first (they go on unawaited). */
export async function settledWithin(promises: Iterable<Promise<unknown>>, ms: number): Promise<boolean> {
  const all = [...promises];
  if (all.length === 0) return true;
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<false>((resolve) => {
    timer = setTimeout(() => resolve(false), ms);
    timer.unref();
  });
  try {
    return await Promise.race([Promise.allSettled(all).then(() => true as const), timeout]);
  } finally {
    clearTimeout(timer);
  }
}

/**
 * `p`, or the error `stopped` makes as soon as `signal` aborts: a caller that is stopped (a job's deadline, a shutdown)
 * stops waiting for work shared with others, which goes on for them.
 */
export function untilAborted<T>(p: Promise<T>, signal: AbortSignal | undefined, stopped: () => Error): Promise<T> {
  if (!signal) return p;
  return new Promise<T>((resolve, reject) => {
    const onAbort = () => reject(stopped());
    // Handled first, so a `p` that fails after an abort is never an unhandled rejection.
    p.then(
      (v) => (signal.removeEventListener('abort', onAbort), resolve(v)),
      (e: unknown) => (signal.removeEventListener('abort', onAbort), reject(e)),
    );
    if (signal.aborted) return onAbort();
    signal.addEventListener('abort', onAbort, { once: true });
  });
}
