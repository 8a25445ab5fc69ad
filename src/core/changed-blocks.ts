/**
 * A changed-block bitmap: one bit per chunk of `chunkBlocks` blocks, per volume. It stands in for
 * journal entries a secondary no longer gets (tracking mode): a set bit means the chunk may differ
 * between that secondary and the primary, a clear bit means it is known equal. A superset is
 * always safe (the chunk is copied again); a bit missing is data loss.
 */
import { assert } from './assert.ts';
import type { CycleNumber } from './types.ts';

/** A run of adjacent set chunks of one volume, in blocks. */
export interface ChunkRun {
  volume: number;
  /** First chunk of the run. */
  chunk: number;
  chunkCount: number;
}

/** What the node persists for a link in tracking mode (docs/resync.md). */
export interface TrackingState {
  /** The bitmap covers a secondary whose stored number is at least this. */
  base: CycleNumber;
  /** The newest cycle folded into the bitmap; the journal keeps every cycle above it. */
  through: CycleNumber;
  chunkBlocks: number;
  /** One bitset per volume, bit i of byte i>>3 for chunk i. */
  bits: Uint8Array[];
}

export class ChangedBlocks {
  private readonly bits: Uint8Array[];
  private readonly chunksPerVolume: number[];
  /** Per volume, a byte index below which every bit is clear: takeRun does not rescan from 0. */
  private readonly clearBelow: number[];
  private setCount = 0;

  constructor(
    readonly chunkBlocks: number,
    private readonly volumeBlockCounts: readonly number[],
  ) {
    assert(Number.isSafeInteger(chunkBlocks) && chunkBlocks >= 1, 'a chunk holds at least one block');
    this.chunksPerVolume = volumeBlockCounts.map((blocks) => Math.ceil(blocks / chunkBlocks));
    this.bits = this.chunksPerVolume.map((chunks) => new Uint8Array(Math.ceil(chunks / 8)));
    this.clearBelow = this.chunksPerVolume.map(() => 0);
  }

  /**
   * A bitmap from a saved one. A saved bitmap of another granularity is widened: every saved chunk
   * marks every chunk of this granularity that overlaps it.
   */
  static fromState(
    state: TrackingState,
    chunkBlocks: number,
    volumeBlockCounts: readonly number[],
  ): ChangedBlocks {
    const blocks = new ChangedBlocks(chunkBlocks, volumeBlockCounts);
    assert(state.bits.length === volumeBlockCounts.length, 'a saved bitmap has one bitset per volume');
    state.bits.forEach((bitset, volume) => {
      const blockCount = volumeBlockCounts[volume] as number;
      const savedChunks = Math.ceil(blockCount / state.chunkBlocks);
      assert(
        bitset.length === Math.ceil(savedChunks / 8),
        () => `saved bitset of volume ${volume} has its size`,
      );
      for (let chunk = 0; chunk < savedChunks; chunk++) {
        if (!isSet(bitset, chunk)) continue;
        const first = chunk * state.chunkBlocks;
        blocks.markBlocks(volume, first, Math.min(state.chunkBlocks, blockCount - first));
      }
    });
    return blocks;
  }

  get chunkCount(): number {
    return this.setCount;
  }

  get isEmpty(): boolean {
    return this.setCount === 0;
  }

  /** Marks every chunk that holds one of blocks block..block+blockCount-1. */
  markBlocks(volume: number, block: number, blockCount: number): void {
    assert(blockCount >= 1, 'a marked extent has at least one block');
    const last = Math.floor((block + blockCount - 1) / this.chunkBlocks);
    for (let chunk = Math.floor(block / this.chunkBlocks); chunk <= last; chunk++) this.set(volume, chunk);
  }

  /** Every chunk of every volume (initial sync). */
  markAll(): void {
    this.chunksPerVolume.forEach((chunks, volume) => {
      for (let chunk = 0; chunk < chunks; chunk++) this.set(volume, chunk);
    });
  }

  has(volume: number, chunk: number): boolean {
    return isSet(this.bitset(volume), chunk);
  }

  clear(volume: number, chunk: number): void {
    const bitset = this.bitset(volume);
    if (!isSet(bitset, chunk)) return;
    bitset[chunk >> 3] = (bitset[chunk >> 3] as number) & ~(1 << (chunk & 7));
    this.setCount--;
  }

  /** Removes and returns the first run of set chunks, at most `chunksMax` long; null when empty. */
  takeRun(chunksMax: number): ChunkRun | null {
    for (let volume = 0; volume < this.bits.length; volume++) {
      const first = this.firstSet(volume);
      if (first === null) continue;
      let count = 0;
      const chunks = this.chunksPerVolume[volume] as number;
      while (count < chunksMax && first + count < chunks && this.has(volume, first + count)) {
        this.clear(volume, first + count);
        count++;
      }
      return { volume, chunk: first, chunkCount: count };
    }
    return null;
  }

  /** The blocks of a run, clamped to the end of its volume. */
  blocksOf(run: ChunkRun): { block: number; blockCount: number } {
    const block = run.chunk * this.chunkBlocks;
    const end = Math.min(
      (run.chunk + run.chunkCount) * this.chunkBlocks,
      this.volumeBlockCounts[run.volume] as number,
    );
    return { block, blockCount: end - block };
  }

  /** Blocks the set chunks span (the last chunk of a volume may be short). */
  blockCount(): number {
    let blocks = 0;
    this.bits.forEach((bitset, volume) => {
      const chunks = this.chunksPerVolume[volume] as number;
      for (let chunk = 0; chunk < chunks; chunk++) {
        if (isSet(bitset, chunk)) blocks += this.blocksOf({ volume, chunk, chunkCount: 1 }).blockCount;
      }
    });
    return blocks;
  }

  clone(): ChangedBlocks {
    const copy = new ChangedBlocks(this.chunkBlocks, this.volumeBlockCounts);
    this.bits.forEach((bitset, volume) => {
      (copy.bits[volume] as Uint8Array).set(bitset);
    });
    copy.clearBelow.splice(0, this.clearBelow.length, ...this.clearBelow);
    copy.setCount = this.setCount;
    return copy;
  }

  /** The bitsets, copied: what a save writes while this bitmap goes on changing. */
  snapshot(): Uint8Array[] {
    return this.bits.map((bitset) => bitset.slice());
  }

  private firstSet(volume: number): number | null {
    const bitset = this.bitset(volume);
    for (let byte = this.clearBelow[volume] as number; byte < bitset.length; byte++) {
      const value = bitset[byte] as number;
      if (value === 0) {
        this.clearBelow[volume] = byte + 1;
        continue;
      }
      for (let bit = 0; bit < 8; bit++) if (value & (1 << bit)) return byte * 8 + bit;
    }
    return null;
  }

  private set(volume: number, chunk: number): void {
    const bitset = this.bitset(volume);
    assert(
      chunk >= 0 && chunk < (this.chunksPerVolume[volume] as number),
      () => `chunk ${chunk} in volume ${volume}`,
    );
    if (isSet(bitset, chunk)) return;
    bitset[chunk >> 3] = (bitset[chunk >> 3] as number) | (1 << (chunk & 7));
    this.clearBelow[volume] = Math.min(this.clearBelow[volume] as number, chunk >> 3);
    this.setCount++;
  }

  private bitset(volume: number): Uint8Array {
    const bitset = this.bits[volume];
    assert(bitset, () => `volume ${volume} in the bitmap`);
    return bitset;
  }
}

function isSet(bitset: Uint8Array, chunk: number): boolean {
  return (((bitset[chunk >> 3] ?? 0) >> (chunk & 7)) & 1) === 1;
}
