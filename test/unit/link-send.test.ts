// Proves that a large cycle never starves the primary's side of a link: packets are built only a
// few megabytes ahead of what the sockets take (linkQueue.bytesLow), a heartbeat due leaves before
// any data already built, and bytes arriving (a frame or part of one) count as the secondary being
// alive. Driven through PrimaryGroup directly, one frame polled at a time as a full socket would.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { limits, linkQueue } from '../../src/core/limits.ts';
import { type PrimaryAction, PrimaryGroup } from '../../src/core/primary-group.ts';
import type { GroupShape } from '../../src/core/types.ts';
import { type Frame, protocolVersion } from '../../src/protocol/frames.ts';
import { bytesOfPieces, primaryConfig, timings } from './fixtures.ts';

const blockBytes = 4096;
const mib = 1024 * 1024;
/** One cycle of this many MiB, written as 1 MiB extents: as many full packets. */
const cycleMib = 16;
const bigShape: GroupShape = {
  group: 'unit',
  blockBytes,
  volumes: [{ name: 'data', sizeBytes: 64 * mib }],
};

/** The data of every write the primary journaled, by append sequence: its packets are read from it. */
const journaled = new Map<number, Uint8Array | null>();

function keepJournaled(actions: PrimaryAction[]): PrimaryAction[] {
  for (const action of actions)
    if (action.type === 'journal-append' && action.record.kind === 'write')
      journaled.set(action.seq, action.record.extent.data);
  return actions;
}

/**
 * One frame, as a socket with room for one takes it: when none is built yet, the packet reads the
 * polls asked for are answered from the journal (as the node does), and the poll is tried again.
 */
function pollOne(primary: PrimaryGroup, nowMs: number, connection: number): Frame | undefined {
  for (;;) {
    const [frame] = primary.pollFrames(nowMs, connection, 1);
    if (frame) return frame;
    const reads = primary.pendingActions().filter((action) => action.type === 'read-blocks');
    if (reads.length === 0) return undefined;
    for (const read of reads)
      primary.onBlocksRead(
        nowMs,
        read.link,
        read.token,
        bytesOfPieces(read.pieces, (seq) => journaled.get(seq), blockBytes),
      );
  }
}

/** A primary streaming to dr1 on one connection, with one closed cycle of cycleMib MiB not yet sent. */
function streamingWithLargeCycle(): { primary: PrimaryGroup; connection: number; nowMs: number } {
  journaled.clear();
  const primary = new PrimaryGroup(primaryConfig({ shape: bigShape, cycleMsMin: 10 }), () => 0.5);
  const connection = connectionOf(primary.onTick(0));
  primary.onConnected(0, connection);
  const [hello] = primary.pollFrames(0, connection, 1);
  assert.ok(hello?.type === 'hello');
  primary.onFrame(1, connection, {
    type: 'welcome',
    protocolVersion,
    sessionId: hello.sessionId,
    secondary: 'dr1',
    stored: 0,
    applied: 0,
    consistentStored: 0,
  });
  for (let extent = 0; extent < cycleMib; extent++) {
    const blockCount = mib / blockBytes;
    const data = new Uint8Array(mib).fill(extent + 1);
    keepJournaled(
      primary.onWrite(2, {
        token: extent,
        node: 0,
        extent: { volume: 0, block: extent * blockCount, blockCount, data },
      }),
    );
  }
  const sync = primary.onTick(20).find((action) => action.type === 'journal-sync');
  assert.ok(sync?.type === 'journal-sync');
  primary.onJournalSynced(20, sync.upTo);
  assert.equal(primary.closed, 1);
  return { primary, connection, nowMs: 20 };
}

function connectionOf(actions: PrimaryAction[]): number {
  const connect = actions.find((action) => action.type === 'connect');
  assert.ok(connect?.type === 'connect');
  return connect.connection;
}

test('packets are built at most linkQueue.bytesLow (plus one packet) ahead of what the socket takes', () => {
  const { primary, connection, nowMs } = streamingWithLargeCycle();
  const first = pollOne(primary, nowMs, connection);
  assert.equal(first?.type, 'data');
  const built = primary.status(nowMs).secondaries[0]?.shippedBytes ?? 0;
  assert.ok(
    built <= linkQueue.bytesLow + limits.packetBytesMax,
    `${built / mib} MiB built for one frame taken; at most ${(linkQueue.bytesLow + limits.packetBytesMax) / mib}`,
  );
  // Taking frames builds more: the whole cycle goes, then its end.
  const types: string[] = [];
  for (let frame = pollOne(primary, nowMs, connection); frame; frame = pollOne(primary, nowMs, connection))
    types.push(frame.type);
  assert.equal(types.filter((type) => type === 'data').length, cycleMib - 1);
  assert.equal(types.at(-1), 'end-of-cycle');
  assert.equal(primary.status(nowMs).secondaries[0]?.shippedBytes, cycleMib * mib);
});

test('a heartbeat due leaves before the data already built', () => {
  const { primary, connection, nowMs } = streamingWithLargeCycle();
  assert.equal(pollOne(primary, nowMs, connection)?.type, 'data');
  // The socket is full: nothing is taken for longer than heartbeatMsInterval, data waits built.
  const later = nowMs + timings.heartbeatMsInterval;
  primary.onBytesReceived(later, connection);
  primary.onTick(later);
  const next = pollOne(primary, later, connection);
  assert.equal(next?.type, 'heartbeat', 'the heartbeat jumps the queue of built packets');
  assert.equal(pollOne(primary, later, connection)?.type, 'data', 'then the data goes on');
});

test('bytes arriving keep the link alive past heartbeatMsTimeout; silence still fails it', () => {
  const { primary, connection, nowMs } = streamingWithLargeCycle();
  let now = nowMs;
  for (; now <= nowMs + 3 * timings.heartbeatMsTimeout; now += 100) {
    primary.onBytesReceived(now, connection);
    primary.onTick(now);
  }
  assert.equal(primary.status(now).secondaries[0]?.link, 'streaming', 'progress is not silence');
  assert.equal(primary.status(now).secondaries[0]?.failures, 0);
  const failed = primary.onTick(now + timings.heartbeatMsTimeout + 1);
  assert.ok(failed.some((action) => action.type === 'disconnect'));
  assert.match(primary.status(now).secondaries[0]?.lastFailure ?? '', /no frame for/);
});
