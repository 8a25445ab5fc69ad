/**
 * The file system as the sites' storage code sees it: the few calls it makes, by file descriptor,
 * shaped like node:fs so production passes node:fs through (node-file-system.ts) and the simulator
 * passes a disk model (src/sim/) that loses, tears and reorders what was not synced.
 *
 * Synchronous calls are for opening a site and replacing small state files, when nothing else runs;
 * the running site's reads, writes and syncs are asynchronous, so a model may complete them late and
 * out of order. Failures are thrown as node:fs does: an Error with `code` (ENOENT, EEXIST, ENOSPC, EIO),
 * `syscall` and `path`, so callers classify them the same way whichever file system ran.
 */

import { assert } from '../core/assert.ts';

/** How a file is opened: as node:fs reads these strings. `wx`/`wx+` fail with EEXIST on an existing file. */
export type OpenFlags = 'r' | 'r+' | 'w' | 'wx' | 'wx+';

export interface FileStats {
  size: number;
  /** st_ino as a decimal string: inode numbers may exceed 2^53. */
  inode: string;
  /** Permission bits (st_mode & 0o777). */
  mode: number;
  isDirectory: boolean;
}

/** The room on the file system holding a path, as statfs(2) reports it. */
export interface DiskSpace {
  /** Bytes an unprivileged process may still allocate (f_bavail x f_bsize). */
  freeBytes: number;
  /** Bytes of the whole file system (f_blocks x f_bsize). */
  totalBytes: number;
}

export interface FileSystem {
  // ---- synchronous: while a site opens, and for small files replaced atomically ----
  openSync(path: string, flags: OpenFlags, mode?: number): number;
  closeSync(fd: number): void;
  /** Writes at `position`, or at the end of what this descriptor wrote when null; returns bytes written. */
  writeSync(fd: number, data: Uint8Array, offset: number, length: number, position: number | null): number;
  /** Makes the file's data and metadata durable; on a directory, its entries (creations, renames, unlinks). */
  fsyncSync(fd: number): void;
  fdatasyncSync(fd: number): void;
  ftruncateSync(fd: number, length: number): void;
  fstatSync(fd: number): FileStats;
  /** Throws ENOENT when nothing is at `path`. */
  statSync(path: string): FileStats;
  existsSync(path: string): boolean;
  readFileSync(path: string): Uint8Array;
  readdirSync(path: string): string[];
  /** Creates the directory and any missing parents; nothing if it exists. */
  mkdirSync(path: string, mode: number): void;
  renameSync(from: string, to: string): void;
  unlinkSync(path: string): void;
  /** Removes the file if it exists. */
  removeIfPresentSync(path: string): void;
  truncateSync(path: string, length: number): void;
  /**
   * The room on the file system holding `path`. Synchronous though the site is running: statfs
   * reads the superblock's counters, it does not wait for the disk.
   */
  statfsSync(path: string): DiskSpace;

  // ---- asynchronous: the running site's I/O ----
  open(path: string, flags: OpenFlags, mode?: number): Promise<number>;
  close(fd: number): Promise<void>;
  read(fd: number, buffer: Uint8Array, offset: number, length: number, position: number): Promise<number>;
  write(
    fd: number,
    data: Uint8Array,
    offset: number,
    length: number,
    position: number | null,
  ): Promise<number>;
  /**
   * Writes `pieces` one after the other (a gathered write: no copy into one buffer first) at
   * `position`, or where the descriptor is when null; may write fewer bytes than given.
   */
  writev(fd: number, pieces: readonly Uint8Array[], position: number | null): Promise<number>;
  fsync(fd: number): Promise<void>;
  fdatasync(fd: number): Promise<void>;
  rename(from: string, to: string): Promise<void>;
  unlink(path: string): Promise<void>;
}

/**
 * Writes all of `pieces` with gathered writes, at `position` (null: where the descriptor is): a
 * write may take fewer bytes than given, the next goes on from there.
 */
export async function writevAll(
  fs: FileSystem,
  fd: number,
  pieces: readonly Uint8Array[],
  position: number | null,
): Promise<void> {
  const bytes = pieces.reduce((sum, piece) => sum + piece.length, 0);
  let left = pieces;
  for (let written = 0; written < bytes; ) {
    const took = await fs.writev(fd, left, position === null ? null : position + written);
    assert(took > 0, () => `a gathered write takes at least one byte or fails (took ${took})`);
    written += took;
    if (written < bytes) left = piecesAfter(left, took);
  }
}

/** What is left of `pieces` after their first `bytes` bytes were written. */
export function piecesAfter(pieces: readonly Uint8Array[], bytes: number): Uint8Array[] {
  let skip = bytes;
  let index = 0;
  while (index < pieces.length && skip >= (pieces[index] as Uint8Array).length) {
    skip -= (pieces[index] as Uint8Array).length;
    index++;
  }
  const left = pieces.slice(index);
  if (skip > 0 && left[0]) left[0] = left[0].subarray(skip);
  return left;
}

/** Makes a creation, rename or unlink in `directory` durable (synchronously). */
export function syncDirectorySync(fs: FileSystem, directory: string): void {
  const fd = fs.openSync(directory, 'r');
  try {
    fs.fsyncSync(fd);
  } finally {
    fs.closeSync(fd);
  }
}

/** Makes a creation, rename or unlink in `directory` durable. */
export async function syncDirectory(fs: FileSystem, directory: string): Promise<void> {
  const fd = await fs.open(directory, 'r');
  try {
    await fs.fsync(fd);
  } finally {
    await fs.close(fd);
  }
}
