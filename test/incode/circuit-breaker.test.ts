// The circuit breaker's states, its single half-open probe, and calls abandoned by this service.
import { CircuitBreaker } from '../../src/incode/circuit-breaker';

function breaker() {
  let t = 1000;
  const states: string[] = [];
  const cb = new CircuitBreaker({ failureThreshold: 2, resetMs: 100, now: () => t, onStateChange: (s) => states.push(s) });
  return { cb, states, advance: (ms: number) => (t += ms) };
}

describe('CircuitBreaker', () => {
  it('opens after consecutive failures, lets one probe through after the reset time, and closes on its success', () => {
    const { cb, states, advance } = breaker();
    expect(cb.acquire()).toEqual({ wait: 0, probe: 0 });
    cb.failure();
    cb.failure();
    expect(cb.state).toBe('open');
    expect(cb.acquire().wait).toBe(100);
    advance(100);
    const probe = cb.acquire();
    expect(probe).toEqual({ wait: 0, probe: expect.any(Number) });
    expect(probe.probe).toBeGreaterThan(0);
    // Only one probe at a time.
    expect(cb.acquire().wait).toBeGreaterThan(0);
    cb.success();
    expect(cb.state).toBe('closed');
    expect(states).toEqual(['open', 'half-open', 'closed']);
  });

  it('a probe abandoned by this service frees the slot; another abandoned call does not free the probe in flight', () => {
    const { cb, advance } = breaker();
    cb.failure();
    cb.failure();
    advance(100);
    const first = cb.acquire();
    cb.abandoned(first.probe);
    // The abandoned probe said nothing about Incode: the next call probes, still half-open, not reopened.
    expect(cb.state).toBe('half-open');
    const second = cb.acquire();
    expect(second.wait).toBe(0);
    expect(second.probe).not.toBe(first.probe);
    // A call that was not the probe (started before the circuit opened), or the old ticket, leaves the live probe alone.
    cb.abandoned(0);
    cb.abandoned(first.probe);
    expect(cb.acquire().wait).toBeGreaterThan(0);
    cb.failure(second.probe);
    expect(cb.state).toBe('open');
  });

  it("a late failure of a call let through before the circuit opened neither reopens it nor frees the probe's slot", () => {
    const { cb, states, advance } = breaker();
    cb.failure();
    cb.failure();
    // Still open: a late failure does not push the reset further.
    advance(60);
    cb.failure(0);
    advance(40);
    const probe = cb.acquire();
    expect(probe.probe).toBeGreaterThan(0);
    cb.failure(0);
    expect(cb.state).toBe('half-open');
    // One probe at a time, still: nothing else goes, and work waiting on the circuit (circuitWait) is told to wait.
    expect(cb.acquire().wait).toBeGreaterThan(0);
    expect(cb.retryInMs).toBeGreaterThan(0);
    cb.failure(probe.probe);
    expect(cb.state).toBe('open');
    expect(states).toEqual(['open', 'half-open', 'open']);
  });

  it('retryInMs: 0 when a call may go, the probe included; above 0 while open or while the half-open probe is out', () => {
    const { cb, advance } = breaker();
    expect(cb.retryInMs).toBe(0);
    cb.failure();
    cb.failure();
    expect(cb.retryInMs).toBe(100);
    advance(100);
    expect(cb.retryInMs).toBe(0);
    const probe = cb.acquire();
    expect(cb.retryInMs).toBeGreaterThan(0);
    cb.abandoned(probe.probe);
    expect(cb.retryInMs).toBe(0);
  });

  it('measures its reset time on a monotonic clock: the wall clock stepped back an hour does not hold it open an hour longer', () => {
    let wall = Date.now();
    const spy = jest.spyOn(Date, 'now').mockImplementation(() => wall);
    try {
      const cb = new CircuitBreaker({ failureThreshold: 1, resetMs: 10_000 });
      cb.failure();
      wall -= 3_600_000;
      expect(cb.retryInMs).toBeGreaterThan(0);
      expect(cb.retryInMs).toBeLessThanOrEqual(10_000);
    } finally {
      spy.mockRestore();
    }
  });
});
