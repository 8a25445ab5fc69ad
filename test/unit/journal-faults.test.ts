// Proves that replay never silently returns fewer synced records than were written. For many seeds
// (JOURNAL_FAULT_SEEDS, 100 by default; JOURNAL_FAULT_SEED=n runs one), a journal of small segments
// is built over one to three runs, each ending in a clean close or, for the last, a crash that
// leaves unsynced frames; then one fault: a byte flipped anywhere in a random segment or in
// journal.state, a random segment deleted, or the unsynced tail torn (truncated, overwritten or
// extended with garbage). Replay must then return every synced record, in order, or refuse with
// journal damage naming a file of the journal; a torn unsynced tail alone must never be refused.
// A failure names its seed, so `JOURNAL_FAULT_SEED=n` reproduces it.
import assert from 'node:assert/strict';
import {
  existsSync,
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
import type { PrimaryRecord } from '../../src/core/records.ts';
import { nodeFileSystem } from '../../src/io/node-file-system.ts';
import { Random } from '../../src/sim/random.ts';
import { segmentHeaderBytes, stateFileName } from '../../src/storage/journal-replay.ts';
import { primaryRecordCodec } from '../../src/storage/record-codec.ts';
import { SegmentJournal } from '../../src/storage/segment-journal.ts';
import { dataExtent } from './fixtures.ts';

const seedCount = Number(process.env.JOURNAL_FAULT_SEEDS ?? 100);
const onlySeed = process.env.JOURNAL_FAULT_SEED;
const segmentBytesMax = 4096;
/** Memory-backed where there is one: the journal fdatasyncs a lot, and a disk makes that slow. */
const scratch = existsSync('/dev/shm') ? '/dev/shm' : tmpdir();

function open(directory: string) {
  return SegmentJournal.open<PrimaryRecord>({
    fs: nodeFileSystem,
    directory,
    segmentBytesMax,
    codec: primaryRecordCodec,
    checkpoint: () => [{ kind: 'switch', closed: 0 }],
  });
}

function writeFills(records: PrimaryRecord[]): number[] {
  return records.flatMap((record) => (record.kind === 'write' ? [record.extent.data?.[0] ?? -1] : []));
}

function segments(directory: string): string[] {
  return readdirSync(directory)
    .filter((name) => name.endsWith('.seg'))
    .sort()
    .map((name) => join(directory, name));
}

/** What a built journal promises: the synced writes, and where its unsynced tail starts, if any. */
interface Built {
  synced: number[];
  tail: { path: string; from: number } | null;
}

async function build(directory: string, random: Random): Promise<Built> {
  const runs = random.between(1, 3);
  const crash = random.chance(0.5);
  const synced: number[] = [];
  let fill = 1;
  let tail: Built['tail'] = null;
  for (let run = 0; run < runs; run++) {
    const { journal } = open(directory);
    const appends = random.between(1, 25);
    let unsynced: number[] = [];
    for (let i = 0; i < appends; i++) {
      await journal.append({ kind: 'write', cycle: 1, extent: dataExtent(0, i, 1 + random.int(3), fill) });
      unsynced.push(fill);
      fill = (fill % 250) + 1;
      if (random.chance(0.3)) {
        await journal.sync();
        synced.push(...unsynced);
        unsynced = [];
      }
    }
    if (run === runs - 1 && crash) {
      await journal.sync();
      synced.push(...unsynced);
      // The unsynced tail starts here, or after the durable header of a segment rolled over to.
      const newest = segments(directory).at(-1) as string;
      const syncedEnd = statSync(newest).size;
      // More frames, only written: a crash may lose them.
      const more = random.between(1, 5);
      for (let i = 0; i < more; i++) {
        await journal.append({ kind: 'write', cycle: 1, extent: dataExtent(0, i, 1, fill) });
        fill = (fill % 250) + 1;
      }
      journal.abandon();
      const last = segments(directory).at(-1) as string;
      tail = { path: last, from: last === newest ? syncedEnd : segmentHeaderBytes };
    } else {
      await journal.close();
      synced.push(...unsynced);
    }
  }
  return { synced, tail };
}

/** One fault; says whether a refusal is allowed (tearing the unsynced tail never may be refused). */
function damage(directory: string, random: Random, built: Built): { fault: string; mayRefuse: boolean } {
  const paths = segments(directory);
  const choice = random.int(built.tail ? 4 : 3);
  if (choice === 0) {
    const path = random.chance(0.1)
      ? join(directory, stateFileName)
      : (paths[random.int(paths.length)] as string);
    const bytes = readFileSync(path);
    const offset = random.int(bytes.length);
    bytes[offset] = (bytes[offset] as number) ^ (1 << random.int(8));
    writeFileSync(path, bytes);
    return { fault: `flipped a bit at ${path}:${offset}`, mayRefuse: true };
  }
  if (choice === 1) {
    const path = paths[random.int(paths.length)] as string;
    rmSync(path);
    return { fault: `deleted ${path}`, mayRefuse: true };
  }
  if (choice === 2) {
    const path = paths.at(-1) as string;
    writeFileSync(
      path,
      Buffer.concat([readFileSync(path), Buffer.alloc(random.between(1, 300), random.int(256))]),
    );
    return { fault: `appended garbage to ${path} after a clean close or a crash`, mayRefuse: false };
  }
  const { path, from } = built.tail as NonNullable<Built['tail']>;
  const size = statSync(path).size;
  const at = from + random.int(Math.max(1, size - from));
  if (random.chance(0.5)) {
    truncateSync(path, at);
    return { fault: `truncated ${path} at ${at} (tail from ${from})`, mayRefuse: false };
  }
  const bytes = readFileSync(path);
  for (let i = at; i < Math.min(size, at + random.between(1, 600)); i++) bytes[i] = random.int(256);
  writeFileSync(path, bytes);
  return { fault: `overwrote ${path} from ${at} (tail from ${from})`, mayRefuse: false };
}

async function runSeed(seed: number): Promise<void> {
  const random = new Random(seed);
  const directory = mkdtempSync(join(scratch, 'cyclerep-journal-faults-'));
  try {
    const built = await build(directory, random);
    const { fault, mayRefuse } = damage(directory, random, built);
    let opened: ReturnType<typeof open>;
    try {
      opened = open(directory);
    } catch (error) {
      assert.ok(
        error instanceof StorageError && error.code === 'journal-corrupt',
        `seed ${seed}, ${fault}: ${error}`,
      );
      assert.ok(
        error.message.includes(directory),
        `seed ${seed}, ${fault}: names no journal file: ${error.message}`,
      );
      assert.ok(mayRefuse, `seed ${seed}, ${fault}: a torn unsynced tail was refused: ${error.message}`);
      return;
    }
    const replayed = writeFills(opened.records);
    opened.journal.abandon();
    assert.deepEqual(
      replayed.slice(0, built.synced.length),
      built.synced,
      `seed ${seed}, ${fault}: replay returned ${replayed.length} writes, not every one of the ${built.synced.length} synced`,
    );
  } finally {
    rmSync(directory, { recursive: true, force: true });
  }
}

test(`replay returns every synced record or refuses with the path, under ${onlySeed ? `seed ${onlySeed}` : `${seedCount} seeds`}`, async () => {
  const seeds = onlySeed ? [Number(onlySeed)] : Array.from({ length: seedCount }, (_, index) => index + 1);
  for (const seed of seeds) await runSeed(seed);
});
