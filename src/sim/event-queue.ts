/** Simulated time: events ordered by time, then by the order they were scheduled (deterministic ties). */
export interface Scheduled<E> {
  atMs: number;
  order: number;
  event: E;
}

export class EventQueue<E> {
  private heap: Scheduled<E>[] = [];
  private scheduled = 0;

  get size(): number {
    return this.heap.length;
  }

  push(atMs: number, event: E): void {
    this.heap.push({ atMs, order: this.scheduled++, event });
    this.up(this.heap.length - 1);
  }

  /** The next event, left in the queue. */
  peek(): Scheduled<E> | undefined {
    return this.heap[0];
  }

  pop(): Scheduled<E> | undefined {
    const top = this.heap[0];
    const last = this.heap.pop();
    if (top && last && this.heap.length > 0) {
      this.heap[0] = last;
      this.down(0);
    }
    return top;
  }

  private before(i: number, j: number): boolean {
    const a = this.heap[i] as Scheduled<E>;
    const b = this.heap[j] as Scheduled<E>;
    return a.atMs < b.atMs || (a.atMs === b.atMs && a.order < b.order);
  }

  private up(index: number): void {
    let i = index;
    while (i > 0) {
      const parent = (i - 1) >> 1;
      if (!this.before(i, parent)) break;
      this.swap(i, parent);
      i = parent;
    }
  }

  private down(index: number): void {
    let i = index;
    for (;;) {
      const left = 2 * i + 1;
      const right = left + 1;
      let smallest = i;
      if (left < this.heap.length && this.before(left, smallest)) smallest = left;
      if (right < this.heap.length && this.before(right, smallest)) smallest = right;
      if (smallest === i) return;
      this.swap(i, smallest);
      i = smallest;
    }
  }

  private swap(i: number, j: number): void {
    const held = this.heap[i] as Scheduled<E>;
    this.heap[i] = this.heap[j] as Scheduled<E>;
    this.heap[j] = held;
  }
}
