/**
 * The disk as one life of a process sees it. After the next crash every call through it is refused:
 * a synchronous one throws (an assertion: the simulator let a dead process run), an asynchronous
 * one never settles. So code of a killed process that is still scheduled cannot touch the files its
 * successor works on.
 */
import { assert } from '../../core/assert.ts';
import type { DiskSpace, FileStats, FileSystem, OpenFlags } from '../../io/file-system.ts';

/** What the facade needs of the disk: its calls, and which life of the process is current. */
export interface LivingDisk extends FileSystem {
  readonly life: number;
}

const never = new Promise<never>(() => {});

export class ProcessFileSystem implements FileSystem {
  constructor(
    private readonly disk: LivingDisk,
    private readonly life: number,
  ) {}

  private now<T>(call: () => T): T {
    assert(this.disk.life === this.life, 'a process killed by a crash called the file system');
    return call();
  }

  private later<T>(call: () => Promise<T>): Promise<T> {
    return this.disk.life === this.life ? call() : never;
  }

  openSync(path: string, flags: OpenFlags, mode?: number): number {
    return this.now(() => this.disk.openSync(path, flags, mode));
  }
  closeSync(fd: number): void {
    this.now(() => this.disk.closeSync(fd));
  }
  writeSync(fd: number, data: Uint8Array, offset: number, length: number, position: number | null): number {
    return this.now(() => this.disk.writeSync(fd, data, offset, length, position));
  }
  fsyncSync(fd: number): void {
    this.now(() => this.disk.fsyncSync(fd));
  }
  fdatasyncSync(fd: number): void {
    this.now(() => this.disk.fdatasyncSync(fd));
  }
  ftruncateSync(fd: number, length: number): void {
    this.now(() => this.disk.ftruncateSync(fd, length));
  }
  fstatSync(fd: number): FileStats {
    return this.now(() => this.disk.fstatSync(fd));
  }
  statSync(path: string): FileStats {
    return this.now(() => this.disk.statSync(path));
  }
  existsSync(path: string): boolean {
    return this.now(() => this.disk.existsSync(path));
  }
  readFileSync(path: string): Uint8Array {
    return this.now(() => this.disk.readFileSync(path));
  }
  readdirSync(path: string): string[] {
    return this.now(() => this.disk.readdirSync(path));
  }
  mkdirSync(path: string, mode: number): void {
    this.now(() => this.disk.mkdirSync(path, mode));
  }
  renameSync(from: string, to: string): void {
    this.now(() => this.disk.renameSync(from, to));
  }
  unlinkSync(path: string): void {
    this.now(() => this.disk.unlinkSync(path));
  }
  removeIfPresentSync(path: string): void {
    this.now(() => this.disk.removeIfPresentSync(path));
  }
  truncateSync(path: string, length: number): void {
    this.now(() => this.disk.truncateSync(path, length));
  }
  statfsSync(path: string): DiskSpace {
    return this.now(() => this.disk.statfsSync(path));
  }

  open(path: string, flags: OpenFlags, mode?: number): Promise<number> {
    return this.later(() => this.disk.open(path, flags, mode));
  }
  close(fd: number): Promise<void> {
    return this.later(() => this.disk.close(fd));
  }
  read(fd: number, buffer: Uint8Array, offset: number, length: number, position: number): Promise<number> {
    return this.later(() => this.disk.read(fd, buffer, offset, length, position));
  }
  write(
    fd: number,
    data: Uint8Array,
    offset: number,
    length: number,
    position: number | null,
  ): Promise<number> {
    return this.later(() => this.disk.write(fd, data, offset, length, position));
  }
  writev(fd: number, pieces: readonly Uint8Array[], position: number | null): Promise<number> {
    return this.later(() => this.disk.writev(fd, pieces, position));
  }
  fsync(fd: number): Promise<void> {
    return this.later(() => this.disk.fsync(fd));
  }
  fdatasync(fd: number): Promise<void> {
    return this.later(() => this.disk.fdatasync(fd));
  }
  rename(from: string, to: string): Promise<void> {
    return this.later(() => this.disk.rename(from, to));
  }
  unlink(path: string): Promise<void> {
    return this.later(() => this.disk.unlink(path));
  }
}
