/**
 * The whole-site simulator's own record of what the sources did, and its judge of images: nothing
 * here comes from the code under test. Every write is self-describing (each block carries the write
 * id, volume and block), each block is written by one source only, and a source issues one write at
 * a time, so the history knows the order of the writes to every block. A write that depends on
 * another source's write names it (it was acknowledged before this one was issued).
 *
 * An image (read through a site's read path, or its files after a crash) is judged a consistent cut
 * when some prefix of each source's writes explains every block, and the prefixes are closed under
 * the dependencies: what a dependent-write-consistent copy must show.
 */
import type { Random } from '../random.ts';

const magic = 0x43595245;
const headerBytes = 16;

/** Another source's write this one depends on: that source's writes up to `seq` must be present. */
export interface Dependency {
  source: number;
  seq: number;
}

export interface HistoryWrite {
  /** Unique over the run, from 1 (0 means "zeroes" in a block). */
  id: number;
  source: number;
  /** Position in its source's sequence, from 0. */
  seq: number;
  volume: number;
  block: number;
  blockCount: number;
  zero: boolean;
  dependencies: Dependency[];
}

/** What a block of an image shows. */
export type Visible = { kind: 'zero' } | { kind: 'write'; id: number } | { kind: 'garbage'; why: string };

/** The bytes a write puts in one of its blocks. */
export function blockContent(write: HistoryWrite, block: number, blockBytes: number): Uint8Array {
  const bytes = new Uint8Array(blockBytes);
  if (write.zero) return bytes;
  const view = new DataView(bytes.buffer);
  view.setUint32(0, magic);
  view.setUint32(4, write.id);
  view.setUint32(8, write.volume);
  view.setUint32(12, block);
  for (let i = headerBytes; i < blockBytes; i++) bytes[i] = (write.id * 31 + block * 7 + i) & 0xff;
  return bytes;
}

export function writeContent(write: HistoryWrite, blockBytes: number): Uint8Array {
  const bytes = new Uint8Array(write.blockCount * blockBytes);
  for (let i = 0; i < write.blockCount; i++)
    bytes.set(blockContent(write, write.block + i, blockBytes), i * blockBytes);
  return bytes;
}

interface BlockEntry {
  seq: number;
  /** 0 for a zero run. */
  writeId: number;
}

export class History {
  /** Each source's writes in the order it issued them. */
  readonly sources: HistoryWrite[][];
  private readonly writes = new Map<number, HistoryWrite>();
  /** Per block (volume * blocksMax + block), the writes that covered it, by seq. */
  private readonly blockWrites = new Map<number, BlockEntry[]>();
  /** The blocks each source owns. */
  private readonly ownedBlocks: { volume: number; block: number }[][];
  private nextId = 1;

  constructor(
    sourceCount: number,
    readonly volumeBlocks: number[],
    readonly blockBytes: number,
    /** Which source owns each block of each volume. */
    private readonly owner: number[][],
  ) {
    this.sources = Array.from({ length: sourceCount }, () => []);
    this.ownedBlocks = Array.from({ length: sourceCount }, () => []);
    owner.forEach((blocks, volume) => {
      blocks.forEach((source, block) => {
        this.ownedBlocks[source]?.push({ volume, block });
      });
    });
  }

  /** Splits each volume into runs of blocks, each owned by one source. */
  static drawOwners(random: Random, volumeBlocks: number[], sourceCount: number): number[][] {
    return volumeBlocks.map((blocks) => {
      const owners: number[] = [];
      while (owners.length < blocks) {
        const source = random.int(sourceCount);
        const run = random.between(1, 12);
        for (let i = 0; i < run && owners.length < blocks; i++) owners.push(source);
      }
      return owners;
    });
  }

  ownerOf(volume: number, block: number): number {
    return this.owner[volume]?.[block] ?? -1;
  }

  blocksOf(source: number): readonly { volume: number; block: number }[] {
    return this.ownedBlocks[source] ?? [];
  }

  private key(volume: number, block: number): number {
    return volume * 1_000_000 + block;
  }

  /** Records the next write of a source. */
  add(write: Omit<HistoryWrite, 'id' | 'seq'>): HistoryWrite {
    const list = this.sources[write.source] as HistoryWrite[];
    const full: HistoryWrite = { ...write, id: this.nextId++, seq: list.length };
    for (let i = 0; i < full.blockCount; i++) {
      if (this.ownerOf(full.volume, full.block + i) !== full.source)
        throw new Error(`sim: source ${full.source} writes block ${full.block + i} it does not own`);
    }
    list.push(full);
    this.writes.set(full.id, full);
    for (let i = 0; i < full.blockCount; i++) {
      const key = this.key(full.volume, full.block + i);
      let entries = this.blockWrites.get(key);
      if (!entries) {
        entries = [];
        this.blockWrites.set(key, entries);
      }
      entries.push({ seq: full.seq, writeId: full.zero ? 0 : full.id });
    }
    return full;
  }

  /** What a block's bytes show (no copies made: this runs for every block of every image judged). */
  decode(bytes: Uint8Array, volume: number, block: number): Visible {
    const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
    if (view.getUint32(0) !== magic) {
      for (let i = 0; i < bytes.length; i++)
        if (bytes[i] !== 0)
          return { kind: 'garbage', why: `bytes no write of the history wrote (byte ${i})` };
      return { kind: 'zero' };
    }
    const id = view.getUint32(4);
    if (!this.writes.has(id))
      return {
        kind: 'garbage',
        why: `bytes of write ${id}, which the history does not hold (never written, or lost in a crash)`,
      };
    if (view.getUint32(8) !== volume || view.getUint32(12) !== block)
      return {
        kind: 'garbage',
        why: `write ${id}'s block ${view.getUint32(12)} of volume ${view.getUint32(8)}`,
      };
    for (let i = headerBytes; i < bytes.length; i++)
      if (bytes[i] !== ((id * 31 + block * 7 + i) & 0xff))
        return { kind: 'garbage', why: `write ${id}'s block, torn at byte ${i}` };
    return { kind: 'write', id };
  }

  /** What a block shows once its owner's first `prefix` writes are applied: a write id, or 0. */
  private expectedAt(volume: number, block: number, prefix: number): number {
    const entries = this.blockWrites.get(this.key(volume, block));
    if (!entries) return 0;
    let low = 0;
    let high = entries.length;
    while (low < high) {
      const middle = (low + high) >> 1;
      if ((entries[middle] as BlockEntry).seq < prefix) low = middle + 1;
      else high = middle;
    }
    return low === 0 ? 0 : (entries[low - 1] as BlockEntry).writeId;
  }

  /** The smallest prefix >= `from` at which the block shows `visible`, or Infinity. */
  private nextMatch(volume: number, block: number, visible: Visible, from: number): number {
    const want = visible.kind === 'write' ? visible.id : 0;
    if (this.expectedAt(volume, block, from) === want) return from;
    const entries = this.blockWrites.get(this.key(volume, block)) ?? [];
    for (const entry of entries) if (entry.seq >= from && entry.writeId === want) return entry.seq + 1;
    return Number.POSITIVE_INFINITY;
  }

  /**
   * Whether `image` is a consistent cut, with each source's prefix at least `lower[s]` (what must
   * have survived). Returns null when it is, else why not.
   */
  judge(
    image: (volume: number, block: number) => Uint8Array,
    lower: readonly number[] = [],
    volumes?: readonly number[],
  ): string | null {
    return this.cut(image, lower, volumes).problem;
  }

  /**
   * The smallest consistent cut that explains `image` with each source's prefix at least
   * `lower[s]`: its prefixes, or the problem when there is none.
   */
  cut(
    image: (volume: number, block: number) => Uint8Array,
    lower: readonly number[] = [],
    /** Only these volumes were read at one moment (all when absent); the others' blocks fit any prefix. */
    volumes?: readonly number[],
  ): { problem: string; prefix: null } | { problem: null; prefix: number[] } {
    const failed = (problem: string) => ({ problem, prefix: null }) as const;
    const visible = this.visibleOf(image, volumes);
    if (typeof visible === 'string') return failed(visible);
    const count = this.sources.length;
    const prefix = Array.from({ length: count }, (_, source) => lower[source] ?? 0);
    const scanned = Array.from({ length: count }, () => 0);
    const required = Array.from({ length: count }, () => 0);
    for (let changed = true; changed; ) {
      changed = false;
      for (let source = 0; source < count; source++) {
        const fitted = this.fit(
          source,
          Math.max(prefix[source] as number, required[source] as number),
          visible,
        );
        if (fitted === null)
          return failed(
            this.explainMisfit(
              source,
              Math.max(prefix[source] as number, required[source] as number),
              visible,
            ),
          );
        if (fitted !== prefix[source]) changed = true;
        prefix[source] = fitted;
        // Writes now included bring their dependencies in.
        const writes = this.sources[source] as HistoryWrite[];
        for (let seq = scanned[source] as number; seq < fitted; seq++) {
          for (const dependency of (writes[seq] as HistoryWrite).dependencies) {
            if (dependency.seq + 1 > (required[dependency.source] as number)) {
              required[dependency.source] = dependency.seq + 1;
              changed = true;
            }
          }
        }
        scanned[source] = Math.max(scanned[source] as number, fitted);
      }
    }
    return { problem: null, prefix };
  }

  /** What each block of `image` shows (of `volumes`, or all), or why a block shows nothing valid. */
  private visibleOf(
    image: (volume: number, block: number) => Uint8Array,
    volumes?: readonly number[],
  ): Map<number, Visible> | string {
    const visible = new Map<number, Visible>();
    for (let volume = 0; volume < this.volumeBlocks.length; volume++) {
      if (volumes && !volumes.includes(volume)) continue;
      for (let block = 0; block < (this.volumeBlocks[volume] as number); block++) {
        const shown = this.decode(image(volume, block), volume, block);
        if (shown.kind === 'garbage') return `volume ${volume} block ${block}: ${shown.why}`;
        if (
          shown.kind === 'write' &&
          (this.writes.get(shown.id) as HistoryWrite).source !== this.ownerOf(volume, block)
        )
          return `volume ${volume} block ${block}: write ${shown.id} of another source`;
        visible.set(this.key(volume, block), shown);
      }
    }
    return visible;
  }

  /**
   * The largest consistent cut that explains `image`, each prefix at least `lower[s]`: after a
   * crash, what survived. The largest, not the smallest: a zero run over zeroes leaves no trace, and
   * a write that left none cannot be told lost; a lost write that was visible shows as missing.
   */
  greatestCut(
    image: (volume: number, block: number) => Uint8Array,
    lower: readonly number[],
  ): { problem: string; prefix: null } | { problem: null; prefix: number[] } {
    const least = this.cut(image, lower);
    if (least.problem !== null) return least;
    const visible = this.visibleOf(image) as Map<number, Visible>;
    const prefix = this.sources.map((writes) => writes.length);
    for (let changed = true; changed; ) {
      changed = false;
      for (let source = 0; source < prefix.length; source++) {
        const fitted = this.fitDown(source, prefix[source] as number, visible);
        if (fitted !== prefix[source]) changed = true;
        prefix[source] = fitted;
      }
      // A write whose dependency is not in the cut cannot be either: cut its source below it.
      for (let source = 0; source < prefix.length; source++) {
        const writes = this.sources[source] as HistoryWrite[];
        for (let seq = 0; seq < (prefix[source] as number); seq++) {
          const unmet = (writes[seq] as HistoryWrite).dependencies.some(
            (dependency) => (prefix[dependency.source] as number) <= dependency.seq,
          );
          if (unmet) {
            prefix[source] = seq;
            changed = true;
            break;
          }
        }
      }
    }
    // The least cut exists, and every cut lies below the greatest: this one is at least it.
    return { problem: null, prefix };
  }

  /** The largest prefix <= `from` of the source that explains all its blocks (the least cut bounds it below). */
  private fitDown(source: number, from: number, visible: Map<number, Visible>): number {
    let prefix = from;
    for (let settled = false; !settled; ) {
      settled = true;
      for (const { volume, block } of this.blocksOf(source)) {
        const shown = visible.get(this.key(volume, block));
        if (!shown) continue;
        const previous = this.previousMatch(volume, block, shown, prefix);
        if (previous !== prefix) {
          prefix = previous;
          settled = false;
          break;
        }
      }
    }
    return prefix;
  }

  /** The largest prefix <= `from` at which the block shows `visible` (-Infinity: none). */
  private previousMatch(volume: number, block: number, visible: Visible, from: number): number {
    const want = visible.kind === 'write' ? visible.id : 0;
    if (this.expectedAt(volume, block, from) === want) return from;
    const entries = this.blockWrites.get(this.key(volume, block)) ?? [];
    for (let i = entries.length - 1; i >= 0; i--) {
      const entry = entries[i] as BlockEntry;
      // Shows `want` from entry.seq + 1 until the next write to the block (at prefix next.seq).
      if (entry.writeId === want && entry.seq + 1 <= from) return (entries[i + 1] as BlockEntry).seq;
    }
    if (want === 0 && entries.length > 0) return Math.min(from, (entries[0] as BlockEntry).seq);
    return Number.NEGATIVE_INFINITY;
  }

  /**
   * A read that ran while writes went on: each block on its own must show its owner's state at a
   * prefix between `lower` (writes acknowledged before the read began: none may be missing) and
   * `upper` (writes issued before it ended). Across blocks nothing more is promised: a disk read
   * racing a write may return old and new blocks mixed. Returns null, or the first block that fails.
   */
  judgeBlocks(
    image: (volume: number, block: number) => Uint8Array,
    volume: number,
    lower: readonly number[],
    upper: readonly number[],
  ): string | null {
    for (let block = 0; block < (this.volumeBlocks[volume] as number); block++) {
      const shown = this.decode(image(volume, block), volume, block);
      if (shown.kind === 'garbage') return `volume ${volume} block ${block}: ${shown.why}`;
      const source = this.ownerOf(volume, block);
      const from = lower[source] ?? 0;
      if (this.nextMatch(volume, block, shown, from) > (upper[source] ?? 0)) {
        const what = shown.kind === 'write' ? `write ${shown.id}` : 'zeroes';
        return `volume ${volume} block ${block} shows ${what}: not its content after any of source ${source}'s writes ${from} to ${upper[source]} (the first ${from} were acknowledged before the read began)`;
      }
    }
    return null;
  }

  /**
   * Forgets a source's writes from `length` on: a crash lost them (they were never made durable),
   * so they are not part of what any site may show from now on.
   */
  truncate(source: number, length: number): void {
    const list = this.sources[source] as HistoryWrite[];
    for (const write of list.splice(length)) {
      this.writes.delete(write.id);
      for (let i = 0; i < write.blockCount; i++) {
        const entries = this.blockWrites.get(this.key(write.volume, write.block + i)) ?? [];
        while (entries.length > 0 && (entries.at(-1) as BlockEntry).seq >= length) entries.pop();
      }
    }
  }

  /** The smallest prefix >= `from` of the source that explains all its blocks, or null. */
  private fit(source: number, from: number, visible: Map<number, Visible>): number | null {
    const total = (this.sources[source] as HistoryWrite[]).length;
    let prefix = from;
    for (let settled = false; !settled; ) {
      if (prefix > total) return null;
      settled = true;
      for (const { volume, block } of this.blocksOf(source)) {
        const shown = visible.get(this.key(volume, block));
        if (!shown) continue;
        const next = this.nextMatch(volume, block, shown, prefix);
        if (next !== prefix) {
          prefix = next;
          settled = false;
          break;
        }
      }
    }
    return prefix;
  }

  private explainMisfit(source: number, from: number, visible: Map<number, Visible>): string {
    const describe = (shown: Visible): string => (shown.kind === 'write' ? `write ${shown.id}` : 'zeroes');
    const known = this.blocksOf(source).filter(({ volume, block }) => visible.has(this.key(volume, block)));
    for (const { volume, block } of known) {
      const shown = visible.get(this.key(volume, block)) as Visible;
      if (this.nextMatch(volume, block, shown, from) === Number.POSITIVE_INFINITY)
        return `not a consistent cut: source ${source} must include its first ${from} writes, yet volume ${volume} block ${block} shows ${describe(shown)}, which no later prefix of it shows`;
    }
    // Every block fits some prefix, but not one prefix for all: name the two that disagree most.
    const fits = known.map(({ volume, block }) => {
      const shown = visible.get(this.key(volume, block)) as Visible;
      const first = this.nextMatch(volume, block, shown, from);
      const entries = this.blockWrites.get(this.key(volume, block)) ?? [];
      const after = entries.find((entry) => entry.seq >= first);
      return { volume, block, shown, first, until: after ? after.seq : Number.POSITIVE_INFINITY };
    });
    const latest = fits.reduce((a, b) => (b.first > a.first ? b : a));
    const earliest = fits.reduce((a, b) => (b.until < a.until ? b : a));
    const overwriter = (this.sources[source] as HistoryWrite[])[earliest.until];
    const kind = overwriter
      ? `${overwriter.zero ? 'a zero run' : 'data'} of ${overwriter.blockCount} blocks from volume ${overwriter.volume} block ${overwriter.block}, id ${overwriter.id}`
      : '';
    return (
      `not a consistent cut of source ${source}: volume ${latest.volume} block ${latest.block} shows ${describe(latest.shown)} (its writes up to ${latest.first - 1} at least), ` +
      `volume ${earliest.volume} block ${earliest.block} shows ${describe(earliest.shown)} (overwritten by its write ${earliest.until}: ${kind})`
    );
  }
}
