/**
 * What a journal directory must look like, and the checks replay makes before it trusts any of it.
 * Replay only reads: it returns the records and, when it found one, the torn tail that may be cut;
 * any other finding is thrown as journal damage before a byte on disk has changed.
 *
 * On disk (format version 2):
 * - `<16 digits>.seg` segment files. Each starts with a header (magic, format version, journal role,
 *   segment number, sequence of its first frame, CRC32C) that is fdatasynced, together with the
 *   directory entry, before any frame is written to the segment; then frames (record-codec.ts).
 * - `journal.state`, replaced atomically (write, fdatasync, rename, directory fsync): the oldest
 *   segment that must be present (`floor`) and the newest segment created (`last`). Written after a
 *   segment's header is durable and before collection unlinks anything.
 *
 * A segment below the floor is one collection released: the floor moves only when the owner is done
 * with every cycle in the segments below it (the primary once their writes reached the volumes and
 * were flushed, the secondary once its volumes were synced and the applied record made durable), and
 * journal.state names it durably before the first of them is unlinked. Their unlinks are not synced
 * one by one, so a crash may keep any of them: replay leaves them out, and the journal removes them.
 * From the floor to the newest, every segment must be present.
 *
 * The rule that tells damage from a torn tail: a crash can only tear what had not been synced, and
 * only in the last segment (a segment is synced before the next one is created). A bad frame in the
 * last segment is a torn tail if no valid frame after it claims (by its durable watermark) that the
 * bad frame had been synced; otherwise, and anywhere else, it is damage. docs/storage.md has the
 * table of every check with its message.
 */
import { join } from 'node:path';
import { StorageError } from '../core/errors.ts';
import type { FileSystem } from '../io/file-system.ts';
import { crc32c } from '../protocol/crc32c.ts';
import {
  type DecodedFrame,
  decodeJournalFrame,
  findDurableClaim,
  type JournalRole,
  journalRoles,
  type RecordCodec,
} from './record-codec.ts';

/** Version 1 (no header, no sequences) is refused: the project keeps no old journals. */
export const journalFormatVersion = 2;
const segmentMagic = Buffer.from('CRJOURNL', 'ascii');
const stateMagic = Buffer.from('CRJSTATE', 'ascii');
/**
 * A segment header and journal.state share one layout: magic, u16 version, u8 role, u8 zero, two
 * u64 (segment number and first sequence; floor and last), u32 CRC32C of the bytes before it.
 */
export const segmentHeaderBytes = 8 + 2 + 1 + 1 + 8 + 8 + 4;
export const stateFileName = 'journal.state';
const segmentNamePattern = /^\d{16}\.seg$/;

export function segmentName(number: number): string {
  return `${String(number).padStart(16, '0')}.seg`;
}

/** The segments a journal keeps: every one from `floor` to `last` exists. */
export interface JournalState {
  floor: number;
  last: number;
}

export interface SegmentHeader {
  number: number;
  firstSequence: number;
}

/** Header, body and CRC of a header-like block (segment header, state file). */
function encodeBlock(magic: Buffer, role: JournalRole, first: number, second: number): Uint8Array {
  const bytes = new Uint8Array(segmentHeaderBytes);
  const view = new DataView(bytes.buffer);
  bytes.set(magic, 0);
  view.setUint16(8, journalFormatVersion);
  view.setUint8(10, journalRoles[role]);
  view.setBigUint64(12, BigInt(first));
  view.setBigUint64(20, BigInt(second));
  view.setUint32(28, crc32c(bytes.subarray(0, 28)));
  return bytes;
}

export function encodeSegmentHeader(role: JournalRole, header: SegmentHeader): Uint8Array {
  return encodeBlock(segmentMagic, role, header.number, header.firstSequence);
}

export function encodeJournalState(role: JournalRole, state: JournalState): Uint8Array {
  return encodeBlock(stateMagic, role, state.floor, state.last);
}

/** Reads a header-like block, or says what is wrong with it. */
function decodeBlock(
  magic: Buffer,
  role: JournalRole,
  bytes: Uint8Array,
  what: string,
): { first: number; second: number } | { problem: string } {
  if (bytes.length < segmentHeaderBytes) return { problem: `${what} cut short (${bytes.length} bytes)` };
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  if (!magic.equals(bytes.subarray(0, 8)))
    return {
      problem: `no ${what} of journal format ${journalFormatVersion} (written by an older build, or not a cyclerep journal file)`,
    };
  const version = view.getUint16(8);
  if (version !== journalFormatVersion)
    return {
      problem: `journal format version ${version}; this build reads version ${journalFormatVersion} only`,
    };
  if (view.getUint32(28) !== crc32c(bytes.subarray(0, 28))) return { problem: `${what} CRC32C mismatch` };
  if (view.getUint8(10) !== journalRoles[role])
    return { problem: `${what} of a journal of another role (this is the ${role}'s journal)` };
  return { first: Number(view.getBigUint64(12)), second: Number(view.getBigUint64(20)) };
}

/** A file of the journal that does not check out: the site refuses to start. */
function damage(path: string, offset: number, reason: string): StorageError {
  return new StorageError(
    'journal-corrupt',
    `journal damaged: ${path} at offset ${offset}: ${reason}; refusing to start, nothing on disk was changed (docs/storage.md, "Journal validation")`,
  );
}

/**
 * Where a record's frame lies: SegmentJournal.readRecord reads it back. The sequence is checked on
 * the way, so a position of another frame is refused, never misread.
 */
export interface JournalPosition {
  segment: number;
  /** Byte offset of the frame in the segment file. */
  offset: number;
  sequence: number;
  /** The frame's length, header included: records lying close together are read in one go. */
  bytes: number;
}

export interface ReplayedSegment {
  number: number;
  path: string;
  bytes: number;
  cycleMax: number;
}

/** Where replay found a torn tail; `removeFile` when a segment's header never became durable. */
export interface TornTail {
  path: string;
  offset: number;
  reason: string;
  bytesDropped: number;
  removeFile: boolean;
}

export interface ReplayResult<R> {
  records: R[];
  /** Segments as they will be once the torn tail (if any) is cut. */
  segments: ReplayedSegment[];
  state: JournalState | null;
  /** Segments below journal.state's floor, which a crash kept after collection released them. */
  released: string[];
  /** The sequence of the last whole frame kept (0 for an empty journal). */
  lastSequence: number;
  /**
   * Where the newest segment's bytes stop being proven durable (its length when all are): no frame's
   * watermark covers the frames from here on, and from 0 when none of the segment's frames is
   * covered (its header's sync may have failed too). A failed fdatasync may have left these bytes in
   * the page cache only, marked clean, so a later fdatasync would not write them.
   */
  unprovenOffset: number;
  tornTail: TornTail | null;
}

/** Reads and checks a journal directory; throws journal damage, changes nothing. */
/**
 * `onRecord`, when given, receives each record with its position as it is read, and `records`
 * stays empty (see SegmentJournalOptions.onReplayed).
 */
export function replayJournal<R>(
  fs: FileSystem,
  directory: string,
  codec: RecordCodec<R>,
  onRecord?: (record: R, position: JournalPosition) => void,
): ReplayResult<R> {
  const state = readState(fs, directory, codec.journalRole);
  const present = fs
    .readdirSync(directory)
    .filter((name) => segmentNamePattern.test(name))
    .sort();
  const released = present.filter((name) => state !== null && numberOf(name) < state.floor);
  const names = present.slice(released.length);
  const result: ReplayResult<R> = {
    records: [],
    segments: [],
    state,
    released: released.map((name) => join(directory, name)),
    lastSequence: 0,
    unprovenOffset: 0,
    tornTail: null,
  };
  const last = names.at(-1);
  if (last !== undefined) {
    const tornCreation = tornAtCreation(fs, directory, last, state, codec.journalRole);
    if (tornCreation) {
      result.tornTail = tornCreation;
      names.pop();
    }
  }
  checkSegmentSet(directory, names, state);
  const watermark = { durable: 0 };
  let newestFrames: FrameStarts = { firstSequence: 1, offsets: [], end: 0 };
  names.forEach((name, index) => {
    newestFrames = replaySegment(
      fs,
      join(directory, name),
      index === names.length - 1,
      codec,
      result,
      watermark,
      onRecord,
    );
  });
  result.unprovenOffset = unprovenOffset(newestFrames, watermark.durable);
  return result;
}

/** Where each kept frame of a segment starts, and where the kept frames end. */
interface FrameStarts {
  firstSequence: number;
  offsets: number[];
  end: number;
}

/**
 * The first byte of the segment no watermark vouches for: the start of its first frame past
 * `durable`, or 0 (the header too) when even its first frame is past it.
 */
function unprovenOffset(frames: FrameStarts, durable: number): number {
  const firstUnproven = durable + 1 - frames.firstSequence;
  if (firstUnproven <= 0) return 0;
  return frames.offsets[firstUnproven] ?? frames.end;
}

/** The segment number in a segment file's name. */
function numberOf(name: string): number {
  return Number(name.slice(0, 16));
}

function readState(fs: FileSystem, directory: string, role: JournalRole): JournalState | null {
  const path = join(directory, stateFileName);
  if (!fs.existsSync(path)) return null;
  const bytes = fs.readFileSync(path);
  const decoded = decodeBlock(stateMagic, role, bytes, 'journal state');
  if ('problem' in decoded) throw damage(path, 0, decoded.problem);
  if (bytes.length !== segmentHeaderBytes)
    throw damage(path, segmentHeaderBytes, `${bytes.length - segmentHeaderBytes} bytes past the end`);
  const state = { floor: decoded.first, last: decoded.second };
  if (state.floor < 1 || state.floor > state.last)
    throw damage(path, 0, `floor ${state.floor} and last segment ${state.last} are impossible`);
  return state;
}

/**
 * The last segment, one past what journal.state records, no longer than a header: a crash cut its
 * creation short (its header not durable, or journal.state not yet naming it when there was none),
 * and no frame is written before both are, so it never held one.
 */
function tornAtCreation(
  fs: FileSystem,
  directory: string,
  name: string,
  state: JournalState | null,
  role: JournalRole,
): TornTail | null {
  const path = join(directory, name);
  const number = numberOf(name);
  const size = fs.statSync(path).size;
  if (number !== (state?.last ?? 0) + 1 || size > segmentHeaderBytes) return null;
  const decoded = decodeBlock(segmentMagic, role, fs.readFileSync(path), 'segment header');
  if (!('problem' in decoded) && state) return null;
  const reason = 'problem' in decoded ? decoded.problem : `created, but ${stateFileName} was never written`;
  return { path, offset: 0, reason, bytesDropped: size, removeFile: true };
}

/** Segment numbers (those below the floor left out) run without a gap from `floor` to at least `last`. */
function checkSegmentSet(directory: string, names: string[], state: JournalState | null): void {
  const numbers = names.map(numberOf);
  const statePath = join(directory, stateFileName);
  if (numbers.length === 0) {
    if (state)
      throw damage(
        join(directory, segmentName(state.last)),
        0,
        `missing: ${statePath} says segments ${state.floor}..${state.last} exist, and there is none`,
      );
    return;
  }
  const first = numbers[0] as number;
  const newest = numbers.at(-1) as number;
  if (!state)
    throw damage(
      statePath,
      0,
      `missing, yet segments ${first}..${newest} exist (written by an older build?)`,
    );
  numbers.forEach((number, index) => {
    const previous = numbers[index - 1];
    if (previous !== undefined && number !== previous + 1)
      throw damage(
        join(directory, segmentName(previous + 1)),
        0,
        `missing: segments ${previous} and ${number} exist, so acknowledged records in between are gone`,
      );
  });
  if (first > state.floor)
    throw damage(
      join(directory, segmentName(state.floor)),
      0,
      `missing: ${statePath} says segments from ${state.floor} on are kept, the oldest present is ${first}`,
    );
  if (newest < state.last)
    throw damage(
      join(directory, segmentName(state.last)),
      0,
      `missing: ${statePath} says segment ${state.last} was created, the newest present is ${newest}`,
    );
  if (newest > state.last + 1)
    throw damage(
      join(directory, segmentName(newest)),
      0,
      `not recorded in ${statePath}, which names segment ${state.last} as the newest`,
    );
}

/** Replays one segment into `result`; raises `watermark` to the highest durable watermark seen. */
function replaySegment<R>(
  fs: FileSystem,
  path: string,
  isLast: boolean,
  codec: RecordCodec<R>,
  result: ReplayResult<R>,
  watermark: { durable: number },
  onRecord: ((record: R, position: JournalPosition) => void) | undefined,
): FrameStarts {
  const bytes = fs.readFileSync(path);
  const number = Number(path.slice(-20, -4));
  const decoded = decodeBlock(segmentMagic, codec.journalRole, bytes, 'segment header');
  if ('problem' in decoded) throw damage(path, 0, decoded.problem);
  if (decoded.first !== number) throw damage(path, 0, `the header names segment ${decoded.first}`);
  const firstSequence = decoded.second;
  if (result.lastSequence > 0 && firstSequence !== result.lastSequence + 1)
    throw damage(
      path,
      0,
      `starts at sequence ${firstSequence}, but the previous segment ends at ${result.lastSequence}`,
    );
  const segment: ReplayedSegment = { number, path, bytes: bytes.length, cycleMax: 0 };
  const frames: FrameStarts = { firstSequence, offsets: [], end: segmentHeaderBytes };
  let expected = firstSequence;
  let offset = segmentHeaderBytes;
  while (offset < bytes.length) {
    const frame = decodeJournalFrame(codec, bytes, offset);
    const problem =
      'damage' in frame
        ? frame.damage
        : frame.sequence !== expected
          ? `sequence ${frame.sequence} where ${expected} was due`
          : null;
    if (problem !== null) {
      result.tornTail = tornTailOrDamage({ path, bytes, offset, expected, problem, isLast, codec });
      segment.bytes = offset;
      break;
    }
    const kept = frame as DecodedFrame<R>;
    if (kept.record !== null) {
      segment.cycleMax = Math.max(segment.cycleMax, codec.cycleOf(kept.record));
      if (onRecord)
        onRecord(kept.record, { segment: number, offset, sequence: kept.sequence, bytes: kept.end - offset });
      else result.records.push(kept.record);
    }
    watermark.durable = Math.max(watermark.durable, kept.durable);
    frames.offsets.push(offset);
    expected++;
    offset = (frame as DecodedFrame<R>).end;
    frames.end = offset;
  }
  result.lastSequence = expected - 1;
  result.segments.push(segment);
  return frames;
}

/** A bad frame: a torn tail that may be cut, or damage, by the rule at the top of this file. */
function tornTailOrDamage<R>(found: {
  path: string;
  bytes: Uint8Array;
  offset: number;
  expected: number;
  problem: string;
  isLast: boolean;
  codec: RecordCodec<R>;
}): TornTail {
  const { path, bytes, offset, expected, problem } = found;
  if (!found.isLast)
    throw damage(
      path,
      offset,
      `${problem}, and later segments follow (a segment is synced before the next one starts)`,
    );
  const claim = findDurableClaim(found.codec, bytes, offset + 1, expected);
  if (claim >= 0)
    throw damage(
      path,
      offset,
      `${problem} in frame ${expected}, which the valid frame at offset ${claim} says had been made durable`,
    );
  return { path, offset, reason: problem, bytesDropped: bytes.length - offset, removeFile: false };
}
