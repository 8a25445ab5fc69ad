/**
 * Requests in flight across every connection of one server. A connection takes a slot before it
 * reads a request header; when none is free it stops reading and waits in line, so a crowd of
 * clients cannot queue unbounded work however many connections they open.
 */
export class RequestBudget {
  private used = 0;
  private readonly waiting = new Set<() => void>();

  constructor(readonly slots: number) {
    if (!Number.isInteger(slots) || slots < 1) throw new RangeError(`request budget of ${slots} slots`);
  }

  get inFlight(): number {
    return this.used;
  }

  /** Takes a slot, or remembers `wake` to call once one is freed and returns false. */
  tryTake(wake: () => void): boolean {
    if (this.used < this.slots) {
      this.used++;
      this.waiting.delete(wake);
      return true;
    }
    this.waiting.add(wake);
    return false;
  }

  release(): void {
    this.used--;
    const next = this.waiting.values().next();
    if (next.done) return;
    this.waiting.delete(next.value);
    next.value();
  }

  /** A closed connection leaves the line. */
  forget(wake: () => void): void {
    this.waiting.delete(wake);
  }
}
