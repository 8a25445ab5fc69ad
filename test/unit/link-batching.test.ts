// The primary's link pump gathers DATA packets polled in a row into data-batch frames (protocol 5),
// and the receiving FramedSocket hands them on one by one, as if each had come alone. Driven with a
// frame source and sockets in memory: the bytes written are decoded back and compared.
import assert from 'node:assert/strict';
import { EventEmitter } from 'node:events';
import { test } from 'node:test';
import { limits } from '../../src/core/limits.ts';
import type { LinkSocket } from '../../src/io/network.ts';
import { nodeClock } from '../../src/io/node-clock.ts';
import { FramedSocket } from '../../src/net/framed-socket.ts';
import { PrimaryLinks } from '../../src/node/primary/link-connections.ts';
import { networkDialer } from '../../src/node/primary/link-dialer.ts';
import { createLogger } from '../../src/ops/logger.ts';
import {
  compressedFrame,
  type DataFrame,
  decodeFrame,
  encodeFrame,
  type Frame,
  frameTypeCodes,
} from '../../src/protocol/frames.ts';

/** A socket in memory that keeps what is written and never pushes back. */
class MemorySocket extends EventEmitter implements LinkSocket {
  readonly written: Uint8Array[] = [];
  readonly writableNeedDrain = false;
  write(bytes: Uint8Array): boolean {
    this.written.push(bytes);
    return true;
  }
  end(): void {}
  destroy(): void {}
  setNoDelay(): void {}
}

function dataPacket(packetIndex: number, bytes: number): DataFrame {
  return {
    type: 'data',
    cycle: 5,
    packetIndex,
    volume: 0,
    block: packetIndex * 64,
    blockCount: Math.max(1, bytes / 4096),
    zero: bytes === 0,
    payload: new Uint8Array(bytes).fill(packetIndex & 0xff),
  };
}

/** The frames the pump writes for `queued`, decoded from the socket's bytes. */
async function pumped(queued: Frame[]): Promise<Frame[]> {
  return (await pumpedOn(queued, 'off')).frames;
}

/** The same on a link with `compression`: the frames decoded, the wire's frame types, and the link's figures. */
async function pumpedOn(queued: Frame[], compression: 'off' | 'brotli') {
  const socket = new MemorySocket();
  const connections = new PrimaryLinks(
    [{ name: 'dr1', address: 'memory', compression }],
    networkDialer({
      dial: () => ({ socket, onReady: (ready) => ready() }),
      listen: () => Promise.reject(new Error('the primary does not listen')),
    }),
    { pollFrames: (_now: number, _id: number, max: number) => queued.splice(0, max) },
    nodeClock,
    createLogger({ site: 'test', format: 'json', write: () => {} }),
    {
      onConnected: () => {},
      onBytes: () => {},
      onFrame: () => {},
      onLost: () => {},
      onPumped: () => {},
    },
  );
  connections.connect('dr1', 1);
  connections.schedulePump();
  await new Promise((resolve) => setImmediate(resolve));
  await new Promise((resolve) => setImmediate(resolve));
  return {
    frames: socket.written.flatMap((bytes) => decodeFrame(bytes).frames),
    // The type byte of each frame's header (frames.ts: offset 4).
    wireTypes: socket.written.map((bytes) => bytes[4]),
    wireBytes: socket.written.reduce((sum, bytes) => sum + bytes.length, 0),
    figures: connections.compressionFigures('dr1'),
  };
}

test('on a link with compression, block-data frames go compressed when it pays and arrive as they were', async () => {
  const packets = [0, 1, 2].map((index) => dataPacket(index, 4096));
  const end: Frame = {
    type: 'end-of-cycle',
    cycle: 5,
    coversFrom: 5,
    packetCount: 4,
    digest: 1,
    consistent: true,
  };
  const random = dataPacket(3, 4096);
  crypto.getRandomValues(random.payload);
  const plain = await pumpedOn([...packets.map(copyOf), end, copyOf(random)], 'off');
  const squeezed = await pumpedOn([...packets.map(copyOf), end, copyOf(random)], 'brotli');
  assert.deepEqual(squeezed.frames, plain.frames, 'the receiver decodes the same frames');
  assert.deepEqual(squeezed.wireTypes, [
    frameTypeCodes.compressed,
    frameTypeCodes['end-of-cycle'],
    frameTypeCodes.data,
  ]);
  assert.deepEqual(plain.wireTypes, [
    frameTypeCodes['data-batch'],
    frameTypeCodes['end-of-cycle'],
    frameTypeCodes.data,
  ]);
  assert.ok(
    // Three blocks of one byte repeated shrink to almost nothing; the random block goes as it was.
    plain.wireBytes - squeezed.wireBytes > 2.9 * 4096,
    `${squeezed.wireBytes} bytes against ${plain.wireBytes}`,
  );
  const figures = squeezed.figures;
  assert.ok(figures, 'the link reports its compression');
  assert.equal(figures.codec, 'brotli');
  assert.ok(
    figures.payloadBytes > 4 * 4096 && figures.sentBytes < figures.payloadBytes / 2,
    JSON.stringify(figures),
  );
  assert.equal(plain.figures, null, 'a link without compression reports none');
});

function copyOf(frame: Frame): Frame {
  return frame.type === 'data' ? { ...frame, payload: new Uint8Array(frame.payload) } : frame;
}

test('DATA packets polled in a row leave in one data-batch frame; other frames keep their place', async () => {
  const packets = [0, 1, 2].map((index) => dataPacket(index, 4096));
  const end: Frame = {
    type: 'end-of-cycle',
    cycle: 5,
    coversFrom: 5,
    packetCount: 5,
    digest: 1,
    consistent: true,
  };
  const lone = dataPacket(3, 0);
  const frames = await pumped([...packets, end, lone]);
  assert.deepEqual(frames, [{ type: 'data-batch', packets }, end, lone]);
});

test('a batch closes once it holds packetBytesMax of data; a lone large packet goes as a DATA frame', async () => {
  const quarter = limits.packetBytesMax / 4;
  const packets = [0, 1, 2, 3, 4, 5].map((index) => dataPacket(index, quarter));
  const frames = await pumped([...packets, dataPacket(6, limits.packetBytesMax)]);
  assert.deepEqual(frames, [
    { type: 'data-batch', packets: packets.slice(0, 4) },
    { type: 'data-batch', packets: [...packets.slice(4), dataPacket(6, limits.packetBytesMax)] },
  ]);
  const alone = await pumped([dataPacket(7, limits.packetBytesMax)]);
  assert.deepEqual(alone, [dataPacket(7, limits.packetBytesMax)]);
});

test('a batch holds at most dataBatchPacketsMax packets', async () => {
  const packets = Array.from({ length: limits.dataBatchPacketsMax + 1 }, (_, index) => dataPacket(index, 0));
  const frames = await pumped([...packets]);
  assert.equal(frames.length, 2);
  assert.equal((frames[0] as { packets: DataFrame[] }).packets.length, limits.dataBatchPacketsMax);
  assert.deepEqual(frames[1], packets[limits.dataBatchPacketsMax]);
});

test("the receiver's FramedSocket hands a batch's packets on one by one, in order", () => {
  const socket = new MemorySocket();
  const received: Frame[] = [];
  new FramedSocket(socket, nodeClock, {
    onFrame: (frame) => received.push(frame),
    onProtocolError: (error) => assert.fail(error),
    onClose: () => {},
  });
  const packets = [0, 1, 2].map((index) => dataPacket(index, 4096));
  const heartbeat: Frame = { type: 'heartbeat', nonce: 3 };
  socket.emit('data', encodeFrame({ type: 'data-batch', packets }));
  socket.emit('data', encodeFrame(heartbeat));
  assert.deepEqual(received, [...packets, heartbeat]);
});

test('a FramedSocket taking compressed frames expands a budget per turn, hands on every frame in order, and none while held', async () => {
  const socket = new MemorySocket();
  const received: Frame[] = [];
  const framed = new FramedSocket(
    socket,
    nodeClock,
    {
      onFrame: (frame) => received.push(frame),
      onProtocolError: (error) => assert.fail(error),
      onClose: () => {},
    },
    { acceptCompressed: true },
  );
  // Each about 1 MiB of zeros in a few hundred bytes: 30 in one read would expand to 30 MiB at once.
  const packets = Array.from({ length: 30 }, (_, index) => ({
    ...dataPacket(index, 256 * 4096),
    payload: new Uint8Array(256 * 4096),
  }));
  const wire = packets.map((packet) => encodeFrame(compressedFrame(packet, 'brotli').frame));
  socket.emit('data', new Uint8Array(Buffer.concat(wire)));
  const perTurn = received.length;
  assert.ok(perTurn > 0 && perTurn < 30, `${perTurn} frames in the first turn`);
  framed.hold(true);
  await new Promise((resolve) => setImmediate(resolve));
  await new Promise((resolve) => setImmediate(resolve));
  assert.equal(received.length, perTurn, 'held: buffered frames wait');
  framed.hold(false);
  for (let turn = 0; turn < 30 && received.length < 30; turn++)
    await new Promise((resolve) => setImmediate(resolve));
  assert.deepEqual(
    received.map((frame) => (frame.type === 'data' ? frame.packetIndex : -1)),
    packets.map((packet) => packet.packetIndex),
  );
});

test('a FramedSocket that takes no compressed frames (the primary, from its secondaries) refuses one', () => {
  const socket = new MemorySocket();
  const errors: string[] = [];
  new FramedSocket(socket, nodeClock, {
    onFrame: () => assert.fail('no frame is handed on'),
    onProtocolError: (error) => errors.push(error.code),
    onClose: () => {},
  });
  const packet = { ...dataPacket(0, 65536), payload: new Uint8Array(65536) };
  socket.emit('data', encodeFrame(compressedFrame(packet, 'brotli').frame));
  assert.deepEqual(errors, ['unexpected-frame']);
});
