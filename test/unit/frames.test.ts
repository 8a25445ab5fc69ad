// Proves the site-to-site codec: every frame type survives encode/decode whole, byte by byte and
// split at every boundary; each kind of damage is refused with its own ProtocolError code; and,
// as property tests, no random or mutated input makes the decoder throw (a throw is a defect of the
// decoder, not bad input), and what decodes is exactly the bytes it came from. The properties are
// shown to catch defects planted in the byte reader (a bounds check and a range check removed).
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { brotliCompressSync } from 'node:zlib';
import fc from 'fast-check';
import { ProtocolError } from '../../src/core/errors.ts';
import { limits } from '../../src/core/limits.ts';
import { crc32c } from '../../src/protocol/crc32c.ts';
import {
  compressedFrame,
  type DataFrame,
  decodeFrame,
  encodeFrame,
  expandedBytesPerPushMax,
  type Frame,
  FrameDecoder,
  frameHeaderBytes,
  frameTypeCodes,
  protocolVersion,
} from '../../src/protocol/frames.ts';
import { plantedDefects, withPlantedDefect } from '../fuzz/planted.ts';

const samples: Frame[] = [
  {
    type: 'hello',
    protocolVersion,
    sessionId: 0xdeadbeef,
    connectionIndex: 1,
    connectionCount: 3,
    group: 'démo',
    blockBytes: 4096,
    volumes: [
      { name: 'data', sizeBytes: 2 ** 40 },
      { name: 'log', sizeBytes: 256 * 1024 * 1024 },
    ],
    primarySite: 'c'.repeat(32),
    generations: [{ id: 'd'.repeat(32), startedAt: 1, primarySite: 'c'.repeat(32) }],
  },
  {
    type: 'welcome',
    protocolVersion,
    sessionId: 7,
    secondary: 'dr1',
    stored: 2 ** 53 - 1,
    applied: 41,
    consistentStored: 40,
  },
  { type: 'error', code: 'group-mismatch', message: 'group "a" offered, this site is of group "b"' },
  {
    type: 'data',
    cycle: 12,
    packetIndex: 3,
    volume: 1,
    block: 1000,
    blockCount: 2,
    zero: false,
    payload: Uint8Array.from({ length: 1024 }, (_, i) => i & 0xff),
  },
  {
    type: 'data',
    cycle: 12,
    packetIndex: 4,
    volume: 0,
    block: 5,
    blockCount: 4096,
    zero: true,
    payload: new Uint8Array(0),
  },
  {
    type: 'data-batch',
    packets: [
      {
        type: 'data',
        cycle: 13,
        packetIndex: 0,
        volume: 2,
        block: 2 ** 40,
        blockCount: 1,
        zero: false,
        payload: Uint8Array.from({ length: 512 }, (_, i) => (i * 7) & 0xff),
      },
      {
        type: 'data',
        cycle: 13,
        packetIndex: 9,
        volume: 0,
        block: 8,
        blockCount: 3,
        zero: true,
        payload: new Uint8Array(0),
      },
    ],
  },
  { type: 'end-of-cycle', cycle: 14, coversFrom: 9, packetCount: 5, digest: 0x12345678, consistent: false },
  { type: 'stored', stored: 40, applied: 39 },
  { type: 'heartbeat', nonce: 99 },
  {
    type: 'superseded',
    site: 'e'.repeat(32),
    generations: [
      { id: 'd'.repeat(32), startedAt: 1, primarySite: 'c'.repeat(32) },
      { id: 'f'.repeat(32), startedAt: 2 ** 40, primarySite: 'e'.repeat(32) },
    ],
  },
  { type: 'switchover', cycle: 2 ** 41, generation: 'a'.repeat(32) },
  {
    type: 'divergence',
    cycle: 77,
    runs: [
      { volume: 0, block: 2 ** 40, blockCount: 16 },
      { volume: 255, block: 3, blockCount: 2 ** 31 },
    ],
  },
];

function decodeAll(chunks: Uint8Array[]): Frame[] {
  const decoder = new FrameDecoder();
  const frames: Frame[] = [];
  for (const chunk of chunks) {
    const result = decoder.push(chunk);
    assert.equal(result.error, null, result.error?.message);
    frames.push(...result.frames);
  }
  assert.equal(decoder.pendingBytes(), 0);
  return frames;
}

test('every frame type round-trips whole', () => {
  for (const frame of samples) {
    const result = decodeFrame(encodeFrame(frame));
    assert.equal(result.error, null);
    assert.deepEqual(result.frames, [frame]);
  }
});

test('a stream of all frame types decodes fed byte by byte', () => {
  const stream = Buffer.concat(samples.map(encodeFrame));
  const chunks = Array.from(stream, (byte) => Uint8Array.of(byte));
  assert.deepEqual(decodeAll(chunks), samples);
});

test('a stream of all frame types decodes when split in two at every boundary', () => {
  const stream = new Uint8Array(Buffer.concat(samples.map(encodeFrame)));
  for (let cut = 0; cut <= stream.length; cut++) {
    assert.deepEqual(decodeAll([stream.subarray(0, cut), stream.subarray(cut)]), samples, `cut at ${cut}`);
  }
});

function expectError(bytes: Uint8Array, code: ProtocolError['code']): void {
  const result = new FrameDecoder().push(bytes);
  assert.ok(result.error instanceof ProtocolError, `expected ${code}`);
  assert.equal(result.error.code, code, result.error.message);
}

function withValidHeaderCrc(bytes: Uint8Array): Uint8Array {
  new DataView(bytes.buffer, bytes.byteOffset).setUint32(16, crc32c(bytes.subarray(0, 16)));
  return bytes;
}

test('a bad magic is refused as frame-bad-magic', () => {
  const bytes = encodeFrame({ type: 'heartbeat', nonce: 1 });
  bytes[0] = 0;
  expectError(bytes, 'frame-bad-magic');
});

test('a damaged length is caught by the header CRC before any payload is awaited', () => {
  const bytes = encodeFrame({ type: 'heartbeat', nonce: 1 });
  bytes[9] = (bytes[9] as number) ^ 0x40;
  expectError(bytes.subarray(0, frameHeaderBytes), 'frame-header-crc');
});

test('a damaged payload is refused as frame-payload-crc', () => {
  const bytes = encodeFrame(samples[3] as Frame);
  bytes[frameHeaderBytes + 40] = (bytes[frameHeaderBytes + 40] as number) ^ 1;
  expectError(bytes, 'frame-payload-crc');
});

test('a length above frameBytesMax is refused from the header alone', () => {
  const bytes = encodeFrame({ type: 'heartbeat', nonce: 1 }).subarray(0, frameHeaderBytes).slice();
  new DataView(bytes.buffer).setUint32(8, limits.frameBytesMax + 1);
  expectError(withValidHeaderCrc(bytes), 'frame-too-large');
});

test('a length at frameBytesMax is accepted by the header check (bound is inclusive)', () => {
  const decoder = new FrameDecoder({ frameBytesMax: 64 });
  const payload = new Uint8Array(64);
  const bytes = encodeFrame({ type: 'heartbeat', nonce: 1 }).slice(0, frameHeaderBytes);
  const view = new DataView(bytes.buffer);
  view.setUint32(8, 64);
  view.setUint32(12, crc32c(payload));
  const result = decoder.push(withValidHeaderCrc(bytes));
  assert.equal(result.error, null);
  assert.equal(decoder.push(payload).error?.code, 'frame-trailing-bytes');
});

test('an unknown frame type is refused as frame-unknown-type', () => {
  const bytes = encodeFrame({ type: 'heartbeat', nonce: 1 });
  bytes[4] = 200;
  expectError(withValidHeaderCrc(bytes), 'frame-unknown-type');
});

test('a sequence number above 2^53-1 is refused as frame-bad-field', () => {
  const bytes = encodeFrame({ type: 'stored', stored: 1, applied: 1 });
  bytes[frameHeaderBytes] = 0xff;
  new DataView(bytes.buffer).setUint32(12, crc32c(bytes.subarray(frameHeaderBytes)));
  expectError(withValidHeaderCrc(bytes), 'frame-bad-field');
});

test('a name that is not UTF-8 is refused as frame-bad-field', () => {
  const bytes = encodeFrame({ type: 'error', code: 'ab', message: 'x' });
  bytes[frameHeaderBytes + 2] = 0xff;
  new DataView(bytes.buffer).setUint32(12, crc32c(bytes.subarray(frameHeaderBytes)));
  expectError(withValidHeaderCrc(bytes), 'frame-bad-field');
});

test('a data frame with its reserved byte set is refused as frame-bad-field (one encoding per frame)', () => {
  const bytes = encodeFrame(samples[3] as Frame);
  bytes[frameHeaderBytes + 15] = 1; // after cycle (8), packetIndex (4), volume (2), kind (1)
  new DataView(bytes.buffer).setUint32(12, crc32c(bytes.subarray(frameHeaderBytes)));
  expectError(withValidHeaderCrc(bytes), 'frame-bad-field');
});

test('a name beginning with a byte order mark keeps it: the bytes decode to the name they encode', () => {
  const frame: Frame = { type: 'error', code: '\uFEFFcode', message: '\uFEFFmessage' };
  assert.deepEqual(decodeFrame(encodeFrame(frame)).frames, [frame]);
});

test("a defect in the decoder escapes as the exception it is, not as a peer's ProtocolError", async () => {
  await withPlantedDefect('reader-bounds', () => {
    const bytes = encodeFrame({ type: 'stored', stored: 1, applied: 1 }).slice(0, frameHeaderBytes + 4);
    assert.throws(() => new FrameDecoder().push(resealed(bytes)), RangeError);
  });
});

test('after an error the decoder stays failed and hands out no further frames', () => {
  const decoder = new FrameDecoder();
  const bad = encodeFrame({ type: 'heartbeat', nonce: 1 });
  bad[0] = 0;
  assert.ok(decoder.push(bad).error);
  const again = decoder.push(encodeFrame({ type: 'heartbeat', nonce: 2 }));
  assert.deepEqual(again.frames, []);
  assert.ok(again.error);
});

test('a long error message is cut at a character boundary and still decodes', () => {
  const message = 'é'.repeat(limits.errorMessageBytesMax);
  const result = decodeFrame(encodeFrame({ type: 'error', code: 'x', message }));
  assert.equal(result.error, null);
  const [frame] = result.frames;
  assert.ok(frame?.type === 'error');
  assert.equal(frame.message, 'é'.repeat(limits.errorMessageBytesMax / 2));
});

test('a name over nameBytesMax is refused when encoding, naming the field', () => {
  assert.throws(
    () =>
      encodeFrame({
        type: 'welcome',
        protocolVersion,
        sessionId: 1,
        secondary: 'x'.repeat(65),
        stored: 0,
        applied: 0,
        consistentStored: 0,
      }),
    /secondary "x+" is 65 bytes, at most 64/,
  );
});

/** A hello as the sample, with fields changed; encoded by the codec itself. */
function helloSample(overrides: Record<string, unknown>): Frame {
  return { ...(samples[0] as Frame), ...overrides } as Frame;
}

test('a hello of another protocol version is refused by its version, naming both', () => {
  // The layout after the version field belongs to that version, so only the version is read.
  const bytes = encodeFrame(helloSample({ protocolVersion: 1 }));
  const result = decodeFrame(bytes);
  assert.equal(result.error?.code, 'version-unsupported');
  assert.equal(result.error?.message, `hello of protocol 1, this site speaks ${protocolVersion}`);
});

test("a hello carries the primary's site and generation chain, 16-byte ids on the wire", () => {
  const generations = Array.from({ length: limits.generationsInHelloMax }, (_, index) => ({
    id: index.toString(16).padStart(32, '0'),
    startedAt: index * 1000 + 1,
    primarySite: 'c'.repeat(32),
  }));
  const frame = helloSample({ generations });
  const withOne = encodeFrame(helloSample({}));
  const withMany = encodeFrame(frame);
  assert.equal(withMany.length - withOne.length, (limits.generationsInHelloMax - 1) * (16 + 8 + 16));
  assert.deepEqual(decodeFrame(withMany).frames, [frame]);
});

test('an identity that is not 32 lowercase hex digits is refused when encoding, naming the field', () => {
  assert.throws(
    () => encodeFrame(helloSample({ primarySite: 'C'.repeat(32) })),
    /primarySite: "C+" is not 32/,
  );
  assert.throws(
    () => encodeFrame(helloSample({ generations: [{ id: 'x', startedAt: 1, primarySite: 'c'.repeat(32) }] })),
    /generation id: "x" is not 32/,
  );
});

test('a hello with more than generationsInHelloMax generations is refused', () => {
  const generation = { id: 'd'.repeat(32), startedAt: 1, primarySite: 'c'.repeat(32) };
  const generations = Array.from({ length: limits.generationsInHelloMax + 1 }, () => generation);
  assert.throws(() => encodeFrame(helloSample({ generations })), /65 generations, at most 64/);
  // The decoder refuses the count before reading the entries: forge the count in a valid frame.
  const bytes = encodeFrame(helloSample({}));
  const payload = bytes.subarray(frameHeaderBytes);
  const countAt = payload.length - (16 + 8 + 16) - 2;
  new DataView(payload.buffer, payload.byteOffset).setUint16(countAt, limits.generationsInHelloMax + 1);
  new DataView(bytes.buffer).setUint32(12, crc32c(payload));
  new DataView(bytes.buffer).setUint32(16, crc32c(bytes.subarray(0, 16)));
  const result = decodeFrame(bytes);
  assert.equal(result.error?.code, 'frame-bad-field');
  assert.match(result.error?.message ?? '', /65 generations, at most 64/);
});

/** A superseded frame as the sample, with fields changed. */
function supersededSample(overrides: Record<string, unknown>): Frame {
  return { ...(samples.find((frame) => frame.type === 'superseded') as Frame), ...overrides } as Frame;
}

/** A frame of `type` around `payload`, its header written and both CRCs sealed (see resealed). */
function withPayload(type: keyof typeof frameTypeCodes, payload: Uint8Array): Uint8Array {
  const bytes = new Uint8Array(frameHeaderBytes + payload.length);
  const view = new DataView(bytes.buffer);
  view.setUint32(0, 0x43595250);
  view.setUint8(4, frameTypeCodes[type]);
  bytes.set(payload, frameHeaderBytes);
  return resealed(bytes);
}

test('a superseded frame carries the sender site and its chain like the hello, bounded by generationsInHelloMax', () => {
  const generations = Array.from({ length: limits.generationsInHelloMax }, (_, index) => ({
    id: (index + 1).toString(16).padStart(32, '0'),
    startedAt: index * 1000 + 1,
    primarySite: 'e'.repeat(32),
  }));
  const full = supersededSample({ generations });
  const bytes = encodeFrame(full);
  assert.equal(bytes.length, frameHeaderBytes + 16 + 2 + generations.length * (16 + 8 + 16));
  assert.deepEqual(decodeFrame(bytes).frames, [full]);
  assert.throws(
    () => encodeFrame(supersededSample({ generations: [...generations, generations[0]] })),
    /superseded: 65 generations, at most 64/,
  );
  // The decoder refuses the count before reading any entry.
  const forged = new Uint8Array(16 + 2);
  new DataView(forged.buffer).setUint16(16, limits.generationsInHelloMax + 1);
  const result = decodeFrame(withPayload('superseded', forged));
  assert.equal(result.error?.code, 'frame-bad-field');
  assert.match(result.error?.message ?? '', /superseded: 65 generations, at most 64/);
});

test('a malformed superseded frame is refused: bad ids when encoding, short or long payloads when decoding', () => {
  assert.throws(() => encodeFrame(supersededSample({ site: 'E'.repeat(32) })), /site: "E+" is not 32/);
  assert.throws(
    () =>
      encodeFrame(
        supersededSample({ generations: [{ id: 'd', startedAt: 1, primarySite: 'e'.repeat(32) }] }),
      ),
    /generation id: "d" is not 32/,
  );
  const payload = encodeFrame(supersededSample({})).subarray(frameHeaderBytes);
  const short = decodeFrame(withPayload('superseded', payload.subarray(0, payload.length - 1)));
  assert.equal(short.error?.code, 'frame-truncated');
  const long = decodeFrame(withPayload('superseded', Uint8Array.from([...payload, 0])));
  assert.equal(long.error?.code, 'frame-trailing-bytes');
  const noChain = decodeFrame(withPayload('superseded', payload.subarray(0, 16)));
  assert.equal(noChain.error?.code, 'frame-truncated');
  // A start above 2^53-1 cannot be a cycle number.
  const huge = Uint8Array.from(payload);
  new DataView(huge.buffer).setUint32(16 + 2 + 16, 0xffffffff);
  assert.equal(decodeFrame(withPayload('superseded', huge)).error?.code, 'frame-bad-field');
});

test('frame type codes are distinct', () => {
  const codes = Object.values(frameTypeCodes);
  assert.equal(new Set(codes).size, codes.length);
});

/** Feeds the chunks; the decoder may refuse, but must not throw, and hands out only the bytes it read. */
function assertOnlyTypedErrors(chunks: Uint8Array[]): void {
  const decoder = new FrameDecoder({ frameBytesMax: 4096 });
  const stream = Buffer.concat(chunks);
  let consumed = 0;
  for (const chunk of chunks) {
    const result = decoder.push(chunk);
    for (const frame of result.frames) {
      const encoded = encodeFrame(frame);
      assert.deepEqual(encoded, new Uint8Array(stream.subarray(consumed, consumed + encoded.length)));
      consumed += encoded.length;
    }
    if (result.error) {
      assert.ok(result.error instanceof ProtocolError);
      return;
    }
  }
}

/** A frame's bytes with its payload's header fields sealed again: what gets past both CRCs. */
function resealed(bytes: Uint8Array): Uint8Array {
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.length);
  const payload = bytes.subarray(frameHeaderBytes);
  view.setUint32(8, payload.length);
  view.setUint32(12, crc32c(payload));
  view.setUint32(16, crc32c(bytes.subarray(0, 16)));
  return bytes;
}

/** Samples with payload bytes changed, cut or added, and their checksums made right again. */
const resealedPayloads = fc
  .record({
    sample: fc.nat(samples.length - 1),
    cut: fc.nat(),
    flips: fc.array(fc.record({ at: fc.nat(), value: fc.integer({ min: 0, max: 255 }) }), { maxLength: 4 }),
    tail: fc.uint8Array({ maxLength: 12 }),
  })
  .map(({ sample, cut, flips, tail }) => {
    const encoded = encodeFrame(samples[sample] as Frame);
    const payload = encoded.slice(frameHeaderBytes);
    for (const { at, value } of flips) if (payload.length > 0) payload[at % payload.length] = value;
    const kept = payload.subarray(0, payload.length === 0 ? 0 : cut % (payload.length + 1));
    return resealed(new Uint8Array(Buffer.concat([encoded.subarray(0, frameHeaderBytes), kept, tail])));
  });

function resealedProperty(numRuns: number): void {
  fc.assert(
    fc.property(resealedPayloads, (bytes) => assertOnlyTypedErrors([bytes])),
    { numRuns },
  );
}

test('property: random bytes, in random chunks, never throw and only yield ProtocolError', () => {
  fc.assert(
    fc.property(fc.array(fc.uint8Array({ maxLength: 64 }), { maxLength: 20 }), (chunks) => {
      assertOnlyTypedErrors(chunks);
    }),
    { numRuns: 2000 },
  );
});

test('property: valid frames with random bytes flipped never throw and never pass unnoticed', () => {
  const stream = new Uint8Array(Buffer.concat(samples.map(encodeFrame)));
  fc.assert(
    fc.property(
      fc.array(fc.record({ at: fc.nat(stream.length - 1), mask: fc.integer({ min: 1, max: 255 }) }), {
        minLength: 1,
        maxLength: 4,
      }),
      (flips) => {
        const mutated = stream.slice();
        for (const { at, mask } of flips) mutated[at] = (mutated[at] as number) ^ mask;
        const result = new FrameDecoder().push(mutated);
        if (result.error) {
          assert.ok(result.error instanceof ProtocolError);
        } else {
          // Two flips may cancel out; otherwise every change must be caught by a CRC.
          assert.deepEqual(mutated, stream);
        }
      },
    ),
    { numRuns: 2000 },
  );
});

test('property: valid frames cut short or with bytes inserted never throw', () => {
  const stream = new Uint8Array(Buffer.concat(samples.map(encodeFrame)));
  fc.assert(
    fc.property(fc.nat(stream.length), fc.uint8Array({ maxLength: 32 }), (cut, inserted) => {
      assertOnlyTypedErrors([stream.subarray(0, cut), inserted, stream.subarray(cut)]);
    }),
    { numRuns: 1000 },
  );
});

test('property: payloads changed behind resealed checksums decode to exactly their bytes or a ProtocolError', () => {
  resealedProperty(3000);
});

for (const defect of ['reader-bounds', 'reader-u64-range'] as const) {
  test(`the properties catch the planted defect ${defect} (${plantedDefects[defect].description})`, async () => {
    await withPlantedDefect(defect, () => {
      assert.throws(() => resealedProperty(3000), /Property failed/);
    });
  });
}

test('a divergence frame is bounded in runs, and a run of no block is refused', () => {
  const run = { volume: 0, block: 0, blockCount: 1 };
  const tooMany = {
    type: 'divergence',
    cycle: 1,
    runs: Array(limits.divergenceExtentsPerFrameMax + 1).fill(run),
  } as Frame;
  assert.throws(() => encodeFrame(tooMany), /divergence: 65537 runs, at most 65536/);
  const empty = encodeFrame({ type: 'divergence', cycle: 1, runs: [{ volume: 0, block: 0, blockCount: 0 }] });
  assert.match(decodeFrame(empty).error?.message ?? '', /runs\[0\] of no block/);
});

/** A data-batch payload of `count` (as written) and these packet entries, each a u32 length and its bytes. */
function batchPayload(count: number, entries: Uint8Array[]): Uint8Array {
  const size = entries.reduce((sum, entry) => sum + 4 + entry.length, 4);
  const bytes = new Uint8Array(size);
  const view = new DataView(bytes.buffer);
  view.setUint32(0, count);
  let at = 4;
  for (const entry of entries) {
    view.setUint32(at, entry.length);
    bytes.set(entry, at + 4);
    at += 4 + entry.length;
  }
  return bytes;
}

/** A DATA frame's payload: the bytes after its 20-byte header. */
function dataPayloadOf(frame: Frame): Uint8Array {
  return encodeFrame(frame).subarray(frameHeaderBytes);
}

test('a data-batch frame is bounded in packets and each packet is a whole DATA payload, else refused by name', () => {
  const packet = dataPayloadOf(samples.find((frame) => frame.type === 'data') as Frame);
  const accepted = decodeFrame(withPayload('data-batch', batchPayload(2, [packet, packet])));
  assert.equal(accepted.error, null, accepted.error?.message);
  assert.equal((accepted.frames[0] as { packets: unknown[] }).packets.length, 2);
  const refusals: [string, Uint8Array, ProtocolError['code'], RegExp][] = [
    ['no packet', batchPayload(0, []), 'frame-bad-field', /data-batch: 0 packets, 1 to 4096/],
    [
      'more packets than dataBatchPacketsMax',
      batchPayload(limits.dataBatchPacketsMax + 1, [packet]),
      'frame-bad-field',
      /data-batch: 4097 packets, 1 to 4096/,
    ],
    [
      'a count above the entries there',
      batchPayload(3, [packet, packet]),
      'frame-truncated',
      /packets\[2\]\.length/,
    ],
    [
      'an entry longer than what is left',
      batchPayload(1, [packet]).subarray(0, 4 + 4 + 10),
      'frame-truncated',
      /packets\[0\]/,
    ],
    [
      'an entry shorter than a DATA head',
      batchPayload(1, [packet.subarray(0, 20)]),
      'frame-truncated',
      /data-batch packet 0/,
    ],
    [
      'a packet with its reserved byte set',
      batchPayload(1, [Uint8Array.from(packet, (byte, i) => (i === 15 ? 1 : byte))]),
      'frame-bad-field',
      /reserved byte 1/,
    ],
  ];
  for (const [what, payload, code, message] of refusals) {
    const result = decodeFrame(withPayload('data-batch', payload));
    assert.equal(result.error?.code, code, what);
    assert.match(result.error?.message ?? '', message, what);
  }
  // Bytes after the last entry are refused as for every frame (one encoding).
  const trailing = decodeFrame(withPayload('data-batch', new Uint8Array([...batchPayload(1, [packet]), 0])));
  assert.equal(trailing.error?.code, 'frame-trailing-bytes');
  assert.throws(() => encodeFrame({ type: 'data-batch', packets: [] }), /data-batch: 0 packets/);
});

/** A compressed frame's payload: codec, inner type code, declared length, then `bytes`. */
function compressedPayload(codec: number, inner: number, declared: number, bytes: Uint8Array): Uint8Array {
  const payload = new Uint8Array(6 + bytes.length);
  const view = new DataView(payload.buffer);
  view.setUint8(0, codec);
  view.setUint8(1, inner);
  view.setUint32(2, declared);
  payload.set(bytes, 6);
  return payload;
}

test('a compressed frame decodes to the frame it carries; random data is sent as it was', () => {
  const data = samples.find((frame) => frame.type === 'data') as DataFrame;
  const batch: Frame = { type: 'data-batch', packets: [data, { ...data, packetIndex: 9 }] };
  for (const frame of [{ ...data, payload: new Uint8Array(65536).fill(7) }, batch] as const) {
    const sent = compressedFrame(frame, 'brotli');
    assert.equal(sent.frame.type, 'compressed');
    assert.ok(sent.sentBytes < sent.payloadBytes, `${sent.sentBytes} of ${sent.payloadBytes}`);
    const result = decodeFrame(encodeFrame(sent.frame));
    assert.equal(result.error, null, result.error?.message);
    assert.deepEqual(result.frames, [frame]);
  }
  const random = { ...data, payload: crypto.getRandomValues(new Uint8Array(4096)) };
  const sent = compressedFrame(random, 'brotli');
  assert.equal(sent.frame, random, 'incompressible: the frame itself');
  assert.equal(sent.sentBytes, sent.payloadBytes);
});

test('a compressed frame is refused by name when its codec, inner type, length or bytes do not check out', () => {
  const data = samples.find((frame) => frame.type === 'data') as DataFrame;
  const inner = dataPayloadOf({ ...data, payload: new Uint8Array(8192).fill(3), blockCount: 2 });
  const squeezed = new Uint8Array(brotliCompressSync(inner));
  const ok = decodeFrame(
    withPayload('compressed', compressedPayload(1, frameTypeCodes.data, inner.length, squeezed)),
  );
  assert.equal(ok.error, null, ok.error?.message);
  const refusals: [string, Uint8Array, RegExp][] = [
    ['unknown codec', compressedPayload(9, frameTypeCodes.data, inner.length, squeezed), /unknown codec 9/],
    [
      'inner frame not block data',
      compressedPayload(1, frameTypeCodes.stored, inner.length, squeezed),
      /inner frame type 6, not data or data-batch/,
    ],
    ['declared 0', compressedPayload(1, frameTypeCodes.data, 0, squeezed), /0 bytes declared, 1 to/],
    [
      'declared beyond compressedInnerBytesMax',
      compressedPayload(1, frameTypeCodes.data, limits.compressedInnerBytesMax + 1, squeezed),
      new RegExp(`bytes declared, 1 to ${limits.compressedInnerBytesMax}`),
    ],
    [
      'bytes after the end of the stream',
      compressedPayload(1, frameTypeCodes.data, inner.length, new Uint8Array([...squeezed, 1, 2, 3])),
      /3 bytes after the end of the brotli stream/,
    ],
    // A bomb: more bytes than declared are never produced.
    [
      'expands past its declared length',
      compressedPayload(1, frameTypeCodes.data, 100, squeezed),
      /expand past the 100 bytes declared/,
    ],
    [
      'short of its declared length',
      compressedPayload(1, frameTypeCodes.data, inner.length + 1, squeezed),
      /decompressed to 8220 bytes, the frame declares 8221/,
    ],
    [
      'not brotli at all',
      compressedPayload(1, frameTypeCodes.data, inner.length, new Uint8Array(64).fill(0xff)),
      /are not a whole brotli stream/,
    ],
  ];
  for (const [what, payload, message] of refusals) {
    const result = decodeFrame(withPayload('compressed', payload));
    assert.equal(result.error?.code, 'frame-bad-field', what);
    assert.match(result.error?.message ?? '', message, what);
  }
  // What decompresses must still be a whole DATA payload.
  const cut = new Uint8Array(brotliCompressSync(inner.subarray(0, 20)));
  const broken = decodeFrame(withPayload('compressed', compressedPayload(1, frameTypeCodes.data, 20, cut)));
  assert.ok(broken.error instanceof ProtocolError, 'a truncated inner payload is refused');
});

test('a decoder that takes no compressed frames refuses one from its header, before any byte of it is decompressed', () => {
  const data = samples.find((frame) => frame.type === 'data') as DataFrame;
  const sent = compressedFrame({ ...data, payload: new Uint8Array(65536).fill(1) }, 'brotli').frame;
  const header = encodeFrame(sent).subarray(0, frameHeaderBytes);
  const result = new FrameDecoder().push(header);
  assert.equal(result.error?.code, 'unexpected-frame');
  assert.match(result.error?.message ?? '', /takes no compressed frames/);
});

test('a read of many small frames that expand far is handed out a budget per push; the rest waits, nothing is lost', () => {
  const data = samples.find((frame) => frame.type === 'data') as DataFrame;
  // 1 MiB of zeros compresses to a few hundred bytes: a read of 40 of them would expand to 40 MiB at once.
  const zeros = { ...data, blockCount: 256, payload: new Uint8Array(256 * 4096) };
  const one = encodeFrame(compressedFrame(zeros, 'brotli').frame);
  assert.ok(one.length < 300, `${one.length} bytes on the wire`);
  const decoder = new FrameDecoder({ acceptCompressed: true });
  const first = decoder.push(new Uint8Array(Buffer.concat(Array(40).fill(one))));
  assert.equal(first.error, null);
  const perPush = Math.floor(expandedBytesPerPushMax / (zeros.payload.length + 32));
  assert.equal(first.frames.length, perPush, 'what one budget holds');
  assert.equal(first.more, true, 'the rest is still buffered, whole');
  let frames = first.frames.length;
  for (let result = first; result.more; ) {
    result = decoder.push(new Uint8Array(0));
    assert.ok(result.frames.length <= perPush);
    frames += result.frames.length;
  }
  assert.equal(frames, 40, 'every frame is handed out in the end');
  assert.equal(decoder.pendingBytes(), 0);
});
