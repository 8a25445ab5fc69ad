/**
 * Time as the sites see it: the wall clock, timers and "soon" (after the current work). Production
 * passes the process's own (node-clock.ts); the simulator passes simulated time, so a seed replays
 * the same interleaving of timers, I/O completions and frames.
 */

/** A scheduled callback; cancel() is safe to call after it ran or twice. */
export interface Timer {
  cancel(): void;
}

export interface Clock {
  /** Milliseconds since the epoch (Date.now()). */
  now(): number;
  /**
   * Runs `callback` once after `ms`. `background` timers do not keep the process alive (unref),
   * for housekeeping that must not delay an exit.
   */
  after(ms: number, callback: () => void, options?: { background?: boolean }): Timer;
  /** Runs `callback` every `ms` until cancelled. */
  every(ms: number, callback: () => void): Timer;
  /** Runs `callback` once the work in hand (and the I/O callbacks already due) is done: setImmediate. */
  soon(callback: () => void): void;
}
