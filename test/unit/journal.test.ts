// Proves the journal on disk: records round-trip through their byte layout; decoding stops at the
// first damaged frame wherever a crash cut the file; replay's rule table (docs/storage.md, "Journal
// validation"): a torn tail past the durable watermark is cut, a bad frame some later frame vouches
// for, damage in an older segment, a missing segment, a missing or damaged journal.state, a foreign
// segment or an old format is refused with path and offset and nothing changed; segments roll over,
// replay in order, and go once their cycles are done; many syncs share few fdatasyncs.
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
import { type FileSystem, piecesAfter } from '../../src/io/file-system.ts';
import { nodeFileSystem } from '../../src/io/node-file-system.ts';
import { segmentHeaderBytes } from '../../src/storage/journal-replay.ts';
import {
  decodeRecords,
  encodeRecord,
  primaryRecordCodec,
  secondaryRecordCodec,
} from '../../src/storage/record-codec.ts';
import {
  gatherPieceBytesMin,
  gatherPieces,
  SegmentJournal,
  writeBatchBytesMax,
} from '../../src/storage/segment-journal.ts';
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
  { kind: 'stored', cycle: 9, coversFrom: 6, consistent: false },
  { kind: 'discard', stored: 9 },
  { kind: 'applied', cycle: 9, consistent: true },
  { kind: 'applied', cycle: 10, consistent: false },
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
    fs: nodeFileSystem,
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

/** Reads every file of a directory: a refused open must leave them all as they were. */
function snapshot(directory: string): Map<string, Buffer> {
  return new Map(readdirSync(directory).map((name) => [name, readFileSync(join(directory, name))]));
}

function flipByte(path: string, offset: number): void {
  const bytes = readFileSync(path);
  bytes[offset] = (bytes[offset] as number) ^ 0x40;
  writeFileSync(path, bytes);
}

function segmentPaths(directory: string): string[] {
  return readdirSync(directory)
    .filter((name) => name.endsWith('.seg'))
    .sort()
    .map((name) => join(directory, name));
}

/** Opening refuses with journal damage naming `path` and the offset, and changes no file. */
function assertRefused(directory: string, path: string, offset: number | null, reason: RegExp): void {
  const before = snapshot(directory);
  assert.throws(
    () => openPrimary(directory),
    (error: unknown) => {
      assert.ok(error instanceof StorageError, String(error));
      assert.equal(error.code, 'journal-corrupt');
      assert.ok(error.message.includes(path), `${error.message} names ${path}`);
      if (offset !== null) assert.ok(error.message.includes(`at offset ${offset}:`), error.message);
      assert.match(error.message, reason);
      return true;
    },
  );
  assert.deepEqual(snapshot(directory), before, 'the refused open changed nothing on disk');
}

const record = (index: number): PrimaryRecord => ({
  kind: 'write',
  cycle: 1,
  extent: dataExtent(0, index, 1, index),
});

/**
 * A journal as a crash leaves it: `synced` records appended and synced, then `unsynced` more only
 * written (in the kernel's hands), and no close. Returns where the last synced record's frame ends.
 */
async function crashedJournal(directory: string, synced: number, unsynced: number): Promise<number> {
  const { journal } = openPrimary(directory);
  for (let i = 0; i < synced; i++) await journal.append(record(i));
  await journal.sync();
  for (let i = synced; i < synced + unsynced; i++) await journal.append(record(i));
  const [path] = segmentPaths(directory) as [string];
  // After a sync with nothing else waiting, a durable frame follows: wait until it is written.
  const deadline = Date.now() + 10_000;
  const frames = (): number[] =>
    decodeRecords(primaryRecordCodec, readFileSync(path).subarray(segmentHeaderBytes)).ends;
  const checkpointFrames = 2;
  while (frames().length < checkpointFrames + synced + 1 + unsynced) {
    assert.ok(Date.now() < deadline, 'the durable frame is written');
    await new Promise((resolve) => setTimeout(resolve, 10));
  }
  journal.abandon();
  return segmentHeaderBytes + (frames()[checkpointFrames + synced - 1] as number);
}

test('a torn tail after a crash is cut at the first bad frame; every synced record survives', async () => {
  const directory = tempDir();
  try {
    await crashedJournal(directory, 3, 2);
    const [path] = segmentPaths(directory) as [string];
    const size = statSync(path).size;
    truncateSync(path, size - 10);
    const reopened = openPrimary(directory);
    assert.deepEqual(writes(reopened.records), [0, 1, 2, 3].map(record));
    assert.equal(reopened.report.cut?.path, path);
    assert.equal(reopened.report.cut?.reason, 'body cut short');
    assert.equal(statSync(path).size, reopened.report.cut?.offset, 'the file was cut there');
    await reopened.journal.close();
  } finally {
    rmSync(directory, { recursive: true, force: true });
  }
});

test('garbage past the durable watermark is a torn tail, even with valid frames after it', async () => {
  const directory = tempDir();
  try {
    const syncedEnd = await crashedJournal(directory, 3, 4);
    const [path] = segmentPaths(directory) as [string];
    // Pages persisted out of order: a frame after the last sync is bad, those after it are whole.
    flipByte(path, syncedEnd + 40);
    const reopened = openPrimary(directory);
    assert.ok(writes(reopened.records).length >= 3, 'the synced records survive');
    assert.deepEqual(writes(reopened.records).slice(0, 3), [0, 1, 2].map(record));
    assert.equal(reopened.report.cut?.path, path);
    await reopened.journal.close();
    const appended = Buffer.concat([readFileSync(path), Buffer.alloc(300, 0x5a)]);
    writeFileSync(path, appended);
    const again = openPrimary(directory);
    assert.equal(again.report.cut?.bytesDropped, 300, 'garbage that no frame vouches for is cut');
    await again.journal.close();
  } finally {
    rmSync(directory, { recursive: true, force: true });
  }
});

test('a flipped byte in a synced frame after a clean close is damage, refused with path and offset', async () => {
  const directory = tempDir();
  try {
    const { journal } = openPrimary(directory);
    for (let i = 0; i < 4; i++) await journal.append(record(i));
    await journal.close();
    const [path] = segmentPaths(directory) as [string];
    const frame = decodeRecords(primaryRecordCodec, readFileSync(path).subarray(segmentHeaderBytes));
    // The third write's frame, well before the close frame.
    const offset = segmentHeaderBytes + (frame.ends[3] as number);
    flipByte(path, offset + 30);
    assertRefused(
      directory,
      path,
      offset,
      /CRC32C mismatch in frame \d+, which the valid frame at offset \d+ says had been made durable/,
    );
  } finally {
    rmSync(directory, { recursive: true, force: true });
  }
});

test('a flipped byte in the last synced frame after a crash is damage: the durable frame vouches for it', async () => {
  const directory = tempDir();
  try {
    const syncedEnd = await crashedJournal(directory, 3, 0);
    const [path] = segmentPaths(directory) as [string];
    flipByte(path, syncedEnd - 5);
    assertRefused(directory, path, null, /had been made durable/);
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
    const [oldest] = segmentPaths(directory) as [string];
    flipByte(oldest, statSync(oldest).size - 10);
    assertRefused(directory, oldest, null, /CRC32C mismatch, and later segments follow/);
  } finally {
    rmSync(directory, { recursive: true, force: true });
  }
});

/** Three runs, each leaving one closed segment. */
async function threeRuns(directory: string): Promise<string[]> {
  for (let run = 0; run < 3; run++) {
    const { journal } = openPrimary(directory);
    await journal.append(record(run));
    await journal.close();
  }
  const paths = segmentPaths(directory);
  assert.equal(paths.length, 3);
  return paths;
}

test('a missing middle, oldest or newest segment is refused, naming the missing file', async () => {
  for (const [missing, reason] of [
    [1, /segments 1 and 3 exist/],
    [0, /says segments from 1 on are kept, the oldest present is 2/],
    [2, /says segment 3 was created, the newest present is 2/],
  ] as const) {
    const directory = tempDir();
    try {
      const paths = await threeRuns(directory);
      rmSync(paths[missing] as string);
      assertRefused(directory, paths[missing] as string, 0, reason);
    } finally {
      rmSync(directory, { recursive: true, force: true });
    }
  }
});

test('journal.state missing or damaged, a segment from elsewhere, an old format: all refused', async () => {
  const directory = tempDir();
  try {
    const paths = await threeRuns(directory);
    const statePath = join(directory, 'journal.state');
    const state = readFileSync(statePath);
    rmSync(statePath);
    assertRefused(directory, statePath, 0, /missing, yet segments 1..3 exist/);
    writeFileSync(statePath, state);
    flipByte(statePath, 14);
    assertRefused(directory, statePath, 0, /journal state CRC32C mismatch/);
    writeFileSync(statePath, state);
    // Segment 2 replaced by segment 3's bytes: the header names another segment.
    const second = readFileSync(paths[1] as string);
    writeFileSync(paths[1] as string, readFileSync(paths[2] as string));
    assertRefused(directory, paths[1] as string, 0, /the header names segment 3/);
    writeFileSync(paths[1] as string, second);
    // A segment of format 1 (no header).
    const third = readFileSync(paths[2] as string);
    writeFileSync(paths[2] as string, third.subarray(segmentHeaderBytes));
    assertRefused(directory, paths[2] as string, 0, /no segment header of journal format 2/);
    // A header of another format version.
    const otherVersion = Buffer.from(third);
    otherVersion.writeUInt16BE(3, 8);
    writeFileSync(paths[2] as string, otherVersion);
    assertRefused(
      directory,
      paths[2] as string,
      0,
      /journal format version 3; this build reads version 2 only/,
    );
    writeFileSync(paths[2] as string, third);
    openPrimary(directory).journal.close();
  } finally {
    rmSync(directory, { recursive: true, force: true });
  }
});

test("the secondary's segment in the primary's journal is refused", async () => {
  const directory = tempDir();
  try {
    const { journal } = SegmentJournal.open<SecondaryRecord>({
      fs: nodeFileSystem,
      directory,
      segmentBytesMax: 1 << 20,
      codec: secondaryRecordCodec,
      checkpoint: () => [],
    });
    await journal.append(secondaryRecords[1] as SecondaryRecord);
    await journal.close();
    assertRefused(directory, join(directory, 'journal.state'), 0, /a journal of another role/);
  } finally {
    rmSync(directory, { recursive: true, force: true });
  }
});

test('a newest segment whose header never became durable is removed; nothing was in it', async () => {
  const directory = tempDir();
  try {
    await threeRuns(directory);
    const torn = join(directory, '0000000000000004.seg');
    writeFileSync(torn, Buffer.alloc(12));
    const reopened = openPrimary(directory);
    assert.equal(reopened.report.cut?.path, torn);
    assert.equal(reopened.report.cut?.removeFile, true);
    assert.deepEqual(writes(reopened.records), [0, 1, 2].map(record));
    await reopened.journal.close();
  } finally {
    rmSync(directory, { recursive: true, force: true });
  }
});

test('a first segment whose creation a crash cut short before journal.state existed is removed', async () => {
  const directory = tempDir();
  try {
    const { journal } = openPrimary(directory);
    await journal.append(record(0));
    await journal.close();
    const [path] = segmentPaths(directory) as [string];
    // The header alone, durable, and no journal.state yet: the state of a crash inside creation.
    writeFileSync(path, readFileSync(path).subarray(0, segmentHeaderBytes));
    rmSync(join(directory, 'journal.state'));
    const reopened = openPrimary(directory);
    assert.equal(reopened.report.cut?.removeFile, true);
    assert.deepEqual(reopened.records, []);
    await reopened.journal.close();
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

test('a closed journal refuses appends and deletes nothing: nothing reaches the files after the close', async () => {
  // A stopping node's late release (a session ending after the stop) once deleted segments and
  // rewrote journal.state under the journal a role change had just put in its place.
  const directory = tempDir();
  try {
    const state = { closed: 0, collected: 0 };
    const journal = await sixClosedCycles(directory, state);
    await journal.append({ kind: 'collect', upTo: 4 });
    await journal.close();
    const files = readdirSync(directory).sort();
    const journalState = readFileSync(join(directory, 'journal.state'));
    assert.equal(await journal.deleteUpTo(4), 0);
    await assert.rejects(journal.append({ kind: 'collect', upTo: 5 }), (error: unknown) => {
      assert.ok(error instanceof StorageError, String(error));
      assert.match(error.message, /closed/);
      return true;
    });
    assert.deepEqual(readdirSync(directory).sort(), files);
    assert.deepEqual(readFileSync(join(directory, 'journal.state')), journalState);
  } finally {
    rmSync(directory, { recursive: true, force: true });
  }
});

test('syncs issued together share fdatasyncs (group commit)', async () => {
  const directory = tempDir();
  try {
    const { journal } = openPrimary(directory);
    const appends: Promise<unknown>[] = [];
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

test('appends queued faster than the disk takes them are written in batches of at most writeBatchBytesMax', async () => {
  const directory = tempDir();
  try {
    // A segment far larger than a batch: before, one write() took everything queued that fitted in
    // the segment, and encoding it held the event loop for as long.
    const { journal } = openPrimary(directory, 64 << 20);
    const recordBytes = 256 * 1024;
    const records = (4 * writeBatchBytesMax) / recordBytes;
    const appends: Promise<unknown>[] = [];
    for (let i = 0; i < records; i++) {
      const extent = { volume: 0, block: i * 64, blockCount: 64, data: new Uint8Array(recordBytes).fill(i) };
      appends.push(journal.append({ kind: 'write', cycle: 1, extent }));
    }
    await Promise.all(appends);
    assert.ok(journal.writeCalls >= 4, `${journal.writeCalls} writes for ${records * recordBytes} bytes`);
    await journal.close();
    const reopened = openPrimary(directory, 64 << 20);
    const written = reopened.records.filter((record) => record.kind === 'write');
    assert.equal(written.length, records, 'every record replays, in order');
    written.forEach((record, index) => {
      assert.ok(record.kind === 'write' && record.extent.data?.[0] === (index & 0xff));
    });
    await reopened.journal.close();
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
      () => readSiteFile(nodeFileSystem, directory),
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
    assert.throws(() => readSiteFile(nodeFileSystem, directory), /shape: malformed; refusing to guess/);
    writeFileSync(
      path,
      JSON.stringify({ role: 'primary', config: { role: 'secondary', dataDir: directory } }),
    );
    assert.throws(() => readSiteFile(nodeFileSystem, directory), /config: missing or of another role/);
    writeFileSync(
      path,
      JSON.stringify({ role: 'secondary', config: { role: 'secondary', dataDir: directory }, shape: null }),
    );
    assert.equal(readSiteFile(nodeFileSystem, directory)?.role, 'secondary');
  } finally {
    rmSync(directory, { recursive: true, force: true });
  }
});

test("a failed write of the journal's own frame is reported at once, not at the next append", async () => {
  const directory = tempDir();
  try {
    // The durable frame written after a sync fails with ENOSPC: no append waits for it, so only
    // the failure listener can tell the owner that the journal is dead.
    let armed = false;
    let failWrites = false;
    const diskFull = () =>
      Object.assign(new Error('ENOSPC: no space left on device, write'), { code: 'ENOSPC' });
    const fs: FileSystem = {
      ...nodeFileSystem,
      write: (fd, data, offset, length, position) =>
        failWrites ? Promise.reject(diskFull()) : nodeFileSystem.write(fd, data, offset, length, position),
      writev: (fd, pieces, position) =>
        failWrites ? Promise.reject(diskFull()) : nodeFileSystem.writev(fd, pieces, position),
      writeSync: (fd, data, offset, length, position) => {
        if (failWrites) throw diskFull();
        return nodeFileSystem.writeSync(fd, data, offset, length, position);
      },
      fdatasync: async (fd) => {
        await nodeFileSystem.fdatasync(fd);
        failWrites = armed;
      },
    };
    const { journal } = SegmentJournal.open<PrimaryRecord>({
      fs,
      directory,
      segmentBytesMax: 64 * 1024,
      codec: primaryRecordCodec,
      checkpoint: () => [{ kind: 'switch', closed: 0 }],
    });
    const reported = new Promise<StorageError>((resolve) => journal.onFailure(resolve));
    await journal.append({ kind: 'write', cycle: 1, extent: dataExtent(0, 0, 1, 7) });
    armed = true;
    await journal.sync();
    const failure = await reported;
    assert.ok(failure instanceof StorageError);
    assert.match(failure.message, /\.seg: write failed: ENOSPC/);
    await assert.rejects(journal.append({ kind: 'switch', closed: 1 }), /write failed: ENOSPC/);
    journal.abandon();
  } finally {
    rmSync(directory, { recursive: true, force: true });
  }
});

test("a batch goes out as one gathered write: large block data from the client's own buffer, small pieces joined", () => {
  const large = new Uint8Array(gatherPieceBytesMin).fill(1);
  const small = [new Uint8Array(25), new Uint8Array(12), new Uint8Array(4096)];
  const gathered = gatherPieces([...small, large, new Uint8Array(0), new Uint8Array(25), large]);
  assert.equal(gathered.length, 4, 'a run of small pieces, the large one, one small one, the large one');
  assert.equal(gathered[0]?.length, 25 + 12 + 4096);
  assert.equal(gathered[1], large, 'the large piece itself, not a copy');
  assert.equal(gathered[2]?.length, 25);
  assert.equal(gathered[3], large);
  // Thousands of small records (zero runs) make one piece, not one iovec each.
  assert.equal(gatherPieces(Array.from({ length: 3000 }, () => new Uint8Array(40))).length, 1);
  const pieces = [new Uint8Array([1, 2, 3]), new Uint8Array([4, 5]), new Uint8Array([6])];
  assert.deepEqual(
    piecesAfter(pieces, 0).map((piece) => [...piece]),
    [[1, 2, 3], [4, 5], [6]],
  );
  assert.deepEqual(
    piecesAfter(pieces, 2).map((piece) => [...piece]),
    [[3], [4, 5], [6]],
  );
  assert.deepEqual(
    piecesAfter(pieces, 3).map((piece) => [...piece]),
    [[4, 5], [6]],
  );
  assert.deepEqual(
    piecesAfter(pieces, 5).map((piece) => [...piece]),
    [[6]],
  );
  assert.deepEqual(piecesAfter(pieces, 6), []);
});

test('the journal writes a large record from its block data where it lies, and a gathered write cut short is finished', async () => {
  const directory = tempDir();
  try {
    const seen: Uint8Array[][] = [];
    // A file system whose gathered writes take at most 1,000 bytes each (as a full pipe or a
    // signal may leave them): the journal must go on from where each stopped.
    const fs: FileSystem = {
      ...nodeFileSystem,
      writev: (fd, pieces, position) => {
        seen.push([...pieces]);
        const firstThousand = piecesAfter(pieces, 0);
        let left = 1000;
        const taken: Uint8Array[] = [];
        for (const piece of firstThousand) {
          if (left === 0) break;
          taken.push(piece.subarray(0, left));
          left -= Math.min(left, piece.length);
        }
        return nodeFileSystem.writev(fd, taken, position);
      },
    };
    const open = () =>
      SegmentJournal.open<PrimaryRecord>({
        fs,
        directory,
        segmentBytesMax: 1 << 20,
        codec: primaryRecordCodec,
        checkpoint: () => [{ kind: 'switch', closed: 0 }],
      });
    const { journal } = open();
    const big = dataExtent(0, 0, 64, 0x5a); // 64 blocks of 512 bytes: 32 KiB
    const records: PrimaryRecord[] = [
      { kind: 'write', cycle: 1, extent: big },
      { kind: 'write', cycle: 1, extent: dataExtent(1, 3, 2, 0x11) },
    ];
    await Promise.all(records.map((record) => journal.append(record)));
    assert.ok(
      seen.some((pieces) => pieces.some((piece) => piece.buffer === big.data?.buffer)),
      "the 32 KiB block data went to the file from the client's buffer",
    );
    assert.ok(seen.length > 32, `the cut-short writes were finished (${seen.length} calls)`);
    await journal.close();
    const reopened = open();
    assert.deepEqual(reopened.records.slice(1), records);
    assert.equal(reopened.report.cut, null);
    await reopened.journal.close();
  } finally {
    rmSync(directory, { recursive: true, force: true });
  }
});
