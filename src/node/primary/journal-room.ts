/**
 * Writes waiting for journal room. At journal.capacity a source's write waits (it is never dropped)
 * until collection frees space; past writesWaitingMax waiting writes it is refused with journal-full,
 * so a secondary that stopped storing cannot make the primary hold unbounded memory.
 */
import type { Logger } from '../../ops/logger.ts';
import { PrimaryNodeError } from './primary-node-error.ts';

/** Writes waiting for journal space at most; beyond, a write is refused with journal-full. */
export const writesWaitingMax = 4096;

interface WaitingWrite {
  resolve: () => void;
  reject: (error: Error) => void;
}

export class JournalRoom {
  private waiting: WaitingWrite[] = [];

  constructor(
    private readonly journal: { readonly bytes: number },
    private readonly capacityBytes: number,
    private readonly logger: Logger,
  ) {}

  get full(): boolean {
    return this.journal.bytes >= this.capacityBytes;
  }

  get waitingCount(): number {
    return this.waiting.length;
  }

  /** Resolves once the journal is below its capacity: at once, or when collection freed space. */
  whenRoom(): Promise<void> {
    if (!this.full) return Promise.resolve();
    if (this.waiting.length >= writesWaitingMax) {
      return Promise.reject(
        new PrimaryNodeError(
          'journal-full',
          `journal at capacity and ${writesWaitingMax} writes already waiting`,
        ),
      );
    }
    if (this.waiting.length === 0) {
      this.logger.warn('journal-full', { capacity: this.capacityBytes, bytes: this.journal.bytes });
    }
    return new Promise((resolve, reject) => {
      this.waiting.push({ resolve, reject });
    });
  }

  /** Collection freed space: waiting writes go on, oldest first, while there is room. */
  onSpaceFreed(): void {
    while (this.waiting.length > 0 && !this.full) this.waiting.shift()?.resolve();
  }

  /** Writes still waiting were never journaled: each fails with `error`. */
  rejectAll(error: Error): void {
    const waiting = this.waiting;
    this.waiting = [];
    for (const write of waiting) write.reject(error);
  }
}
