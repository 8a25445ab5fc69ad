/**
 * A volume as a raw image file at `<dataDir>/volumes/<name>.img`: created sparse at its size, read
 * and written by block, flushed with fdatasync. Any tool (cmp, qemu-img compare) can read it while
 * the process is stopped or idle.
 */
import { closeSync, fdatasync, fstatSync, ftruncateSync, mkdirSync, openSync, read, write } from 'node:fs';
import { dirname } from 'node:path';
import { promisify } from 'node:util';
import { assert } from '../core/assert.ts';
import { StorageError } from '../core/errors.ts';
import type { Extent } from '../core/types.ts';

const readAsync = promisify(read);
const writeAsync = promisify(write);
const fdatasyncAsync = promisify(fdatasync);
const zeroes = new Uint8Array(1024 * 1024);

export class VolumeFile {
  private constructor(
    readonly path: string,
    private fd: number,
    readonly sizeBytes: number,
    readonly blockBytes: number,
  ) {}

  /** Opens the image, creating it sparse if absent; an existing file of another size is refused. */
  static open(path: string, sizeBytes: number, blockBytes: number): VolumeFile {
    mkdirSync(dirname(path), { recursive: true });
    const fd = openSync(path, 'a+');
    closeSync(fd);
    const handle = openSync(path, 'r+');
    const size = fstatSync(handle).size;
    if (size === 0) {
      ftruncateSync(handle, sizeBytes);
    } else if (size !== sizeBytes) {
      closeSync(handle);
      throw new StorageError(
        'volume-size-mismatch',
        `${path} is ${size} bytes, the configuration says ${sizeBytes}; refusing to resize a replica`,
      );
    }
    return new VolumeFile(path, handle, sizeBytes, blockBytes);
  }

  get blocks(): number {
    return this.sizeBytes / this.blockBytes;
  }

  async writeExtent(extent: Extent): Promise<void> {
    const offset = extent.block * this.blockBytes;
    const length = extent.blockCount * this.blockBytes;
    assert(
      offset + length <= this.sizeBytes,
      `extent ${extent.block}+${extent.blockCount} inside ${this.path}`,
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

  private async writeAll(data: Uint8Array, offset: number): Promise<void> {
    let written = 0;
    while (written < data.length) {
      written += (await writeAsync(this.fd, data, written, data.length - written, offset + written))
        .bytesWritten;
    }
  }

  async read(offset: number, length: number): Promise<Uint8Array> {
    assert(offset >= 0 && offset + length <= this.sizeBytes, `read ${offset}+${length} inside ${this.path}`);
    const buffer = new Uint8Array(length);
    let done = 0;
    while (done < length) {
      const { bytesRead } = await readAsync(this.fd, buffer, done, length - done, offset + done);
      if (bytesRead === 0) break;
      done += bytesRead;
    }
    return buffer;
  }

  async flush(): Promise<void> {
    await fdatasyncAsync(this.fd);
  }

  close(): void {
    if (this.fd >= 0) closeSync(this.fd);
    this.fd = -1;
  }
}
