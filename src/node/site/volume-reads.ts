/**
 * Reading a volume as the site shows it: the file's bytes with newer blocks laid over them (the
 * primary's journaled writes not yet written back, a secondary's cycle being applied). The overlay
 * is taken before the file is read: blocks that leave it during the read have landed in the file.
 */
import { applyOverlay, collectOverlay } from '../../storage/block-overlay.ts';
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
