// Proves `rejoin --save-discarded` (src/node/discarded-save.ts): the blocks of the writes a rejoin
// undoes are saved as the site shows them, in the documented layout (a header line, a JSON
// manifest line, the runs' bytes); a file that exists already is never overwritten; a save that
// fails half-way leaves no file that could pass for the whole record.
import assert from 'node:assert/strict';
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import { nodeFileSystem } from '../../src/io/node-file-system.ts';
import { type DiscardedManifest, discardedFileHeader, saveDiscarded } from '../../src/node/discarded-save.ts';
import type { VolumeRecord } from '../../src/storage/site-file.ts';

const blockSize = 512;
const volumes: VolumeRecord[] = [
  { id: 0, name: 'boot', sizeBytes: 64 * blockSize, inode: '1' },
  { id: 1, name: 'data', sizeBytes: 4096 * blockSize, inode: '2' },
];
const facts = { group: 'g', site: 'abc', afterCycle: 41, supersededBy: 'feed', blockSize };

/** An image whose every byte says where it is: volume index and byte offset. */
function imageByte(index: number, offset: number): number {
  return (index * 131 + offset * 7 + (offset >> 9)) & 0xff;
}

const image = {
  reads: 0,
  failAt: Number.POSITIVE_INFINITY,
  async read(index: number, offset: number, length: number): Promise<Uint8Array> {
    if (++this.reads >= this.failAt) throw new Error('EIO: the disk went away');
    return Uint8Array.from({ length }, (_, i) => imageByte(index, offset + i));
  },
};

function parse(bytes: Buffer): { header: string; manifest: DiscardedManifest; data: Buffer } {
  const first = bytes.indexOf(10);
  const second = bytes.indexOf(10, first + 1);
  return {
    header: bytes.subarray(0, first).toString(),
    manifest: JSON.parse(bytes.subarray(first + 1, second).toString()) as DiscardedManifest,
    data: bytes.subarray(second + 1),
  };
}

test('the runs are saved as the site shows them, each where the manifest says', async () => {
  const directory = mkdtempSync(join(tmpdir(), 'cyclerep-discarded-'));
  try {
    const path = join(directory, 'undone.bin');
    // The second run is larger than one copy step (1 MiB), so it is read and written in parts.
    const runs = [
      { volume: 1, block: 10, blockCount: 3 },
      { volume: 0, block: 0, blockCount: 1 },
      { volume: 1, block: 100, blockCount: 3000 },
    ];
    const written = await saveDiscarded(nodeFileSystem, path, image, volumes, runs, facts);
    const { header, manifest, data } = parse(readFileSync(path));
    assert.equal(header, discardedFileHeader);
    assert.deepEqual(manifest, written);
    assert.equal(manifest.afterCycle, 41);
    assert.equal(manifest.bytes, (3 + 1 + 3000) * blockSize);
    assert.equal(data.length, manifest.bytes);
    for (const [i, run] of manifest.runs.entries()) {
      const source = runs[i] as (typeof runs)[number];
      assert.equal(run.volume, volumes[source.volume]?.name);
      assert.equal(run.offset, source.block * blockSize);
      assert.equal(run.length, source.blockCount * blockSize);
      for (const probe of [0, run.length - 1, Math.floor(run.length / 2)])
        assert.equal(
          data[run.at + probe],
          imageByte(source.volume, run.offset + probe),
          `${run.volume}+${probe}`,
        );
    }
  } finally {
    rmSync(directory, { recursive: true, force: true });
  }
});

test('a file that exists already is refused and left as it was', async () => {
  const directory = mkdtempSync(join(tmpdir(), 'cyclerep-discarded-'));
  try {
    const path = join(directory, 'undone.bin');
    writeFileSync(path, 'evidence of something else');
    await assert.rejects(
      saveDiscarded(nodeFileSystem, path, image, volumes, [{ volume: 0, block: 0, blockCount: 1 }], facts),
      /undone\.bin: cannot create it .*must not exist yet/,
    );
    assert.equal(readFileSync(path, 'utf8'), 'evidence of something else');
  } finally {
    rmSync(directory, { recursive: true, force: true });
  }
});

test('a save that fails half-way says why and leaves no file behind', async () => {
  const directory = mkdtempSync(join(tmpdir(), 'cyclerep-discarded-'));
  try {
    const path = join(directory, 'undone.bin');
    image.reads = 0;
    image.failAt = 2;
    await assert.rejects(
      saveDiscarded(nodeFileSystem, path, image, volumes, [{ volume: 1, block: 0, blockCount: 4096 }], facts),
      /undone\.bin: saving the discarded writes failed: EIO: the disk went away/,
    );
    assert.equal(existsSync(path), false);
  } finally {
    image.failAt = Number.POSITIVE_INFINITY;
    rmSync(directory, { recursive: true, force: true });
  }
});
