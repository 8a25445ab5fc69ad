// Tracking mode, resync and initial sync in the core (docs/resync.md), through the instant
// harness: the primary's read path is the harness's image of every accepted write, and after every
// step the secondary's volumes must equal the primary's image at the secondary's applied cycle.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { ChangedBlocks } from '../../src/core/changed-blocks.ts';
import { FoldIndex } from '../../src/core/fold.ts';
import { LinkTracking, type TrackingRequest, trackingNever } from '../../src/core/link-tracking.ts';
import type { Extent } from '../../src/core/types.ts';
import { blockBytes, dataExtent, Harness, primaryConfig, shape } from './fixtures.ts';

const smallTracking = {
  ...trackingNever,
  chunkBlocks: 2,
  copyReadBlocksMax: 4,
  copyWindowBytes: 8 * blockBytes,
  saveMsMin: 0,
};

/** A harness that remembers every write, to rebuild the primary's image at any cycle. */
class CheckedHarness extends Harness {
  private readonly writes: { token: number; extent: Extent }[] = [];
  readonly appliedSeen: number[] = [];

  override write(extent: Extent, node = 0): number {
    const token = super.write(extent, node);
    this.writes.push({ token, extent });
    return token;
  }

  /** The primary's image after every write of cycles up to `cycle` (ack immediate: tag = ack cycle). */
  imageAt(cycle: number): Uint8Array[] {
    const image = this.config.shape.volumes.map((volume) => new Uint8Array(volume.sizeBytes));
    for (const { token, extent } of this.writes) {
      const tagged = this.ackedCycles.get(token);
      assert.ok(tagged !== undefined, `write ${token} acknowledged`);
      if (tagged > cycle) continue;
      const at = extent.block * blockBytes;
      const volume = image[extent.volume] as Uint8Array;
      if (extent.data) volume.set(extent.data, at);
      else volume.fill(0, at, at + extent.blockCount * blockBytes);
    }
    return image;
  }

  /** Advances in small steps, checking the secondary's image after each. */
  advanceChecked(ms: number, secondary = 0): void {
    for (let step = 0; step < ms; step += 10) {
      this.advance(10);
      const site = this.secondaries[secondary];
      if (!site) continue;
      const applied = site.applied;
      if (this.appliedSeen.at(-1) !== applied) this.appliedSeen.push(applied);
      assert.deepEqual(
        this.volumes[secondary],
        this.imageAt(applied),
        `at ${this.nowMs} ms the secondary's volumes are the primary's image at its applied cycle ${applied}`,
      );
    }
  }
}

function writeRound(harness: Harness, round: number, blocks = 16): void {
  for (let block = round % 3; block < blocks; block += 3)
    harness.write(dataExtent(0, block, 1, (round * 7 + block) & 0xff));
}

/** The secondary loses its journal and volumes and comes back empty: stored 0. */
function wipeSecondary(harness: Harness): void {
  harness.crashSecondary(0);
  (harness.secondaryJournals[0] as unknown[]).length = 0;
  for (const volume of harness.volumes[0] as Uint8Array[]) volume.fill(0);
  harness.restartSecondary(0);
}

/** One round streamed, then the link cut while rounds 2..8 write all over volume 0 (not healed). */
function awayWhileWriting(harness: CheckedHarness): void {
  writeRound(harness, 1, 64);
  harness.advanceChecked(50);
  harness.cutLink(0);
  for (let round = 2; round <= 8; round++) {
    writeRound(harness, round, 64);
    harness.advanceChecked(20);
  }
}

test('a wiped secondary below the journal floor gets an initial sync of every chunk and converges, consistent at every step', () => {
  const harness = new CheckedHarness(primaryConfig({ cycleMsMin: 10, tracking: smallTracking }));
  for (let round = 1; round <= 3; round++) {
    writeRound(harness, round, 64);
    harness.write(dataExtent(1, round * 3, 2, round));
    harness.advanceChecked(40);
  }
  assert.ok(harness.primary.collected >= 2, 'the journal was collected');
  // The secondary loses its journal and volumes and comes back empty: stored 0.
  wipeSecondary(harness);
  harness.appliedSeen.length = 0;
  // Writes go on during the copy (on a few blocks: the copy must bring the rest).
  for (let round = 4; round <= 8; round++) {
    writeRound(harness, round, 6);
    harness.advanceChecked(30);
  }
  harness.advanceChecked(300);
  const status = harness.primary.status(harness.nowMs).secondaries[0];
  assert.equal(status?.mode, 'streaming');
  assert.equal(status?.resyncBytesLeft, 0);
  assert.deepEqual(harness.volumes[0], harness.primaryImage, 'converged byte for byte');
  const volumeBlocks = (harness.primaryImage[0] as Uint8Array).length / blockBytes;
  assert.ok(harness.copiedBlocks >= volumeBlocks, `every block copied (${harness.copiedBlocks})`);
  assert.equal(harness.trackingFiles.size, 0, 'the bitmap is dropped once the resync is over');
  assert.ok(harness.logs.some((line) => line.startsWith('initial-sync ')));
  assert.ok(harness.logs.some((line) => line.startsWith('resync-complete ')));
});

test('an away secondary switches to tracking when the journal fills: the journal is collected past it, and it resyncs consistently', () => {
  const harness = new CheckedHarness(
    primaryConfig({ cycleMsMin: 10, tracking: { ...smallTracking, journalBytesHigh: 6 * blockBytes } }),
  );
  writeRound(harness, 1);
  harness.advanceChecked(50);
  const storedBefore = harness.primary.status(harness.nowMs).secondaries[0]?.stored ?? 0;
  harness.cutLink(0);
  for (let round = 2; round <= 12; round++) {
    writeRound(harness, round, round < 5 ? 64 : 16);
    harness.advanceChecked(20);
  }
  let status = harness.primary.status(harness.nowMs).secondaries[0];
  assert.equal(status?.mode, 'tracking');
  assert.ok(harness.primary.collected > storedBefore, 'the journal no longer waits for the away secondary');
  assert.ok(harness.trackingFiles.has('dr1'), 'its bitmap was saved before the journal passed it');
  assert.ok(harness.primary.status(harness.nowMs).journalBytes < 6 * blockBytes + 16 * blockBytes);
  harness.healLink(0);
  harness.appliedSeen.length = 0;
  for (let round = 13; round <= 16; round++) {
    writeRound(harness, round, 4);
    harness.advanceChecked(30);
  }
  harness.advanceChecked(400);
  status = harness.primary.status(harness.nowMs).secondaries[0];
  assert.equal(status?.mode, 'streaming');
  assert.deepEqual(harness.volumes[0], harness.primaryImage, 'converged byte for byte');
  const copied = harness.copiedBlocks;
  assert.ok(copied > 0 && copied <= 64, `only chunks of changed blocks were copied (${copied} blocks)`);
});

test('a primary restarted in the middle of a resync resumes from its saved bitmap and converges', () => {
  const harness = new CheckedHarness(
    primaryConfig({
      cycleMsMin: 10,
      tracking: { ...smallTracking, journalBytesHigh: 6 * blockBytes, copyWindowBytes: 2 * blockBytes },
    }),
  );
  awayWhileWriting(harness);
  assert.equal(harness.primary.status(harness.nowMs).secondaries[0]?.mode, 'tracking');
  harness.healLink(0);
  harness.advanceChecked(40);
  assert.equal(harness.primary.status(harness.nowMs).secondaries[0]?.mode, 'resync');
  harness.restartPrimary();
  for (let round = 9; round <= 10; round++) {
    writeRound(harness, round, 6);
    harness.advanceChecked(30);
  }
  harness.advanceChecked(1500);
  assert.equal(harness.primary.status(harness.nowMs).secondaries[0]?.mode, 'streaming');
  assert.deepEqual(harness.volumes[0], harness.primaryImage, 'converged byte for byte');
});

test('a secondary wiped again in the middle of its resync gets every chunk, not only those not yet copied', () => {
  const harness = new CheckedHarness(
    primaryConfig({ cycleMsMin: 10, tracking: { ...smallTracking, copyWindowBytes: 2 * blockBytes } }),
  );
  for (let round = 1; round <= 3; round++) {
    writeRound(harness, round, 64);
    harness.advanceChecked(40);
  }
  wipeSecondary(harness);
  harness.advanceChecked(60);
  const status = harness.primary.status(harness.nowMs).secondaries[0];
  assert.equal(status?.mode, 'resync', 'the initial sync is under way');
  assert.ok((status?.resyncBytesLeft ?? 0) < 80 * blockBytes, 'some chunks are copied and stored');
  wipeSecondary(harness);
  harness.advanceChecked(1500);
  assert.equal(harness.primary.status(harness.nowMs).secondaries[0]?.mode, 'streaming');
  assert.deepEqual(harness.volumes[0], harness.primaryImage, 'converged byte for byte');
});

test('in the middle of a resync the stored cycles after its last consistent one cannot be applied yet, and applicableThrough says so', () => {
  const harness = new CheckedHarness(
    primaryConfig({
      cycleMsMin: 10,
      tracking: { ...smallTracking, journalBytesHigh: 6 * blockBytes, copyWindowBytes: 2 * blockBytes },
    }),
  );
  awayWhileWriting(harness);
  harness.healLink(0);
  let seenBelow = false;
  for (let step = 0; step < 150 && !seenBelow; step++) {
    harness.advanceChecked(10);
    const secondary = harness.secondaries[0];
    assert.ok(secondary);
    assert.ok(secondary.applicableThrough <= secondary.stored);
    assert.ok(secondary.applicableThrough >= secondary.appliedDurable);
    if (harness.primary.status(harness.nowMs).secondaries[0]?.mode === 'resync')
      seenBelow ||= secondary.applicableThrough < secondary.stored;
  }
  assert.ok(seenBelow, 'a resync stored cycles that no apply could reach yet');
  harness.advanceChecked(1500);
  const secondary = harness.secondaries[0];
  assert.equal(secondary?.applicableThrough, secondary?.stored, 'once the resync ended, every stored cycle');
});

test('a resync sends nothing before its bitmap is durable; a primary dying before that starts it again', () => {
  const harness = new CheckedHarness(primaryConfig({ cycleMsMin: 10, tracking: smallTracking }));
  for (let round = 1; round <= 3; round++) {
    writeRound(harness, round, 64);
    harness.advanceChecked(40);
  }
  harness.crashSecondary(0);
  (harness.secondaryJournals[0] as unknown[]).length = 0;
  for (const volume of harness.volumes[0] as Uint8Array[]) volume.fill(0);
  harness.deferTrackingSaves = true;
  const framesBefore = (harness.framesToSecondary[0] as unknown[]).length;
  harness.restartSecondary(0);
  writeRound(harness, 4, 6);
  harness.advanceChecked(100);
  assert.equal(harness.primary.status(harness.nowMs).secondaries[0]?.mode, 'resync');
  const sent = (harness.framesToSecondary[0] as { type: string }[]).slice(framesBefore);
  assert.deepEqual(
    sent.filter((frame) => frame.type === 'data' || frame.type === 'end-of-cycle'),
    [],
    'no cycle leaves before the all-chunks bitmap is durable',
  );
  // The primary dies with its save still in flight: the bitmap never reached the disk.
  harness.savesWaiting.length = 0;
  harness.deferTrackingSaves = false;
  harness.restartPrimary();
  writeRound(harness, 5, 6);
  harness.advanceChecked(1500);
  assert.equal(harness.primary.status(harness.nowMs).secondaries[0]?.mode, 'streaming');
  assert.deepEqual(harness.volumes[0], harness.primaryImage, 'converged byte for byte');
});

test('a secondary holding an unfinished resync the primary has no bitmap for gets a copy of every chunk', () => {
  const harness = new CheckedHarness(
    primaryConfig({ cycleMsMin: 10, tracking: { ...smallTracking, copyWindowBytes: 2 * blockBytes } }),
  );
  for (let round = 1; round <= 3; round++) {
    writeRound(harness, round, 64);
    harness.advanceChecked(40);
  }
  wipeSecondary(harness);
  harness.advanceChecked(60);
  const secondary = harness.secondaries[0];
  assert.ok(secondary && secondary.stored > secondary.applicableThrough, 'the secondary holds resync cycles');
  // An operator removed the bitmap file; the primary restarts without it.
  harness.trackingFiles.clear();
  harness.restartPrimary();
  harness.advanceChecked(1500);
  assert.ok(harness.logs.filter((line) => line.startsWith('initial-sync ')).length >= 2);
  assert.deepEqual(harness.volumes[0], harness.primaryImage, 'converged byte for byte');
});

test('a bitmap saved before the journal floor moved on resumes as saved, with the floor as its base: only a secondary below it gets every chunk', () => {
  const actions: TrackingRequest[] = [];
  const tracking = new LinkTracking('dr1', shape, smallTracking, { push: (action) => actions.push(action) });
  const saved = new ChangedBlocks(smallTracking.chunkBlocks, [64, 16]);
  saved.markBlocks(0, 10, 1);
  // The secondary had stored up to 12 when the primary died, so the journal was collected to 12.
  tracking.restore({ base: 5, through: 8, chunkBlocks: 2, bits: saved.snapshot() }, 12);
  const chunkBytes = smallTracking.chunkBlocks * blockBytes;
  assert.equal(tracking.progress(0).bytesLeft, chunkBytes, 'the saved chunk only, not every chunk');
  assert.equal(tracking.journalFrom(12), 13);
  assert.ok(tracking.startSession(0, 12, 12, 12));
  assert.equal(
    tracking.progress(0).bytesLeft,
    chunkBytes,
    'a secondary at the floor resumes the saved bitmap',
  );

  // The same restore for a secondary that came back wiped: below the floor, it needs everything.
  const again = new LinkTracking('dr1', shape, smallTracking, { push: (action) => actions.push(action) });
  again.restore({ base: 5, through: 8, chunkBlocks: 2, bits: saved.snapshot() }, 12);
  assert.ok(again.startSession(0, 0, 12, 0));
  assert.equal(
    again.progress(0).bytesLeft,
    (64 + 16) * blockBytes,
    'every chunk for a secondary below the floor',
  );
});

test("a resyncing secondary's status carries the copy's rate and an ETA, from the core's own clock", () => {
  const harness = new CheckedHarness(
    primaryConfig({
      cycleMsMin: 10,
      tracking: {
        ...smallTracking,
        journalBytesHigh: 6 * blockBytes,
        copyWindowBytes: 2 * blockBytes,
        // The harness's resync lasts well under a second: a window to match.
        copyRate: { windowMs: 200, stepMs: 20, spanMsMin: 50 },
      },
    }),
  );
  awayWhileWriting(harness);
  harness.healLink(0);
  const seen: { mode: string; rate: number; eta: number | null; left: number }[] = [];
  for (let step = 0; step < 400; step++) {
    harness.advanceChecked(10);
    const status = harness.primary.status(harness.nowMs).secondaries[0];
    if (status)
      seen.push({
        mode: status.mode,
        rate: status.resyncBytesPerSecond,
        eta: status.resyncEtaSeconds,
        left: status.resyncBytesLeft,
      });
  }
  const resyncing = seen.filter((entry) => entry.mode === 'resync');
  assert.ok(resyncing.length > 0, 'a resync ran');
  const measured = resyncing.filter((entry) => entry.rate > 0 && entry.eta !== null);
  assert.ok(
    measured.length > 0,
    `a rate and an ETA during the resync: ${JSON.stringify(resyncing.slice(-3))}`,
  );
  for (const entry of measured)
    assert.ok(Math.abs((entry.eta as number) - entry.left / entry.rate) < 1e-9, JSON.stringify(entry));
  const after = seen.at(-1);
  assert.deepEqual([after?.mode, after?.rate, after?.eta], ['streaming', 0, null], 'none once streaming');
});

test('a secondary failed for holding a full journal while its bitmap save is in flight is folded into it all the same: the journal passes it', () => {
  const harness = new CheckedHarness(
    primaryConfig({ cycleMsMin: 10, tracking: { ...smallTracking, journalBytesHigh: 6 * blockBytes } }),
  );
  writeRound(harness, 1);
  harness.advanceChecked(50);
  // Saves slower than the secondary's reconnects: each save completes while a session is up, and
  // the session is failed again at once for the journal it holds.
  harness.deferTrackingSaves = true;
  harness.cutLink(0);
  for (let round = 2; round <= 6; round++) {
    writeRound(harness, round, 64);
    harness.advanceChecked(20);
  }
  assert.equal(harness.primary.status(harness.nowMs).secondaries[0]?.mode, 'tracking');
  harness.healLink(0);
  for (let step = 0; step < 300; step++) {
    if (step % 20 === 0) writeRound(harness, 5 + step / 20, 16);
    harness.advance(10);
    if (harness.primary.linkNamed('dr1')?.state === 'streaming')
      for (const complete of harness.savesWaiting.splice(0)) complete();
  }
  harness.deferTrackingSaves = false;
  for (const complete of harness.savesWaiting.splice(0)) complete();
  const closed = harness.primary.closed;
  assert.ok(
    harness.primary.collected >= closed - 2,
    `the journal passed the secondary: collected ${harness.primary.collected}, closed ${closed}`,
  );
  harness.advanceChecked(1500);
  assert.equal(harness.primary.status(harness.nowMs).secondaries[0]?.mode, 'streaming');
  assert.deepEqual(harness.volumes[0], harness.primaryImage, 'converged byte for byte');
});

test('a resync whose link failed while a cycle switch waited for its copy reads goes on in the next session, with no write to close a cycle', () => {
  const harness = new CheckedHarness(
    primaryConfig({
      cycleMsMin: 10,
      tracking: { ...smallTracking, journalBytesHigh: 6 * blockBytes, copyWindowBytes: 32 * blockBytes },
    }),
  );
  awayWhileWriting(harness);
  assert.equal(harness.primary.status(harness.nowMs).secondaries[0]?.mode, 'tracking');
  // The sources have stopped: from here on only the copy can ask for a cycle switch.
  harness.deferCopyReads = true;
  harness.healLink(0);
  for (let step = 0; step < 50 && harness.copyReadsWaiting.length === 0; step++) harness.advanceChecked(10);
  assert.equal(harness.primary.status(harness.nowMs).secondaries[0]?.mode, 'resync');
  assert.ok(harness.copyReadsWaiting.length >= 2, 'several copy reads are out');
  // One read is in: its chunks wait in the capture cycle, which the copy wants closed; the switch
  // is due but waits for the reads still out.
  harness.copyReadsWaiting.shift()?.();
  harness.advanceChecked(10);
  // The link fails before they are in (the journal fills, a cable is pulled): the copy that wanted
  // the switch is gone, and the reads' answers belong to an ended session.
  harness.cutLink(0);
  for (const answer of harness.copyReadsWaiting.splice(0)) answer();
  harness.deferCopyReads = false;
  harness.healLink(0);
  harness.advanceChecked(1500);
  const status = harness.primary.status(harness.nowMs).secondaries[0];
  assert.equal(status?.mode, 'streaming', `the resync ended (${status?.resyncBytesLeft} bytes left)`);
  assert.deepEqual(harness.volumes[0], harness.primaryImage, 'converged byte for byte');
});

test('a link switched to tracking below the journal floor (stored 0 from a wiped secondary, cycles 1..11 collected) marks every chunk: the folds of collected cycles are empty', () => {
  const requests: TrackingRequest[] = [];
  const tracking = new LinkTracking('dr1', shape, smallTracking, {
    push: (request) => requests.push(request),
  });
  const collected = 11;
  // Only cycles the journal still holds have content: one block each of volume 1.
  const cycleFold = (cycle: number): FoldIndex => {
    const fold = new FoldIndex(blockBytes);
    if (cycle > collected) fold.add(dataExtent(1, cycle - collected, 1, cycle));
    return fold;
  };
  tracking.track(0, 21, collected, cycleFold);
  const everyChunk = new ChangedBlocks(smallTracking.chunkBlocks, [64, 16]);
  everyChunk.markAll();
  assert.equal(
    tracking.progress(0).bytesLeft,
    everyChunk.chunkCount * smallTracking.chunkBlocks * blockBytes,
    'every chunk of both volumes is marked',
  );
  const saved = requests.find((request) => request.type === 'tracking-save');
  assert.equal(
    saved?.type === 'tracking-save' && saved.state.through,
    21,
    'the bitmap covers through cycle 21',
  );
  assert.ok(tracking.startSession(0, 0, collected, 0), 'the session resyncs');
  // The second connection's welcome (stored 0 again) finds the bitmap, not below its base.
  assert.equal(
    tracking.progress(0).bytesLeft,
    everyChunk.chunkCount * smallTracking.chunkBlocks * blockBytes,
  );
});
