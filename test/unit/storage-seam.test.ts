// Proves that the storage code reaches files only through the FileSystem it is given, so the
// simulator can run it over a simulated disk. The file system under test serves a virtual root
// that node:fs cannot reach (a path through a regular file, ENOTDIR even for root) from a real
// directory, records every call, and fails a chosen call with a node:fs-shaped errno error. So a
// journal or a site that bypassed the seam by path fails outright; one that bypassed it by
// descriptor escapes the recorded calls and the injected faults, which these tests check too.
import assert from 'node:assert/strict';
import { mkdtempSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, test } from 'node:test';
import { codesOf, StorageError, storageFaultOf } from '../../src/core/errors.ts';
import type { PrimaryRecord } from '../../src/core/records.ts';
import type { DiskSpace, FileStats, FileSystem, OpenFlags } from '../../src/io/file-system.ts';
import { nodeFileSystem } from '../../src/io/node-file-system.ts';
import type { PrimaryFileConfig } from '../../src/ops/config.ts';
import { primaryRecordCodec } from '../../src/storage/record-codec.ts';
import { SegmentJournal } from '../../src/storage/segment-journal.ts';
import { readSiteFile, writeSiteFile } from '../../src/storage/site-file.ts';
import { createSiteVolumes, openSiteVolumes } from '../../src/storage/site-volumes.ts';
import { blockBytes, dataExtent, shape } from './fixtures.ts';

const workspace = mkdtempSync(join(tmpdir(), 'cyclerep-seam-'));
after(() => rmSync(workspace, { recursive: true, force: true }));

/** The calls a running site may make: never a synchronous one, so a model may complete them late. */
const asyncCalls = new Set([
  'open',
  'close',
  'read',
  'write',
  'writev',
  'fsync',
  'fdatasync',
  'rename',
  'unlink',
]);

const errnoMessages: Record<string, string> = { EIO: 'i/o error', ENOSPC: 'no space left on device' };

/** An error as node:fs throws it for a descriptor call. */
function errnoError(code: string, syscall: string): NodeJS.ErrnoException {
  const error: NodeJS.ErrnoException = new Error(`${code}: ${errnoMessages[code]}, ${syscall}`);
  error.code = code;
  error.syscall = syscall;
  return error;
}

interface Call {
  name: keyof FileSystem;
  path?: string;
}

/** node:fs under a virtual root, recording every call; `failNext` makes one call fail. */
class RecordingFileSystem implements FileSystem {
  readonly calls: Call[] = [];
  /** What fstatSync reports as the inode, when set: as if the image had been replaced. */
  inodeShown: string | null = null;
  private readonly faults = new Map<keyof FileSystem, string>();
  private readonly disk: string;
  readonly root: string;

  constructor(name: string) {
    this.disk = join(workspace, `${name}-disk`);
    this.root = join(workspace, `${name}-only-through-the-seam`);
    nodeFileSystem.mkdirSync(this.disk, 0o700);
    writeFileSync(this.root, 'a regular file: node:fs finds no directory under it');
  }

  /** The next `name` call fails with errno `code`, once. */
  failNext(name: keyof FileSystem, code: string): void {
    this.faults.set(name, code);
  }

  /** Calls made since `from`, by name. */
  namesSince(from: number): string[] {
    return this.calls.slice(from).map((call) => call.name);
  }

  private record(name: keyof FileSystem, path?: string): void {
    this.calls.push(path === undefined ? { name } : { name, path });
    const code = this.faults.get(name);
    if (code === undefined) return;
    this.faults.delete(name);
    throw errnoError(code, name.replace(/Sync$/, ''));
  }

  private real(path: string): string {
    assert.ok(path.startsWith(this.root), `${path} is under ${this.root}`);
    return this.disk + path.slice(this.root.length);
  }

  private async recordAsync(name: keyof FileSystem, path?: string): Promise<void> {
    // Completes a turn later, as a disk would: callers must await, not assume.
    await new Promise((resolve) => setImmediate(resolve));
    this.record(name, path);
  }

  openSync(path: string, flags: OpenFlags, mode?: number): number {
    this.record('openSync', path);
    return nodeFileSystem.openSync(this.real(path), flags, mode);
  }
  closeSync(fd: number): void {
    this.record('closeSync');
    nodeFileSystem.closeSync(fd);
  }
  writeSync(fd: number, data: Uint8Array, offset: number, length: number, position: number | null): number {
    this.record('writeSync');
    return nodeFileSystem.writeSync(fd, data, offset, length, position);
  }
  fsyncSync(fd: number): void {
    this.record('fsyncSync');
    nodeFileSystem.fsyncSync(fd);
  }
  fdatasyncSync(fd: number): void {
    this.record('fdatasyncSync');
    nodeFileSystem.fdatasyncSync(fd);
  }
  ftruncateSync(fd: number, length: number): void {
    this.record('ftruncateSync');
    nodeFileSystem.ftruncateSync(fd, length);
  }
  fstatSync(fd: number): FileStats {
    this.record('fstatSync');
    const stats = nodeFileSystem.fstatSync(fd);
    return this.inodeShown === null ? stats : { ...stats, inode: this.inodeShown };
  }
  statSync(path: string): FileStats {
    this.record('statSync', path);
    return nodeFileSystem.statSync(this.real(path));
  }
  existsSync(path: string): boolean {
    this.record('existsSync', path);
    return nodeFileSystem.existsSync(this.real(path));
  }
  readFileSync(path: string): Uint8Array {
    this.record('readFileSync', path);
    return nodeFileSystem.readFileSync(this.real(path));
  }
  readdirSync(path: string): string[] {
    this.record('readdirSync', path);
    return nodeFileSystem.readdirSync(this.real(path));
  }
  mkdirSync(path: string, mode: number): void {
    this.record('mkdirSync', path);
    nodeFileSystem.mkdirSync(this.real(path), mode);
  }
  renameSync(from: string, to: string): void {
    this.record('renameSync', to);
    nodeFileSystem.renameSync(this.real(from), this.real(to));
  }
  unlinkSync(path: string): void {
    this.record('unlinkSync', path);
    nodeFileSystem.unlinkSync(this.real(path));
  }
  removeIfPresentSync(path: string): void {
    this.record('removeIfPresentSync', path);
    nodeFileSystem.removeIfPresentSync(this.real(path));
  }
  truncateSync(path: string, length: number): void {
    this.record('truncateSync', path);
    nodeFileSystem.truncateSync(this.real(path), length);
  }
  statfsSync(path: string): DiskSpace {
    this.record('statfsSync', path);
    return nodeFileSystem.statfsSync(this.real(path));
  }
  async open(path: string, flags: OpenFlags, mode?: number): Promise<number> {
    await this.recordAsync('open', path);
    return nodeFileSystem.open(this.real(path), flags, mode);
  }
  async close(fd: number): Promise<void> {
    await this.recordAsync('close');
    await nodeFileSystem.close(fd);
  }
  async read(
    fd: number,
    buffer: Uint8Array,
    offset: number,
    length: number,
    position: number,
  ): Promise<number> {
    await this.recordAsync('read');
    return nodeFileSystem.read(fd, buffer, offset, length, position);
  }
  async write(
    fd: number,
    data: Uint8Array,
    offset: number,
    length: number,
    position: number | null,
  ): Promise<number> {
    await this.recordAsync('write');
    return nodeFileSystem.write(fd, data, offset, length, position);
  }
  async writev(fd: number, pieces: readonly Uint8Array[], position: number | null): Promise<number> {
    await this.recordAsync('writev');
    return nodeFileSystem.writev(fd, pieces, position);
  }
  async fsync(fd: number): Promise<void> {
    await this.recordAsync('fsync');
    await nodeFileSystem.fsync(fd);
  }
  async fdatasync(fd: number): Promise<void> {
    await this.recordAsync('fdatasync');
    await nodeFileSystem.fdatasync(fd);
  }
  async rename(from: string, to: string): Promise<void> {
    await this.recordAsync('rename', to);
    await nodeFileSystem.rename(this.real(from), this.real(to));
  }
  async unlink(path: string): Promise<void> {
    await this.recordAsync('unlink', path);
    await nodeFileSystem.unlink(this.real(path));
  }
}

function openJournal(fs: FileSystem, segmentBytesMax = 1 << 20) {
  return SegmentJournal.open<PrimaryRecord>({
    fs,
    directory: join((fs as RecordingFileSystem).root, 'journal'),
    segmentBytesMax,
    codec: primaryRecordCodec,
    checkpoint: () => [{ kind: 'switch', closed: 0 }],
  });
}

function writeFills(records: PrimaryRecord[]): number[] {
  return records.flatMap((record) => (record.kind === 'write' ? [record.extent.data?.[0] ?? -1] : []));
}

test('a journal is created, appended, synced, rolled over, collected and replayed through the seam alone', async () => {
  const fs = new RecordingFileSystem('journal');
  const { journal } = openJournal(fs, 4096);
  const opened = fs.calls.length;
  const fills: number[] = [];
  for (let fill = 1; fill <= 30; fill++) {
    await journal.append({ kind: 'write', cycle: 1, extent: dataExtent(0, fill, 1, fill) });
    fills.push(fill);
    if (fill % 4 === 0) await journal.sync();
  }
  assert.ok(journal.segmentCount > 3, `${journal.segmentCount} segments: the journal rolled over`);
  assert.ok((await journal.deleteUpTo(1)) > 0, 'old segments collected');
  await journal.close();

  const running = fs.namesSince(opened);
  for (const name of running) assert.ok(asyncCalls.has(name), `${name} while running: synchronous`);
  for (const name of asyncCalls)
    if (name !== 'read') assert.ok(running.includes(name), `the running journal called ${name}`);
  const unlinked = fs.calls.slice(opened).filter((call) => call.name === 'unlink');
  assert.ok(
    unlinked.every((call) => call.path?.startsWith(join(fs.root, 'journal')) && call.path.endsWith('.seg')),
  );
  assert.ok(readdirSync(join(workspace, 'journal-disk', 'journal')).includes('journal.state'));

  const reopened = openJournal(fs, 4096);
  const kept = writeFills(reopened.records);
  assert.ok(kept.length > 0, 'the newest segment holds writes');
  assert.deepEqual(kept, fills.slice(-kept.length));
  assert.ok(fs.calls.some((call) => call.name === 'readFileSync' && call.path?.endsWith('journal.state')));
  await reopened.journal.close();
});

test('a failed fdatasync of the seam fails the journal as an I/O fault, keeping its errno', async () => {
  const fs = new RecordingFileSystem('fdatasync');
  const { journal } = openJournal(fs);
  await journal.append({ kind: 'write', cycle: 1, extent: dataExtent(0, 0, 1, 1) });
  await journal.sync();
  fs.failNext('fdatasync', 'EIO');
  await journal.append({ kind: 'write', cycle: 1, extent: dataExtent(0, 1, 1, 2) });
  const failedAsIoFault = (error: unknown): boolean => {
    assert.ok(error instanceof StorageError);
    assert.equal(error.message, 'journal fdatasync failed: EIO: i/o error, fdatasync');
    assert.deepEqual(codesOf(error), ['storage-io', 'EIO']);
    assert.equal(storageFaultOf(error, new Date()).kind, 'io-error');
    return true;
  };
  await assert.rejects(journal.sync(), failedAsIoFault);
  // After a failed fdatasync nothing is trusted: every later append fails the same way.
  await assert.rejects(
    journal.append({ kind: 'write', cycle: 1, extent: dataExtent(0, 2, 1, 3) }),
    failedAsIoFault,
  );
  journal.abandon();
});

test('a write of the seam that finds the disk full fails the journal as disk-full, naming the segment', async () => {
  const fs = new RecordingFileSystem('enospc');
  const { journal } = openJournal(fs);
  await journal.append({ kind: 'write', cycle: 1, extent: dataExtent(0, 0, 1, 1) });
  // Records go out in gathered writes.
  fs.failNext('writev', 'ENOSPC');
  await assert.rejects(
    journal.append({ kind: 'write', cycle: 1, extent: dataExtent(0, 1, 1, 2) }),
    (error: unknown) => {
      assert.ok(error instanceof StorageError);
      assert.equal(
        error.message,
        `${join(fs.root, 'journal', '0000000000000001.seg')}: write failed: ENOSPC: no space left on device, writev`,
      );
      assert.equal(storageFaultOf(error, new Date()).kind, 'disk-full');
      return true;
    },
  );
  journal.abandon();
});

test('site.json and volume images are made, checked and used through the seam alone', async () => {
  const fs = new RecordingFileSystem('site');
  const dataDir = join(fs.root, 'site');
  const created = createSiteVolumes(fs, dataDir, shape);
  const config = { role: 'primary', group: shape.group, dataDir } as unknown as PrimaryFileConfig;
  writeSiteFile(fs, dataDir, { role: 'primary', config, volumes: created.records });
  assert.deepEqual(readSiteFile(fs, dataDir)?.volumes, created.records);
  for (const file of created.files) file.close();

  const recorded = { ...shape, volumes: created.records };
  const { files } = openSiteVolumes(fs, dataDir, recorded, shape);
  const volume = files[0];
  assert.ok(volume);
  const from = fs.calls.length;
  await volume.writeExtent(dataExtent(0, 3, 2, 7));
  await volume.flush();
  assert.deepEqual(await volume.read(3 * blockBytes, 2 * blockBytes), new Uint8Array(2 * blockBytes).fill(7));
  assert.deepEqual([...new Set(fs.namesSince(from))].sort(), ['fdatasync', 'read', 'write']);
  // Writes end to end go as one gathered write, at their place, and land whole.
  const gatheredFrom = fs.calls.length;
  await volume.writePieces(5, [new Uint8Array(blockBytes).fill(8), new Uint8Array(2 * blockBytes).fill(9)]);
  assert.deepEqual(fs.namesSince(gatheredFrom), ['writev']);
  assert.deepEqual(
    [...(await volume.read(4 * blockBytes, 4 * blockBytes))]
      .map((byte, index) => (index % blockBytes ? -1 : byte))
      .filter((byte) => byte >= 0),
    [7, 8, 9, 9],
  );
  await assert.rejects(volume.writePieces(volume.blocks, [new Uint8Array(blockBytes)]), /inside/);
  fs.failNext('fdatasync', 'EIO');
  await assert.rejects(volume.flush(), { code: 'EIO', syscall: 'fdatasync' });
  for (const file of files) file.close();

  // The image's identity is what the seam reports: another inode is another file.
  fs.inodeShown = '1';
  assert.throws(
    () => openSiteVolumes(fs, dataDir, recorded, shape),
    (error: unknown) => error instanceof StorageError && error.code === 'volume-foreign',
  );
});
