// Proves the real segment journal over the simulated disk: for many seeds, a journal of small
// segments lives several lives, each appending, syncing and collecting while the disk completes its
// calls late and out of order, some seeing an fdatasync fail (EIO), and each ended by a process or
// machine crash at a random moment
// (calls in flight, a rollover or journal.state replace half done). Every reopen replays: every
// record whose sync resolved is there, every record returned was written (its bytes as appended),
// in append order, once, and a record once lost never comes back (one of a collected cycle may:
// its segment's unlink may not have lasted). The model is the test's own
// (what it appended and which syncs resolved), never the journal's counters. A replay never refuses
// to start after these honest crashes: a refusal would be an outage, and an operator told "journal
// damaged" might wipe good data. Damage planted on purpose (a segment deleted from the floor on, a
// flipped byte in a synced frame) is still refused, the disk left as it was.
// SIM_JOURNAL_SEEDS sets the number of seeds (150 by default), SIM_JOURNAL_SEED=n runs one; a
// failure names its seed.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { StorageError } from '../../src/core/errors.ts';
import type { PrimaryRecord } from '../../src/core/records.ts';
import { syncDirectorySync } from '../../src/io/file-system.ts';
import { EventQueue } from '../../src/sim/event-queue.ts';
import { Random } from '../../src/sim/random.ts';
import {
  type CrashOdds,
  type DiskScheduler,
  type FaultHandle,
  type MetadataOrder,
  SimFileSystem,
} from '../../src/sim/sim-file-system.ts';
import { segmentHeaderBytes, segmentName, stateFileName } from '../../src/storage/journal-replay.ts';
import { primaryRecordCodec } from '../../src/storage/record-codec.ts';
import { SegmentJournal } from '../../src/storage/segment-journal.ts';
import { dataExtent } from './fixtures.ts';

const seedCount = Number(process.env.SIM_JOURNAL_SEEDS ?? 150);
const directory = '/site/journal';

class TestScheduler implements DiskScheduler {
  private readonly queue = new EventQueue<() => void>();
  private nowMs = 0;

  after(ms: number, callback: () => void): void {
    this.queue.push(this.nowMs + ms, callback);
  }

  /**
   * Runs the next completion, then the promise continuations it set off (which may issue more);
   * false when nothing was due and nothing is now.
   */
  async step(): Promise<boolean> {
    const next = this.queue.pop();
    if (next) {
      this.nowMs = next.atMs;
      next.event();
    }
    await new Promise((resolve) => setImmediate(resolve));
    return next !== undefined || this.queue.size > 0;
  }
}

/** Runs the disk until `call` settles; fails if the disk ran out of work first. */
async function completion<T>(scheduler: TestScheduler, call: Promise<T>, what: string): Promise<T> {
  let settled = false;
  const watched = call.finally(() => {
    settled = true;
  });
  while (!settled && (await scheduler.step())) {}
  assert.ok(settled, `${what} never finished`);
  return watched;
}

/** Runs the disk until `reached` holds, one completion at a time; fails if it never does. */
async function runUntil(scheduler: TestScheduler, reached: () => boolean, what: string): Promise<void> {
  while (!reached()) assert.ok(await scheduler.step(), `the disk ran out of work before ${what}`);
}

/** What the test knows: every record it appended (by id), which are durable, which are gone. */
interface Model {
  appended: Map<number, { cycle: number; fill: number }>;
  nextId: number;
  /** Ids a resolved sync (or a replay, which makes what it returns durable) covered. */
  durable: Set<number>;
  /** Ids the last replay returned or appended since: what the journal may still hold. */
  held: Set<number>;
  /** Ids a replay once dropped, not collected: never to come back. */
  lost: Set<number>;
  /** Cycles up to here may have been collected. */
  collectedUpTo: number;
}

function recordOf(id: number, model: Model): PrimaryRecord {
  const cycle = Math.floor(id / 6) + 1;
  const fill = (id % 250) + 1;
  model.appended.set(id, { cycle, fill });
  return { kind: 'write', cycle, extent: dataExtent(0, id, 1, fill) };
}

function openJournal(fs: SimFileSystem) {
  return SegmentJournal.open<PrimaryRecord>({
    fs: fs.forProcess(),
    directory,
    segmentBytesMax: 4096,
    codec: primaryRecordCodec,
    checkpoint: () => [{ kind: 'switch', closed: 0 }],
  });
}

/** Checks a replay against the model, then takes it as the journal's new content. */
function checkReplay(records: PrimaryRecord[], model: Model, where: string): void {
  const ids: number[] = [];
  for (const record of records) {
    if (record.kind !== 'write') continue;
    const id = record.extent.block;
    const written = model.appended.get(id);
    assert.ok(written, `${where}: replay returned record ${id}, never appended`);
    assert.equal(record.cycle, written.cycle, `${where}: record ${id} cycle`);
    assert.ok(
      record.extent.data?.every((byte) => byte === written.fill),
      `${where}: record ${id} bytes are not those appended`,
    );
    assert.ok(!model.lost.has(id), `${where}: record ${id} came back after a replay dropped it`);
    assert.ok(ids.length === 0 || id > (ids.at(-1) as number), `${where}: record ${id} out of order`);
    ids.push(id);
  }
  const returned = new Set(ids);
  for (const id of model.durable) {
    const cycle = model.appended.get(id)?.cycle as number;
    if (cycle > model.collectedUpTo)
      assert.ok(returned.has(id), `${where}: record ${id} (cycle ${cycle}) was synced and is gone`);
  }
  // A dropped record of a collected cycle may come back: its segment's unlink may not have lasted.
  for (const id of model.held) {
    const cycle = model.appended.get(id)?.cycle as number;
    if (!returned.has(id) && cycle > model.collectedUpTo) model.lost.add(id);
  }
  model.held = returned;
  // The journal makes what it replayed durable before it appends again.
  model.durable = new Set(returned);
}

/**
 * A disk whose delays are drawn from `random`, holding the site's data directory, durable as the
 * site's creation left it; the journal makes its own directory there.
 */
function makeDisk(random: Random, metadata: MetadataOrder, crashOdds?: Partial<CrashOdds>) {
  const scheduler = new TestScheduler();
  const fs = new SimFileSystem({
    random: random.fork(),
    scheduler,
    syncDelayMsMax: random.between(0, 20),
    ioDelayMsMax: random.between(0, 5),
    metadata,
    ...(crashOdds ? { crashOdds } : {}),
  });
  fs.mkdirSync('/site', 0o700);
  syncDirectorySync(fs, '/');
  return { fs, scheduler };
}

/** One life: open and check, then append, sync and collect at random until the crash. */
async function live(
  fs: SimFileSystem,
  scheduler: TestScheduler,
  random: Random,
  model: Model,
  where: string,
  totals: Totals,
): Promise<void> {
  const { journal, records } = openJournal(fs);
  checkReplay(records, model, where);
  const steps = random.between(0, 120);
  // Some lives see an fdatasync fail (EIO): the journal fails, and what it holds must still be
  // safe to go on from at the next start.
  const failedSyncAt = random.chance(0.25) ? random.int(steps + 1) : -1;
  let fault: FaultHandle | null = null;
  for (let step = 0; step < steps; step++) {
    if (step === failedSyncAt) fault = fs.failWith({ call: 'fdatasync', code: 'EIO', times: 1 });
    const action = random.int(10);
    if (action < 6) {
      const id = model.nextId++;
      model.held.add(id);
      journal.append(recordOf(id, model)).catch(() => {});
    } else if (action < 9) {
      const covered = [...model.held].filter((id) => model.appended.has(id));
      journal.sync().then(
        () => {
          for (const id of covered) model.durable.add(id);
        },
        () => {},
      );
    } else {
      const cycle = Math.floor(model.nextId / 6) - 1;
      if (cycle > 0) {
        model.collectedUpTo = Math.max(model.collectedUpTo, cycle);
        journal.deleteUpTo(cycle).catch(() => {});
      }
    }
    // A few completions between calls, so that calls overlap.
    for (let completions = random.int(4); completions > 0; completions--) await scheduler.step();
  }
  if (fault === null && random.chance(0.2)) {
    // A clean stop: everything appended so far must come back.
    await completion(scheduler, journal.close(), `${where}: close`);
    for (const id of model.held) model.durable.add(id);
  }
  fault?.cancel();
  if (fault && fault.fired > 0) totals.failedSyncs++;
  fs.crash(random.chance(0.5) ? 'machine' : 'process');
}

/** What a run of seeds saw: crashes, losses and tears, replays that cut a tail. */
interface Totals {
  machine: number;
  process: number;
  lostSectors: number;
  tornSectors: number;
  revertedEntries: number;
  cut: number;
  /** Lives in which an injected EIO failed an fdatasync. */
  failedSyncs: number;
}

/** A replay that refuses damage: the site would not start; the seed ends there. */
function isRefusal(error: unknown): error is StorageError {
  return error instanceof StorageError && error.code === 'journal-corrupt';
}

async function runSeed(seed: number, metadata: MetadataOrder, totals: Totals): Promise<void> {
  const random = new Random(seed);
  const { fs, scheduler } = makeDisk(random, metadata);
  const model: Model = {
    appended: new Map(),
    nextId: 1,
    durable: new Set(),
    held: new Set(),
    lost: new Set(),
    collectedUpTo: 0,
  };
  try {
    const lives = random.between(2, 5);
    for (let life = 1; life <= lives; life++)
      await live(fs, scheduler, random, model, `seed ${seed}, life ${life}`, totals);
    const { records, report } = openJournal(fs);
    checkReplay(records, model, `seed ${seed}, final replay`);
    if (report.cut) totals.cut++;
  } catch (error) {
    if (isRefusal(error))
      assert.fail(`seed ${seed}: an honest crash led to a refusal to start: ${error.message}`);
    throw error;
  }
  totals.machine += fs.stats.crashes.machine;
  totals.process += fs.stats.crashes.process;
  totals.lostSectors += fs.stats.lostSectors;
  totals.tornSectors += fs.stats.tornSectors;
  totals.revertedEntries += fs.stats.revertedEntries;
}

for (const metadata of ['posix', 'ordered'] as const) {
  test(`the real journal over a simulated disk (${metadata} metadata) never loses a synced record, invents one or refuses to start (${seedCount} seeds)`, async (t) => {
    const totals: Totals = {
      machine: 0,
      process: 0,
      lostSectors: 0,
      tornSectors: 0,
      revertedEntries: 0,
      cut: 0,
      failedSyncs: 0,
    };
    const only = process.env.SIM_JOURNAL_SEED;
    const seeds = only ? [Number(only)] : Array.from({ length: seedCount }, (_, index) => index + 1);
    for (const seed of seeds) await runSeed(seed, metadata, totals);
    t.diagnostic(JSON.stringify(totals));
    // The run must have exercised what it claims to survive.
    assert.ok(totals.machine > 0 && totals.process > 0, JSON.stringify(totals));
    assert.ok(totals.lostSectors > 0 && totals.tornSectors > 0 && totals.revertedEntries > 0);
    assert.ok(totals.failedSyncs > 0, JSON.stringify(totals));
  });
}

/** The path of segment `number` of the test's journal. */
function segmentPath(number: number): string {
  return `${directory}/${segmentName(number)}`;
}

function emptyModel(): Model {
  return {
    appended: new Map(),
    nextId: 1,
    durable: new Set(),
    held: new Set(),
    lost: new Set(),
    collectedUpTo: 0,
  };
}

/** The newest segment journal.state names, as a read sees it now. */
function stateLast(fs: SimFileSystem): number | null {
  return lastOf(fs.cachedBytes(`${directory}/${stateFileName}`));
}

/** The newest segment journal.state names on the disk: what a power loss now would leave. */
function durableStateLast(fs: SimFileSystem): number | null {
  return lastOf(fs.durableBytes(`${directory}/${stateFileName}`));
}

function lastOf(state: Uint8Array | null): number | null {
  if (state === null || state.length < segmentHeaderBytes) return null;
  return Number(new DataView(state.buffer, state.byteOffset, state.byteLength).getBigUint64(20));
}

/** A first life that leaves segment 1 with one record, closed cleanly. */
async function firstLife(fs: SimFileSystem, scheduler: TestScheduler, model: Model): Promise<void> {
  const { journal } = openJournal(fs);
  await completion(scheduler, journal.append(recordOf(model.nextId++, model)), 'the first append');
  await completion(scheduler, journal.close(), 'the first close');
  model.durable.add(1);
  model.held.add(1);
}

for (const metadata of ['posix', 'ordered'] as const) {
  test(`a crash after a new segment is durable and before journal.state names it never stops a later start (${metadata} metadata)`, async () => {
    const { fs, scheduler } = makeDisk(new Random(1), metadata);
    const model = emptyModel();
    await firstLife(fs, scheduler, model);
    // Each life's first append starts a segment; the power goes once its header and directory entry
    // are durable, before journal.state is replaced (the rename is issued after that directory sync).
    for (const segment of [2, 3]) {
      const { journal, records } = openJournal(fs);
      checkReplay(records, model, `before segment ${segment}`);
      journal.append(recordOf(model.nextId++, model)).catch(() => {});
      await runUntil(
        scheduler,
        () => fs.durableBytes(segmentPath(segment))?.length === segmentHeaderBytes,
        `segment ${segment} became durable`,
      );
      fs.crash('machine');
    }
    const { records } = openJournal(fs);
    checkReplay(records, model, 'after both crashes');
  });
}

test("a journal.state a dead process renamed but never made durable cannot stop a later start ('posix' metadata)", async () => {
  // Where the power loss keeps the next segment's entry and loses that rename, journal.state ends
  // up two segments behind, unless the start between made what it read durable.
  let segmentKept = 0;
  for (let seed = 1; seed <= 40; seed++) {
    const { fs, scheduler } = makeDisk(new Random(seed), 'posix');
    const model = emptyModel();
    await firstLife(fs, scheduler, model);
    const second = openJournal(fs);
    checkReplay(second.records, model, `seed ${seed}, life 2`);
    second.journal.append(recordOf(model.nextId++, model)).catch(() => {});
    // The rename of journal.state done, the directory sync after it not yet: kill -9.
    await runUntil(scheduler, () => stateLast(fs) === 2, `seed ${seed}: journal.state named segment 2`);
    assert.equal(durableStateLast(fs), 1, `seed ${seed}: the rename is not durable yet`);
    fs.crash('process');
    const third = openJournal(fs);
    checkReplay(third.records, model, `seed ${seed}, life 3`);
    third.journal.append(recordOf(model.nextId++, model)).catch(() => {});
    await runUntil(scheduler, () => fs.existsSync(segmentPath(3)), `seed ${seed}: segment 3 was created`);
    fs.crash('machine');
    if (fs.existsSync(segmentPath(3))) segmentKept++;
    const { records } = openJournal(fs);
    checkReplay(records, model, `seed ${seed}, after the power loss`);
  }
  assert.ok(segmentKept > 0, 'some power loss kept the new segment');
});

/** Segment numbers in the journal directory: those a read sees now, or those on the disk. */
function segmentNumbers(fs: SimFileSystem, view: 'current' | 'durable' = 'current'): number[] {
  return fs
    .listFiles(view)
    .filter((path) => path.startsWith(`${directory}/`) && path.endsWith('.seg'))
    .map((path) => Number(path.slice(-20, -4)));
}

/** Whether the numbers, sorted, run without a gap. */
function contiguous(numbers: number[]): boolean {
  return numbers.every((number, index) => index === 0 || number === (numbers[index - 1] as number) + 1);
}

/**
 * Seven segments of about one cycle each (six records and a checkpoint fill a segment), all synced,
 * then cycles up to 4 collected: segments 1 to 3 unlinked, journal.state's floor at 4.
 */
async function collectedJournal(fs: SimFileSystem, scheduler: TestScheduler, model: Model): Promise<number> {
  const { journal } = openJournal(fs);
  for (let record = 0; record < 40; record++) journal.append(recordOf(model.nextId++, model)).catch(() => {});
  await completion(scheduler, journal.sync(), 'the sync');
  for (const id of model.appended.keys()) {
    model.durable.add(id);
    model.held.add(id);
  }
  model.collectedUpTo = 4;
  const deleted = await completion(scheduler, journal.deleteUpTo(4), 'the collection');
  assert.equal(deleted, 3, 'segments 1 to 3 held cycles up to 4 only');
  return 4;
}

test("collection's unlinks, some of them lost to a power loss, never leave a gap that stops a later start ('posix' metadata)", async () => {
  let gaps = 0;
  for (let seed = 1; seed <= 30; seed++) {
    const { fs, scheduler } = makeDisk(new Random(seed), 'posix');
    const model = emptyModel();
    const floor = await collectedJournal(fs, scheduler, model);
    // The unlinks were never synced: each one survives or not.
    fs.crash('machine');
    if (!contiguous(segmentNumbers(fs))) gaps++;
    const { records } = openJournal(fs);
    checkReplay(records, model, `seed ${seed}`);
    // What collection released is gone for good once the site started.
    assert.deepEqual(
      segmentNumbers(fs, 'durable').filter((number) => number < floor),
      [],
      `seed ${seed}: leftovers below the floor`,
    );
  }
  assert.ok(gaps > 0, 'some power loss left a gap below the floor');
});

/** Every file and its bytes as a read sees them: to show that a refused start changed nothing. */
function snapshot(fs: SimFileSystem): string[] {
  return fs.listFiles().map((path) => `${path} ${Buffer.from(fs.cachedBytes(path) ?? []).toString('hex')}`);
}

/** Flips one bit of a file's byte, durably: damage, not a crash. */
function flipDurably(fs: SimFileSystem, path: string, offset: number): void {
  const byte = (fs.cachedBytes(path) as Uint8Array)[offset] as number;
  const fd = fs.openSync(path, 'r+');
  fs.writeSync(fd, Uint8Array.of(byte ^ 0x10), 0, 1, offset);
  fs.fdatasyncSync(fd);
  fs.closeSync(fd);
}

test('leftovers below the floor hide no damage: a missing or flipped segment from the floor on is refused as before', async () => {
  const plants: { what: string; plant: (fs: SimFileSystem, newest: number) => string; reason: RegExp }[] = [
    {
      what: 'the floor segment deleted',
      plant: (fs) => deleteDurably(fs, segmentPath(4)),
      reason:
        /missing: \/site\/journal\/journal.state says segments from 4 on are kept, the oldest present is 5/,
    },
    {
      what: 'a segment above the floor deleted',
      plant: (fs) => deleteDurably(fs, segmentPath(5)),
      reason: /missing: segments 4 and 6 exist/,
    },
    {
      what: 'the newest segment deleted',
      plant: (fs, newest) => deleteDurably(fs, segmentPath(newest)),
      reason:
        /missing: \/site\/journal\/journal.state says segment \d+ was created, the newest present is \d+/,
    },
    {
      what: 'a byte of a synced frame flipped',
      plant: (fs) => {
        flipDurably(fs, segmentPath(5), segmentHeaderBytes + 40);
        return segmentPath(5);
      },
      reason: /at offset \d+: CRC32C mismatch, and later segments follow/,
    },
  ];
  for (const { what, plant, reason } of plants) {
    // Every unlink of the collection undone by the power loss: segments 1 to 3 are back.
    const { fs, scheduler } = makeDisk(new Random(1), 'posix', { entryKept: 0 });
    await collectedJournal(fs, scheduler, emptyModel());
    fs.crash('machine');
    const numbers = segmentNumbers(fs);
    assert.deepEqual(numbers.slice(0, 5), [1, 2, 3, 4, 5], `${what}: the unlinks were undone`);
    const path = plant(fs, numbers.at(-1) as number);
    const before = snapshot(fs);
    assert.throws(
      () => openJournal(fs),
      (error) =>
        isRefusal(error) &&
        error.message.includes(`damaged: ${path} at offset`) &&
        reason.test(error.message),
      what,
    );
    assert.deepEqual(snapshot(fs), before, `${what}: a refused start changed nothing`);
  }
});

test('a flipped byte in a segment below the floor is no damage: collection released it, and the start removes it', async () => {
  const { fs, scheduler } = makeDisk(new Random(1), 'posix', { entryKept: 0 });
  const model = emptyModel();
  await collectedJournal(fs, scheduler, model);
  fs.crash('machine');
  flipDurably(fs, segmentPath(2), segmentHeaderBytes + 40);
  const { records } = openJournal(fs);
  checkReplay(records, model, 'after the flip');
  assert.deepEqual(segmentNumbers(fs, 'durable').slice(0, 1), [4]);
});

/** Removes a file, durably: a loss a crash cannot cause. */
function deleteDurably(fs: SimFileSystem, path: string): string {
  fs.unlinkSync(path);
  syncDirectorySync(fs, directory);
  return path;
}

test("the journal's directory, made by its first open, survives a power loss ('posix' metadata)", async () => {
  // Every entry change not synced is lost: only what the journal made durable is left.
  const { fs, scheduler } = makeDisk(new Random(1), 'posix', { entryKept: 0 });
  const model = emptyModel();
  const { journal } = openJournal(fs);
  await completion(scheduler, journal.append(recordOf(model.nextId++, model)), 'the append');
  await completion(scheduler, journal.sync(), 'the sync');
  model.durable.add(1);
  model.held.add(1);
  fs.crash('machine');
  const { records } = openJournal(fs);
  checkReplay(records, model, 'after the power loss');
});

test('collection never leaves the journal with only a segment whose checkpoint was not yet durable', async () => {
  // Found by the whole-site simulator (seed 261): a primary's journal rolled over, collection
  // deleted every older segment, a power loss took the new segment's unsynced checkpoint, and the
  // primary came back with closed 0, numbering cycles its secondary already had again.
  const { fs, scheduler } = makeDisk(new Random(7), 'posix', { sectorKept: 0, tornSector: 0 });
  const model = emptyModel();
  let closed = 0;
  const { journal } = SegmentJournal.open<PrimaryRecord>({
    fs: fs.forProcess(),
    directory,
    segmentBytesMax: 4096,
    codec: primaryRecordCodec,
    checkpoint: () => [{ kind: 'switch', closed }],
  });
  for (let i = 0; i < 4; i++)
    await completion(scheduler, journal.append(recordOf(model.nextId++, model)), 'an append');
  closed = 5;
  await completion(scheduler, journal.append({ kind: 'switch', closed }), 'the switch');
  await completion(scheduler, journal.sync(), 'the sync');
  // More writes roll the journal over: the new segment starts with the checkpoint "closed 5".
  const segmentsBefore = journal.segmentCount;
  while (journal.segmentCount === segmentsBefore)
    await completion(scheduler, journal.append(recordOf(model.nextId++, model)), 'an append');
  await completion(scheduler, journal.deleteUpTo(1000), 'the collection');
  fs.crash('machine');
  const { records } = openJournal(fs);
  const closedAfter = Math.max(0, ...records.map((record) => (record.kind === 'switch' ? record.closed : 0)));
  assert.equal(
    closedAfter,
    5,
    `after the power loss the journal says closed ${closedAfter}, it had made closed 5 durable`,
  );
});

test('after a failed fdatasync, what the next start replays survives a later power loss (fsyncgate)', async () => {
  // Found by the whole-site simulator with disk faults (seeds 7, 78, 133, 279): a failed fdatasync
  // left frames in the page cache only, marked clean (as Linux may); the restarted journal replayed
  // them, went on in a new segment, and a power loss took them back from behind durable frames:
  // the journal was refused as damaged. The start must write them again and sync them first.
  for (let seed = 1; seed <= 20; seed++) {
    const { fs, scheduler } = makeDisk(new Random(seed), 'posix', { sectorKept: 0, tornSector: 0 });
    const model = emptyModel();
    const first = openJournal(fs);
    for (let i = 0; i < 3; i++) first.journal.append(recordOf(model.nextId++, model)).catch(() => {});
    await completion(scheduler, first.journal.sync(), `seed ${seed}: the first sync`);
    const fault = fs.failWith({ call: 'fdatasync', code: 'EIO', times: 1 });
    for (let i = 0; i < 3; i++) first.journal.append(recordOf(model.nextId++, model)).catch(() => {});
    const failed = first.journal.sync().then(
      () => null,
      (error: Error) => error,
    );
    const error = await completion(scheduler, failed, `seed ${seed}: the failed sync`);
    assert.match(String(error?.message), /EIO/, `seed ${seed}: the sync failed`);
    assert.equal(fault.fired, 1, `seed ${seed}: the fault fired`);
    // The site fail-stops; its restart replays what the page cache still shows.
    fs.crash('process');
    const second = openJournal(fs);
    checkReplay(second.records, model, `seed ${seed}, after the failed sync`);
    assert.equal(second.records.filter((record) => record.kind === 'write').length, 6);
    // It goes on in a new segment, syncs, and the power goes.
    second.journal.append(recordOf(model.nextId++, model)).catch(() => {});
    await completion(scheduler, second.journal.sync(), `seed ${seed}: the second sync`);
    for (const id of model.held) model.durable.add(id);
    model.durable.add(model.nextId - 1);
    fs.crash('machine');
    const { records } = openJournal(fs);
    checkReplay(records, model, `seed ${seed}, after the power loss`);
  }
});

test('a start that cannot make the replayed journal durable refuses, naming the segment, and a later one succeeds', async () => {
  const { fs, scheduler } = makeDisk(new Random(3), 'posix', { sectorKept: 0, tornSector: 0 });
  const model = emptyModel();
  const first = openJournal(fs);
  const appends = [1, 2, 3].map(() => first.journal.append(recordOf(model.nextId++, model)));
  await completion(scheduler, Promise.all(appends), 'the appends');
  // Written, never synced: kill -9. The start must make them durable before going on from them.
  fs.crash('process');
  const fault = fs.failWith({ call: 'fdatasync', code: 'EIO', times: 1 });
  assert.throws(
    () => openJournal(fs),
    (error) =>
      error instanceof StorageError &&
      error.code === 'storage-io' &&
      error.message.includes(`${segmentPath(1)}: could not make the replayed journal durable`),
  );
  assert.equal(fault.fired, 1);
  const { records } = openJournal(fs);
  checkReplay(records, model, 'the start after the refused one');
  for (const id of model.held) model.durable.add(id);
  fs.crash('machine');
  checkReplay(openJournal(fs).records, model, 'after the power loss');
});
