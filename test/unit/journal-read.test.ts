// Proves reading records back by position, the ground the secondary's bounded memory stands on:
// every append resolves with the position where its frame lies; readRecord there gives the record
// back across segment rollovers; a replay that reports positions gives the same ones and keeps no
// records; and a read of damaged bytes (a flipped byte, a file cut short, a position naming another
// frame) fails with journal damage naming the file and the offset, never with zeroes or other data.
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, rmSync, truncateSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import { StorageError } from '../../src/core/errors.ts';
import type { SecondaryRecord } from '../../src/core/records.ts';
import { nodeFileSystem } from '../../src/io/node-file-system.ts';
import { segmentName } from '../../src/storage/journal-replay.ts';
import { journalFrameHeaderBytes, secondaryRecordCodec } from '../../src/storage/record-codec.ts';
import { type JournalPosition, SegmentJournal } from '../../src/storage/segment-journal.ts';
import { dataExtent } from './fixtures.ts';

function open(directory: string, onReplayed?: (record: SecondaryRecord, position: JournalPosition) => void) {
  return SegmentJournal.open<SecondaryRecord>({
    fs: nodeFileSystem,
    directory,
    segmentBytesMax: 16 * 1024,
    codec: secondaryRecordCodec,
    checkpoint: () => [{ kind: 'applied', cycle: 0, consistent: true }],
    ...(onReplayed ? { onReplayed } : {}),
  });
}

function packet(index: number): SecondaryRecord {
  return { kind: 'packet', cycle: 1, packetIndex: index, extent: dataExtent(0, index * 3, 3, index + 1) };
}

/** A journal of 40 packets of 3 blocks each (several segments); their positions as append gave them. */
async function journalOfPackets(directory: string): Promise<JournalPosition[]> {
  const { journal } = open(directory);
  const positions = await Promise.all(
    Array.from({ length: 40 }, (_, index) => journal.append(packet(index))),
  );
  await journal.close();
  return positions;
}

async function refusal(read: Promise<unknown>): Promise<StorageError> {
  const error = await read.then(
    () => null,
    (caught: unknown) => caught,
  );
  assert.ok(error instanceof StorageError, `a StorageError, got ${String(error)}`);
  assert.equal(error.code, 'journal-corrupt');
  return error;
}

test('records read back at the positions their appends and a positional replay give', async () => {
  const directory = mkdtempSync(join(tmpdir(), 'cyclerep-journal-read-'));
  try {
    const positions = await journalOfPackets(directory);
    assert.ok(new Set(positions.map((position) => position.segment)).size >= 3, 'the packets span segments');
    const replayed: { record: SecondaryRecord; position: JournalPosition }[] = [];
    const { journal, records } = open(directory, (record, position) => replayed.push({ record, position }));
    assert.equal(records.length, 0, 'a positional replay keeps no records');
    const packets = replayed.filter(({ record }) => record.kind === 'packet');
    assert.deepEqual(
      packets.map(({ position }) => position),
      positions,
      'replay reports the positions append gave',
    );
    for (const [index, position] of positions.entries())
      assert.deepEqual(await journal.readRecord(position), packet(index));
    await journal.close();
  } finally {
    rmSync(directory, { recursive: true, force: true });
  }
});

test('a damaged record, a file cut short and a stale position are refused with path and offset', async () => {
  const directory = mkdtempSync(join(tmpdir(), 'cyclerep-journal-read-'));
  try {
    const positions = await journalOfPackets(directory);
    const { journal } = open(directory);
    const victim = positions[5] as JournalPosition;
    const path = join(directory, segmentName(victim.segment));

    const bytes = readFileSync(path);
    const flipped = victim.offset + journalFrameHeaderBytes + 40;
    bytes[flipped] = (bytes[flipped] as number) ^ 0x10;
    writeFileSync(path, bytes);
    const damaged = await refusal(journal.readRecord(victim));
    assert.match(damaged.message, new RegExp(`${path} at offset ${victim.offset}: CRC32C mismatch`));

    const other = positions[6] as JournalPosition;
    const stale = await refusal(journal.readRecord({ ...other, sequence: other.sequence + 1 }));
    assert.match(
      stale.message,
      new RegExp(`${path} at offset ${other.offset}: .*sequence ${other.sequence}`),
    );

    truncateSync(path, victim.offset + journalFrameHeaderBytes + 10);
    const short = await refusal(journal.readRecord(victim));
    assert.match(
      short.message,
      new RegExp(`${path} at offset ${victim.offset + journalFrameHeaderBytes + 10}: file ends`),
    );
    journal.abandon();
  } finally {
    rmSync(directory, { recursive: true, force: true });
  }
});

test('records read together come back each at its index, and damage in the middle of a merged read names its record', async () => {
  const directory = mkdtempSync(join(tmpdir(), 'cyclerep-journal-read-'));
  try {
    const positions = await journalOfPackets(directory);
    const { journal } = open(directory);
    // Every other packet, in an order that is not the file's, across segments.
    const wanted = positions
      .map((_, index) => index)
      .filter((index) => index % 2 === 0)
      .reverse();
    const got = new Map<number, SecondaryRecord>();
    await journal.readRecords(
      wanted.map((index) => positions[index] as JournalPosition),
      (at, record) => got.set(wanted[at] as number, record),
    );
    assert.equal(got.size, wanted.length);
    for (const [index, record] of got) assert.deepEqual(record, packet(index));

    const victim = positions[8] as JournalPosition;
    const path = join(directory, segmentName(victim.segment));
    const bytes = readFileSync(path);
    const flipped = victim.offset + journalFrameHeaderBytes + 20;
    bytes[flipped] = (bytes[flipped] as number) ^ 0x01;
    writeFileSync(path, bytes);
    const neighbours = [6, 7, 8, 9, 10]
      .map((index) => positions[index] as JournalPosition)
      .filter((position) => position.segment === victim.segment);
    const damaged = await refusal(journal.readRecords(neighbours, () => {}));
    assert.match(damaged.message, new RegExp(`${path} at offset ${victim.offset}: CRC32C mismatch`));
    journal.abandon();
  } finally {
    rmSync(directory, { recursive: true, force: true });
  }
});
