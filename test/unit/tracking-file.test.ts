// The changed-block bitmap on disk (src/storage/tracking-file.ts) and in memory
// (src/core/changed-blocks.ts): it round-trips, damage is refused with the path, and a bitmap of
// another granularity is widened, never narrowed (a bit lost is a block lost).
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, test } from 'node:test';
import { ChangedBlocks } from '../../src/core/changed-blocks.ts';
import { StorageError } from '../../src/core/errors.ts';
import { nodeFileSystem } from '../../src/io/node-file-system.ts';
import {
  decodeTrackingState,
  dropTrackingState,
  encodeTrackingState,
  readTrackingStates,
  saveTrackingState,
  trackingFilePath,
} from '../../src/storage/tracking-file.ts';

const workspace = mkdtempSync(join(tmpdir(), 'cyclerep-tracking-'));
after(() => rmSync(workspace, { recursive: true, force: true }));

const volumeBlocks = [100, 17];

function sampleBitmap(): ChangedBlocks {
  const blocks = new ChangedBlocks(4, volumeBlocks);
  blocks.markBlocks(0, 5, 1);
  blocks.markBlocks(0, 96, 4);
  blocks.markBlocks(1, 16, 1);
  return blocks;
}

test('a saved bitmap reads back whole, and a dropped one is gone', async () => {
  const blocks = sampleBitmap();
  const state = { base: 7, through: 12, chunkBlocks: 4, bits: blocks.snapshot() };
  // The start makes the directory durable; saves at run time rely on it.
  readTrackingStates(nodeFileSystem, workspace, [], volumeBlocks);
  await saveTrackingState(nodeFileSystem, workspace, 'dr1', state);
  const read = readTrackingStates(nodeFileSystem, workspace, ['dr1', 'dr2'], volumeBlocks);
  assert.deepEqual(read.get('dr1'), state);
  assert.equal(read.has('dr2'), false);
  await dropTrackingState(nodeFileSystem, workspace, 'dr1');
  assert.equal(readTrackingStates(nodeFileSystem, workspace, ['dr1'], volumeBlocks).size, 0);
});

test('every damaged byte of a bitmap file is refused with its path, never read as fewer changed blocks', () => {
  const bytes = encodeTrackingState({ base: 1, through: 2, chunkBlocks: 4, bits: sampleBitmap().snapshot() });
  const path = join(workspace, 'damaged.bitmap');
  for (let offset = 0; offset < bytes.length; offset++) {
    const damaged = bytes.slice();
    damaged[offset] = (damaged[offset] as number) ^ 0x10;
    assert.throws(
      () => decodeTrackingState(path, damaged, volumeBlocks),
      (error: unknown) =>
        error instanceof StorageError &&
        error.code === 'tracking-file-corrupt' &&
        error.message.startsWith(path),
      `byte ${offset} flipped`,
    );
  }
  assert.throws(
    () => decodeTrackingState(path, bytes.subarray(0, bytes.length - 1), volumeBlocks),
    /tracking-file|CRC/,
  );
  assert.throws(() => decodeTrackingState(path, bytes, [100]), /1 volumes|2 volumes/);
});

test('a damaged file on disk stops the start: readTrackingStates throws naming the file', () => {
  const dataDir = join(workspace, 'site');
  readTrackingStates(nodeFileSystem, dataDir, [], volumeBlocks);
  writeFileSync(trackingFilePath(dataDir, 'dr1'), 'not a bitmap');
  assert.throws(
    () => readTrackingStates(nodeFileSystem, dataDir, ['dr1'], volumeBlocks),
    new RegExp(`${trackingFilePath(dataDir, 'dr1')}: not a cyclerep tracking bitmap`),
  );
});

test('a bitmap saved with another granularity marks every chunk that overlaps a saved one', () => {
  const state = { base: 0, through: 3, chunkBlocks: 4, bits: sampleBitmap().snapshot() };
  const finer = ChangedBlocks.fromState(state, 1, volumeBlocks);
  // Saved chunk 1 (blocks 4..7), chunk 24 (96..99), volume 1 chunk 4 (block 16, the last, short).
  const expected = [4, 5, 6, 7, 96, 97, 98, 99].map((block) => [0, block]).concat([[1, 16]]);
  const marked: number[][] = [];
  for (let run = finer.takeRun(1); run; run = finer.takeRun(1)) marked.push([run.volume, run.chunk]);
  assert.deepEqual(marked, expected);
  const coarser = ChangedBlocks.fromState(state, 64, volumeBlocks);
  assert.equal(coarser.chunkCount, 3, 'volume 0 chunks 0 and 1, volume 1 chunk 0');
});
