/**
 * One regular file as a kernel and a disk hold it: the page-cache view that reads and writes see,
 * and the durable image a machine crash falls back to. What differs between the two is tracked per
 * 512-byte sector (the unit a disk writes atomically, or tears), so a sync and a crash cost what
 * was written since the last sync, never the size of the file.
 *
 * Invariants: both arrays hold zeroes past their size (and past their length, which grows by
 * doubling and may stay short of a sparse file's size); a sector that is neither dirty nor
 * forgotten holds the same bytes in both.
 */
import { assert } from '../../core/assert.ts';
import type { Random } from '../random.ts';

export const sectorBytes = 512;
/** The file system's allocation unit: writing into a hole takes whole blocks from the capacity. */
export const blockBytes = 4096;

/** What a machine crash draws for each file: see crash(). */
export interface FileCrashOdds {
  /** A dirty sector reaches the disk whole (otherwise it keeps its durable bytes). */
  sectorKept: number;
  /** One of a file's dirty sectors is torn: its first bytes new, the rest old. */
  tornSector: number;
}

export interface FileCrashOutcome {
  lostSectors: number;
  tornSectors: number;
}

/** What a sync issued now must cover: every change up to `version`, the file at `size` bytes. */
export interface FileSyncPoint {
  version: number;
  size: number;
}

interface DirtySector {
  /** Version of the first write since the sector was clean: a sync issued at or after it covers it. */
  first: number;
  /** Version of the latest write to it. */
  last: number;
}

const empty = new Uint8Array(0);

/**
 * `array` with room for `needed` bytes: the same array, or a copy twice as long (so appends copy
 * little), but no longer than `sizeBytes` when the bytes needed lie inside the file (a sparse image
 * written at random places grows to its size, not past it).
 */
function grown(array: Uint8Array, needed: number, sizeBytes: number): Uint8Array {
  if (needed <= array.length) return array;
  const doubled = Math.max(needed, array.length * 2, sectorBytes * 8);
  const length = needed <= sizeBytes ? Math.min(doubled, sizeBytes) : doubled;
  const bigger = new Uint8Array(length);
  bigger.set(array);
  return bigger;
}

function sectorsDiffer(a: Uint8Array, b: Uint8Array, start: number): boolean {
  const end = start + sectorBytes;
  for (let i = start; i < end; i++) if ((a[i] ?? 0) !== (b[i] ?? 0)) return true;
  return false;
}

export class FileInode {
  readonly kind = 'file';
  /** The page-cache view: what reads return. */
  private cache: Uint8Array = empty;
  size = 0;
  /** What the disk holds: what a machine crash leaves when it loses every unsynced sector. */
  private durable: Uint8Array = empty;
  durableSize = 0;
  /** Sectors written (or cut by a truncate) since they were last made durable. */
  private readonly dirty = new Map<number, DirtySector>();
  /**
   * Sectors a failed sync dropped from writeback, as Linux does: the cache still shows the new bytes,
   * the disk has the old ones, and no later sync writes them. A machine crash reverts them.
   */
  private readonly forgotten = new Set<number>();
  /** The highest sync point made durable: a sync that completes after a later one did adds nothing. */
  private syncedThrough = 0;
  /** One bit per allocation block that holds data in the cache view. */
  private allocation: Uint8Array = empty;
  allocatedBlocks = 0;
  /** Names in the current namespace. */
  links = 0;
  /** Descriptors and calls in flight holding it: with no name and no handle left, its space is free. */
  handles = 0;

  constructor(
    readonly number: number,
    readonly mode: number,
  ) {}

  /** Copies up to `length` bytes at `position` of the cache view into `target`; returns the count. */
  read(position: number, target: Uint8Array, targetOffset: number, length: number): number {
    const count = Math.max(0, Math.min(length, this.size - position));
    const stored = Math.max(0, Math.min(count, this.cache.length - position));
    if (stored > 0) target.set(this.cache.subarray(position, position + stored), targetOffset);
    if (count > stored) target.fill(0, targetOffset + stored, targetOffset + count);
    return count;
  }

  write(position: number, source: Uint8Array, version: number): void {
    if (source.length === 0) return;
    const end = position + source.length;
    this.cache = grown(this.cache, end, this.size);
    this.cache.set(source, position);
    if (end > this.size) this.size = end;
    this.markDirty(Math.floor(position / sectorBytes), Math.ceil(end / sectorBytes), version);
    this.allocate(position, end);
  }

  /** Sets the cache view's size; returns the allocation blocks freed. */
  truncate(length: number, version: number): number {
    assert(length >= 0, 'a file size is never negative');
    if (length >= this.size) {
      this.size = length;
      return 0;
    }
    const stored = Math.min(this.size, this.cache.length);
    if (length < stored) this.cache.fill(0, length, stored);
    // Sectors past the new end may hold data on disk or in the cache: the cut must reach the disk too.
    const reach = Math.min(this.size, Math.max(this.durableSize, this.cache.length));
    this.markDirty(Math.floor(length / sectorBytes), Math.ceil(reach / sectorBytes), version);
    this.size = length;
    return this.release(Math.ceil(length / blockBytes));
  }

  private markDirty(fromSector: number, toSector: number, version: number): void {
    for (let sector = fromSector; sector < toSector; sector++) {
      const dirty = this.dirty.get(sector);
      if (dirty) dirty.last = version;
      else this.dirty.set(sector, { first: version, last: version });
      this.forgotten.delete(sector);
    }
  }

  // ---- space ----

  private isAllocated(block: number): boolean {
    return ((this.allocation[block >> 3] ?? 0) & (1 << (block & 7))) !== 0;
  }

  /** How many of the bytes from `position` fit when only `freeBlocks` more blocks may be taken. */
  bytesThatFit(position: number, length: number, freeBlocks: number): number {
    const end = position + length;
    let needed = 0;
    for (let block = Math.floor(position / blockBytes); block * blockBytes < end; block++) {
      if (this.isAllocated(block)) continue;
      needed++;
      if (needed > freeBlocks) return Math.max(0, block * blockBytes - position);
    }
    return length;
  }

  private allocate(position: number, end: number): void {
    const lastBlock = Math.ceil(end / blockBytes);
    this.allocation = grown(this.allocation, Math.ceil(lastBlock / 8), 0);
    for (let block = Math.floor(position / blockBytes); block < lastBlock; block++) {
      if (this.isAllocated(block)) continue;
      this.allocation[block >> 3] = (this.allocation[block >> 3] ?? 0) | (1 << (block & 7));
      this.allocatedBlocks++;
    }
  }

  /** Frees the blocks from `firstBlock` on; returns how many were taken. */
  private release(firstBlock: number): number {
    let freed = 0;
    for (let block = firstBlock; block < this.allocation.length * 8; block++) {
      if (!this.isAllocated(block)) continue;
      this.allocation[block >> 3] = (this.allocation[block >> 3] ?? 0) & ~(1 << (block & 7));
      freed++;
    }
    this.allocatedBlocks -= freed;
    return freed;
  }

  // ---- durability ----

  syncPoint(version: number): FileSyncPoint {
    return { version, size: this.size };
  }

  /**
   * A sync issued at `point` completed. It covers every sector dirty when it was issued; such a
   * sector is copied as the cache holds it now, which may include a later write (that write could
   * have reached the disk with the flush; never older bytes than the sync promised). Sectors first
   * dirtied after the issue stay dirty: a sync never covers what it was not asked to. The durable
   * size becomes the size at issue (or less, if a truncate since cut it).
   */
  completeSync(point: FileSyncPoint): void {
    if (point.version <= this.syncedThrough) return;
    this.syncedThrough = point.version;
    const durableSize = Math.min(point.size, this.size);
    for (const [sector, dirty] of this.dirty) {
      if (dirty.first > point.version) continue;
      const start = sector * sectorBytes;
      this.copy(this.cache, 'durable', start, Math.min(start + sectorBytes, durableSize));
      if (dirty.last <= point.version || start + sectorBytes <= durableSize) this.dirty.delete(sector);
      else dirty.first = point.version + 1;
    }
    this.setDurableSize(durableSize);
  }

  /**
   * A sync issued at `point` failed. Like Linux after a writeback error, the pages it should have
   * written are marked clean without reaching the disk: the data stays visible until a machine
   * crash, and a later sync reports success without writing it (the hostile choice, so a caller
   * that retries fsync and trusts it is caught).
   */
  failSync(point: FileSyncPoint): void {
    for (const [sector, dirty] of this.dirty) {
      if (dirty.first > point.version) continue;
      if (dirty.last <= point.version) {
        this.dirty.delete(sector);
        this.forgotten.add(sector);
      } else {
        dirty.first = point.version + 1;
      }
    }
  }

  private setDurableSize(size: number): void {
    const stored = Math.min(this.durableSize, this.durable.length);
    if (size < stored) this.durable.fill(0, size, stored);
    this.durableSize = size;
  }

  /** Copies bytes [start, end) of `source` (zeroes past its length) into the cache or the disk. */
  private copy(source: Uint8Array, into: 'cache' | 'durable', start: number, end: number): void {
    if (end <= start) return;
    const target = grown(into === 'cache' ? this.cache : this.durable, end, this.sizeBound);
    if (into === 'cache') this.cache = target;
    else this.durable = target;
    const stored = Math.max(start, Math.min(end, source.length));
    if (stored > start) target.set(source.subarray(start, stored), start);
    if (end > stored) target.fill(0, stored, end);
  }

  /** The file's extent on either side, rounded up to a whole sector (which a copy may reach). */
  private get sizeBound(): number {
    return Math.ceil(Math.max(this.size, this.durableSize) / sectorBytes) * sectorBytes;
  }

  // ---- crashes ----

  /**
   * A machine crash: the file becomes what the disk held. The size is the durable one, the cache's
   * (the metadata reached the disk), or for a file that grew, any size between (an append partly
   * flushed); each dirty sector independently reached the disk or not; perhaps one is torn; the
   * forgotten ones did not. Synced sectors never change, so tearing stays inside the unsynced range.
   */
  crash(random: Random, odds: FileCrashOdds): FileCrashOutcome {
    const outcome: FileCrashOutcome = { lostSectors: 0, tornSectors: 0 };
    const size = this.sizeAfterCrash(random);
    const tornSector =
      this.dirty.size > 0 && random.chance(odds.tornSector)
        ? ([...this.dirty.keys()][random.int(this.dirty.size)] as number)
        : -1;
    for (const sector of this.dirty.keys()) {
      const start = sector * sectorBytes;
      if (start >= size) continue;
      if (sector === tornSector) {
        const cut = start + random.between(1, sectorBytes - 1);
        this.copy(this.cache, 'durable', start, cut);
        this.copy(this.durable, 'cache', cut, start + sectorBytes);
        outcome.tornSectors++;
      } else if (random.chance(odds.sectorKept)) {
        this.copy(this.cache, 'durable', start, start + sectorBytes);
      } else {
        outcome.lostSectors += this.revert(sector);
      }
    }
    for (const sector of this.forgotten) {
      if (sector * sectorBytes < size) outcome.lostSectors += this.revert(sector);
    }
    this.dirty.clear();
    this.forgotten.clear();
    this.resize(size);
    return outcome;
  }

  /** Puts the durable bytes of `sector` back into the cache; 1 when that lost something. */
  private revert(sector: number): number {
    const start = sector * sectorBytes;
    const lost = sectorsDiffer(this.cache, this.durable, start) ? 1 : 0;
    this.copy(this.durable, 'cache', start, start + sectorBytes);
    return lost;
  }

  private sizeAfterCrash(random: Random): number {
    if (this.size === this.durableSize) return this.size;
    // A truncate is one metadata change: it happened or it did not.
    if (this.size < this.durableSize) return random.chance(0.5) ? this.size : this.durableSize;
    const draw = random.int(3);
    if (draw === 0) return this.durableSize;
    if (draw === 1) return this.size;
    return random.between(this.durableSize, this.size);
  }

  /** After a crash: both views `size` bytes long and alike, zeroes past the end, space past it freed. */
  private resize(size: number): void {
    // Every sector the crash touched lies below the larger of the two old sizes, rounded to a sector.
    const touched = Math.ceil(Math.max(this.size, this.durableSize) / sectorBytes) * sectorBytes;
    for (const view of [this.cache, this.durable]) {
      const end = Math.min(view.length, touched);
      if (size < end) view.fill(0, size, end);
    }
    this.durableSize = size;
    this.size = size;
    this.release(Math.ceil(size / blockBytes));
  }

  // ---- inspection ----

  /** The cache view (what a read sees now); valid until the next change, not to be modified. */
  cachedView(): Uint8Array {
    this.cache = grown(this.cache, this.size, this.size);
    return this.cache.subarray(0, this.size);
  }

  /** The durable image (what survives a crash that loses every unsynced sector); same terms. */
  durableView(): Uint8Array {
    this.durable = grown(this.durable, this.durableSize, this.durableSize);
    return this.durable.subarray(0, this.durableSize);
  }

  get dirtySectors(): number {
    return this.dirty.size;
  }
}
