// Proves the primary's sequencing and the claim's recovery on the primary side, as stories over a
// loss-free harness: when cycles switch, when writes are acknowledged in each ack mode, how a
// failed link is resent one recovery cycle below every unsent cycle, when journal entries go, and
// how a secondary that heartbeats but stores nothing is noticed.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { ConfigError } from '../../src/core/errors.ts';
import { blockRef } from '../../src/core/fold.ts';
import { type PrimaryAction, PrimaryGroup } from '../../src/core/primary-group.ts';
import type { PrimaryRecord } from '../../src/core/records.ts';
import type { Secondary } from '../../src/core/secondary.ts';
import type { Frame } from '../../src/protocol/frames.ts';
import { blockBytes, dataExtent, Harness, primaryConfig, primaryIdentity, timings } from './fixtures.ts';

test('a write joins the capture cycle; the switch waits for cycle.intervalMinMs and for a non-empty cycle', () => {
  const harness = new Harness(primaryConfig({ cycleMsMin: 100 }));
  harness.advance(200);
  assert.equal(harness.primary.capture, 1, 'no switch without writes');
  harness.write(dataExtent(0, 0, 1, 1));
  harness.advance(10);
  assert.equal(harness.primary.capture, 2);
  assert.equal(harness.primary.closed, 1);
  harness.write(dataExtent(0, 1, 1, 2));
  harness.advance(50);
  assert.equal(harness.primary.capture, 2, 'intervalMinMs not yet elapsed');
  harness.advance(60);
  assert.equal(harness.primary.capture, 3);
});

test('ack immediate answers a write as soon as it is journaled', () => {
  const harness = new Harness(primaryConfig({ ack: 'immediate' }));
  const token = harness.write(dataExtent(0, 0, 1, 1));
  assert.deepEqual(harness.acked, [token]);
  assert.equal(harness.primaryJournal[0]?.kind, 'write');
});

test('ack cycle answers the writes of cycle N only when the number becomes N+1 and N is durable', () => {
  const config = primaryConfig({ ack: 'cycle', cycleMsMin: 100 });
  const primary = new PrimaryGroup(config, () => 0.5);
  const first = primary.onWrite(0, { token: 1, node: 0, extent: dataExtent(0, 0, 1, 1) });
  assert.ok(!first.some((action) => action.type === 'ack'), 'no ack while cycle 1 is open');
  const switched = primary.onTick(1);
  assert.equal(primary.capture, 2);
  assert.ok(!switched.some((action) => action.type === 'ack'), 'no ack before the journal is durable');
  const sync = switched.find((action) => action.type === 'journal-sync');
  assert.ok(sync && sync.type === 'journal-sync');
  const synced = primary.onJournalSynced(2, sync.upTo);
  assert.deepEqual(
    synced.filter((action) => action.type === 'ack'),
    [{ type: 'ack', token: 1, cycle: 1 }],
  );
  assert.equal(primary.closed, 1);
});

test('a closed cycle becomes sendable only once its switch record is durable', () => {
  const primary = new PrimaryGroup(primaryConfig(), () => 0.5);
  primary.onWrite(0, { token: 1, node: 0, extent: dataExtent(0, 0, 1, 1) });
  primary.onTick(1);
  assert.equal(primary.capture, 2);
  assert.equal(primary.closed, 0, 'cycle 1 waits for its switch record to be durable');
});

test('flush is answered once everything appended before it is durable', () => {
  const primary = new PrimaryGroup(primaryConfig(), () => 0.5);
  primary.onWrite(0, { token: 1, node: 0, extent: dataExtent(0, 0, 1, 1) });
  const flush = primary.onFlush(1, 2);
  assert.ok(!flush.some((action) => action.type === 'flush-done'));
  const sync = flush.find((action) => action.type === 'journal-sync');
  assert.ok(sync && sync.type === 'journal-sync');
  const done = primary.onJournalSynced(2, sync.upTo);
  assert.deepEqual(
    done.filter((action) => action.type === 'flush-done'),
    [{ type: 'flush-done', token: 2 }],
  );
});

test('no cycle switch while a connected secondary has cycle.queuedMax closed cycles not stored', () => {
  const harness = new Harness(primaryConfig({ cycleMsMin: 10, cyclesQueuedMax: 2 }));
  harness.advance(20);
  const secondary = harness.secondaries[0];
  assert.ok(secondary);
  // The secondary's journal stops answering: it never makes anything durable.
  secondary.onJournalSynced = () => [];
  for (let i = 0; i < 6; i++) {
    harness.write(dataExtent(0, i, 1, i));
    harness.advance(20);
  }
  assert.equal(harness.primary.closed, 2, 'two closed cycles wait, the capture cycle keeps growing');
  assert.equal(harness.primary.capture, 3);
});

test('several sequencer nodes with ack immediate are refused with a message that says why', () => {
  assert.throws(
    () => new PrimaryGroup(primaryConfig({ nodes: 2, ack: 'immediate' }), () => 0.5),
    (error: unknown) => error instanceof ConfigError && /ack: cycle/.test(error.message),
  );
});

test('several nodes: a node acknowledges when it switched; the cycle closes when every node has', () => {
  const primary = new PrimaryGroup(primaryConfig({ nodes: 2, ack: 'cycle' }), () => 0.5);
  primary.onWrite(0, { token: 1, node: 0, extent: dataExtent(0, 0, 1, 1) });
  primary.onWrite(0, { token: 2, node: 1, extent: dataExtent(0, 40, 1, 2) });
  const switchActions = primary.onTick(1);
  const notices = switchActions.filter((action) => action.type === 'node-switch');
  assert.deepEqual(
    notices.map((action) => (action.type === 'node-switch' ? action.node : -1)),
    [0, 1],
  );
  const afterFirst = primary.onNodeSwitch(2, 0, 2);
  assert.equal(primary.closed, 0, 'node 1 has not switched yet');
  const sync = afterFirst.find((action) => action.type === 'journal-sync');
  assert.ok(sync && sync.type === 'journal-sync');
  const acks = primary.onJournalSynced(3, sync.upTo).filter((action) => action.type === 'ack');
  assert.deepEqual(acks, [{ type: 'ack', token: 1, cycle: 1 }], 'node 0 answers its own writes');
  const last = primary.onNodeSwitch(4, 1, 2);
  assert.deepEqual(
    last.filter((action) => action.type === 'ack'),
    [{ type: 'ack', token: 2, cycle: 1 }],
    'node 1 answers at its switch: its write was made durable by the earlier sync',
  );
  const closeSync = last.find((action) => action.type === 'journal-sync');
  assert.ok(closeSync && closeSync.type === 'journal-sync');
  primary.onJournalSynced(5, closeSync.upTo);
  assert.equal(primary.closed, 1);
});

test('a write beyond the end of a volume is refused with write-out-of-range and journals nothing', () => {
  const primary = new PrimaryGroup(primaryConfig(), () => 0.5);
  const actions = primary.onWrite(0, { token: 1, node: 0, extent: dataExtent(1, 15, 2, 1) });
  const refused = actions.find((action) => action.type === 'write-refused');
  assert.ok(refused && refused.type === 'write-refused');
  assert.equal(refused.error.code, 'write-out-of-range');
  assert.match(refused.error.message, /16 blocks of volume 1/);
  assert.ok(!actions.some((action) => action.type === 'journal-append'));
});

test('after a failure the secondary gets one recovery cycle numbered K covering S+1..K, then K+1', () => {
  const harness = new Harness(primaryConfig({ cycleMsMin: 10 }));
  harness.write(dataExtent(0, 0, 1, 1));
  harness.advance(30);
  assert.equal(harness.secondaries[0]?.stored, 1);
  harness.cutLink(0);
  for (let i = 1; i <= 3; i++) {
    harness.write(dataExtent(0, i, 1, 10 + i));
    harness.advance(20);
  }
  assert.equal(harness.primary.closed, 4);
  const before = harness.endsOfCycles(0).length;
  harness.healLink(0);
  harness.advance(100);
  const ends = harness.endsOfCycles(0).slice(before);
  assert.deepEqual(ends[0], { cycle: 4, coversFrom: 2 }, 'cycles 2..4 as one cycle numbered 4');
  harness.write(dataExtent(0, 9, 1, 99));
  harness.advance(30);
  assert.deepEqual(
    harness.endsOfCycles(0).at(-1),
    { cycle: 5, coversFrom: 5 },
    'then the next higher number',
  );
  assert.equal(harness.secondaries[0]?.applied, 5);
  assert.deepEqual(
    [1, 2, 3, 9].map((block) => harness.byteAt(0, 0, block)),
    [11, 12, 13, 99],
  );
});

test('journal entries go only when every secondary stored them', () => {
  const harness = new Harness(primaryConfig({ secondaries: ['dr1', 'dr2'], cycleMsMin: 10 }));
  harness.write(dataExtent(0, 0, 1, 1));
  harness.advance(30);
  assert.equal(harness.primary.collected, 1);
  harness.cutLink(1);
  harness.write(dataExtent(0, 1, 1, 2));
  harness.advance(30);
  assert.equal(harness.secondaries[0]?.stored, 2);
  assert.equal(harness.primary.collected, 1, 'dr2 has not stored cycle 2');
  harness.healLink(1);
  harness.advance(100);
  assert.equal(harness.secondaries[1]?.stored, 2);
  assert.equal(harness.primary.collected, 2);
  assert.equal(harness.primaryJournal.at(-1)?.kind, 'collect');
});

test('recover rebuilds closed cycles, the journal floor and the capture cycle from the journal', () => {
  const records: PrimaryRecord[] = [
    { kind: 'write', cycle: 1, extent: dataExtent(0, 0, 1, 1) },
    { kind: 'switch', closed: 1 },
    { kind: 'write', cycle: 2, extent: dataExtent(0, 1, 1, 2) },
    { kind: 'switch', closed: 2 },
    { kind: 'collect', upTo: 1 },
    { kind: 'write', cycle: 3, extent: dataExtent(0, 2, 1, 3) },
  ];
  const primary = PrimaryGroup.recover(primaryConfig(), () => 0.5, records);
  assert.equal(primary.closed, 2);
  assert.equal(primary.collected, 1);
  assert.equal(primary.capture, 3);
  // The fold refers to record 3 (the write of cycle 2), block 0 of its extent: its data stays in the journal.
  assert.equal(primary.foldRange(2, 2).content(0, 1), blockRef(3, 0));
  const status = primary.status(0);
  assert.equal(status.journalBytes, 2 * 512, 'cycles 2 and 3 are still journaled');
});

test('recover closes cycles that a node had already moved past when the primary stopped', () => {
  const records: PrimaryRecord[] = [
    { kind: 'write', cycle: 1, extent: dataExtent(0, 0, 1, 1) },
    { kind: 'write', cycle: 2, extent: dataExtent(0, 40, 1, 2) },
  ];
  const primary = PrimaryGroup.recover(primaryConfig({ nodes: 2, ack: 'cycle' }), () => 0.5, records);
  const actions: PrimaryAction[] = primary.start();
  assert.equal(primary.capture, 2);
  const sync = actions.find((action) => action.type === 'journal-sync');
  assert.ok(sync && sync.type === 'journal-sync');
  primary.onJournalSynced(0, sync.upTo);
  assert.equal(primary.closed, 1);
});

test('a connect that never completes fails the link after heartbeatMsTimeout and is retried', () => {
  const primary = new PrimaryGroup(primaryConfig(), () => 0.5);
  const first = primary.onTick(0).filter((action) => action.type === 'connect');
  assert.equal(first.length, 1);
  primary.onTick(300);
  const failed = primary.onTick(401);
  assert.ok(failed.some((action) => action.type === 'disconnect'));
  assert.match(primary.status(401).secondaries[0]?.lastFailure ?? '', /connect not completed for 401 ms/);
  const retried = primary.onTick(401 + 50).filter((action) => action.type === 'connect');
  assert.equal(retried.length, 1, 'a new session after reconnectMsMin');
});

test('status: a zero run costs the journal no payload but counts as lag until stored', () => {
  const harness = new Harness(primaryConfig({ cycleMsMin: 10 }));
  harness.cutLink(0);
  harness.write({ volume: 0, block: 0, blockCount: 8, data: null });
  harness.write(dataExtent(0, 8, 1, 1));
  const status = harness.primary.status(harness.nowMs);
  assert.equal(status.journalBytes, 512);
  assert.equal(status.secondaries[0]?.lagBytes, 9 * 512);
  harness.healLink(0);
  harness.advance(200);
  const caughtUp = harness.primary.status(harness.nowMs);
  assert.equal(caughtUp.secondaries[0]?.lagBytes, 0);
  assert.equal(caughtUp.secondaries[0]?.lagCycles, 0);
  assert.equal(caughtUp.journalBytes, 0);
});

test('with no secondary configured, a closed cycle is collected at once', () => {
  const primary = new PrimaryGroup(primaryConfig({ secondaries: [] }), () => 0.5);
  primary.onWrite(0, { token: 1, node: 0, extent: dataExtent(0, 0, 1, 1) });
  const switched = primary.onTick(1);
  const sync = switched.find((action) => action.type === 'journal-sync');
  assert.ok(sync && sync.type === 'journal-sync');
  const synced = primary.onJournalSynced(2, sync.upTo);
  assert.equal(primary.closed, 1);
  assert.equal(primary.collected, 1);
  assert.ok(synced.some((action) => action.type === 'journal-collect' && action.upTo === 1));
  assert.deepEqual(primary.status(2).secondaries, []);
});

test("every hello states the primary's site and generations; a refusal shows in status and is retried at the longest backoff", () => {
  const primary = new PrimaryGroup(primaryConfig(), () => 0.5);
  const connectOf = (actions: PrimaryAction[]): number | undefined =>
    actions.flatMap((action) => (action.type === 'connect' ? [action.connection] : []))[0];
  const connection = connectOf(primary.onTick(0)) as number;
  primary.onConnected(0, connection);
  const [hello] = primary.pollFrames(0, connection, 1);
  assert.ok(hello?.type === 'hello');
  assert.equal(hello.primarySite, primaryIdentity.site);
  assert.deepEqual(hello.generations, primaryIdentity.generations);
  const message = 'this secondary follows primary site x generation y; refused primary site z generation w';
  const refused = primary.onFrame(10, connection, { type: 'error', code: 'primary-mismatch', message });
  assert.ok(refused.some((action) => action.type === 'disconnect'));
  const status = primary.status(10).secondaries[0];
  assert.equal(status?.link, 'refused');
  assert.equal(status?.refusal, `secondary refused: primary-mismatch: ${message}`);
  assert.equal(
    connectOf(primary.onTick(10 + timings.reconnectMsMax - 1)),
    undefined,
    'no retry before the longest backoff',
  );
  assert.notEqual(connectOf(primary.onTick(10 + timings.reconnectMsMax)), undefined, 'then a retry');
});

test('a secondary that heartbeats but stores nothing fails the link after storedProgressMsTimeout', () => {
  const harness = new Harness(
    primaryConfig({ cycleMsMin: 10, timings: { ...timings, storedProgressMsTimeout: 2000 } }),
  );
  harness.advance(50);
  harness.write(dataExtent(0, 0, 1, 1));
  harness.advance(100);
  assert.equal(harness.primary.status(harness.nowMs).secondaries[0]?.stored, 1, 'a healthy start');
  // The secondary's storage dies inside: it keeps its connections and heartbeats, stores nothing.
  (harness.secondaries[0] as Secondary).onJournalSynced = () => [];
  harness.write(dataExtent(0, 1, 1, 2));
  harness.advance(1500);
  const waiting = harness.primary.status(harness.nowMs).secondaries[0];
  assert.equal(waiting?.link, 'streaming', 'heartbeats alone keep it up for now');
  assert.equal(waiting?.failures, 0);
  harness.advance(1000);
  const failed = harness.primary.status(harness.nowMs).secondaries[0];
  assert.equal(failed?.failures, 1, 'the link failed once the bound passed');
  assert.match(failed?.lastFailure ?? '', /no STORED progress for 20\d\d ms .*stored 1, sent up to 2/);
  assert.ok(harness.logs.some((line) => line.startsWith('link-failed') && /STORED progress/.test(line)));
  // The operator restarts the secondary (its storage answers again): the link recovers the cycle.
  harness.crashSecondary(0);
  harness.restartSecondary(0);
  harness.advance(1000);
  const healed = harness.primary.status(harness.nowMs).secondaries[0];
  assert.equal(healed?.link, 'streaming');
  assert.equal(healed?.stored, 2);
});

test('an idle link with nothing outstanding is never failed for lack of STORED frames', () => {
  const harness = new Harness(
    primaryConfig({ cycleMsMin: 10, timings: { ...timings, storedProgressMsTimeout: 500 } }),
  );
  harness.advance(50);
  harness.write(dataExtent(0, 0, 1, 1));
  harness.advance(5000);
  const link = harness.primary.status(harness.nowMs).secondaries[0];
  assert.equal(link?.link, 'streaming');
  assert.equal(link?.failures, 0);
  assert.equal(link?.stored, 1);
});

test('the journal index keeps references, not block data: packets read their bytes back from the journal', () => {
  const harness = new Harness(primaryConfig({ cycleMsMin: 10 }));
  harness.cutLink(0);
  for (let block = 0; block < 32; block++) harness.write(dataExtent(0, block, 1, block + 1));
  harness.advance(20);
  assert.equal(harness.primary.closed, 1);
  const fold = harness.primary.foldRange(1, 1);
  assert.equal(fold.payloadBytes, 32 * 512, 'the cycle carries every block');
  assert.equal(fold.payloadBytesInMemory, 0, 'and holds none of their bytes');
  assert.equal(typeof harness.primary.newestBlock(0, 5), 'number', 'a read finds where the block lies');
  harness.healLink(0);
  harness.advance(200);
  assert.equal(harness.secondaries[0]?.stored, 1);
  for (let block = 0; block < 32; block++) assert.equal(harness.byteAt(0, 0, block), block + 1);
  assert.ok(
    harness.blocksRead >= 32,
    `the packets' bytes came from the journal (${harness.blocksRead} blocks)`,
  );
});

test('a journal sync is asked for once syncBytes of writes were appended, without waiting for a switch', () => {
  const primary = new PrimaryGroup(primaryConfig({ cycleMsMin: 1000, syncBytes: 4 * 512 }), () => 0.5);
  const syncsOf = (actions: PrimaryAction[]) => actions.filter((action) => action.type === 'journal-sync');
  for (let block = 0; block < 3; block++)
    assert.deepEqual(
      syncsOf(primary.onWrite(0, { token: block, node: 0, extent: dataExtent(0, block, 1, 1) })),
      [],
    );
  const fourth = primary.onWrite(0, { token: 3, node: 0, extent: dataExtent(0, 3, 1, 1) });
  assert.deepEqual(
    syncsOf(fourth),
    [{ type: 'journal-sync', upTo: 4 }],
    'the fourth block reaches syncBytes',
  );
  assert.equal(primary.capture, 1, 'no switch was needed');
  const zeroes = primary.onWrite(0, {
    token: 4,
    node: 0,
    extent: { volume: 0, block: 8, blockCount: 64, data: null },
  });
  assert.deepEqual(syncsOf(zeroes), [], 'zero runs hold no bytes in memory and count for nothing');
});

test('a STORED of applied progress on a welcomed connection while another is still in its handshake does not fail the link', () => {
  const primary = new PrimaryGroup(primaryConfig({ connectionsPerLink: 2 }), () => 0.5);
  const connections = primary
    .onTick(0)
    .flatMap((action) => (action.type === 'connect' ? [action.connection] : []));
  assert.equal(connections.length, 2);
  const [first, second] = connections as [number, number];
  const welcome = (connection: number, nowMs: number) => {
    primary.onConnected(nowMs, connection);
    const [hello] = primary.pollFrames(nowMs, connection, 1);
    assert.ok(hello?.type === 'hello');
    return {
      type: 'welcome' as const,
      protocolVersion: hello.protocolVersion,
      sessionId: hello.sessionId,
      secondary: 'dr1',
      stored: 0,
      applied: 0,
      consistentStored: 0,
    };
  };
  const firstWelcome = welcome(first, 1);
  const secondWelcome = welcome(second, 1);
  primary.onFrame(2, first, firstWelcome);
  // The secondary finished an apply meanwhile: it says so on the connection it welcomed.
  primary.onFrame(3, first, { type: 'stored', stored: 0, applied: 0 });
  primary.onFrame(4, second, secondWelcome);
  const status = primary.status(4).secondaries[0];
  assert.equal(status?.failures, 0, status?.lastFailure ?? '');
  assert.equal(status?.link, 'streaming');
});

// ---- fencing (docs/failover.md, "Fencing") ---------------------------------------------------

const promotedSite = 'b'.repeat(32);
/** The generation a promotion of dr1 started at cycle 7, extending the primary's chain. */
const promotion = { id: '7'.repeat(32), startedAt: 7, primarySite: promotedSite };

/** A bare group with its one link opened; `welcomed` finishes the handshake. */
function openedLink(
  config = primaryConfig(),
  welcomed = true,
): { primary: PrimaryGroup; connection: number; hello: Extract<Frame, { type: 'hello' }> } {
  const primary = new PrimaryGroup(config, () => 0.5);
  const connection = primary.onTick(0).find((action) => action.type === 'connect');
  assert.ok(connection?.type === 'connect');
  primary.onConnected(0, connection.connection);
  const [hello] = primary.pollFrames(0, connection.connection, 1);
  assert.ok(hello?.type === 'hello');
  if (welcomed) {
    primary.onFrame(1, connection.connection, {
      type: 'welcome',
      protocolVersion: hello.protocolVersion,
      sessionId: hello.sessionId,
      secondary: 'dr1',
      stored: 0,
      applied: 0,
      consistentStored: 0,
    });
    assert.equal(primary.status(1).secondaries[0]?.link, 'streaming');
  }
  return { primary, connection: connection.connection, hello };
}

function ofType<T extends PrimaryAction['type']>(
  actions: PrimaryAction[],
  type: T,
): Extract<PrimaryAction, { type: T }>[] {
  return actions.filter((action): action is Extract<PrimaryAction, { type: T }> => action.type === type);
}

test('a superseded frame whose chain extends the primary fences it: later writes are refused naming who superseded it, flushes still complete', () => {
  const { primary, connection } = openedLink(primaryConfig({ ack: 'cycle' }));
  // Journaled in the capture cycle, not yet acknowledged: it is after the promotion, so refused.
  const journaled = primary.onWrite(2, { token: 1, node: 0, extent: dataExtent(0, 0, 1, 1) });
  assert.equal(ofType(journaled, 'journal-append').length, 1);
  const fenced = primary.onFrame(3, connection, {
    type: 'superseded',
    site: promotedSite,
    generations: [...primaryIdentity.generations, promotion],
  });
  const by = { site: promotedSite, generation: promotion.id, startedAt: 7 };
  assert.deepEqual(ofType(fenced, 'fence'), [{ type: 'fence', by }]);
  assert.deepEqual(primary.fenced, by);
  assert.deepEqual(
    ofType(fenced, 'disconnect').map((action) => action.connection),
    [connection],
  );
  assert.deepEqual(
    ofType(fenced, 'write-refused').map((action) => [action.token, action.error.code]),
    [[1, 'fenced']],
  );

  const refused = ofType(
    primary.onWrite(4, { token: 2, node: 0, extent: dataExtent(0, 1, 1, 2) }),
    'write-refused',
  );
  assert.equal(refused.length, 1);
  assert.equal(refused[0]?.error.code, 'fenced');
  for (const named of [
    promotedSite,
    promotion.id,
    'from cycle 7',
    primaryIdentity.generations[0]?.id as string,
  ])
    assert.ok(refused[0]?.error.message.includes(named), `names ${named}: ${refused[0]?.error.message}`);

  // The write journaled before the fence is made durable by a flush all the same.
  const flush = primary.onFlush(5, 3);
  const sync = ofType(flush, 'journal-sync')[0];
  assert.ok(sync);
  assert.deepEqual(ofType(primary.onJournalSynced(6, sync.upTo), 'flush-done'), [
    { type: 'flush-done', token: 3 },
  ]);

  // No cycle switch, no reconnect, ever; status says why the link is down.
  const later = primary.onTick(10 * timings.reconnectMsMax);
  assert.deepEqual(later, []);
  assert.equal(primary.capture, 1);
  const link = primary.status(10 * timings.reconnectMsMax).secondaries[0];
  assert.equal(link?.link, 'refused');
  assert.match(link?.refusal ?? '', /superseded by site b{32}/);
  // One fence only: a second superseded frame has no link left to arrive on.
  assert.deepEqual(
    ofType(
      primary.onFrame(11, connection, {
        type: 'superseded',
        site: promotedSite,
        generations: [...primaryIdentity.generations, promotion],
      }),
      'fence',
    ),
    [],
  );
});

test('a superseded frame during the handshake fences too', () => {
  const { primary, connection } = openedLink(primaryConfig(), false);
  const actions = primary.onFrame(1, connection, {
    type: 'superseded',
    site: promotedSite,
    generations: [...primaryIdentity.generations, promotion],
  });
  assert.equal(ofType(actions, 'fence').length, 1);
  assert.equal(
    ofType(primary.onWrite(2, { token: 1, node: 0, extent: dataExtent(0, 0, 1, 1) }), 'write-refused')[0]
      ?.error.code,
    'fenced',
  );
});

test('a superseded frame whose chain does not extend the primary never fences: the link is refused and retried, writes go on', () => {
  const older = { id: '5'.repeat(32), startedAt: 1, primarySite: 'c'.repeat(32) };
  const current = { id: '6'.repeat(32), startedAt: 30, primarySite: primaryIdentity.site };
  const identity = { site: primaryIdentity.site, generations: [older, current] };
  const forged = (generations: (typeof promotion)[], site = promotedSite) => ({
    type: 'superseded' as const,
    site,
    generations,
  });
  const cases: [string, ReturnType<typeof forged>, RegExp][] = [
    ['no generation of this primary', forged([promotion]), /holds no generation of this primary's/],
    [
      'a split brain',
      forged([older, promotion]),
      /branched from this primary's after generation 5{32} \(a split brain\)/,
    ],
    [
      'its own generation',
      forged([older, current], primaryIdentity.site),
      /ends at this primary's own generation/,
    ],
    ['an older chain', forged([older], 'c'.repeat(32)), /older than this primary's/],
    ['a chain of another site', forged([older, current, promotion], 'c'.repeat(32)), /chain is unusable/],
  ];
  for (const [what, frame, why] of cases) {
    const { primary, connection } = openedLink(primaryConfig({ identity }));
    const actions = primary.onFrame(2, connection, frame);
    assert.deepEqual(ofType(actions, 'fence'), [], what);
    assert.equal(primary.fenced, null, what);
    assert.equal(ofType(actions, 'disconnect').length, 1, what);
    const status = primary.status(2).secondaries[0];
    assert.equal(status?.link, 'refused', what);
    assert.match(status?.refusal ?? '', why, what);
    assert.match(status?.refusal ?? '', /not fenced$/, what);
    assert.equal(
      ofType(primary.onWrite(3, { token: 1, node: 0, extent: dataExtent(0, 0, 1, 1) }), 'ack').length,
      1,
      what,
    );
    assert.equal(ofType(primary.onTick(2 + timings.reconnectMsMax), 'connect').length, 1, `${what}: retried`);
  }
});

test('a primary restarted fenced refuses the first write and dials no secondary', () => {
  const by = { site: promotedSite, generation: promotion.id, startedAt: 7 };
  const primary = new PrimaryGroup(primaryConfig({ fencedBy: by }), () => 0.5);
  assert.deepEqual(primary.start(), []);
  assert.deepEqual(primary.fenced, by);
  assert.equal(
    ofType(primary.onWrite(0, { token: 1, node: 0, extent: dataExtent(0, 0, 1, 1) }), 'write-refused')[0]
      ?.error.code,
    'fenced',
  );
  assert.deepEqual(primary.onTick(10 * timings.reconnectMsMax), []);
  assert.match(
    primary.status(0).secondaries[0]?.refusal ?? '',
    /superseded by site b{32}, generation 7{32}, from cycle 7 on/,
  );
});

test('a switchover stops writes, closes what was captured, and asks the secondary to take over once it stored it all', () => {
  const harness = new Harness(primaryConfig({ cycleMsMin: 100 }));
  harness.advance(50);
  assert.match(harness.primary.switchoverRefusal('dr2') ?? '', /no secondary named "dr2"/);
  for (let block = 0; block < 4; block++) harness.write(dataExtent(0, block, 1, block + 1));
  assert.equal(harness.primary.switchoverRefusal('dr1'), null);
  harness.beginSwitchover('dr1', '9'.repeat(32));
  assert.match(harness.primary.switchoverRefusal('dr1') ?? '', /under way/);
  const refused = harness.write(dataExtent(0, 5, 1, 9));
  assert.equal(harness.refusedWrites.get(refused), 'switching-over', 'writes from now on are refused');
  // The capture cycle closes at once (no cycle.intervalMinMs wait) and is sent; the secondary is
  // asked only once it stored every closed cycle.
  assert.deepEqual(harness.promotionsRequested, []);
  harness.advance(50);
  const asked = harness.primary.switchover;
  assert.equal(asked?.cycle, harness.primary.closed);
  assert.equal(harness.secondaries[0]?.stored, asked?.cycle);
  assert.deepEqual(harness.promotionsRequested, [
    { secondary: 0, cycle: asked?.cycle, generation: '9'.repeat(32) },
  ]);
  assert.equal(harness.primary.abortSwitchover(), false, 'once asked, it cannot be taken back');
  // Nothing was captured after the cycle it handed over.
  harness.advance(500);
  assert.equal(harness.primary.closed, asked?.cycle);
  assert.equal(harness.promotionsRequested.length, 1, 'asked once');
});

test('a switchover the secondary refuses, or one given up before it was asked, leaves the primary taking writes', () => {
  const harness = new Harness(primaryConfig({ cycleMsMin: 100 }));
  harness.advance(50);
  harness.refuseSwitchover = "this site's config cannot run a primary";
  harness.write(dataExtent(0, 0, 1, 1));
  harness.beginSwitchover('dr1', '9'.repeat(32));
  harness.advance(50);
  assert.equal(harness.promotionsRequested.length, 1);
  assert.equal(harness.primary.switchover, null, 'refused: no switchover under way');
  assert.ok(harness.logs.some((line) => line.startsWith('switchover-refused')));
  const taken = harness.write(dataExtent(0, 1, 1, 2));
  assert.equal(harness.refusedWrites.has(taken), false, 'writes are taken again');

  const other = new Harness(primaryConfig({ cycleMsMin: 100 }));
  other.advance(50);
  // The secondary is away: it cannot store the last cycle, so the primary is never asked to wait for it.
  other.cutLink(0);
  other.advance(timings.heartbeatMsTimeout * 2);
  assert.match(other.primary.switchoverRefusal('dr1') ?? '', /not streaming/);
  other.healLink(0);
  other.advance(timings.reconnectMsMax * 2);
  other.beginSwitchover('dr1', '9'.repeat(32));
  other.cutLink(0);
  other.write(dataExtent(0, 1, 1, 2));
  other.advance(100);
  assert.equal(other.primary.switchover?.cycle, null, 'not asked while the secondary is away');
  assert.equal(other.primary.abortSwitchover(), true);
  const after = other.write(dataExtent(0, 2, 1, 3));
  assert.equal(other.refusedWrites.has(after), false, 'given up: writes are taken again');
});

test('a switchover is on record before it is asked; a restart resumes it (no writes, asked again) until the secondary answers', () => {
  const harness = new Harness(primaryConfig({ cycleMsMin: 100 }));
  harness.advance(50);
  harness.write(dataExtent(0, 0, 1, 1));
  const generation = '9'.repeat(32);
  harness.beginSwitchover('dr1', generation);
  harness.advance(50);
  const cycle = harness.primary.switchover?.cycle as number;
  assert.deepEqual(harness.handoverRecords, [{ secondary: 'dr1', generation, cycle }]);
  assert.equal(harness.promotionsRequested.length, 1);

  // The process ends before it heard the answer; site.json tells the next one.
  harness.config.handover = { secondary: 'dr1', generation };
  harness.restartPrimary();
  assert.deepEqual(harness.primary.switchover, { secondary: 'dr1', generation, cycle: null });
  const refused = harness.write(dataExtent(0, 1, 1, 2));
  assert.equal(harness.refusedWrites.get(refused), 'switching-over', 'the secondary may lead already');
  harness.refuseSwitchover = "this site's config cannot run a primary";
  harness.advance(timings.reconnectMsMax * 2);
  assert.deepEqual(
    harness.promotionsRequested.slice(1),
    [{ secondary: 0, cycle, generation }],
    'asked again',
  );
  assert.equal(harness.primary.switchover, null, 'refused: it leads on');
  assert.deepEqual(harness.handoverRecords.slice(1), [{ secondary: 'dr1', generation, cycle }, null]);
  const taken = harness.write(dataExtent(0, 1, 1, 3));
  assert.equal(harness.refusedWrites.has(taken), false, 'writes are taken again');
});

test('writtenAfter names the blocks written after a cycle in runs of whole chunks, and null once the journal no longer holds them', () => {
  const harness = new Harness(primaryConfig({ cycleMsMin: 10 }));
  harness.advance(20);
  harness.write(dataExtent(0, 0, 1, 1));
  harness.advance(50);
  const first = harness.primary.closed;
  harness.write(dataExtent(0, 17, 2, 2));
  harness.write(dataExtent(1, 3, 1, 3));
  harness.write({ volume: 0, block: 40, blockCount: 1, data: null });
  const after = harness.primary.writtenAfter(first);
  assert.ok(after);
  assert.equal(after.writes, 3);
  // Chunks of 16 blocks: blocks 17-18 and 40 of volume 0 (adjacent chunks, one run), block 3 of volume 1.
  assert.deepEqual(after.runs, [
    { volume: 0, block: 16, blockCount: 32 },
    { volume: 1, block: 0, blockCount: 16 },
  ]);
  // Once the secondary stored everything, the journal collects past the first cycle.
  harness.advance(500);
  assert.ok(harness.primary.collected > first);
  assert.equal(harness.primary.writtenAfter(first - 1), null, 'collected past it: only a full copy is sure');
});

test("a rejoining site's divergence, stated in the handshake, joins the link's bitmap: the session resyncs those blocks", () => {
  const { primary, connection, hello } = openedLink(primaryConfig(), false);
  const session = primary.status(0).secondaries[0];
  assert.equal(session?.link, 'connecting');
  const divergence = primary.onFrame(1, connection, {
    type: 'divergence',
    cycle: 0,
    runs: [{ volume: 0, block: 20, blockCount: 3 }],
  });
  assert.deepEqual(ofType(divergence, 'disconnect'), [], 'taken in the handshake');
  const welcomed = primary.onFrame(2, connection, {
    type: 'welcome',
    protocolVersion: hello.protocolVersion,
    sessionId: hello.sessionId,
    secondary: 'dr1',
    stored: 0,
    applied: 0,
    consistentStored: 0,
  });
  const logs = ofType(welcomed, 'log').map((action) => action.entry.event);
  assert.ok(logs.includes('rejoin-divergence'), logs.join(','));
  assert.ok(logs.includes('resync-started'), logs.join(','));
  const link = primary.status(2).secondaries[0];
  assert.equal(link?.mode, 'resync');
  assert.equal(link?.resyncBytesLeft, 16 * blockBytes, 'one chunk: the blocks that differ, not the volumes');
});

test('a divergence outside the handshake, or naming blocks outside the volumes, fails the link', () => {
  const late = openedLink();
  const afterWelcome = late.primary.onFrame(2, late.connection, {
    type: 'divergence',
    cycle: 0,
    runs: [{ volume: 0, block: 0, blockCount: 1 }],
  });
  assert.equal(ofType(afterWelcome, 'disconnect').length, 1);
  assert.match(late.primary.status(2).secondaries[0]?.lastFailure ?? '', /divergence outside the handshake/);
  const outside = openedLink(primaryConfig(), false);
  outside.primary.onFrame(1, outside.connection, {
    type: 'divergence',
    cycle: 0,
    runs: [{ volume: 1, block: 10, blockCount: 7 }],
  });
  assert.match(
    outside.primary.status(1).secondaries[0]?.lastFailure ?? '',
    /blocks 10\.\.16 of volume 1, which has 16/,
  );
});
