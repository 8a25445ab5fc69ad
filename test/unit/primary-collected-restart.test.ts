// A primary restarted after a collection whose segments were not deleted yet (a crash between the
// collect record's append and the segments' deletion, found by the whole-site simulator, seed 29968).
// The journal on disk then holds more than journal.capacity, all of it in collected cycles, and the
// capture cycle is empty. Proven with a real PrimaryNode on real files: a first run journals cycle 1
// while its secondary is away, the collect record the secondary's STORED would have caused is
// appended to the journal directly, and the primary is started again with a capacity below what the
// journal holds. A write must then be journaled (the restart finishes the collection and deletes the
// segments), not wait for room that only a next collection, which needs a write, would free. The
// volume keeps every write, and an offline start stopped at once (cyclerep recover) fails nothing.
import assert from 'node:assert/strict';
import { mkdtempSync, readdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, test } from 'node:test';
import type { PrimaryRecord } from '../../src/core/records.ts';
import { nodeFileSystem } from '../../src/io/node-file-system.ts';
import { PrimaryNode } from '../../src/node/primary-node.ts';
import { type PrimaryFileConfig, validateConfig } from '../../src/ops/config.ts';
import { createLogger } from '../../src/ops/logger.ts';
import { primaryRecordCodec } from '../../src/storage/record-codec.ts';
import { SegmentJournal } from '../../src/storage/segment-journal.ts';
import { freePort } from '../integration/harness.ts';

const directory = mkdtempSync(join(tmpdir(), 'cyclerep-collected-restart-'));
after(() => rmSync(directory, { recursive: true, force: true }));
const quiet = createLogger({ site: 'test', format: 'json', write: () => {} });
const kib = 1024;
const blockBytes = 4096;
const segmentBytes = 16 * kib;
const capacityBytes = 64 * kib;
const writtenBlocks = 32;

async function waitFor(condition: () => boolean, what: string, timeoutMs = 10_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!condition()) {
    assert.ok(Date.now() < deadline, `not reached within ${timeoutMs} ms: ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 10));
  }
}

/** Small segments, as the simulator draws them (the configuration's minimum is far larger). */
function primaryConfig(port: number, capacity: number): PrimaryFileConfig {
  const validated = validateConfig({
    group: 'collected',
    role: 'primary',
    dataDir: join(directory, 'primary'),
    volumes: [{ name: 'data', size: 1024 * kib }],
    cycle: { intervalMinMs: 20, queuedMax: 64 },
    tracking: { enabled: false },
    link: { heartbeatMs: 100, timeoutMs: 2000, reconnectMinMs: 50, reconnectMaxMs: 200 },
    // Nobody listens there: the secondary is away for the whole test.
    secondaries: [{ name: 'dr1', address: `127.0.0.1:${port}` }],
  }) as PrimaryFileConfig;
  return {
    ...validated,
    journal: { capacity, segmentSize: segmentBytes },
    nbd: null,
    http: null,
  } as unknown as PrimaryFileConfig;
}

function patternBlock(index: number): Uint8Array {
  const data = new Uint8Array(blockBytes).fill(0x30 + (index % 64));
  new DataView(data.buffer).setUint32(0, index);
  return data;
}

/** Appends what the primary appends once every secondary stored `upTo`, and nothing after it. */
async function appendCollect(journalDirectory: string, closed: number, upTo: number): Promise<void> {
  const { journal } = SegmentJournal.open<PrimaryRecord>({
    fs: nodeFileSystem,
    directory: journalDirectory,
    segmentBytesMax: segmentBytes,
    codec: primaryRecordCodec,
    checkpoint: () => [
      { kind: 'switch', closed },
      { kind: 'collect', upTo: 0 },
    ],
  });
  await journal.append({ kind: 'collect', upTo });
  await journal.sync();
  journal.abandon();
}

/** Settles with `promise`, or rejects naming `what` once `timeoutMs` passed. */
function within<T>(promise: Promise<T>, timeoutMs: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`${what}: not done within ${timeoutMs} ms`)), timeoutMs);
  });
  return Promise.race([promise, timeout]).finally(() => clearTimeout(timer));
}

test('a restart whose journal is over capacity with collected cycles only: the collection is finished, writes go on', {
  timeout: 60_000,
}, async (t) => {
  const port = await freePort();
  const journalDirectory = join(directory, 'primary', 'journal');
  const failures: Error[] = [];
  const onFatal = (error: Error) => failures.push(error);

  // Cycle 1 journaled and closed while dr1 is away: the journal holds it, in several segments.
  let primary = await PrimaryNode.start(primaryConfig(port, 1024 * kib), quiet, onFatal);
  // Every write's cycle closed before the collect record below covers them: with 20 ms cycles the
  // writes may span several, the last of them still capturing when the first closed.
  let lastCycle = 1;
  for (let block = 0; block < writtenBlocks; block++)
    lastCycle = Math.max(lastCycle, await primary.write(0, block * blockBytes, patternBlock(block)));
  await primary.flush();
  await waitFor(() => primary.status().closed >= lastCycle, `cycle ${lastCycle} closed`);
  const { closed } = primary.status();
  await primary.stop();
  // dr1 stored every closed cycle: the collect record is appended, then the machine stops before
  // the segments go.
  await appendCollect(journalDirectory, closed, closed);
  const segmentsBefore = readdirSync(journalDirectory).filter((name) => name.endsWith('.seg'));
  assert.ok(segmentsBefore.length >= 4, `several segments: ${segmentsBefore.join(', ')}`);

  // As cyclerep recover runs it: started offline and stopped at once.
  const offline = await PrimaryNode.start(primaryConfig(port, capacityBytes), quiet, onFatal, {
    offline: true,
  });
  await offline.stop();
  assert.deepEqual(failures, [], 'the offline start and stop failed nothing');

  primary = await PrimaryNode.start(primaryConfig(port, capacityBytes), quiet, onFatal);
  t.after(() => primary.stop().catch(() => {}));
  assert.equal(primary.status().collected, closed);
  const cycle = await within(
    primary.write(0, writtenBlocks * blockBytes, patternBlock(writtenBlocks)),
    5000,
    'a write after the restart',
  );
  assert.ok(cycle > closed, `the write went into a new cycle (${cycle})`);
  const status = primary.status();
  assert.ok(
    status.journalDiskBytes < capacityBytes,
    `the collected segments went: ${status.journalDiskBytes} bytes in ${status.journalFiles} files`,
  );
  const image = await primary.read(0, 0, (writtenBlocks + 1) * blockBytes);
  for (let block = 0; block <= writtenBlocks; block++) {
    const got = Buffer.from(image.subarray(block * blockBytes, (block + 1) * blockBytes));
    assert.ok(got.equals(Buffer.from(patternBlock(block))), `block ${block} holds its write`);
  }
  assert.deepEqual(failures, []);
});
