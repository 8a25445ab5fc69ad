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

/** `fs.write` through the thread pool, or inline when the policy says so (a settled promise then). */
function writeSmallInline(
  fd: number,
  data: Uint8Array,
  offset: number,
  length: number,
  position: number | null,
): Promise<number> {
  const startedMs = performance.now();
  // Appends (the journal's, at the end of what the descriptor wrote) stay in the pool: inline,
  // the journal took writes faster than a switch to tracking could collect it, and a frozen
  // secondary's test filled a small journal (test/integration/away-secondary.test.ts).
  if (position === null || !inlineWrites.inline(length, startedMs))
    return writeAsync(fd, data, offset, length, position).then((result) => result.bytesWritten);
  try {
    if (inlineWrites.opensTurn()) setImmediate(() => inlineWrites.newTurn());
    const written = fs.writeSync(fd, data, offset, length, position);
    inlineWrites.observed(startedMs, performance.now());
    return Promise.resolve(written);
  } catch (error) {
    return Promise.reject(error);
  }
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
  write: writeSmallInline,
  // Through the pool: the journal's batches, whose large pieces are the clients' own buffers.
  writev: async (fd, pieces, position) =>
    (await writevAsync(fd, pieces as NodeJS.ArrayBufferView[], position ?? undefined)).bytesWritten,
  fsync: (fd) => promisify(fs.fsync)(fd),
  fdatasync: (fd) => promisify(fs.fdatasync)(fd),
  rename: (from, to) => fs.promises.rename(from, to),
  unlink: (path) => fs.promises.unlink(path),
};
