/**
 * When a small write goes to the page cache inline, on the event loop, rather than through libuv's
 * thread pool. Through the pool a 4 KiB pwrite costs 20-40 µs of hand-off and wake-ups against about
 * 5 µs made synchronously (docs/performance.md), and the journal and the volumes' write-back make one
 * per client write. Larger writes stay in the pool, where they copy beside the event loop's work.
 * An inline write that took long waited for the device, not the page cache (the kernel throttles a
 * writer once dirty pages pass their limit): writes then go through the pool again for a while, so
 * the event loop does not stall behind a slow disk. And inline writes take at most a bounded time
 * per turn of the event loop: a queue that starts its next write when one completes would otherwise
 * run a whole cycle's apply (25,000 blocks) without letting a socket be read.
 */

export interface InlineWriteBounds {
  /** Writes of at most this many bytes may go inline. */
  bytesMax: number;
  /** An inline write slower than this pauses inline writes. */
  slowMs: number;
  /** For this long after a slow one, every write goes through the pool. */
  pauseMs: number;
  /** Inline writes of one turn of the event loop stop once they took this long together. */
  turnMsMax: number;
}

export const inlineWriteBounds: InlineWriteBounds = {
  bytesMax: 128 * 1024,
  slowMs: 10,
  pauseMs: 1000,
  turnMsMax: 3,
};

export class InlineWritePolicy {
  private pausedUntilMs = Number.NEGATIVE_INFINITY;
  /** Time the inline writes of this turn took. */
  private turnMs = 0;
  /** Whether an inline write ran in this turn (and the owner scheduled newTurn). */
  private turnOpen = false;
  /** Inline writes that were slow, each starting a pause (for the logs and tests). */
  slowWrites = 0;

  constructor(private readonly bounds: InlineWriteBounds = inlineWriteBounds) {}

  /** Whether a write of `length` bytes, starting at `nowMs`, goes inline. */
  inline(length: number, nowMs: number): boolean {
    return (
      length <= this.bounds.bytesMax && nowMs >= this.pausedUntilMs && this.turnMs < this.bounds.turnMsMax
    );
  }

  /** An inline write ran from `startedMs` to `endedMs`. */
  observed(startedMs: number, endedMs: number): void {
    this.turnMs += endedMs - startedMs;
    if (endedMs - startedMs <= this.bounds.slowMs) return;
    this.slowWrites++;
    this.pausedUntilMs = endedMs + this.bounds.pauseMs;
  }

  /**
   * An inline write is about to run; true when it is this turn's first, and the owner must then
   * call newTurn when the next turn begins (setImmediate).
   */
  opensTurn(): boolean {
    if (this.turnOpen) return false;
    this.turnOpen = true;
    return true;
  }

  /** A new turn of the event loop began: its inline writes start from no time spent. */
  newTurn(): void {
    this.turnMs = 0;
    this.turnOpen = false;
  }
}
