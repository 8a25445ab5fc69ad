/**
 * Which parts of a range read as zeroes, found from the bytes themselves. cyclerep writes zero runs
 * as zeroes (nothing is punched), so the content is the only truth it has about "zero"; it never
 * claims a hole (NBD_STATE_HOLE), only NBD_STATE_ZERO, which is what clients use to skip work.
 */

export interface Run {
  offset: number;
  length: number;
  zero: boolean;
}

const zeroGranules = new Map<number, Buffer>();

function zeroGranule(bytes: number): Buffer {
  let found = zeroGranules.get(bytes);
  if (!found) {
    found = Buffer.alloc(bytes);
    zeroGranules.set(bytes, found);
  }
  return found;
}

/**
 * Splits `data` (which starts at `offset` of the export) into alternating zero and data runs at
 * `granule` resolution; a trailing partial granule counts as data unless it is all zeroes too.
 */
export function zeroRuns(data: Uint8Array, offset: number, granule: number): Run[] {
  const bytes = Buffer.from(data.buffer, data.byteOffset, data.length);
  const zero = zeroGranule(granule);
  const runs: Run[] = [];
  for (let at = 0; at < bytes.length; at += granule) {
    const end = Math.min(at + granule, bytes.length);
    const isZero = zero.compare(bytes, at, end, 0, end - at) === 0;
    const last = runs[runs.length - 1];
    if (last && last.zero === isZero) last.length += end - at;
    else runs.push({ offset: offset + at, length: end - at, zero: isZero });
  }
  return runs;
}

/**
 * Zero runs shorter than `holeBytesMin` are folded into the data around them, so a read reply is
 * not cut into many small chunks for the sake of a few zero blocks.
 */
export function coarsen(runs: readonly Run[], holeBytesMin: number): Run[] {
  const merged: Run[] = [];
  for (const run of runs) {
    const zero = run.zero && run.length >= holeBytesMin;
    const last = merged[merged.length - 1];
    if (last && last.zero === zero) last.length += run.length;
    else merged.push({ offset: run.offset, length: run.length, zero });
  }
  return merged;
}
