// The database known to be down: what a billable start asks before it calls Incode, so an outage does not pay for sessions no one can keep.

/**
 * Set by a request that found the database not answering, cleared by a probe (the store's ping) once it answers again.
 * `down` is a field read, so the hot path asks it for nothing.
 */
export class DatabaseOutage {
  private since: number | null = null;
  private timer: NodeJS.Timeout | null = null;
  private probing = false;

  constructor(
    private readonly ping: () => Promise<void>,
    private readonly probeIntervalMs = 1000,
    private readonly now: () => number = Date.now,
  ) {}

  get down(): boolean {
    return this.since !== null;
  }

  /** When the outage was first noticed, or null. */
  get downSince(): number | null {
    return this.since;
  }

  /** A request or a check found the database not answering: probed until it does. */
  noticed(): void {
    if (this.since !== null) return;
    this.since = this.now();
    this.timer = setInterval(() => this.probe(), this.probeIntervalMs);
    // A probe must never keep a finished process alive.
    this.timer.unref();
  }

  /** The database answered (a probe, a readiness check). */
  answered(): void {
    if (this.since === null) return;
    this.since = null;
    if (this.timer) clearInterval(this.timer);
    this.timer = null;
  }

  close(): void {
    if (this.timer) clearInterval(this.timer);
    this.timer = null;
  }

  private probe(): void {
    if (this.probing) return;
    this.probing = true;
    this.ping()
      .then(
        () => this.answered(),
        () => undefined,
      )
      .finally(() => (this.probing = false));
  }
}
