/**
 * Volume writes run a few at a time instead of all at once: a cycle of 25,000 scattered blocks
 * issued in one go would hold the event loop for the length of 25,000 system-call submissions and
 * flood Node's thread pool ahead of the journal's writes. `drained()` resolves once everything
 * pushed so far has landed, and rejects if any write failed.
 */
/** Volume writes in flight per queue (Node's thread pool has 4 threads). */
export const volumeWritesInFlight = 4;

export class WriteQueue {
  private readonly tasks: (() => Promise<void>)[] = [];
  private running = 0;
  private failure: Error | null = null;
  private waiters: { resolve: () => void; reject: (error: Error) => void }[] = [];
  /** Callers waiting until at most `queuedMax` tasks wait to start. */
  private roomWaiters: { queuedMax: number; resolve: () => void }[] = [];

  constructor(private readonly concurrency: number) {}

  push(task: () => Promise<void>): void {
    this.tasks.push(task);
    this.startMore();
  }

  /**
   * Resolves once at most `queuedMax` tasks wait to start (failures included: drained() reports
   * them), so a producer of many tasks can hold back instead of queueing all of them.
   */
  room(queuedMax: number): Promise<void> {
    if (this.tasks.length <= queuedMax) return Promise.resolve();
    return new Promise((resolve) => this.roomWaiters.push({ queuedMax, resolve }));
  }

  drained(): Promise<void> {
    if (this.failure) return Promise.reject(this.failure);
    if (this.running === 0 && this.tasks.length === 0) return Promise.resolve();
    return new Promise((resolve, reject) => this.waiters.push({ resolve, reject }));
  }

  private startMore(): void {
    while (this.running < this.concurrency && this.tasks.length > 0) {
      const task = this.tasks.shift() as () => Promise<void>;
      this.running++;
      task().then(
        () => this.finish(null),
        (error: Error) => this.finish(error),
      );
    }
  }

  /** Tasks finished so far: a measure of progress for whoever waits on a long run of them. */
  finished = 0;

  private finish(error: Error | null): void {
    this.running--;
    this.finished++;
    if (error) this.failure ??= error;
    this.startMore();
    this.roomWaiters = this.roomWaiters.filter((waiter) => {
      if (this.tasks.length > waiter.queuedMax) return true;
      waiter.resolve();
      return false;
    });
    if (this.running > 0 || this.tasks.length > 0) return;
    for (const waiter of this.waiters.splice(0)) {
      if (this.failure) waiter.reject(this.failure);
      else waiter.resolve();
    }
  }
}
