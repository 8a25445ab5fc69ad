/**
 * Reading a volume as the site shows it: the file's bytes with newer blocks laid over them (the
 * primary's journaled writes not yet written back, a secondary's cycle being applied). The overlay
 * is taken before the file is read: blocks that leave it during the read have landed in the file.
 */
import { type BlockContent, isBlockRef, type JournalPiece, refIndex, refSeq } from '../../core/fold.ts';
import { applyOverlay, type BlockOverlay, collectOverlay } from '../../storage/block-overlay.ts';
import type { VolumeFile } from '../../storage/volume-file.ts';

/**
 * `newest(block)`: the block's newer content (bytes, null for zeroes, or a reference into the
 * journal), undefined when the file has it. The referenced blocks are read back (`readPieces`,
 * adjacent blocks of one record as one piece) before the file, so the overlay is still taken
 * before the file is read.
 */
export async function readThroughJournaledOverlay(
  file: VolumeFile,
  offset: number,
  length: number,
  newest: (block: number) => BlockContent | undefined,
  readPieces: (pieces: JournalPiece[]) => Promise<Uint8Array>,
): Promise<Uint8Array> {
  const contents = collectOverlay(offset, length, file.blockBytes, newest);
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
