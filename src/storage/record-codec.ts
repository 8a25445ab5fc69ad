/**
 * Byte layout of journal frames, shared by the primary journal and the secondary receive journal.
 * Every frame on disk is:
 *
 *   u32 body length | u32 CRC32C of every other byte of the frame | u8 frame kind |
 *   u64 sequence | u64 durable | body
 *
 * `sequence` numbers every frame of a journal, 1, 2, 3, ... across its segments, so a frame from
 * another place or a missing one shows. `durable` is the journal's durable watermark when the frame
 * was written: every frame with a sequence at or below it had been fdatasynced before. Replay uses it
 * to tell damage from a torn tail (see journal-replay.ts). A record frame's body starts with a u8
 * record kind. The CRC covers the length and the header fields too, so damage anywhere is caught.
 */
import { ProtocolError } from '../core/errors.ts';
import { limits } from '../core/limits.ts';
import type { PrimaryRecord, SecondaryRecord } from '../core/records.ts';
import type { Extent } from '../core/types.ts';
import { ByteReader, ByteWriter } from '../protocol/bytes.ts';
import { crc32c } from '../protocol/crc32c.ts';

/** length, CRC, frame kind, sequence, durable. */
export const journalFrameHeaderBytes = 4 + 4 + 1 + 8 + 8;
/** The largest record body: one packet's data and its fields. */
export const recordBodyBytesMax = limits.packetBytesMax + 64;

/** How a decoded record holds its block data: its own copy, or a view of the bytes it was read from. */
export type DataAs = 'copy' | 'view';

/** Encodes and decodes one journal's records. */
export interface RecordCodec<R> {
  /**
   * The body as pieces to be written one after the other: the record's fields, then its block
   * data as given (not copied), so a frame's bytes are copied once, into the batch written.
   */
  bodyPieces(record: R): Uint8Array[];
  /** The body in one piece (for tests and tools). */
  encodeBody(record: R): Uint8Array;
  /**
   * Throws ProtocolError on a body that does not parse. Block data is copied out of `body` unless
   * `data` is 'view': then it is a view of `body`, for a reader that copies what it keeps at once.
   */
  decodeBody(body: Uint8Array, data?: DataAs): R;
  /** The highest cycle a record belongs to (0 when none): segments go once their cycles are done. */
  cycleOf(record: R): number;
  /** Written into every segment header, so one site's journal is never read as the other's. */
  journalRole: JournalRole;
}

export const journalRoles = { primary: 1, secondary: 2 } as const;
export type JournalRole = keyof typeof journalRoles;

const kinds = {
  write: 1,
  switch: 2,
  collect: 3,
  packet: 11,
  stored: 12,
  discard: 13,
  applied: 14,
  /** A stored cycle of a resync, not consistent on its own (a kind of its own: old journals read the same). */
  storedPartial: 15,
  /** An applied cycle whose image is not consistent (an in-place resync's): old journals read the same. */
  appliedPartial: 16,
} as const;

/** The bytes of an extent's fields before its data. */
const extentFieldBytes = 2 + 1 + 8 + 4;

/** A record's fields (`fields`, sized for them and the extent's fields), then the extent's data as given. */
function withExtent(fields: ByteWriter, extent: Extent): Uint8Array[] {
  const head = fields
    .u16(extent.volume)
    .u8(extent.data ? 0 : 1)
    .u64(extent.block)
    .u32(extent.blockCount)
    .finish();
  return extent.data ? [head, extent.data] : [head];
}

/** A codec whose encodeBody is its pieces joined. */
function codecOf<R>(codec: Omit<RecordCodec<R>, 'encodeBody'>): RecordCodec<R> {
  return { ...codec, encodeBody: (record) => joined(codec.bodyPieces(record)) };
}

function joined(pieces: readonly Uint8Array[]): Uint8Array {
  if (pieces.length === 1) return pieces[0] as Uint8Array;
  return Buffer.concat(pieces);
}

function readExtent(reader: ByteReader, dataAs: DataAs): Extent {
  const volume = reader.u16('volume');
  const zero = reader.u8('zero');
  const block = reader.u64('block');
  const blockCount = reader.u32('blockCount');
  // A copy by default, so a record kept does not pin the segment buffer it came from.
  const raw = zero === 1 ? null : reader.raw(reader.remaining, 'data');
  const data = raw === null ? null : dataAs === 'view' ? raw : new Uint8Array(raw);
  if (zero > 1) throw new ProtocolError('frame-bad-field', `extent zero flag ${zero}`);
  return { volume, block, blockCount, data };
}

export const primaryRecordCodec: RecordCodec<PrimaryRecord> = codecOf<PrimaryRecord>({
  bodyPieces(record) {
    switch (record.kind) {
      case 'write':
        return withExtent(
          new ByteWriter(1 + 8 + extentFieldBytes).u8(kinds.write).u64(record.cycle),
          record.extent,
        );
      case 'switch':
        return [new ByteWriter(9).u8(kinds.switch).u64(record.closed).finish()];
      case 'collect':
        return [new ByteWriter(9).u8(kinds.collect).u64(record.upTo).finish()];
    }
  },
  decodeBody(body, dataAs = 'copy') {
    const reader = new ByteReader(body, 'primary journal record');
    const kind = reader.u8('kind');
    let record: PrimaryRecord;
    if (kind === kinds.write)
      record = { kind: 'write', cycle: reader.u64('cycle'), extent: readExtent(reader, dataAs) };
    else if (kind === kinds.switch) record = { kind: 'switch', closed: reader.u64('closed') };
    else if (kind === kinds.collect) record = { kind: 'collect', upTo: reader.u64('upTo') };
    else throw new ProtocolError('frame-unknown-type', `primary journal record kind ${kind}`);
    reader.end();
    return record;
  },
  cycleOf(record) {
    return record.kind === 'write' ? record.cycle : record.kind === 'switch' ? record.closed : record.upTo;
  },
  journalRole: 'primary',
});

export const secondaryRecordCodec: RecordCodec<SecondaryRecord> = codecOf<SecondaryRecord>({
  bodyPieces(record) {
    switch (record.kind) {
      case 'packet':
        return withExtent(
          new ByteWriter(1 + 8 + 4 + extentFieldBytes)
            .u8(kinds.packet)
            .u64(record.cycle)
            .u32(record.packetIndex),
          record.extent,
        );
      case 'stored':
        return [
          new ByteWriter(17)
            .u8(record.consistent ? kinds.stored : kinds.storedPartial)
            .u64(record.cycle)
            .u64(record.coversFrom)
            .finish(),
        ];
      case 'discard':
        return [new ByteWriter(9).u8(kinds.discard).u64(record.stored).finish()];
      case 'applied':
        return [
          new ByteWriter(9)
            .u8(record.consistent ? kinds.applied : kinds.appliedPartial)
            .u64(record.cycle)
            .finish(),
        ];
    }
  },
  decodeBody(body, dataAs = 'copy') {
    const reader = new ByteReader(body, 'secondary journal record');
    const kind = reader.u8('kind');
    let record: SecondaryRecord;
    if (kind === kinds.packet) {
      record = {
        kind: 'packet',
        cycle: reader.u64('cycle'),
        packetIndex: reader.u32('packetIndex'),
        extent: readExtent(reader, dataAs),
      };
    } else if (kind === kinds.stored || kind === kinds.storedPartial) {
      record = {
        kind: 'stored',
        cycle: reader.u64('cycle'),
        coversFrom: reader.u64('coversFrom'),
        consistent: kind === kinds.stored,
      };
    } else if (kind === kinds.discard) {
      record = { kind: 'discard', stored: reader.u64('stored') };
    } else if (kind === kinds.applied || kind === kinds.appliedPartial) {
      record = { kind: 'applied', cycle: reader.u64('cycle'), consistent: kind === kinds.applied };
    } else {
      throw new ProtocolError('frame-unknown-type', `secondary journal record kind ${kind}`);
    }
    reader.end();
    return record;
  },
  cycleOf(record) {
    return record.kind === 'discard' ? record.stored : record.cycle;
  },
  journalRole: 'secondary',
});

/**
 * What a frame carries. `record`: one of the owner's records. `durable`: nothing but the watermark,
 * written after a sync when nothing else was waiting, so the synced frames before it are proven.
 * `close`: a clean stop; its watermark covers every frame before it.
 */
export const frameKinds = { record: 1, durable: 2, close: 3 } as const;
export type FrameKind = keyof typeof frameKinds;
const frameKindNames = new Map<number, FrameKind>(
  Object.entries(frameKinds).map(([name, code]) => [code, name as FrameKind]),
);

/** Where a frame stands in its journal. */
export interface FramePosition {
  sequence: number;
  durable: number;
}

/** A frame as it goes to disk: header and body. */
export function encodeJournalFrame(kind: FrameKind, position: FramePosition, body: Uint8Array): Uint8Array {
  return joined(journalFramePieces(kind, position, [body]));
}

/**
 * A frame as pieces to be written one after the other: its header, then the body's pieces as
 * given. The checksum runs over the pieces where they lie.
 */
export function journalFramePieces(
  kind: FrameKind,
  position: FramePosition,
  body: readonly Uint8Array[],
): Uint8Array[] {
  const bodyBytes = body.reduce((sum, piece) => sum + piece.length, 0);
  const header = new Uint8Array(journalFrameHeaderBytes);
  const view = new DataView(header.buffer);
  view.setUint32(0, bodyBytes);
  view.setUint8(8, frameKinds[kind]);
  view.setBigUint64(9, BigInt(position.sequence));
  view.setBigUint64(17, BigInt(position.durable));
  let crc = crc32c(header.subarray(8), crc32c(header.subarray(0, 4)));
  for (const piece of body) crc = crc32c(piece, crc);
  view.setUint32(4, crc);
  return [header, ...body];
}

function frameChecksum(frame: Uint8Array): number {
  return crc32c(frame.subarray(8), crc32c(frame.subarray(0, 4)));
}

/** A record frame (for tests and tools that need one record's bytes). */
export function encodeRecord<R>(
  codec: RecordCodec<R>,
  record: R,
  position: FramePosition = { sequence: 1, durable: 0 },
): Uint8Array {
  return encodeJournalFrame('record', position, codec.encodeBody(record));
}

/** Why reading stopped before the end of a segment's bytes. */
export interface RecordDamage {
  offset: number;
  reason: string;
}

export interface DecodedFrame<R> extends FramePosition {
  kind: FrameKind;
  /** The owner's record for a record frame, null for the others. */
  record: R | null;
  end: number;
}

/** Reads the frame at `offset`, or says why there is no whole, valid one there. */
export function decodeJournalFrame<R>(
  codec: RecordCodec<R>,
  bytes: Uint8Array,
  offset: number,
  dataAs: DataAs = 'copy',
): DecodedFrame<R> | { damage: string } {
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  if (bytes.length - offset < journalFrameHeaderBytes) return { damage: 'header cut short' };
  const length = view.getUint32(offset);
  if (length > recordBodyBytesMax) return { damage: `length ${length} over the bound` };
  const end = offset + journalFrameHeaderBytes + length;
  if (end > bytes.length) return { damage: 'body cut short' };
  if (frameChecksum(bytes.subarray(offset, end)) !== view.getUint32(offset + 4))
    return { damage: 'CRC32C mismatch' };
  const kind = frameKindNames.get(view.getUint8(offset + 8));
  if (!kind) return { damage: `unknown frame kind ${view.getUint8(offset + 8)}` };
  const sequence = Number(view.getBigUint64(offset + 9));
  const durable = Number(view.getBigUint64(offset + 17));
  if (!Number.isSafeInteger(sequence) || !Number.isSafeInteger(durable) || durable >= sequence)
    return { damage: `sequence ${sequence} with durable watermark ${durable} is impossible` };
  const body = bytes.subarray(offset + journalFrameHeaderBytes, end);
  if (kind !== 'record') {
    if (body.length > 0) return { damage: `a ${kind} frame with a body` };
    return { kind, sequence, durable, record: null, end };
  }
  try {
    return { kind, sequence, durable, record: codec.decodeBody(body, dataAs), end };
  } catch (error) {
    // Damage is a ProtocolError of the codec; anything else is a defect here and must escape.
    if (!(error instanceof ProtocolError)) throw error;
    return { damage: `record does not parse: ${error.message}` };
  }
}

/**
 * Reads record frames in order, up to the first damaged or incomplete frame, without checking their
 * sequence (replay does that). Returns the records, where each frame ends, and the damage, if any.
 */
export function decodeRecords<R>(
  codec: RecordCodec<R>,
  bytes: Uint8Array,
): { records: R[]; ends: number[]; damage: RecordDamage | null } {
  const records: R[] = [];
  const ends: number[] = [];
  let offset = 0;
  while (offset < bytes.length) {
    const frame = decodeJournalFrame(codec, bytes, offset);
    if ('damage' in frame) return { records, ends, damage: { offset, reason: frame.damage } };
    if (frame.record !== null) records.push(frame.record);
    ends.push(frame.end);
    offset = frame.end;
  }
  return { records, ends, damage: null };
}

/**
 * The first offset after `from` where a whole, valid frame claims that every frame up to `sequence`
 * was durable, or -1. Replay asks this about the rest of a segment after a bad frame: if a later
 * frame proves the bad one had been synced, it is damage, not a torn tail. The cheap checks (kind,
 * plausible sequence) come before the CRC, so random data costs one pass over the bytes.
 */
export function findDurableClaim<R>(
  codec: RecordCodec<R>,
  bytes: Uint8Array,
  from: number,
  sequence: number,
): number {
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const sequenceMax = sequence + Math.ceil((bytes.length - from) / journalFrameHeaderBytes);
  for (let offset = from; offset + journalFrameHeaderBytes <= bytes.length; offset++) {
    if (!frameKindNames.has(view.getUint8(offset + 8))) continue;
    if (view.getUint32(offset) > bytes.length - offset - journalFrameHeaderBytes) continue;
    const durable = view.getBigUint64(offset + 17);
    if (durable < BigInt(sequence)) continue;
    const claimed = view.getBigUint64(offset + 9);
    if (claimed <= durable || claimed > BigInt(sequenceMax)) continue;
    if (!('damage' in decodeJournalFrame(codec, bytes, offset))) return offset;
  }
  return -1;
}
