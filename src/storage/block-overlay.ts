/**
 * Read paths overlay blocks held elsewhere (the journal's index, the cycle being applied) on bytes
 * read from a volume file. An overlay is collected before the file is read; see the read paths.
 */

/** Blocks and their content (null: zeroes). */
export type BlockOverlay = [block: number, content: Uint8Array | null][];

/**
 * Collects the overlay of the blocks that cover offset..offset+length: what `lookup` holds for each
 * (bytes, zeroes, or where to read them), undefined when the file has the block.
 */
export function collectOverlay<Content>(
  offset: number,
  length: number,
  blockBytes: number,
  lookup: (block: number) => Content | undefined,
): [block: number, content: Content][] {
  const overlay: [number, Content][] = [];
  for (let block = Math.floor(offset / blockBytes); block * blockBytes < offset + length; block++) {
    const content = lookup(block);
    if (content !== undefined) overlay.push([block, content]);
  }
  return overlay;
}

/** Writes the overlay's blocks over `bytes`, which hold the range starting at `offset`. */
export function applyOverlay(
  bytes: Uint8Array,
  offset: number,
  blockBytes: number,
  overlay: BlockOverlay,
): Uint8Array {
  for (const [block, content] of overlay) {
    const start = block * blockBytes - offset;
    const from = Math.max(0, -start);
    const to = Math.min(blockBytes, bytes.length - start);
    if (content === null) bytes.fill(0, start + from, start + to);
    else bytes.set(content.subarray(from, to), start + from);
  }
  return bytes;
}
