// The database known to be down: what a billable start asks before it calls Incode, so an outage does not pay for sessions no one can keep.

export interface OutageEvents {
  down: () => void;
  up: (downMs: number) => void;
}

/**
 * Set by a request that found the database down, cleared by a probe (the store's ping) once it answers: the first at
 * once, so one slow statement latches it no longer than a round trip, then one a second. `down` is a field read, so
 * the hot path asks it for nothing.
 */
export class DatabaseOutage {
  private since: number | null = null;
  private timer: NodeJS.Timeout | null = null;
  private probing = false;
  private closed = false;

  constructor(
    private readonly ping: () => Promise<void>,
    private readonly events: OutageEvents,
    private readonly probeIntervalMs = 1000,
  ) {}

  get down(): boolean {
    return this.since !== null;
  }

  /** A request or a check found the database down: probed until it answers. */
  noticed(): void {
    if (this.since !== null || this.closed) return;
    this.since = Date.now();
    this.events.down();
    this.timer = setInterval(() => this.probe(), this.probeIntervalMs);
    // A probe must never keep a finished process alive.
    this.timer.unref();
    this.probe();
  }

  /** The database answered (a probe, a readiness check). */
  answered(): void {
    if (this.since === null) return;
    const downMs = Date.now() - this.since;
    this.since = null;
    this.stop();
    this.events.up(downMs);
  }

  close(): void {
    this.closed = true;
    this.stop();
  }

  private stop(): void {
    if (this.timer) clearInterval(this.timer);
    this.timer = null;
  }

  private probe(): void {
    if (this.probing || this.closed) return;
    this.probing = true;
    // A ping that throws at once (a closed pool) fails like one that rejects.
    Promise.resolve()
      .then(() => this.ping())
      .then(
        () => this.answered(),
        () => undefined,
      )
      .finally(() => (this.probing = false));
  }
}
