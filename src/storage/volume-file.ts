/**
 * A volume as a raw image file at `<dataDir>/volumes/<name>.img`: created sparse at its size (0600)
 * once, when its site is created, and from then on only opened, never created or resized: an image
 * that is missing, of another size, or another file than the one created (its inode changed) is
 * refused, naming the path and both sizes. Read and written by block, flushed with fdatasync. Any
 * tool (cmp, qemu-img compare) can read it while the process is stopped or idle.
 */
import { dirname } from 'node:path';
import { assert } from '../core/assert.ts';
import { StorageError } from '../core/errors.ts';
import type { Extent } from '../core/types.ts';
import { type FileStats, type FileSystem, syncDirectorySync, writevAll } from '../io/file-system.ts';
import { dataFileMode, makeDirectoryDurable } from './durable-file.ts';

const zeroes = new Uint8Array(1024 * 1024);

/** What an existing image must be: the size and the inode recorded when its site created it. */
export interface ImageIdentity {
  sizeBytes: number;
  /**
   * st_ino as a decimal string (inode numbers may exceed 2^53); null when not recorded yet (a
   * site.json written before images had records): the image is then taken as it is.
   */
  inode: string | null;
}

/** How to take a deliberately restored image back (docs/storage.md, "Volume images"). */
export function acceptHint(dataDir: string, volume: string): string {
  return `if it was restored deliberately, stop the site and run: cyclerep accept-image --data-dir ${dataDir} --volume ${volume}`;
}

export class VolumeFile {
  private constructor(
    private readonly fs: FileSystem,
    readonly path: string,
    private fd: number,
    readonly sizeBytes: number,
    readonly blockBytes: number,
    /** The image's inode, recorded in site.json to recognise a replaced file. */
    readonly inode: string,
  ) {}

  /**
   * Creates a new sparse image of `sizeBytes` (never over an existing file) and makes its creation
   * durable, with the directories it is in. Only a site being created does this.
   */
  static create(fs: FileSystem, path: string, sizeBytes: number, blockBytes: number): VolumeFile {
    makeDirectoryDurable(fs, dirname(path));
    const fd = fs.openSync(path, 'wx+', dataFileMode);
    try {
      fs.ftruncateSync(fd, sizeBytes);
      fs.fsyncSync(fd);
    } catch (error) {
      fs.closeSync(fd);
      throw error;
    }
    syncDirectorySync(fs, dirname(path));
    return new VolumeFile(fs, path, fd, sizeBytes, blockBytes, fs.fstatSync(fd).inode);
  }

  /**
   * Finishes an image whose site's creation was cut short (site-creation.ts proves the file, if
   * there, was made by that creation and never written): created if missing, sized if the creation
   * stopped before it was, kept as it is at the right size; made durable in each case. Any other
   * size is refused: that file is not one the creation made, and it is never truncated or written.
   */
  static finishCreation(
    fs: FileSystem,
    path: string,
    sizeBytes: number,
    blockBytes: number,
    marker: string,
  ): VolumeFile {
    if (!fs.existsSync(path)) return VolumeFile.create(fs, path, sizeBytes, blockBytes);
    const fd = fs.openSync(path, 'r+');
    try {
      const size = fs.fstatSync(fd).size;
      if (size !== 0 && size !== sizeBytes)
        throw new StorageError(
          'volume-size-mismatch',
          `${path} is ${size} bytes, but the site creation ${marker} records, cut short, makes it ${sizeBytes}: not an image that creation made; refusing to touch it. Move it away (and check where it came from), then start again`,
        );
      if (size === 0) fs.ftruncateSync(fd, sizeBytes);
      fs.fsyncSync(fd);
      syncDirectorySync(fs, dirname(path));
      return new VolumeFile(fs, path, fd, sizeBytes, blockBytes, fs.fstatSync(fd).inode);
    } catch (error) {
      fs.closeSync(fd);
      throw error;
    }
  }

  /**
   * Opens an existing image and checks it against its identity (the checks run on the open file,
   * so a file swapped meanwhile cannot slip through). `context` names the site and the volume in
   * the refusal.
   */
  static open(
    fs: FileSystem,
    path: string,
    expected: ImageIdentity,
    blockBytes: number,
    context: { dataDir: string; volume: string },
  ): VolumeFile {
    let fd: number;
    try {
      fd = fs.openSync(path, 'r+');
    } catch (cause) {
      if ((cause as NodeJS.ErrnoException).code !== 'ENOENT') throw cause;
      throw new StorageError(
        'volume-missing',
        `${path} is missing (expected ${expected.sizeBytes} bytes, volume "${context.volume}" as site.json records it); refusing to start without it. Restore the image, or rebuild this site from another`,
        { cause },
      );
    }
    const stats = fs.fstatSync(fd);
    const refusal = refusalOf(path, stats, expected, context);
    if (refusal) {
      fs.closeSync(fd);
      throw refusal;
    }
    return new VolumeFile(fs, path, fd, expected.sizeBytes, blockBytes, stats.inode);
  }

  get blocks(): number {
    return this.sizeBytes / this.blockBytes;
  }

  async writeExtent(extent: Extent): Promise<void> {
    const offset = extent.block * this.blockBytes;
    const length = extent.blockCount * this.blockBytes;
    assert(
      offset + length <= this.sizeBytes,
      () => `extent ${extent.block}+${extent.blockCount} inside ${this.path}`,
    );
    if (extent.data) {
      await this.writeAll(extent.data, offset);
      return;
    }
    // A zero run is written as zeroes from one shared buffer; punching holes is an optimisation for later.
    for (let done = 0; done < length; done += zeroes.length) {
      await this.writeAll(zeroes.subarray(0, Math.min(zeroes.length, length - done)), offset + done);
    }
  }

  /**
   * Writes the blocks from `block` on as the pieces given, one after the other, with gathered
   * writes (adjacent writes of a write-back in one call, their buffers where they lie).
   */
  async writePieces(block: number, pieces: readonly Uint8Array[]): Promise<void> {
    const offset = block * this.blockBytes;
    const length = pieces.reduce((sum, piece) => sum + piece.length, 0);
    assert(
      length % this.blockBytes === 0 && offset + length <= this.sizeBytes,
      () => `${length} bytes at block ${block} inside ${this.path}`,
    );
    await writevAll(this.fs, this.fd, pieces, offset);
  }

  private async writeAll(data: Uint8Array, offset: number): Promise<void> {
    let written = 0;
    while (written < data.length) {
      written += await this.fs.write(this.fd, data, written, data.length - written, offset + written);
    }
  }

  async read(offset: number, length: number): Promise<Uint8Array> {
    assert(
      offset >= 0 && offset + length <= this.sizeBytes,
      () => `read ${offset}+${length} inside ${this.path}`,
    );
    const buffer = new Uint8Array(length);
    let done = 0;
    while (done < length) {
      const bytesRead = await this.fs.read(this.fd, buffer, done, length - done, offset + done);
      if (bytesRead === 0) break;
      done += bytesRead;
    }
    return buffer;
  }

  async flush(): Promise<void> {
    await this.fs.fdatasync(this.fd);
  }

  /** Synchronous: called once the site's I/O has settled, at a stop or a refused start. */
  close(): void {
    if (this.fd >= 0) this.fs.closeSync(this.fd);
    this.fd = -1;
  }
}

/** Why an opened image is not the one expected, or null. */
function refusalOf(
  path: string,
  stats: FileStats,
  expected: ImageIdentity,
  context: { dataDir: string; volume: string },
): StorageError | null {
  const size = stats.size;
  if (size === 0 && expected.sizeBytes > 0)
    return new StorageError(
      'volume-size-mismatch',
      `${path} is empty (0 bytes, expected ${expected.sizeBytes}): the image was emptied; refusing to start over zeroes. Restore the image, or rebuild this site from another`,
    );
  if (size !== expected.sizeBytes)
    return new StorageError(
      'volume-size-mismatch',
      `${path} is ${size} bytes, expected ${expected.sizeBytes} (volume "${context.volume}" as site.json records it); refusing to resize or use it`,
    );
  if (expected.inode !== null && stats.inode !== expected.inode)
    return new StorageError(
      'volume-foreign',
      `${path} is not the image this site created (inode ${stats.inode}, site.json records ${expected.inode}; size ${size} bytes as expected): it was replaced; ${acceptHint(context.dataDir, context.volume)}`,
    );
  return null;
}
