/**
 * What the requests of one server hold at once: a slot each, and the bytes of their data (a
 * WRITE's payload from before it is read until it is stored, a READ's data until its reply has
 * left the socket). A connection reserves both after it reads a request header and before it reads
 * the payload or serves the request; when the budget cannot cover them it stops reading and waits
 * in line. The line is first come, first served, so a large request is not starved by a stream of
 * small ones, and a crowd of clients cannot make the server hold more than the bounds however many
 * connections they open.
 */
import { assert } from '../core/assert.ts';

/** One request's reservation; released exactly once. */
export interface BudgetHold {
  bytes: number;
  released: boolean;
}

type Granted = (hold: BudgetHold) => void;

export class RequestBudget {
  private requestsUsed = 0;
  private bytesUsed = 0;
  private readonly line: { bytes: number; granted: Granted }[] = [];

  constructor(
    readonly requestsMax: number,
    readonly bytesMax: number = Number.MAX_SAFE_INTEGER,
  ) {
    if (!Number.isSafeInteger(requestsMax) || requestsMax < 1)
      throw new RangeError(`request budget of ${requestsMax} requests`);
    if (!Number.isSafeInteger(bytesMax) || bytesMax < 1)
      throw new RangeError(`request budget of ${bytesMax} bytes`);
  }

  get requestsInFlight(): number {
    return this.requestsUsed;
  }

  get bytesInFlight(): number {
    return this.bytesUsed;
  }

  /** Connections waiting in line. */
  get waiting(): number {
    return this.line.length;
  }

  /**
   * Reserves a slot and `bytes` now and returns the hold, or joins the line and returns null;
   * then `granted` is called with the hold once both are reserved for it.
   */
  reserve(bytes: number, granted: Granted): BudgetHold | null {
    // The configuration keeps every request within the budget; a larger one would wait forever.
    assert(
      Number.isSafeInteger(bytes) && bytes >= 0 && bytes <= this.bytesMax,
      () => `a request of ${bytes} bytes against a budget of ${this.bytesMax}`,
    );
    if (this.line.length === 0 && this.fits(bytes)) return this.take(bytes);
    this.line.push({ bytes, granted });
    return null;
  }

  /** A closed connection leaves the line. */
  leave(granted: Granted): void {
    const at = this.line.findIndex((waiter) => waiter.granted === granted);
    if (at >= 0) this.line.splice(at, 1);
    // The head may have been the one blocking smaller requests behind it.
    this.grantWaiting();
  }

  /** Gives a hold back (again is a no-op) and serves the line in order while the head fits. */
  release(hold: BudgetHold): void {
    if (hold.released) return;
    hold.released = true;
    this.requestsUsed--;
    this.bytesUsed -= hold.bytes;
    assert(this.requestsUsed >= 0 && this.bytesUsed >= 0, 'request budget released more than it gave');
    this.grantWaiting();
  }

  /** The request no longer holds its data (a write was stored): its bytes go back, its slot stays. */
  releaseBytes(hold: BudgetHold): void {
    if (hold.released || hold.bytes === 0) return;
    this.bytesUsed -= hold.bytes;
    hold.bytes = 0;
    this.grantWaiting();
  }

  private grantWaiting(): void {
    for (let head = this.line[0]; head && this.fits(head.bytes); head = this.line[0]) {
      this.line.shift();
      head.granted(this.take(head.bytes));
    }
  }

  private fits(bytes: number): boolean {
    return this.requestsUsed < this.requestsMax && this.bytesUsed + bytes <= this.bytesMax;
  }

  private take(bytes: number): BudgetHold {
    this.requestsUsed++;
    this.bytesUsed += bytes;
    return { bytes, released: false };
  }
}
