/**
 * Self-describing blocks, so that a checker can tell from image files alone whether an image is a
 * consistent cut of what the sources wrote. Each source owns a region of blocks of one volume and
 * writes its counter 0, 1, 2, ... to block (counter mod regionBlocks), one write at a time, each
 * issued after the previous was acknowledged; each write also names the newest acknowledged write
 * of another source it depends on. Header (big-endian), then a fill byte, then a CRC32C:
 *
 *   0  u32 magic "CRWL"    4 u16 source    6 u16 dependency source (0xffff: none)
 *   8  u32 counter        12 u32 dependency counter        16 u32 CRC32C of the block with this field 0
 */
import { crc32c } from '../protocol/crc32c.ts';

export const blockMagic = 0x4352574c;
export const noSource = 0xffff;

export interface BlockStamp {
  source: number;
  counter: number;
  dependency: { source: number; counter: number } | null;
}

export function stampBlock(stamp: BlockStamp, blockBytes: number): Uint8Array {
  const bytes = new Uint8Array(blockBytes);
  bytes.fill((stamp.source * 31 + stamp.counter) & 0xff, 20);
  const view = new DataView(bytes.buffer);
  view.setUint32(0, blockMagic);
  view.setUint16(4, stamp.source);
  view.setUint16(6, stamp.dependency?.source ?? noSource);
  view.setUint32(8, stamp.counter);
  view.setUint32(12, stamp.dependency?.counter ?? 0);
  view.setUint32(16, crc32c(bytes));
  return bytes;
}

/** The stamp of a block; null for a never-written (zero) block; 'damaged' for anything else. */
export function readStamp(block: Uint8Array): BlockStamp | null | 'damaged' {
  const view = new DataView(block.buffer, block.byteOffset, block.byteLength);
  if (view.getUint32(0) !== blockMagic) return block.every((byte) => byte === 0) ? null : 'damaged';
  const stored = view.getUint32(16);
  // A real copy (Buffer#slice would share memory), with the CRC field zeroed as when it was computed.
  const copy = new Uint8Array(block);
  new DataView(copy.buffer).setUint32(16, 0);
  if (crc32c(copy) !== stored) return 'damaged';
  const dependencySource = view.getUint16(6);
  return {
    source: view.getUint16(4),
    counter: view.getUint32(8),
    dependency:
      dependencySource === noSource ? null : { source: dependencySource, counter: view.getUint32(12) },
  };
}

/** Where each source writes: a run of blocks in one volume. */
export interface SourceRegion {
  source: number;
  volume: number;
  firstBlock: number;
  blocks: number;
}

export function layoutRegions(
  sources: number,
  volumeBlocks: number[],
  blocksPerSource: number,
): SourceRegion[] {
  const regions: SourceRegion[] = [];
  const used = volumeBlocks.map(() => 0);
  for (let source = 0; source < sources; source++) {
    const volume = source % volumeBlocks.length;
    const firstBlock = used[volume] as number;
    if (firstBlock + blocksPerSource > (volumeBlocks[volume] as number)) {
      throw new Error(`volume ${volume} has no room for source ${source}`);
    }
    used[volume] = firstBlock + blocksPerSource;
    regions.push({ source, volume, firstBlock, blocks: blocksPerSource });
  }
  return regions;
}

export interface CutCheck {
  consistent: boolean;
  /** Highest counter of each source the image shows (-1: none). */
  newest: number[];
  problems: string[];
}

/**
 * Decides whether an image (its volumes' bytes) is a consistent cut: for every source, the image
 * holds exactly its writes up to its newest visible counter (each block the latest of them that
 * maps there), and every visible write's dependency is visible too.
 */
export function checkCut(volumes: Uint8Array[], regions: SourceRegion[], blockBytes: number): CutCheck {
  const problems: string[] = [];
  const stamps = regions.map((region) => {
    const bytes = volumes[region.volume] as Uint8Array;
    return Array.from({ length: region.blocks }, (_, index) => {
      const start = (region.firstBlock + index) * blockBytes;
      return readStamp(bytes.subarray(start, start + blockBytes));
    });
  });
  const newest = stamps.map((blocks) =>
    blocks.reduce((max, stamp) => (stamp && stamp !== 'damaged' ? Math.max(max, stamp.counter) : max), -1),
  );
  regions.forEach((region, index) => {
    const top = newest[index] as number;
    (stamps[index] as (BlockStamp | null | 'damaged')[]).forEach((stamp, block) => {
      const where = `source ${region.source} block ${region.firstBlock + block}`;
      if (stamp === 'damaged') {
        problems.push(`${where}: damaged or mixed block`);
        return;
      }
      const expected = top - ((((top - block) % region.blocks) + region.blocks) % region.blocks);
      const want = top >= 0 && expected >= 0 ? expected : null;
      const got = stamp ? stamp.counter : null;
      if (got !== want)
        problems.push(`${where}: holds counter ${got}, a cut at counter ${top} needs ${want}`);
      if (stamp && stamp.source !== region.source)
        problems.push(`${where}: written by source ${stamp.source}`);
      const dependency = stamp?.dependency;
      if (dependency && (newest[dependency.source] ?? -1) < dependency.counter) {
        problems.push(
          `${where}: counter ${got} depends on source ${dependency.source} counter ${dependency.counter}, ` +
            `which the image lacks (it shows ${newest[dependency.source]})`,
        );
      }
    });
  });
  return { consistent: problems.length === 0, newest, problems };
}
