// TurnBatch: what one event-loop turn queues arrives together, in order; drain() hands it over at once.
import { TurnBatch } from '../../src/util/turn-batch';

const nextTurn = () => new Promise((r) => setImmediate(r));

describe('TurnBatch', () => {
  it('hands over the items of one turn together and in order, then those of the next turn apart', async () => {
    const batches: number[][] = [];
    const b = new TurnBatch<number>((items) => batches.push(items));
    b.add(1);
    b.add(2);
    b.add(3);
    expect(batches).toEqual([]);
    await nextTurn();
    b.add(4);
    await nextTurn();
    expect(batches).toEqual([[1, 2, 3], [4]]);
  });

  it('drain() hands over at once, and the scheduled turn then has nothing to flush', async () => {
    const batches: string[][] = [];
    const b = new TurnBatch<string>((items) => batches.push(items));
    b.add('a');
    b.drain();
    expect(batches).toEqual([['a']]);
    await nextTurn();
    expect(batches).toEqual([['a']]);
  });

  it('an item added while a batch is being flushed goes into the next batch', async () => {
    const batches: number[][] = [];
    const b: TurnBatch<number> = new TurnBatch<number>((items) => {
      batches.push(items);
      if (items[0] === 1) b.add(2);
    });
    b.add(1);
    await nextTurn();
    await nextTurn();
    expect(batches).toEqual([[1], [2]]);
  });
});
