// Proves how a secondary takes a resync's cycles (`consistent: false` until its last chunk's cycle)
// under each `resync.staging`, fed frames directly with storage that completes at once:
// - consistent (the default): the cycles wait in the journal and are applied with the next consistent
//   one as one unit, the image consistent throughout; and before staging would leave less than
//   freeBytesMin free on the journal's disk, the next packet is refused with an ERROR frame that
//   carries the numbers (staged, free, the volumes' size), nothing of it journaled, the image kept;
// - in-place: each cycle is applied alone as it is stored, nothing is ever refused for room, and the
//   image is marked inconsistent (status, log, the applied record) until the consistent cycle is
//   applied, across a restart too, where the welcome states the last consistent cycle.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import type { SecondaryRecord } from '../../src/core/records.ts';
import { Secondary, type SecondaryAction } from '../../src/core/secondary.ts';
import type { StagingPolicy } from '../../src/core/secondary-store.ts';
import type { Extent, LogEntry, ResyncStaging } from '../../src/core/types.ts';
import {
  addDigest,
  type DataFrame,
  type Frame,
  packetDigest,
  protocolVersion,
} from '../../src/protocol/frames.ts';
import { blockBytes, extentFromJournal, primaryIdentity, shape, timings } from './fixtures.ts';

const freeBytesMin = 1024 * 1024;

/** A secondary whose storage completes at once: its journal, volume 0, frames sent and logs in view. */
class Site {
  readonly secondary: Secondary;
  readonly sent: Frame[] = [];
  readonly closed: number[] = [];
  readonly logs: LogEntry[] = [];
  readonly volume = new Uint8Array(64 * blockBytes);

  constructor(
    mode: ResyncStaging,
    readonly journal: SecondaryRecord[] = [],
  ) {
    const staging: StagingPolicy = { mode, freeBytesMin };
    this.secondary = Secondary.recover({ name: 'dr1', shape, timings, binding: null, staging }, journal);
    this.run(this.secondary.start());
  }

  run(actions: SecondaryAction[]): void {
    for (const action of actions) {
      switch (action.type) {
        case 'send':
          this.sent.push(action.frame);
          break;
        case 'close':
          this.closed.push(action.connection);
          break;
        case 'log':
          this.logs.push(action.entry);
          break;
        case 'journal-append':
          this.journal.push(action.record);
          break;
        case 'journal-sync':
          this.run(this.secondary.onJournalSynced(0, action.upTo));
          break;
        case 'volume-write':
          this.write(action.extent);
          break;
        case 'volume-write-from-journal':
          for (const run of action.runs) this.write(extentFromJournal(run, (seq) => this.journal[seq - 1]));
          break;
        case 'apply-step':
          this.run(this.secondary.onApplyStep(0));
          break;
        case 'volume-sync':
          this.run(this.secondary.onVolumesSynced(0, action.token));
          break;
        default:
          break;
      }
    }
  }

  private write(extent: Extent): void {
    if (extent.volume !== 0) return;
    if (extent.data) this.volume.set(extent.data, extent.block * blockBytes);
    else this.volume.fill(0, extent.block * blockBytes, (extent.block + extent.blockCount) * blockBytes);
  }

  /** Connection 1 joins session `session` of the primary. */
  hello(session = 1): void {
    this.run(this.secondary.onConnectionOpened(0, 1));
    this.frame({
      type: 'hello',
      protocolVersion,
      sessionId: session,
      connectionIndex: 0,
      connectionCount: 1,
      group: shape.group,
      blockBytes,
      volumes: shape.volumes,
      primarySite: primaryIdentity.site,
      generations: primaryIdentity.generations,
    });
  }

  frame(frame: Frame): void {
    this.run(this.secondary.onFrame(0, 1, frame));
  }

  /** Sends cycle `cycle` (covering from `coversFrom`): one packet per [block, fill], then its end. */
  cycle(cycle: number, coversFrom: number, blocks: [number, number][], consistent: boolean): void {
    const packets = blocks.map(([block, fill], packetIndex) => packet(cycle, packetIndex, block, fill));
    for (const data of packets) this.frame(data);
    const digest = packets.reduce((sum, data) => addDigest(sum, packetDigest(data)), 0);
    this.frame({ type: 'end-of-cycle', cycle, coversFrom, packetCount: packets.length, digest, consistent });
  }

  byteAt(block: number): number {
    return this.volume[block * blockBytes] as number;
  }

  events(name: string): LogEntry[] {
    return this.logs.filter((entry) => entry.event === name);
  }

  errors(): Extract<Frame, { type: 'error' }>[] {
    return this.sent.flatMap((frame) => (frame.type === 'error' ? [frame] : []));
  }
}

function packet(cycle: number, packetIndex: number, block: number, fill: number): DataFrame {
  return {
    type: 'data',
    cycle,
    packetIndex,
    volume: 0,
    block,
    blockCount: 1,
    zero: false,
    payload: new Uint8Array(blockBytes).fill(fill),
  };
}

/** Cycle 1 as usual; then a resync: cycles 2 and 3 inconsistent, cycle 4 consistent. */
function streamThenResync(site: Site, steps: { afterEach?: (cycle: number) => void } = {}): void {
  site.cycle(1, 1, [[0, 1]], true);
  site.cycle(2, 2, [[1, 2]], false);
  steps.afterEach?.(2);
  site.cycle(3, 3, [[2, 3]], false);
  steps.afterEach?.(3);
  site.cycle(4, 4, [[3, 4]], true);
  steps.afterEach?.(4);
}

test('consistent staging: the resync cycles wait in the journal and go with the consistent one as one unit', () => {
  const site = new Site('consistent');
  site.hello();
  const seen: [number, boolean][] = [];
  streamThenResync(site, {
    afterEach: () => seen.push([site.secondary.applied, site.secondary.imageConsistent]),
  });
  assert.deepEqual(seen, [
    [1, true],
    [1, true],
    [4, true],
  ]);
  assert.deepEqual(
    [1, 2, 3, 4].map((block) => site.byteAt(block - 1)),
    [1, 2, 3, 4],
  );
  assert.deepEqual(site.events('image-inconsistent'), []);
  assert.ok(site.journal.every((record) => record.kind !== 'applied' || record.consistent));
});

test('in-place staging: each resync cycle is applied as it is stored, the image marked inconsistent until the consistent one', () => {
  const site = new Site('in-place');
  site.hello();
  const seen: [number, boolean, number][] = [];
  streamThenResync(site, {
    afterEach: (cycle) =>
      seen.push([site.secondary.applied, site.secondary.imageConsistent, site.byteAt(cycle - 1)]),
  });
  assert.deepEqual(seen, [
    [2, false, 2],
    [3, false, 3],
    [4, true, 4],
  ]);
  assert.equal(site.events('image-inconsistent').length, 1, 'warned once, when it began');
  assert.equal(site.events('image-inconsistent')[0]?.level, 'warn');
  assert.equal(site.events('image-consistent').length, 1);
  const applied = site.journal.flatMap((record) => (record.kind === 'applied' ? [record] : []));
  assert.deepEqual(
    applied.map((record) => [record.cycle, record.consistent]),
    [
      [1, true],
      [2, false],
      [3, false],
      [4, true],
    ],
  );
  assert.deepEqual(site.events('staging-space-short'), []);
});

test('an in-place resync cut short is known inconsistent after a restart, and the welcome states the last consistent cycle', () => {
  const site = new Site('in-place');
  site.hello();
  site.cycle(1, 1, [[0, 1]], true);
  site.cycle(2, 2, [[1, 2]], false);
  site.cycle(3, 3, [[2, 3]], false);
  assert.equal(site.secondary.imageConsistent, false);
  const restarted = new Site('in-place', [...site.journal]);
  assert.equal(restarted.secondary.applied, 3);
  assert.equal(restarted.secondary.imageConsistent, false);
  restarted.hello(2);
  const welcome = restarted.sent.find((frame) => frame.type === 'welcome');
  assert.deepEqual(welcome && [welcome.stored, welcome.applied, welcome.consistentStored], [3, 3, 1]);
  // A new journal segment restates the markers: the last consistent one, then the applied one.
  assert.deepEqual(restarted.secondary.checkpoint(), [
    { kind: 'applied', cycle: 1, consistent: true },
    { kind: 'applied', cycle: 3, consistent: false },
  ]);
  // Replayed from the checkpoint alone (older segments deleted), it still knows both.
  const fromCheckpoint = new Site('in-place', restarted.secondary.checkpoint());
  assert.equal(fromCheckpoint.secondary.imageConsistent, false);
  fromCheckpoint.hello(3);
  const again = fromCheckpoint.sent.find((frame) => frame.type === 'welcome');
  assert.equal(again?.consistentStored, 1);
  // The primary finishes the resync: consistent again.
  restarted.cycle(4, 4, [[3, 4]], true);
  assert.equal(restarted.secondary.imageConsistent, true);
  assert.deepEqual(restarted.secondary.checkpoint(), [{ kind: 'applied', cycle: 4, consistent: true }]);
});

test('a consistent-staging site restarted in the middle of a resync that began in place applies the rest as one unit', () => {
  const site = new Site('in-place');
  site.hello();
  site.cycle(1, 1, [[0, 1]], true);
  site.cycle(2, 2, [[1, 2]], false);
  const switched = new Site('consistent', [...site.journal]);
  switched.hello(2);
  switched.cycle(3, 3, [[2, 3]], false);
  assert.equal(switched.secondary.applied, 2, 'the rest is staged');
  switched.cycle(4, 4, [[3, 4]], true);
  assert.equal(switched.secondary.applied, 4);
  assert.equal(switched.secondary.imageConsistent, true);
});

test('staging a resync stops short of filling the disk: the packet is refused with the numbers, nothing of it journaled', () => {
  const site = new Site('consistent');
  site.hello();
  site.cycle(1, 1, [[0, 1]], true);
  site.cycle(2, 2, [[1, 2]], false);
  assert.equal(site.secondary.stored, 2);
  const recordCost = blockBytes + 64;
  // Room for two more packets above the minimum; the third is refused.
  site.secondary.onDiskSpace(0, freeBytesMin + 2 * recordCost);
  site.frame(packet(3, 0, 2, 3));
  site.frame(packet(3, 1, 3, 3));
  assert.deepEqual(site.errors(), []);
  const journaled = site.journal.length;
  site.frame(packet(3, 2, 4, 3));
  const [refusal] = site.errors();
  assert.equal(refusal?.code, 'staging-space-short');
  assert.match(refusal?.message ?? '', /cycles 2\.\.2 stored and not applied/);
  assert.match(refusal?.message ?? '', /1\.0 MiB kept free/);
  assert.match(refusal?.message ?? '', /up to 40960 bytes \(the volumes' size\)/);
  assert.match(refusal?.message ?? '', /stays consistent at cycle 1/);
  assert.match(refusal?.message ?? '', /resync\.staging: in-place/);
  assert.deepEqual(site.secondary.stagingShortage, {
    applied: 1,
    stored: 2,
    stagedBytes: 3 * blockBytes,
    freeBytes: freeBytesMin,
    freeBytesMin,
    volumeBytes: 80 * blockBytes,
  });
  const logged = site.events('staging-space-short')[0];
  assert.equal(logged?.level, 'error');
  assert.equal(logged?.fields.freeBytes, freeBytesMin);
  assert.deepEqual(site.closed, [1], 'the session ends');
  assert.deepEqual(
    site.journal.slice(journaled),
    [{ kind: 'discard', stored: 2 }],
    'nothing of the refused packet, and the cycle it was part of is void',
  );
  assert.equal(site.secondary.applied, 1);
  assert.equal(site.secondary.imageConsistent, true);
  // Given room, the primary's next session goes on where the stored cycles end.
  site.secondary.onDiskSpace(0, 100 * freeBytesMin);
  site.hello(2);
  site.cycle(3, 3, [[2, 3]], false);
  site.cycle(4, 4, [[3, 4]], true);
  assert.equal(site.secondary.applied, 4);
  assert.equal(site.secondary.stagingShortage, null);
});

test('room is held back only for a staged resync: an ordinary stream and an in-place resync are never refused for it', () => {
  const ordinary = new Site('consistent');
  ordinary.hello();
  ordinary.secondary.onDiskSpace(0, 0);
  ordinary.cycle(1, 1, [[0, 1]], true);
  ordinary.cycle(2, 2, [[1, 2]], true);
  assert.equal(ordinary.secondary.applied, 2);
  // The first resync cycle is not known to be one before its end arrives: it is not held back.
  ordinary.cycle(3, 3, [[2, 3]], false);
  assert.deepEqual(ordinary.errors(), []);
  const inPlace = new Site('in-place');
  inPlace.hello();
  inPlace.secondary.onDiskSpace(0, 0);
  streamThenResync(inPlace);
  assert.deepEqual(inPlace.errors(), []);
  assert.equal(inPlace.secondary.applied, 4);
});

test('without a measurement of the disk nothing is refused (as before)', () => {
  const site = new Site('consistent');
  site.hello();
  streamThenResync(site);
  assert.deepEqual(site.errors(), []);
  assert.equal(site.secondary.diskFreeBytes, null);
});
