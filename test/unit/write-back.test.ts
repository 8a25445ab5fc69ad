// Proves the primary's write-back: durable writes reach the volume files, a block written twice
// in one batch lands with its newest bytes (folded), a batch of distinct blocks lands as its
// writes came (their bytes not copied), and until a batch lands reads find its data.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import type { Extent } from '../../src/core/types.ts';
import { WriteBack } from '../../src/node/primary/write-back.ts';
import type { VolumeFile } from '../../src/storage/volume-file.ts';
import { blockBytes, dataExtent } from './fixtures.ts';

/** A volume that records each write and lands it only when told. */
class HeldVolume {
  readonly blocks = new Map<number, number>();
  readonly written: Extent[] = [];
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

test('a batch of distinct blocks lands as its writes came: same bytes, no copy, no merge', async () => {
  const volume = new HeldVolume();
  const writeBack = writeBackOver(volume);
  const extents = [dataExtent(0, 10, 2, 1), dataExtent(0, 3, 1, 2), dataExtent(0, 12, 1, 3)];
  for (const [index, extent] of extents.entries()) writeBack.onJournaled(index + 1, extent);
  writeBack.onDurable(3);
  await new Promise((resolve) => setImmediate(resolve));
  assert.equal(writeBack.newestBlock(0, 11)?.[0], 1, 'read before the batch landed');
  await volume.landAll();
  await writeBack.landed();
  assert.deepEqual(volume.written, extents, 'each write as it came, the same objects');
  assert.ok(volume.written.every((extent, index) => extent.data === extents[index]?.data));
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
