/**
 * Write folding: the content of one cycle (or of several, merged into a recovery cycle) as the
 * newest data per block. Inside a cycle order does not matter to the secondary, so only the last
 * write to each block needs to travel.
 */
import { assert } from './assert.ts';
import type { Extent } from './types.ts';

/** One block's newest content: its bytes, or null for zeroes. */
export type BlockContent = Uint8Array | null;

/** A run of adjacent blocks of one kind (data or zero) in a fold, without the data. */
export interface Run {
  volume: number;
  block: number;
  blockCount: number;
  zero: boolean;
}

export class FoldIndex {
  /** volume -> block -> content. */
  private readonly volumes = new Map<number, Map<number, BlockContent>>();
  private dataBlocks = 0;
  private zeroBlocks = 0;

  constructor(readonly blockBytes: number) {}

  /** Blocks with data plus blocks of zeroes. */
  get blockCount(): number {
    return this.dataBlocks + this.zeroBlocks;
  }

  /** Bytes that sending this fold carries as payload. */
  get payloadBytes(): number {
    return this.dataBlocks * this.blockBytes;
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

  /** Takes every block of `newer`, which wins over what this fold holds. */
  merge(newer: FoldIndex): void {
    assert(newer.blockBytes === this.blockBytes, 'folds of one group share a block size');
    for (const [volume, blocks] of newer.volumes) {
      for (const [block, content] of blocks) this.set(volume, block, content);
    }
  }

  get(volume: number, block: number): BlockContent | undefined {
    return this.volumes.get(volume)?.get(block);
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
        const zero = blocks.get(first) === null;
        let runEnd = runStart + 1;
        while (
          runEnd < sorted.length &&
          sorted[runEnd] === first + (runEnd - runStart) &&
          (blocks.get(sorted[runEnd] as number) === null) === zero &&
          (zero || runEnd - runStart < blocksPerDataExtent)
        ) {
          runEnd++;
        }
        result.push({ volume, block: first, blockCount: runEnd - runStart, zero });
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
    const blocks = this.volumes.get(volume) as Map<number, BlockContent>;
    const view = this.viewOfRun(blocks, first, blockCount);
    if (view) return { volume, block: first, blockCount, data: view };
    const data = new Uint8Array(blockCount * this.blockBytes);
    for (let i = 0; i < blockCount; i++) {
      data.set(blocks.get(first + i) as Uint8Array, i * this.blockBytes);
    }
    return { volume, block: first, blockCount, data };
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
