/**
 * A simulated disk behind the FileSystem seam: the sites' real storage code (journal segments,
 * volume images, site.json) runs over it, and it fails the way a real disk and kernel may.
 *
 * - Bytes, not records: each file has a page-cache view (what reads see) and a durable image (what
 *   the disk holds), apart per 512-byte sector (disk/file-inode.ts). fdatasync and fsync make a
 *   file's data and size durable. A directory entry (create, rename, unlink) is visible at once and
 *   durable once its directory is fsynced (disk/namespace.ts); until then a machine crash keeps or
 *   loses each change independently ('posix' metadata, the default) or keeps a prefix of them in
 *   order ('ordered', as ext4 and xfs do).
 * - Asynchronous calls complete after a seeded random delay through the simulator's scheduler, so
 *   they complete out of order. Their effect applies at completion, as if the kernel ran the system
 *   call at the last moment it could: a write's bytes reach the cache when the write completes (a read
 *   or sync completing earlier does not see them), a rename or unlink happens when it completes.
 *   A sync covers what was in the cache when it was ISSUED (a sector first written while it runs
 *   stays unsynced; one dirty at the issue is written as it is at completion, never older): the
 *   least a kernel promises, so code that counts on more is caught.
 * - A process crash (kill -9) keeps the cache and drops descriptors; a call in flight may have taken
 *   effect or not, and its caller never hears (its promise never settles). A machine crash also
 *   loses, keeps or tears each unsynced sector and each unsynced entry change; what is left is the
 *   new state. Give each life of a process its own handle (forProcess), so a dead one's code that
 *   still runs cannot touch the disk.
 * - Failures are node:fs-shaped errors: ENOENT, EEXIST, EBADF and the like where node:fs would throw
 *   them, ENOSPC when the capacity is used up, and ENOSPC or EIO injected on chosen calls (failWith).
 * - Deterministic: randomness only from the Random given, time only from the scheduler given.
 */

import { assert } from '../core/assert.ts';
import type { DiskSpace, FileStats, FileSystem, OpenFlags } from '../io/file-system.ts';
import type { DirectoryInode, Inode } from './disk/directory-inode.ts';
import { type FaultHandle, FaultInjector, type FaultRule } from './disk/faults.ts';
import { blockBytes, type FileCrashOdds, type FileInode } from './disk/file-inode.ts';
import { fsError, type Syscall } from './disk/fs-error.ts';
import { type MetadataOrder, Namespace, splitPath, type View } from './disk/namespace.ts';
import { ProcessFileSystem } from './disk/process-file-system.ts';
import type { Random } from './random.ts';

export type { FaultHandle, FaultRule } from './disk/faults.ts';
export type { MetadataOrder } from './disk/namespace.ts';

/** What the simulator provides: runs `callback` after `ms` of simulated time, never synchronously. */
export interface DiskScheduler {
  after(ms: number, callback: () => void): void;
}

export type CrashKind = 'process' | 'machine';

export interface CrashOdds extends FileCrashOdds {
  /** An unsynced entry change (creation, rename, unlink) reached the disk. */
  entryKept: number;
  /** A call in flight when its process died took effect anyway (a write perhaps in part). */
  pendingLanded: number;
}

export const defaultCrashOdds: CrashOdds = {
  sectorKept: 0.5,
  tornSector: 0.3,
  entryKept: 0.5,
  pendingLanded: 0.5,
};

export interface SimFileSystemOptions {
  /** The simulator's seeded source; the disk forks its own streams from it. */
  random: Random;
  scheduler: DiskScheduler;
  /** Longest delay of an fsync or fdatasync, in simulated milliseconds (drawn from 0 to it). */
  syncDelayMsMax: number;
  /** Longest delay of every other asynchronous call. */
  ioDelayMsMax: number;
  /**
   * Files on slower media (volume images on disks, the journal on flash): calls on a file whose
   * path matches wait up to `factor` times longer.
   */
  slowFiles?: { matches: (path: string) => boolean; factor: number };
  /** Room for file data (in 4 KiB blocks, rounded down); a full disk fails writes with ENOSPC. */
  capacityBytes?: number;
  crashOdds?: Partial<CrashOdds>;
  /** How unsynced directory entries survive a machine crash (disk/namespace.ts); 'posix' by default. */
  metadata?: MetadataOrder;
}

/** Counters for the simulator's summary. */
export interface SimDiskStats {
  writes: number;
  writtenBytes: number;
  reads: number;
  /** Successful fsync and fdatasync calls, of files and directories. */
  syncs: number;
  crashes: Record<CrashKind, number>;
  /** Unsynced sectors whose new bytes a machine crash lost (sectors that held the same bytes not counted). */
  lostSectors: number;
  tornSectors: number;
  revertedEntries: number;
  keptEntries: number;
  /** Files named like journal segments (`<16 digits>.seg`) created and removed: how often journals rolled over and were collected. */
  segmentsCreated: number;
  segmentsRemoved: number;
  /** Calls failed by failWith rules. */
  injectedFaults: number;
  /** Writes failed or cut short because the capacity was used up. */
  diskFull: number;
  /** Calls in flight at a crash that took effect anyway, and those that did not. */
  landedAtCrash: number;
  droppedAtCrash: number;
}

/** An open file description: what a descriptor refers to. */
interface OpenFile {
  inode: Inode;
  /** The path it was opened with: for fault rules and messages. */
  path: string;
  readable: boolean;
  writable: boolean;
  /** Where a write with position null goes: the end of what this descriptor wrote so far. */
  position: number;
}

/** An asynchronous call between its issue and its completion. */
interface Operation<T> {
  /** Applies the call's effect at completion; returns its result or throws its error. */
  run: () => T;
  /** What the call may still do if its process dies first; absent for calls a crash simply drops. */
  land?: (random: Random) => void;
  /** The inode the call works on: held until it completes, as the kernel holds the file. */
  holds?: Inode;
}

/** Journal segment files, counted for the summary only: the disk itself treats every file alike. */
const segmentFileName = /^\d{16}\.seg$/;

/** What a disk without a capacity reports as its room: far beyond anything a run writes. */
const unlimitedBytes = 2 ** 60;

/** Descriptors start here and are never reused, so a stale one fails loudly instead of reaching another file. */
const firstDescriptor = 10;

export class SimFileSystem implements FileSystem {
  readonly stats: SimDiskStats = {
    writes: 0,
    writtenBytes: 0,
    reads: 0,
    syncs: 0,
    crashes: { process: 0, machine: 0 },
    lostSectors: 0,
    tornSectors: 0,
    revertedEntries: 0,
    keptEntries: 0,
    segmentsCreated: 0,
    segmentsRemoved: 0,
    injectedFaults: 0,
    diskFull: 0,
    landedAtCrash: 0,
    droppedAtCrash: 0,
  };
  private readonly namespace: Namespace;
  private readonly faults = new FaultInjector();
  private readonly scheduler: DiskScheduler;
  /** Separate streams, so that a crash drawing more does not shift the delays, and back. */
  private readonly delays: Random;
  private readonly crashes: Random;
  private readonly syncDelayMsMax: number;
  private readonly ioDelayMsMax: number;
  private readonly slowFiles: SimFileSystemOptions['slowFiles'];
  private readonly capacityBlocks: number;
  private readonly odds: CrashOdds;
  private usedBlocks = 0;
  private readonly descriptors = new Map<number, OpenFile>();
  private nextDescriptor = firstDescriptor;
  /** Every change gets the next version: a sync covers the changes up to the version at its issue. */
  private version = 0;
  /** The process's life, counted in crashes: a completion from an earlier life is dropped unheard. */
  private epoch = 0;
  private readonly pending = new Map<number, Operation<unknown>>();
  private nextOperation = 0;

  constructor(options: SimFileSystemOptions) {
    assert(options.syncDelayMsMax >= 0 && options.ioDelayMsMax >= 0, 'delays are not negative');
    this.scheduler = options.scheduler;
    this.delays = options.random.fork();
    this.crashes = options.random.fork();
    this.syncDelayMsMax = options.syncDelayMsMax;
    this.ioDelayMsMax = options.ioDelayMsMax;
    this.slowFiles = options.slowFiles;
    this.capacityBlocks =
      options.capacityBytes === undefined
        ? Number.POSITIVE_INFINITY
        : Math.floor(options.capacityBytes / blockBytes);
    this.odds = { ...defaultCrashOdds, ...options.crashOdds };
    this.namespace = new Namespace(options.metadata ?? 'posix');
  }

  // ---- synchronous calls: they act at once ----

  openSync(path: string, flags: OpenFlags, mode = 0o666): number {
    return this.openNow(path, flags, mode);
  }

  closeSync(fd: number): void {
    this.closeNow(fd);
  }

  writeSync(fd: number, data: Uint8Array, offset: number, length: number, position: number | null): number {
    return this.writeNow(this.descriptor(fd, 'write'), data, offset, length, position);
  }

  fsyncSync(fd: number): void {
    this.completeSync(this.issueSync(this.descriptor(fd, 'fsync'), 'fsync'));
  }

  fdatasyncSync(fd: number): void {
    this.completeSync(this.issueSync(this.descriptor(fd, 'fdatasync'), 'fdatasync'));
  }

  ftruncateSync(fd: number, length: number): void {
    const file = this.descriptor(fd, 'ftruncate');
    if (!file.writable || file.inode.kind !== 'file') throw fsError('EINVAL', 'ftruncate');
    this.injectFault('ftruncate', file.path);
    this.truncateFile(file.inode, length);
  }

  fstatSync(fd: number): FileStats {
    return statsOf(this.descriptor(fd, 'fstat').inode);
  }

  statSync(path: string): FileStats {
    this.injectFault('stat', path);
    return statsOf(this.namespace.resolve(path, 'stat'));
  }

  existsSync(path: string): boolean {
    return this.namespace.find(path) !== undefined;
  }

  readFileSync(path: string): Uint8Array {
    this.injectFault('open', path);
    const inode = this.namespace.resolve(path, 'open');
    if (inode.kind !== 'file') throw fsError('EISDIR', 'read');
    this.injectFault('read', path);
    const bytes = Buffer.allocUnsafe(inode.size);
    inode.read(0, bytes, 0, inode.size);
    this.stats.reads++;
    return bytes;
  }

  readdirSync(path: string): string[] {
    this.injectFault('scandir', path);
    const inode = this.namespace.resolve(path, 'scandir');
    if (inode.kind !== 'directory') throw fsError('ENOTDIR', 'scandir', path);
    return [...inode.entries.keys()].sort();
  }

  mkdirSync(path: string, mode: number): void {
    this.injectFault('mkdir', path);
    let directory = this.namespace.root;
    const components = splitPath(path);
    components.forEach((name, index) => {
      const existing = directory.entries.get(name);
      if (existing?.kind === 'directory') {
        directory = existing;
        return;
      }
      if (existing) throw fsError(index === components.length - 1 ? 'EEXIST' : 'ENOTDIR', 'mkdir', path);
      const created = this.namespace.newDirectory(mode);
      this.setEntry(directory, name, created);
      directory = created;
    });
  }

  renameSync(from: string, to: string): void {
    this.renameNow(from, to);
  }

  unlinkSync(path: string): void {
    this.unlinkNow(path);
  }

  removeIfPresentSync(path: string): void {
    if (this.namespace.find(path) === undefined) return;
    this.unlinkNow(path);
  }

  truncateSync(path: string, length: number): void {
    this.injectFault('open', path);
    const inode = this.namespace.resolve(path, 'open');
    if (inode.kind !== 'file') throw fsError('EISDIR', 'open', path);
    this.injectFault('ftruncate', path);
    this.truncateFile(inode, length);
  }

  /**
   * The capacity left, at once and without a draw of the random streams (a site asking every tick
   * must not shift the delays of its I/O). A disk without a capacity reports an exabyte free.
   */
  statfsSync(path: string): DiskSpace {
    this.namespace.resolve(path, 'statfs');
    if (!Number.isFinite(this.capacityBlocks))
      return { freeBytes: unlimitedBytes, totalBytes: unlimitedBytes };
    return {
      freeBytes: Math.max(0, this.capacityBlocks - this.usedBlocks) * blockBytes,
      totalBytes: this.capacityBlocks * blockBytes,
    };
  }

  // ---- asynchronous calls: they take effect when they complete ----

  open(path: string, flags: OpenFlags, mode = 0o666): Promise<number> {
    return this.later(this.ioDelayMsMax, () => {
      const run = () => this.openNow(path, flags, mode);
      return { run, land: run };
    });
  }

  close(fd: number): Promise<void> {
    // The descriptor is gone from the call on: nothing issued after it may use it.
    return this.later(this.ioDelayMsMax, () => {
      this.closeNow(fd);
      return { run: () => undefined };
    });
  }

  read(fd: number, buffer: Uint8Array, offset: number, length: number, position: number): Promise<number> {
    return this.later(this.delayOf(fd, this.ioDelayMsMax), () => {
      const file = this.descriptor(fd, 'read');
      return { run: () => this.readNow(file, buffer, offset, length, position), holds: file.inode };
    });
  }

  write(
    fd: number,
    data: Uint8Array,
    offset: number,
    length: number,
    position: number | null,
  ): Promise<number> {
    return this.later(this.delayOf(fd, this.ioDelayMsMax), () => {
      const file = this.descriptor(fd, 'write');
      return {
        holds: file.inode,
        run: () => this.writeNow(file, data, offset, length, position),
        // Killed in the middle of copying, a write may have landed in part.
        land: (random) => {
          const landed = random.chance(0.5) ? length : random.int(length);
          if (landed > 0) this.writeNow(file, data, offset, landed, position);
        },
      };
    });
  }

  /**
   * One write of the pieces joined when it runs (as the kernel copies them then, not at the call:
   * a piece changed before completion lands changed), landed or torn by a crash as one write.
   * Faults and errors name `write`, the call a disk-full rule is set on.
   */
  writev(fd: number, pieces: readonly Uint8Array[], position: number | null): Promise<number> {
    const length = pieces.reduce((sum, piece) => sum + piece.length, 0);
    return this.later(this.delayOf(fd, this.ioDelayMsMax), () => {
      const file = this.descriptor(fd, 'write');
      return {
        holds: file.inode,
        run: () => this.writeNow(file, Buffer.concat(pieces), 0, length, position),
        land: (random) => {
          const landed = random.chance(0.5) ? length : random.int(length);
          if (landed > 0) this.writeNow(file, Buffer.concat(pieces), 0, landed, position);
        },
      };
    });
  }

  fsync(fd: number): Promise<void> {
    return this.later(this.delayOf(fd, this.syncDelayMsMax), () => {
      const sync = this.issueSync(this.descriptor(fd, 'fsync'), 'fsync');
      return { run: () => this.completeSync(sync), holds: sync.inode };
    });
  }

  fdatasync(fd: number): Promise<void> {
    return this.later(this.delayOf(fd, this.syncDelayMsMax), () => {
      const sync = this.issueSync(this.descriptor(fd, 'fdatasync'), 'fdatasync');
      return { run: () => this.completeSync(sync), holds: sync.inode };
    });
  }

  rename(from: string, to: string): Promise<void> {
    return this.later(this.ioDelayMsMax, () => {
      const run = () => this.renameNow(from, to);
      return { run, land: run };
    });
  }

  unlink(path: string): Promise<void> {
    return this.later(this.ioDelayMsMax, () => {
      const run = () => this.unlinkNow(path);
      return { run, land: run };
    });
  }

  /**
   * Issues an asynchronous call: `issue` runs now (resolving descriptors, as the kernel takes its
   * reference at the call), its `run` when the delay is over. A failure at issue is reported at
   * completion too, as node:fs reports it through the callback.
   */
  /** The longest delay of a call on `fd`: longer on a slow file. */
  private delayOf(fd: number, delayMsMax: number): number {
    const path = this.descriptors.get(fd)?.path;
    return path !== undefined && this.slowFiles?.matches(path)
      ? delayMsMax * this.slowFiles.factor
      : delayMsMax;
  }

  private later<T>(delayMsMax: number, issue: () => Operation<T>): Promise<T> {
    const epoch = this.epoch;
    let operation: Operation<T>;
    try {
      operation = issue();
    } catch (error) {
      operation = {
        run: () => {
          throw error;
        },
      };
    }
    const id = this.nextOperation++;
    this.pending.set(id, operation);
    if (operation.holds) operation.holds.handles++;
    const delayMs = this.delays.int(delayMsMax + 1);
    return new Promise<T>((resolve, reject) => {
      this.scheduler.after(delayMs, () => {
        // A process that died hears nothing: its promise never settles.
        if (this.epoch !== epoch) return;
        this.pending.delete(id);
        try {
          resolve(operation.run());
        } catch (error) {
          reject(error);
        } finally {
          if (operation.holds) this.letGo(operation.holds);
        }
      });
    });
  }

  // ---- the calls' effects ----

  private openNow(path: string, flags: OpenFlags, mode: number): number {
    this.injectFault('open', path);
    const { directory, name } = this.namespace.parentOf(path, 'open');
    let inode: Inode | undefined = name === null ? directory : directory.entries.get(name);
    const exclusive = flags === 'wx' || flags === 'wx+';
    if (inode && exclusive) throw fsError('EEXIST', 'open', path);
    if (inode?.kind === 'directory' && flags !== 'r') throw fsError('EISDIR', 'open', path);
    if (!inode) {
      if (flags === 'r' || flags === 'r+' || name === null) throw fsError('ENOENT', 'open', path);
      inode = this.namespace.newFile(mode);
      this.setEntry(directory, name, inode);
      if (segmentFileName.test(name)) this.stats.segmentsCreated++;
    } else if (flags === 'w' && inode.kind === 'file') {
      this.truncateFile(inode, 0);
    }
    const fd = this.nextDescriptor++;
    this.descriptors.set(fd, {
      inode,
      path,
      readable: flags === 'r' || flags === 'r+' || flags === 'wx+',
      writable: flags !== 'r',
      position: 0,
    });
    inode.handles++;
    return fd;
  }

  private closeNow(fd: number): void {
    const file = this.descriptor(fd, 'close');
    this.injectFault('close', file.path);
    this.descriptors.delete(fd);
    this.letGo(file.inode);
  }

  private readNow(
    file: OpenFile,
    buffer: Uint8Array,
    offset: number,
    length: number,
    position: number,
  ): number {
    assert(offset >= 0 && length >= 0 && offset + length <= buffer.length, 'a read fits its buffer');
    assert(position >= 0, 'a read position is not negative');
    this.injectFault('read', file.path);
    if (file.inode.kind === 'directory') throw fsError('EISDIR', 'read');
    if (!file.readable) throw fsError('EBADF', 'read');
    this.stats.reads++;
    return file.inode.read(position, buffer, offset, length);
  }

  private writeNow(
    file: OpenFile,
    data: Uint8Array,
    offset: number,
    length: number,
    position: number | null,
  ): number {
    assert(offset >= 0 && length >= 0 && offset + length <= data.length, 'a write fits its buffer');
    assert(position === null || position >= 0, 'a write position is not negative');
    this.injectFault('write', file.path);
    const inode = file.inode;
    if (!file.writable || inode.kind !== 'file') throw fsError('EBADF', 'write');
    const at = position ?? file.position;
    // A disk short of room writes what fits, as a short write, and fails the next one.
    const count = inode.bytesThatFit(at, length, this.capacityBlocks - this.usedBlocks);
    if (count < length) this.stats.diskFull++;
    if (count === 0 && length > 0) throw fsError('ENOSPC', 'write');
    const blocksBefore = inode.allocatedBlocks;
    inode.write(at, data.subarray(offset, offset + count), ++this.version);
    this.usedBlocks += inode.allocatedBlocks - blocksBefore;
    if (position === null) file.position = at + count;
    this.stats.writes++;
    this.stats.writtenBytes += count;
    return count;
  }

  private truncateFile(inode: FileInode, length: number): void {
    assert(Number.isSafeInteger(length) && length >= 0, 'a file size is a non-negative integer');
    this.usedBlocks -= inode.truncate(length, ++this.version);
  }

  private renameNow(from: string, to: string): void {
    // A rule on either path fails a rename: a rule on journal.state fails the rename onto it.
    this.injectFault('rename', from, to);
    const source = this.namespace.parentOf(from, 'rename');
    const target = this.namespace.parentOf(to, 'rename');
    const inode = source.name === null ? undefined : source.directory.entries.get(source.name);
    if (!inode || source.name === null || target.name === null) throw fsError('ENOENT', 'rename', from, to);
    const replaced = target.directory.entries.get(target.name);
    if (replaced === inode) return;
    if (inode.kind === 'directory') {
      if (isInside(to, from)) throw fsError('EINVAL', 'rename', from, to);
      if (replaced?.kind === 'file') throw fsError('ENOTDIR', 'rename', from, to);
      if (replaced?.kind === 'directory' && replaced.entries.size > 0)
        throw fsError('ENOTEMPTY', 'rename', from, to);
    } else if (replaced?.kind === 'directory') {
      throw fsError('EISDIR', 'rename', from, to);
    }
    // One change: both names take the same version, so no crash or sync separates them.
    const version = ++this.version;
    this.setEntry(target.directory, target.name, inode, version);
    this.setEntry(source.directory, source.name, undefined, version);
    this.namespace.noteRename(
      { directory: source.directory, name: source.name },
      { directory: target.directory, name: target.name },
    );
  }

  private unlinkNow(path: string): void {
    this.injectFault('unlink', path);
    const { directory, name } = this.namespace.parentOf(path, 'unlink');
    const inode = name === null ? directory : directory.entries.get(name);
    if (!inode) throw fsError('ENOENT', 'unlink', path);
    if (inode.kind === 'directory' || name === null) throw fsError('EISDIR', 'unlink', path);
    this.setEntry(directory, name, undefined);
    if (segmentFileName.test(name)) this.stats.segmentsRemoved++;
  }

  private setEntry(
    directory: DirectoryInode,
    name: string,
    inode: Inode | undefined,
    version = ++this.version,
  ): void {
    const replaced = this.namespace.set(directory, name, inode, version);
    if (replaced) this.releaseIfUnreferenced(replaced);
  }

  /** A handle on `inode` is gone: a file with no name and no handle left gives its space back. */
  private letGo(inode: Inode): void {
    inode.handles--;
    assert(inode.handles >= 0, 'an inode is let go once per handle');
    this.releaseIfUnreferenced(inode);
  }

  private releaseIfUnreferenced(inode: Inode): void {
    if (inode.kind === 'file' && inode.links === 0 && inode.handles === 0)
      this.usedBlocks -= inode.allocatedBlocks;
  }

  // ---- syncs ----

  /** What a sync issued now covers, and the failure injected on it, if any. */
  private issueSync(file: OpenFile, syscall: 'fsync' | 'fdatasync'): PendingSync {
    const code = this.faults.take(syscall, file.path);
    if (code) this.stats.injectedFaults++;
    const failure = code ? fsError(code, syscall) : null;
    const inode = file.inode;
    if (inode.kind === 'directory') return { kind: 'directory', inode, version: this.version, failure };
    return { kind: 'file', inode, point: inode.syncPoint(this.version), failure };
  }

  private completeSync(sync: PendingSync): void {
    if (sync.kind === 'directory') {
      // A directory sync that failed made nothing durable; its changes stay pending.
      if (sync.failure) throw sync.failure;
      this.namespace.syncDirectory(sync.inode, sync.version);
    } else if (sync.failure) {
      sync.inode.failSync(sync.point);
      throw sync.failure;
    } else {
      sync.inode.completeSync(sync.point);
    }
    this.stats.syncs++;
  }

  // ---- faults ----

  /**
   * Fails chosen calls (see FaultRule): a rule fails every matching call until cancelled or spent.
   * A failed fsync or fdatasync makes nothing durable and drops the pages it covered from writeback
   * (FileInode.failSync); a failed write changes nothing.
   */
  failWith(rule: FaultRule): FaultHandle {
    return this.faults.add(rule);
  }

  /** Throws the failure a rule injects on this call, shaped as node:fs reports it, if one does. */
  private injectFault(syscall: Syscall, path: string, dest?: string): void {
    const code =
      this.faults.take(syscall, path) ?? (dest === undefined ? null : this.faults.take(syscall, dest));
    if (!code) return;
    this.stats.injectedFaults++;
    // Calls on a descriptor name no path, as node:fs's errors do not.
    const onDescriptor = syscall === 'write' || syscall === 'read' || syscall === 'close';
    throw fsError(code, syscall, onDescriptor ? undefined : path, dest);
  }

  // ---- crashes ----

  /**
   * The process dies (kill -9), and with 'machine' the power goes too. Descriptors are gone; calls in
   * flight may have taken effect, but never report back. A machine crash then keeps only what the
   * disk held, with each unsynced sector and entry change drawn kept, lost or torn.
   */
  crash(kind: CrashKind): void {
    this.stats.crashes[kind]++;
    this.landPending();
    this.epoch++;
    for (const file of this.descriptors.values()) file.inode.handles--;
    const wereOpen = new Set([...this.descriptors.values()].map((file) => file.inode));
    this.descriptors.clear();
    // A machine crash recounts the space of what is left; after kill -9, files only the dead held go.
    if (kind === 'machine') this.loseUnsynced();
    else for (const inode of wereOpen) this.releaseIfUnreferenced(inode);
  }

  /** Calls in flight, in the order they were issued: each took effect or not. */
  private landPending(): void {
    for (const operation of this.pending.values()) {
      if (operation.land && this.crashes.chance(this.odds.pendingLanded)) {
        this.stats.landedAtCrash++;
        try {
          operation.land(this.crashes);
        } catch {
          // It would have failed: nothing happened, and nobody is left to hear it.
        }
      } else {
        this.stats.droppedAtCrash++;
      }
      if (operation.holds) this.letGo(operation.holds);
    }
    this.pending.clear();
  }

  private loseUnsynced(): void {
    const entries = this.namespace.crash(this.crashes, this.odds.entryKept);
    this.stats.keptEntries += entries.keptEntries;
    this.stats.revertedEntries += entries.revertedEntries;
    this.usedBlocks = 0;
    const seen = new Set<FileInode>();
    this.namespace.walk('current', (_path, inode) => {
      if (inode.kind !== 'file' || seen.has(inode)) return;
      seen.add(inode);
      const outcome = inode.crash(this.crashes, this.odds);
      this.stats.lostSectors += outcome.lostSectors;
      this.stats.tornSectors += outcome.tornSectors;
      this.usedBlocks += inode.allocatedBlocks;
    });
  }

  /**
   * The disk for the process's current life (ProcessFileSystem): once it crashes, calls through this
   * handle are refused, so give each life of a site its own.
   */
  forProcess(): FileSystem {
    return new ProcessFileSystem(this, this.epoch);
  }

  /** Which life of the process is current: the count of crashes so far. */
  get life(): number {
    return this.epoch;
  }

  // ---- inspection, for the oracle and the tests ----

  /**
   * The durable image of the file at `path` in the durable tree: what it holds after a crash that
   * loses everything unsynced. Null when no file is durably there. A view: do not modify, read it
   * before the next call.
   */
  durableBytes(path: string): Uint8Array | null {
    const inode = this.namespace.find(path, 'durable');
    return inode?.kind === 'file' ? inode.durableView() : null;
  }

  /** The file at `path` as reads see it now; null when none. A view, as durableBytes. */
  cachedBytes(path: string): Uint8Array | null {
    const inode = this.namespace.find(path, 'current');
    return inode?.kind === 'file' ? inode.cachedView() : null;
  }

  /** Paths of every file in the current tree (or the durable one), sorted. */
  listFiles(view: View = 'current'): string[] {
    const paths: string[] = [];
    this.namespace.walk(view, (path, inode) => {
      if (inode.kind === 'file') paths.push(path);
    });
    return paths;
  }

  /** Calls issued and not completed (nor dropped by a crash). */
  get pendingOperations(): number {
    return this.pending.size;
  }

  get usedBytes(): number {
    return this.usedBlocks * blockBytes;
  }

  get openDescriptors(): number {
    return this.descriptors.size;
  }

  private descriptor(fd: number, syscall: Syscall): OpenFile {
    const file = this.descriptors.get(fd);
    if (!file) throw fsError('EBADF', syscall);
    return file;
  }
}

type PendingSync =
  | { kind: 'directory'; inode: DirectoryInode; version: number; failure: Error | null }
  | { kind: 'file'; inode: FileInode; point: ReturnType<FileInode['syncPoint']>; failure: Error | null };

/** Whether `path` is `directory` or below it. */
function isInside(path: string, directory: string): boolean {
  const outer = splitPath(directory);
  const inner = splitPath(path);
  return outer.every((component, index) => inner[index] === component);
}

function statsOf(inode: Inode): FileStats {
  return {
    size: inode.kind === 'file' ? inode.size : 4096,
    inode: String(inode.number),
    mode: inode.mode,
    isDirectory: inode.kind === 'directory',
  };
}
