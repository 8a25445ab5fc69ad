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
import { Secondary } from '../../src/core/secondary.ts';
import { NbdConnection, type NbdExport } from '../../src/nbd/connection.ts';
import { commands, optionMagic, options, requestMagic } from '../../src/nbd/protocol.ts';
import { crc32c } from '../../src/protocol/crc32c.ts';
import { encodeFrame, type Frame, FrameDecoder, frameHeaderBytes } from '../../src/protocol/frames.ts';
import type { Random } from '../../src/sim/random.ts';
import {
  decodeRecords,
  encodeJournalFrame,
  encodeRecord,
  journalFrameHeaderBytes,
  primaryRecordCodec,
  secondaryRecordCodec,
} from '../../src/storage/record-codec.ts';

export type FuzzTarget = (random: Random) => void;

class FuzzFailure extends Error {}

function check(condition: boolean, message: string): void {
  if (!condition) throw new FuzzFailure(message);
}

/** A few structural mutations of `bytes`. */
export function mutate(random: Random, bytes: Uint8Array): Uint8Array {
  let out: Uint8Array = bytes.slice();
  const count = 1 + random.int(4);
  for (let i = 0; i < count; i++) {
    const at = out.length === 0 ? 0 : random.int(out.length);
    switch (random.int(6)) {
      case 0:
        if (out.length > 0) out[at] = (out[at] as number) ^ (1 << random.int(8));
        break;
      case 1:
        if (out.length > 0) out[at] = random.int(256);
        break;
      case 2: {
        const inserted = Uint8Array.from({ length: 1 + random.int(16) }, () => random.int(256));
        out = concat([out.subarray(0, at), inserted, out.subarray(at)]);
        break;
      }
      case 3:
        out = concat([out.subarray(0, at), out.subarray(Math.min(out.length, at + 1 + random.int(16)))]);
        break;
      case 4:
        out = out.subarray(0, at);
        break;
      default: {
        // Interesting integers where lengths and counts live.
        if (out.length >= at + 4) {
          const values = [0, 1, 0x7fffffff, 0xffffffff, 0x80000000, 4096, 65535, 65536];
          new DataView(out.buffer, out.byteOffset).setUint32(at, values[random.int(values.length)] as number);
        }
      }
    }
  }
  return out;
}

function concat(parts: Uint8Array[]): Uint8Array {
  const out = new Uint8Array(parts.reduce((sum, part) => sum + part.length, 0));
  let at = 0;
  for (const part of parts) {
    out.set(part, at);
    at += part.length;
  }
  return out;
}

/** Splits bytes into random chunks, as a socket would deliver them. */
function chunks(random: Random, bytes: Uint8Array): Uint8Array[] {
  const out: Uint8Array[] = [];
  for (let at = 0; at < bytes.length; ) {
    const size = 1 + random.int(Math.min(bytes.length - at, 300));
    out.push(bytes.subarray(at, at + size));
    at += size;
  }
  return out;
}

// ---- site-link frames ----------------------------------------------------------------------

const frameCorpus: Frame[] = [
  {
    type: 'hello',
    protocolVersion: 2,
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
  { type: 'welcome', protocolVersion: 2, sessionId: 5, secondary: 'dr1', stored: 3, applied: 2 },
  { type: 'error', code: 'group-mismatch', message: 'no' },
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
  { type: 'end-of-cycle', cycle: 1, coversFrom: 1, packetCount: 2, digest: 0 },
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
  return resealFrame(concat([header, mutate(random, encoded.subarray(journalFrameHeaderBytes))]));
}

export const fuzzFrames: FuzzTarget = (random) => {
  const stream = concat(Array.from({ length: 1 + random.int(4) }, () => mutatedFrame(random)));
  const decoder = new FrameDecoder();
  for (const chunk of chunks(random, stream)) {
    const result = decoder.push(chunk);
    for (const frame of result.frames) encodeFrame(frame); // whatever decodes must be well-formed
    if (result.error) {
      check(result.error instanceof ProtocolError, `decoder error of type ${result.error.constructor.name}`);
      return;
    }
  }
};

// ---- the secondary's protocol logic, fed decoded frames ------------------------------------

export const fuzzSecondary: FuzzTarget = (random) => {
  const secondary = new Secondary({
    name: 'dr1',
    shape: {
      group: 'fuzz',
      blockBytes: 512,
      volumes: [
        { name: 'data', sizeBytes: 64 * 512 },
        { name: 'log', sizeBytes: 16 * 512 },
      ],
    },
    timings: {
      heartbeatMsInterval: 100,
      heartbeatMsTimeout: 400,
      reconnectMsMin: 50,
      reconnectMsMax: 800,
      cyclesInFlightMax: 4,
    },
  });
  secondary.start();
  let now = 0;
  const connections = [1, 2];
  for (const connection of connections) secondary.onConnectionOpened(now, connection);
  const steps = 5 + random.int(40);
  for (let step = 0; step < steps; step++) {
    now += random.int(50);
    const connection = connections[random.int(connections.length)] as number;
    const result = new FrameDecoder().push(
      random.chance(0.7)
        ? encodeFrame(frameCorpus[random.int(frameCorpus.length)] as Frame)
        : mutatedFrame(random),
    );
    for (const frame of result.frames) {
      // ProtocolError is the one expected way to say no; anything else thrown is a bug.
      secondary.onFrame(now, connection, frame);
    }
    if (random.chance(0.1)) secondary.onJournalSynced(now, random.int(1000));
    if (random.chance(0.05)) secondary.onTick(now);
  }
};

// ---- NBD ------------------------------------------------------------------------------------

const nbdExport: NbdExport = {
  name: 'data',
  sizeBytes: 1 << 20,
  blockBytes: 4096,
  readOnly: false,
  read: async (_offset, length) => new Uint8Array(length),
  write: async () => {},
  writeZeroes: async () => {},
  flush: async () => {},
};

function option(code: number, data: Uint8Array): Uint8Array {
  const bytes = new Uint8Array(16 + data.length);
  const view = new DataView(bytes.buffer);
  view.setBigUint64(0, optionMagic);
  view.setUint32(8, code);
  view.setUint32(12, data.length);
  bytes.set(data, 16);
  return bytes;
}

function request(type: number, offset: number, length: number, flags = 0, payload = 0): Uint8Array {
  const bytes = new Uint8Array(28 + payload);
  const view = new DataView(bytes.buffer);
  view.setUint32(0, requestMagic);
  view.setUint16(4, flags);
  view.setUint16(6, type);
  view.setBigUint64(8, 1n);
  view.setBigUint64(16, BigInt(offset));
  view.setUint32(24, length);
  return bytes;
}

const encodeText = (text: string) => new TextEncoder().encode(text);
const u32 = (value: number) =>
  Uint8Array.of(value >>> 24, (value >>> 16) & 255, (value >>> 8) & 255, value & 255);

/** A plausible session: flags, options (structured replies, meta context, GO), then requests. */
const nbdSession = concat([
  Uint8Array.of(0, 0, 0, 3),
  option(options.structuredReply, new Uint8Array(0)),
  option(
    options.setMetaContext,
    concat([u32(4), encodeText('data'), u32(1), u32(15), encodeText('base:allocation')]),
  ),
  option(options.list, new Uint8Array(0)),
  option(options.go, concat([u32(4), encodeText('data'), Uint8Array.of(0, 1, 0, 3)])),
  request(commands.write, 4096, 4096, 0, 4096),
  request(commands.read, 0, 8192),
  request(commands.blockStatus, 0, 65536, 8),
  request(commands.trim, 8192, 4096),
  request(commands.flush, 0, 0),
  request(commands.disconnect, 0, 0),
]);

export const fuzzNbd: FuzzTarget = (random) => {
  const bytes = random.chance(0.1)
    ? Uint8Array.from({ length: random.int(400) }, () => random.int(256))
    : mutate(random, nbdSession);
  const connection: NbdConnection = new NbdConnection(new Map([['data', nbdExport]]), {
    send: (_bytes, sent) => sent?.(),
    close: () => {},
    pause: () => {},
    log: () => {},
    warn: () => {},
    startTls: () => connection.onTlsReady(),
  });
  for (const chunk of chunks(random, bytes)) connection.onData(chunk);
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
  { kind: 'stored', cycle: 4, coversFrom: 4 },
  { kind: 'applied', cycle: 4 },
  { kind: 'discard', stored: 3 },
];

/** Recomputes each record's length and CRC after its body was changed. */
function resealRecord(body: Uint8Array): Uint8Array {
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
  // Whatever parsed must encode again without complaint.
  for (const record of decoded.records) {
    if (primary) encodeRecord(primaryRecordCodec, record as PrimaryRecord);
    else encodeRecord(secondaryRecordCodec, record as SecondaryRecord);
  }
};

export const fuzzTargets: Record<string, FuzzTarget> = {
  frames: fuzzFrames,
  secondary: fuzzSecondary,
  nbd: fuzzNbd,
  records: fuzzRecords,
};
