// The database-outage latch: probed at once and then each interval, cleared by the first answer, inert once closed.
import { DatabaseOutage } from '../../src/store/outage';
import { waitFor } from '../helpers/wait';

function latch(ping: () => Promise<void>) {
  const events: string[] = [];
  const outage = new DatabaseOutage(ping, { down: () => events.push('down'), up: () => events.push('up') }, 20);
  return { outage, events };
}

describe('DatabaseOutage', () => {
  it('probes at once: a database that answers clears it within one round trip, and says so once each way', async () => {
    let pings = 0;
    const { outage, events } = latch(async () => void pings++);
    outage.noticed();
    outage.noticed();
    expect(outage.down).toBe(true);
    await waitFor(() => !outage.down, 5000, 1);
    expect(pings).toBe(1);
    expect(events).toEqual(['down', 'up']);
    outage.close();
  });

  it('stays down while pings fail (rejecting or throwing at once), probing each interval, then clears on the first answer', async () => {
    let pings = 0;
    let answering = false;
    const { outage, events } = latch(() => {
      pings++;
      if (answering) return Promise.resolve();
      if (pings % 2) throw new Error('pool is closed');
      return Promise.reject(new Error('connect ECONNREFUSED'));
    });
    outage.noticed();
    await waitFor(() => pings >= 4, 5000, 5);
    expect(outage.down).toBe(true);
    answering = true;
    await waitFor(() => !outage.down, 5000, 5);
    expect(events).toEqual(['down', 'up']);
    outage.close();
  });

  it('once closed, is never set again and probes nothing (no timer on a closed store)', async () => {
    let pings = 0;
    const { outage, events } = latch(async () => void pings++);
    outage.close();
    outage.noticed();
    expect(outage.down).toBe(false);
    await new Promise((r) => setImmediate(r));
    expect([pings, events]).toEqual([0, []]);
  });
});
