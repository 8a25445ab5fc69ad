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
import { type DataFrame, decodeFrame, encodeFrame, type Frame } from '../../src/protocol/frames.ts';

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
  const socket = new MemorySocket();
  const connections = new PrimaryLinks(
    [{ name: 'dr1', address: 'memory' }],
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
  return socket.written.flatMap((bytes) => decodeFrame(bytes).frames);
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
