// Proves how JournalBlocks reads block data back from a real segment journal: the pieces of one
// read come back in order whatever records they interleave, and each record is read from its
// segment once per read, not once per piece. A fold that merges cycles interleaves a large write with
// later small overwrites inside it (pieces A, B, A, C, A...); reading the large record again for each
// of its pieces made one 1 MiB packet (or one run of the redo at start) read up to a thousand MiB.
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, test } from 'node:test';
import { FoldIndex } from '../../src/core/fold.ts';
import { extentInJournal, type PrimaryRecord } from '../../src/core/records.ts';
import type { FileSystem } from '../../src/io/file-system.ts';
import { nodeFileSystem } from '../../src/io/node-file-system.ts';
import { JournalBlocks } from '../../src/node/site/journal-blocks.ts';
import { encodeRecord, primaryRecordCodec } from '../../src/storage/record-codec.ts';
import { SegmentJournal } from '../../src/storage/segment-journal.ts';
import { blockBytes } from './fixtures.ts';

const directory = mkdtempSync(join(tmpdir(), 'cyclerep-journal-blocks-'));
after(() => rmSync(directory, { recursive: true, force: true }));

function writeOf(block: number, blockCount: number, fill: number): PrimaryRecord & { kind: 'write' } {
  const data = new Uint8Array(blockCount * blockBytes);
  for (let index = 0; index < blockCount; index++)
    data.fill(fill + index, index * blockBytes, (index + 1) * blockBytes);
  return { kind: 'write', cycle: 1, extent: { volume: 0, block, blockCount, data } };
}

test('a run interleaving a large record with small overwrites reads each record once, its bytes in block order', async () => {
  // Reads of the segment are counted, with their bytes.
  const segmentReaders = new Set<number>();
  let segmentReads = 0;
  let bytesRead = 0;
  const fs: FileSystem = {
    ...nodeFileSystem,
    open: async (path, flags, mode) => {
      const fd = await nodeFileSystem.open(path, flags, mode);
      if (path.endsWith('.seg') && flags === 'r') segmentReaders.add(fd);
      return fd;
    },
    read: (fd, buffer, offset, length, position) => {
      if (segmentReaders.has(fd)) {
        segmentReads++;
        bytesRead += length;
      }
      return nodeFileSystem.read(fd, buffer, offset, length, position);
    },
  };
  const { journal } = SegmentJournal.open<PrimaryRecord>({
    fs,
    directory,
    segmentBytesMax: 1024 * 1024,
    codec: primaryRecordCodec,
    checkpoint: () => [{ kind: 'switch', closed: 0 }],
  });
  const blocks = new JournalBlocks(
    journal,
    blockBytes,
    (record) => (record.kind === 'write' ? record : null),
    true,
  );
  // Append 1: blocks 0..63; appends 2..: every other block of it again.
  const records = [writeOf(0, 64, 0)];
  for (let block = 1; block < 64; block += 2) records.push(writeOf(block, 1, 100 + block));
  const fold = new FoldIndex(blockBytes);
  records.forEach((record, index) => {
    blocks.onAppended(index + 1, record, journal.append(record));
    fold.addJournaled(extentInJournal(record.extent), index + 1);
  });
  const [run] = fold.runs(1024 * 1024);
  assert.ok(run?.journaled && run.blockCount === 64, 'one run of the 64 blocks');
  const pieces = fold.journaledPieces(run);
  assert.equal(pieces.length, 64, 'the pieces alternate between the large record and the small ones');

  const data = await blocks.read(pieces);
  for (let block = 0; block < 64; block++) {
    const expected = block % 2 === 1 ? 100 + block : block;
    assert.equal(data[block * blockBytes], expected, `block ${block}`);
    assert.equal(data[(block + 1) * blockBytes - 1], expected, `block ${block}, last byte`);
  }
  // Each record read once: the bytes read are the frames', and lying together they took one read.
  const framesBytes = records.reduce(
    (sum, record) => sum + encodeRecord(primaryRecordCodec, record).length,
    0,
  );
  assert.equal(bytesRead, framesBytes, `${bytesRead} bytes read for ${framesBytes} bytes of frames`);
  assert.equal(segmentReads, 1, `the records lie together: one read, not ${segmentReads}`);
  await journal.close();
});
