/**
 * Writes waiting for room. At journal.capacity a source's write waits (it is never dropped) until
 * collection frees space; past writesWaitingMax waiting writes it is refused with journal-full, so a
 * secondary that stopped storing cannot make the primary hold unbounded memory. Likewise while the
 * writes held in memory on their way to the volumes reach their bound (volumes slower than the
 * journal): a write waits until a write-back batch landed.
 */
import type { Logger } from '../../ops/logger.ts';
import { PrimaryNodeError } from './primary-node-error.ts';

/** Writes waiting for journal space at most; beyond, a write is refused with journal-full. */
export const writesWaitingMax = 4096;

interface WaitingWrite {
  /** Bytes of block data the write brings. */
  bytes: number;
  resolve: () => void;
  reject: (error: Error) => void;
}

export class JournalRoom {
  private waiting: WaitingWrite[] = [];
  /**
   * Bytes of writes let through and not yet handed to the group (onAdmitted): counted with the
   * journal's and the write-back's, or a burst let through together (every write arriving in one
   * turn of the event loop, or every waiting one when room appears) would pass the bounds together.
   */
  private admittedBytes = 0;

  constructor(
    private readonly journal: { readonly bytes: number },
    private readonly capacityBytes: number,
    private readonly writeBack: { readonly heldBytes: number },
    private readonly writeBackBytesMax: number,
    private readonly logger: Logger,
  ) {}

  get full(): boolean {
    return this.journal.bytes + this.admittedBytes >= this.capacityBytes;
  }

  /** The writes on their way to the volumes hold memory.dataBytesMax's share for them. */
  get writeBackFull(): boolean {
    return this.writeBack.heldBytes + this.admittedBytes >= this.writeBackBytesMax;
  }

  private get waitNeeded(): boolean {
    return this.full || this.writeBackFull;
  }

  get waitingCount(): number {
    return this.waiting.length;
  }

  /**
   * Resolves once the journal is below its capacity and the write-back below its bound: at once,
   * or when collection freed space or a write-back batch landed. The write's `bytes` count as held
   * from then until it reports back with onAdmitted.
   */
  whenRoom(bytes: number): Promise<void> {
    if (!this.waitNeeded) {
      this.admittedBytes += bytes;
      return Promise.resolve();
    }
    if (this.waiting.length >= writesWaitingMax) {
      const why = this.full ? 'journal at capacity' : 'writes on their way to the volumes at their bound';
      return Promise.reject(
        new PrimaryNodeError('journal-full', `${why} and ${writesWaitingMax} writes already waiting`),
      );
    }
    if (this.waiting.length === 0 && this.full) {
      this.logger.warn('journal-full', { capacity: this.capacityBytes, bytes: this.journal.bytes });
    } else if (this.waiting.length === 0) {
      // Volumes slower than the journal: common under bursts, not a fault.
      this.logger.log({
        level: 'debug',
        event: 'write-back-full',
        fields: { bytesMax: this.writeBackBytesMax, bytes: this.writeBack.heldBytes },
      });
    }
    return new Promise((resolve, reject) => {
      this.waiting.push({ bytes, resolve, reject });
    });
  }

  /** A write let through was handed to the group (the write-back counts its bytes now) or refused. */
  onAdmitted(bytes: number): void {
    this.admittedBytes -= bytes;
    // A refused write frees what it held without a landing or a collection to say so.
    this.onSpaceFreed();
  }

  /** Collection freed space, or a write-back landed: waiting writes go on, oldest first, while there is room. */
  onSpaceFreed(): void {
    while (this.waiting.length > 0 && !this.waitNeeded) {
      const write = this.waiting.shift() as WaitingWrite;
      this.admittedBytes += write.bytes;
      write.resolve();
    }
  }

  /** Writes still waiting were never journaled: each fails with `error`. */
  rejectAll(error: Error): void {
    const waiting = this.waiting;
    this.waiting = [];
    for (const write of waiting) write.reject(error);
  }
}
