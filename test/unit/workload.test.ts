// Proves the self-describing workload's checker: it accepts every real cut of a history of
// dependent writes and rejects an image missing an older write, a dependency, or with a torn block.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { checkCut, layoutRegions, readStamp, stampBlock } from '../../src/workload/blocks.ts';

const blockBytes = 512;

/** Plays a history of writes (source, dependency) onto an image, returning the image after each. */
function history(
  steps: { source: number; dependsOn: number | null }[],
  regionsCount = 2,
  blocksPerSource = 3,
) {
  const regions = layoutRegions(regionsCount, [16], blocksPerSource);
  const image = [new Uint8Array(16 * blockBytes)];
  const counters = regions.map(() => -1);
  const snapshots: Uint8Array[][] = [image.map((volume) => volume.slice())];
  for (const step of steps) {
    const region = regions[step.source]!;
    const counter = ++counters[step.source]!;
    const dependency =
      step.dependsOn === null ? null : { source: step.dependsOn, counter: counters[step.dependsOn]! };
    const block = region.firstBlock + (counter % region.blocks);
    image[0]!.set(stampBlock({ source: step.source, counter, dependency }, blockBytes), block * blockBytes);
    snapshots.push(image.map((volume) => volume.slice()));
  }
  return { regions, snapshots };
}

test('a stamped block reads back; zeroes read as never written; a flipped byte reads as damaged', () => {
  const block = stampBlock({ source: 3, counter: 77, dependency: { source: 1, counter: 5 } }, blockBytes);
  assert.deepEqual(readStamp(block), { source: 3, counter: 77, dependency: { source: 1, counter: 5 } });
  assert.equal(readStamp(new Uint8Array(blockBytes)), null);
  block[300] = (block[300] as number) ^ 1;
  assert.equal(readStamp(block), 'damaged');
});

test('a block read from a Buffer (as from a file) checks out, and the Buffer is left alone', () => {
  const file = Buffer.alloc(3 * blockBytes);
  file.set(stampBlock({ source: 1, counter: 4, dependency: null }, blockBytes), blockBytes);
  const before = Buffer.from(file);
  assert.deepEqual(readStamp(file.subarray(blockBytes, 2 * blockBytes)), {
    source: 1,
    counter: 4,
    dependency: null,
  });
  assert.deepEqual(file, before);
});

test('every prefix of a history of dependent writes is a consistent cut', () => {
  const steps = Array.from({ length: 14 }, (_, i) => ({
    source: i % 2,
    dependsOn: i > 0 ? (i + 1) % 2 : null,
  }));
  const { regions, snapshots } = history(steps);
  for (const [index, snapshot] of snapshots.entries()) {
    const check = checkCut(snapshot, regions, blockBytes);
    assert.ok(check.consistent, `prefix ${index}: ${check.problems.join('; ')}`);
  }
});

test('an image that lost an older write of a source is not a cut', () => {
  const { regions, snapshots } = history([
    { source: 0, dependsOn: null },
    { source: 0, dependsOn: null },
  ]);
  const image = snapshots.at(-1)!.map((volume) => volume.slice());
  image[0]!.fill(0, 0, blockBytes);
  const check = checkCut(image, regions, blockBytes);
  assert.equal(check.consistent, false);
  assert.match(check.problems.join(), /holds counter null, a cut at counter 1 needs 0/);
});

test('an image holding a write without the write it depends on is not a cut', () => {
  const { regions, snapshots } = history([
    { source: 0, dependsOn: null },
    { source: 1, dependsOn: 0 },
  ]);
  const image = snapshots.at(-1)!.map((volume) => volume.slice());
  image[0]!.fill(0, 0, blockBytes);
  const check = checkCut(image, regions, blockBytes);
  assert.match(check.problems.join(), /depends on source 0 counter 0, which the image lacks/);
});

test('a torn block is reported as damaged', () => {
  const { regions, snapshots } = history([{ source: 0, dependsOn: null }]);
  const image = snapshots.at(-1)!.map((volume) => volume.slice());
  image[0]!.fill(9, 100, 200);
  assert.match(checkCut(image, regions, blockBytes).problems.join(), /damaged or mixed block/);
});
