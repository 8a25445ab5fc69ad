/**
 * The changed-block bitmap of a secondary in tracking mode, one file per secondary at
 * `<dataDir>/tracking/<secondary>.bitmap` (docs/resync.md). Replaced atomically (temporary file,
 * fdatasync, rename, directory fsync): a crash leaves the old bitmap or the new one. The journal
 * is collected past the secondary only after the new one is durable.
 *
 * Layout (big-endian): magic "CRTRACK1" | u32 CRC32C of every byte after it | u64 base |
 * u64 through | u32 chunkBlocks | u16 volume count | per volume: u32 bitset bytes, the bitset.
 */
import { join } from 'node:path';
import type { TrackingState } from '../core/changed-blocks.ts';
import { StorageError } from '../core/errors.ts';
import { type FileSystem, syncDirectory } from '../io/file-system.ts';
import { ByteReader, ByteWriter } from '../protocol/bytes.ts';
import { crc32c } from '../protocol/crc32c.ts';
import { dataFileMode, makeDirectoryDurable } from './durable-file.ts';

const magic = new TextEncoder().encode('CRTRACK1');
const suffix = '.bitmap';

export function trackingDirectory(dataDir: string): string {
  return join(dataDir, 'tracking');
}

export function trackingFilePath(dataDir: string, secondary: string): string {
  return join(trackingDirectory(dataDir), `${secondary}${suffix}`);
}

export function encodeTrackingState(state: TrackingState): Uint8Array {
  const bitsetBytes = state.bits.reduce((sum, bitset) => sum + 4 + bitset.length, 0);
  const writer = new ByteWriter(8 + 4 + 8 + 8 + 4 + 2 + bitsetBytes)
    .raw(magic)
    .u32(0)
    .u64(state.base)
    .u64(state.through)
    .u32(state.chunkBlocks)
    .u16(state.bits.length);
  for (const bitset of state.bits) writer.u32(bitset.length).raw(bitset);
  const bytes = writer.finish();
  new DataView(bytes.buffer).setUint32(8, crc32c(bytes.subarray(12)));
  return bytes;
}

/**
 * The state in `bytes`, read from `path`; damage is refused with the path and what to do, since a
 * bitmap that lost a bit would lose that block at the secondary.
 */
export function decodeTrackingState(
  path: string,
  bytes: Uint8Array,
  volumeBlockCounts: readonly number[],
): TrackingState {
  const refuse = (problem: string): never => {
    throw new StorageError(
      'tracking-file-corrupt',
      `${path}: ${problem}. Refusing to guess which blocks changed; removing this file makes that secondary copy every block (a full resync, nothing lost)`,
    );
  };
  if (bytes.length < 34 || !magic.every((byte, index) => bytes[index] === byte))
    refuse('not a cyclerep tracking bitmap (magic CRTRACK1 missing)');
  const stored = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength).getUint32(8);
  if (crc32c(bytes.subarray(12)) !== stored) refuse('CRC32C mismatch');
  try {
    const reader = new ByteReader(bytes.subarray(12), path);
    const base = reader.u64('base');
    const through = reader.u64('through');
    const chunkBlocks = reader.u32('chunkBlocks');
    const volumes = reader.u16('volumes');
    if (volumes !== volumeBlockCounts.length)
      refuse(`${volumes} volumes, the group has ${volumeBlockCounts.length}`);
    if (chunkBlocks < 1) refuse('chunks of 0 blocks');
    if (base > through) refuse(`base ${base} above through ${through}`);
    const bits: Uint8Array[] = [];
    for (let volume = 0; volume < volumes; volume++) {
      const length = reader.u32('bitset bytes');
      const expected = Math.ceil(Math.ceil((volumeBlockCounts[volume] as number) / chunkBlocks) / 8);
      if (length !== expected)
        refuse(`volume ${volume}: a bitset of ${length} bytes, its size needs ${expected}`);
      bits.push(new Uint8Array(reader.raw(length, 'bitset')));
    }
    if (reader.remaining !== 0) refuse(`${reader.remaining} bytes after the last bitset`);
    return { base, through, chunkBlocks, bits };
  } catch (error) {
    if (error instanceof StorageError) throw error;
    return refuse((error as Error).message);
  }
}

/**
 * The saved bitmaps of the given secondaries, at start (a secondary without a file is absent); the
 * directory is made durable here, so that saves at run time need not.
 */
export function readTrackingStates(
  fs: FileSystem,
  dataDir: string,
  secondaries: readonly string[],
  volumeBlockCounts: readonly number[],
): Map<string, TrackingState> {
  makeDirectoryDurable(fs, trackingDirectory(dataDir));
  const states = new Map<string, TrackingState>();
  for (const secondary of secondaries) {
    const path = trackingFilePath(dataDir, secondary);
    if (!fs.existsSync(path)) continue;
    states.set(secondary, decodeTrackingState(path, fs.readFileSync(path), volumeBlockCounts));
  }
  return states;
}

/** Replaces the secondary's bitmap durably; resolves once a crash can no longer take it back. */
export async function saveTrackingState(
  fs: FileSystem,
  dataDir: string,
  secondary: string,
  state: TrackingState,
): Promise<void> {
  const directory = trackingDirectory(dataDir);
  const path = trackingFilePath(dataDir, secondary);
  const temporary = `${path}.tmp`;
  const bytes = encodeTrackingState(state);
  const fd = await fs.open(temporary, 'w', dataFileMode);
  try {
    for (let written = 0; written < bytes.length; )
      written += await fs.write(fd, bytes, written, bytes.length - written, written);
    await fs.fdatasync(fd);
  } finally {
    await fs.close(fd);
  }
  await fs.rename(temporary, path);
  await syncDirectory(fs, directory);
}

/** The resync ended: the bitmap goes (one a crash keeps only makes the next resync copy equal blocks). */
export async function dropTrackingState(fs: FileSystem, dataDir: string, secondary: string): Promise<void> {
  const path = trackingFilePath(dataDir, secondary);
  try {
    await fs.unlink(path);
  } catch (error) {
    if ((error as { code?: string }).code !== 'ENOENT') throw error;
  }
}
