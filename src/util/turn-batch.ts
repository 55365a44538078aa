// Collects what is queued during one turn of the event loop and hands it over in one batch (group commit, one Redis call).

export class TurnBatch<T> {
  private items: T[] = [];
  private scheduled = false;

  /** `flush` gets every item queued since the last batch, in order, never an empty list. */
  constructor(private readonly flush: (items: T[]) => void) {}

  add(item: T): void {
    this.items.push(item);
    if (!this.scheduled) {
      this.scheduled = true;
      setImmediate(() => this.drain());
    }
  }

  /** Hands over what is queued now (also called directly, e.g. at close, before the scheduled turn). */
  drain(): void {
    this.scheduled = false;
    const items = this.items;
    this.items = [];
    if (items.length) this.flush(items);
  }
}
