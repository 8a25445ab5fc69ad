// Proves the journal on disk: records round-trip through their byte layout; replay stops at the
// first damaged record wherever a crash cut the file, keeping every record before it; a torn tail
// is cut, damage in an older segment is refused; segments roll over, replay in order, and go once
// their cycles are done; many syncs issued together share few fdatasyncs.
import assert from 'node:assert/strict';
import {
  mkdirSync,
  mkdtempSync,
  readdirSync,
  readFileSync,
  rmSync,
  statSync,
  truncateSync,
  writeFileSync,
} from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import { StorageError } from '../../src/core/errors.ts';
import type { PrimaryRecord, SecondaryRecord } from '../../src/core/records.ts';
import {
  decodeRecords,
  encodeRecord,
  primaryRecordCodec,
  secondaryRecordCodec,
} from '../../src/storage/record-codec.ts';
import { SegmentJournal } from '../../src/storage/segment-journal.ts';
import { readSiteFile } from '../../src/storage/site-file.ts';
import { dataExtent } from './fixtures.ts';

const primaryRecords: PrimaryRecord[] = [
  { kind: 'write', cycle: 7, extent: dataExtent(1, 100, 2, 0xab) },
  { kind: 'write', cycle: 7, extent: { volume: 0, block: 3, blockCount: 4096, data: null } },
  { kind: 'switch', closed: 7 },
  { kind: 'collect', upTo: 5 },
];

const secondaryRecords: SecondaryRecord[] = [
  { kind: 'packet', cycle: 9, packetIndex: 4, extent: dataExtent(0, 1, 1, 3) },
  { kind: 'stored', cycle: 9, coversFrom: 6 },
  { kind: 'discard', stored: 9 },
  { kind: 'applied', cycle: 9 },
];

function tempDir(): string {
  return mkdtempSync(join(tmpdir(), 'cyclerep-journal-'));
}

test('every record kind round-trips through its byte layout', () => {
  const primary = Buffer.concat(primaryRecords.map((record) => encodeRecord(primaryRecordCodec, record)));
  assert.deepEqual(decodeRecords(primaryRecordCodec, primary).records, primaryRecords);
  const secondary = Buffer.concat(
    secondaryRecords.map((record) => encodeRecord(secondaryRecordCodec, record)),
  );
  assert.deepEqual(decodeRecords(secondaryRecordCodec, secondary).records, secondaryRecords);
});

test('a stream cut at any byte yields exactly the records before the cut', () => {
  const encoded = primaryRecords.map((record) => encodeRecord(primaryRecordCodec, record));
  const stream = new Uint8Array(Buffer.concat(encoded));
  const starts = encoded.map((_, index) =>
    encoded.slice(0, index).reduce((sum, bytes) => sum + bytes.length, 0),
  );
  for (let cut = 0; cut <= stream.length; cut++) {
    const result = decodeRecords(primaryRecordCodec, stream.subarray(0, cut));
    const whole = starts.filter(
      (start, index) => start + (encoded[index] as Uint8Array).length <= cut,
    ).length;
    assert.equal(result.records.length, whole, `cut at ${cut}`);
    if (cut < stream.length && cut !== starts[whole]) assert.equal(result.damage?.offset, starts[whole]);
  }
});

test('a flipped byte in a record stops replay at that record, keeping every one before it', () => {
  const encoded = primaryRecords.map((record) => encodeRecord(primaryRecordCodec, record));
  const stream = new Uint8Array(Buffer.concat(encoded));
  const second = (encoded[0] as Uint8Array).length;
  for (let at = second; at < second + (encoded[1] as Uint8Array).length; at++) {
    const damaged = stream.slice();
    damaged[at] = (damaged[at] as number) ^ 0x10;
    const result = decodeRecords(primaryRecordCodec, damaged);
    assert.deepEqual(result.records, primaryRecords.slice(0, 1), `flip at ${at}`);
    assert.equal(result.damage?.offset, second);
  }
});

function openPrimary(directory: string, segmentBytesMax = 1 << 20, state = { closed: 0, collected: 0 }) {
  return SegmentJournal.open<PrimaryRecord>({
    directory,
    segmentBytesMax,
    codec: primaryRecordCodec,
    checkpoint: () => [
      { kind: 'switch', closed: state.closed },
      { kind: 'collect', upTo: state.collected },
    ],
  });
}

function writes(records: PrimaryRecord[]): PrimaryRecord[] {
  return records.filter((record) => record.kind === 'write');
}

test('appended records come back after close and reopen, after the checkpoint', async () => {
  const directory = tempDir();
  try {
    const { journal, records } = openPrimary(directory);
    assert.deepEqual(records, []);
    for (const record of primaryRecords) await journal.append(record);
    await journal.close();
    const reopened = openPrimary(directory);
    assert.deepEqual(reopened.records.slice(0, 2), [
      { kind: 'switch', closed: 0 },
      { kind: 'collect', upTo: 0 },
    ]);
    assert.deepEqual(reopened.records.slice(2), primaryRecords);
    assert.equal(reopened.report.cut, null);
    await reopened.journal.close();
  } finally {
    rmSync(directory, { recursive: true, force: true });
  }
});

test('segments roll over at segmentBytesMax and replay in order', async () => {
  const directory = tempDir();
  try {
    const { journal } = openPrimary(directory, 4096);
    const appended: PrimaryRecord[] = [];
    for (let i = 0; i < 40; i++) {
      const record: PrimaryRecord = {
        kind: 'write',
        cycle: 1 + Math.floor(i / 10),
        extent: dataExtent(0, i, 1, i),
      };
      appended.push(record);
      await journal.append(record);
    }
    await journal.close();
    assert.ok(readdirSync(directory).length >= 5, 'several segments');
    for (const name of readdirSync(directory)) assert.ok(statSync(join(directory, name)).size <= 4096);
    const reopened = openPrimary(directory, 4096);
    assert.deepEqual(writes(reopened.records), appended);
    await reopened.journal.close();
  } finally {
    rmSync(directory, { recursive: true, force: true });
  }
});

test('a torn tail is cut at the first bad record and every earlier record survives', async () => {
  const directory = tempDir();
  try {
    const { journal } = openPrimary(directory);
    for (const record of primaryRecords.slice(0, 2)) await journal.append(record);
    await journal.close();
    const [segment] = readdirSync(directory);
    const path = join(directory, segment as string);
    const size = statSync(path).size;
    truncateSync(path, size - 10);
    const reopened = openPrimary(directory);
    assert.deepEqual(writes(reopened.records), primaryRecords.slice(0, 1));
    assert.equal(reopened.report.cut?.path, path);
    assert.equal(reopened.report.cut?.reason, 'body cut short');
    assert.equal(statSync(path).size, reopened.report.cut?.offset, 'the file was cut there');
    await reopened.journal.close();
  } finally {
    rmSync(directory, { recursive: true, force: true });
  }
});

test('damage in a segment that later segments follow is refused with its path and offset', async () => {
  const directory = tempDir();
  try {
    const first = openPrimary(directory);
    await first.journal.append(primaryRecords[0] as PrimaryRecord);
    await first.journal.close();
    const second = openPrimary(directory);
    await second.journal.append(primaryRecords[2] as PrimaryRecord);
    await second.journal.close();
    const [oldest] = readdirSync(directory).sort();
    const path = join(directory, oldest as string);
    const bytes = readFileSync(path);
    bytes[bytes.length - 10] = (bytes[bytes.length - 10] as number) ^ 1;
    writeFileSync(path, bytes);
    assert.throws(
      () => openPrimary(directory),
      (error: unknown) =>
        error instanceof StorageError &&
        error.code === 'journal-corrupt' &&
        error.message.includes(path) &&
        /CRC32C mismatch at offset \d+/.test(error.message),
    );
  } finally {
    rmSync(directory, { recursive: true, force: true });
  }
});

/** A journal of 4 KiB segments holding six closed cycles of four writes each. */
async function sixClosedCycles(
  directory: string,
  state: { closed: number; collected: number },
): Promise<SegmentJournal<PrimaryRecord>> {
  const { journal } = openPrimary(directory, 4096, state);
  for (let cycle = 1; cycle <= 6; cycle++) {
    for (let i = 0; i < 4; i++)
      await journal.append({ kind: 'write', cycle, extent: dataExtent(0, i, 1, cycle) });
    await journal.append({ kind: 'switch', closed: cycle });
    state.closed = cycle;
  }
  return journal;
}

test('segments whose cycles are all collected are deleted; checkpoints keep the state', async () => {
  const directory = tempDir();
  try {
    const state = { closed: 0, collected: 0 };
    const journal = await sixClosedCycles(directory, state);
    state.collected = 4;
    await journal.append({ kind: 'collect', upTo: 4 });
    const before = journal.segmentCount;
    const deleted = await journal.deleteUpTo(4);
    assert.ok(deleted > 0 && journal.segmentCount === before - deleted);
    await journal.close();
    const reopened = openPrimary(directory, 4096, state);
    const cycles = new Set(
      writes(reopened.records).map((record) => (record.kind === 'write' ? record.cycle : 0)),
    );
    assert.ok(cycles.has(5) && cycles.has(6), 'uncollected cycles survive');
    const closed = Math.max(
      ...reopened.records.map((record) => (record.kind === 'switch' ? record.closed : 0)),
    );
    assert.equal(closed, 6);
    await reopened.journal.close();
  } finally {
    rmSync(directory, { recursive: true, force: true });
  }
});

test('syncs issued together share fdatasyncs (group commit)', async () => {
  const directory = tempDir();
  try {
    const { journal } = openPrimary(directory);
    const appends: Promise<void>[] = [];
    const syncs: Promise<void>[] = [];
    for (let i = 0; i < 200; i++) {
      appends.push(journal.append({ kind: 'write', cycle: 1, extent: dataExtent(0, i % 64, 1, i) }));
      syncs.push(journal.sync());
    }
    await Promise.all([...appends, ...syncs]);
    assert.ok(journal.syncCalls <= 3, `${journal.syncCalls} fdatasyncs for 200 syncs`);
    assert.ok(journal.writeCalls <= 3, `${journal.writeCalls} writes for 200 appends`);
    await journal.close();
  } finally {
    rmSync(directory, { recursive: true, force: true });
  }
});

test('a segment that cannot be deleted stops deletion there: no newer segment goes before it', async () => {
  const directory = tempDir();
  try {
    const state = { closed: 0, collected: 0 };
    const journal = await sixClosedCycles(directory, state);
    const names = readdirSync(directory).sort();
    assert.ok(names.length >= 3, `several segments (${names.length})`);
    // The oldest segment turns into a non-empty directory: unlink fails on it.
    const oldest = join(directory, names[0] as string);
    rmSync(oldest);
    mkdirSync(oldest);
    writeFileSync(join(oldest, 'keep'), 'x');
    await assert.rejects(journal.deleteUpTo(6));
    assert.deepEqual(readdirSync(directory).sort(), names, 'nothing newer was deleted');
    rmSync(oldest, { recursive: true });
  } finally {
    rmSync(directory, { recursive: true, force: true });
  }
});

test('a damaged site.json is refused with its path and what is wrong, never used', () => {
  const directory = tempDir();
  try {
    const path = join(directory, 'site.json');
    writeFileSync(path, '{"role": "primary", "config": {');
    assert.throws(
      () => readSiteFile(directory),
      (error: unknown) => error instanceof StorageError && error.message.startsWith(path),
    );
    writeFileSync(
      path,
      JSON.stringify({
        role: 'secondary',
        config: { role: 'secondary', dataDir: directory },
        shape: { group: 'g', blockBytes: -1, volumes: [] },
      }),
    );
    assert.throws(() => readSiteFile(directory), /shape: malformed; refusing to guess/);
    writeFileSync(
      path,
      JSON.stringify({ role: 'primary', config: { role: 'secondary', dataDir: directory } }),
    );
    assert.throws(() => readSiteFile(directory), /config: missing or of another role/);
    writeFileSync(
      path,
      JSON.stringify({ role: 'secondary', config: { role: 'secondary', dataDir: directory }, shape: null }),
    );
    assert.equal(readSiteFile(directory)?.role, 'secondary');
  } finally {
    rmSync(directory, { recursive: true, force: true });
  }
});
