// Proves the secondary on its own, fed frames directly: it refuses a primary of another shape with
// an error that names the difference, stores a cycle only when it holds exactly the packets the
// end-of-cycle frame names, applies cycles whole and in order, deletes incomplete cycles on any
// failure, and finishes an interrupted apply after a restart.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { isBlockRef, refIndex, refSeq } from '../../src/core/fold.ts';
import type { Binding, PrimaryIdentity } from '../../src/core/identity.ts';
import { limits } from '../../src/core/limits.ts';
import type { SecondaryRecord } from '../../src/core/records.ts';
import { checkHello, Secondary, type SecondaryAction } from '../../src/core/secondary.ts';
import type { DemotedFrom } from '../../src/core/secondary-session.ts';
import type { Extent, GroupShape } from '../../src/core/types.ts';
import {
  addDigest,
  type DataFrame,
  type Frame,
  type HelloFrame,
  packetDigest,
  protocolVersion,
} from '../../src/protocol/frames.ts';
import {
  blockBytes,
  extentFromJournal,
  otherPrimaryIdentity,
  primaryIdentity,
  shape,
  timings,
} from './fixtures.ts';

/** A secondary whose storage completes instantly, with its journal, volumes and sent frames in view. */
class Site {
  secondary: Secondary;
  journal: SecondaryRecord[] = [];
  sent: { connection: number; frame: Frame }[] = [];
  closed: number[] = [];
  volume = new Uint8Array(64 * blockBytes);
  holdVolumeSync = false;
  heldVolumeSyncs: number[] = [];
  /** Apply steps asked for are counted and kept, not taken at once, while this is set. */
  holdApplySteps = false;
  applyStepsHeld = 0;
  nowMs = 0;

  /** Bindings recorded, and the order of binds and sends (a bind must come before the welcome). */
  bindings: Binding[] = [];
  order: string[] = [];

  /** Switchovers the primary asked for (promotion-requested actions). */
  promotionsRequested: { cycle: number; generation: string }[] = [];

  constructor(
    journal: SecondaryRecord[] = [],
    binding: Binding | null = null,
    demotedFrom: DemotedFrom | null = null,
  ) {
    this.journal = journal;
    this.secondary = Secondary.recover({ name: 'dr1', shape, timings, binding, demotedFrom }, journal);
    this.run(this.secondary.start());
  }

  run(actions: SecondaryAction[]): void {
    for (const action of actions) {
      switch (action.type) {
        case 'bind':
          this.bindings.push(action.binding);
          this.order.push('bind');
          break;
        case 'send':
          this.sent.push({ connection: action.connection, frame: action.frame });
          this.order.push(`send ${action.frame.type}`);
          break;
        case 'close':
          this.closed.push(action.connection);
          break;
        case 'journal-append':
          this.journal.push(action.record);
          break;
        case 'journal-sync':
          this.run(this.secondary.onJournalSynced(this.nowMs, action.upTo));
          break;
        case 'volume-write':
          this.write(action.extent);
          break;
        case 'volume-write-from-journal':
          for (const run of action.runs) this.write(extentFromJournal(run, (seq) => this.journal[seq - 1]));
          break;
        case 'apply-step':
          if (this.holdApplySteps) this.applyStepsHeld++;
          else this.run(this.secondary.onApplyStep(this.nowMs));
          break;
        case 'volume-sync':
          if (this.holdVolumeSync) this.heldVolumeSyncs.push(action.token);
          else this.run(this.secondary.onVolumesSynced(this.nowMs, action.token));
          break;
        case 'promotion-requested':
          this.promotionsRequested.push({ cycle: action.cycle, generation: action.generation });
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

  /** What the read path shows of a block of the cycle being applied (references resolved), or undefined. */
  overlayBytes(volume: number, block: number): Uint8Array | null | undefined {
    const content = this.secondary.overlay(volume, block);
    if (!isBlockRef(content)) return content;
    const piece = { seq: refSeq(content), index: refIndex(content), blockCount: 1 };
    return extentFromJournal(
      { volume, block, blockCount: 1, pieces: [piece] },
      (seq) => this.journal[seq - 1],
    ).data;
  }

  open(connection: number): void {
    this.run(this.secondary.onConnectionOpened(this.nowMs, connection));
  }

  frame(connection: number, frame: Frame): void {
    this.run(this.secondary.onFrame(this.nowMs, connection, frame));
  }

  hello(
    connection: number,
    session = 1,
    offered: GroupShape = shape,
    connectionCount = 1,
    identity: PrimaryIdentity = primaryIdentity,
  ): void {
    this.open(connection);
    this.frame(connection, helloOf(session, offered, connectionCount, identity));
  }

  sentOfType<T extends Frame['type']>(type: T): Extract<Frame, { type: T }>[] {
    return this.sent.flatMap(({ frame }) =>
      frame.type === type ? [frame as Extract<Frame, { type: T }>] : [],
    );
  }
}

function helloOf(
  session: number,
  offered: GroupShape = shape,
  connectionCount = 1,
  identity: PrimaryIdentity = primaryIdentity,
): HelloFrame {
  return {
    type: 'hello',
    protocolVersion,
    sessionId: session,
    connectionIndex: 0,
    connectionCount,
    group: offered.group,
    blockBytes: offered.blockBytes,
    volumes: offered.volumes,
    primarySite: identity.site,
    generations: identity.generations,
  };
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

/** The packets of one cycle and its end-of-cycle frame, as a primary would send them. */
function cycleFrames(
  cycle: number,
  coversFrom: number,
  blocks: [number, number][],
  consistent = true,
): { packets: DataFrame[]; end: Frame } {
  const packets = blocks.map(([block, fill], index) => packet(cycle, index, block, fill));
  const digest = packets.reduce((sum, frame) => addDigest(sum, packetDigest(frame)), 0);
  return {
    packets,
    end: { type: 'end-of-cycle', cycle, coversFrom, packetCount: packets.length, digest, consistent },
  };
}

test('a primary of another group is refused with an error frame naming both groups, nothing journaled', () => {
  const site = new Site();
  site.hello(1, 1, { ...shape, group: 'other' });
  const [error] = site.sentOfType('error');
  assert.equal(error?.code, 'group-mismatch');
  assert.match(error?.message ?? '', /"other" offered, this site is of group "unit"/);
  assert.deepEqual(site.closed, [1]);
  assert.deepEqual(site.journal, []);
});

test('a primary with another volume size or block size is refused with the difference named', () => {
  const bigger = new Site();
  bigger.hello(1, 1, {
    ...shape,
    volumes: [
      { name: 'data', sizeBytes: 128 * blockBytes },
      shape.volumes[1] as (typeof shape.volumes)[number],
    ],
  });
  assert.equal(bigger.sentOfType('error')[0]?.code, 'volumes-mismatch');
  assert.match(
    bigger.sentOfType('error')[0]?.message ?? '',
    /"data" is 65536 bytes at the primary, 32768 here/,
  );
  const blocks = new Site();
  blocks.hello(1, 1, { ...shape, blockBytes: 4096 });
  assert.equal(blocks.sentOfType('error')[0]?.code, 'block-size-mismatch');
});

test('the first primary accepted is bound, and the binding is recorded before the welcome', () => {
  const site = new Site();
  site.hello(1);
  assert.deepEqual(site.bindings, [
    {
      primarySite: primaryIdentity.site,
      generation: '1'.repeat(32),
      history: primaryIdentity.generations,
    },
  ]);
  assert.deepEqual(site.order, ['bind', 'send welcome']);
  assert.deepEqual(site.secondary.boundTo, site.bindings[0]);
});

test('a binding recorded without the chain gains it from the same primary, and only from it', () => {
  const first = new Site();
  first.hello(1);
  const { history: _, ...old } = first.bindings[0] as Binding;
  const restarted = new Site(first.journal, old);
  restarted.hello(1, 5, shape, 1, otherPrimaryIdentity);
  assert.equal(restarted.sentOfType('error')[0]?.code, 'primary-mismatch');
  assert.deepEqual(restarted.bindings, [], 'another primary completes nothing');
  restarted.hello(2, 6);
  assert.deepEqual(restarted.bindings, [{ ...old, history: primaryIdentity.generations }]);
  assert.deepEqual(restarted.order.slice(-2), ['bind', 'send welcome'], 'recorded before the welcome');
});

test('another primary of the group is refused naming both identities; the live session goes on untouched', () => {
  const site = new Site();
  site.hello(1, 7);
  const { packets, end } = cycleFrames(1, 1, [
    [0, 1],
    [1, 2],
  ]);
  site.frame(1, packets[0] as Frame);
  // The second primary's cycles are far ahead of this secondary's: numbers prove nothing here.
  site.hello(2, 9, shape, 1, otherPrimaryIdentity);
  const [error] = site.sentOfType('error');
  assert.equal(error?.code, 'primary-mismatch');
  for (const id of [primaryIdentity.site, '1'.repeat(32), otherPrimaryIdentity.site, '2'.repeat(32)])
    assert.ok(error?.message.includes(id), `${id} named in: ${error?.message}`);
  assert.deepEqual(site.closed, [2], 'only the refused connection is closed');
  assert.equal(site.secondary.failures, 0, 'the bound session did not fail');
  assert.equal(site.secondary.inspect().session, 7);
  assert.equal(site.bindings.length, 1);
  site.frame(1, packets[1] as Frame);
  site.frame(1, end);
  assert.equal(site.secondary.stored, 1, 'the cycle begun before the refusal is stored whole');
  assert.deepEqual(
    site.journal.filter((record) => record.kind === 'discard'),
    [],
    'nothing of the live session was discarded',
  );
});

test('the same site in another generation is refused too (no promotion yet)', () => {
  const site = new Site();
  site.hello(1);
  const recreated: PrimaryIdentity = {
    site: primaryIdentity.site,
    generations: [
      ...primaryIdentity.generations,
      { id: '3'.repeat(32), startedAt: 40, primarySite: primaryIdentity.site },
    ],
  };
  site.hello(2, 2, shape, 1, recreated);
  assert.equal(site.sentOfType('error')[0]?.code, 'primary-mismatch');
  assert.equal(site.secondary.failures, 0);
});

test('the binding holds across a restart: the other primary is refused, the bound one accepted', () => {
  const first = new Site();
  first.hello(1);
  const restarted = new Site(first.journal, first.bindings[0] as Binding);
  restarted.hello(1, 5, shape, 1, otherPrimaryIdentity);
  assert.equal(restarted.sentOfType('error')[0]?.code, 'primary-mismatch');
  restarted.hello(2, 6);
  assert.equal(restarted.sentOfType('welcome')[0]?.sessionId, 6);
  assert.deepEqual(restarted.bindings, [], 'bound once, not again');
});

test('a switchover is taken only with everything up to its cycle stored as a consistent image', () => {
  const site = new Site();
  site.hello(1);
  const { packets, end } = cycleFrames(1, 1, [[0, 1]]);
  for (const packet of packets) site.frame(1, packet);
  site.frame(1, end);
  assert.equal(site.secondary.stored, 1);
  // Ahead of what is stored: refused with the numbers, the session goes on.
  site.frame(1, { type: 'switchover', cycle: 2, generation: '9'.repeat(32) });
  assert.deepEqual(site.promotionsRequested, []);
  const [refusal] = site.sentOfType('error');
  assert.equal(refusal?.code, 'switchover-refused');
  assert.match(refusal?.message ?? '', /at cycle 2 refused: this site stored 1, consistent through 1/);
  assert.equal(site.secondary.failures, 0);
  site.frame(1, { type: 'switchover', cycle: 1, generation: '9'.repeat(32) });
  assert.deepEqual(site.promotionsRequested, [{ cycle: 1, generation: '9'.repeat(32) }]);
});

test('a demoted site follows only a primary whose chain extends its own right after its cycle', () => {
  const demotedFrom: DemotedFrom = { cycle: 30, generations: otherPrimaryIdentity.generations };
  const superseding = (startedAt: number, id = '5'.repeat(32)): PrimaryIdentity => ({
    site: primaryIdentity.site,
    generations: [...otherPrimaryIdentity.generations, { id, startedAt, primarySite: primaryIdentity.site }],
  });
  const refusedBy = (identity: PrimaryIdentity): string => {
    const site = new Site([], null, demotedFrom);
    site.hello(1, 1, shape, 1, identity);
    assert.deepEqual(site.bindings, []);
    const [error] = site.sentOfType('error');
    assert.equal(error?.code, 'primary-mismatch');
    return error?.message ?? '';
  };
  assert.match(refusedBy(otherPrimaryIdentity), /holds its image at cycle 30.*\(same\)/);
  assert.match(refusedBy(primaryIdentity), /\(unrelated\)/);
  assert.match(refusedBy(superseding(25)), /superseded it at cycle 25/);
  assert.match(refusedBy(superseding(32)), /superseded it at cycle 32/);
  const site = new Site([], null, demotedFrom);
  site.hello(1, 1, shape, 1, superseding(31));
  assert.equal(site.sentOfType('welcome').length, 1);
  assert.equal(site.bindings[0]?.generation, '5'.repeat(32));

  // Two promotions of one history: refused, unless this site gave up its own (split-brain resolution).
  const ownPromotion = { id: '6'.repeat(32), startedAt: 31, primarySite: 'c'.repeat(32) };
  const loser: DemotedFrom = { cycle: 0, generations: [...otherPrimaryIdentity.generations, ownPromotion] };
  const diverged = superseding(20);
  const refusing = new Site([], null, loser);
  refusing.hello(1, 1, shape, 1, diverged);
  assert.match(
    refusing.sentOfType('error')[0]?.message ?? '',
    /\(diverged: its history forked at cycle 20, this one.s at 31\)/,
  );
  const resolved = new Site([], null, { ...loser, acceptDiverged: true });
  resolved.hello(1, 1, shape, 1, diverged);
  assert.equal(resolved.sentOfType('welcome').length, 1, 'the survivor is followed');
  const unrelated = new Site([], null, { ...loser, acceptDiverged: true });
  unrelated.hello(1, 1, shape, 1, primaryIdentity);
  assert.equal(unrelated.sentOfType('error')[0]?.code, 'primary-mismatch', 'never a site of another history');
});

test('names and sizes from a hello obey the config rules: a path as a volume name is refused', () => {
  const cases: [GroupShape, RegExp][] = [
    [
      { ...shape, volumes: [{ name: '../../x', sizeBytes: 64 * blockBytes }] },
      /volume 0 name: "\.\.\/\.\.\/x"/,
    ],
    [
      { ...shape, volumes: [{ name: 'data', sizeBytes: 1000 }] },
      /volume 0 size: 1000 is not a positive multiple/,
    ],
    [{ ...shape, volumes: [{ name: 'data', sizeBytes: 0 }] }, /volume 0 size: 0 is not a positive multiple/],
    [{ ...shape, blockBytes: 3000 }, /block size: 3000 is not a power of two/],
    [{ ...shape, volumes: [] }, /0 volumes, expected 1\.\.256/],
    [
      {
        ...shape,
        volumes: [
          { name: 'a', sizeBytes: blockBytes },
          { name: 'a', sizeBytes: blockBytes },
        ],
      },
      /two volumes share a name/,
    ],
  ];
  for (const [offered, message] of cases) {
    // A fresh secondary (nothing held yet) and a configured one refuse alike, before storing anything.
    assert.throws(() => checkHello(helloOf(1, offered), 'unit', null), { code: 'hello-invalid', message });
    const site = new Site();
    site.hello(1, 1, offered);
    assert.equal(site.sentOfType('error')[0]?.code, 'hello-invalid');
    assert.deepEqual(site.bindings, []);
  }
});

test('a hello of another group is refused naming both groups, even by a secondary holding nothing yet', () => {
  assert.throws(() => checkHello(helloOf(1, { ...shape, group: 'other' }), 'unit', null), {
    code: 'group-mismatch',
    message: 'group "other" offered, this site is of group "unit"',
  });
});

test('a generation chain that does not end at the primary stating it is refused', () => {
  const site = new Site();
  const forged: PrimaryIdentity = {
    site: primaryIdentity.site,
    generations: otherPrimaryIdentity.generations,
  };
  site.hello(1, 1, shape, 1, forged);
  assert.equal(site.sentOfType('error')[0]?.code, 'hello-invalid');
  assert.match(site.sentOfType('error')[0]?.message ?? '', /belongs to site b{32}/);
  const empty = new Site();
  empty.hello(1, 1, shape, 1, { site: primaryIdentity.site, generations: [] });
  assert.match(empty.sentOfType('error')[0]?.message ?? '', /no generation/);
});

test('the welcome states the stored, applied and newest consistent stored numbers', () => {
  const site = new Site();
  site.hello(1);
  assert.deepEqual(site.sentOfType('welcome')[0], {
    type: 'welcome',
    protocolVersion,
    sessionId: 1,
    secondary: 'dr1',
    stored: 0,
    applied: 0,
    consistentStored: 0,
  });
});

test('a cycle is stored only when every packet named by its end has arrived, in any order, on any connection', () => {
  const site = new Site();
  site.hello(1, 7, shape, 2);
  site.hello(2, 7, shape, 2);
  const { packets, end } = cycleFrames(1, 1, [
    [0, 1],
    [1, 2],
    [2, 3],
  ]);
  site.frame(2, packets[2] as Frame);
  site.frame(1, end);
  site.frame(1, packets[0] as Frame);
  assert.equal(site.secondary.stored, 0, 'packet 1 is still missing');
  site.frame(2, packets[1] as Frame);
  assert.equal(site.secondary.stored, 1);
  assert.deepEqual(site.sentOfType('stored').at(-1), { type: 'stored', stored: 1, applied: 1 });
  assert.deepEqual(
    [0, 1, 2].map((block) => site.volume[block * blockBytes]),
    [1, 2, 3],
  );
});

test('a cycle whose packets do not match the digest is not stored and fails the link', () => {
  const site = new Site();
  site.hello(1);
  const { packets, end } = cycleFrames(1, 1, [[0, 1]]);
  site.frame(1, { ...(packets[0] as DataFrame), payload: new Uint8Array(blockBytes).fill(9) });
  site.frame(1, end);
  assert.equal(site.secondary.stored, 0);
  assert.equal(site.sentOfType('error')[0]?.code, 'cycle-digest-mismatch');
  assert.ok(site.journal.some((record) => record.kind === 'discard'));
});

test('cycles are stored and applied strictly in order', () => {
  const site = new Site();
  site.hello(1);
  const second = cycleFrames(2, 2, [[5, 2]]);
  for (const frame of [...second.packets, second.end]) site.frame(1, frame);
  assert.equal(site.secondary.stored, 0, 'cycle 2 waits for cycle 1');
  const first = cycleFrames(1, 1, [[5, 1]]);
  for (const frame of [...first.packets, first.end]) site.frame(1, frame);
  assert.equal(site.secondary.stored, 2);
  assert.equal(site.secondary.applied, 2);
  assert.equal(site.volume[5 * blockBytes], 2, 'cycle 2 was applied after cycle 1');
});

test('on a failure the entries of every cycle that is not stored are deleted', () => {
  const site = new Site();
  site.hello(1);
  const partial = cycleFrames(1, 1, [
    [0, 1],
    [1, 1],
  ]);
  site.frame(1, partial.packets[0] as Frame);
  assert.equal(site.secondary.inspect().receiving.length, 1);
  site.run(site.secondary.onConnectionLost(1, 1, 'cable pulled'));
  assert.deepEqual(site.secondary.inspect().receiving, []);
  assert.deepEqual(site.journal.at(-1), { kind: 'discard', stored: 0 });
  // The journal, replayed after a restart, holds nothing of the incomplete cycle either.
  const restarted = new Site(site.journal);
  assert.deepEqual(restarted.secondary.inspect().receiving, []);
});

test('a recovery cycle covering 1..3 moves the image from cycle 0 straight to cycle 3', () => {
  const site = new Site();
  site.hello(1);
  site.holdVolumeSync = true;
  const recovery = cycleFrames(3, 1, [
    [0, 3],
    [1, 3],
  ]);
  for (const frame of [...recovery.packets, recovery.end]) site.frame(1, frame);
  assert.equal(site.secondary.stored, 3);
  assert.equal(site.secondary.applied, 3, 'the read path shows cycle 3 from the first volume write on');
  assert.equal(site.overlayBytes(0, 1)?.[0], 3);
  assert.equal(site.secondary.payloadBytesInMemory, 0, 'the cycles hold references, no payload');
  assert.equal(site.secondary.appliedDurable, 0, 'volumes not yet durable');
  site.holdVolumeSync = false;
  site.run(site.secondary.onVolumesSynced(0, site.heldVolumeSyncs[0] as number));
  assert.equal(site.secondary.appliedDurable, 3);
  assert.equal(site.secondary.overlay(0, 1), undefined);
});

test('a crash during apply finishes the apply at restart, and applied never goes down', () => {
  const site = new Site();
  site.hello(1);
  site.holdVolumeSync = true;
  const cycle = cycleFrames(1, 1, [[4, 7]]);
  for (const frame of [...cycle.packets, cycle.end]) site.frame(1, frame);
  assert.equal(site.secondary.applied, 1);
  const restarted = new Site([...site.journal]);
  assert.equal(restarted.secondary.stored, 1);
  assert.equal(restarted.secondary.applied, 1);
  assert.equal(restarted.volume[4 * blockBytes], 7, 'the stored cycle was re-applied from the journal');
  assert.equal(restarted.secondary.appliedDurable, 1);
});

test('a checkpoint taken while an applied marker is on its way restates it: the release after it may delete the segment holding the marker', () => {
  // Found by the whole-site simulator (seed 52595): a segment started between the marker's append
  // and its sync said "applied 22"; the release of 23 then deleted the older segment with cycle 23's
  // records and its marker, and the restarted secondary never applied again.
  const site = new Site();
  site.hello(1);
  site.holdVolumeSync = true;
  const cycle = cycleFrames(1, 1, [[4, 7]]);
  for (const frame of [...cycle.packets, cycle.end]) site.frame(1, frame);
  const marker = site.secondary.onVolumesSynced(0, site.heldVolumeSyncs[0] as number);
  for (const action of marker) if (action.type === 'journal-append') site.journal.push(action.record);
  assert.equal(site.secondary.appliedDurable, 0, 'the marker is appended, not yet durable');
  const checkpoint = site.secondary.checkpoint();
  // The new segment holds only the checkpoint once the older one is released with cycle 1's records.
  const restarted = new Site(checkpoint);
  assert.equal(restarted.secondary.applied, 1);
  assert.equal(restarted.secondary.stored, 1);
});

test('a packet outside its volume, or twice the same packet, fails the link with packet-invalid', () => {
  const outside = new Site();
  outside.hello(1);
  outside.frame(1, packet(1, 0, 64, 1));
  assert.equal(outside.sentOfType('error')[0]?.code, 'packet-invalid');
  const twice = new Site();
  twice.hello(1);
  twice.frame(1, packet(1, 0, 1, 1));
  twice.frame(1, packet(1, 0, 1, 1));
  assert.equal(twice.sentOfType('error')[0]?.code, 'packet-invalid');
});

test('data before hello is refused as unexpected-frame', () => {
  const site = new Site();
  site.open(1);
  site.frame(1, packet(1, 0, 1, 1));
  assert.equal(site.sentOfType('error')[0]?.code, 'unexpected-frame');
  assert.deepEqual(site.closed, [1]);
});

test('a new session from the primary voids what the old one left incomplete', () => {
  const site = new Site();
  site.hello(1, 1);
  site.frame(1, packet(1, 0, 1, 1));
  site.hello(2, 2);
  assert.deepEqual(site.secondary.inspect(), { session: 2, receiving: [] });
  assert.ok(site.closed.includes(1), 'the old session is closed');
});

test('a silent connection times out and the session fails', () => {
  const site = new Site();
  site.hello(1);
  site.run(site.secondary.onTick(timings.heartbeatMsTimeout + 1));
  assert.ok(site.closed.includes(1));
  assert.equal(site.secondary.inspect().session, null);
});

test('a session takes at most the connections its hello announced', () => {
  const site = new Site();
  site.hello(1, 5, shape, 2);
  site.hello(2, 5, shape, 2);
  assert.equal(site.sentOfType('welcome').length, 2);
  site.hello(3, 5, shape, 2);
  assert.equal(site.sentOfType('error')[0]?.code, 'unexpected-frame');
  assert.match(site.sentOfType('error')[0]?.message ?? '', /more than 2 connections in session/);
  assert.ok(site.closed.includes(3));
});

test('at most receiveCyclesBufferedMax incomplete cycles are buffered; one more fails the link', async () => {
  const { limits } = await import('../../src/core/limits.ts');
  const site = new Site();
  site.hello(1);
  // Cycle 1 never completes, so cycles 2.. stay buffered behind it.
  for (let cycle = 2; cycle < 2 + limits.receiveCyclesBufferedMax; cycle++)
    site.frame(1, packet(cycle, 0, 1, cycle & 0xff));
  assert.equal(site.secondary.inspect().receiving.length, limits.receiveCyclesBufferedMax);
  assert.deepEqual(site.sentOfType('error'), []);
  site.frame(1, packet(2 + limits.receiveCyclesBufferedMax, 0, 1, 1));
  assert.equal(site.sentOfType('error')[0]?.code, 'cycle-out-of-order');
  assert.match(site.sentOfType('error')[0]?.message ?? '', /at most 64/);
  assert.deepEqual(site.secondary.inspect().receiving, [], 'the failure deleted the incomplete cycles');
});

test('bytes of a frame still on its way keep a connection alive; silence still ends it', () => {
  const site = new Site();
  site.hello(1);
  // A large packet on a slow link: its bytes trickle in for longer than the timeout.
  for (let nowMs = 100; nowMs <= 3 * timings.heartbeatMsTimeout; nowMs += 100) {
    site.secondary.onBytesReceived(nowMs, 1);
    site.run(site.secondary.onTick(nowMs));
  }
  assert.equal(site.secondary.inspect().session, 1, 'progress is not silence');
  assert.deepEqual(site.closed, []);
  site.run(site.secondary.onTick(4 * timings.heartbeatMsTimeout + 1));
  assert.equal(site.secondary.inspect().session, null, 'no bytes for heartbeatMsTimeout: failed');
});

test('a cycle larger than one apply step is folded and written in steps; stored, it holds no payload', () => {
  const site = new Site();
  site.hello(1);
  site.holdApplySteps = true;
  // 600 packets over the same 64 blocks: 38,400 blocks to fold, more than two steps take.
  const packetCount = 600;
  const packets: DataFrame[] = Array.from({ length: packetCount }, (_, index) => ({
    ...packet(1, index, 0, 0),
    blockCount: 64,
    payload: new Uint8Array(64 * blockBytes).fill((index % 250) + 1),
  }));
  assert.ok(packetCount * 64 > limits.applyStepBlocksMax);
  const digest = packets.reduce((sum, frame) => addDigest(sum, packetDigest(frame)), 0);
  for (const frame of packets) site.frame(1, frame);
  site.frame(1, { type: 'end-of-cycle', cycle: 1, coversFrom: 1, packetCount, digest, consistent: true });
  assert.equal(site.secondary.stored, 1);
  assert.equal(site.secondary.payloadBytesInMemory, 0, 'the stored cycle keeps where its packets are');
  assert.equal(site.secondary.applied, 0, 'while folding, the read path shows the cycle before');
  assert.equal(site.secondary.overlay(0, 0), undefined);
  let steps = 0;
  while (site.applyStepsHeld > 0) {
    site.applyStepsHeld--;
    steps++;
    site.run(site.secondary.onApplyStep(site.nowMs));
  }
  assert.ok(steps >= 2, `applied in ${steps + 1} steps`);
  assert.equal(site.secondary.appliedDurable, 1);
  assert.equal(site.secondary.payloadBytesInMemory, 0);
  const last = ((packetCount - 1) % 250) + 1;
  assert.ok(
    site.volume.every((byte) => byte === last),
    'every block holds the last packet',
  );
});

test("a rejoined site states its divergence before each welcome, until a resync made its image the group's", () => {
  const runs = [
    { volume: 0, block: 16, blockCount: 16 },
    { volume: 1, block: 0, blockCount: 16 },
  ];
  const demotedFrom: DemotedFrom = {
    cycle: 0,
    generations: otherPrimaryIdentity.generations,
    divergence: runs,
  };
  const superseding: PrimaryIdentity = {
    site: primaryIdentity.site,
    generations: [
      ...otherPrimaryIdentity.generations,
      { id: '5'.repeat(32), startedAt: 1, primarySite: primaryIdentity.site },
    ],
  };
  const inconsistent = new Site([{ kind: 'applied', cycle: 0, consistent: false }], null, demotedFrom);
  inconsistent.hello(1, 1, shape, 1, superseding);
  assert.deepEqual(inconsistent.order, ['bind', 'send divergence', 'send welcome']);
  assert.deepEqual(inconsistent.sentOfType('divergence'), [{ type: 'divergence', cycle: 0, runs }]);
  // Its image is the group's again (the rejoin resync applied): nothing more to state.
  const consistent = new Site([{ kind: 'applied', cycle: 3, consistent: true }], null, {
    ...demotedFrom,
    cycle: 3,
  });
  consistent.hello(1, 1, shape, 1, {
    ...superseding,
    generations: [
      ...otherPrimaryIdentity.generations,
      { id: '5'.repeat(32), startedAt: 4, primarySite: primaryIdentity.site },
    ],
  });
  assert.deepEqual(consistent.sentOfType('divergence'), []);
  assert.equal(consistent.sentOfType('welcome').length, 1);
});

test("a split brain's loser that follows from its fork cycle takes only a primary of that fork, and states its own writes", () => {
  // Both secondaries of one primary promoted: the loser's generation began at 31, its writes since
  // are `runs`. A survivor whose generation began at 31 too holds the same image through 30: the
  // delta is enough. One that began at 20 or 40 numbers its cycles after 30 in another history:
  // told only the runs, it would send its cycles 31.. over an image it never had (a silent mix),
  // and with a stored number above what it closed it would refuse the loser for ever. Refused.
  const runs = [{ volume: 0, block: 16, blockCount: 2 }];
  const own = { id: '6'.repeat(32), startedAt: 31, primarySite: 'c'.repeat(32) };
  const loser: DemotedFrom = {
    cycle: 30,
    generations: [...otherPrimaryIdentity.generations, own],
    divergence: runs,
    acceptDiverged: true,
  };
  const third = survivorForkedAt(21, '7', 'd'.repeat(32));
  const site = new Site([{ kind: 'applied', cycle: 30, consistent: false }], null, loser);
  site.hello(1, 1, shape, 1, third);
  assert.equal(site.sentOfType('error')[0]?.code, 'primary-mismatch');
  assert.match(
    site.sentOfType('error')[0]?.message ?? '',
    /forked from it right after cycle 30.*forked at cycle 21, this one's at 31/,
  );
  assert.deepEqual(site.bindings, [], 'not bound to a primary of another fork');
  site.hello(2, 2, shape, 1, survivorForkedAt(40));
  assert.equal(site.sentOfType('error')[1]?.code, 'primary-mismatch');
  site.hello(3, 3, shape, 1, survivorForkedAt(31));
  assert.equal(site.sentOfType('welcome').length, 1);
  assert.equal(site.sentOfType('welcome')[0]?.stored, 30);
  assert.deepEqual(
    site.sentOfType('divergence').flatMap((frame) => [frame.cycle, ...frame.runs]),
    [30, ...runs],
  );
  // One that wrote nothing after its cycle holds the image at it: nothing to state, and the image
  // is a cut of the survivor's history once bound to it.
  const idle = new Site([{ kind: 'applied', cycle: 30, consistent: true }], null, {
    ...loser,
    divergence: null,
  });
  assert.equal(idle.secondary.imageConsistent, false, 'not before it knows whom it follows');
  idle.hello(1, 1, shape, 1, survivorForkedAt(31));
  assert.deepEqual(idle.sentOfType('divergence'), []);
  assert.equal(idle.secondary.imageConsistent, true, 'the same image through cycle 30');
});

test("a split brain's loser that follows from cycle 0 takes any primary of the history, tells it every block, and shows its own image as not the survivor's", () => {
  const own = { id: '6'.repeat(32), startedAt: 31, primarySite: 'c'.repeat(32) };
  const loser: DemotedFrom = {
    cycle: 0,
    generations: [...otherPrimaryIdentity.generations, own],
    divergence: [{ volume: 0, block: 0, blockCount: 64 }],
    acceptDiverged: true,
  };
  const site = new Site([{ kind: 'applied', cycle: 0, consistent: true }], null, loser);
  site.hello(1, 1, shape, 1, survivorForkedAt(20));
  const everyBlock = shape.volumes.map((volume, index) => ({
    volume: index,
    block: 0,
    blockCount: volume.sizeBytes / blockBytes,
  }));
  assert.deepEqual(
    site.sentOfType('divergence').flatMap((frame) => [frame.cycle, ...frame.runs]),
    [0, ...everyBlock],
  );
  assert.equal(site.secondary.imageConsistent, false, 'its own history, not the survivor’s');
  const { packets, end } = cycleFrames(1, 1, [[0, 7]]);
  for (const frame of [...packets, end]) site.frame(1, frame);
  assert.equal(site.secondary.applied, 1);
  assert.equal(site.secondary.imageConsistent, true, "the survivor's cycle applied");
  const restarted = new Site(site.journal, site.bindings[0] as Binding, loser);
  assert.equal(restarted.secondary.imageConsistent, true);
});

/** A primary of the same history as otherPrimaryIdentity whose own generation began at `startedAt`. */
function survivorForkedAt(startedAt: number, id = '5', site = primaryIdentity.site): PrimaryIdentity {
  return {
    site,
    generations: [...otherPrimaryIdentity.generations, { id: id.repeat(32), startedAt, primarySite: site }],
  };
}

test('a rejoined site states its divergence once per session, not on every connection of it', () => {
  // The primary adds up what a handshake states: the same runs on each of N connections counted N
  // times, and past divergenceExtentsMax / N the link failed at every handshake (a rejoin that
  // never ends).
  const runs = [{ volume: 0, block: 16, blockCount: 16 }];
  const demotedFrom: DemotedFrom = {
    cycle: 0,
    generations: otherPrimaryIdentity.generations,
    divergence: runs,
  };
  const superseding: PrimaryIdentity = {
    site: primaryIdentity.site,
    generations: [
      ...otherPrimaryIdentity.generations,
      { id: '5'.repeat(32), startedAt: 1, primarySite: primaryIdentity.site },
    ],
  };
  const site = new Site([{ kind: 'applied', cycle: 0, consistent: false }], null, demotedFrom);
  for (const connection of [1, 2, 3]) {
    site.open(connection);
    site.frame(connection, { ...helloOf(7, shape, 3, superseding), connectionIndex: connection - 1 });
  }
  assert.equal(site.sentOfType('welcome').length, 3);
  assert.deepEqual(site.sentOfType('divergence'), [{ type: 'divergence', cycle: 0, runs }]);
  // A new session states it again.
  site.hello(4, 8, shape, 1, superseding);
  assert.equal(site.sentOfType('divergence').length, 2);
});

test('a rejoined site that stored the resync replacing its divergence states it no more, even before that unit is applied', () => {
  // The primary drops its bitmap once the resync's last cycle is stored; a divergence stated after
  // that finds none, and a stored number past the divergence makes it copy every block.
  const runs = [{ volume: 0, block: 0, blockCount: 16 }];
  const demotedFrom: DemotedFrom = {
    cycle: 0,
    generations: otherPrimaryIdentity.generations,
    divergence: runs,
  };
  const superseding: PrimaryIdentity = {
    site: primaryIdentity.site,
    generations: [
      ...otherPrimaryIdentity.generations,
      { id: '5'.repeat(32), startedAt: 1, primarySite: primaryIdentity.site },
    ],
  };
  const site = new Site([{ kind: 'applied', cycle: 0, consistent: false }], null, demotedFrom);
  site.hello(1, 1, shape, 1, superseding);
  assert.equal(site.sentOfType('divergence').length, 1);
  // The resync as one consistent cycle, large enough that its apply takes steps (held here).
  site.holdApplySteps = true;
  const packetCount = 300;
  const packets: DataFrame[] = Array.from({ length: packetCount }, (_, index) => ({
    ...packet(1, index, 0, 0),
    blockCount: 64,
    payload: new Uint8Array(64 * blockBytes).fill(7),
  }));
  assert.ok(packetCount * 64 > limits.applyStepBlocksMax);
  const digest = packets.reduce((sum, frame) => addDigest(sum, packetDigest(frame)), 0);
  for (const frame of packets) site.frame(1, frame);
  site.frame(1, { type: 'end-of-cycle', cycle: 1, coversFrom: 1, packetCount, digest, consistent: true });
  assert.equal(site.secondary.stored, 1);
  assert.ok(site.applyStepsHeld > 0, 'its apply is under way');
  // The link drops and comes back (or the site restarts) while the unit is applied.
  site.hello(2, 2, shape, 1, superseding);
  assert.deepEqual(site.sentOfType('divergence').length, 1, 'not stated again');
  assert.equal(site.sentOfType('welcome').at(-1)?.consistentStored, 1);
});

test('a bound secondary names a split brain, and a promotion from its own history, when it refuses another primary', () => {
  const site = new Site();
  site.hello(1);
  const promotedElsewhere: PrimaryIdentity = {
    site: otherPrimaryIdentity.site,
    generations: [
      ...primaryIdentity.generations,
      { id: '7'.repeat(32), startedAt: 9, primarySite: otherPrimaryIdentity.site },
    ],
  };
  site.hello(2, 2, shape, 1, promotedElsewhere);
  assert.match(
    site.sentOfType('error')[0]?.message ?? '',
    /promoted from this secondary's history at cycle 9/,
  );
  const split = new Site([], {
    primarySite: promotedElsewhere.site,
    generation: '7'.repeat(32),
    history: promotedElsewhere.generations,
  });
  split.hello(1, 1, shape, 1, {
    site: 'd'.repeat(32),
    generations: [
      ...primaryIdentity.generations,
      { id: '8'.repeat(32), startedAt: 12, primarySite: 'd'.repeat(32) },
    ],
  });
  const [refusal] = split.sentOfType('error');
  assert.equal(refusal?.code, 'primary-mismatch');
  assert.match(
    refusal?.message ?? '',
    /a split brain: both histories share generation 1{32}, then generation 7{32} from cycle 9 here and 8{32} from cycle 12 there/,
  );
});
