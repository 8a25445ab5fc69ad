/**
 * The primary's source API: writes, write-zeroes, flushes and reads from the sources (the library
 * API and NBD). Requests are checked, split into journal-record-sized parts and handed to the group
 * under a token; the group's answer for that token (acknowledged, refused, flushed) settles them.
 */

import type { JournalPiece } from '../../core/fold.ts';
import { limits } from '../../core/limits.ts';
import type { PrimaryAction, PrimaryGroup } from '../../core/primary-group.ts';
import type { CycleNumber, Extent, GroupShape } from '../../core/types.ts';
import type { Clock } from '../../io/clock.ts';
import type { SiteMetrics } from '../../ops/metrics.ts';
import type { VolumeFile } from '../../storage/volume-file.ts';
import { readThroughJournaledOverlay } from '../site/volume-reads.ts';
import type { JournalRoom } from './journal-room.ts';
import { PrimaryNodeError } from './primary-node-error.ts';
import type { WriteBack } from './write-back.ts';

interface WriteWaiter {
  resolve: (cycle: CycleNumber) => void;
  reject: (error: Error) => void;
}

interface FlushWaiter {
  resolve: () => void;
  reject: (error: Error) => void;
}

export interface SourceApiParts {
  /** The volumes in the configuration's order: what the API's callers count in. */
  configured: readonly { name: string }[];
  shape: GroupShape;
  /** In id order (site.json's). */
  volumes: readonly VolumeFile[];
  core: PrimaryGroup;
  clock: Clock;
  journalRoom: JournalRoom;
  /** Delays new writes while a secondary lags (config `pacing`); null without pacing. */
  pacer: { beforeWrite(bytes: number): Promise<void> | null } | null;
  writeBack: WriteBack;
  /** Reads the blocks of journal records back (the index keeps references, not bytes). */
  readJournaled: (pieces: JournalPiece[]) => Promise<Uint8Array>;
  metrics: SiteMetrics;
  /** The storage failure, if any: every request fails with it. */
  failure: { readonly fatal: Error | null };
  /** Carries out what the group answers a request with. */
  run: (actions: PrimaryAction[]) => void;
}

export class SourceApi {
  private readonly writes = new Map<number, WriteWaiter>();
  private readonly flushes = new Map<number, FlushWaiter>();
  private nextToken = 1;
  private stopping = false;

  constructor(private readonly parts: SourceApiParts) {}

  /**
   * Writes whole blocks of the volume at `index` in the configuration's list; resolves with the
   * cycle at acknowledgement (immediate or cycle mode). `handedOver`: the caller never touches
   * `data` again (PrimaryNode.write).
   */
  write(index: number, offset: number, data: Uint8Array, handedOver = false): Promise<CycleNumber> {
    return rejectingOnThrow(() => {
      const volume = this.volumeId(index);
      return this.timed(this.writeParts(volume, offset, data, handedOver), (seconds) =>
        this.parts.metrics.observeWrite(seconds),
      );
    });
  }

  /** Trim or write-zeroes: journaled and sent without payload. */
  writeZeroes(index: number, offset: number, length: number): Promise<CycleNumber> {
    return rejectingOnThrow(() => {
      const volume = this.volumeId(index);
      this.checkRange(volume, offset, length);
      const blockBytes = this.parts.shape.blockBytes;
      // No payload: it waits its turn, and takes none of the link's time.
      const delayOver = this.pacingDelay(0);
      const submitted = this.submit(volume, offset / blockBytes, length / blockBytes, null, delayOver);
      return this.timed(submitted, (seconds) => this.parts.metrics.observeWrite(seconds));
    });
  }

  /** Every write acknowledged before the call is durable when it resolves. */
  flush(): Promise<void> {
    if (this.parts.failure.fatal) return Promise.reject(this.parts.failure.fatal);
    const flushed = new Promise<void>((resolve, reject) => {
      const token = this.nextToken++;
      this.flushes.set(token, { resolve, reject });
      this.parts.run(this.parts.core.onFlush(this.parts.clock.now(), token));
    });
    return this.timed(flushed, (seconds) => this.parts.metrics.observeFlush(seconds));
  }

  /**
   * The newest data, acknowledged or not yet: journal index, then volume writes in flight, then
   * the file. The first two are looked up before the file is read: a write-back that finishes
   * during the read would otherwise take its block out of both while the read saw the old bytes.
   */
  read(index: number, offset: number, length: number): Promise<Uint8Array> {
    return this.readVolume(this.volumeId(index), offset, length);
  }

  /** `read` of the volume with id `volume` (the group's order): the resync copies through it. */
  async readVolume(volume: number, offset: number, length: number): Promise<Uint8Array> {
    const file = this.parts.volumes[volume];
    if (!file) throw new PrimaryNodeError('write-out-of-range', `no volume ${volume}`);
    if (this.parts.failure.fatal) throw this.parts.failure.fatal;
    // The records the overlay names stay readable until this read is done (JournalBlocks.readsSettled).
    const bytes = await readThroughJournaledOverlay(
      file,
      offset,
      length,
      (block) => {
        const content = this.parts.core.newestBlock(volume, block);
        return content === undefined ? this.parts.writeBack.newestBlock(volume, block) : content;
      },
      this.parts.readJournaled,
    ).catch((error: unknown) => {
      throw this.parts.failure.fatal ?? error;
    });
    // After a storage failure the write-back stopped: the files may lack what the index let go.
    // Failed reads, not stale ones (found by the whole-site simulator with a full disk, seed 77).
    if (this.parts.failure.fatal) throw this.parts.failure.fatal;
    return bytes;
  }

  /** The primary is stopping: new writes are refused with `stopping`. */
  stopTaking(): void {
    this.stopping = true;
  }

  // ---- the group's answers -------------------------------------------------------------------

  /** Acknowledged only once the record is in the kernel's hands (`appended`). */
  onAcknowledged(token: number, cycle: CycleNumber, appended: Promise<void>): void {
    const waiter = this.writes.get(token);
    this.writes.delete(token);
    appended.then(
      () => waiter?.resolve(cycle),
      (error) => waiter?.reject(error),
    );
  }

  onRefused(token: number, error: Error): void {
    const waiter = this.writes.get(token);
    this.writes.delete(token);
    waiter?.reject(error);
  }

  onFlushed(token: number): void {
    const waiter = this.flushes.get(token);
    this.flushes.delete(token);
    waiter?.resolve();
  }

  /** Storage failed: every write and flush waiting for an answer gets the failure. */
  failAll(error: Error): void {
    for (const waiter of [...this.writes.values(), ...this.flushes.values()]) waiter.reject(error);
    this.writes.clear();
    this.flushes.clear();
  }

  // ---- checks and parts ----------------------------------------------------------------------

  /**
   * The site's id of the volume at `index` in the configuration's list. Callers of the source API
   * count in the configuration's order; journal records and frames use the ids fixed when the site
   * was created (site.json), so reordering the configuration cannot send a write elsewhere.
   */
  private volumeId(index: number): number {
    const name = this.parts.configured[index]?.name;
    const id = this.parts.shape.volumes.findIndex((volume) => volume.name === name);
    if (name === undefined || id < 0) throw new PrimaryNodeError('write-out-of-range', `no volume ${index}`);
    return id;
  }

  private writeParts(
    volume: number,
    offset: number,
    data: Uint8Array,
    handedOver: boolean,
  ): Promise<CycleNumber> {
    this.checkRange(volume, offset, data.length);
    const blockBytes = this.parts.shape.blockBytes;
    // Kept as it is only when nobody else may change it and it holds no more memory than the write
    // counts: a small NBD write is a view into a socket chunk many times its size.
    const keep = handedOver && data.byteOffset === 0 && data.byteLength === data.buffer.byteLength;
    // One pacing delay per source write, whatever its size; the bytes are copied before it, in the call.
    const delayOver = this.pacingDelay(data.length);
    // One journal record carries at most packetBytesMax; a longer write is several, acknowledged together.
    const parts: Promise<CycleNumber>[] = [];
    for (let done = 0; done < data.length; done += limits.packetBytesMax) {
      const chunk = data.subarray(done, Math.min(data.length, done + limits.packetBytesMax));
      const own = keep ? chunk : new Uint8Array(chunk);
      parts.push(
        this.submit(volume, (offset + done) / blockBytes, chunk.length / blockBytes, own, delayOver),
      );
    }
    return Promise.all(parts).then((cycles) => Math.max(...cycles));
  }

  /** `promise`, with its time from now to its settling handed to `observe` (for the metrics). */
  private timed<T>(promise: Promise<T>, observe: (seconds: number) => void): Promise<T> {
    const startedMs = performance.now();
    const settled = (): void => observe((performance.now() - startedMs) / 1000);
    promise.then(settled, settled);
    return promise;
  }

  private checkRange(volume: number, offset: number, length: number): void {
    if (this.parts.failure.fatal) throw this.parts.failure.fatal;
    if (this.stopping)
      throw new PrimaryNodeError('stopping', 'the primary is stopping and takes no more writes');
    // Refused before waiting for journal room: a fenced primary's journal is never collected again.
    const fenced = this.parts.core.writeRefusal();
    if (fenced) throw fenced;
    const file = this.parts.volumes[volume];
    if (!file) throw new PrimaryNodeError('write-out-of-range', `no volume ${volume}`);
    const block = this.parts.shape.blockBytes;
    if (offset % block !== 0 || length % block !== 0 || length === 0) {
      throw new PrimaryNodeError(
        'write-misaligned',
        `offset ${offset} and length ${length} must be whole ${block}-byte blocks`,
      );
    }
    if (offset + length > file.sizeBytes) {
      throw new PrimaryNodeError(
        'write-out-of-range',
        `${offset}+${length} beyond the ${file.sizeBytes} bytes of volume ${volume}`,
      );
    }
  }

  /**
   * One journal record's worth, handed to the group once its pacing delay (`delayOver`, null for
   * none) is over and the journal has room; `data` is ours.
   */
  private submit(
    volume: number,
    block: number,
    blockCount: number,
    data: Uint8Array | null,
    delayOver: Promise<void> | null,
  ): Promise<CycleNumber> {
    const bytes = data?.length ?? 0;
    const admitted = delayOver
      ? delayOver.then(() => this.afterPacingDelay(bytes))
      : this.whenJournalHasRoom(bytes);
    return admitted.then(
      () =>
        new Promise<CycleNumber>((resolve, reject) => {
          try {
            if (this.parts.failure.fatal) {
              reject(this.parts.failure.fatal);
              return;
            }
            const token = this.nextToken++;
            this.writes.set(token, { resolve, reject });
            const extent: Extent = { volume, block, blockCount, data };
            this.parts.run(this.parts.core.onWrite(this.parts.clock.now(), { token, node: 0, extent }));
          } finally {
            // Journaled (the write-back holds the bytes now) or refused: no longer let through.
            this.parts.journalRoom.onAdmitted(bytes);
          }
        }),
    );
  }

  private pacingDelay(bytes: number): Promise<void> | null {
    return this.parts.pacer?.beforeWrite(bytes) ?? null;
  }

  /**
   * A delayed write goes on only if the primary still takes writes: the refusals that end its wait
   * (stop, fence, switchover) reject it first, and this says so again rather than rely on it.
   */
  private afterPacingDelay(bytes: number): Promise<void> {
    if (this.stopping)
      return Promise.reject(
        new PrimaryNodeError('stopping', 'the primary stopped before this write could be journaled'),
      );
    const refusal = this.parts.core.writeRefusal();
    if (refusal) return Promise.reject(refusal);
    return this.whenJournalHasRoom(bytes);
  }

  private whenJournalHasRoom(bytes: number): Promise<void> {
    if (this.parts.failure.fatal) return Promise.reject(this.parts.failure.fatal);
    return this.parts.journalRoom.whenRoom(bytes);
  }
}

/**
 * A refusal (out of range, stopping, a storage failure) comes back as a rejected promise, never a
 * throw: a caller that only handles rejections (a timer, an NBD handler) must not be killed by it.
 */
function rejectingOnThrow<T>(call: () => Promise<T>): Promise<T> {
  try {
    return call();
  } catch (error) {
    return Promise.reject(error);
  }
}
