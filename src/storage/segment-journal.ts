/**
 * An append-only journal in segment files (`<directory>/<16 digits>.seg`, each at most
 * segmentBytesMax). Appends are batched into one write() per batch; `sync()` is one fdatasync for
 * everything written before it (group commit). Every segment starts with checkpoint records from the
 * owner, so any suffix of segments replays on its own and old segments can simply be deleted.
 *
 * Opening replays every segment in order. Damage in the last segment is a torn tail (a crash while
 * writing): the file is cut at the first bad record and every record before it is kept. Damage in
 * any earlier segment cannot come from a crash (a segment is synced before the next one starts), so
 * it is refused as journal-corrupt with the path and offset.
 */
import {
  closeSync,
  fdatasync,
  mkdirSync,
  openSync,
  readdirSync,
  readFileSync,
  truncateSync,
  unlink,
  write,
} from 'node:fs';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { assert } from '../core/assert.ts';
import { StorageError } from '../core/errors.ts';
import { dataDirectoryMode, dataFileMode } from './durable-file.ts';
import { decodeRecords, encodeRecord, type RecordCodec, type RecordDamage } from './record-codec.ts';

const writeAsync = promisify(write);
const fdatasyncAsync = promisify(fdatasync);
const unlinkAsync = promisify(unlink);

export interface SegmentJournalOptions<R> {
  directory: string;
  segmentBytesMax: number;
  codec: RecordCodec<R>;
  /** Records that restate the owner's state; written first in every new segment. */
  checkpoint: () => R[];
}

export interface JournalOpenReport {
  segments: number;
  records: number;
  /** Where a torn tail was cut, if one was. */
  cut: (RecordDamage & { path: string; bytesDropped: number }) | null;
}

interface Segment {
  number: number;
  path: string;
  bytes: number;
  /** Highest cycle of any record in it: once every cycle up to here is done, the file can go. */
  cycleMax: number;
}

interface PendingAppend {
  bytes: Uint8Array;
  cycle: number;
  resolve: () => void;
  reject: (error: unknown) => void;
}

export class SegmentJournal<R> {
  private segments: Segment[] = [];
  private fd = -1;
  private pending: PendingAppend[] = [];
  /** Writes and rollovers run one at a time, in order. */
  private chain: Promise<void> = Promise.resolve();
  /**
   * fdatasyncs run one at a time beside the writes: appends go on while the disk syncs what came
   * before (a sync that blocked writes would stall every client for the length of a flush).
   */
  private syncChain: Promise<void> = Promise.resolve();
  private flushQueued = false;
  /** A sync queued but not started: later callers share it (group commit). */
  private queuedSync: Promise<void> | null = null;
  private failure: StorageError | null = null;
  /** Segment deletions run one after the other, oldest segment first. */
  private deletions: Promise<void> = Promise.resolve();
  private readonly deleting = new Set<Segment>();
  /** Counters for the status and the benchmarks. */
  writeCalls = 0;
  syncCalls = 0;
  appended = 0;

  private constructor(private readonly options: SegmentJournalOptions<R>) {}

  /**
   * Opens (or creates) the journal and replays it. New appends go to a fresh segment, started at
   * the first append, so its checkpoint states what the owner rebuilt from the replay.
   */
  static open<R>(options: SegmentJournalOptions<R>): {
    journal: SegmentJournal<R>;
    records: R[];
    report: JournalOpenReport;
  } {
    mkdirSync(options.directory, { recursive: true, mode: dataDirectoryMode });
    const journal = new SegmentJournal(options);
    const { records, report } = journal.replay();
    return { journal, records, report };
  }

  private replay(): { records: R[]; report: JournalOpenReport } {
    const names = readdirSync(this.options.directory)
      .filter((name) => /^\d{16}\.seg$/.test(name))
      .sort();
    const records: R[] = [];
    let cut: JournalOpenReport['cut'] = null;
    names.forEach((name, index) => {
      const path = join(this.options.directory, name);
      const bytes = readFileSync(path);
      const decoded = decodeRecords(this.options.codec, bytes);
      if (decoded.damage) {
        if (index !== names.length - 1) {
          throw new StorageError(
            'journal-corrupt',
            `${path}: ${decoded.damage.reason} at offset ${decoded.damage.offset}, and later segments follow; refusing to guess`,
          );
        }
        truncateSync(path, decoded.damage.offset);
        cut = { ...decoded.damage, path, bytesDropped: bytes.length - decoded.damage.offset };
      }
      const cycleMax = decoded.records.reduce(
        (max, record) => Math.max(max, this.options.codec.cycleOf(record)),
        0,
      );
      const size = decoded.damage ? decoded.damage.offset : bytes.length;
      this.segments.push({ number: Number(name.slice(0, 16)), path, bytes: size, cycleMax });
      records.push(...decoded.records);
    });
    return { records, report: { segments: names.length, records: records.length, cut } };
  }

  private startSegment(): void {
    const number = (this.segments.at(-1)?.number ?? 0) + 1;
    const path = join(this.options.directory, `${String(number).padStart(16, '0')}.seg`);
    this.fd = openSync(path, 'wx', dataFileMode);
    this.segments.push({ number, path, bytes: 0, cycleMax: 0 });
    for (const record of this.options.checkpoint()) void this.enqueue(record).catch(() => {});
  }

  /** Bytes of all segments on disk. */
  get bytes(): number {
    return this.segments.reduce((sum, segment) => sum + segment.bytes, 0);
  }

  get segmentCount(): number {
    return this.segments.length;
  }

  /** Appends a record; resolves once its bytes are written to the file (in the kernel's hands). */
  append(record: R): Promise<void> {
    return this.enqueue(record);
  }

  private enqueue(record: R): Promise<void> {
    if (this.failure) return Promise.reject(this.failure);
    if (this.fd < 0) this.startSegment();
    const bytes = encodeRecord(this.options.codec, record);
    assert(bytes.length <= this.options.segmentBytesMax, 'a record fits in one segment');
    const cycle = this.options.codec.cycleOf(record);
    const done = new Promise<void>((resolve, reject) => {
      this.pending.push({ bytes, cycle, resolve, reject });
    });
    this.appended++;
    if (!this.flushQueued) {
      this.flushQueued = true;
      void this.run(() => this.flush()).catch(() => {});
    }
    return done;
  }

  private run(operation: () => Promise<void>): Promise<void> {
    const next = this.chain.then(operation);
    this.chain = next.catch(() => {});
    return next;
  }

  /** Writes every queued record, one write() per batch, rolling segments over at the bound. */
  private async flush(): Promise<void> {
    this.flushQueued = false;
    while (this.pending.length > 0) {
      const batch = this.takeBatch();
      if (batch.length === 0) {
        await this.rollover();
        continue;
      }
      await this.writeBatch(batch);
    }
  }

  private async writeBatch(batch: PendingAppend[]): Promise<void> {
    const bytes = Buffer.concat(batch.map((append) => append.bytes));
    const current = this.segments.at(-1) as Segment;
    try {
      let written = 0;
      while (written < bytes.length) {
        written += (await writeAsync(this.fd, bytes, written, bytes.length - written, null)).bytesWritten;
      }
      this.writeCalls++;
    } catch (cause) {
      // A journal that failed a write cannot say what reached the disk: every later append fails too.
      this.failure = new StorageError(
        'storage-io',
        `${current.path}: write failed: ${(cause as Error).message}`,
        {
          cause,
        },
      );
      for (const append of [...batch, ...this.pending.splice(0)]) append.reject(this.failure);
      throw this.failure;
    }
    current.bytes += bytes.length;
    for (const append of batch) {
      current.cycleMax = Math.max(current.cycleMax, append.cycle);
      append.resolve();
    }
  }

  /** The queued records that still fit in the current segment (none means: roll over first). */
  private takeBatch(): PendingAppend[] {
    const current = this.segments.at(-1) as Segment;
    let room = this.options.segmentBytesMax - current.bytes;
    let count = 0;
    for (const append of this.pending) {
      if (append.bytes.length > room) break;
      room -= append.bytes.length;
      count++;
    }
    return this.pending.splice(0, count);
  }

  /** A full segment is made durable and closed before the next one starts. */
  private async rollover(): Promise<void> {
    await fdatasyncAsync(this.fd);
    this.syncCalls++;
    // A sync of this segment may still be running beside the writes: never close under it.
    await this.syncChain;
    closeSync(this.fd);
    const waiting = this.pending.splice(0);
    this.startSegment();
    // The checkpoint of the new segment goes first, then what was waiting.
    this.pending.push(...waiting);
  }

  /**
   * Makes every record appended before the call durable. Callers that arrive before the records
   * are written share one fdatasync (group commit); it runs beside later writes, which it does not
   * need to cover. Earlier segments were synced at their rollover.
   */
  sync(): Promise<void> {
    if (this.queuedSync) return this.queuedSync;
    const sync = this.run(async () => {
      await this.flush();
      // From here on, a new caller's records may be written after this fdatasync starts.
      this.queuedSync = null;
    }).then(() => {
      if (this.failure) throw this.failure;
      const fd = this.fd;
      if (fd < 0) return;
      const synced = this.syncChain.then(async () => {
        try {
          await fdatasyncAsync(fd);
        } catch (cause) {
          // After a failed fdatasync the kernel may forget the error: never trust a later one.
          this.failure ??= new StorageError(
            'storage-io',
            `journal fdatasync failed: ${(cause as Error).message}`,
            {
              cause,
            },
          );
          throw this.failure;
        }
        this.syncCalls++;
      });
      this.syncChain = synced.catch(() => {});
      return synced;
    });
    this.queuedSync = sync;
    return sync;
  }

  /**
   * Deletes every segment, except the current one, whose cycles are all at or below `cycle`, oldest
   * first, off the event loop (unlinking 64 MiB of cached pages takes milliseconds). Deletion stops
   * at the first failure, which rejects: a newer segment gone while an older one stayed would let a
   * redo bring back old data.
   */
  async deleteUpTo(cycle: number): Promise<number> {
    // Before the first append no segment carries a checkpoint of the present state: keep them all.
    if (this.fd < 0) return 0;
    const current = this.segments.at(-1);
    const doomed = this.segments.filter(
      (segment) => segment !== current && segment.cycleMax <= cycle && !this.deleting.has(segment),
    );
    for (const segment of doomed) this.deleting.add(segment);
    const deletion = this.deletions.then(async () => {
      for (const segment of doomed) {
        await unlinkAsync(segment.path);
        this.segments = this.segments.filter((kept) => kept !== segment);
        this.deleting.delete(segment);
      }
    });
    this.deletions = deletion.catch(() => {});
    await deletion;
    return doomed.length;
  }

  async close(): Promise<void> {
    await this.sync();
    await this.chain;
    await this.syncChain;
    if (this.fd >= 0) closeSync(this.fd);
    this.fd = -1;
  }
}
