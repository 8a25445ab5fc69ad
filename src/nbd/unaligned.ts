/**
 * Byte-granular NBD exports over block-granular volumes. Clients that never negotiate block sizes
 * (the NBD spec's default minimum is then 1 byte) may read and write at any offset and length.
 * A read that is not block-aligned reads the covering blocks and returns the bytes asked for; a
 * write or zero run that is not aligned becomes read-modify-write of its partial head and tail
 * blocks, journaled and replicated like any whole-block write.
 *
 * Ordering: a read-modify-write must not lose a concurrent write to the same block, from this
 * connection or any other. Every write takes a lock on the blocks it touches: whole-block writes
 * share it (NBD lets concurrent overlapping writes land in any order, so they never wait on each
 * other), a read-modify-write holds it alone. Waiters are served in arrival order, so a stream of
 * whole-block writes cannot starve a read-modify-write, nor the other way round.
 */
import { assert } from '../core/assert.ts';
import type { NbdExport } from './export.ts';

type LockMode = 'shared' | 'exclusive';

interface LockEntry {
  first: number;
  last: number;
  mode: LockMode;
  granted: boolean;
  grant: () => void;
}

/** A lock on ranges of blocks, in two modes, granted in arrival order among overlapping ranges. */
export class BlockRangeLock {
  private readonly entries: LockEntry[] = [];
  private exclusiveEntries = 0;

  /** Resolves with a release function once the range [first, last] is held in `mode`. */
  acquire(first: number, last: number, mode: LockMode): Promise<() => void> {
    assert(first <= last, () => `lock range ${first}..${last}`);
    return new Promise((resolve) => {
      const entry: LockEntry = { first, last, mode, granted: false, grant: () => {} };
      entry.grant = () => resolve(() => this.release(entry));
      this.entries.push(entry);
      if (mode === 'exclusive') this.exclusiveEntries++;
      // The common case, whole-block writes only: nothing to wait for, nothing to scan.
      if (mode === 'shared' && this.exclusiveEntries === 0) {
        entry.granted = true;
        entry.grant();
        return;
      }
      this.grantWhatCan();
    });
  }

  /**
   * The range at once if nothing conflicts with it (held or waiting), else null: the common case
   * takes the lock in the same tick, so a write reaches the journal before a FLUSH sent after it.
   */
  tryAcquire(first: number, last: number, mode: LockMode): (() => void) | null {
    const entry: LockEntry = { first, last, mode, granted: true, grant: () => {} };
    if (mode === 'shared' && this.exclusiveEntries === 0) {
      this.entries.push(entry);
      return () => this.release(entry);
    }
    if (this.entries.some((other) => conflicts(other, entry))) return null;
    this.entries.push(entry);
    if (mode === 'exclusive') this.exclusiveEntries++;
    return () => this.release(entry);
  }

  get held(): number {
    return this.entries.filter((entry) => entry.granted).length;
  }

  private release(entry: LockEntry): void {
    const index = this.entries.indexOf(entry);
    assert(index >= 0 && entry.granted, 'released a lock that is not held');
    this.entries.splice(index, 1);
    if (entry.mode === 'exclusive') this.exclusiveEntries--;
    if (this.entries.some((other) => !other.granted)) this.grantWhatCan();
  }

  /** Grants each waiter that conflicts with no entry before it, held or waiting. */
  private grantWhatCan(): void {
    for (let i = 0; i < this.entries.length; i++) {
      const entry = this.entries[i] as LockEntry;
      if (entry.granted) continue;
      let blocked = false;
      for (let j = 0; j < i && !blocked; j++) blocked = conflicts(this.entries[j] as LockEntry, entry);
      if (blocked) continue;
      entry.granted = true;
      entry.grant();
    }
  }
}

function conflicts(a: LockEntry, b: LockEntry): boolean {
  const overlap = a.first <= b.last && b.first <= a.last;
  return overlap && (a.mode === 'exclusive' || b.mode === 'exclusive');
}

/** Wraps a block-granular export so that any offset and length is served. */
export function byteGranular(inner: NbdExport): NbdExport {
  const block = inner.blockBytes;
  const lock = new BlockRangeLock();
  const aligned = (offset: number, length: number): boolean => offset % block === 0 && length % block === 0;
  const cover = (offset: number, length: number) => {
    const start = offset - (offset % block);
    const end = Math.ceil((offset + length) / block) * block;
    return { start, end, first: start / block, last: end / block - 1 };
  };
  const holding = async <T>(release: () => void, body: () => Promise<T>): Promise<T> => {
    try {
      return await body();
    } finally {
      release();
    }
  };
  const locked = <T>(offset: number, length: number, mode: LockMode, body: () => Promise<T>): Promise<T> => {
    const range = cover(offset, Math.max(length, 1));
    // Taken at once when free, so the body starts in this tick (requests keep their arrival order).
    const now = lock.tryAcquire(range.first, range.last, mode);
    if (now) return holding(now, body);
    return lock.acquire(range.first, range.last, mode).then((release) => holding(release, body));
  };

  /** The covering blocks with `patch` laid over them at `offset` (null: zeroes). */
  const patched = async (offset: number, length: number, patch: Uint8Array | null): Promise<Uint8Array> => {
    const range = cover(offset, length);
    const blocks = new Uint8Array(range.end - range.start);
    // Only the partial head and tail blocks need their old bytes; the middle is overwritten whole.
    const headPartial = offset !== range.start;
    const tailPartial = offset + length !== range.end;
    if (headPartial) blocks.set(await inner.read(range.start, block), 0);
    if (tailPartial && (range.end - block > range.start || !headPartial))
      blocks.set(await inner.read(range.end - block, block), range.end - block - range.start);
    if (patch) blocks.set(patch, offset - range.start);
    else blocks.fill(0, offset - range.start, offset - range.start + length);
    return blocks;
  };

  return {
    name: inner.name,
    sizeBytes: inner.sizeBytes,
    blockBytes: inner.blockBytes,
    readOnly: inner.readOnly,
    async read(offset, length) {
      if (aligned(offset, length)) return inner.read(offset, length);
      const range = cover(offset, length);
      const blocks = await inner.read(range.start, range.end - range.start);
      return blocks.subarray(offset - range.start, offset - range.start + length);
    },
    write(offset, data, fua) {
      if (aligned(offset, data.length))
        return locked(offset, data.length, 'shared', () => inner.write(offset, data, fua));
      return locked(offset, data.length, 'exclusive', async () => {
        const range = cover(offset, data.length);
        await inner.write(range.start, await patched(offset, data.length, data), fua);
      });
    },
    writeZeroes(offset, length, fua) {
      if (aligned(offset, length))
        return locked(offset, length, 'shared', () => inner.writeZeroes(offset, length, fua));
      return locked(offset, length, 'exclusive', () => writeZeroesUnaligned(offset, length, fua));
    },
    flush: () => inner.flush(),
  };

  /** Partial blocks by read-modify-write, the whole blocks between them as a zero run. */
  async function writeZeroesUnaligned(offset: number, length: number, fua: boolean): Promise<void> {
    const range = cover(offset, length);
    const innerStart = Math.ceil(offset / block) * block;
    const innerEnd = Math.floor((offset + length) / block) * block;
    if (innerEnd <= innerStart) {
      await inner.write(range.start, await patched(offset, length, null), fua);
      return;
    }
    if (innerStart > offset)
      await inner.write(range.start, await patched(offset, innerStart - offset, null), false);
    await inner.writeZeroes(innerStart, innerEnd - innerStart, false);
    if (offset + length > innerEnd)
      await inner.write(innerEnd, await patched(innerEnd, offset + length - innerEnd, null), false);
    if (fua) await inner.flush();
  }
}
