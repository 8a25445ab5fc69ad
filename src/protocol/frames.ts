/**
 * The site-to-site wire format. Every frame is a 20-byte header and a payload:
 *
 *   offset  size  field
 *   0       4     magic 0x43595250 ("CYRP"): resynchronisation is never attempted, a bad magic fails the link
 *   4       1     frame type (frameTypeCodes below)
 *   5       1     flags, 0 in version 1
 *   6       2     reserved, 0
 *   8       4     payload length in bytes, at most limits.frameBytesMax
 *   12      4     CRC32C of the payload
 *   16      4     CRC32C of bytes 0..15, so a corrupt length is caught before waiting for the payload
 *
 * Integers are big-endian; u64 fields carry JavaScript safe integers (at most 2^53-1); strings are a
 * u16 byte length and UTF-8.
 */
import { assert } from '../core/assert.ts';
import { ProtocolError } from '../core/errors.ts';
import { limits } from '../core/limits.ts';
import { ByteReader, ByteWriter, encodeString, encodeTruncated } from './bytes.ts';
import {
  type CompressionCodec,
  checkDeclaredBytes,
  codecOfCode,
  compress,
  compressionBytesMin,
  compressionCodecCodes,
  decompress,
} from './compression.ts';
import { crc32c } from './crc32c.ts';

/**
 * 2: the hello carries the primary's site identity and generation chain; 3: end-of-cycle's
 * `consistent` and the welcome's consistent stored number; 4: the superseded and switchover frames;
 * 5: the data-batch frame (many DATA packets in one frame); 6: the compressed frame (link
 * compression). A peer of an older version would meet a new frame as an unknown type and fail the
 * link without learning why; with the version raised it is refused at its hello, by name
 * (`version-unsupported`).
 */
export const protocolVersion = 6;
export const frameMagic = 0x43595250;
export const frameHeaderBytes = 20;

import { type Generation, idBytes, isId, type SiteId } from '../core/identity.ts';
import type { Extent, VolumeShape } from '../core/types.ts';

/** Primary to secondary, first frame on every connection of a link session. */
export interface HelloFrame {
  type: 'hello';
  protocolVersion: number;
  /** Identifies one link session; a new value means the primary saw a failure and starts over. */
  sessionId: number;
  /** Which of the session's connections this is, 0-based, and how many the session opens. */
  connectionIndex: number;
  connectionCount: number;
  group: string;
  blockBytes: number;
  volumes: VolumeShape[];
  /** The primary's site identity (16 bytes on the wire, 32 hex digits here). */
  primarySite: SiteId;
  /**
   * The primary's generation chain, oldest first, the last one current (at most
   * generationsInHelloMax, the newest): what a secondary needs to tell a newer generation that
   * descends from the one it follows from a split brain. Each is a 16-byte id, the u64 cycle it
   * started at, and the 16-byte id of its primary site.
   */
  generations: Generation[];
}

/** Secondary to primary: accepts a session and states where the secondary stands. */
export interface WelcomeFrame {
  type: 'welcome';
  protocolVersion: number;
  sessionId: number;
  secondary: string;
  /** Every cycle up to this one is complete and durable at the secondary. */
  stored: number;
  /** The secondary's volumes show the image at the end of this cycle. */
  applied: number;
  /**
   * The newest stored cycle whose image is consistent (its stored cycles chain to it from applied).
   * Below `stored` when it holds cycles of an unfinished resync, which only the primary's bitmap
   * can finish (docs/resync.md).
   */
  consistentStored: number;
}

/** Either direction: the sender refuses or gives up on the link; the code is stable, the message for people. */
export interface ErrorFrame {
  type: 'error';
  code: string;
  message: string;
}

/** One extent of one cycle's folded writes. */
export interface DataFrame {
  type: 'data';
  cycle: number;
  /** 0-based index of this packet inside its cycle; packets may arrive in any order. */
  packetIndex: number;
  volume: number;
  /** First block and number of blocks of the extent. */
  block: number;
  blockCount: number;
  /** True for trim/write-zeroes: no payload is carried. */
  zero: boolean;
  payload: Uint8Array;
}

/**
 * Several DATA packets in one frame: one header, one CRC and one write for many small extents
 * (scattered 4 KiB writes travelled one frame each). The receiver takes them one by one, exactly as
 * if each had come in a frame of its own. Payload: u32 count (1..dataBatchPacketsMax), then per
 * packet a u32 length and a DATA frame's payload of that length.
 */
export interface DataBatchFrame {
  type: 'data-batch';
  packets: DataFrame[];
}

/**
 * A DATA or data-batch frame's payload compressed (link compression, protocol 6). Payload: u8 codec,
 * u8 the inner frame's type code (data or data-batch), u32 the inner payload's length (1 to
 * frameBytesMax), then the compressed bytes. Only sent: the decoder returns the inner frame, as if
 * it had come alone, so nothing past the decoder ever sees one.
 */
export interface CompressedFrame {
  type: 'compressed';
  codec: CompressionCodec;
  inner: 'data' | 'data-batch';
  /** The inner payload's length, which the compressed bytes must decompress to exactly. */
  payloadBytes: number;
  bytes: Uint8Array;
}

/** Closes a cycle: the secondary checks it holds exactly these packets before storing it. */
export interface EndOfCycleFrame {
  type: 'end-of-cycle';
  cycle: number;
  /**
   * The oldest cycle this one covers. Equal to `cycle` for an ordinary cycle; for a recovery cycle
   * the secondary's stored number plus one, since it carries every unsynchronized entry folded.
   */
  coversFrom: number;
  packetCount: number;
  /** Order-independent digest of the packets (see cycleDigest). */
  digest: number;
  /**
   * Whether the image after this cycle is consistent. False for the cycles of a resync before its
   * last copied chunk: the secondary stores them but applies them only together with the next
   * consistent cycle, as one unit (docs/resync.md).
   */
  consistent: boolean;
}

/** Secondary to primary: every cycle up to `stored` is stored; the volumes show cycle `applied`. */
export interface StoredFrame {
  type: 'stored';
  stored: number;
  applied: number;
}

/** Either direction, when nothing else was sent for a while; proves the link is alive. */
export interface HeartbeatFrame {
  type: 'heartbeat';
  nonce: number;
}

/**
 * A promoted site's link listener to a primary that dialled it as its secondary, in answer to a
 * hello whose chain its own strictly extends: that primary was superseded and must stop taking
 * writes (docs/failover.md, "Fencing"). The receiver trusts it only if the chain contains its own
 * current generation.
 */
export interface SupersededFrame {
  type: 'superseded';
  /** The sender's site identity (16 bytes on the wire). */
  site: SiteId;
  /** The sender's generation chain, oldest first, encoded and bounded as the hello's. */
  generations: Generation[];
}

/**
 * Primary to its secondary, in a planned switchover (docs/failover.md): every cycle up to `cycle`
 * is applied there and the primary takes no more writes; the secondary becomes the primary of
 * `generation`, which starts at cycle + 1, and the old primary follows it.
 */
export interface SwitchoverFrame {
  type: 'switchover';
  cycle: number;
  /** The new generation's id (16 bytes on the wire), chosen by the old primary. */
  generation: string;
}

/** Blocks of one volume; a divergence lists such runs. */
export interface BlockRun {
  volume: number;
  block: number;
  blockCount: number;
}

/**
 * A rejoining old primary to the primary that superseded it (docs/failover.md, "Failback"), before
 * its welcome: its image is the group's at `cycle` (its stored number) except at these blocks,
 * which it wrote after that cycle. The primary copies them with everything written since, in one
 * consistent resync. A site states its divergence in as many frames as it needs, each bounded.
 */
export interface DivergenceFrame {
  type: 'divergence';
  cycle: number;
  runs: BlockRun[];
}

export type Frame =
  | HelloFrame
  | WelcomeFrame
  | ErrorFrame
  | DataFrame
  | DataBatchFrame
  | CompressedFrame
  | EndOfCycleFrame
  | StoredFrame
  | HeartbeatFrame
  | SupersededFrame
  | SwitchoverFrame
  | DivergenceFrame;

export type FrameType = Frame['type'];

/** The one table of frame types: wire code per name; names for logs come from here. */
export const frameTypeCodes = {
  hello: 1,
  welcome: 2,
  error: 3,
  data: 4,
  'end-of-cycle': 5,
  stored: 6,
  heartbeat: 7,
  superseded: 8,
  switchover: 9,
  divergence: 10,
  'data-batch': 11,
  compressed: 12,
} as const satisfies Record<FrameType, number>;

const frameTypeByCode = new Map<number, FrameType>(
  Object.entries(frameTypeCodes).map(([name, code]) => [code, name as FrameType]),
);

const errorCodeBytesMax = 64;

/**
 * `frame` (DATA or data-batch) with its payload compressed, or `frame` itself when compressing does
 * not make it smaller (random data): the receiver gets the same frames either way. With the
 * payload's length before, and after (equal when sent as it was).
 */
export function compressedFrame(
  frame: DataFrame | DataBatchFrame,
  codec: CompressionCodec,
): { frame: Frame; payloadBytes: number; sentBytes: number } {
  const payload = encodePayload(frame).subarray(frameHeaderBytes);
  assert(
    payload.length <= limits.compressedInnerBytesMax,
    () => `a ${frame.type} payload of ${payload.length} bytes, beyond compressedInnerBytesMax`,
  );
  const asItWas = { frame, payloadBytes: payload.length, sentBytes: payload.length };
  if (payload.length < compressionBytesMin) return asItWas;
  const bytes = compress(codec, payload);
  const sentBytes = compressedHeadBytes + bytes.length;
  if (sentBytes >= payload.length) return asItWas;
  return {
    frame: { type: 'compressed', codec, inner: frame.type, payloadBytes: payload.length, bytes },
    payloadBytes: payload.length,
    sentBytes,
  };
}

/** A compressed frame's fields before its bytes: codec, inner type, inner length. */
const compressedHeadBytes = 1 + 1 + 4;

/** Encodes one frame, header included. */
export function encodeFrame(frame: Frame): Uint8Array {
  const bytes = encodePayload(frame);
  const payload = bytes.subarray(frameHeaderBytes);
  if (payload.length > limits.frameBytesMax) {
    throw new ProtocolError(
      'frame-too-large',
      `${frame.type} payload of ${payload.length} bytes exceeds frameBytesMax`,
    );
  }
  const view = new DataView(bytes.buffer, bytes.byteOffset, frameHeaderBytes);
  view.setUint32(0, frameMagic);
  view.setUint8(4, frameTypeCodes[frame.type]);
  view.setUint32(8, payload.length);
  view.setUint32(12, crc32c(payload));
  view.setUint32(16, crc32c(bytes.subarray(0, 16)));
  return bytes;
}

/** A writer for `size` bytes of payload, after room for the frame's header: the frame is one buffer, written once. */
function payloadWriter(size: number): ByteWriter {
  return new ByteWriter(frameHeaderBytes + size, frameHeaderBytes);
}

/** The frame's bytes with its payload written and its header left for encodeFrame. */
function encodePayload(frame: Frame): Uint8Array {
  switch (frame.type) {
    case 'hello': {
      const group = encodeString(frame.group, 'group', limits.nameBytesMax);
      const names = frame.volumes.map((volume) =>
        encodeString(volume.name, 'volume name', limits.nameBytesMax),
      );
      const size =
        2 +
        4 +
        2 +
        2 +
        2 +
        group.length +
        4 +
        2 +
        names.reduce((sum, name) => sum + 2 + name.length + 8, 0) +
        idBytes +
        chainBytes(frame.generations);
      const writer = payloadWriter(size)
        .u16(frame.protocolVersion)
        .u32(frame.sessionId)
        .u16(frame.connectionIndex)
        .u16(frame.connectionCount)
        .string(group)
        .u32(frame.blockBytes)
        .u16(frame.volumes.length);
      frame.volumes.forEach((volume, index) => {
        writer.string(names[index] as Uint8Array).u64(volume.sizeBytes);
      });
      writer.raw(idToBytes(frame.primarySite, 'primarySite'));
      return writeChain(writer, frame.generations, 'hello').finish();
    }
    case 'welcome': {
      const name = encodeString(frame.secondary, 'secondary', limits.nameBytesMax);
      return payloadWriter(2 + 4 + 2 + name.length + 8 + 8 + 8)
        .u16(frame.protocolVersion)
        .u32(frame.sessionId)
        .string(name)
        .u64(frame.stored)
        .u64(frame.applied)
        .u64(frame.consistentStored)
        .finish();
    }
    case 'error': {
      const code = encodeString(frame.code, 'error code', errorCodeBytesMax);
      const message = encodeTruncated(frame.message, limits.errorMessageBytesMax);
      return payloadWriter(2 + code.length + 2 + message.length)
        .string(code)
        .string(message)
        .finish();
    }
    case 'data':
      return writeDataPayload(payloadWriter(dataHeadBytes + frame.payload.length), frame).finish();
    case 'data-batch': {
      if (frame.packets.length < 1 || frame.packets.length > limits.dataBatchPacketsMax)
        throw new ProtocolError(
          'frame-bad-field',
          `data-batch: ${frame.packets.length} packets, 1 to ${limits.dataBatchPacketsMax}`,
        );
      const size = frame.packets.reduce((sum, packet) => sum + 4 + dataHeadBytes + packet.payload.length, 4);
      const writer = payloadWriter(size).u32(frame.packets.length);
      for (const packet of frame.packets)
        writeDataPayload(writer.u32(dataHeadBytes + packet.payload.length), packet);
      return writer.finish();
    }
    case 'compressed':
      return payloadWriter(compressedHeadBytes + frame.bytes.length)
        .u8(compressionCodecCodes[frame.codec])
        .u8(frameTypeCodes[frame.inner])
        .u32(frame.payloadBytes)
        .raw(frame.bytes)
        .finish();
    case 'end-of-cycle':
      return payloadWriter(8 + 8 + 4 + 4 + 1)
        .u64(frame.cycle)
        .u64(frame.coversFrom)
        .u32(frame.packetCount)
        .u32(frame.digest)
        .u8(frame.consistent ? 1 : 0)
        .finish();
    case 'stored':
      return payloadWriter(16).u64(frame.stored).u64(frame.applied).finish();
    case 'heartbeat':
      return payloadWriter(4).u32(frame.nonce).finish();
    case 'superseded': {
      const writer = payloadWriter(idBytes + chainBytes(frame.generations));
      writer.raw(idToBytes(frame.site, 'site'));
      return writeChain(writer, frame.generations, 'superseded').finish();
    }
    case 'switchover':
      return payloadWriter(8 + idBytes)
        .u64(frame.cycle)
        .raw(idToBytes(frame.generation, 'generation'))
        .finish();
    case 'divergence': {
      if (frame.runs.length > limits.divergenceExtentsPerFrameMax)
        throw new ProtocolError(
          'frame-bad-field',
          `divergence: ${frame.runs.length} runs, at most ${limits.divergenceExtentsPerFrameMax}`,
        );
      const writer = payloadWriter(8 + 4 + frame.runs.length * runBytes)
        .u64(frame.cycle)
        .u32(frame.runs.length);
      for (const run of frame.runs) writer.u16(run.volume).u64(run.block).u32(run.blockCount);
      return writer.finish();
    }
  }
}

/** A DATA payload's fields before its block data. */
const dataHeadBytes = 8 + 4 + 2 + 1 + 1 + 8 + 4;

function writeDataPayload(writer: ByteWriter, frame: DataFrame): ByteWriter {
  return writer
    .u64(frame.cycle)
    .u32(frame.packetIndex)
    .u16(frame.volume)
    .u8(frame.zero ? 1 : 0)
    .u8(0)
    .u64(frame.block)
    .u32(frame.blockCount)
    .raw(frame.payload);
}

/** A block run on the wire: u16 volume, u64 first block, u32 block count. */
const runBytes = 2 + 8 + 4;

/** Decodes one payload of a known type; throws ProtocolError only. */
/** A DATA payload (alone in its frame, or one packet of a data-batch frame). */
function readDataPayload(reader: ByteReader): DataFrame {
  const cycle = reader.u64('cycle');
  const packetIndex = reader.u32('packetIndex');
  const volume = reader.u16('volume');
  const kind = reader.u8('kind');
  if (kind > 1)
    throw new ProtocolError('frame-bad-field', `data: kind ${kind} is neither 0 (data) nor 1 (zero)`);
  // Refused like the header's reserved bytes: a frame has one encoding, so nothing rides along unseen.
  const reserved = reader.u8('reserved');
  if (reserved !== 0)
    throw new ProtocolError('frame-bad-field', `data: reserved byte ${reserved}, must be 0`);
  const block = reader.u64('block');
  const blockCount = reader.u32('blockCount');
  const payload = reader.raw(reader.remaining, 'payload');
  if (kind === 1 && payload.length !== 0) {
    throw new ProtocolError('frame-bad-field', `data: a zero extent carries ${payload.length} payload bytes`);
  }
  return { type: 'data', cycle, packetIndex, volume, block, blockCount, zero: kind === 1, payload };
}

function decodePayload(type: FrameType, payload: Uint8Array): Frame {
  const reader = new ByteReader(payload, type);
  const frame = readPayload(type, reader);
  reader.end();
  return frame;
}

function readPayload(type: FrameType, reader: ByteReader): Frame {
  switch (type) {
    case 'hello': {
      const protocolVersionField = reader.u16('protocolVersion');
      // What follows the version is laid out by that version: another one is refused by name.
      if (protocolVersionField !== protocolVersion) {
        throw new ProtocolError(
          'version-unsupported',
          `hello of protocol ${protocolVersionField}, this site speaks ${protocolVersion}`,
        );
      }
      const sessionId = reader.u32('sessionId');
      const connectionIndex = reader.u16('connectionIndex');
      const connectionCount = reader.u16('connectionCount');
      const group = reader.string('group', limits.nameBytesMax);
      const blockBytes = reader.u32('blockBytes');
      const volumeCount = reader.u16('volumeCount');
      if (volumeCount > limits.volumesMax) {
        throw new ProtocolError(
          'frame-bad-field',
          `hello: ${volumeCount} volumes, at most ${limits.volumesMax}`,
        );
      }
      const volumes: VolumeShape[] = [];
      for (let i = 0; i < volumeCount; i++) {
        volumes.push({
          name: reader.string(`volumes[${i}].name`, limits.nameBytesMax),
          sizeBytes: reader.u64('size'),
        });
      }
      const primarySite = idOfBytes(reader.raw(idBytes, 'primarySite'));
      const generations = readChain(reader, 'hello');
      return {
        type,
        protocolVersion: protocolVersionField,
        sessionId,
        connectionIndex,
        connectionCount,
        group,
        blockBytes,
        volumes,
        primarySite,
        generations,
      };
    }
    case 'welcome':
      return {
        type,
        protocolVersion: reader.u16('protocolVersion'),
        sessionId: reader.u32('sessionId'),
        secondary: reader.string('secondary', limits.nameBytesMax),
        stored: reader.u64('stored'),
        applied: reader.u64('applied'),
        consistentStored: reader.u64('consistentStored'),
      };
    case 'error':
      return {
        type,
        code: reader.string('code', errorCodeBytesMax),
        message: reader.string('message', limits.errorMessageBytesMax),
      };
    case 'data':
      return readDataPayload(reader);
    case 'data-batch': {
      const count = reader.u32('count');
      if (count < 1 || count > limits.dataBatchPacketsMax)
        throw new ProtocolError(
          'frame-bad-field',
          `data-batch: ${count} packets, 1 to ${limits.dataBatchPacketsMax}`,
        );
      const packets: DataFrame[] = [];
      for (let i = 0; i < count; i++) {
        const length = reader.u32(`packets[${i}].length`);
        const packet = new ByteReader(reader.raw(length, `packets[${i}]`), `data-batch packet ${i}`);
        packets.push(readDataPayload(packet));
        packet.end();
      }
      return { type, packets };
    }
    case 'compressed': {
      const codec = codecOfCode(reader.u8('codec'));
      const innerCode = reader.u8('inner');
      const inner = frameTypeByCode.get(innerCode);
      if (inner !== 'data' && inner !== 'data-batch')
        throw new ProtocolError(
          'frame-bad-field',
          `compressed: inner frame type ${innerCode}, not data or data-batch`,
        );
      const payloadBytes = reader.u32('payloadBytes');
      return decodePayload(inner, decompress(codec, reader.raw(reader.remaining, 'bytes'), payloadBytes));
    }
    case 'end-of-cycle':
      return {
        type,
        cycle: reader.u64('cycle'),
        coversFrom: reader.u64('coversFrom'),
        packetCount: reader.u32('packetCount'),
        digest: reader.u32('digest'),
        consistent: readFlag(reader, 'consistent'),
      };
    case 'stored':
      return { type, stored: reader.u64('stored'), applied: reader.u64('applied') };
    case 'heartbeat':
      return { type, nonce: reader.u32('nonce') };
    case 'superseded': {
      const site = idOfBytes(reader.raw(idBytes, 'site'));
      return { type, site, generations: readChain(reader, 'superseded') };
    }
    case 'switchover':
      return {
        type,
        cycle: reader.u64('cycle'),
        generation: idOfBytes(reader.raw(idBytes, 'generation')),
      };
    case 'divergence':
      return { type, cycle: reader.u64('cycle'), runs: readRuns(reader) };
  }
}

/** Reads a divergence's runs; the count is checked against the bound before any run is read. */
function readRuns(reader: ByteReader): BlockRun[] {
  const count = reader.u32('runCount');
  if (count > limits.divergenceExtentsPerFrameMax)
    throw new ProtocolError(
      'frame-bad-field',
      `divergence: ${count} runs, at most ${limits.divergenceExtentsPerFrameMax}`,
    );
  const runs: BlockRun[] = [];
  for (let i = 0; i < count; i++) {
    const run = {
      volume: reader.u16(`runs[${i}].volume`),
      block: reader.u64(`runs[${i}].block`),
      blockCount: reader.u32(`runs[${i}].blockCount`),
    };
    if (run.blockCount < 1) throw new ProtocolError('frame-bad-field', `divergence: runs[${i}] of no block`);
    runs.push(run);
  }
  return runs;
}

/** What a decoder hands back: the frames it completed, and the error that stopped it, if any. */
export interface DecodeResult {
  frames: Frame[];
  error: ProtocolError | null;
  /**
   * Whole frames are still buffered: this push stopped at its budget of decompressed bytes. The
   * caller pushes an empty chunk later (its next turn) to go on.
   */
  more: boolean;
}

export interface FrameDecoderOptions {
  /** Largest payload accepted (default limits.frameBytesMax). */
  frameBytesMax?: number;
  /**
   * Compressed frames are taken (a secondary, from its primary); elsewhere one is refused before
   * anything is decompressed. Default false.
   */
  acceptCompressed?: boolean;
}

/**
 * Decompressed bytes one push hands out at most, beyond its first frame: a read of a few KiB of
 * compressed frames cannot expand into gigabytes in one turn of the event loop.
 */
export const expandedBytesPerPushMax = limits.compressedInnerBytesMax;

/**
 * Incremental decoder for one byte stream. Hostile bytes end in a ProtocolError in the result,
 * after which the decoder stays failed (the stream cannot be trusted to resynchronise). It throws
 * only on a defect of its own: the fuzzers count on that to tell the two apart.
 */
export class FrameDecoder {
  private chunks: Uint8Array[] = [];
  private buffered = 0;
  private failure: ProtocolError | null = null;
  private readonly frameBytesMax: number;
  private readonly acceptCompressed: boolean;
  /** Decompressed bytes handed out by the push under way. */
  private expandedThisPush = 0;

  constructor(options: FrameDecoderOptions = {}) {
    this.frameBytesMax = options.frameBytesMax ?? limits.frameBytesMax;
    this.acceptCompressed = options.acceptCompressed ?? false;
  }

  get failed(): ProtocolError | null {
    return this.failure;
  }

  /** Bytes received that do not yet make a whole frame. */
  pendingBytes(): number {
    return this.buffered;
  }

  push(chunk: Uint8Array): DecodeResult {
    const frames: Frame[] = [];
    if (this.failure) return { frames, error: this.failure, more: false };
    if (chunk.length > 0) {
      this.chunks.push(chunk);
      this.buffered += chunk.length;
    }
    this.expandedThisPush = 0;
    let more = false;
    try {
      for (;;) {
        const frame = this.next();
        if (frame === 'budget-spent') {
          more = true;
          break;
        }
        if (!frame) break;
        frames.push(frame);
      }
    } catch (error) {
      // A peer's bad bytes are a ProtocolError; anything else (a RangeError, a TypeError, an
      // assertion) is a broken assumption of this code and must escape, not pass for bad input.
      if (!(error instanceof ProtocolError)) throw error;
      this.failure = error;
      this.chunks = [];
      this.buffered = 0;
      more = false;
    }
    return { frames, error: this.failure, more };
  }

  /** The next whole frame, null when none is buffered, or 'budget-spent' when it would expand past this push's budget. */
  private next(): Frame | null | 'budget-spent' {
    if (this.buffered < frameHeaderBytes) return null;
    const header = this.peek(frameHeaderBytes);
    const { type, payloadBytes, payloadCrc } = checkHeader(header, this.frameBytesMax);
    if (type === 'compressed' && !this.acceptCompressed)
      throw new ProtocolError(
        'unexpected-frame',
        'compressed: this site takes no compressed frames from its peer',
      );
    if (this.buffered < frameHeaderBytes + payloadBytes) return null;
    if (type === 'compressed' && payloadBytes >= compressedHeadBytes) {
      // The declared inner length, read before the frame is taken: past the budget it stays buffered.
      const head = this.peek(frameHeaderBytes + compressedHeadBytes);
      const declared = new DataView(head.buffer, head.byteOffset + frameHeaderBytes + 2, 4).getUint32(0);
      checkDeclaredBytes(declared);
      if (this.expandedThisPush > 0 && this.expandedThisPush + declared > expandedBytesPerPushMax)
        return 'budget-spent';
      this.expandedThisPush += declared;
    }
    const whole = this.take(frameHeaderBytes + payloadBytes);
    const payload = whole.subarray(frameHeaderBytes);
    if (crc32c(payload) !== payloadCrc) {
      throw new ProtocolError('frame-payload-crc', `${type}: payload CRC32C mismatch`);
    }
    return decodePayload(type, payload);
  }

  private peek(count: number): Uint8Array {
    const first = this.chunks[0] as Uint8Array;
    if (first.length >= count) return first.subarray(0, count);
    this.chunks = [concat(this.chunks, this.buffered)];
    return (this.chunks[0] as Uint8Array).subarray(0, count);
  }

  private take(count: number): Uint8Array {
    const first = this.chunks[0] as Uint8Array;
    if (first.length < count) this.chunks = [concat(this.chunks, this.buffered)];
    const joined = this.chunks[0] as Uint8Array;
    const taken = joined.subarray(0, count);
    if (joined.length === count) this.chunks.shift();
    else this.chunks[0] = joined.subarray(count);
    this.buffered -= count;
    return taken;
  }
}

function checkHeader(
  header: Uint8Array,
  frameBytesMax: number,
): { type: FrameType; payloadBytes: number; payloadCrc: number } {
  const view = new DataView(header.buffer, header.byteOffset, frameHeaderBytes);
  const magic = view.getUint32(0);
  if (magic !== frameMagic) {
    throw new ProtocolError('frame-bad-magic', `bad frame magic 0x${magic.toString(16).padStart(8, '0')}`);
  }
  if (crc32c(header.subarray(0, 16)) !== view.getUint32(16)) {
    throw new ProtocolError('frame-header-crc', 'frame header CRC32C mismatch');
  }
  const code = view.getUint8(4);
  const type = frameTypeByCode.get(code);
  if (!type) throw new ProtocolError('frame-unknown-type', `unknown frame type ${code}`);
  if (view.getUint8(5) !== 0 || view.getUint16(6) !== 0) {
    throw new ProtocolError('frame-bad-field', `${type}: flags and reserved bytes must be 0 in version 1`);
  }
  const payloadBytes = view.getUint32(8);
  if (payloadBytes > frameBytesMax) {
    throw new ProtocolError(
      'frame-too-large',
      `${type}: payload of ${payloadBytes} bytes exceeds ${frameBytesMax}`,
    );
  }
  return { type, payloadBytes, payloadCrc: view.getUint32(12) };
}

function concat(chunks: Uint8Array[], total: number): Uint8Array {
  const joined = new Uint8Array(total);
  let offset = 0;
  for (const chunk of chunks) {
    joined.set(chunk, offset);
    offset += chunk.length;
  }
  return joined;
}

/** A 32-hex-digit identity as its 16 bytes; anything else is refused rather than sent mangled. */
function idToBytes(id: string, field: string): Uint8Array {
  if (!isId(id)) {
    throw new ProtocolError(
      'frame-bad-field',
      `${field}: ${JSON.stringify(id)} is not 32 lowercase hex digits`,
    );
  }
  return Uint8Array.from(Buffer.from(id, 'hex'));
}

function idOfBytes(bytes: Uint8Array): string {
  return Buffer.from(bytes).toString('hex');
}

/** Bytes of a generation chain on the wire: a u16 count, then 16-byte id, u64 start, 16-byte site each. */
function chainBytes(generations: readonly Generation[]): number {
  return 2 + generations.length * (idBytes + 8 + idBytes);
}

/** Writes a chain (hello, superseded); more than generationsInHelloMax is refused, not cut. */
function writeChain(writer: ByteWriter, generations: readonly Generation[], frame: FrameType): ByteWriter {
  if (generations.length > limits.generationsInHelloMax) {
    throw new ProtocolError(
      'frame-bad-field',
      `${frame}: ${generations.length} generations, at most ${limits.generationsInHelloMax}`,
    );
  }
  writer.u16(generations.length);
  for (const generation of generations) {
    writer
      .raw(idToBytes(generation.id, 'generation id'))
      .u64(generation.startedAt)
      .raw(idToBytes(generation.primarySite, 'generation primarySite'));
  }
  return writer;
}

/** Reads a chain; the count is checked against the bound before any entry is read. */
function readChain(reader: ByteReader, frame: FrameType): Generation[] {
  const generationCount = reader.u16('generationCount');
  if (generationCount > limits.generationsInHelloMax) {
    throw new ProtocolError(
      'frame-bad-field',
      `${frame}: ${generationCount} generations, at most ${limits.generationsInHelloMax}`,
    );
  }
  const generations: Generation[] = [];
  for (let i = 0; i < generationCount; i++) {
    generations.push({
      id: idOfBytes(reader.raw(idBytes, `generations[${i}].id`)),
      startedAt: reader.u64(`generations[${i}].startedAt`),
      primarySite: idOfBytes(reader.raw(idBytes, `generations[${i}].primarySite`)),
    });
  }
  return generations;
}

/** Decodes exactly one whole frame (tests, tools). */
export function decodeFrame(
  bytes: Uint8Array,
  options: FrameDecoderOptions = { acceptCompressed: true },
): DecodeResult {
  const decoder = new FrameDecoder(options);
  let result = decoder.push(bytes);
  const frames = [...result.frames];
  while (result.more) {
    result = decoder.push(new Uint8Array(0));
    frames.push(...result.frames);
  }
  if (!result.error && decoder.pendingBytes() !== 0) {
    return {
      frames,
      error: new ProtocolError('frame-truncated', 'bytes left after the last frame'),
      more: false,
    };
  }
  return { frames, error: result.error, more: false };
}

/** The DATA frame carrying one extent of a cycle. */
export function dataFrameOf(cycle: number, packetIndex: number, extent: Extent): DataFrame {
  return {
    type: 'data',
    cycle,
    packetIndex,
    volume: extent.volume,
    block: extent.block,
    blockCount: extent.blockCount,
    zero: extent.data === null,
    payload: extent.data ?? new Uint8Array(0),
  };
}

/** The extent a DATA frame carries. */
export function extentOfDataFrame(frame: DataFrame): Extent {
  return {
    volume: frame.volume,
    block: frame.block,
    blockCount: frame.blockCount,
    data: frame.zero ? null : frame.payload,
  };
}

/**
 * Order-independent digest of a cycle's packets: the sum, modulo 2^32, of each packet's CRC32C over
 * its index and content. It proves completeness against loss and mixing of packets from elsewhere;
 * each frame's own CRC already guards against corruption.
 */
export function packetDigest(frame: DataFrame): number {
  const head = new ByteWriter(8 + 4 + 2 + 1 + 8 + 4)
    .u64(frame.cycle)
    .u32(frame.packetIndex)
    .u16(frame.volume)
    .u8(frame.zero ? 1 : 0)
    .u64(frame.block)
    .u32(frame.blockCount)
    .finish();
  return crc32c(frame.payload, crc32c(head));
}

export function addDigest(sum: number, packet: number): number {
  return (sum + packet) >>> 0;
}

/** A one-byte boolean: 0 or 1, anything else refused (a frame has one encoding). */
function readFlag(reader: ByteReader, field: string): boolean {
  const value = reader.u8(field);
  if (value > 1) throw new ProtocolError('frame-bad-field', `${field}: ${value} is neither 0 nor 1`);
  return value === 1;
}
