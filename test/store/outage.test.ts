// The database-outage latch: probed at once and then each interval, cleared by the first answer, inert once closed.
import { DatabaseOutage } from '../../src/store/outage';
import { waitFor } from '../helpers/wait';

/** A latch probing every 20 ms with `answer` (by default the database answers), counting its pings and events. */
function latch(answer: (ping: number) => Promise<void> = async () => undefined) {
  const seen = { pings: 0, events: [] as string[] };
  const outage = new DatabaseOutage(() => answer(++seen.pings), { down: () => seen.events.push('down'), up: () => seen.events.push('up') }, 20);
  return { outage, seen };
}

describe('DatabaseOutage', () => {
  it('probes at once: a database that answers clears it within one round trip, and says so once each way', async () => {
    const { outage, seen } = latch();
    outage.noticed();
    outage.noticed();
    expect(outage.down).toBe(true);
    await waitFor(() => !outage.down, 5000, 1);
    expect(seen).toEqual({ pings: 1, events: ['down', 'up'] });
    outage.close();
  });

  it('stays down while pings fail (rejecting or throwing at once), probing each interval, then clears on the first answer', async () => {
    let answering = false;
    const { outage, seen } = latch((ping) => {
      if (answering) return Promise.resolve();
      if (ping % 2) throw new Error('pool is closed');
      return Promise.reject(new Error('connect ECONNREFUSED'));
    });
    outage.noticed();
    await waitFor(() => seen.pings >= 4, 5000, 5);
    expect(outage.down).toBe(true);
    answering = true;
    await waitFor(() => !outage.down, 5000, 5);
    expect(seen.events).toEqual(['down', 'up']);
    outage.close();
  });

  it('once closed, is never set again and probes nothing (no timer on a closed store)', async () => {
    const { outage, seen } = latch();
    outage.close();
    outage.noticed();
    expect(outage.down).toBe(false);
    await new Promise((r) => setImmediate(r));
    expect(seen).toEqual({ pings: 0, events: [] });
  });
});
