// Proves the simulated disk the whole-site simulator runs the real storage code over: it keeps what
// POSIX promises and nothing more. A process crash keeps the page cache; a machine crash keeps what
// was synced and, of the rest, per 512-byte sector, the new bytes, the old ones or a tear between,
// never touching a synced byte (a property over hundreds of seeds, checked against a model of the
// file kept by the test, not against the disk's own bookkeeping); directory entries are durable only
// once their directory is synced, a rename's two names sharing one fate; calls complete out of
// order after seeded delays, and a dead process never hears back; failures have node:fs's shape;
// and the same seed replays the same disk.
import assert from 'node:assert/strict';
import * as nodeFs from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import { AssertionFailure } from '../../src/core/assert.ts';
import { type FileSystem, syncDirectorySync } from '../../src/io/file-system.ts';
import { EventQueue } from '../../src/sim/event-queue.ts';
import { Random } from '../../src/sim/random.ts';
import {
  type DiskScheduler,
  SimFileSystem,
  type SimFileSystemOptions,
} from '../../src/sim/sim-file-system.ts';

/** Simulated time for the disk's completions, run in order with the promise continuations between. */
class TestScheduler implements DiskScheduler {
  private readonly queue = new EventQueue<() => void>();
  nowMs = 0;

  after(ms: number, callback: () => void): void {
    this.queue.push(this.nowMs + ms, callback);
  }

  async drain(): Promise<void> {
    for (let next = this.queue.pop(); next; next = this.queue.pop()) {
      this.nowMs = next.atMs;
      next.event();
      await settled();
    }
  }
}

function settled(): Promise<void> {
  return new Promise((resolve) => setImmediate(resolve));
}

function makeDisk(seed: number, options: Partial<SimFileSystemOptions> = {}) {
  const scheduler = new TestScheduler();
  const fs = new SimFileSystem({
    random: new Random(seed),
    scheduler,
    syncDelayMsMax: 10,
    ioDelayMsMax: 5,
    ...options,
  });
  // A durable directory to work in.
  fs.mkdirSync('/d', 0o700);
  syncDirectorySync(fs, '/');
  return { fs, scheduler };
}

function filled(length: number, fill: number): Uint8Array {
  return new Uint8Array(length).fill(fill);
}

/** A file whose data and entry are durable. */
function createDurable(fs: FileSystem, path: string, content: Uint8Array): void {
  const fd = fs.openSync(path, 'wx', 0o600);
  fs.writeSync(fd, content, 0, content.length, null);
  fs.fdatasyncSync(fd);
  fs.closeSync(fd);
  syncDirectorySync(fs, '/d');
}

function concat(...parts: Uint8Array[]): Uint8Array {
  return new Uint8Array(Buffer.concat(parts));
}

function codeOf(action: () => unknown): string | undefined {
  try {
    action();
  } catch (error) {
    return (error as NodeJS.ErrnoException).code;
  }
  return undefined;
}

test('an unsynced write stays visible through a process crash and is lost by a machine crash', () => {
  const { fs } = makeDisk(1, { crashOdds: { sectorKept: 0, tornSector: 0 } });
  createDurable(fs, '/d/f', filled(1000, 1));
  const fd = fs.openSync('/d/f', 'r+');
  assert.equal(fs.writeSync(fd, filled(700, 2), 0, 700, 500), 700);
  const written = concat(filled(500, 1), filled(700, 2));
  assert.deepEqual(new Uint8Array(fs.readFileSync('/d/f')), written);
  assert.deepEqual(fs.durableBytes('/d/f'), filled(1000, 1));

  fs.crash('process');
  assert.deepEqual(new Uint8Array(fs.readFileSync('/d/f')), written, 'the page cache survives kill -9');
  assert.equal(
    codeOf(() => fs.writeSync(fd, filled(1, 9), 0, 1, 0)),
    'EBADF',
    'descriptors do not',
  );

  fs.crash('machine');
  const after = fs.readFileSync('/d/f');
  assert.ok(after.length >= 1000 && after.length <= 1200, `size ${after.length}`);
  // No sector kept: the synced bytes, then zeroes where only the size reached the disk.
  assert.deepEqual(new Uint8Array(after.subarray(0, 1000)), filled(1000, 1));
  assert.ok(after.subarray(1000).every((byte) => byte === 0));
  assert.deepEqual(new Uint8Array(after), fs.durableBytes('/d/f'), 'what is left is durable');
});

test('a machine crash that keeps every sector keeps an unsynced write, up to the size it keeps', () => {
  const { fs } = makeDisk(2, { crashOdds: { sectorKept: 1, tornSector: 0 } });
  createDurable(fs, '/d/f', filled(1000, 1));
  const fd = fs.openSync('/d/f', 'r+');
  fs.writeSync(fd, filled(700, 2), 0, 700, 500);
  fs.crash('machine');
  const after = new Uint8Array(fs.readFileSync('/d/f'));
  assert.deepEqual(after, concat(filled(500, 1), filled(700, 2)).subarray(0, after.length));
});

/** How a sector after a crash relates to the model: new (the cache), old (the synced bytes), or torn. */
function sectorFate(after: Uint8Array, cache: Uint8Array, synced: Uint8Array, start: number): string {
  const end = Math.min(start + 512, after.length);
  const at = (bytes: Uint8Array, index: number) => bytes[index] ?? 0;
  const same = (bytes: Uint8Array, from: number, to: number) => {
    for (let index = from; index < to; index++) if (at(after, index) !== at(bytes, index)) return false;
    return true;
  };
  if (same(cache, start, end)) return 'new';
  if (same(synced, start, end)) return 'old';
  // Torn: the first bytes new, the rest old.
  for (let cut = start + 1; cut < end; cut++)
    if (same(cache, start, cut) && same(synced, cut, end)) return 'torn';
  return 'neither old nor new, nor a tear of the two';
}

test('a machine crash keeps every synced byte and tears only unsynced sectors (500 seeds)', async () => {
  const seen = { new: 0, old: 0, torn: 0 };
  let tornCounted = 0;
  for (let seed = 1; seed <= 500; seed++) {
    const random = new Random(seed * 7919);
    const { fs, scheduler } = makeDisk(seed);
    const fd = fs.openSync('/d/f', 'wx+', 0o600);
    syncDirectorySync(fs, '/d');
    // The test's own model: what the file held at the last completed sync, and holds now.
    let synced = new Uint8Array(0);
    const steps = random.between(1, 30);
    for (let step = 0; step < steps; step++) {
      const size = fs.fstatSync(fd).size;
      const position = random.chance(0.5) ? size : random.int(size + 2000);
      const data = filled(random.between(1, 1500), random.between(1, 255));
      if (random.chance(0.5)) fs.writeSync(fd, data, 0, data.length, position);
      else await Promise.all([fs.write(fd, data, 0, data.length, position), scheduler.drain()]);
      if (random.chance(0.3)) {
        fs.fdatasyncSync(fd);
        synced = new Uint8Array(fs.readFileSync('/d/f'));
      }
    }
    const cache = new Uint8Array(fs.readFileSync('/d/f'));
    assert.deepEqual(fs.durableBytes('/d/f'), synced, `seed ${seed}: durable image is the last sync`);
    fs.crash('machine');
    const after = new Uint8Array(fs.readFileSync('/d/f'));
    assert.ok(
      after.length >= synced.length && after.length <= cache.length,
      `seed ${seed}: size ${after.length} outside ${synced.length}..${cache.length}`,
    );
    for (let start = 0; start < after.length; start += 512) {
      const fate = sectorFate(after, cache, synced, start);
      assert.ok(fate in seen, `seed ${seed}, sector ${start / 512}: ${fate}`);
      seen[fate as keyof typeof seen]++;
    }
    tornCounted += fs.stats.tornSectors;
  }
  assert.ok(seen.new > 0 && seen.old > 0 && seen.torn > 0, JSON.stringify(seen));
  assert.ok(tornCounted >= seen.torn, 'the statistics count every tear seen');
});

test('a rename is durable only once its directory is synced', () => {
  const { fs } = makeDisk(3, { crashOdds: { entryKept: 0 } });
  createDurable(fs, '/d/a', filled(100, 7));
  const inode = fs.statSync('/d/a').inode;
  fs.renameSync('/d/a', '/d/b');
  assert.deepEqual(fs.readdirSync('/d'), ['b']);
  assert.equal(fs.statSync('/d/b').inode, inode, 'a rename keeps the inode');
  assert.deepEqual(fs.listFiles('durable'), ['/d/a']);
  fs.crash('machine');
  assert.deepEqual(fs.readdirSync('/d'), ['a'], 'the unsynced rename was lost');
  assert.deepEqual(new Uint8Array(fs.readFileSync('/d/a')), filled(100, 7));

  fs.renameSync('/d/a', '/d/b');
  syncDirectorySync(fs, '/d');
  assert.deepEqual(fs.listFiles('durable'), ['/d/b']);
  fs.crash('machine');
  assert.deepEqual(fs.readdirSync('/d'), ['b']);
});

test("a rename's two names keep or lose it together: never both names, never neither (200 seeds)", () => {
  const outcomes = new Set<string>();
  for (let seed = 1; seed <= 200; seed++) {
    const { fs } = makeDisk(seed);
    createDurable(fs, '/d/a', filled(10, 1));
    createDurable(fs, '/d/b', filled(10, 2));
    fs.renameSync('/d/a', '/d/b');
    fs.crash('machine');
    const names = fs.readdirSync('/d').join(',');
    assert.ok(names === 'a,b' || names === 'b', `seed ${seed}: ${names}`);
    const b = fs.readFileSync('/d/b')[0];
    assert.equal(names === 'a,b' ? 2 : 1, b, `seed ${seed}: b holds the file its names say`);
    outcomes.add(names);
  }
  assert.equal(outcomes.size, 2, 'both outcomes happen');
});

test("a new file's entry may vanish in a machine crash until its directory is synced (200 seeds)", () => {
  const outcomes = new Set<string>();
  for (let seed = 1; seed <= 200; seed++) {
    const { fs } = makeDisk(seed);
    const fd = fs.openSync('/d/new', 'wx', 0o600);
    fs.writeSync(fd, filled(600, 3), 0, 600, null);
    fs.fdatasyncSync(fd);
    fs.crash('machine');
    const present = fs.existsSync('/d/new');
    // Its data was synced: if the file survived, all of it did.
    if (present) assert.deepEqual(new Uint8Array(fs.readFileSync('/d/new')), filled(600, 3));
    outcomes.add(present ? 'kept' : 'gone');
  }
  assert.deepEqual([...outcomes].sort(), ['gone', 'kept']);
});

test("with 'ordered' metadata a machine crash keeps a prefix of the entry changes, in order (200 seeds)", () => {
  const prefixes = new Set<string>();
  for (let seed = 1; seed <= 200; seed++) {
    const { fs } = makeDisk(seed, { metadata: 'ordered' });
    createDurable(fs, '/d/old', filled(10, 1));
    fs.mkdirSync('/e', 0o700);
    syncDirectorySync(fs, '/');
    for (const name of ['a', 'b', 'c']) fs.closeSync(fs.openSync(`/d/${name}`, 'wx', 0o600));
    fs.renameSync('/d/old', '/e/moved');
    fs.unlinkSync('/d/a');
    fs.crash('machine');
    const state = [...fs.listFiles()].join(' ');
    const allowed = [
      '/d/old',
      '/d/a /d/old',
      '/d/a /d/b /d/old',
      '/d/a /d/b /d/c /d/old',
      '/d/a /d/b /d/c /e/moved',
      '/d/b /d/c /e/moved',
    ];
    assert.ok(allowed.includes(state), `seed ${seed}: ${state}`);
    prefixes.add(state);
  }
  assert.equal(prefixes.size, 6, 'every prefix happens');
  // A directory sync commits every change before it, in any directory.
  const { fs } = makeDisk(1, { metadata: 'ordered', crashOdds: { entryKept: 0 } });
  fs.mkdirSync('/e', 0o700);
  fs.closeSync(fs.openSync('/d/f', 'wx', 0o600));
  syncDirectorySync(fs, '/e');
  fs.closeSync(fs.openSync('/d/g', 'wx', 0o600));
  fs.crash('machine');
  assert.deepEqual(fs.readdirSync('/d'), ['f']);
});

test('a directory made but not synced in its parent takes its synced files with it', () => {
  const { fs } = makeDisk(4, { crashOdds: { entryKept: 0 } });
  fs.mkdirSync('/d/sub/deeper', 0o700);
  const fd = fs.openSync('/d/sub/deeper/f', 'wx', 0o600);
  fs.writeSync(fd, filled(10, 1), 0, 10, null);
  fs.fdatasyncSync(fd);
  syncDirectorySync(fs, '/d/sub/deeper');
  syncDirectorySync(fs, '/d/sub');
  fs.crash('machine');
  assert.deepEqual(fs.readdirSync('/d'), []);
  assert.deepEqual(fs.listFiles(), []);
});

test('an unlink is visible at once, and undone by a machine crash unless the directory was synced', () => {
  const { fs } = makeDisk(5, { crashOdds: { entryKept: 0 } });
  createDurable(fs, '/d/f', filled(10, 4));
  fs.unlinkSync('/d/f');
  assert.equal(fs.existsSync('/d/f'), false);
  fs.crash('machine');
  assert.deepEqual(new Uint8Array(fs.readFileSync('/d/f')), filled(10, 4));
  fs.unlinkSync('/d/f');
  syncDirectorySync(fs, '/d');
  fs.crash('machine');
  assert.equal(fs.existsSync('/d/f'), false);
});

test('journal segment files created and removed are counted for the summary, other files not', () => {
  const { fs } = makeDisk(6);
  createDurable(fs, '/d/0000000000000001.seg', filled(8, 1));
  createDurable(fs, '/d/0000000000000002.seg', filled(8, 2));
  createDurable(fs, '/d/volume-0.img', filled(8, 3));
  fs.closeSync(fs.openSync('/d/0000000000000002.seg', 'r+'));
  fs.unlinkSync('/d/0000000000000001.seg');
  fs.unlinkSync('/d/volume-0.img');
  assert.equal(fs.stats.segmentsCreated, 2);
  assert.equal(fs.stats.segmentsRemoved, 1);
});

test('the atomic replace (write, fsync, rename, directory fsync) leaves the old file or the new one whole', () => {
  const outcomes = new Set<string>();
  for (let seed = 1; seed <= 200; seed++) {
    const random = new Random(seed);
    const { fs } = makeDisk(seed);
    createDurable(fs, '/d/state', filled(3000, 1));
    const steps: (() => void)[] = [];
    let fd = -1;
    steps.push(() => {
      fd = fs.openSync('/d/state.tmp', 'w', 0o600);
    });
    steps.push(() => fs.writeSync(fd, filled(2000, 2), 0, 2000, null));
    steps.push(() => fs.fsyncSync(fd));
    steps.push(() => fs.closeSync(fd));
    steps.push(() => fs.renameSync('/d/state.tmp', '/d/state'));
    steps.push(() => syncDirectorySync(fs, '/d'));
    const done = random.int(steps.length + 1);
    for (const step of steps.slice(0, done)) step();
    fs.crash('machine');
    const state = new Uint8Array(fs.readFileSync('/d/state'));
    const old = filled(3000, 1);
    const replaced = filled(2000, 2);
    const fate = Buffer.from(state).equals(old)
      ? 'old'
      : Buffer.from(state).equals(replaced)
        ? 'new'
        : 'mixed';
    assert.notEqual(fate, 'mixed', `seed ${seed}, crash after ${done} steps`);
    if (done === steps.length) assert.equal(fate, 'new', `seed ${seed}: the replace was complete`);
    outcomes.add(fate);
  }
  assert.deepEqual([...outcomes].sort(), ['new', 'old']);
});

test('a replace that skips the fsync before the rename can leave a renamed file without its data', () => {
  // The same protocol with a step left out: the disk must be hostile enough to show the defect.
  let broken = 0;
  for (let seed = 1; seed <= 100; seed++) {
    const { fs } = makeDisk(seed);
    createDurable(fs, '/d/state', filled(3000, 1));
    const fd = fs.openSync('/d/state.tmp', 'w', 0o600);
    fs.writeSync(fd, filled(2000, 2), 0, 2000, null);
    fs.closeSync(fd);
    fs.renameSync('/d/state.tmp', '/d/state');
    syncDirectorySync(fs, '/d');
    fs.crash('machine');
    if (!Buffer.from(fs.readFileSync('/d/state')).equals(filled(2000, 2))) broken++;
  }
  assert.ok(broken > 0);
});

test('asynchronous writes to different offsets complete out of order, each landing when it completes', async () => {
  let reordered = 0;
  for (let seed = 1; seed <= 20; seed++) {
    const { fs, scheduler } = makeDisk(seed, { ioDelayMsMax: 50 });
    const fd = fs.openSync('/d/f', 'wx+', 0o600);
    const completed: number[] = [];
    const writes = Array.from({ length: 8 }, (_, index) =>
      fs.write(fd, filled(512, index + 1), 0, 512, index * 512).then((count) => {
        assert.equal(count, 512);
        // Landed when it completed: visible now.
        assert.equal(fs.readFileSync('/d/f')[index * 512], index + 1);
        completed.push(index);
      }),
    );
    assert.equal(fs.readFileSync('/d/f').length, 0, 'nothing lands at issue');
    await Promise.all([...writes, scheduler.drain()]);
    const expected = concat(...Array.from({ length: 8 }, (_, index) => filled(512, index + 1)));
    assert.deepEqual(new Uint8Array(fs.readFileSync('/d/f')), expected);
    if (completed.some((index, order) => index !== order)) reordered++;
  }
  assert.ok(reordered > 0, 'some seed completes writes out of issue order');
});

test('appends with position null go to the end of what the descriptor wrote, in completion order', async () => {
  const { fs, scheduler } = makeDisk(6, { ioDelayMsMax: 20 });
  const fd = await Promise.all([fs.open('/d/log', 'wx', 0o600), scheduler.drain()]).then(([fd]) => fd);
  for (let round = 0; round < 5; round++) {
    await Promise.all([fs.write(fd, filled(100, round + 1), 0, 100, null), scheduler.drain()]);
  }
  const log = fs.readFileSync('/d/log');
  assert.equal(log.length, 500);
  for (let round = 0; round < 5; round++) assert.equal(log[round * 100], round + 1);
});

test('a sync covers what was in the cache when it was issued, not writes landing while it runs', async () => {
  const { fs, scheduler } = makeDisk(7, { syncDelayMsMax: 10 });
  const fd = fs.openSync('/d/f', 'wx+', 0o600);
  syncDirectorySync(fs, '/d');
  fs.writeSync(fd, filled(1024, 1), 0, 1024, 0);
  fs.fdatasyncSync(fd);
  fs.writeSync(fd, filled(512, 3), 0, 512, 0);
  const sync = fs.fdatasync(fd);
  // Written after the sync was issued: into a synced sector, and past the end.
  fs.writeSync(fd, filled(512, 2), 0, 512, 512);
  fs.writeSync(fd, filled(512, 4), 0, 512, 1024);
  await Promise.all([sync, scheduler.drain()]);
  assert.deepEqual(fs.durableBytes('/d/f'), concat(filled(512, 3), filled(512, 1)));
  assert.equal(fs.readFileSync('/d/f').length, 1536);
});

test('a sync completing after a later one never takes durability back', async () => {
  let inverted = 0;
  for (let seed = 1; seed <= 30; seed++) {
    const { fs, scheduler } = makeDisk(seed, { syncDelayMsMax: 30 });
    const fd = fs.openSync('/d/f', 'wx+', 0o600);
    syncDirectorySync(fs, '/d');
    const order: string[] = [];
    fs.writeSync(fd, filled(100, 1), 0, 100, null);
    const first = fs.fdatasync(fd).then(() => order.push('first'));
    fs.writeSync(fd, filled(100, 2), 0, 100, null);
    const second = fs.fdatasync(fd).then(() => order.push('second'));
    await Promise.all([first, second, scheduler.drain()]);
    assert.deepEqual(fs.durableBytes('/d/f'), concat(filled(100, 1), filled(100, 2)), `seed ${seed}`);
    if (order[0] === 'second') inverted++;
  }
  assert.ok(inverted > 0, 'some seed completes the later sync first');
});

test('a dead process never hears back: its calls in flight never settle', async () => {
  const { fs, scheduler } = makeDisk(8, { ioDelayMsMax: 10, syncDelayMsMax: 10 });
  createDurable(fs, '/d/f', filled(10, 1));
  const fd = fs.openSync('/d/f', 'r+');
  let settledCalls = 0;
  const count = () => {
    settledCalls++;
  };
  const calls = [
    fs.write(fd, filled(10, 2), 0, 10, 0),
    fs.fdatasync(fd),
    fs.read(fd, new Uint8Array(10), 0, 10, 0),
    fs.open('/d/g', 'wx', 0o600),
    fs.rename('/d/f', '/d/h'),
    fs.unlink('/d/f'),
    fs.close(fd),
    fs.write(999, filled(1, 1), 0, 1, 0),
  ];
  for (const call of calls) call.then(count, count);
  fs.crash('process');
  await scheduler.drain();
  await settled();
  assert.equal(settledCalls, 0);
  assert.equal(fs.pendingOperations, 0);
  assert.equal(fs.stats.landedAtCrash + fs.stats.droppedAtCrash, calls.length);
});

test("a dead process's handle refuses calls; a new life's handle works", async () => {
  const { fs, scheduler } = makeDisk(9);
  const first = fs.forProcess();
  first.mkdirSync('/d/a', 0o700);
  fs.crash('process');
  assert.throws(() => first.openSync('/d/a/x', 'wx'), AssertionFailure);
  let heard = false;
  first.open('/d/a/x', 'wx').then(
    () => {
      heard = true;
    },
    () => {
      heard = true;
    },
  );
  await scheduler.drain();
  await settled();
  assert.equal(heard, false);
  assert.equal(fs.existsSync('/d/a/x'), false);
  const second = fs.forProcess();
  const [fd] = await Promise.all([second.open('/d/a/x', 'wx', 0o600), scheduler.drain()]);
  assert.ok(fd > 0);
});

test('a write in flight at a process crash lands whole, in part, or not at all (100 seeds)', () => {
  const outcomes = new Set<string>();
  for (let seed = 1; seed <= 100; seed++) {
    const { fs } = makeDisk(seed);
    createDurable(fs, '/d/f', filled(1000, 1));
    const fd = fs.openSync('/d/f', 'r+');
    void fs.write(fd, filled(1000, 2), 0, 1000, 0);
    fs.crash('process');
    const after = fs.readFileSync('/d/f');
    const landed = after.indexOf(1);
    const prefix = landed < 0 ? 1000 : landed;
    assert.ok(
      after.subarray(0, prefix).every((byte) => byte === 2),
      `seed ${seed}`,
    );
    assert.ok(
      after.subarray(prefix).every((byte) => byte === 1),
      `seed ${seed}`,
    );
    outcomes.add(prefix === 0 ? 'none' : prefix === 1000 ? 'whole' : 'part');
  }
  assert.deepEqual([...outcomes].sort(), ['none', 'part', 'whole']);
});

test('a gathered write copies its pieces when it completes, and lands whole, in part or not at all at a process crash (100 seeds)', async () => {
  const { fs, scheduler } = makeDisk(3, { ioDelayMsMax: 20 });
  const fd = fs.openSync('/d/g', 'wx+', 0o600);
  const first = filled(300, 1);
  const written = fs.writev(fd, [first, filled(200, 2)], 100);
  first.fill(7); // changed before completion: the kernel copies at completion, so 7 lands
  assert.equal(fs.readFileSync('/d/g').length, 0, 'nothing lands at issue');
  const [count] = await Promise.all([written, scheduler.drain()]);
  assert.equal(count, 500);
  assert.deepEqual(
    new Uint8Array(fs.readFileSync('/d/g')),
    concat(new Uint8Array(100), filled(300, 7), filled(200, 2)),
  );
  const outcomes = new Set<string>();
  for (let seed = 1; seed <= 100; seed++) {
    const disk = makeDisk(seed).fs;
    createDurable(disk, '/d/f', filled(1000, 1));
    const file = disk.openSync('/d/f', 'r+');
    void disk.writev(file, [filled(400, 2), filled(600, 3)], 0);
    disk.crash('process');
    const after = disk.readFileSync('/d/f');
    const landed = after.indexOf(1);
    const prefix = landed < 0 ? 1000 : landed;
    const expected = concat(filled(400, 2), filled(600, 3)).subarray(0, prefix);
    assert.deepEqual(
      new Uint8Array(after.subarray(0, prefix)),
      expected,
      `seed ${seed}: a prefix of the pieces`,
    );
    assert.ok(
      after.subarray(prefix).every((byte) => byte === 1),
      `seed ${seed}`,
    );
    outcomes.add(prefix === 0 ? 'none' : prefix === 1000 ? 'whole' : 'part');
  }
  assert.deepEqual([...outcomes].sort(), ['none', 'part', 'whole']);
});

test('failures have the shape node:fs gives them', () => {
  const real = nodeFs.mkdtempSync(join(tmpdir(), 'cyclerep-simfs-'));
  try {
    const { fs } = makeDisk(10);
    nodeFs.writeFileSync(join(real, 'f'), 'x');
    fs.closeSync(fs.openSync('/d/f', 'wx'));
    const pairs: [() => unknown, () => unknown][] = [
      [() => nodeFs.openSync(join(real, 'missing'), 'r'), () => fs.openSync('/d/missing', 'r')],
      [() => nodeFs.openSync(join(real, 'f'), 'wx'), () => fs.openSync('/d/f', 'wx')],
      [() => nodeFs.statSync(join(real, 'missing')), () => fs.statSync('/d/missing')],
      [() => nodeFs.unlinkSync(join(real, 'missing')), () => fs.unlinkSync('/d/missing')],
      [() => nodeFs.readdirSync(join(real, 'missing')), () => fs.readdirSync('/d/missing')],
      [() => nodeFs.openSync(join(real, 'missing', 'f'), 'wx'), () => fs.openSync('/d/missing/f', 'wx')],
      [() => nodeFs.openSync(real, 'r+'), () => fs.openSync('/d', 'r+')],
      [
        () => nodeFs.renameSync(join(real, 'missing'), join(real, 'g')),
        () => fs.renameSync('/d/missing', '/d/g'),
      ],
    ];
    for (const [realCall, simCall] of pairs) {
      const expected = catchError(realCall);
      const actual = catchError(simCall);
      assert.equal(actual.code, expected.code);
      assert.equal(actual.errno, expected.errno);
      assert.equal(actual.syscall, expected.syscall);
      assert.equal(actual.message, expected.message.replaceAll(real, '/d'));
      assert.equal(actual.path, expected.path?.replaceAll(real, '/d'));
    }
    const readOnly = nodeFs.openSync(join(real, 'f'), 'r');
    const simReadOnly = fs.openSync('/d/f', 'r');
    const expected = catchError(() => nodeFs.writeSync(readOnly, Buffer.from('y'), 0, 1, 0));
    const actual = catchError(() => fs.writeSync(simReadOnly, Buffer.from('y'), 0, 1, 0));
    nodeFs.closeSync(readOnly);
    assert.deepEqual(
      [actual.code, actual.errno, actual.syscall, actual.message],
      [expected.code, expected.errno, expected.syscall, expected.message],
    );
  } finally {
    nodeFs.rmSync(real, { recursive: true, force: true });
  }
});

function catchError(action: () => unknown): NodeJS.ErrnoException {
  try {
    action();
  } catch (error) {
    return error as NodeJS.ErrnoException;
  }
  assert.fail('expected a failure');
}

test('injected ENOSPC and EIO fail the chosen calls, as node:fs would, until spent or cancelled', async () => {
  const { fs, scheduler } = makeDisk(11);
  const fd = fs.openSync('/d/f', 'wx+', 0o600);
  const full = fs.failWith({ call: 'write', code: 'ENOSPC', times: 2 });
  const error = catchError(() => fs.writeSync(fd, filled(1, 1), 0, 1, null));
  assert.equal(error.message, 'ENOSPC: no space left on device, write');
  assert.deepEqual([error.code, error.errno, error.syscall, error.path], ['ENOSPC', -28, 'write', undefined]);
  const [rejection] = await Promise.all([
    fs.write(fd, filled(1, 1), 0, 1, null).then(
      () => assert.fail('resolved'),
      (failure: NodeJS.ErrnoException) => failure,
    ),
    scheduler.drain(),
  ]);
  assert.equal(rejection.message, 'ENOSPC: no space left on device, write');
  assert.equal(full.fired, 2);
  assert.equal(fs.writeSync(fd, filled(1, 1), 0, 1, null), 1, 'spent after two');
  assert.equal(fs.readFileSync('/d/f').length, 1, 'the failed writes wrote nothing');

  const broken = fs.failWith({
    call: ['open', 'rename'],
    code: 'EIO',
    path: (path) => path.endsWith('.tmp'),
  });
  const openError = catchError(() => fs.openSync('/d/x.tmp', 'w'));
  assert.equal(openError.message, "EIO: i/o error, open '/d/x.tmp'");
  assert.deepEqual([openError.code, openError.errno, openError.path], ['EIO', -5, '/d/x.tmp']);
  assert.equal(fs.existsSync('/d/x.tmp'), false);
  fs.closeSync(fs.openSync('/d/x', 'w'));
  broken.cancel();
  fs.closeSync(fs.openSync('/d/x.tmp', 'w'));
  fs.failWith({ call: 'rename', code: 'EIO', path: '/d/x', times: 1 });
  const renameError = catchError(() => fs.renameSync('/d/x.tmp', '/d/x'));
  assert.equal(renameError.message, "EIO: i/o error, rename '/d/x.tmp' -> '/d/x'", 'a rule on the target');
  assert.deepEqual(fs.readdirSync('/d'), ['f', 'x', 'x.tmp']);
  assert.equal(fs.stats.injectedFaults, 4);
});

test('a failed fdatasync makes nothing durable, and its pages are never written (as Linux drops them)', () => {
  const { fs } = makeDisk(12, { crashOdds: { sectorKept: 1, tornSector: 0, entryKept: 1 } });
  createDurable(fs, '/d/f', filled(512, 1));
  const fd = fs.openSync('/d/f', 'r+');
  fs.writeSync(fd, filled(512, 2), 0, 512, 0);
  fs.failWith({ call: 'fdatasync', code: 'EIO', times: 1 });
  assert.equal(
    codeOf(() => fs.fdatasyncSync(fd)),
    'EIO',
  );
  assert.deepEqual(fs.durableBytes('/d/f'), filled(512, 1));
  fs.fdatasyncSync(fd);
  assert.deepEqual(fs.durableBytes('/d/f'), filled(512, 1), 'the retry reports success and writes nothing');
  fs.crash('process');
  assert.deepEqual(new Uint8Array(fs.readFileSync('/d/f')), filled(512, 2), 'the cache still shows it');
  fs.crash('machine');
  assert.deepEqual(
    new Uint8Array(fs.readFileSync('/d/f')),
    filled(512, 1),
    'even a crash keeping every dirty sector',
  );
});

test('a full disk cuts a write short, then fails the next with ENOSPC; space comes back when a file goes', () => {
  const { fs } = makeDisk(13, { capacityBytes: 3 * 4096 });
  const fd = fs.openSync('/d/a', 'wx', 0o600);
  assert.equal(fs.writeSync(fd, filled(4 * 4096, 1), 0, 4 * 4096, null), 3 * 4096);
  assert.equal(
    codeOf(() => fs.writeSync(fd, filled(1, 1), 0, 1, null)),
    'ENOSPC',
  );
  // Overwriting what is allocated needs no room; a sparse file needs none for its holes.
  assert.equal(fs.writeSync(fd, filled(100, 2), 0, 100, 0), 100);
  const sparse = fs.openSync('/d/sparse', 'wx', 0o600);
  fs.ftruncateSync(sparse, 1 << 30);
  assert.equal(fs.fstatSync(sparse).size, 1 << 30);
  fs.unlinkSync('/d/a');
  assert.equal(
    codeOf(() => fs.writeSync(sparse, filled(1, 1), 0, 1, 0)),
    'ENOSPC',
    'open: still held',
  );
  fs.closeSync(fd);
  assert.equal(fs.usedBytes, 0);
  assert.equal(fs.writeSync(sparse, filled(5000, 3), 0, 5000, 1 << 20), 5000);
  assert.equal(fs.usedBytes, 2 * 4096);
  assert.ok(fs.stats.diskFull >= 2);
});

test('statfs reports the capacity left as writes take it and unlinks give it back, without drawing delays', async () => {
  const { fs } = makeDisk(17, { capacityBytes: 8 * 4096 });
  assert.deepEqual(fs.statfsSync('/d'), { freeBytes: 8 * 4096, totalBytes: 8 * 4096 });
  const fd = fs.openSync('/d/a', 'wx', 0o600);
  fs.writeSync(fd, filled(5000, 1), 0, 5000, null);
  assert.equal(fs.statfsSync('/d').freeBytes, 6 * 4096, 'whole allocation blocks are taken');
  fs.closeSync(fd);
  fs.unlinkSync('/d/a');
  assert.equal(fs.statfsSync('/d/').freeBytes, 8 * 4096);
  assert.equal(
    codeOf(() => fs.statfsSync('/nowhere')),
    'ENOENT',
  );
  const unlimited = makeDisk(17).fs.statfsSync('/d');
  assert.ok(unlimited.freeBytes >= 2 ** 50 && unlimited.freeBytes === unlimited.totalBytes);
  // Asking changes nothing a run depends on: the same seed, asked or not, gives the same delays.
  const delaysOf = async (ask: boolean): Promise<number[]> => {
    const { fs: disk, scheduler } = makeDisk(5);
    const file = disk.openSync('/d/f', 'wx', 0o600);
    const times: number[] = [];
    for (let index = 0; index < 8; index++) {
      if (ask) disk.statfsSync('/d');
      void disk.write(file, filled(10, index), 0, 10, index * 10).then(() => times.push(scheduler.nowMs));
    }
    await scheduler.drain();
    return times;
  };
  const quiet = await delaysOf(false);
  assert.deepEqual(await delaysOf(true), quiet);
});

test('a call in flight holds its file: space comes back when the last handle goes', async () => {
  const { fs, scheduler } = makeDisk(16, { capacityBytes: 4 * 4096 });
  const fd = fs.openSync('/d/f', 'wx', 0o600);
  const write = fs.write(fd, filled(8192, 1), 0, 8192, 0);
  const closed = fs.close(fd);
  fs.unlinkSync('/d/f');
  await Promise.all([write, closed, scheduler.drain()]);
  assert.equal(fs.usedBytes, 0);
  const again = fs.openSync('/d/g', 'wx', 0o600);
  assert.equal(fs.writeSync(again, filled(4 * 4096, 2), 0, 4 * 4096, 0), 4 * 4096);
  void fs.write(again, filled(10, 3), 0, 10, 0);
  fs.unlinkSync('/d/g');
  fs.crash('process');
  assert.equal(fs.usedBytes, 0, 'files only a dead process held are gone');
});

test('files behave as POSIX says: inodes, modes, flags, positions, unlinked open files, listings', () => {
  const { fs } = makeDisk(14);
  const a = fs.openSync('/d/a', 'wx+', 0o640);
  const stats = fs.fstatSync(a);
  assert.deepEqual([stats.size, stats.mode, stats.isDirectory], [0, 0o640, false]);
  assert.match(stats.inode, /^\d+$/);
  fs.closeSync(fs.openSync('/d/c', 'w'));
  fs.closeSync(fs.openSync('/d/b', 'w'));
  assert.deepEqual(fs.readdirSync('/d'), ['a', 'b', 'c']);
  const inodes = ['/d/a', '/d/b', '/d/c'].map((path) => fs.statSync(path).inode);
  assert.equal(new Set(inodes).size, 3, 'inode numbers are unique');
  assert.equal(fs.statSync('/d').isDirectory, true);

  // Positions: null writes at the end of what the descriptor wrote; a given one leaves it alone.
  fs.writeSync(a, filled(10, 1), 0, 10, null);
  fs.writeSync(a, filled(5, 2), 0, 5, 100);
  fs.writeSync(a, filled(10, 3), 0, 10, null);
  const bytes = fs.readFileSync('/d/a');
  assert.deepEqual([bytes.length, bytes[0], bytes[10], bytes[50], bytes[100]], [105, 1, 3, 0, 2]);

  // An unlinked file stays usable through its descriptor.
  fs.unlinkSync('/d/a');
  assert.equal(fs.existsSync('/d/a'), false);
  fs.writeSync(a, filled(1, 9), 0, 1, 0);
  assert.equal(fs.fstatSync(a).size, 105);
  fs.closeSync(a);
  assert.equal(
    codeOf(() => fs.closeSync(a)),
    'EBADF',
  );

  // Flags.
  const readOnly = fs.openSync('/d/b', 'r');
  assert.equal(
    codeOf(() => fs.writeSync(readOnly, filled(1, 1), 0, 1, 0)),
    'EBADF',
  );
  assert.equal(
    codeOf(() => fs.ftruncateSync(readOnly, 0)),
    'EINVAL',
  );
  assert.equal(
    codeOf(() => fs.openSync('/d/b', 'wx')),
    'EEXIST',
  );
  assert.equal(
    codeOf(() => fs.openSync('/d/b', 'wx+')),
    'EEXIST',
  );
  assert.equal(
    codeOf(() => fs.openSync('/d/none', 'r+')),
    'ENOENT',
  );
  const writer = fs.openSync('/d/b', 'r+');
  fs.writeSync(writer, filled(600, 4), 0, 600, 0);
  fs.closeSync(fs.openSync('/d/b', 'w'));
  assert.equal(fs.statSync('/d/b').size, 0, "'w' truncates");

  // Reads past the end, holes, truncation.
  fs.truncateSync('/d/b', 2000);
  assert.equal(
    fs.readFileSync('/d/b').every((byte) => byte === 0),
    true,
    'a truncate leaves no old bytes',
  );

  // Directories.
  assert.equal(
    codeOf(() => fs.openSync('/d', 'w')),
    'EISDIR',
  );
  assert.equal(
    codeOf(() => fs.unlinkSync('/d')),
    'EISDIR',
  );
  assert.equal(
    codeOf(() => fs.readdirSync('/d/b')),
    'ENOTDIR',
  );
  assert.equal(
    codeOf(() => fs.readFileSync('/d')),
    'EISDIR',
  );
  assert.equal(
    codeOf(() => fs.mkdirSync('/d/b', 0o700)),
    'EEXIST',
  );
  assert.equal(
    codeOf(() => fs.mkdirSync('/d/b/x', 0o700)),
    'ENOTDIR',
  );
  fs.mkdirSync('/d', 0o700);
  fs.removeIfPresentSync('/d/none');
  fs.removeIfPresentSync('/d/c');
  assert.deepEqual(fs.listFiles(), ['/d/b']);
});

test('reads return the bytes there, zeroes in holes, and nothing past the end', async () => {
  const { fs, scheduler } = makeDisk(15);
  const fd = fs.openSync('/d/f', 'wx+', 0o600);
  fs.writeSync(fd, filled(10, 5), 0, 10, 100);
  const buffer = new Uint8Array(30).fill(0xff);
  const [count] = await Promise.all([fs.read(fd, buffer, 0, 30, 95), scheduler.drain()]);
  assert.equal(count, 15);
  assert.deepEqual([...buffer.subarray(0, 15)], [0, 0, 0, 0, 0, ...filled(10, 5)]);
  assert.equal(buffer[15], 0xff, 'nothing written past what was read');
  const [none] = await Promise.all([fs.read(fd, buffer, 0, 30, 500), scheduler.drain()]);
  assert.equal(none, 0);
});

test('the same seed replays the same disk', async () => {
  async function run(seed: number): Promise<string> {
    const random = new Random(seed);
    const { fs, scheduler } = makeDisk(seed);
    const fd = fs.openSync('/d/f', 'wx+', 0o600);
    const calls: Promise<unknown>[] = [];
    for (let i = 0; i < 50; i++) {
      const data = filled(random.between(1, 900), random.between(1, 255));
      calls.push(fs.write(fd, data, 0, data.length, random.chance(0.5) ? null : random.int(4000)));
      if (random.chance(0.2)) calls.push(fs.fdatasync(fd));
    }
    await Promise.all([...calls, scheduler.drain()]);
    fs.crash('machine');
    return JSON.stringify({ stats: fs.stats, bytes: Buffer.from(fs.readFileSync('/d/f')).toString('hex') });
  }
  assert.equal(await run(42), await run(42));
});
