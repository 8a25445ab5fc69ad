/**
 * Byte layout of journal records, shared by the primary journal and the secondary receive journal.
 * Every record on disk is:
 *
 *   u32 body length | u32 CRC32C of (length field and body) | body
 *
 * and a body starts with a u8 kind. The CRC covers the length too, so a torn or damaged length is
 * caught like any other damage; replay stops at the first record that fails (see segment-journal.ts).
 */
import { ProtocolError } from '../core/errors.ts';
import { limits } from '../core/limits.ts';
import type { PrimaryRecord, SecondaryRecord } from '../core/records.ts';
import type { Extent } from '../core/types.ts';
import { ByteReader, ByteWriter } from '../protocol/bytes.ts';
import { crc32c } from '../protocol/crc32c.ts';

export const recordHeaderBytes = 8;
/** The largest record body: one packet's data and its fields. */
export const recordBodyBytesMax = limits.packetBytesMax + 64;

/** Encodes and decodes one journal's records. */
export interface RecordCodec<R> {
  encodeBody(record: R): Uint8Array;
  /** Throws ProtocolError on a body that does not parse. */
  decodeBody(body: Uint8Array): R;
  /** The highest cycle a record belongs to (0 when none): segments go once their cycles are done. */
  cycleOf(record: R): number;
}

const kinds = {
  write: 1,
  switch: 2,
  collect: 3,
  packet: 11,
  stored: 12,
  discard: 13,
  applied: 14,
} as const;

function extentBytes(extent: Extent): number {
  return 2 + 1 + 8 + 4 + (extent.data?.length ?? 0);
}

function writeExtent(writer: ByteWriter, extent: Extent): ByteWriter {
  writer
    .u16(extent.volume)
    .u8(extent.data ? 0 : 1)
    .u64(extent.block)
    .u32(extent.blockCount);
  if (extent.data) writer.raw(extent.data);
  return writer;
}

function readExtent(reader: ByteReader): Extent {
  const volume = reader.u16('volume');
  const zero = reader.u8('zero');
  const block = reader.u64('block');
  const blockCount = reader.u32('blockCount');
  // A copy (Buffer#slice would not copy), so the extent does not pin the segment buffer it came from.
  const data = zero === 1 ? null : new Uint8Array(reader.raw(reader.remaining, 'data'));
  if (zero > 1) throw new ProtocolError('frame-bad-field', `extent zero flag ${zero}`);
  return { volume, block, blockCount, data };
}

export const primaryRecordCodec: RecordCodec<PrimaryRecord> = {
  encodeBody(record) {
    switch (record.kind) {
      case 'write':
        return writeExtent(
          new ByteWriter(1 + 8 + extentBytes(record.extent)).u8(kinds.write).u64(record.cycle),
          record.extent,
        ).finish();
      case 'switch':
        return new ByteWriter(9).u8(kinds.switch).u64(record.closed).finish();
      case 'collect':
        return new ByteWriter(9).u8(kinds.collect).u64(record.upTo).finish();
    }
  },
  decodeBody(body) {
    const reader = new ByteReader(body, 'primary journal record');
    const kind = reader.u8('kind');
    let record: PrimaryRecord;
    if (kind === kinds.write)
      record = { kind: 'write', cycle: reader.u64('cycle'), extent: readExtent(reader) };
    else if (kind === kinds.switch) record = { kind: 'switch', closed: reader.u64('closed') };
    else if (kind === kinds.collect) record = { kind: 'collect', upTo: reader.u64('upTo') };
    else throw new ProtocolError('frame-unknown-type', `primary journal record kind ${kind}`);
    reader.end();
    return record;
  },
  cycleOf(record) {
    return record.kind === 'write' ? record.cycle : record.kind === 'switch' ? record.closed : record.upTo;
  },
};

export const secondaryRecordCodec: RecordCodec<SecondaryRecord> = {
  encodeBody(record) {
    switch (record.kind) {
      case 'packet':
        return writeExtent(
          new ByteWriter(1 + 8 + 4 + extentBytes(record.extent))
            .u8(kinds.packet)
            .u64(record.cycle)
            .u32(record.packetIndex),
          record.extent,
        ).finish();
      case 'stored':
        return new ByteWriter(17).u8(kinds.stored).u64(record.cycle).u64(record.coversFrom).finish();
      case 'discard':
        return new ByteWriter(9).u8(kinds.discard).u64(record.stored).finish();
      case 'applied':
        return new ByteWriter(9).u8(kinds.applied).u64(record.cycle).finish();
    }
  },
  decodeBody(body) {
    const reader = new ByteReader(body, 'secondary journal record');
    const kind = reader.u8('kind');
    let record: SecondaryRecord;
    if (kind === kinds.packet) {
      record = {
        kind: 'packet',
        cycle: reader.u64('cycle'),
        packetIndex: reader.u32('packetIndex'),
        extent: readExtent(reader),
      };
    } else if (kind === kinds.stored) {
      record = { kind: 'stored', cycle: reader.u64('cycle'), coversFrom: reader.u64('coversFrom') };
    } else if (kind === kinds.discard) {
      record = { kind: 'discard', stored: reader.u64('stored') };
    } else if (kind === kinds.applied) {
      record = { kind: 'applied', cycle: reader.u64('cycle') };
    } else {
      throw new ProtocolError('frame-unknown-type', `secondary journal record kind ${kind}`);
    }
    reader.end();
    return record;
  },
  cycleOf(record) {
    return record.kind === 'discard' ? record.stored : record.cycle;
  },
};

/** A record as it goes to disk: header and body. */
export function encodeRecord<R>(codec: RecordCodec<R>, record: R): Uint8Array {
  const body = codec.encodeBody(record);
  const bytes = new Uint8Array(recordHeaderBytes + body.length);
  const view = new DataView(bytes.buffer);
  view.setUint32(0, body.length);
  bytes.set(body, recordHeaderBytes);
  view.setUint32(4, crc32c(body, crc32c(bytes.subarray(0, 4))));
  return bytes;
}

/** Why reading stopped before the end of a segment's bytes. */
export interface RecordDamage {
  offset: number;
  reason: string;
}

/**
 * Reads records from one segment's bytes in order, up to the first damaged or incomplete one.
 * Returns the records, where each one ends, and the damage that stopped the reading, if any.
 */
export function decodeRecords<R>(
  codec: RecordCodec<R>,
  bytes: Uint8Array,
): { records: R[]; ends: number[]; damage: RecordDamage | null } {
  const records: R[] = [];
  const ends: number[] = [];
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  let offset = 0;
  while (offset < bytes.length) {
    if (bytes.length - offset < recordHeaderBytes)
      return { records, ends, damage: { offset, reason: 'header cut short' } };
    const length = view.getUint32(offset);
    if (length > recordBodyBytesMax)
      return { records, ends, damage: { offset, reason: `length ${length} over the bound` } };
    const end = offset + recordHeaderBytes + length;
    if (end > bytes.length) return { records, ends, damage: { offset, reason: 'body cut short' } };
    const body = bytes.subarray(offset + recordHeaderBytes, end);
    if (crc32c(body, crc32c(bytes.subarray(offset, offset + 4))) !== view.getUint32(offset + 4)) {
      return { records, ends, damage: { offset, reason: 'CRC32C mismatch' } };
    }
    try {
      records.push(codec.decodeBody(body));
    } catch (error) {
      // Damage is a ProtocolError of the codec; anything else is a defect here and must escape.
      if (!(error instanceof ProtocolError)) throw error;
      return {
        records,
        ends,
        damage: { offset, reason: `record does not parse: ${(error as Error).message}` },
      };
    }
    ends.push(end);
    offset = end;
  }
  return { records, ends, damage: null };
}
