/**
 * Reading a volume as the site shows it: the file's bytes with newer blocks laid over them (the
 * primary's journaled writes not yet written back, a secondary's cycle being applied). The overlay
 * is taken before the file is read: blocks that leave it during the read have landed in the file.
 */
import { type BlockContent, isBlockRef, type JournalPiece, refIndex, refSeq } from '../../core/fold.ts';
import { applyOverlay, type BlockOverlay, collectOverlay } from '../../storage/block-overlay.ts';
import type { VolumeFile } from '../../storage/volume-file.ts';

/** `newest(block)`: the block's newer content, null for zeroes, undefined when the file has it. */
export async function readThroughOverlay(
  file: VolumeFile,
  offset: number,
  length: number,
  newest: (block: number) => Uint8Array | null | undefined,
): Promise<Uint8Array> {
  const overlay = collectOverlay(offset, length, file.blockBytes, newest);
  return applyOverlay(await file.read(offset, length), offset, file.blockBytes, overlay);
}

/**
 * The same over an overlay whose blocks may be references into the journal (the secondary's cycle
 * being applied): the referenced blocks are read back (`readPieces`, adjacent blocks of one record
 * as one piece) before the file, so the overlay is still taken before the file is read.
 */
export async function readThroughJournaledOverlay(
  file: VolumeFile,
  offset: number,
  length: number,
  newest: (block: number) => BlockContent | undefined,
  readPieces: (pieces: JournalPiece[]) => Promise<Uint8Array>,
): Promise<Uint8Array> {
  const contents = collectContents(offset, length, file.blockBytes, newest);
  const pieces: JournalPiece[] = [];
  for (const [, content] of contents) {
    if (!isBlockRef(content)) continue;
    const last = pieces.at(-1);
    if (last && last.seq === refSeq(content) && last.index + last.blockCount === refIndex(content))
      last.blockCount++;
    else pieces.push({ seq: refSeq(content), index: refIndex(content), blockCount: 1 });
  }
  const journaled = pieces.length > 0 ? await readPieces(pieces) : new Uint8Array(0);
  let at = 0;
  const overlay: BlockOverlay = contents.map(([block, content]) => {
    if (!isBlockRef(content)) return [block, content];
    const bytes = journaled.subarray(at, at + file.blockBytes);
    at += file.blockBytes;
    return [block, bytes];
  });
  return applyOverlay(await file.read(offset, length), offset, file.blockBytes, overlay);
}

function collectContents(
  offset: number,
  length: number,
  blockBytes: number,
  newest: (block: number) => BlockContent | undefined,
): [block: number, content: BlockContent][] {
  const contents: [number, BlockContent][] = [];
  for (let block = Math.floor(offset / blockBytes); block * blockBytes < offset + length; block++) {
    const content = newest(block);
    if (content !== undefined) contents.push([block, content]);
  }
  return contents;
}
