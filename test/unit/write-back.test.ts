// Proves the primary's write-back: durable writes reach the volume files, a block written twice
// in one batch lands with its newest bytes (folded), a batch of distinct blocks lands with its
// writes' own bytes (not copied; end-to-end ones in one gathered write), and until a batch lands
// reads find its data.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import type { Extent } from '../../src/core/types.ts';
import { adjacentRuns, WriteBack } from '../../src/node/primary/write-back.ts';
import type { VolumeFile } from '../../src/storage/volume-file.ts';
import { blockBytes, dataExtent } from './fixtures.ts';

/** A volume that records each write and lands it only when told. */
class HeldVolume {
  readonly blocks = new Map<number, number>();
  readonly written: Extent[] = [];
  /** Gathered writes: their first block and pieces. */
  readonly gathered: { block: number; pieces: readonly Uint8Array[] }[] = [];
  private held: (() => void)[] = [];

  writeExtent(extent: Extent): Promise<void> {
    this.written.push(extent);
    return new Promise((resolve) => {
      this.held.push(() => {
        for (let i = 0; i < extent.blockCount; i++)
          this.blocks.set(extent.block + i, extent.data ? (extent.data[i * blockBytes] as number) : 0);
        resolve();
      });
    });
  }

  writePieces(block: number, pieces: readonly Uint8Array[]): Promise<void> {
    this.gathered.push({ block, pieces });
    const data = Buffer.concat(pieces);
    return new Promise((resolve) => {
      this.held.push(() => {
        for (let i = 0; i < data.length / blockBytes; i++)
          this.blocks.set(block + i, data[i * blockBytes] as number);
        resolve();
      });
    });
  }

  /** Lands every write issued so far, and the ones they set off, until none is left. */
  async landAll(): Promise<void> {
    for (let rounds = 0; this.held.length > 0 || rounds < 3; rounds++) {
      for (const land of this.held.splice(0)) land();
      await new Promise((resolve) => setImmediate(resolve));
    }
  }
}

function writeBackOver(volume: HeldVolume): WriteBack {
  return new WriteBack(
    [volume as unknown as VolumeFile],
    blockBytes,
    (error) => assert.fail(`write-back failed: ${String(error)}`),
    () => {},
  );
}

test('a batch of distinct blocks lands with its writes own bytes, no copy: end-to-end ones in one gathered write', async () => {
  const volume = new HeldVolume();
  const writeBack = writeBackOver(volume);
  const extents = [dataExtent(0, 10, 2, 1), dataExtent(0, 3, 1, 2), dataExtent(0, 12, 1, 3)];
  for (const [index, extent] of extents.entries()) writeBack.onJournaled(index + 1, extent);
  writeBack.onDurable(3);
  await new Promise((resolve) => setImmediate(resolve));
  assert.equal(writeBack.newestBlock(0, 11)?.[0], 1, 'read before the batch landed');
  await volume.landAll();
  await writeBack.landed();
  assert.deepEqual(volume.written, [extents[1]], 'the write standing alone as it came');
  assert.equal(volume.written[0]?.data, extents[1]?.data, 'the same bytes');
  assert.equal(volume.gathered.length, 1, 'blocks 10-11 and 12 lie end to end: one gathered write');
  assert.equal(volume.gathered[0]?.block, 10);
  assert.deepEqual(volume.gathered[0]?.pieces, [extents[0]?.data, extents[2]?.data]);
  assert.ok(
    volume.gathered[0]?.pieces.every((piece, index) => piece === [extents[0], extents[2]][index]?.data),
  );
  assert.deepEqual(
    [...volume.blocks].sort((a, b) => a[0] - b[0]),
    [
      [3, 2],
      [10, 1],
      [11, 1],
      [12, 3],
    ],
  );
  assert.equal(writeBack.heldBytes, 0);
});

test('a block written twice in one batch lands once, with the newest bytes', async () => {
  const volume = new HeldVolume();
  const writeBack = writeBackOver(volume);
  writeBack.onJournaled(1, dataExtent(0, 4, 3, 1));
  writeBack.onJournaled(2, dataExtent(0, 5, 1, 9));
  writeBack.onDurable(2);
  await new Promise((resolve) => setImmediate(resolve));
  assert.equal(writeBack.newestBlock(0, 5)?.[0], 9, 'a read finds the newest bytes before landing');
  await volume.landAll();
  await writeBack.landed();
  assert.deepEqual(
    [...volume.blocks].sort((a, b) => a[0] - b[0]),
    [
      [4, 1],
      [5, 9],
      [6, 1],
    ],
  );
  const writtenBlocks = volume.written.reduce((sum, extent) => sum + extent.blockCount, 0);
  assert.equal(writtenBlocks, 3, 'each block written once');
});

test('runs join data extents end to end on one volume, up to a size; zero runs and gaps stand alone', () => {
  const a = dataExtent(0, 0, 2, 1);
  const b = dataExtent(0, 2, 2, 2);
  const zero: Extent = { volume: 0, block: 4, blockCount: 2, data: null };
  const c = dataExtent(0, 6, 2, 3);
  const gap = dataExtent(0, 9, 1, 4);
  const otherVolume = dataExtent(1, 10, 1, 5);
  const afterVolume0 = dataExtent(1, 11, 1, 6);
  const runs = adjacentRuns([gap, c, zero, b, afterVolume0, a, otherVolume], 1 << 20);
  assert.deepEqual(runs, [[a, b], [zero], [c], [gap], [otherVolume, afterVolume0]]);
  assert.deepEqual(
    adjacentRuns([a, b, c], 2 * blockBytes),
    [[a], [b], [c]],
    'at most bytesMax a run (c does not touch b anyway)',
  );
  assert.deepEqual(adjacentRuns([a, b], 4 * blockBytes), [[a, b]], 'exactly bytesMax joins');
});
