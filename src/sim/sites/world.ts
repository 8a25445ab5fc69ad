/**
 * The simulated world the whole-site simulator runs real sites in: one clock, one queue of events,
 * and processes that can die. Every timer, disk completion and network delivery is an event owned by
 * a process; a dead process's events are dropped, so nothing it started ever completes.
 *
 * The code under test is asynchronous (promises). After each event the world waits for the promise
 * jobs that event started to run out (one real setImmediate: Node runs every pending promise job
 * before it), so each event's consequences finish before the next event, the same way every run.
 * Nothing in a simulated site may use real time or real I/O, or a seed would not replay.
 */
import type { Clock, Timer } from '../../io/clock.ts';
import { EventQueue } from '../event-queue.ts';

/** One run of a site's process: killed when the site crashes, a new one at restart. */
export class SimProcess {
  alive = true;
  constructor(
    readonly site: string,
    readonly incarnation: number,
  ) {}

  get name(): string {
    return `${this.site}#${this.incarnation}`;
  }
}

interface WorldEvent {
  owner: SimProcess | null;
  run: () => void;
}

/** Simulated time starts at a realistic epoch, so times in logs and site.json look like times. */
const epochMs = Date.UTC(2026, 0, 1);

const settled = (): Promise<void> => new Promise((resolve) => setImmediate(resolve));

export class World {
  private readonly queue = new EventQueue<WorldEvent>();
  private nowMs = epochMs;
  events = 0;

  /** `onError`: an event threw (in a real process: an uncaught exception, which kills it). */
  constructor(private readonly onError: (owner: SimProcess | null, error: unknown) => void) {}

  get now(): number {
    return this.nowMs;
  }

  /** Simulated milliseconds since the run began. */
  get elapsedMs(): number {
    return this.nowMs - epochMs;
  }

  /** Runs `run` after `delayMs` of simulated time, unless `owner` died by then. */
  schedule(owner: SimProcess | null, delayMs: number, run: () => void): void {
    this.queue.push(this.nowMs + Math.max(0, delayMs), { owner, run });
  }

  /**
   * Runs the next event and everything it set off; false when nothing is left to run or the next
   * event lies past `untilMs` (of elapsed time).
   */
  async step(untilMs: number): Promise<boolean> {
    for (;;) {
      const next = this.queue.peek();
      if (!next || next.atMs - epochMs > untilMs) return false;
      this.queue.pop();
      this.nowMs = Math.max(this.nowMs, next.atMs);
      const { owner, run } = next.event;
      if (owner && !owner.alive) continue;
      this.events++;
      try {
        run();
      } catch (error) {
        this.onError(owner, error);
      }
      await settled();
      return true;
    }
  }

  /** Lets time pass to `untilMs` (elapsed) with nothing to do, when the queue has nothing earlier. */
  advanceTo(untilMs: number): void {
    this.nowMs = Math.max(this.nowMs, epochMs + untilMs);
  }

  /** The clock a process sees: its timers die with it. */
  clockOf(owner: SimProcess): Clock {
    const world = this;
    return {
      now: () => world.nowMs,
      after(ms, callback): Timer {
        let cancelled = false;
        world.schedule(owner, ms, () => {
          if (!cancelled) callback();
        });
        return {
          cancel: () => {
            cancelled = true;
          },
        };
      },
      every(ms, callback): Timer {
        let cancelled = false;
        const fire = (): void => {
          if (cancelled) return;
          world.schedule(owner, ms, fire);
          callback();
        };
        world.schedule(owner, ms, fire);
        return {
          cancel: () => {
            cancelled = true;
          },
        };
      },
      soon(callback) {
        world.schedule(owner, 0, callback);
      },
    };
  }
}
