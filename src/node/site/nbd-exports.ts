/**
 * A site's volumes as NBD exports, one per volume: writable on the primary (FUA is the write
 * followed by a flush), read-only on a secondary (its applied image) and on a fenced primary. Exports are looked up when a
 * client asks, so volumes a secondary adopts at first contact are served from then on.
 */
import type { NbdExport } from '../../nbd/connection.ts';

/** How the exports reach the site; volumes are counted in the order given to `volumeExports`. */
export interface VolumeAccess {
  read(index: number, offset: number, length: number): Promise<Uint8Array>;
  /**
   * Whether the exports say they are read-only (NBD_FLAG_READ_ONLY): a fenced primary's are, and
   * its writer still refuses with the fence's reason a write from a client that connected before.
   * Without it, read-only exactly when there is no writer.
   */
  readOnly?: boolean;
  /** Null: the exports are read-only, and writes refused here. */
  writer: {
    /** `handedOver`: the caller never touches `data` again (the NBD server's own request buffers). */
    write(index: number, offset: number, data: Uint8Array, handedOver: boolean): Promise<unknown>;
    writeZeroes(index: number, offset: number, length: number): Promise<unknown>;
    flush(): Promise<void>;
  } | null;
}

export function volumeExports(
  volumes: readonly { name: string; sizeBytes: number }[],
  blockBytes: number,
  access: VolumeAccess,
): NbdExport[] {
  const writer = access.writer;
  const refuse = (): Promise<void> => Promise.reject(new Error('the secondary is read-only'));
  return volumes.map((volume, index) => ({
    name: volume.name,
    sizeBytes: volume.sizeBytes,
    blockBytes,
    readOnly: access.readOnly ?? writer === null,
    read: (offset, length) => access.read(index, offset, length),
    write: writer
      ? async (offset, data, fua) => {
          await writer.write(index, offset, data, true);
          if (fua) await writer.flush();
        }
      : refuse,
    writeZeroes: writer
      ? async (offset, length, fua) => {
          await writer.writeZeroes(index, offset, length);
          if (fua) await writer.flush();
        }
      : refuse,
    flush: writer ? () => writer.flush() : () => Promise.resolve(),
  }));
}
