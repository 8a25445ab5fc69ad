/**
 * Write folding: the content of one cycle (or of several, merged into a recovery cycle) as the
 * newest data per block. Inside a cycle order does not matter to the secondary, so only the last
 * write to each block needs to travel.
 */
import { assert } from './assert.ts';
import type { Extent } from './types.ts';

/**
 * A block whose bytes stay in the journal: block `index` of the extent of the record the store
 * appended as `seq` (its append sequence, see refSeq/refIndex). The node knows where that record
 * lies and reads the bytes back when they are needed. A number, not an object: a resync folds
 * millions of blocks, and an object each would cost several times a number's memory.
 */
export type BlockRef = number & { readonly inJournal: unique symbol };

/** More blocks than one extent of a record may hold (packetBytesMax / blockBytesMin is 2048). */
const refIndexSpan = 4096;

export function blockRef(seq: number, index: number): BlockRef {
  assert(Number.isSafeInteger(seq) && seq >= 1, 'a reference names an appended record');
  assert(Number.isInteger(index) && index >= 0 && index < refIndexSpan, 'a block index within one extent');
  return (seq * refIndexSpan + index) as BlockRef;
}

/** The append sequence of the record a reference points into. */
export function refSeq(ref: BlockRef): number {
  return Math.floor(ref / refIndexSpan);
}

/** The block's index in that record's extent. */
export function refIndex(ref: BlockRef): number {
  return ref % refIndexSpan;
}

export function isBlockRef(content: BlockContent | undefined): content is BlockRef {
  return typeof content === 'number';
}

/** One block's newest content: its bytes, null for zeroes, or where its bytes lie in the journal. */
export type BlockContent = Uint8Array | null | BlockRef;

/**
 * A run of adjacent blocks of one kind (zero, bytes in memory, or bytes in the journal) in a fold,
 * without the data.
 */
export interface Run {
  volume: number;
  block: number;
  blockCount: number;
  zero: boolean;
  /** Its blocks are references into the journal: read them with journaledPieces. */
  journaled: boolean;
}

/** Blocks `index`..`index+blockCount-1` of the extent of the record appended as `seq`. */
export interface JournalPiece {
  seq: number;
  index: number;
  blockCount: number;
}

export class FoldIndex {
  /** volume -> block -> content. */
  private readonly volumes = new Map<number, Map<number, BlockContent>>();
  private dataBlocks = 0;
  private zeroBlocks = 0;
  /** Data blocks whose bytes this fold holds (the others are references into the journal). */
  private blocksInMemory = 0;

  constructor(readonly blockBytes: number) {}

  /** Blocks with data plus blocks of zeroes. */
  get blockCount(): number {
    return this.dataBlocks + this.zeroBlocks;
  }

  /** Bytes that sending this fold carries as payload. */
  get payloadBytes(): number {
    return this.dataBlocks * this.blockBytes;
  }

  /** Bytes of block data this fold holds in memory; references into the journal hold none. */
  get payloadBytesInMemory(): number {
    return this.blocksInMemory * this.blockBytes;
  }

  get isEmpty(): boolean {
    return this.blockCount === 0;
  }

  add(extent: Extent): void {
    assert(extent.blockCount >= 1, 'an extent has at least one block');
    assert(
      extent.data === null || extent.data.length === extent.blockCount * this.blockBytes,
      'extent data covers exactly its blocks',
    );
    for (let i = 0; i < extent.blockCount; i++) {
      const content =
        extent.data === null ? null : extent.data.subarray(i * this.blockBytes, (i + 1) * this.blockBytes);
      this.set(extent.volume, extent.block + i, content);
    }
  }

  /**
   * Adds an extent whose bytes stay in the journal, in the record appended as `seq`: its blocks
   * become references (a zero extent, zeroes as ever).
   */
  addJournaled(
    extent: { volume: number; block: number; blockCount: number; zero: boolean },
    seq: number,
  ): void {
    assert(extent.blockCount >= 1, 'an extent has at least one block');
    for (let i = 0; i < extent.blockCount; i++)
      this.set(extent.volume, extent.block + i, extent.zero ? null : blockRef(seq, i));
  }

  /** Takes every block of `newer`, which wins over what this fold holds. */
  merge(newer: FoldIndex): void {
    assert(newer.blockBytes === this.blockBytes, 'folds of one group share a block size');
    for (const [volume, blocks] of newer.volumes) {
      for (const [block, content] of blocks) this.set(volume, block, content);
    }
  }

  /** The block's content as held: bytes, zeroes (null), a reference into the journal, or undefined. */
  content(volume: number, block: number): BlockContent | undefined {
    return this.volumes.get(volume)?.get(block);
  }

  /** The block's bytes (null for zeroes), for folds that hold their data in memory (the primary's). */
  get(volume: number, block: number): Uint8Array | null | undefined {
    const content = this.content(volume, block);
    assert(!isBlockRef(content), 'a fold of references is read with content()');
    return content;
  }

  private set(volume: number, block: number, content: BlockContent): void {
    let blocks = this.volumes.get(volume);
    if (!blocks) {
      blocks = new Map();
      this.volumes.set(volume, blocks);
    }
    const previous = blocks.get(block);
    if (previous !== undefined) this.count(previous, -1);
    blocks.set(block, content);
    this.count(content, 1);
  }

  private count(content: BlockContent, delta: number): void {
    if (content === null) this.zeroBlocks += delta;
    else this.dataBlocks += delta;
    if (content instanceof Uint8Array) this.blocksInMemory += delta;
  }

  /**
   * The fold as extents, by volume and block, each a run of adjacent blocks of one kind, data runs
   * at most `extentBytesMax` long. Their data is shared with the fold or copied (see extentOf);
   * either way it stays valid, since the content of a block is never changed, only replaced.
   */
  extents(extentBytesMax: number): Extent[] {
    return this.runs(extentBytesMax).map((run) => this.extentOf(run));
  }

  /**
   * The same runs as `extents`, without their data: cheap to list for a whole cycle, so that the
   * data of each is copied only when its packet is built.
   */
  runs(extentBytesMax: number): Run[] {
    const blocksPerDataExtent = Math.max(1, Math.floor(extentBytesMax / this.blockBytes));
    const result: Run[] = [];
    for (const volume of [...this.volumes.keys()].sort((a, b) => a - b)) {
      const blocks = this.volumes.get(volume) as Map<number, BlockContent>;
      const sorted = [...blocks.keys()].sort((a, b) => a - b);
      let runStart = 0;
      while (runStart < sorted.length) {
        const first = sorted[runStart] as number;
        const kind = kindOf(blocks.get(first) as BlockContent);
        const zero = kind === 'zero';
        let runEnd = runStart + 1;
        while (
          runEnd < sorted.length &&
          sorted[runEnd] === first + (runEnd - runStart) &&
          kindOf(blocks.get(sorted[runEnd] as number) as BlockContent) === kind &&
          (zero || runEnd - runStart < blocksPerDataExtent)
        ) {
          runEnd++;
        }
        result.push({
          volume,
          block: first,
          blockCount: runEnd - runStart,
          zero,
          journaled: kind === 'journaled',
        });
        runStart = runEnd;
      }
    }
    return result;
  }

  /**
   * One run with its data. When its blocks lie back to back in one buffer (the blocks of one
   * received packet do) the data is a view of them, not a copy: applying a recovery cycle of a
   * gigabyte then costs no gigabyte of copying in one synchronous step, which held a secondary's
   * event loop for seconds and failed its link.
   */
  extentOf(run: Run): Extent {
    const { volume, block: first, blockCount } = run;
    if (run.zero) return { volume, block: first, blockCount, data: null };
    assert(!run.journaled, 'a run in the journal is read with journaledPieces');
    const blocks = this.volumes.get(volume) as Map<number, BlockContent>;
    const view = this.viewOfRun(blocks, first, blockCount);
    if (view) return { volume, block: first, blockCount, data: view };
    const data = new Uint8Array(blockCount * this.blockBytes);
    for (let i = 0; i < blockCount; i++) {
      data.set(blocks.get(first + i) as Uint8Array, i * this.blockBytes);
    }
    return { volume, block: first, blockCount, data };
  }

  /**
   * Where a run in the journal lies: its blocks as pieces of the records that hold them, in block
   * order, adjacent blocks of one record in one piece.
   */
  journaledPieces(run: Run): JournalPiece[] {
    assert(run.journaled, 'a run in the journal');
    const blocks = this.volumes.get(run.volume) as Map<number, BlockContent>;
    const pieces: JournalPiece[] = [];
    let last: JournalPiece | null = null;
    for (let i = 0; i < run.blockCount; i++) {
      const ref = blocks.get(run.block + i);
      assert(isBlockRef(ref), 'every block of a journaled run is a reference');
      const seq = refSeq(ref);
      const index = refIndex(ref);
      if (last && last.seq === seq && last.index + last.blockCount === index) last.blockCount++;
      else {
        last = { seq, index, blockCount: 1 };
        pieces.push(last);
      }
    }
    return pieces;
  }

  /** The reference of a journaled run's first block: runs sort by it into journal order. */
  firstRef(run: Run): BlockRef {
    const ref = this.volumes.get(run.volume)?.get(run.block);
    assert(run.journaled && isBlockRef(ref), 'a run in the journal');
    return ref;
  }

  /** The run's bytes as one view when its blocks are consecutive slices of one buffer, else null. */
  private viewOfRun(blocks: Map<number, BlockContent>, first: number, blockCount: number): Uint8Array | null {
    const head = blocks.get(first) as Uint8Array;
    for (let i = 1; i < blockCount; i++) {
      const content = blocks.get(first + i) as Uint8Array;
      if (content.buffer !== head.buffer || content.byteOffset !== head.byteOffset + i * this.blockBytes)
        return null;
    }
    return new Uint8Array(head.buffer, head.byteOffset, blockCount * this.blockBytes);
  }

  /** Calls `visit` for every block, by volume and block; for apply and for the simulator's oracle. */
  forEachBlock(visit: (volume: number, block: number, content: BlockContent) => void): void {
    for (const [volume, blocks] of this.volumes) {
      for (const [block, content] of blocks) visit(volume, block, content);
    }
  }
}

function kindOf(content: BlockContent): 'zero' | 'bytes' | 'journaled' {
  return content === null ? 'zero' : isBlockRef(content) ? 'journaled' : 'bytes';
}
