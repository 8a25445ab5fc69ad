/**
 * Mutation fuzz targets for every parser that reads bytes from outside: the site-link frame
 * decoder, the secondary's handshake and cycle logic (fed decoded frames), the NBD connection
 * (handshake and requests), and the journal record parser. Each case starts from valid input,
 * mutates it (flips, inserts, deletes, cuts, splices, random lengths) and, most of the time, seals
 * the checksums again so that the code behind the CRC is reached. A case fails by throwing; the
 * runner prints the seed and case number that replay it.
 */
import { ProtocolError } from '../../src/core/errors.ts';
import type { PrimaryRecord, SecondaryRecord } from '../../src/core/records.ts';
import { crc32c } from '../../src/protocol/crc32c.ts';
import {
  encodeFrame,
  type Frame,
  FrameDecoder,
  frameHeaderBytes,
  protocolVersion,
} from '../../src/protocol/frames.ts';
import type { Random } from '../../src/sim/random.ts';
import {
  decodeRecords,
  encodeJournalFrame,
  encodeRecord,
  journalFrameHeaderBytes,
  primaryRecordCodec,
  secondaryRecordCodec,
} from '../../src/storage/record-codec.ts';
import { check, chunks, concat, equalBytes, mutate } from './mutate.ts';
import { fuzzNbd } from './nbd-target.ts';
import { fuzzSecondary } from './secondary-target.ts';

/** One case: returns (or resolves) when the input was handled; throws (or rejects) on a defect. */
export type FuzzTarget = (random: Random) => void | Promise<void>;

// ---- site-link frames ----------------------------------------------------------------------

const frameCorpus: Frame[] = [
  {
    type: 'hello',
    protocolVersion,
    sessionId: 5,
    connectionIndex: 0,
    connectionCount: 1,
    group: 'fuzz',
    blockBytes: 512,
    volumes: [
      { name: 'data', sizeBytes: 64 * 512 },
      { name: 'log', sizeBytes: 16 * 512 },
    ],
    primarySite: 'c'.repeat(32),
    generations: [{ id: 'd'.repeat(32), startedAt: 1, primarySite: 'c'.repeat(32) }],
  },
  {
    type: 'welcome',
    protocolVersion,
    sessionId: 5,
    secondary: 'dr1',
    stored: 3,
    applied: 2,
    consistentStored: 2,
  },
  { type: 'error', code: 'group-mismatch', message: 'no' },
  {
    type: 'superseded',
    site: 'e'.repeat(32),
    generations: [
      { id: 'd'.repeat(32), startedAt: 1, primarySite: 'c'.repeat(32) },
      { id: 'f'.repeat(32), startedAt: 9, primarySite: 'e'.repeat(32) },
    ],
  },
  {
    type: 'data',
    cycle: 1,
    packetIndex: 0,
    volume: 0,
    block: 3,
    blockCount: 2,
    zero: false,
    payload: new Uint8Array(1024).fill(7),
  },
  {
    type: 'data',
    cycle: 1,
    packetIndex: 1,
    volume: 1,
    block: 0,
    blockCount: 4,
    zero: true,
    payload: new Uint8Array(0),
  },
  {
    type: 'data-batch',
    packets: [
      {
        type: 'data',
        cycle: 1,
        packetIndex: 2,
        volume: 0,
        block: 9,
        blockCount: 1,
        zero: false,
        payload: new Uint8Array(512).fill(3),
      },
      {
        type: 'data',
        cycle: 1,
        packetIndex: 3,
        volume: 1,
        block: 1,
        blockCount: 1,
        zero: true,
        payload: new Uint8Array(0),
      },
    ],
  },
  { type: 'end-of-cycle', cycle: 1, coversFrom: 1, packetCount: 2, digest: 0, consistent: true },
  { type: 'stored', stored: 1, applied: 1 },
  { type: 'heartbeat', nonce: 1 },
];

/** Recomputes a frame's payload and header CRCs after its bytes were changed. */
function resealFrame(bytes: Uint8Array): Uint8Array {
  if (bytes.length < frameHeaderBytes) return bytes;
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.length);
  const payload = bytes.subarray(frameHeaderBytes);
  view.setUint32(8, payload.length);
  view.setUint32(12, crc32c(payload));
  view.setUint32(16, crc32c(bytes.subarray(0, 16)));
  return bytes;
}

/** A frame with its payload mutated and its checksums sealed again, or raw mutated bytes. */
function mutatedFrame(random: Random): Uint8Array {
  const frame = frameCorpus[random.int(frameCorpus.length)] as Frame;
  const encoded = encodeFrame(frame);
  if (random.chance(0.2)) return mutate(random, encoded);
  const header = encoded.slice(0, frameHeaderBytes);
  if (random.chance(0.2)) header[4] = 1 + random.int(9); // another (or an unknown) frame type
  return resealFrame(concat([header, mutate(random, encoded.subarray(frameHeaderBytes))]));
}

/**
 * The decoder may refuse (a ProtocolError in its result) or hand out frames; anything it throws is
 * a defect and fails the case. Every frame it hands out must be exactly the bytes it consumed:
 * encoding the frames decoded so far gives back the stream's prefix, byte for byte.
 */
export const fuzzFrames: FuzzTarget = (random) => {
  const stream = concat(Array.from({ length: 1 + random.int(4) }, () => mutatedFrame(random)));
  const decoder = new FrameDecoder();
  let consumed = 0;
  for (const chunk of chunks(random, stream)) {
    const result = decoder.push(chunk);
    for (const frame of result.frames) {
      const encoded = encodeFrame(frame);
      check(
        equalBytes(encoded, stream.subarray(consumed, consumed + encoded.length)),
        `${frame.type} frame decoded at offset ${consumed} does not encode back to the bytes it came from`,
      );
      consumed += encoded.length;
    }
    if (result.error) {
      check(result.error instanceof ProtocolError, `decoder error of type ${result.error.constructor.name}`);
      return;
    }
  }
  check(consumed + decoder.pendingBytes() === stream.length, 'the decoder lost bytes');
};

// ---- journal records ------------------------------------------------------------------------

const primaryCorpus: PrimaryRecord[] = [
  {
    kind: 'write',
    cycle: 3,
    extent: { volume: 0, block: 7, blockCount: 2, data: new Uint8Array(1024).fill(9) },
  },
  { kind: 'write', cycle: 3, extent: { volume: 1, block: 0, blockCount: 8, data: null } },
  { kind: 'switch', closed: 3 },
  { kind: 'collect', upTo: 2 },
];

const secondaryCorpus: SecondaryRecord[] = [
  {
    kind: 'packet',
    cycle: 4,
    packetIndex: 0,
    extent: { volume: 0, block: 1, blockCount: 1, data: new Uint8Array(512) },
  },
  { kind: 'stored', cycle: 4, coversFrom: 4, consistent: true },
  { kind: 'applied', cycle: 4, consistent: true },
  { kind: 'applied', cycle: 5, consistent: false },
  { kind: 'discard', stored: 3 },
];

/** Recomputes each record's length and CRC after its body was changed. */
function resealRecord(body: Uint8Array): Uint8Array {
  // The position encodeRecord gives by default, so that a resealed record encodes back the same.
  return encodeJournalFrame('record', { sequence: 1, durable: 0 }, body);
}

export const fuzzRecords: FuzzTarget = (random) => {
  const primary = random.chance(0.5);
  const parts = Array.from({ length: 1 + random.int(5) }, () => {
    const record = primary
      ? (primaryCorpus[random.int(primaryCorpus.length)] as PrimaryRecord)
      : (secondaryCorpus[random.int(secondaryCorpus.length)] as SecondaryRecord);
    const encoded = primary
      ? encodeRecord(primaryRecordCodec, record as PrimaryRecord)
      : encodeRecord(secondaryRecordCodec, record as SecondaryRecord);
    if (random.chance(0.6)) return encoded;
    if (random.chance(0.3)) return mutate(random, encoded);
    return resealRecord(mutate(random, encoded.subarray(journalFrameHeaderBytes)));
  });
  const bytes = concat(parts);
  const decoded = primary
    ? decodeRecords(primaryRecordCodec, bytes)
    : decodeRecords(secondaryRecordCodec, bytes);
  let previous = 0;
  for (const end of decoded.ends) {
    check(
      end > previous && end <= bytes.length,
      `record end ${end} after ${previous} in ${bytes.length} bytes`,
    );
    previous = end;
  }
  if (decoded.damage) {
    check(
      decoded.damage.offset === previous,
      `damage at ${decoded.damage.offset}, last record ended at ${previous}`,
    );
  } else {
    check(previous === bytes.length, 'no damage reported, yet bytes were left over');
  }
  // Whatever parsed must be exactly the bytes it came from: encoded again, byte for byte.
  decoded.records.forEach((record, index) => {
    const encoded = primary
      ? encodeRecord(primaryRecordCodec, record as PrimaryRecord)
      : encodeRecord(secondaryRecordCodec, record as SecondaryRecord);
    const start = index === 0 ? 0 : (decoded.ends[index - 1] as number);
    check(
      equalBytes(encoded, bytes.subarray(start, decoded.ends[index])),
      `${record.kind} record at offset ${start} does not encode back to the bytes it came from`,
    );
  });
};

export const fuzzTargets: Record<string, FuzzTarget> = {
  frames: fuzzFrames,
  secondary: fuzzSecondary,
  nbd: fuzzNbd,
  records: fuzzRecords,
};
