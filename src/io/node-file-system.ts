/** node:fs behind the FileSystem seam, for production: every call is the node:fs call of the same name. */
import * as fs from 'node:fs';
import { promisify } from 'node:util';
import type { DiskSpace, FileStats, FileSystem } from './file-system.ts';
import { InlineWritePolicy } from './inline-writes.ts';

const readAsync = promisify(fs.read);
const writeAsync = promisify(fs.write);
const writevAsync = promisify(fs.writev);

/** One policy for the process: a slow write says the device is behind, whichever file it was. */
const inlineWrites = new InlineWritePolicy();

/**
 * Runs `write` inline when the policy lets a write of `length` bytes go (a settled promise then),
 * else `pooled` through the thread pool.
 */
function inlineOrPooled(length: number, write: () => number, pooled: () => Promise<number>): Promise<number> {
  const startedMs = performance.now();
  if (!inlineWrites.inline(length, startedMs)) return pooled();
  try {
    if (inlineWrites.opensTurn()) setImmediate(() => inlineWrites.newTurn());
    const written = write();
    inlineWrites.observed(startedMs, performance.now());
    return Promise.resolve(written);
  } catch (error) {
    return Promise.reject(error);
  }
}

// Appends (the journal's batches) go inline too. They were sent back to the pool once (8531de5)
// when the frozen-secondary test filled its journal; it fills it with appends in the pool too when
// another process saturates the disk (the disk's backpressure, which the test now tells apart from
// a journal held for the secondary; docs/performance.md).
function write(
  fd: number,
  data: Uint8Array,
  offset: number,
  length: number,
  position: number | null,
): Promise<number> {
  return inlineOrPooled(
    length,
    () => fs.writeSync(fd, data, offset, length, position),
    async () => (await writeAsync(fd, data, offset, length, position)).bytesWritten,
  );
}

/** Small gathered writes (a journal batch of small records) inline; large ones, the clients' own buffers, in the pool. */
function writev(fd: number, pieces: readonly Uint8Array[], position: number | null): Promise<number> {
  const length = pieces.reduce((sum, piece) => sum + piece.length, 0);
  const views = pieces as NodeJS.ArrayBufferView[];
  return inlineOrPooled(
    length,
    () => fs.writevSync(fd, views, position ?? undefined),
    async () => (await writevAsync(fd, views, position ?? undefined)).bytesWritten,
  );
}

function statsOf(stats: fs.BigIntStats): FileStats {
  return {
    size: Number(stats.size),
    inode: String(stats.ino),
    mode: Number(stats.mode & 0o777n),
    isDirectory: stats.isDirectory(),
  };
}

function spaceOf(stats: fs.BigIntStatsFs): DiskSpace {
  return {
    freeBytes: Number(stats.bavail * stats.bsize),
    totalBytes: Number(stats.blocks * stats.bsize),
  };
}

export const nodeFileSystem: FileSystem = {
  openSync: (path, flags, mode) => fs.openSync(path, flags, mode),
  closeSync: (fd) => fs.closeSync(fd),
  writeSync: (fd, data, offset, length, position) => fs.writeSync(fd, data, offset, length, position),
  fsyncSync: (fd) => fs.fsyncSync(fd),
  fdatasyncSync: (fd) => fs.fdatasyncSync(fd),
  ftruncateSync: (fd, length) => fs.ftruncateSync(fd, length),
  fstatSync: (fd) => statsOf(fs.fstatSync(fd, { bigint: true })),
  statSync: (path) => statsOf(fs.statSync(path, { bigint: true })),
  existsSync: (path) => fs.existsSync(path),
  readFileSync: (path) => fs.readFileSync(path),
  readdirSync: (path) => fs.readdirSync(path),
  mkdirSync: (path, mode) => {
    fs.mkdirSync(path, { recursive: true, mode });
  },
  renameSync: (from, to) => fs.renameSync(from, to),
  unlinkSync: (path) => fs.unlinkSync(path),
  removeIfPresentSync: (path) => fs.rmSync(path, { force: true }),
  truncateSync: (path, length) => fs.truncateSync(path, length),
  statfsSync: (path) => spaceOf(fs.statfsSync(path, { bigint: true })),

  open: (path, flags, mode) => promisify(fs.open)(path, flags, mode),
  close: (fd) => promisify(fs.close)(fd),
  read: async (fd, buffer, offset, length, position) =>
    (await readAsync(fd, buffer, offset, length, position)).bytesRead,
  write,
  writev,
  fsync: (fd) => promisify(fs.fsync)(fd),
  fdatasync: (fd) => promisify(fs.fdatasync)(fd),
  rename: (from, to) => fs.promises.rename(from, to),
  unlink: (path) => fs.promises.unlink(path),
};
