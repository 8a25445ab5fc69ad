// Proves byte-granular NBD exports over block-granular volumes: any offset and length reads and
// writes like a plain byte array (property test against a model), the volume below only ever sees
// whole blocks, and concurrent read-modify-writes of one block from many connections lose nothing
// (each would be lost without the block-range lock: see the last test).
import assert from 'node:assert/strict';
import { test } from 'node:test';
import fc from 'fast-check';
import type { NbdExport } from '../../src/nbd/export.ts';
import { BlockRangeLock, byteGranular } from '../../src/nbd/unaligned.ts';

const blockBytes = 512;

/** A block-granular export in memory that refuses anything unaligned, with optional delays. */
function memoryExport(sizeBytes: number, delay: () => Promise<void> = () => Promise.resolve()) {
  const bytes = new Uint8Array(sizeBytes);
  const check = (offset: number, length: number) => {
    assert.equal(offset % blockBytes, 0, `offset ${offset} aligned`);
    assert.equal(length % blockBytes, 0, `length ${length} aligned`);
    assert.ok(offset + length <= sizeBytes);
  };
  const inner: NbdExport = {
    name: 'v',
    sizeBytes,
    blockBytes,
    readOnly: false,
    async read(offset, length) {
      check(offset, length);
      await delay();
      return bytes.slice(offset, offset + length);
    },
    async write(offset, data) {
      check(offset, data.length);
      await delay();
      bytes.set(data, offset);
    },
    async writeZeroes(offset, length) {
      check(offset, length);
      await delay();
      bytes.fill(0, offset, offset + length);
    },
    flush: () => Promise.resolve(),
  };
  return { inner, bytes };
}

const sizeBytes = 8 * blockBytes;
const operation = fc.oneof(
  fc.record({
    kind: fc.constant('write' as const),
    offset: fc.integer({ min: 0, max: sizeBytes - 1 }),
    length: fc.integer({ min: 1, max: 3 * blockBytes }),
    fill: fc.integer({ min: 1, max: 255 }),
  }),
  fc.record({
    kind: fc.constant('zero' as const),
    offset: fc.integer({ min: 0, max: sizeBytes - 1 }),
    length: fc.integer({ min: 1, max: 3 * blockBytes }),
    fill: fc.constant(0),
  }),
);

test('any sequence of byte-granular writes, zero runs and reads behaves like a byte array', async () => {
  await fc.assert(
    fc.asyncProperty(fc.array(operation, { maxLength: 30 }), async (operations) => {
      const { inner, bytes } = memoryExport(sizeBytes);
      const outer = byteGranular(inner);
      const model = new Uint8Array(sizeBytes);
      for (const op of operations) {
        const length = Math.min(op.length, sizeBytes - op.offset);
        if (op.kind === 'write') {
          const data = new Uint8Array(length).map((_, i) => (op.fill + i) % 256);
          await outer.write(op.offset, data, false);
          model.set(data, op.offset);
        } else {
          await outer.writeZeroes(op.offset, length, false);
          model.fill(0, op.offset, op.offset + length);
        }
        const read = await outer.read(op.offset, length);
        assert.deepEqual(read, model.subarray(op.offset, op.offset + length));
      }
      assert.deepEqual(bytes, model);
    }),
    { numRuns: 300 },
  );
});

test('a read of a few bytes inside one block returns exactly those bytes', async () => {
  const { inner, bytes } = memoryExport(sizeBytes);
  bytes.forEach((_, i) => {
    bytes[i] = i % 251;
  });
  const read = await byteGranular(inner).read(1000, 7);
  assert.deepEqual(
    [...read],
    [1000, 1001, 1002, 1003, 1004, 1005, 1006].map((i) => i % 251),
  );
});

async function concurrentPatches(outer: NbdExport): Promise<void> {
  // 16 connections each write their own 64 bytes of the same two blocks, at once.
  await Promise.all(
    Array.from({ length: 16 }, (_, writer) =>
      outer.write(200 + writer * 64, new Uint8Array(64).fill(writer + 1), false),
    ),
  );
}

test('concurrent read-modify-writes of the same blocks from many connections lose nothing', async () => {
  const jitter = () => new Promise<void>((resolve) => setTimeout(resolve, Math.random() * 3));
  const { inner, bytes } = memoryExport(sizeBytes, jitter);
  await concurrentPatches(byteGranular(inner));
  for (let writer = 0; writer < 16; writer++)
    assert.ok(
      bytes.subarray(200 + writer * 64, 264 + writer * 64).every((byte) => byte === writer + 1),
      `writer ${writer}'s bytes are all there`,
    );
});

test('without the lock the same concurrent writes lose updates (the lock is what keeps them)', async () => {
  const jitter = () => new Promise<void>((resolve) => setTimeout(resolve, Math.random() * 3));
  const { inner, bytes } = memoryExport(sizeBytes, jitter);
  const { acquire, tryAcquire } = BlockRangeLock.prototype;
  BlockRangeLock.prototype.acquire = () => Promise.resolve(() => {});
  BlockRangeLock.prototype.tryAcquire = () => () => {};
  try {
    await concurrentPatches(byteGranular(inner));
  } finally {
    BlockRangeLock.prototype.acquire = acquire;
    BlockRangeLock.prototype.tryAcquire = tryAcquire;
  }
  const lost = Array.from({ length: 16 }, (_, writer) => writer).filter(
    (writer) => !bytes.subarray(200 + writer * 64, 264 + writer * 64).every((byte) => byte === writer + 1),
  );
  assert.ok(lost.length > 0, 'some writer lost its bytes with no lock');
});

test('whole-block writes share the lock; a read-modify-write waits for them and they for it, in order', async () => {
  const lock = new BlockRangeLock();
  const events: string[] = [];
  const first = await lock.acquire(0, 3, 'shared');
  const second = await lock.acquire(2, 5, 'shared');
  assert.equal(lock.held, 2, 'shared holders do not wait on each other');
  const exclusive = lock.acquire(3, 3, 'exclusive').then((release) => {
    events.push('exclusive');
    return release;
  });
  const later = lock.acquire(3, 4, 'shared').then((release) => {
    events.push('later shared');
    return release;
  });
  const elsewhere = lock.acquire(10, 11, 'shared').then((release) => {
    events.push('elsewhere');
    return release;
  });
  await new Promise((resolve) => setImmediate(resolve));
  assert.deepEqual(events, ['elsewhere'], 'a disjoint range goes on; the overlapping ones wait');
  first();
  second();
  const releaseExclusive = await exclusive;
  await new Promise((resolve) => setImmediate(resolve));
  assert.deepEqual(events, ['elsewhere', 'exclusive'], 'the later shared waits behind the exclusive');
  releaseExclusive();
  (await later)();
  (await elsewhere)();
  assert.deepEqual(events, ['elsewhere', 'exclusive', 'later shared']);
  assert.equal(lock.held, 0);
});

test('a free range is taken in the same tick, so a write reaches the volume before a later request', () => {
  const { inner } = memoryExport(sizeBytes);
  const calls: string[] = [];
  const outer = byteGranular({
    ...inner,
    write: (offset, data, fua) => {
      calls.push(`write ${offset}`);
      return inner.write(offset, data, fua);
    },
  });
  void outer.write(0, new Uint8Array(blockBytes), false);
  calls.push('next request');
  assert.deepEqual(calls, ['write 0', 'next request']);
});
