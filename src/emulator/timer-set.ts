// Tracks the emulator's own timers so app close can clear them all and tests exit cleanly.

export class TimerSet {
  // Value: what to run if the set is cleared first (sleepers are released instead of left hanging).
  private readonly timers = new Map<NodeJS.Timeout, (() => void) | null>();
  private closed = false;

  /** Runs fn after ms (unref'd, so a pending timer never keeps the process alive). */
  set(fn: () => void, ms: number): void {
    if (this.closed) return;
    const t = setTimeout(() => {
      this.timers.delete(t);
      fn();
    }, Math.max(0, ms));
    t.unref();
    this.timers.set(t, null);
  }

  /** A promise that resolves after ms, or at once when the set is cleared. */
  sleep(ms: number): Promise<void> {
    return new Promise((resolve) => {
      if (this.closed) return resolve();
      const t = setTimeout(() => {
        this.timers.delete(t);
        resolve();
      }, ms);
      t.unref();
      this.timers.set(t, resolve);
    });
  }

  get size(): number {
    return this.timers.size;
  }

  clear(): void {
    this.closed = true;
    for (const [t, onClear] of this.timers) {
      clearTimeout(t);
      onClear?.();
    }
    this.timers.clear();
  }
}
