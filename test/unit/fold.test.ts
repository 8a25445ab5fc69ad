// Proves write folding: the newest write to a block wins, zero runs carry no payload, merging
// keeps the newer fold's blocks, and (as a property) applying a fold's extents to an image gives
// the same image as applying every write in order.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import fc from 'fast-check';
import { FoldIndex } from '../../src/core/fold.ts';
import type { Extent } from '../../src/core/types.ts';

const blockBytes = 512;

function dataExtent(volume: number, block: number, blockCount: number, fill: number): Extent {
  return { volume, block, blockCount, data: new Uint8Array(blockCount * blockBytes).fill(fill) };
}

test('the newest write to a block wins inside a fold', () => {
  const fold = new FoldIndex(blockBytes);
  fold.add(dataExtent(0, 10, 2, 1));
  fold.add(dataExtent(0, 11, 1, 2));
  assert.equal(fold.get(0, 10)?.[0], 1);
  assert.equal(fold.get(0, 11)?.[0], 2);
  assert.equal(fold.blockCount, 2);
  assert.equal(fold.payloadBytes, 2 * blockBytes);
});

test('a zero run replaces data and carries no payload', () => {
  const fold = new FoldIndex(blockBytes);
  fold.add(dataExtent(0, 0, 4, 9));
  fold.add({ volume: 0, block: 1, blockCount: 2, data: null });
  assert.equal(fold.get(0, 1), null);
  assert.equal(fold.payloadBytes, 2 * blockBytes);
  assert.deepEqual(
    fold.extents(1 << 20).map((extent) => [extent.block, extent.blockCount, extent.data === null]),
    [
      [0, 1, false],
      [1, 2, true],
      [3, 1, false],
    ],
  );
});

test('merge keeps the newer fold where both hold a block', () => {
  const older = new FoldIndex(blockBytes);
  older.add(dataExtent(1, 5, 3, 1));
  const newer = new FoldIndex(blockBytes);
  newer.add(dataExtent(1, 6, 1, 2));
  older.merge(newer);
  assert.deepEqual(
    [5, 6, 7].map((block) => older.get(1, block)?.[0]),
    [1, 2, 1],
  );
});

test('extents split data runs at the byte bound and never cross volumes or gaps', () => {
  const fold = new FoldIndex(blockBytes);
  fold.add(dataExtent(0, 0, 5, 1));
  fold.add(dataExtent(0, 6, 1, 1));
  fold.add(dataExtent(1, 0, 1, 1));
  const extents = fold.extents(2 * blockBytes);
  assert.deepEqual(
    extents.map((extent) => [extent.volume, extent.block, extent.blockCount]),
    [
      [0, 0, 2],
      [0, 2, 2],
      [0, 4, 1],
      [0, 6, 1],
      [1, 0, 1],
    ],
  );
});

const writeArbitrary = fc.record({
  volume: fc.nat(1),
  block: fc.nat(30),
  blockCount: fc.integer({ min: 1, max: 6 }),
  fill: fc.integer({ min: -1, max: 255 }),
});

test('property: applying the folded extents equals applying every write in order', () => {
  fc.assert(
    fc.property(
      fc.array(writeArbitrary, { maxLength: 40 }),
      fc.integer({ min: 1, max: 8 }),
      (writes, maxBlocks) => {
        const sequential = [new Uint8Array(40 * blockBytes), new Uint8Array(40 * blockBytes)];
        const folded = [new Uint8Array(40 * blockBytes), new Uint8Array(40 * blockBytes)];
        const fold = new FoldIndex(blockBytes);
        for (const write of writes) {
          const extent: Extent =
            write.fill < 0
              ? { volume: write.volume, block: write.block, blockCount: write.blockCount, data: null }
              : dataExtent(write.volume, write.block, write.blockCount, write.fill);
          apply(sequential, extent);
          fold.add(extent);
        }
        for (const extent of fold.extents(maxBlocks * blockBytes)) apply(folded, extent);
        assert.deepEqual(folded, sequential);
      },
    ),
    { numRuns: 500 },
  );
});

function apply(image: Uint8Array[], extent: Extent): void {
  const volume = image[extent.volume] as Uint8Array;
  const start = extent.block * blockBytes;
  if (extent.data) volume.set(extent.data, start);
  else volume.fill(0, start, start + extent.blockCount * blockBytes);
}

test('a run whose blocks lie back to back in one buffer is a view of it, not a copy; any other run is copied', () => {
  const fold = new FoldIndex(blockBytes);
  const packet = dataExtent(0, 0, 4, 7);
  fold.add(packet);
  fold.add(dataExtent(0, 4, 2, 8));
  const [whole] = fold.extents(4 * blockBytes);
  assert.equal(whole?.blockCount, 4);
  assert.equal(whole?.data?.buffer, packet.data?.buffer, 'one packet applied costs no copy');
  // Blocks 0..5 span two buffers: their run is copied, with every byte in place.
  const [mixed] = fold.extents(6 * blockBytes);
  assert.equal(mixed?.blockCount, 6);
  assert.notEqual(mixed?.data?.buffer, packet.data?.buffer);
  assert.deepEqual(
    [...(mixed?.data ?? [])],
    [...new Uint8Array(4 * blockBytes).fill(7), ...new Uint8Array(2 * blockBytes).fill(8)],
  );
  // A newer write replaces a block, never changes the bytes a view shares.
  fold.add(dataExtent(0, 1, 1, 9));
  assert.equal(whole?.data?.[blockBytes], 7);
});
