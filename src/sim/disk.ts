/**
 * Simulated storage that loses what was not flushed. Like FoundationDB's non-durable files: a
 * process crash (kill -9) keeps everything the kernel was given; a machine crash keeps what was
 * flushed, a random part of the rest, and may tear the last record or any unflushed block.
 */
import type { Random } from './random.ts';

export type CrashKind = 'process' | 'machine';

/** Marks a record that a machine crash tore: replay must stop before it. */
export const torn = Symbol('torn');

interface LogEntryOf<R> {
  id: number;
  record: R | typeof torn;
}

/** An append-only journal. */
export class SimLog<R> {
  private entries: LogEntryOf<R>[] = [];
  private nextId = 1;
  private durableId = 0;

  append(record: R): number {
    const id = this.nextId++;
    this.entries.push({ id, record });
    return id;
  }

  /** An fsync issued now covers everything appended so far; pass the result to markDurable at completion. */
  syncPoint(): number {
    return this.nextId - 1;
  }

  markDurable(id: number): void {
    this.durableId = Math.max(this.durableId, id);
  }

  /** Removes records for good (segment deletion, compaction): only records the caller no longer needs. */
  drop(unwanted: (record: R) => boolean): void {
    this.entries = this.entries.filter((entry) => entry.record === torn || !unwanted(entry.record));
  }

  /** Returns how many records were lost and whether the last surviving one is torn. */
  crash(kind: CrashKind, random: Random): { lost: number; tornTail: boolean } {
    if (kind === 'process') return { lost: 0, tornTail: false };
    const firstUnflushed = this.entries.findIndex((entry) => entry.id > this.durableId);
    if (firstUnflushed < 0) return { lost: 0, tornTail: false };
    const unflushed = this.entries.length - firstUnflushed;
    const kept = random.int(unflushed + 1);
    this.entries.length = firstUnflushed + kept;
    let tornTail = false;
    if (kept > 0 && random.chance(0.3)) {
      (this.entries[this.entries.length - 1] as LogEntryOf<R>).record = torn;
      tornTail = true;
    }
    return { lost: unflushed - kept, tornTail };
  }

  /** Records in order up to the first torn one; the torn tail is cut, as the journal's replay does. */
  replay(): R[] {
    const cut = this.entries.findIndex((entry) => entry.record === torn);
    if (cut >= 0) this.entries.length = cut;
    this.durableId = Math.max(this.durableId, this.syncPoint());
    return this.entries.map((entry) => entry.record as R);
  }

  /** The same records with their ids: the owner's references name records by their place in it. */
  replayEntries(): { id: number; record: R }[] {
    const records = this.replay();
    const entries = this.entries as { id: number; record: R }[];
    return records.map((record, index) => ({ id: (entries[index] as { id: number }).id, record }));
  }

  /** The record appended as `id`, or undefined when it was dropped, lost or torn. */
  get(id: number): R | undefined {
    // Ids grow in append order: a binary search (the primary reads its records back per packet).
    let low = 0;
    let high = this.entries.length - 1;
    while (low <= high) {
      const middle = (low + high) >> 1;
      const entry = this.entries[middle] as LogEntryOf<R>;
      if (entry.id === id) return entry.record === torn ? undefined : entry.record;
      if (entry.id < id) low = middle + 1;
      else high = middle - 1;
    }
    return undefined;
  }

  /** Ids of surviving records, for the oracle. */
  survivingIds(): Set<number> {
    return new Set(this.entries.filter((entry) => entry.record !== torn).map((entry) => entry.id));
  }

  get length(): number {
    return this.entries.length;
  }
}

/** A raw volume image whose unflushed block writes may vanish or tear on a machine crash. */
export class SimVolume {
  readonly current: Uint8Array;
  private readonly durable: Uint8Array;
  /** Blocks written since they were last made durable, with the write count when written. */
  private dirty = new Map<number, number>();
  private writes = 0;

  constructor(
    readonly blocks: number,
    readonly blockBytes: number,
  ) {
    this.current = new Uint8Array(blocks * blockBytes);
    this.durable = new Uint8Array(blocks * blockBytes);
  }

  write(block: number, blockCount: number, data: Uint8Array | null): void {
    const start = block * this.blockBytes;
    if (data) this.current.set(data, start);
    else this.current.fill(0, start, start + blockCount * this.blockBytes);
    this.writes++;
    for (let i = 0; i < blockCount; i++) this.dirty.set(block + i, this.writes);
  }

  syncPoint(): number {
    return this.writes;
  }

  /** An fsync issued at `point` completed: blocks written up to then are durable. */
  markDurable(point: number): void {
    for (const [block, writtenAt] of this.dirty) {
      if (writtenAt > point) continue;
      const start = block * this.blockBytes;
      this.durable.set(this.current.subarray(start, start + this.blockBytes), start);
      this.dirty.delete(block);
    }
  }

  crash(kind: CrashKind, random: Random): { lost: number; torn: number } {
    let lost = 0;
    let tornBlocks = 0;
    for (const block of this.dirty.keys()) {
      const start = block * this.blockBytes;
      const fate = kind === 'process' ? 0 : random.int(3);
      if (fate === 0) {
        this.durable.set(this.current.subarray(start, start + this.blockBytes), start);
      } else if (fate === 2) {
        // A torn block: the first sectors of the new content made it, the rest is old.
        const cut = random.between(1, this.blockBytes - 1);
        this.durable.set(this.current.subarray(start, start + cut), start);
        tornBlocks++;
      } else {
        lost++;
      }
    }
    this.dirty.clear();
    this.current.set(this.durable);
    return { lost, torn: tornBlocks };
  }
}
