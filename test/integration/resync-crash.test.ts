// Proves, with real processes, what issue 12 asks of a resync under crashes and readers: kill -9
// of the secondary in the middle of a resync, and kill -9 of the primary, each resume the resync
// where it was (the second session copies only what the bitmap still marks, not the whole
// bitmap again) and converge byte for byte; and an independent reader of the secondary's NBD
// exports, reading the image again and again while the resync stages its cycles, only ever sees
// consistent cuts of the self-describing blocks. The link runs through a shaped proxy (1 MiB/s
// towards the secondary) and the bitmap's chunks are 1 MiB, so the copy of the load's four 1 MiB
// regions lasts seconds and a test can act in its middle. The primary's status shows the copy's
// rate and ETA meanwhile. And a secondary whose disk (a small tmpfs, so this file needs root, like
// fail-stop.test.ts) cannot hold a staged resync refuses it with the numbers before the disk fills
// and resumes once given room.
import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import { mkdirSync, readFileSync } from 'node:fs';
import { test } from 'node:test';
import { decodeTrackingState } from '../../src/storage/tracking-file.ts';
import { checkCut } from '../../src/workload/blocks.ts';
import {
  blockBytes,
  freePort,
  regions,
  type Site,
  status,
  volumeSizes,
  type Workspace,
  waitForStatus,
  workspacesCleanedAfterTests,
} from './harness.ts';
import { ShapedLink } from './shaped-link.ts';

const newWorkspace = workspacesCleanedAfterTests();
const mebibyte = 1024 * 1024;
const granularity = mebibyte;
const journal = `{ capacity: ${32 * mebibyte}, segmentSize: 8MiB }`;
// The journal switches the frozen dr1 to tracking at half its capacity (not its time away, so a
// kill during the resync does not fold the cycles written meanwhile into the bitmap); one bit per
// MiB, so the fast load's writes mark each load region's whole MiB.
const tracking = `tracking: { journalFraction: 0.5, granularity: ${granularity}, copyWindow: 1MiB }`;
const resyncLinkBytesPerSecond = mebibyte;
/** The load during and after the resync: light, so the copy gets most of the shaped link. */
const slowLoad = { LOAD_THINK_MS: '50' };

interface LinkStatus {
  name: string;
  mode: string;
  stored: number;
  lagBytes: number;
  resyncBytesLeft: number;
  resyncBytesCopied: number;
  resyncBytesPerSecond: number;
  resyncEtaSeconds: number | null;
}

function dr1Of(status: Record<string, unknown>): LinkStatus | undefined {
  return (status.secondaries as LinkStatus[] | undefined)?.find((link) => link.name === 'dr1');
}

interface AwayPair {
  workspace: Workspace;
  secondary: { path: string; port: number; httpPort: number };
  primary: { path: string; httpPort: number };
  link: ShapedLink;
  dr1: Site;
  load: Site;
  /** Bytes the bitmap marked when dr1 went to tracking. */
  bitmapBytes: number;
}

/**
 * dr1 is frozen under a fast load until the primary tracks it in a bitmap covering all four load
 * regions, then thawed behind a 1 MiB/s link under a light load: the returned pair is at the start
 * of a resync of 4 MiB.
 */
async function pairAtResyncStart(
  options: { secondaryExtra?: string; secondaryDisk?: (dataDir: string) => void } = {},
): Promise<AwayPair> {
  const workspace = newWorkspace();
  const secondary = await workspace.secondaryConfig('dr1', { extra: options.secondaryExtra ?? '' });
  options.secondaryDisk?.(workspace.path('dr1'));
  const link = new ShapedLink(secondary.port, 1024 * mebibyte);
  const linkPort = await freePort();
  await link.listen(linkPort);
  const primary = await workspace.primaryConfig({
    secondaries: [{ name: 'dr1', port: linkPort }],
    journal,
    extra: tracking,
  });
  const dr1 = workspace.startSecondary(secondary.path);
  await dr1.waitForEvent('secondary-started');

  // A fast load while dr1 is frozen: the journal reaches the tracking threshold, and every load
  // region is marked in the bitmap.
  const fill = workspace.startLoadPrimary(primary.path, { LOAD_THINK_MS: '0', LOAD_SETTLE_MS: '0' });
  await waitForStatus(primary.httpPort, (s) => dr1Of(s)?.mode === 'streaming' && (dr1Of(s)?.stored ?? 0) > 0);
  dr1.kill('SIGSTOP');
  const tracked = await waitForStatus(
    primary.httpPort,
    (s) => dr1Of(s)?.mode === 'tracking' && (dr1Of(s)?.resyncBytesLeft ?? 0) >= regions.length * granularity,
    60_000,
  );
  assert.equal(await fill.stop(), 0);
  // The same primary again (restoring the bitmap it saved), with a light load.
  const load = workspace.startLoadPrimary(primary.path, slowLoad);
  await waitForStatus(
    primary.httpPort,
    (s) => dr1Of(s)?.mode === 'tracking' && load.stdout.includes('"writes"'),
  );
  link.bytesPerSecond = resyncLinkBytesPerSecond;
  dr1.kill('SIGCONT');
  const bitmapBytes = dr1Of(tracked)?.resyncBytesLeft ?? 0;
  return { workspace, secondary, primary, link, dr1, load, bitmapBytes };
}

/** A resync in its middle: some chunks stored (so cleared), some left. */
function resyncHalfway(bitmapBytes: number): (status: Record<string, unknown>) => boolean {
  return (s) => {
    const dr1 = dr1Of(s);
    return (
      dr1?.mode === 'resync' &&
      dr1.resyncBytesCopied > 0 &&
      dr1.resyncBytesLeft > 0 &&
      dr1.resyncBytesLeft < bitmapBytes
    );
  };
}

/** Pauses the load, waits until dr1 stored everything, stops every process, compares the images. */
async function convergeAndCompare(pair: AwayPair, load: Site, dr1: Site): Promise<void> {
  load.kill('SIGUSR2');
  await load.waitForOutput('"paused"', 30_000);
  pair.link.bytesPerSecond = 1024 * mebibyte;
  await waitForStatus(
    pair.primary.httpPort,
    (s) => dr1Of(s)?.mode === 'streaming' && dr1Of(s)?.lagBytes === 0 && dr1Of(s)?.stored === s.closed,
    60_000,
  );
  assert.equal(await load.stop(), 0);
  assert.equal(await dr1.stop(), 0);
  await pair.link.close();
  pair.workspace.assertReplica('dr1');
}

function numberField(entry: Record<string, unknown> | undefined, field: string): number {
  const value = entry?.[field];
  assert.equal(typeof value, 'number', `${field} in ${JSON.stringify(entry)}`);
  return value as number;
}

test('kill -9 of the secondary in the middle of a resync: it resumes without starting over and converges', {
  timeout: 180_000,
}, async () => {
  const pair = await pairAtResyncStart();
  const { load } = pair;
  const halfway = await waitForStatus(pair.primary.httpPort, resyncHalfway(pair.bitmapBytes), 60_000);
  pair.dr1.kill('SIGKILL');
  await pair.dr1.exited;
  const interrupted = await load.waitForEvent('resync-interrupted');
  const dr1 = pair.workspace.startSecondary(pair.secondary.path);
  const complete = await load.waitForEvent('resync-complete', 60_000);

  const sessions = load.events('resync-started');
  assert.ok(sessions.length >= 2, `two resync sessions: ${JSON.stringify(sessions)}`);
  const initialBytes = numberField(sessions[0], 'chunks') * granularity;
  const resumedBytes = numberField(sessions.at(-1), 'chunks') * granularity;
  const copiedBytes =
    load.events('resync-interrupted').reduce((sum, entry) => sum + numberField(entry, 'copiedBytes'), 0) +
    numberField(complete, 'copiedBytes');
  const figures = `bitmap ${initialBytes} bytes at the start, ${resumedBytes} when resumed; copied ${numberField(interrupted, 'copiedBytes')} before the kill (status halfway: ${JSON.stringify(dr1Of(halfway))}), ${copiedBytes} in all`;
  console.log(`secondary kill -9: ${figures}`);
  assert.equal(initialBytes, pair.bitmapBytes, figures);
  assert.ok(resumedBytes < initialBytes, `the resumed resync copies less than the whole bitmap: ${figures}`);
  assert.ok(copiedBytes < 2 * initialBytes, `the resync did not start over: ${figures}`);
  assert.ok(
    numberField(complete, 'copiedBytes') <= resumedBytes,
    `the second session copied no more than its bitmap: ${figures}`,
  );
  await convergeAndCompare(pair, load, dr1);
});

test('kill -9 of the primary in the middle of a resync: it resumes from its saved bitmap and converges', {
  timeout: 180_000,
}, async () => {
  const pair = await pairAtResyncStart();
  const bitmapPath = pair.workspace.path('primary', 'tracking', 'dr1.bitmap');
  const volumeBlockCounts = volumeSizes.map((size) => size / blockBytes);
  // The bitmap on disk must already show chunks cleared by the resync, with some left.
  let savedBytes = 0;
  await waitForStatus(
    pair.primary.httpPort,
    (s) => {
      if (!resyncHalfway(pair.bitmapBytes)(s)) return false;
      const state = decodeTrackingState(bitmapPath, readFileSync(bitmapPath), volumeBlockCounts);
      savedBytes = countBits(state.bits) * state.chunkBlocks * blockBytes;
      return savedBytes > 0 && savedBytes < pair.bitmapBytes;
    },
    60_000,
  );
  pair.load.kill('SIGKILL');
  await pair.load.exited;
  const load = pair.workspace.startLoadPrimary(pair.primary.path, slowLoad);
  const complete = await load.waitForEvent('resync-complete', 60_000);
  const resumed = load.events('resync-started')[0];
  const resumedBytes = numberField(resumed, 'chunks') * granularity;
  const figures = `bitmap ${pair.bitmapBytes} bytes at the start, ${savedBytes} saved when the primary was killed, ${resumedBytes} when it resumed; copied ${numberField(complete, 'copiedBytes')} after the restart`;
  console.log(`primary kill -9: ${figures}`);
  assert.equal(load.events('resync-full').length, 0, figures);
  assert.ok(resumedBytes <= savedBytes, `resumed from the saved bitmap: ${figures}`);
  assert.ok(numberField(complete, 'copiedBytes') < pair.bitmapBytes, `did not start over: ${figures}`);
  await convergeAndCompare(pair, load, pair.dr1);
});

test('during a resync, a reader of the secondary’s NBD exports only ever sees consistent images', {
  timeout: 180_000,
}, async () => {
  const nbdPort = await freePort();
  const pair = await pairAtResyncStart({ secondaryExtra: `nbd: { listen: 127.0.0.1:${nbdPort} }` });
  let snapshots = 0;
  let duringResync = 0;
  let skippedRacingApply = 0;
  const rates: string[] = [];
  const deadline = Date.now() + 90_000;
  for (;;) {
    assert.ok(Date.now() < deadline, `the resync did not end within 90 s (${snapshots} snapshots)`);
    const before = await status(pair.secondary.httpPort);
    const primaryBefore = await status(pair.primary.httpPort);
    const images = await Promise.all(
      volumeSizes.map((_, index) =>
        readExport(nbdPort, `vol${index}`, pair.workspace.path(`read-${index}.img`)),
      ),
    );
    const after = await status(pair.secondary.httpPort);
    const primaryAfter = dr1Of(await status(pair.primary.httpPort));
    // An apply that ran during the copy could tear it across blocks (each NBD read sees one
    // image, a copy of many reads does not); the images to judge are those no apply crossed.
    if (before.applied !== after.applied) {
      skippedRacingApply++;
    } else {
      snapshots++;
      const cut = checkCut(images, regions, blockBytes);
      assert.ok(
        cut.consistent,
        `snapshot ${snapshots} at applied ${after.applied}: ${cut.problems.slice(0, 5).join('\n')}`,
      );
      const staged = (after.stored as number) > (after.applied as number);
      if (dr1Of(primaryBefore)?.mode === 'resync' && primaryAfter?.mode === 'resync' && staged)
        duringResync++;
    }
    if (
      primaryAfter?.mode === 'resync' &&
      primaryAfter.resyncBytesPerSecond > 0 &&
      primaryAfter.resyncEtaSeconds !== null
    )
      rates.push(
        `${Math.round(primaryAfter.resyncBytesPerSecond)} B/s, ETA ${primaryAfter.resyncEtaSeconds.toFixed(1)} s`,
      );
    // Once streaming, cycles apply every ~100 ms and most copies would cross one: stop here.
    if (primaryAfter?.mode === 'streaming') break;
  }
  console.log(
    `NBD reader: ${snapshots} consistent snapshots, ${duringResync} of them during the resync with cycles staged, ${skippedRacingApply} skipped (an apply crossed them)`,
  );
  assert.ok(duringResync >= 3, `snapshots during the resync: ${duringResync}`);
  // The status measured the copy's rate and an ETA while it ran (shaped link: about 1 MiB/s).
  console.log(
    `resync rate and ETA as the primary's status gave them (${rates.length} readings): ${[...rates.slice(0, 3), '...', ...rates.slice(-3)].join('; ')}`,
  );
  assert.ok(rates.length > 0, 'a rate and an ETA during the resync');
  await convergeAndCompare(pair, pair.load, pair.dr1);
});

test('a secondary whose disk cannot stage a resync refuses it with the numbers before it fills, and resumes once given room', {
  timeout: 180_000,
}, async () => {
  let mounted: string | null = null;
  try {
    // dr1 stores a few cycles before it is frozen (the volumes are sparse; the load writes 4 MiB of
    // distinct blocks, so a cycle holds at most that, and up to 4 are in flight): 40 MiB is room for
    // them, and below the 64 MiB a staged resync leaves free, so the resync is refused at once. (5 MiB
    // was too little on a quiet machine, where the fast load fills its cycles: the journal's first
    // write of the resumed session failed with ENOSPC, in about half the runs.)
    const pair = await pairAtResyncStart({
      secondaryExtra: 'journal: { segmentSize: 8MiB }\nshutdown: { timeoutMs: 5000, faultStatusMs: 0 }',
      secondaryDisk: (dataDir) => {
        mountTmpfs(dataDir, '40m');
        mounted = dataDir;
      },
    });
    const refused = await pair.dr1.waitForEvent('staging-space-short', 60_000);
    console.log(`no room to stage: ${JSON.stringify(refused)}`);
    const applied = numberField(refused, 'applied');
    assert.ok(numberField(refused, 'stored') > applied, JSON.stringify(refused));
    assert.ok(numberField(refused, 'stagedBytes') >= 0, JSON.stringify(refused));
    assert.ok(numberField(refused, 'freeBytes') < 40 * mebibyte, JSON.stringify(refused));
    assert.equal(numberField(refused, 'freeBytesMin'), 64 * mebibyte);
    assert.equal(
      numberField(refused, 'volumeBytes'),
      volumeSizes.reduce((sum, size) => sum + size, 0),
    );
    assert.match(String(refused.reason), /resync\.staging: in-place/);
    const dr1Status = await status(pair.secondary.httpPort);
    const shortage = (dr1Status.staging as { shortage: Record<string, unknown> | null }).shortage;
    assert.ok(shortage && numberField(shortage, 'stagedBytes') >= 0, JSON.stringify(dr1Status.staging));
    assert.equal(dr1Status.consistent, true);
    const primaryEvents = () =>
      pair.load.events('link-refused').filter((entry) => /staging-space-short/.test(String(entry.reason)));
    await waitForStatus(pair.primary.httpPort, () => primaryEvents().length > 0);
    assert.equal(pair.dr1.events('storage-failed').length, 0, 'the disk never filled');

    // Room is given: the refusals stop and the resync goes on, with no restart.
    spawnSync('mount', ['-o', 'remount,size=256m', mounted as unknown as string]);
    await pair.load.waitForEvent('resync-complete', 90_000);
    await convergeAndCompare(pair, pair.load, pair.dr1);
  } finally {
    if (mounted) spawnSync('umount', ['-l', mounted]);
  }
});

/** A tmpfs of `size` at `dir`: a disk that really fills, with ENOSPC from the kernel (needs root). */
function mountTmpfs(dir: string, size: string): void {
  mkdirSync(dir, { recursive: true });
  const result = spawnSync('mount', ['-t', 'tmpfs', '-o', `size=${size}`, 'tmpfs', dir], {
    encoding: 'utf8',
  });
  assert.equal(result.status, 0, `cannot mount a tmpfs at ${dir} (this test needs root): ${result.stderr}`);
}

/** The export's bytes, copied by nbdcopy into `path`. */
async function readExport(port: number, name: string, path: string): Promise<Buffer> {
  const copy = spawn('nbdcopy', [`nbd://127.0.0.1:${port}/${name}`, path], {
    stdio: ['ignore', 'ignore', 'pipe'],
  });
  let errors = '';
  copy.stderr?.on('data', (chunk: Buffer) => {
    errors += chunk.toString();
  });
  const code = await new Promise<number | null>((resolve) => copy.once('close', resolve));
  assert.equal(code, 0, `nbdcopy ${name}: ${errors}`);
  return readFileSync(path);
}

function countBits(bitsets: Uint8Array[]): number {
  let count = 0;
  for (const bitset of bitsets)
    for (const byte of bitset) for (let bit = byte; bit > 0; bit >>= 1) count += bit & 1;
  return count;
}
