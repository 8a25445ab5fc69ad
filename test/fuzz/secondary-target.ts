/**
 * Fuzz target for the secondary's protocol logic. Each case builds a valid session (hello, then
 * cycles of in-range extents closed by end-of-cycle frames with the right packet count and digest),
 * mutates it (frames dropped, repeated, swapped, fields changed, bytes changed, connections lost,
 * new sessions) and, most of the time, seals the digests again so the mutated cycles still reach
 * store and apply. A driver completes the journal and volume syncs the secondary asks for, at random
 * moments, and every action the secondary produces is checked against the invariants:
 * - stored and applied never go down, and applied never passes stored;
 * - stored only moves to a cycle whose stored record the journal made durable;
 * - a volume write stays inside its volume and carries, block for block, the content of a packet
 *   of a durably stored cycle above the previous applied one (nothing is applied unstored).
 */
import { ProtocolError } from '../../src/core/errors.ts';
import type { SecondaryRecord } from '../../src/core/records.ts';
import { Secondary, type SecondaryAction } from '../../src/core/secondary.ts';
import { type Extent, type GroupShape, volumeBlocks } from '../../src/core/types.ts';
import {
  addDigest,
  type DataFrame,
  dataFrameOf,
  type EndOfCycleFrame,
  encodeFrame,
  type Frame,
  FrameDecoder,
  packetDigest,
  protocolVersion,
} from '../../src/protocol/frames.ts';
import type { Random } from '../../src/sim/random.ts';
import { extentFromJournal } from '../unit/fixtures.ts';
import { check, mutate, shuffle } from './mutate.ts';

const shape: GroupShape = {
  group: 'fuzz',
  blockBytes: 512,
  volumes: [
    { name: 'data', sizeBytes: 64 * 512 },
    { name: 'log', sizeBytes: 16 * 512 },
  ],
};

/** How far the cases of a run got: the fuzzer is worth little if mutated sessions never store. */
export const secondaryReach = { cases: 0, stored: 0, applied: 0 };

/** One step the driver takes: a frame on a connection, raw bytes, or a connection event. */
type Step =
  | { kind: 'frame'; connection: number; frame: Frame }
  | { kind: 'bytes'; connection: number; bytes: Uint8Array }
  | { kind: 'lost'; connection: number }
  | { kind: 'opened'; connection: number };

function randomExtent(random: Random): Extent {
  const volume = random.int(shape.volumes.length);
  const blocks = volumeBlocks(shape, volume);
  const block = random.int(blocks);
  const blockCount = 1 + random.int(Math.min(4, blocks - block));
  return { volume, block, blockCount, data: random.chance(0.2) ? null : blockContent(random, blockCount) };
}

/** Blocks that tell packets apart: each a random fill byte and a random 32-bit tag. */
function blockContent(random: Random, blockCount: number): Uint8Array {
  const data = new Uint8Array(blockCount * shape.blockBytes);
  const view = new DataView(data.buffer);
  for (let index = 0; index < blockCount; index++) {
    data.fill(random.int(256), index * shape.blockBytes, (index + 1) * shape.blockBytes);
    view.setUint32(index * shape.blockBytes, random.int(2 ** 32));
  }
  return data;
}

/** A valid session: hello on each connection, then cycles above `stored`, packets in any order. */
function validSession(random: Random, sessionId: number, firstCycle: number): Step[] {
  const connectionCount = 1 + random.int(2);
  const steps: Step[] = [];
  for (let connection = 1; connection <= connectionCount; connection++) {
    steps.push({
      kind: 'frame',
      connection,
      frame: {
        type: 'hello',
        protocolVersion,
        sessionId,
        connectionIndex: connection - 1,
        connectionCount,
        group: shape.group,
        blockBytes: shape.blockBytes,
        volumes: shape.volumes,
        primarySite: 'c'.repeat(32),
        generations: [{ id: 'd'.repeat(32), startedAt: 1, primarySite: 'c'.repeat(32) }],
      },
    });
  }
  let coversFrom = firstCycle;
  for (let cycles = 1 + random.int(4); cycles > 0; cycles--) {
    // Now and then a recovery cycle: one number covering several.
    const cycle = coversFrom + (random.chance(0.2) ? random.int(3) : 0);
    const packets = Array.from({ length: 1 + random.int(4) }, (_, index) =>
      dataFrameOf(cycle, index, randomExtent(random)),
    );
    shuffle(random, packets);
    for (const packet of packets)
      steps.push({ kind: 'frame', connection: 1 + random.int(connectionCount), frame: packet });
    const end: EndOfCycleFrame = {
      type: 'end-of-cycle',
      cycle,
      coversFrom,
      packetCount: 0,
      digest: 0,
      consistent: random.chance(0.8),
    };
    steps.push({ kind: 'frame', connection: 1 + random.int(connectionCount), frame: end });
    coversFrom = cycle + 1;
  }
  sealDigests(steps);
  return steps;
}

/** Sets every end-of-cycle's packet count and digest to what the session's data frames make. */
function sealDigests(steps: Step[]): void {
  const cycles = new Map<number, Map<number, DataFrame>>();
  for (const step of steps) {
    if (step.kind !== 'frame' || step.frame.type !== 'data') continue;
    const packets = cycles.get(step.frame.cycle) ?? new Map<number, DataFrame>();
    packets.set(step.frame.packetIndex, step.frame);
    cycles.set(step.frame.cycle, packets);
  }
  for (const step of steps) {
    if (step.kind !== 'frame' || step.frame.type !== 'end-of-cycle') continue;
    const packets = [...(cycles.get(step.frame.cycle)?.values() ?? [])];
    step.frame = {
      ...step.frame,
      packetCount: packets.length,
      digest: packets.reduce((sum, packet) => addDigest(sum, packetDigest(packet)), 0),
    };
  }
}

/** Values where bounds live: just inside and just outside a volume, and absurd ones (u32 fields). */
function interesting(random: Random, near: number): number {
  const values = [0, 1, near - 1, near, near + 1, 2 ** 31, 2 ** 32 - 1, random.int(near * 2 + 2)];
  return Math.max(0, values[random.int(values.length)] as number);
}

function mutateData(random: Random, frame: DataFrame): DataFrame {
  const blocks = volumeBlocks(shape, Math.min(frame.volume, shape.volumes.length - 1));
  switch (random.int(7)) {
    case 0:
      return { ...frame, block: interesting(random, blocks - frame.blockCount) };
    case 1: {
      // Payload kept in step with the count, so the extent check's range test is what stands.
      const blockCount = Math.max(0, interesting(random, blocks - frame.block) % 80);
      return {
        ...frame,
        blockCount,
        payload: frame.zero ? frame.payload : new Uint8Array(blockCount * shape.blockBytes).fill(3),
      };
    }
    case 2:
      return { ...frame, volume: random.int(4) };
    case 3:
      return { ...frame, packetIndex: interesting(random, 4) };
    case 4:
      return { ...frame, cycle: Math.max(0, frame.cycle + random.int(5) - 2) };
    case 5:
      return { ...frame, payload: mutate(random, frame.payload) };
    default:
      return {
        ...frame,
        zero: !frame.zero,
        payload: frame.zero ? new Uint8Array(frame.blockCount * shape.blockBytes) : new Uint8Array(0),
      };
  }
}

function mutateEnd(random: Random, frame: EndOfCycleFrame): EndOfCycleFrame {
  switch (random.int(4)) {
    case 0:
      return { ...frame, cycle: Math.max(0, frame.cycle + random.int(5) - 2) };
    case 1:
      return { ...frame, coversFrom: Math.max(0, frame.coversFrom + random.int(5) - 2) };
    case 2:
      return { ...frame, packetCount: interesting(random, frame.packetCount) };
    default:
      return { ...frame, digest: random.int(2 ** 32) };
  }
}

function mutateSession(random: Random, steps: Step[], sessionId: number): void {
  for (let count = random.int(4); count > 0 && steps.length > 0; count--) {
    const at = random.int(steps.length);
    const step = steps[at] as Step;
    switch (random.int(8)) {
      case 0:
        steps.splice(at, 1);
        break;
      case 1:
        steps.splice(random.int(steps.length), 0, step);
        break;
      case 2: {
        const other = random.int(steps.length);
        steps[at] = steps[other] as Step;
        steps[other] = step;
        break;
      }
      case 3:
        steps.splice(at, 0, { kind: 'lost', connection: 1 + random.int(2) });
        steps.splice(at + 1, 0, { kind: 'opened', connection: 1 + random.int(2) });
        break;
      case 4:
        if (step.kind === 'frame')
          steps[at] = { ...step, kind: 'bytes', bytes: mutate(random, encodeFrame(step.frame)) };
        break;
      case 5:
        // A new session in the middle: what came before of unstored cycles is void.
        steps.splice(at, 0, ...validSession(random, sessionId + 1, 1 + random.int(3)).slice(0, 1));
        break;
      default:
        if (step.kind === 'frame' && step.frame.type === 'data')
          steps[at] = { ...step, frame: mutateData(random, step.frame) };
        else if (step.kind === 'frame' && step.frame.type === 'end-of-cycle')
          steps[at] = { ...step, frame: mutateEnd(random, step.frame) };
    }
  }
  if (random.chance(0.7)) sealDigests(steps);
}

/** What the driver knows from the actions: the journal as the secondary wrote it, and what is durable. */
class Observer {
  private readonly records = new Map<number, SecondaryRecord>();
  private durableSeq = 0;
  /** Packets journaled per cycle, dropped by a discard record unless their cycle was stored. */
  private readonly packets = new Map<number, Extent[]>();
  private readonly storedSeq = new Map<number, number>();
  private stored = 0;
  private applied = 0;
  pendingSyncs: number[] = [];
  pendingVolumeSyncs: number[] = [];
  /** An apply step asked for and not yet taken. */
  applyStepPending = false;
  wroteVolumes = false;

  constructor(private readonly secondary: Secondary) {}

  take(actions: SecondaryAction[]): void {
    const appliedBefore = this.applied;
    for (const action of actions) this.onAction(action, appliedBefore);
    this.checkProgress();
  }

  synced(upTo: number): void {
    this.durableSeq = Math.max(this.durableSeq, upTo);
  }

  private onAction(action: SecondaryAction, appliedBefore: number): void {
    switch (action.type) {
      case 'journal-append':
        this.onRecord(action.seq, action.record);
        return;
      case 'journal-sync':
        this.pendingSyncs.push(action.upTo);
        return;
      case 'volume-sync':
        this.pendingVolumeSyncs.push(action.token);
        return;
      case 'apply-step':
        this.applyStepPending = true;
        return;
      case 'volume-write':
        this.checkVolumeWrite(action.extent, appliedBefore);
        this.wroteVolumes = true;
        return;
      case 'volume-write-from-journal':
        for (const run of action.runs)
          this.checkVolumeWrite(
            extentFromJournal(run, (seq) => this.records.get(seq)),
            appliedBefore,
          );
        this.wroteVolumes = true;
        return;
      default:
        return;
    }
  }

  private onRecord(seq: number, record: SecondaryRecord): void {
    this.records.set(seq, record);
    if (record.kind === 'packet') {
      const extents = this.packets.get(record.cycle) ?? [];
      extents.push(record.extent);
      this.packets.set(record.cycle, extents);
    } else if (record.kind === 'stored') {
      this.storedSeq.set(record.cycle, seq);
    } else if (record.kind === 'discard') {
      for (const cycle of [...this.packets.keys()])
        if (!this.storedSeq.has(cycle)) this.packets.delete(cycle);
    }
  }

  private durablyStored(cycle: number): boolean {
    const seq = this.storedSeq.get(cycle);
    return seq !== undefined && seq <= this.durableSeq;
  }

  private checkVolumeWrite(extent: Extent, appliedBefore: number): void {
    check(
      extent.volume < shape.volumes.length &&
        extent.blockCount >= 1 &&
        extent.block + extent.blockCount <= volumeBlocks(shape, extent.volume) &&
        (extent.data === null || extent.data.length === extent.blockCount * shape.blockBytes),
      `volume write outside its volume: volume ${extent.volume} blocks ${extent.block}+${extent.blockCount}`,
    );
    for (let index = 0; index < extent.blockCount; index++) {
      const block = extent.block + index;
      check(
        this.someStoredPacketHolds(extent.volume, block, blockOf(extent, index), appliedBefore),
        `volume ${extent.volume} block ${block} written with content no durably stored cycle above ${appliedBefore} holds`,
      );
    }
  }

  private someStoredPacketHolds(
    volume: number,
    block: number,
    content: Uint8Array | null,
    above: number,
  ): boolean {
    for (const [cycle, extents] of this.packets) {
      if (cycle <= above || !this.durablyStored(cycle)) continue;
      for (const extent of extents) {
        if (extent.volume !== volume || block < extent.block || block >= extent.block + extent.blockCount)
          continue;
        if (sameBlock(blockOf(extent, block - extent.block), content)) return true;
      }
    }
    return false;
  }

  private checkProgress(): void {
    const { stored, applied } = this.secondary;
    check(stored >= this.stored, `stored went down from ${this.stored} to ${stored}`);
    check(applied >= this.applied, `applied went down from ${this.applied} to ${applied}`);
    check(applied <= stored, `applied ${applied} passed stored ${stored}`);
    check(
      stored === this.stored || this.durablyStored(stored),
      `stored ${stored} before its record was durable`,
    );
    this.stored = stored;
    this.applied = applied;
  }
}

function blockOf(extent: Extent, index: number): Uint8Array | null {
  if (extent.data === null) return null;
  return extent.data.subarray(index * shape.blockBytes, (index + 1) * shape.blockBytes);
}

function sameBlock(a: Uint8Array | null, b: Uint8Array | null): boolean {
  const zero = (bytes: Uint8Array | null) => bytes === null || bytes.every((byte) => byte === 0);
  if (a === null || b === null) return zero(a) && zero(b);
  return a.length === b.length && a.every((byte, index) => byte === b[index]);
}

export function fuzzSecondary(random: Random): void {
  const secondary = new Secondary({
    name: 'dr1',
    shape,
    timings: {
      heartbeatMsInterval: 100,
      heartbeatMsTimeout: 400,
      reconnectMsMin: 50,
      reconnectMsMax: 800,
      cyclesInFlightMax: 4,
      storedProgressMsTimeout: 4000,
    },
  });
  const observer = new Observer(secondary);
  observer.take(secondary.start());
  const sessionId = 1 + random.int(1000);
  const steps = validSession(random, sessionId, 1);
  if (random.chance(0.8)) mutateSession(random, steps, sessionId);
  let now = 0;
  for (const connection of [1, 2]) observer.take(secondary.onConnectionOpened(now, connection));
  for (const step of steps) {
    now += random.int(20);
    observer.take(deliver(secondary, now, step));
    completeSomeSyncs(random, secondary, observer, now);
  }
  // Everything asked for completes in the end, so stored cycles are applied.
  for (
    let round = 0;
    round < 100 &&
    (observer.pendingSyncs.length || observer.pendingVolumeSyncs.length || observer.applyStepPending);
    round++
  )
    completeSomeSyncs(random, secondary, observer, now, true);
  secondaryReach.cases++;
  if (secondary.stored > 0) secondaryReach.stored++;
  if (observer.wroteVolumes) secondaryReach.applied++;
}

function deliver(secondary: Secondary, now: number, step: Step): SecondaryAction[] {
  switch (step.kind) {
    case 'frame':
      return deliver(secondary, now, { ...step, kind: 'bytes', bytes: encodeFrame(step.frame) });
    case 'lost':
      return secondary.onConnectionLost(now, step.connection, 'fuzz');
    case 'opened':
      return secondary.onConnectionOpened(now, step.connection);
    case 'bytes': {
      const result = new FrameDecoder().push(step.bytes);
      const actions: SecondaryAction[] = [];
      for (const frame of result.frames) actions.push(...secondary.onFrame(now, step.connection, frame));
      if (result.error) {
        check(result.error instanceof ProtocolError, 'decoder error is a ProtocolError');
        actions.push(...secondary.onProtocolError(now, step.connection, result.error));
      }
      return actions;
    }
  }
}

/** Completes the oldest pending journal and volume syncs, at random (or all when `all`). */
function completeSomeSyncs(
  random: Random,
  secondary: Secondary,
  observer: Observer,
  now: number,
  all = false,
): void {
  if (observer.pendingSyncs.length > 0 && (all || random.chance(0.5))) {
    const upTo = observer.pendingSyncs.shift() as number;
    observer.synced(upTo);
    observer.take(secondary.onJournalSynced(now, upTo));
  }
  if (observer.pendingVolumeSyncs.length > 0 && (all || random.chance(0.5))) {
    observer.take(secondary.onVolumesSynced(now, observer.pendingVolumeSyncs.shift() as number));
  }
  if (observer.applyStepPending && (all || random.chance(0.5))) {
    observer.applyStepPending = false;
    observer.take(secondary.onApplyStep(now));
  }
}
