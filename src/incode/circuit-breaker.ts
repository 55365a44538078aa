// A consecutive-failure circuit breaker: fail fast while Incode is down, probe once to recover.

export type CircuitState = 'closed' | 'open' | 'half-open';

export interface CircuitOptions {
  failureThreshold: number;
  resetMs: number;
  onStateChange?: (state: CircuitState) => void;
  now?: () => number;
}

export class CircuitBreaker {
  private failures = 0;
  private openedAt = 0;
  private probing = false;
  private probeTicket = 0;
  private current: CircuitState = 'closed';
  private readonly now: () => number;

  constructor(private readonly opts: CircuitOptions) {
    // Monotonic: the wall clock stepped back by NTP would hold the circuit open for the step's length on top.
    this.now = opts.now ?? (() => performance.now());
  }

  get state(): CircuitState {
    return this.current;
  }

  /**
   * ms until a call may be tried, 0 when one may go now (or the half-open probe is due), without taking the probe.
   * Half-open with its probe in flight is not "now" either: nothing else goes until the probe answers.
   */
  get retryInMs(): number {
    if (this.current === 'open') return Math.max(0, this.openedAt + this.opts.resetMs - this.now());
    return this.current === 'half-open' && this.probing ? 1 : 0;
  }

  /**
   * `wait`: ms until a call may be tried, 0 when one may go now. A call that goes as the half-open probe gets a
   * non-zero `probe` ticket, which only it can hand back (abandoned).
   */
  acquire(): { wait: number; probe: number } {
    if (this.current === 'closed') return { wait: 0, probe: 0 };
    const wait = this.retryInMs;
    if (this.current === 'open' && wait <= 0) this.set('half-open');
    if (this.current === 'half-open' && !this.probing) {
      this.probing = true;
      return { wait: 0, probe: ++this.probeTicket };
    }
    return { wait: Math.max(wait, 1), probe: 0 };
  }

  success(): void {
    this.failures = 0;
    this.probing = false;
    if (this.current !== 'closed') this.set('closed');
  }

  /**
   * A failed call. Once the circuit has opened only the probe's failure counts (its ticket): a call let through
   * before it opened and failing late says nothing new, and must not free the probe slot while the probe is still out.
   */
  failure(probe = 0): void {
    if (this.current !== 'closed' && !this.isProbe(probe)) return;
    this.probing = false;
    this.failures += 1;
    if (this.current === 'half-open' || this.failures >= this.opts.failureThreshold) {
      this.openedAt = this.now();
      if (this.current !== 'open') this.set('open');
    }
  }

  /**
   * An answer that proves Incode up without saying the calls work (a capture to repeat): as the half-open probe it
   * closes the circuit; any other call leaves the count alone, so it cannot undo failures building up around it.
   */
  answered(probe: number): void {
    if (this.isProbe(probe)) this.success();
  }

  /**
   * A call this service gave up on itself (its deadline, a shutdown) says nothing about Incode: if it was the probe
   * (its ticket is the current one), the slot is free again; any other call leaves the probe in flight alone.
   */
  abandoned(probe: number): void {
    if (this.isProbe(probe)) this.probing = false;
  }

  /** Whether this ticket is the probe in flight (or the last one sent): 0 is any other call's. */
  private isProbe(probe: number): boolean {
    return probe !== 0 && probe === this.probeTicket;
  }

  private set(s: CircuitState): void {
    this.current = s;
    this.opts.onStateChange?.(s);
  }
}
