// Attacks the primary whose journal index keeps references into the segments instead of block data
// (issue 12), with real sites (PrimaryNode, SecondaryNode, real files, TCP on 127.0.0.1):
// - a byte damaged in a journaled write the secondary has not received yet: the catch-up stops the
//   primary with journal damage naming the segment and offset, and the secondary never stores it;
// - the same damage met by a read from the front door (a block whose newest data is only in the
//   journal): the read fails with journal damage and the site stops, never answering other bytes;
// - a journal of several segments with checkpoint records, collected cycles and a torn tail, restarted
//   twice with writes in between: the secondary then catches up and converges byte for byte;
// - volumes slower than the journal: writes wait while the write-back holds its share of
//   memory.dataBytesMax (status memory.writeBackFull), none fails, the share is not overrun, and all
//   complete once the volumes go on.
import assert from 'node:assert/strict';
import { appendFileSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, test } from 'node:test';
import { StorageError } from '../../src/core/errors.ts';
import { nodeEnvironment, type SiteEnvironment } from '../../src/io/environment.ts';
import type { FileSystem } from '../../src/io/file-system.ts';
import { nodeFileSystem } from '../../src/io/node-file-system.ts';
import { PrimaryNode } from '../../src/node/primary-node.ts';
import { SecondaryNode } from '../../src/node/secondary-node.ts';
import { type PrimaryFileConfig, type SecondaryFileConfig, validateConfig } from '../../src/ops/config.ts';
import { createLogger } from '../../src/ops/logger.ts';
import { freePort } from '../integration/harness.ts';

const directory = mkdtempSync(join(tmpdir(), 'cyclerep-journal-refs-'));
after(() => rmSync(directory, { recursive: true, force: true }));
const quiet = createLogger({ site: 'test', format: 'json', write: () => {} });
const kib = 1024;
const mib = 1024 * kib;
const blockBytes = 4096;
const volumeBytes = 16 * mib;
const link = { heartbeatMs: 100, timeoutMs: 2000, reconnectMinMs: 50, reconnectMaxMs: 200 };

async function waitFor(condition: () => boolean, what: string, timeoutMs = 30_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!condition()) {
    assert.ok(Date.now() < deadline, `not reached within ${timeoutMs} ms: ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 10));
  }
}

function primaryConfig(name: string, port: number, extra: Record<string, unknown> = {}): PrimaryFileConfig {
  return {
    ...(validateConfig({
      group: 'refs',
      role: 'primary',
      dataDir: join(directory, name, 'primary'),
      volumes: [{ name: 'data', size: volumeBytes }],
      cycle: { intervalMinMs: 20, queuedMax: 64 },
      tracking: { enabled: false },
      link,
      secondaries: [{ name: 'dr1', address: `127.0.0.1:${port}` }],
      ...extra,
    }) as PrimaryFileConfig),
    nbd: null,
    http: null,
  } as unknown as PrimaryFileConfig;
}

function secondaryConfig(name: string, port: number): SecondaryFileConfig {
  return {
    ...(validateConfig({
      group: 'refs',
      role: 'secondary',
      name: 'dr1',
      dataDir: join(directory, name, 'dr1'),
      listen: `127.0.0.1:${port}`,
      link,
    }) as SecondaryFileConfig),
    nbd: null,
    http: null,
  } as unknown as SecondaryFileConfig;
}

/** A started primary and the failures it reported to its owner. */
async function startPrimary(
  config: PrimaryFileConfig,
  environment: SiteEnvironment = nodeEnvironment,
): Promise<{ primary: PrimaryNode; failures: Error[] }> {
  const failures: Error[] = [];
  const primary = await PrimaryNode.start(config, quiet, (error) => failures.push(error), { environment });
  return { primary, failures };
}

/** A block of bytes no other block of these tests holds: `tag` in every byte but a counter. */
function patternBlock(tag: number, index: number): Uint8Array {
  const data = new Uint8Array(blockBytes).fill(tag);
  new DataView(data.buffer).setUint32(0, index);
  return data;
}

/** The segment file holding `needle`, and the offset of its first byte there. */
function findInSegments(journalDirectory: string, needle: Uint8Array): { path: string; offset: number } {
  for (const name of readdirSync(journalDirectory).filter((entry) => entry.endsWith('.seg'))) {
    const path = join(journalDirectory, name);
    const offset = Buffer.from(readFileSync(path)).indexOf(Buffer.from(needle));
    if (offset >= 0) return { path, offset };
  }
  throw new Error('the bytes are in no segment');
}

/** Flips one byte of a file in place, as a bad sector would. */
function flipByte(path: string, offset: number): void {
  const bytes = readFileSync(path);
  bytes[offset] = (bytes[offset] as number) ^ 0x40;
  writeFileSync(path, bytes);
}

/** The primary with a cycle the (absent) secondary never received, one of its blocks damaged in the journal. */
async function primaryWithDamagedJournal(name: string, port: number) {
  const config = primaryConfig(name, port);
  const started = await startPrimary(config);
  const { primary } = started;
  for (let block = 0; block < 32; block++)
    await primary.write(0, block * blockBytes, patternBlock(0x5a, block));
  await primary.flush();
  await waitFor(() => primary.status().closed >= 1, 'the cycle closed');
  // The write-back landed: the volume holds the right bytes, only the journal's copy is damaged.
  await waitFor(() => primary.status().memory.writeBackBytes === 0, 'the write-back landed');
  const damaged = findInSegments(join(config.dataDir, 'journal'), patternBlock(0x5a, 7));
  flipByte(damaged.path, damaged.offset + 100);
  return { ...started, config, damaged };
}

function assertJournalDamage(error: unknown, path: string): void {
  assert.ok(error instanceof StorageError, `journal damage, got ${String(error)}`);
  assert.equal(error.code, 'journal-corrupt');
  assert.ok(error.message.includes(path), `names the segment: ${error.message}`);
  assert.match(error.message, /at offset \d+/);
}

test('a damaged byte in a journaled write not yet sent: the catch-up stops the primary with journal damage, nothing of it is stored', {
  timeout: 60_000,
}, async (t) => {
  const port = await freePort();
  const { primary, failures, damaged } = await primaryWithDamagedJournal('catch-up-damage', port);
  t.after(() => primary.stop().catch(() => {}));
  const secondary = await SecondaryNode.start(secondaryConfig('catch-up-damage', port), quiet, () => {});
  t.after(() => secondary.stop().catch(() => {}));
  await waitFor(() => failures.length > 0, 'the primary stopped on the damage');
  assertJournalDamage(failures[0], damaged.path);
  assert.match(primary.status().fault?.message ?? '', /journal damaged/);
  assert.equal(secondary.status().stored ?? 0, 0, 'the damaged cycle was never stored');
  const image = await secondary.read(0, 0, 32 * blockBytes).catch(() => null);
  if (image) {
    for (let block = 0; block < 32; block++) {
      const got = image.subarray(block * blockBytes, (block + 1) * blockBytes);
      assert.ok(
        got.every((byte) => byte === 0),
        `block ${block} shows nothing of the unsent cycle (no damaged or misplaced bytes)`,
      );
    }
  }
});

test('a front-door read of a block whose newest data is only in a damaged journal record fails with journal damage and stops the site', {
  timeout: 60_000,
}, async (t) => {
  const port = await freePort();
  const { primary, failures, damaged } = await primaryWithDamagedJournal('read-damage', port);
  t.after(() => primary.stop().catch(() => {}));
  // A read that covers the damaged block among healthy ones: refused as a whole.
  const error = await primary.read(0, 4 * blockBytes, 8 * blockBytes).then(
    () => assert.fail('the read of a damaged record answered bytes'),
    (caught: unknown) => caught,
  );
  assertJournalDamage(error, damaged.path);
  await waitFor(() => failures.length > 0, 'the site stopped on the damage', 5_000);
  assertJournalDamage(failures[0], damaged.path);
  assert.match(primary.status().fault?.message ?? '', /journal damaged/);
});

/** The volume as the sources wrote it, kept beside the sites to judge them. */
class Model {
  readonly image = new Uint8Array(volumeBytes);
  private counter = 0;

  /** Writes `blocks` blocks at `block` with bytes no earlier write used, through the primary. */
  write(primary: PrimaryNode, block: number, blocks: number): Promise<unknown> {
    const data = new Uint8Array(blocks * blockBytes);
    for (let index = 0; index < blocks; index++)
      data.set(patternBlock((++this.counter % 250) + 1, this.counter), index * blockBytes);
    this.image.set(data, block * blockBytes);
    return primary.write(0, block * blockBytes, data);
  }

  zero(primary: PrimaryNode, block: number, blocks: number): Promise<unknown> {
    this.image.fill(0, block * blockBytes, (block + blocks) * blockBytes);
    return primary.writeZeroes(0, block * blockBytes, blocks * blockBytes);
  }

  /**
   * One round of the workload: large writes over `blocks` blocks from `first`, then small
   * overwrites and zero runs inside them, so that the fold of the round interleaves records.
   */
  async round(primary: PrimaryNode, first: number, blocks: number): Promise<void> {
    for (let block = first; block < first + blocks; block += 64) await this.write(primary, block, 64);
    for (let block = first + 1; block < first + blocks; block += 5) await this.write(primary, block, 1);
    for (let block = first + 3; block < first + blocks; block += 97) await this.zero(primary, block, 2);
  }

  async assertShownBy(
    read: (offset: number, length: number) => Promise<Uint8Array>,
    who: string,
  ): Promise<void> {
    for (let offset = 0; offset < volumeBytes; offset += mib) {
      const got = Buffer.from(await read(offset, mib));
      const expected = Buffer.from(this.image.subarray(offset, offset + mib));
      assert.ok(got.equals(expected), `${who}: MiB ${offset / mib} differs`);
    }
  }
}

test('several segments, checkpoints, collected cycles and a torn tail, restarted twice: the secondary converges byte for byte', {
  timeout: 120_000,
}, async (t) => {
  const port = await freePort();
  const config = primaryConfig('restarts', port, {
    journal: { capacity: 256 * mib, segmentSize: 8 * mib },
  });
  const journalDirectory = join(config.dataDir, 'journal');
  const model = new Model();
  const totalBlocks = volumeBytes / blockBytes;

  // Streaming first: cycles are stored and collected, whole segments deleted.
  let { primary, failures } = await startPrimary(config);
  let secondary = await SecondaryNode.start(secondaryConfig('restarts', port), quiet, (error) =>
    failures.push(error),
  );
  for (let round = 0; round < 3; round++) await model.round(primary, 0, totalBlocks);
  await primary.flush();
  await waitFor(() => primary.status().secondaries[0]?.lagBytes === 0, 'dr1 stored the first rounds');
  await waitFor(() => primary.status().collected > 0, 'cycles were collected');
  await secondary.stop();

  // The secondary away: the journal holds several segments of rounds it has not seen.
  for (let round = 0; round < 3; round++)
    await model.round(primary, (round * 512) % totalBlocks, totalBlocks / 2);
  await primary.flush();
  await waitFor(() => primary.status().closed > primary.status().collected + 2, 'several cycles closed');
  await primary.stop();
  const segments = () =>
    readdirSync(journalDirectory)
      .filter((name) => name.endsWith('.seg'))
      .sort();
  assert.ok(segments().length >= 3, `several segments: ${segments().join(', ')}`);
  // A torn tail: half a frame header after the last frame, as a crash mid-write leaves it.
  appendFileSync(join(journalDirectory, segments().at(-1) as string), new Uint8Array(9).fill(0xee));

  ({ primary, failures } = await startPrimary(config));
  await model.assertShownBy(
    (offset, length) => primary.read(0, offset, length),
    'the primary after the first restart',
  );
  await model.round(primary, 100, 1500);
  await primary.flush();
  await waitFor(() => primary.status().closed >= primary.status().capture - 1, 'the writes closed');
  await primary.stop();

  ({ primary, failures } = await startPrimary(config));
  t.after(() => primary.stop().catch(() => {}));
  await model.assertShownBy(
    (offset, length) => primary.read(0, offset, length),
    'the primary after the second restart',
  );
  secondary = await SecondaryNode.start(secondaryConfig('restarts', port), quiet, (error) =>
    failures.push(error),
  );
  t.after(() => secondary.stop().catch(() => {}));
  await model.round(primary, 2000, 300);
  await primary.flush();
  await waitFor(() => primary.status().secondaries[0]?.lagBytes === 0, 'dr1 caught up', 60_000);
  await secondary.settle();
  await model.assertShownBy((offset, length) => secondary.read(0, offset, length), 'the secondary');
  assert.deepEqual(failures, []);
});

/** The real file system whose volume-file writes wait while `closed`: volumes slower than the journal. */
class GatedVolumes {
  private readonly volumeFds = new Set<number>();
  private opened: () => void = () => {};
  private gate: Promise<void> | null = null;
  readonly fs: FileSystem = {
    ...nodeFileSystem,
    openSync: (path, flags, mode) => {
      const fd = nodeFileSystem.openSync(path, flags, mode);
      if (path.includes('/volumes/')) this.volumeFds.add(fd);
      return fd;
    },
    // A descriptor number comes back for other files once closed.
    closeSync: (fd) => {
      this.volumeFds.delete(fd);
      nodeFileSystem.closeSync(fd);
    },
    close: (fd) => {
      this.volumeFds.delete(fd);
      return nodeFileSystem.close(fd);
    },
    write: async (fd, data, offset, length, position) => {
      if (this.volumeFds.has(fd)) await this.gate;
      return nodeFileSystem.write(fd, data, offset, length, position);
    },
  };

  close(): void {
    this.gate = new Promise((resolve) => (this.opened = resolve));
  }

  open(): void {
    this.gate = null;
    this.opened();
  }
}

test('volumes slower than the journal: writes wait while the write-back holds its share, none fails, the share holds, all complete after', {
  timeout: 120_000,
}, async (t) => {
  const volumes = new GatedVolumes();
  const shareBytes = 32 * mib;
  const config = primaryConfig('write-back-full', 1, {
    secondaries: [],
    memory: { dataBytesMax: shareBytes },
    volumes: [{ name: 'data', size: 96 * mib }],
  });
  const { primary, failures } = await startPrimary(config, { ...nodeEnvironment, fs: volumes.fs });
  t.after(() => primary.stop().catch(() => {}));
  assert.equal(primary.status().memory.writeBackBytesMax, shareBytes, 'no secondary: the whole budget');
  volumes.close();
  const writes = 80;
  const settled: ('done' | Error)[] = [];
  const written = Array.from({ length: writes }, (_, index) => {
    const data = new Uint8Array(mib).fill(index + 1);
    return primary.write(0, index * mib, data).then(
      () => void settled.push('done'),
      (error: Error) => void settled.push(error),
    );
  });
  await waitFor(() => primary.status().memory.writeBackFull, 'the write-back reached its share');
  // Writes let through together (all of these arrive in one turn) must not pass the share together.
  assert.ok(
    primary.status().memory.writeBackBytesPeak <= shareBytes + mib,
    `the write-back held ${primary.status().memory.writeBackBytesPeak} bytes for a share of ${shareBytes}`,
  );
  assert.ok(primary.status().writesWaiting > 0, 'the other writes wait');
  // Give the journal time to take everything it was given: still waiting, nothing failed.
  await new Promise((resolve) => setTimeout(resolve, 300));
  assert.ok(primary.status().writesWaiting > 0, 'still waiting while the volumes do not move');
  assert.equal(primary.status().memory.writeBackFull, true, 'the status says why they wait');
  assert.deepEqual(
    settled.filter((outcome) => outcome !== 'done'),
    [],
    'no write failed while waiting',
  );
  volumes.open();
  await Promise.all(written);
  assert.deepEqual(
    settled.filter((outcome) => outcome !== 'done'),
    [],
    'every write completed',
  );
  await primary.flush();
  await waitFor(() => primary.status().memory.writeBackBytes === 0, 'the write-back landed');
  const status = primary.status();
  assert.equal(status.memory.writeBackFull, false);
  assert.equal(status.writesWaiting, 0);
  assert.ok(
    status.memory.writeBackBytesPeak <= shareBytes + mib,
    `peak ${status.memory.writeBackBytesPeak} bytes for a share of ${shareBytes}`,
  );
  for (let index = 0; index < writes; index += 7)
    assert.ok(
      (await primary.read(0, index * mib, mib)).every((byte) => byte === index + 1),
      `MiB ${index} reads back`,
    );
  assert.deepEqual(failures, []);
});

/** The real file system; `holdNextRecordRead` holds the next opening of a segment to read a record. */
class HeldRecordReads {
  private holding = false;
  private release: () => void = () => {};
  /** Settles once a held opening is waiting. */
  held: Promise<void> = Promise.resolve();
  private onHeld: () => void = () => {};
  /** Descriptors of segments opened for reading records back. */
  private readonly segmentReaders = new Set<number>();
  readonly fs: FileSystem = {
    ...nodeFileSystem,
    open: async (path, flags, mode) => {
      const fd = await nodeFileSystem.open(path, flags, mode);
      if (flags === 'r' && path.endsWith('.seg')) this.segmentReaders.add(fd);
      return fd;
    },
    close: async (fd) => {
      this.segmentReaders.delete(fd);
      return nodeFileSystem.close(fd);
    },
    read: async (fd, buffer, offset, length, position) => {
      if (this.holding && this.segmentReaders.has(fd)) {
        this.holding = false;
        const released = new Promise<void>((resolve) => (this.release = resolve));
        this.onHeld();
        await released;
      }
      return nodeFileSystem.read(fd, buffer, offset, length, position);
    },
  };

  holdNextRecordRead(): void {
    this.holding = true;
    this.held = new Promise((resolve) => (this.onHeld = resolve));
  }

  releaseHeld(): void {
    this.release();
  }
}

test('a read of the journal held while its cycle is stored and collected: the segment stays until the read is done, which answers the right bytes', {
  timeout: 120_000,
}, async (t) => {
  const port = await freePort();
  const reads = new HeldRecordReads();
  const config = primaryConfig('read-under-collection', port, {
    journal: { capacity: 256 * mib, segmentSize: 8 * mib },
  });
  const journalDirectory = join(config.dataDir, 'journal');
  const { primary, failures } = await startPrimary(config, { ...nodeEnvironment, fs: reads.fs });
  t.after(() => primary.stop().catch(() => {}));
  const model = new Model();
  // The secondary away: 10 MiB journaled, the first segment full of cycles it has not stored.
  for (let block = 0; block < 2560; block += 64) await model.write(primary, block, 64);
  await primary.flush();
  await waitFor(() => primary.status().closed >= primary.status().capture - 1, 'the writes closed');
  const first = readdirSync(journalDirectory)
    .filter((name) => name.endsWith('.seg'))
    .sort()[0] as string;

  reads.holdNextRecordRead();
  const read = primary.read(0, 0, blockBytes);
  await reads.held;
  const secondary = await SecondaryNode.start(
    secondaryConfig('read-under-collection', port),
    quiet,
    (error) => failures.push(error),
  );
  t.after(() => secondary.stop().catch(() => {}));
  await waitFor(() => primary.status().secondaries[0]?.lagBytes === 0, 'dr1 stored everything');
  await waitFor(
    () => primary.status().collected === primary.status().closed,
    'the stored cycles were collected',
  );
  await new Promise((resolve) => setTimeout(resolve, 300));
  assert.ok(
    readdirSync(journalDirectory).includes(first),
    `${first} stays while a read that named it is held`,
  );

  reads.releaseHeld();
  assert.deepEqual(await read, model.image.subarray(0, blockBytes), 'the held read answers the right bytes');
  await waitFor(
    () => !readdirSync(journalDirectory).includes(first),
    `${first} deleted once the read is done`,
  );
  await model.assertShownBy((offset, length) => primary.read(0, offset, length), 'the primary');
  await secondary.settle();
  await model.assertShownBy((offset, length) => secondary.read(0, offset, length), 'the secondary');
  assert.deepEqual(failures, []);
});

test('a byte that turns bad between the replay and the redo: the start is refused with journal damage, never redone with it', {
  timeout: 60_000,
}, async () => {
  const config = primaryConfig('redo-damage', 1);
  const model = new Model();
  let { primary } = await startPrimary(config);
  for (let block = 0; block < 256; block += 16) await model.write(primary, block, 16);
  await primary.flush();
  await primary.stop();
  // Replay reads the segments whole (and finds them sound); the redo reads each record again.
  const segmentFds = new Set<number>();
  const fs: FileSystem = {
    ...nodeFileSystem,
    open: async (path, flags, mode) => {
      const fd = await nodeFileSystem.open(path, flags, mode);
      if (path.endsWith('.seg') && flags === 'r') segmentFds.add(fd);
      return fd;
    },
    close: (fd) => {
      segmentFds.delete(fd);
      return nodeFileSystem.close(fd);
    },
    read: async (fd, buffer, offset, length, position) => {
      const read = await nodeFileSystem.read(fd, buffer, offset, length, position);
      if (segmentFds.has(fd) && read > 64) buffer[offset + 64] = (buffer[offset + 64] as number) ^ 1;
      return read;
    },
  };
  const refusal = await startPrimary(config, { ...nodeEnvironment, fs }).then(
    (started) => {
      primary = started.primary;
      return assert.fail('the primary started from a record it could not read back');
    },
    (error: unknown) => error,
  );
  assert.ok(refusal instanceof StorageError, `journal damage, got ${String(refusal)}`);
  assert.equal(refusal.code, 'journal-corrupt');
  assert.match(refusal.message, /journal damaged: .*\.seg at offset \d+/);
  // Sound again, it starts and shows every write.
  ({ primary } = await startPrimary(config));
  await model.assertShownBy((offset, length) => primary.read(0, offset, length), 'the primary');
  await primary.stop();
});

test('a burst of writes at a journal near its capacity: those past it wait, the journal is not overrun', {
  timeout: 60_000,
}, async () => {
  const capacityBytes = 16 * mib;
  // The secondary is away and tracking is off: nothing frees the journal while the test runs.
  const config = primaryConfig('journal-burst', 1, {
    journal: { capacity: capacityBytes, segmentSize: 8 * mib },
    volumes: [{ name: 'data', size: 64 * mib }],
  });
  const { primary } = await startPrimary(config);
  const outcomes: ('done' | string)[] = [];
  const writes = Array.from({ length: 48 }, (_, index) =>
    primary.write(0, index * mib, new Uint8Array(mib).fill(index + 1)).then(
      () => void outcomes.push('done'),
      (error: Error) => void outcomes.push(error.message),
    ),
  );
  await waitFor(() => primary.status().journalFull, 'the journal reached its capacity');
  await new Promise((resolve) => setTimeout(resolve, 300));
  const status = primary.status();
  assert.ok(status.writesWaiting > 0, 'writes past the capacity wait');
  assert.ok(
    status.journalDiskBytes <= capacityBytes + 2 * mib,
    `the journal holds ${status.journalDiskBytes} bytes for a capacity of ${capacityBytes}`,
  );
  await primary.stop();
  await Promise.all(writes);
  assert.ok(outcomes.every((outcome) => outcome === 'done' || /stopped before this write/.test(outcome)));
});
