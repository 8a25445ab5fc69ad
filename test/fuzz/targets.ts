/**
 * Mutation fuzz targets for every parser that reads bytes from outside: the site-link frame
 * decoder, the secondary's handshake and cycle logic (fed decoded frames), the NBD connection
 * (handshake and requests), and the journal record parser. Each case starts from valid input,
 * mutates it (flips, inserts, deletes, cuts, splices, random lengths) and, most of the time, seals
 * the checksums again so that the code behind the CRC is reached. A case fails by throwing; the
 * runner prints the seed and case number that replay it.
 */
import { type BrotliOptions, brotliDecompressSync } from 'node:zlib';
import { ProtocolError } from '../../src/core/errors.ts';
import type { PrimaryRecord, SecondaryRecord } from '../../src/core/records.ts';
import { crc32c } from '../../src/protocol/crc32c.ts';
import {
  compressedFrame,
  encodeFrame,
  type Frame,
  FrameDecoder,
  frameHeaderBytes,
  frameTypeCodes,
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
  // Link compression (protocol 6): a compressible DATA frame as the wire carries it.
  compressedFrame(
    {
      type: 'data',
      cycle: 1,
      packetIndex: 4,
      volume: 0,
      block: 12,
      blockCount: 4,
      zero: false,
      payload: new Uint8Array(2048).fill(5),
    },
    'brotli',
  ).frame,
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
  if (random.chance(0.2)) header[4] = 1 + random.int(13); // another (or an unknown) frame type
  return resealFrame(concat([header, mutate(random, encoded.subarray(frameHeaderBytes))]));
}

/**
 * The decoder may refuse (a ProtocolError in its result) or hand out frames; anything it throws is
 * a defect and fails the case. Every frame it hands out must be exactly the bytes it consumed:
 * encoding the frames decoded so far gives back the stream's prefix, byte for byte (for a
 * compressed frame, see wireFrameAt). The decoder takes compressed frames, as a secondary's does.
 */
export const fuzzFrames: FuzzTarget = (random) => {
  const stream = concat(Array.from({ length: 1 + random.int(4) }, () => mutatedFrame(random)));
  const decoder = new FrameDecoder({ acceptCompressed: true });
  let consumed = 0;
  for (const chunk of chunks(random, stream)) {
    const results = [decoder.push(chunk)];
    // A push that spent its budget of decompressed bytes leaves whole frames for the next one.
    while ((results.at(-1) as { more: boolean }).more) results.push(decoder.push(new Uint8Array(0)));
    const result = { frames: results.flatMap((each) => each.frames), error: results.at(-1)?.error ?? null };
    for (const frame of result.frames) {
      const encoded = encodeFrame(frame);
      const wire = wireFrameAt(stream, consumed);
      check(
        equalBytes(encoded, wire.frame),
        `${frame.type} frame decoded at offset ${consumed} does not encode back to the bytes it came from`,
      );
      consumed += wire.length;
    }
    if (result.error) {
      check(result.error instanceof ProtocolError, `decoder error of type ${result.error.constructor.name}`);
      return;
    }
  }
  check(consumed + decoder.pendingBytes() === stream.length, 'the decoder lost bytes');
};

/**
 * The frame at `offset` of the stream as its decoder hands it out, and its length on the wire. A
 * compressed frame is handed out as the frame it carries, so that frame is rebuilt here from the
 * wire's compressed bytes, decompressed apart from the decoder: all of them must make a stream
 * (nothing after it) of exactly the declared length, and the inner frame must encode back to what
 * they decompress to. What is not checked: that the compressed bytes are the ones this primary
 * would send (compression has many encodings; the decoder takes any whole stream).
 */
function wireFrameAt(stream: Uint8Array, offset: number): { frame: Uint8Array; length: number } {
  const view = new DataView(stream.buffer, stream.byteOffset + offset);
  const length = frameHeaderBytes + view.getUint32(8);
  const bytes = stream.subarray(offset, offset + length);
  if (view.getUint8(4) !== frameTypeCodes.compressed) return { frame: bytes, length };
  const compressed = bytes.subarray(frameHeaderBytes + compressedHeadBytes);
  const declared = view.getUint32(frameHeaderBytes + 2);
  const { buffer: payload, engine } = brotliDecompressSync(compressed, {
    info: true,
  } as BrotliOptions) as unknown as { buffer: Buffer; engine: { bytesWritten: number } };
  check(
    engine.bytesWritten === compressed.length,
    'a compressed frame with bytes after its stream was taken',
  );
  check(payload.length === declared, `a compressed frame of ${payload.length} bytes declared ${declared}`);
  const header = bytes.slice(0, frameHeaderBytes);
  const headerView = new DataView(header.buffer);
  headerView.setUint8(4, view.getUint8(frameHeaderBytes + 1));
  return { frame: resealFrame(concat([header, new Uint8Array(payload)])), length };
}

/** A compressed frame's fields before its bytes (frames.ts): codec, inner type, declared length. */
const compressedHeadBytes = 6;

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
