/**
 * `cyclerep rejoin --save-discarded FILE` (docs/failover.md, "What a rejoin discards"): before a
 * rejoin undoes this site's writes after the promotion cycle, the blocks that hold them are copied
 * into FILE, for forensics, as this site shows them now. The rejoin goes ahead only once the file
 * is durable; a save that fails refuses the rejoin and changes nothing.
 *
 * The file: a first line `cyclerep-discarded 1`, a second line of JSON (the manifest: whose writes,
 * after which cycle, and each run's volume, byte offset and length, and `at`, where its bytes start
 * in the data), then the data: every run's bytes, one after the other. Runs are whole tracking
 * chunks, so they may hold blocks not written after the cycle as well.
 */
import { dirname } from 'node:path';
import type { FileSystem } from '../io/file-system.ts';
import { syncDirectorySync } from '../io/file-system.ts';
import type { BlockRun } from '../protocol/frames.ts';
import type { VolumeRecord } from '../storage/site-file.ts';

export const discardedFileHeader = 'cyclerep-discarded 1';
/** Bytes read from the image and written to the file at a time. */
const copyBytesMax = 1024 * 1024;

export interface DiscardedManifest {
  group: string;
  site: string;
  /** The writes saved are those this site took after this cycle. */
  afterCycle: number;
  supersededBy: string;
  blockSize: number;
  runs: { volume: string; offset: number; length: number; at: number }[];
  bytes: number;
}

/** What the save needs of the site: its image, by volume index. */
export interface DiscardedSource {
  read(index: number, offset: number, length: number): Promise<Uint8Array>;
}

/**
 * Writes the runs' bytes to `path` (which must not exist) and makes it durable; throws with the
 * path named when it cannot. Returns the manifest written.
 */
export async function saveDiscarded(
  fs: FileSystem,
  path: string,
  source: DiscardedSource,
  volumes: readonly VolumeRecord[],
  runs: readonly BlockRun[],
  facts: Omit<DiscardedManifest, 'runs' | 'bytes'>,
): Promise<DiscardedManifest> {
  const manifest = manifestOf(volumes, runs, facts);
  const head = new TextEncoder().encode(`${discardedFileHeader}\n${JSON.stringify(manifest)}\n`);
  let fd: number;
  try {
    fd = await fs.open(path, 'wx', 0o600);
  } catch (error) {
    throw new Error(`${path}: cannot create it (${(error as Error).message}); it must not exist yet`);
  }
  try {
    await writeAll(fs, fd, head, 0);
    let at = head.length;
    for (const run of runs) {
      const index = volumes.findIndex((volume) => volume.id === run.volume);
      for (let done = 0; done < run.blockCount * facts.blockSize; ) {
        const length = Math.min(copyBytesMax, run.blockCount * facts.blockSize - done);
        const bytes = await source.read(index, run.block * facts.blockSize + done, length);
        await writeAll(fs, fd, bytes, at);
        at += length;
        done += length;
      }
    }
    await fs.fdatasync(fd);
  } catch (error) {
    // Half a file would pass for the whole record: it goes.
    await fs.close(fd).catch(() => {});
    await fs.unlink(path).catch(() => {});
    throw new Error(`${path}: saving the discarded writes failed: ${(error as Error).message}`);
  }
  await fs.close(fd);
  syncDirectorySync(fs, dirname(path));
  return manifest;
}

function manifestOf(
  volumes: readonly VolumeRecord[],
  runs: readonly BlockRun[],
  facts: Omit<DiscardedManifest, 'runs' | 'bytes'>,
): DiscardedManifest {
  let at = 0;
  const described = runs.map((run) => {
    const volume = volumes.find((candidate) => candidate.id === run.volume);
    if (!volume) throw new Error(`a discarded run names volume ${run.volume}, which this site does not hold`);
    const entry = {
      volume: volume.name,
      offset: run.block * facts.blockSize,
      length: run.blockCount * facts.blockSize,
      at,
    };
    at += entry.length;
    return entry;
  });
  return { ...facts, runs: described, bytes: at };
}

async function writeAll(fs: FileSystem, fd: number, bytes: Uint8Array, position: number): Promise<void> {
  for (let done = 0; done < bytes.length; ) {
    done += await fs.write(fd, bytes, done, bytes.length - done, position + done);
  }
}
