/**
 * An append-only journal in segment files (`<directory>/<16 digits>.seg`, each at most
 * segmentBytesMax). Appends are batched into one write() per batch; `sync()` is one fdatasync for
 * everything written before it (group commit). Every segment starts with checkpoint records from the
 * owner, so any suffix of segments replays on its own and old segments can simply be deleted.
 *
 * Every frame carries its sequence and the durable watermark (record-codec.ts); a segment's header
 * and `journal.state` are durable before its first frame is written; a clean close ends with a close
 * frame; a sync that found nothing else waiting is followed by a durable frame. So replay
 * (journal-replay.ts) can tell a torn tail, which it cuts, from damage, which it refuses with the path
 * and offset before anything on disk changes.
 */
import { join } from 'node:path';
import { assert } from '../core/assert.ts';
import { StorageError } from '../core/errors.ts';
import { type FileSystem, syncDirectory, syncDirectorySync, writevAll } from '../io/file-system.ts';
import { uninitialized } from '../protocol/bytes.ts';
import { dataFileMode, makeDirectoryDurable, writeFileAtomic } from './durable-file.ts';
import {
  encodeJournalState,
  encodeSegmentHeader,
  type JournalPosition,
  type JournalState,
  replayJournal,
  segmentHeaderBytes,
  segmentName,
  stateFileName,
  type TornTail,
} from './journal-replay.ts';
import {
  decodeJournalFrame,
  type FrameKind,
  journalFrameHeaderBytes,
  journalFramePieces,
  type RecordCodec,
  recordBodyBytesMax,
} from './record-codec.ts';

export type { JournalPosition } from './journal-replay.ts';

/**
 * Bytes of frames one write() takes. Encoding a batch (copy and CRC) holds the event loop, so a
 * batch as large as a segment would silence the site for a second under a catch-up; after each
 * batch the loop runs timers and reads before the next.
 */
export const writeBatchBytesMax = 4 * 1024 * 1024;

/** The most one read takes when records lying close together are read back in one go. */
const mergedReadBytesMax = 1024 * 1024;
/** Records at most this far apart are read with the bytes between them rather than in two reads. */
const mergedReadGapBytesMax = 64 * 1024;

export interface SegmentJournalOptions<R> {
  /** Where the segments live: node:fs in production, a simulated disk in the simulator. */
  fs: FileSystem;
  directory: string;
  segmentBytesMax: number;
  codec: RecordCodec<R>;
  /** Records that restate the owner's state; written first in every new segment. */
  checkpoint: () => R[];
  /**
   * When given, replay hands each record to it with its position as it reads it, and keeps none:
   * the owner keeps what it needs (the secondary keeps positions, not data), so a journal of
   * gigabytes replays in the memory of one segment. Without it, `open` returns every record.
   */
  onReplayed?: (record: R, position: JournalPosition) => void;
}

export interface JournalOpenReport {
  segments: number;
  records: number;
  /** Where a torn tail was cut, if one was. */
  cut: TornTail | null;
}

interface Segment {
  number: number;
  path: string;
  bytes: number;
  /** Highest cycle of any record in it: once every cycle up to here is done, the file can go. */
  cycleMax: number;
}

interface PendingAppend {
  kind: FrameKind;
  /** The body as the codec gave it: its fields, then its block data (not copied). */
  body: Uint8Array[];
  bodyBytes: number;
  cycle: number;
  resolve: (position: JournalPosition) => void;
  reject: (error: unknown) => void;
}

export class SegmentJournal<R> {
  private segments: Segment[] = [];
  /** The segment this run appends to, once the first append started it; its file exists once `fd >= 0`. */
  private current: Segment | null = null;
  private fd = -1;
  /** The sequence the next frame gets. */
  private nextSequence = 1;
  /** The sequence of the last frame handed to write(). */
  private writtenSequence = 0;
  /** Every frame up to this sequence was fdatasynced: written into each frame as its watermark. */
  private durableSequence = 0;
  /** Set by close(): no durable frame after the last sync, the close frame ends the segment. */
  private closing = false;
  private pending: PendingAppend[] = [];
  /** Bytes of the frames in `pending`. */
  private queuedBytes = 0;
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
  private failureListener: ((failure: StorageError) => void) | null = null;
  /** Segment deletions run one after the other, oldest segment first. */
  private deletions: Promise<void> = Promise.resolve();
  private readonly deleting = new Set<Segment>();
  /**
   * The floor journal.state says now: a segment's creation writes it again as it is. Only a
   * collection moves it, once the segments above it restate the owner durably; a floor taken from
   * `deleting` at a creation could name a segment whose checkpoint is not on disk yet.
   */
  private stateFloor = 1;
  /** Counters for the status and the benchmarks. */
  writeCalls = 0;
  syncCalls = 0;
  appended = 0;

  /** Descriptors for reading records back, by segment number (see readerOf). */
  private readonly readers = new Map<number, Promise<number>>();
  private readonly fs: FileSystem;

  private constructor(private readonly options: SegmentJournalOptions<R>) {
    this.fs = options.fs;
  }

  /**
   * Opens (or creates) the journal and replays it. New appends go to a fresh segment, started at
   * the first append, so its checkpoint states what the owner rebuilt from the replay.
   */
  static open<R>(options: SegmentJournalOptions<R>): {
    journal: SegmentJournal<R>;
    records: R[];
    report: JournalOpenReport;
  } {
    makeDirectoryDurable(options.fs, options.directory);
    const journal = new SegmentJournal(options);
    const { records, report } = journal.replay();
    return { journal, records, report };
  }

  /**
   * Checks the whole journal first (refusing damage before anything changes), then cuts a torn
   * tail, and makes what replay read durable: new frames may claim it as durable, and a crash of
   * this run must not find the journal older than the one this run went on from.
   */
  private replay(): { records: R[]; report: JournalOpenReport } {
    const replayed = replayJournal(
      this.fs,
      this.options.directory,
      this.options.codec,
      this.options.onReplayed,
    );
    const tail = replayed.tornTail;
    if (tail?.removeFile) this.fs.unlinkSync(tail.path);
    else if (tail) this.fs.truncateSync(tail.path, tail.offset);
    // Released by a collection whose unlinks a crash undid (journal.state's floor was durable first).
    for (const path of replayed.released) this.fs.unlinkSync(path);
    const newest = replayed.segments.at(-1);
    if (newest) this.makeReplayedDurable(newest, replayed.unprovenOffset);
    // A killed process's last renames and creations may be in the page cache only; replay read them.
    syncDirectorySync(this.fs, this.options.directory);
    if (newest && replayed.state && newest.number > replayed.state.last) {
      // A crash came between the newest segment's creation and journal.state naming it. Named now, or
      // the segment this run creates would be two past journal.state, which replay must refuse.
      writeFileAtomic(
        this.fs,
        join(this.options.directory, stateFileName),
        encodeJournalState(this.options.codec.journalRole, {
          floor: replayed.state.floor,
          last: newest.number,
        }),
      );
    }
    this.segments = replayed.segments;
    this.stateFloor = replayed.state?.floor ?? replayed.segments[0]?.number ?? 1;
    this.nextSequence = replayed.lastSequence + 1;
    this.writtenSequence = replayed.lastSequence;
    this.durableSequence = replayed.lastSequence;
    return {
      records: replayed.records,
      report: { segments: replayed.segments.length, records: replayed.records.length, cut: tail },
    };
  }

  /**
   * Makes the newest segment durable as replay read it, before anything relies on it: the frames no
   * watermark vouches for are written again, then synced. A plain fdatasync is not enough: after a
   * failed one (the run before may have died of it) Linux may have marked their pages clean without
   * writing them, and the next fdatasync succeeds without writing them either (PostgreSQL's
   * "fsyncgate"). Written again, they are dirty and the sync covers them. The bytes are the ones the
   * replay returned, so a crash in the middle leaves the same bytes or a torn tail of unsynced frames.
   * A failure refuses the start: this run must not go on from a journal a power loss would take back.
   */
  private makeReplayedDurable(newest: { path: string; bytes: number }, unprovenOffset: number): void {
    const fd = this.fs.openSync(newest.path, 'r+');
    try {
      if (unprovenOffset < newest.bytes) {
        const bytes = this.fs.readFileSync(newest.path).subarray(0, newest.bytes);
        for (let offset = unprovenOffset; offset < bytes.length; )
          offset += this.fs.writeSync(fd, bytes, offset, bytes.length - offset, offset);
      }
      this.fs.fdatasyncSync(fd);
    } catch (cause) {
      throw new StorageError(
        'storage-io',
        `${newest.path}: could not make the replayed journal durable: ${(cause as Error).message}; refusing to start, start again once the disk is healthy`,
        { cause },
      );
    } finally {
      this.fs.closeSync(fd);
    }
  }

  /** Starts the next segment: its file is created by the write chain, its checkpoint goes first. */
  private startSegment(): void {
    const number = (this.segments.at(-1)?.number ?? 0) + 1;
    const path = join(this.options.directory, segmentName(number));
    this.current = { number, path, bytes: segmentHeaderBytes, cycleMax: 0 };
    this.segments.push(this.current);
    for (const record of this.options.checkpoint()) void this.enqueue(record).catch(() => {});
  }

  /**
   * Creates the current segment's file: its header and directory entry durable, then journal.state
   * naming it, before any frame is written, so a segment with a bad header is never a torn tail
   * unless it is the newest and journal.state does not name it yet.
   */
  private async createSegmentFile(segment: Segment): Promise<void> {
    this.fd = await this.fs.open(segment.path, 'wx', dataFileMode);
    const header = encodeSegmentHeader(this.options.codec.journalRole, {
      number: segment.number,
      firstSequence: this.nextSequence,
    });
    await this.writeAll(this.fd, header);
    await this.fs.fdatasync(this.fd);
    this.syncCalls++;
    await syncDirectory(this.fs, this.options.directory);
    await this.writeState({ floor: this.stateFloor, last: segment.number });
  }

  /** The oldest segment that stays: every one from here to the newest must be present. */
  private floor(): number {
    const kept = this.segments.find((segment) => !this.deleting.has(segment));
    assert(kept !== undefined, 'the current segment is never deleted');
    return kept.number;
  }

  /** Replaces journal.state atomically: written, synced, renamed, the directory synced. */
  private async writeState(state: JournalState): Promise<void> {
    const path = join(this.options.directory, stateFileName);
    const temporary = `${path}.tmp`;
    const fd = await this.fs.open(temporary, 'w', dataFileMode);
    try {
      await this.writeAll(fd, encodeJournalState(this.options.codec.journalRole, state));
      await this.fs.fdatasync(fd);
    } finally {
      await this.fs.close(fd);
    }
    await this.fs.rename(temporary, path);
    await syncDirectory(this.fs, this.options.directory);
  }

  /** Appends all of `bytes` at the end of what `fd` wrote: a write may take fewer bytes than given. */
  private async writeAll(fd: number, bytes: Uint8Array): Promise<void> {
    for (let written = 0; written < bytes.length; )
      written += await this.fs.write(fd, bytes, written, bytes.length - written, null);
  }

  /**
   * Bytes of all segments on disk and of the frames queued for them: a bound on the journal's size
   * must count what was accepted, not only what the disk has caught up with.
   */
  get bytes(): number {
    return this.segments.reduce((sum, segment) => sum + segment.bytes, this.queuedBytes);
  }

  /** Bytes of frames appended and not yet handed to write(): what the journal holds in memory. */
  get pendingBytes(): number {
    return this.queuedBytes;
  }

  /** The most `pendingBytes` ever was in this run. */
  pendingBytesPeak = 0;

  get segmentCount(): number {
    return this.segments.length;
  }

  /**
   * Appends a record; resolves with its position once its bytes are written to the file (in the
   * kernel's hands), from when `readRecord` can read it back.
   */
  append(record: R): Promise<JournalPosition> {
    return this.enqueue(record);
  }

  /**
   * Reads back the record at `position` (from `append` or replay), checked: its frame must be whole,
   * its CRC32C must match and its sequence must be the one the position names, or the read fails
   * with journal damage naming the file and offset (never zeroes, never another record). The
   * segment must still be kept: the owner reads only records of cycles it has not released.
   */
  async readRecord(position: JournalPosition): Promise<R> {
    let record: R | null = null;
    await this.readRecords([position], (_, read) => {
      record = read;
    });
    return record as unknown as R;
  }

  /**
   * Reads back the records at `positions`, checked as readRecord checks one, handing each to
   * `onRecord` with its index in `positions` (in file order, not that order). Records lying close
   * together in a segment are read with one read of at most mergedReadBytesMax: a cycle's writes
   * lie one after the other in the journal, so a packet of them costs a read or two, not one per
   * record. The memory held is one such read and the records decoded from it. A record's block data
   * is a view of that read, valid as long as the owner keeps it: copy what is kept beside others.
   */
  async readRecords(
    positions: readonly JournalPosition[],
    onRecord: (index: number, record: R) => void,
  ): Promise<void> {
    const order = positions
      .map((_, index) => index)
      .sort((a, b) => {
        const [first, second] = [positions[a] as JournalPosition, positions[b] as JournalPosition];
        return first.segment - second.segment || first.offset - second.offset;
      });
    for (let start = 0; start < order.length; ) {
      const first = positions[order[start] as number] as JournalPosition;
      let end = start + 1;
      let rangeEnd = first.offset + first.bytes;
      for (; end < order.length; end++) {
        const next = positions[order[end] as number] as JournalPosition;
        const nextEnd = Math.max(rangeEnd, next.offset + next.bytes);
        if (
          next.segment !== first.segment ||
          next.offset - rangeEnd > mergedReadGapBytesMax ||
          nextEnd - first.offset > mergedReadBytesMax
        )
          break;
        rangeEnd = nextEnd;
      }
      const path = join(this.options.directory, segmentName(first.segment));
      const fd = await this.readerOf(first.segment, path);
      const bytes = await this.readExactly(fd, path, first.offset, rangeEnd - first.offset);
      for (const index of order.slice(start, end)) {
        const position = positions[index] as JournalPosition;
        onRecord(index, this.recordIn(bytes, position.offset - first.offset, position, path));
      }
      start = end;
    }
  }

  /** The record whose frame `position` names, found `at` in `bytes` (read from `path`), checked. */
  private recordIn(bytes: Uint8Array, at: number, position: JournalPosition, path: string): R {
    if (position.bytes > journalFrameHeaderBytes + recordBodyBytesMax)
      throw readDamage(path, position.offset, `length ${position.bytes} over the bound`);
    const decoded = decodeJournalFrame(this.options.codec, bytes, at, 'view');
    if ('damage' in decoded) throw readDamage(path, position.offset, decoded.damage);
    if (
      decoded.sequence !== position.sequence ||
      decoded.record === null ||
      decoded.end - at !== position.bytes
    )
      throw readDamage(
        path,
        position.offset,
        `a ${decoded.kind} frame of sequence ${decoded.sequence} and ${decoded.end - at} bytes where record ${position.sequence} of ${position.bytes} bytes was written`,
      );
    return decoded.record;
  }

  /**
   * A descriptor for reading a segment, opened once and kept until the segment is deleted or the
   * journal closed: a catch-up reads its packets back record by record, and an open and a close
   * per record doubled the system calls it costs.
   */
  private readerOf(segment: number, path: string): Promise<number> {
    let reader = this.readers.get(segment);
    if (!reader) {
      reader = this.fs.open(path, 'r');
      this.readers.set(segment, reader);
      reader.catch(() => this.readers.delete(segment));
    }
    return reader;
  }

  /** Closes the reading descriptor of a segment, if one is open (its reads are done or void). */
  private async closeReader(segment: number): Promise<void> {
    const reader = this.readers.get(segment);
    if (!reader) return;
    this.readers.delete(segment);
    const fd = await reader.catch(() => -1);
    if (fd >= 0) await this.fs.close(fd);
  }

  /** `length` bytes at `offset`, or journal damage: a short read means the file lost them. */
  private async readExactly(fd: number, path: string, offset: number, length: number): Promise<Uint8Array> {
    // Not zeroed: every byte is read into it, or the read fails.
    const bytes = uninitialized(length);
    for (let done = 0; done < length; ) {
      const read = await this.fs.read(fd, bytes, done, length - done, offset + done);
      if (read === 0)
        throw readDamage(path, offset + done, `file ends ${length - done} bytes short of a frame`);
      done += read;
    }
    return bytes;
  }

  private enqueue(record: R): Promise<JournalPosition> {
    if (this.failure) return Promise.reject(this.failure);
    // After the close frame nothing may follow, and the files may belong to a new owner already.
    if (this.closing)
      return Promise.reject(
        new StorageError(
          'storage-io',
          `${this.options.directory}: the journal is closed: an append after the stop is refused`,
        ),
      );
    if (!this.current) this.startSegment();
    this.appended++;
    return this.enqueueFrame(
      'record',
      this.options.codec.bodyPieces(record),
      this.options.codec.cycleOf(record),
    );
  }

  private enqueueFrame(kind: FrameKind, body: Uint8Array[], cycle: number): Promise<JournalPosition> {
    const bodyBytes = body.reduce((sum, piece) => sum + piece.length, 0);
    assert(
      segmentHeaderBytes + journalFrameHeaderBytes + bodyBytes <= this.options.segmentBytesMax,
      'a record fits in one segment',
    );
    const done = new Promise<JournalPosition>((resolve, reject) => {
      this.pending.push({ kind, body, bodyBytes, cycle, resolve, reject });
      this.queuedBytes += journalFrameHeaderBytes + bodyBytes;
      this.pendingBytesPeak = Math.max(this.pendingBytesPeak, this.queuedBytes);
    });
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
      // After a failure nothing more is written: no sync could vouch for it.
      await this.throwIfFailed();
      const current = this.current as Segment;
      if (this.fd < 0) await this.failOnError(current.path, () => this.createSegmentFile(current));
      const batch = this.takeBatch();
      if (batch.length === 0) {
        await this.rollover();
        continue;
      }
      await this.writeBatch(batch);
    }
  }

  /** Runs a step of the write chain; a failure fails the journal and every append waiting. */
  private async failOnError(
    path: string,
    step: () => Promise<void>,
    batch: PendingAppend[] = [],
  ): Promise<void> {
    try {
      await step();
    } catch (cause) {
      // A journal that failed a write cannot say what reached the disk: every later append fails too.
      this.failWith(
        new StorageError('storage-io', `${path}: write failed: ${(cause as Error).message}`, { cause }),
      );
      for (const append of [...batch, ...this.pending.splice(0)]) append.reject(this.failure);
      this.queuedBytes = 0;
      throw this.failure;
    }
  }

  /**
   * Calls `listener` once, when the journal first fails (at once if it has). A failed write of a
   * frame of its own (the durable watermark, a checkpoint, the close frame) rejects no append, so
   * without this the owner would learn of it only at its next append, running on meanwhile as if
   * the journal could still take one.
   */
  onFailure(listener: (failure: StorageError) => void): void {
    this.failureListener = listener;
    const failure = this.failure;
    if (failure) queueMicrotask(() => listener(failure));
  }

  /** The journal's first failure stays its failure; the listener hears of it once. */
  private failWith(failure: StorageError): StorageError {
    if (this.failure) return this.failure;
    this.failure = failure;
    const listener = this.failureListener;
    if (listener) queueMicrotask(() => listener(failure));
    return failure;
  }

  /** Once the journal failed: rejects every append waiting and throws the failure. */
  private async throwIfFailed(): Promise<void> {
    const failure = this.failure;
    if (failure) await this.failOnError((this.current as Segment).path, () => Promise.reject(failure));
  }

  /**
   * The batch's frames, numbered in write order, each carrying the durable watermark of now, and
   * where each will lie once written at the end of the current segment, as the pieces of one
   * gathered write (gatherPieces).
   */
  private frameBatch(batch: PendingAppend[]): {
    pieces: Uint8Array[];
    bytes: number;
    positions: JournalPosition[];
  } {
    const current = this.current as Segment;
    let offset = current.bytes;
    const positions: JournalPosition[] = [];
    const pieces: Uint8Array[] = [];
    for (const append of batch) {
      const sequence = this.nextSequence++;
      positions.push({
        segment: current.number,
        offset,
        sequence,
        bytes: journalFrameHeaderBytes + append.bodyBytes,
      });
      pieces.push(
        ...journalFramePieces(append.kind, { sequence, durable: this.durableSequence }, append.body),
      );
      offset += journalFrameHeaderBytes + append.bodyBytes;
    }
    return { pieces: gatherPieces(pieces), bytes: offset - current.bytes, positions };
  }

  private async writeBatch(batch: PendingAppend[]): Promise<void> {
    const current = this.current as Segment;
    const { pieces, bytes, positions } = this.frameBatch(batch);
    await this.failOnError(
      current.path,
      async () => {
        await writevAll(this.fs, this.fd, pieces, null);
        this.writeCalls++;
      },
      batch,
    );
    this.writtenSequence = this.nextSequence - 1;
    current.bytes += bytes;
    batch.forEach((append, index) => {
      current.cycleMax = Math.max(current.cycleMax, append.cycle);
      append.resolve(positions[index] as JournalPosition);
    });
  }

  /**
   * The queued records that still fit in the current segment (none means: roll over first), at
   * most writeBatchBytesMax of them unless one record alone is larger.
   */
  private takeBatch(): PendingAppend[] {
    const current = this.current as Segment;
    let room = this.options.segmentBytesMax - current.bytes;
    let batchRoom = writeBatchBytesMax;
    let count = 0;
    for (const append of this.pending) {
      const frameBytes = journalFrameHeaderBytes + append.bodyBytes;
      if (frameBytes > room || (count > 0 && frameBytes > batchRoom)) break;
      batchRoom -= frameBytes;
      room -= frameBytes;
      count++;
    }
    const batch = this.pending.splice(0, count);
    for (const append of batch) this.queuedBytes -= journalFrameHeaderBytes + append.bodyBytes;
    return batch;
  }

  /**
   * A full segment is made durable and closed before the next one starts. Only a segment whose
   * every sync succeeded counts as durable: a sync beside this one that failed may have dropped
   * pages this one then found clean, so a failure of either stops the journal here, and no later
   * segment ever follows one that may not be on the disk (replay trusts all but the newest).
   */
  private async rollover(): Promise<void> {
    const current = this.current as Segment;
    await this.failOnError(current.path, () => this.fs.fdatasync(this.fd));
    this.syncCalls++;
    // A sync of this segment may still be running beside the writes: never close under it.
    await this.syncChain;
    await this.throwIfFailed();
    this.durableSequence = this.writtenSequence;
    await this.fs.close(this.fd);
    this.fd = -1;
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
      const upTo = this.writtenSequence;
      const synced = this.syncChain.then(async () => {
        try {
          // A sync after a failed one proves nothing: the failed one may have dropped the pages.
          if (this.failure) throw this.failure;
          await this.fs.fdatasync(fd);
          if (this.failure) throw this.failure;
        } catch (cause) {
          if (cause === this.failure) throw cause;
          // After a failed fdatasync the kernel may forget the error: never trust a later one.
          throw this.failWith(
            new StorageError('storage-io', `journal fdatasync failed: ${(cause as Error).message}`, {
              cause,
            }),
          );
        }
        this.syncCalls++;
        this.onSynced(upTo);
      });
      this.syncChain = synced.catch(() => {});
      return synced;
    });
    this.queuedSync = sync;
    return sync;
  }

  /**
   * Frames up to `upTo` are durable. When nothing else is waiting to carry the new watermark, a
   * durable frame does: without it, damage to the last synced frames would look like a torn tail.
   */
  private onSynced(upTo: number): void {
    if (upTo <= this.durableSequence) return;
    this.durableSequence = upTo;
    if (this.closing || this.failure || this.pending.length > 0) return;
    void this.enqueueFrame('durable', [], 0).catch(() => {});
  }

  /**
   * Deletes the oldest segments whose cycles are all at or below `cycle`, up to the first one that
   * is not or is the current one, off the event loop (unlinking 64 MiB of cached pages takes
   * milliseconds). journal.state names the new floor before the first file goes. Deletion stops at
   * the first failure, which rejects: a newer segment gone while an older one stayed would let a
   * redo bring back old data. The unlinks are not synced: a crash may keep any of them, and replay
   * leaves out (and the next open removes) what is below the durable floor. So the owner calls this
   * only for cycles it is done with for good.
   */
  async deleteUpTo(cycle: number): Promise<number> {
    // Before the first append no segment carries a checkpoint of the present state: keep them all.
    // Closing or closed, it deletes nothing: the files may be a role change's already (the next
    // start releases what this one could not).
    const current = this.current;
    if (!current || this.closing) return 0;
    // Only the oldest segments go, so the ones left are contiguous (replay refuses a gap).
    const doomed: Segment[] = [];
    for (const segment of this.segments) {
      if (segment === current || segment.cycleMax > cycle) break;
      if (!this.deleting.has(segment)) doomed.push(segment);
    }
    if (doomed.length === 0) return 0;
    for (const segment of doomed) this.deleting.add(segment);
    const floor = this.floor();
    const deletion = this.deletions.then(async () => {
      // The segments left must restate the owner's state on their own: the current one's
      // checkpoint is made durable before anything older goes, or a power loss could leave a
      // journal that starts over from nothing (a primary numbering its cycles again from 1).
      await this.sync();
      // journal.state says they may be gone before the first one goes, after any segment creation.
      await this.run(async () => {
        // A failed journal may have a newest segment whose creation failed: never name it.
        if (this.failure) throw this.failure;
        await this.writeState({ floor, last: (this.segments.at(-1) as Segment).number });
        this.stateFloor = floor;
      });
      for (const segment of doomed) {
        await this.closeReader(segment.number);
        await this.fs.unlink(segment.path);
        this.segments = this.segments.filter((kept) => kept !== segment);
        this.deleting.delete(segment);
      }
    });
    this.deletions = deletion.catch(() => {});
    await deletion;
    return doomed.length;
  }

  /**
   * Drops the journal as kill -9 would: the file is closed with no sync and no close frame. For the
   * tests that build journals a crash leaves behind; call it once every append has resolved.
   */
  abandon(): void {
    this.failure ??= new StorageError('storage-io', 'the journal was abandoned');
    for (const segment of [...this.readers.keys()]) void this.closeReader(segment).catch(() => {});
    if (this.fd >= 0) this.fs.closeSync(this.fd);
    this.fd = -1;
  }

  /**
   * A clean stop: everything synced, then a synced close frame whose watermark covers every frame
   * before it, so replay can cut nothing of this run.
   */
  async close(): Promise<void> {
    this.closing = true;
    await this.sync();
    if (this.current && !this.failure) {
      void this.enqueueFrame('close', [], 0).catch(() => {});
      await this.sync();
    }
    await this.chain;
    await this.syncChain;
    // A collection still unlinking would run on past the stop (and race the next start's own).
    await this.deletions;
    for (const segment of [...this.readers.keys()]) await this.closeReader(segment);
    if (this.fd >= 0) await this.fs.close(this.fd);
    this.fd = -1;
  }
}

/** A record read back that does not check out: damage of a kept segment, named by file and offset. */
function readDamage(path: string, offset: number, reason: string): StorageError {
  return new StorageError('journal-corrupt', `journal damaged: ${path} at offset ${offset}: ${reason}`);
}

/**
 * Pieces this large are written from where they lie (the clients' block data): a gathered write
 * copies them into the page cache once, with no batch buffer between. Smaller ones (frame headers,
 * record fields, 4 KiB blocks) are joined into runs, so that a batch of small records stays one
 * buffer or a few rather than thousands of pieces (each an iovec for the kernel).
 */
export const gatherPieceBytesMin = 16 * 1024;

/** `pieces` with the runs of small ones joined (see gatherPieceBytesMin). */
export function gatherPieces(pieces: readonly Uint8Array[]): Uint8Array[] {
  const gathered: Uint8Array[] = [];
  let run: Uint8Array[] = [];
  let runBytes = 0;
  const endRun = () => {
    if (run.length === 1) gathered.push(run[0] as Uint8Array);
    else if (run.length > 1) gathered.push(Buffer.concat(run, runBytes));
    run = [];
    runBytes = 0;
  };
  for (const piece of pieces) {
    if (piece.length >= gatherPieceBytesMin) {
      endRun();
      gathered.push(piece);
    } else if (piece.length > 0) {
      run.push(piece);
      runBytes += piece.length;
    }
  }
  endRun();
  return gathered;
}
