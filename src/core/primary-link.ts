/**
 * The primary's side of one site link (one per secondary). It owns the link's connections and
 * sends closed cycles oldest first; after every failure it starts a new session, learns the
 * secondary's stored number S, and resends every unsynchronized journal entry as one recovery cycle
 * numbered K (the newest closed cycle), marked as covering S+1..K, before going on with K+1.
 */

import {
  addDigest,
  type BlockRun,
  type DivergenceFrame,
  dataFrameOf,
  type Frame,
  packetDigest,
  protocolVersion,
  type StoredFrame,
  type WelcomeFrame,
} from '../protocol/frames.ts';
import { assert } from './assert.ts';
import { FoldIndex, type JournalPiece, type Run } from './fold.ts';
import type { PrimaryIdentity } from './identity.ts';
import { type LinkTimings, limits, linkQueue } from './limits.ts';
import {
  LinkTracking,
  type SecondaryMode,
  type TrackingConfig,
  type TrackingRequest,
} from './link-tracking.ts';
import type { ActionSink, CycleNumber, Extent, GroupShape, LogEntry } from './types.ts';

/** What the link reads of the group's journal. */
export interface CycleStore {
  readonly capture: CycleNumber;
  readonly closed: CycleNumber;
  readonly collected: CycleNumber;
  /** Folded content of closed cycles from..to, merged oldest first. */
  foldRange(from: CycleNumber, to: CycleNumber): FoldIndex;
}

export type LinkState = 'idle' | 'connecting' | 'streaming' | 'refused';

/** Requests a link makes of its environment. */
export type LinkRequest =
  | TrackingRequest
  | { type: 'connect'; link: string; connection: number }
  | { type: 'disconnect'; link: string; connection: number; reason: string }
  /**
   * Read the blocks `pieces` name back from the journal and hand them, in piece order, to
   * onBlocksRead(link, token): the bytes of one packet.
   */
  | { type: 'read-blocks'; link: string; token: number; pieces: JournalPiece[] }
  | { type: 'log'; entry: LogEntry };

interface LinkConnection {
  id: number;
  opened: boolean;
  welcomed: boolean;
  /**
   * Frames of the link itself (hello, heartbeat): they leave before any queued data, so a
   * connection busy with a large cycle still says it is alive.
   */
  control: Frame[];
  /** DATA and END-OF-CYCLE frames, in the order they were built. */
  queue: Frame[];
  /** Bytes of block data in `queue`'s DATA frames. */
  queuedBytes: number;
  lastSentMs: number;
  /** When the last bytes arrived from the secondary (a frame, or part of one). */
  lastReceivedMs: number;
}

export interface LinkEnvironment {
  random(): number;
  nextConnectionId(): number;
  /** This primary's site and generations, stated in every hello. */
  identity: PrimaryIdentity;
}

/**
 * A cycle whose packets are being built: its runs are listed at once, but each packet's data is
 * copied only when the queues have room, so a large cycle never holds the event loop for long, and
 * never sits in memory twice. They are sent in the order their bytes lie in the journal (the
 * secondary takes a cycle's packets in any order): consecutive packets are then read back together.
 */
interface CycleBeingPacked {
  number: CycleNumber;
  coversFrom: CycleNumber;
  fold: FoldIndex;
  runs: Run[];
  order: number[];
  next: number;
  digest: number;
  /** Reads of packets' bytes from the journal under way: the end-of-cycle frame waits for them. */
  reading: number;
}

/** Packets waiting for their bytes from the journal, read together (in this order). */
interface PacketRead {
  packing: CycleBeingPacked;
  packets: { packetIndex: number; run: Run }[];
}

export class PrimaryLink {
  state: LinkState = 'idle';
  /** Highest cycle the secondary has confirmed stored; the journal keeps everything above. */
  stored: CycleNumber;
  applied: CycleNumber;
  /** Highest cycle whose end-of-cycle frame was queued in this session. */
  private sentEnd: CycleNumber = 0;
  private packing: CycleBeingPacked | null = null;
  /** Packets of this session whose bytes are being read from the journal, by request token. */
  private readonly packetReads = new Map<number, PacketRead>();
  private packetReadTokens = 0;
  /** Bytes those reads will bring: counted as queued, so reads never run ahead of the sockets. */
  private packetReadBytes = 0;
  private sessionId = 0;
  /**
   * A rejoining old primary's divergence, gathered in this handshake (docs/failover.md): the cycle
   * its image belongs to and the blocks it wrote after it. Merged into the bitmap at the welcome.
   */
  private divergence: { cycle: CycleNumber; runs: BlockRun[] } | null = null;
  private connections: LinkConnection[] = [];
  private retryAtMs = 0;
  private backoffMs: number;
  private heartbeatNonce = 0;
  /** Highest cycle whose end-of-cycle frame was handed to a connection in this session. */
  private endSentMax: CycleNumber = 0;
  /**
   * Since when the link waits for STORED progress: set when an end-of-cycle frame goes out with
   * nothing outstanding, renewed whenever the stored number moves, null once all sent is stored.
   */
  private awaitingStoredSinceMs: number | null = null;
  /** Counters for the status and the simulator's report. */
  failures = 0;
  /** Bytes of block data queued in DATA frames (zero runs carry none), resends included. */
  shippedBytes = 0;
  recoveries = 0;
  lastFailure: string | null = null;
  /** Why the secondary last refused this primary (its ERROR frame), until a session is accepted. */
  refusal: string | null = null;
  /** Since when the link has not been streaming (null while it is). */
  awaySinceMs: number | null = null;
  /** Its tracking mode and resync: the bitmap that stands in for the journal while it is away. */
  readonly tracking: LinkTracking;

  constructor(
    readonly name: string,
    private readonly shape: GroupShape,
    private readonly connectionCount: number,
    private readonly timings: LinkTimings,
    private readonly store: CycleStore,
    private readonly environment: LinkEnvironment,
    private readonly out: ActionSink<LinkRequest>,
    trackingConfig: TrackingConfig,
  ) {
    assert(
      connectionCount >= 1 && connectionCount <= limits.connectionsPerLinkMax,
      'connections per link in range',
    );
    this.stored = store.collected;
    this.applied = store.collected;
    this.backoffMs = timings.reconnectMsMin;
    this.tracking = new LinkTracking(name, shape, trackingConfig, out);
  }

  /** Highest cycle whose end-of-cycle frame was queued in this session. */
  get sentEndCycle(): CycleNumber {
    return this.sentEnd;
  }

  /** The newest cycle the journal must keep everything above for this link. */
  hold(): CycleNumber {
    return this.tracking.hold(this.stored);
  }

  mode(): SecondaryMode {
    if (this.state === 'streaming') return this.tracking.copying ? 'resync' : 'streaming';
    return this.tracking.active ? 'tracking' : 'journal';
  }

  owns(connection: number): boolean {
    return this.connections.some((candidate) => candidate.id === connection);
  }

  /** Whether frames from this connection count: one of this session's, open. */
  hears(connection: number): boolean {
    return this.connection(connection)?.opened === true;
  }

  onTick(nowMs: number): void {
    if (this.state !== 'streaming') this.awaySinceMs ??= nowMs;
    if ((this.state === 'idle' || this.state === 'refused') && nowMs >= this.retryAtMs) {
      this.startSession(nowMs);
      return;
    }
    if (this.storedProgressOverdue(nowMs)) {
      this.fail(
        nowMs,
        `no STORED progress for ${nowMs - (this.awaitingStoredSinceMs as number)} ms while the secondary heartbeats (stored ${this.stored}, sent up to ${this.endSentMax}): its storage may have failed, its log says why`,
      );
      return;
    }
    for (const connection of this.connections) {
      // A connect that never completes, a handshake never answered and a silent peer all end the
      // same way: nothing arrived within heartbeatMsTimeout (lastReceivedMs starts at the session).
      if (nowMs - connection.lastReceivedMs > this.timings.heartbeatMsTimeout) {
        const what = connection.opened ? 'no frame' : 'connect not completed';
        this.fail(
          nowMs,
          `${what} for ${nowMs - connection.lastReceivedMs} ms on connection ${connection.id}`,
        );
        return;
      }
      if (!connection.opened) continue;
      if (
        connection.control.length === 0 &&
        nowMs - connection.lastSentMs >= this.timings.heartbeatMsInterval
      ) {
        connection.control.push({ type: 'heartbeat', nonce: this.heartbeatNonce++ >>> 0 });
      }
    }
  }

  /** A secondary alive on the wire but dead inside: heartbeats arrive, STORED does not. */
  private storedProgressOverdue(nowMs: number): boolean {
    return (
      this.state === 'streaming' &&
      this.awaitingStoredSinceMs !== null &&
      nowMs - this.awaitingStoredSinceMs > this.timings.storedProgressMsTimeout
    );
  }

  private startSession(nowMs: number): void {
    this.state = 'connecting';
    this.divergence = null;
    this.sessionId = Math.floor(this.environment.random() * 0x1_0000_0000) >>> 0;
    this.sentEnd = 0;
    this.endSentMax = 0;
    this.awaitingStoredSinceMs = null;
    this.dropPacking();
    this.connections = [];
    for (let index = 0; index < this.connectionCount; index++) {
      const id = this.environment.nextConnectionId();
      this.connections.push({
        id,
        opened: false,
        welcomed: false,
        control: [],
        queue: [],
        queuedBytes: 0,
        lastSentMs: nowMs,
        lastReceivedMs: nowMs,
      });
      this.out.push({ type: 'connect', link: this.name, connection: id });
    }
  }

  onConnected(nowMs: number, connectionId: number): void {
    const connection = this.connection(connectionId);
    if (!connection || this.state !== 'connecting') return;
    connection.opened = true;
    connection.lastReceivedMs = nowMs;
    connection.control.push({
      type: 'hello',
      protocolVersion,
      sessionId: this.sessionId,
      connectionIndex: this.connections.indexOf(connection),
      connectionCount: this.connectionCount,
      group: this.shape.group,
      blockBytes: this.shape.blockBytes,
      volumes: this.shape.volumes,
      primarySite: this.environment.identity.site,
      generations: this.environment.identity.generations.slice(-limits.generationsInHelloMax),
    });
  }

  onConnectionLost(nowMs: number, connectionId: number, reason: string): void {
    if (!this.connection(connectionId)) return;
    this.fail(nowMs, `connection ${connectionId} lost: ${reason}`);
  }

  /**
   * Bytes arrived on a connection, whole frames or not: the secondary is alive. Liveness counts
   * progress, so a frame that takes longer than the timeout to arrive never fails the link.
   */
  onBytesReceived(nowMs: number, connectionId: number): void {
    const connection = this.connection(connectionId);
    if (connection?.opened) connection.lastReceivedMs = nowMs;
  }

  /** Handles one frame; returns true when the secondary's stored number moved (the group may collect). */
  onFrame(nowMs: number, connectionId: number, frame: Frame): boolean {
    const connection = this.connection(connectionId);
    if (!connection?.opened) return false;
    connection.lastReceivedMs = nowMs;
    switch (frame.type) {
      case 'heartbeat':
        return false;
      case 'welcome':
        // After a restart of the primary the welcome is the first word of what the secondary stored.
        return this.onWelcome(nowMs, connection, frame);
      case 'stored':
        if (this.state === 'connecting') return this.onStoredInHandshake(nowMs, connection, frame);
        return this.onStored(nowMs, frame.stored, frame.applied);
      case 'error':
        this.refuse(nowMs, `secondary refused: ${frame.code}: ${frame.message}`);
        return false;
      case 'divergence':
        this.onDivergence(nowMs, connection, frame);
        return false;
      default:
        this.fail(nowMs, `unexpected ${frame.type} frame from the secondary`);
        return false;
    }
  }

  private onWelcome(nowMs: number, connection: LinkConnection, welcome: WelcomeFrame): boolean {
    if (this.state !== 'connecting' || connection.welcomed) {
      this.fail(nowMs, 'welcome outside the handshake');
      return false;
    }
    if (welcome.sessionId !== this.sessionId || welcome.protocolVersion !== protocolVersion) {
      this.fail(nowMs, `welcome for session ${welcome.sessionId}, version ${welcome.protocolVersion}`);
      return false;
    }
    if (welcome.stored > this.store.closed) {
      // Above the closed number the secondary holds cycles this primary never closed: it followed
      // another history, and only an operator can say which one survives. (Below the journal's
      // floor it gets a copy: initial sync.)
      this.refuse(
        nowMs,
        `secondary stored ${welcome.stored}, journal holds ${this.store.collected + 1}..${this.store.closed}`,
      );
      return false;
    }
    connection.welcomed = true;
    const moved = welcome.stored > this.stored;
    this.stored = welcome.stored;
    this.applied = welcome.applied;
    if (!this.connections.every((candidate) => candidate.welcomed)) return moved;
    this.state = 'streaming';
    this.refusal = null;
    this.backoffMs = this.timings.reconnectMsMin;
    this.awaySinceMs = null;
    this.sentEnd = this.stored;
    if (this.divergence) {
      this.tracking.mergeDivergence(this.stored, this.divergence.cycle, this.divergence.runs);
      this.divergence = null;
    }
    this.tracking.startSession(nowMs, this.stored, this.store.collected, welcome.consistentStored);
    if (this.store.closed > this.stored) this.queueRecovery();
    return moved;
  }

  /**
   * Part of a rejoining site's divergence: only in the handshake, for one cycle, with blocks inside
   * the volumes and within the bound; anything else fails the link (the site states it again).
   */
  private onDivergence(nowMs: number, connection: LinkConnection, frame: DivergenceFrame): void {
    const problem =
      this.state !== 'connecting' || connection.welcomed
        ? 'divergence outside the handshake'
        : this.divergence && this.divergence.cycle !== frame.cycle
          ? `divergence from cycles ${this.divergence.cycle} and ${frame.cycle}`
          : (this.divergence?.runs.length ?? 0) + frame.runs.length > limits.divergenceExtentsMax
            ? `divergence of more than ${limits.divergenceExtentsMax} runs`
            : runsProblem(this.shape, frame.runs);
    if (problem) {
      this.fail(nowMs, problem);
      return;
    }
    this.divergence ??= { cycle: frame.cycle, runs: [] };
    for (const run of frame.runs) this.divergence.runs.push(run);
  }

  /**
   * A connection already welcomed while another is still in its handshake: the secondary may report
   * an apply that finished meanwhile. Its stored number cannot move (a welcome waits for a store in
   * flight), so anything else is a fault.
   */
  private onStoredInHandshake(nowMs: number, connection: LinkConnection, frame: StoredFrame): boolean {
    if (connection.welcomed && frame.stored === this.stored && frame.applied <= frame.stored) {
      this.applied = Math.max(this.applied, frame.applied);
      return false;
    }
    this.fail(
      nowMs,
      `stored ${frame.stored} (applied ${frame.applied}) during the handshake, welcomed with ${this.stored}`,
    );
    return false;
  }

  private onStored(nowMs: number, stored: CycleNumber, applied: CycleNumber): boolean {
    if (this.state !== 'streaming' || stored < this.stored || stored > this.sentEnd || applied > stored) {
      this.fail(nowMs, `stored ${stored} (applied ${applied}) outside ${this.stored}..${this.sentEnd}`);
      return false;
    }
    const moved = stored > this.stored;
    this.stored = stored;
    this.applied = Math.max(this.applied, applied);
    if (moved) this.awaitingStoredSinceMs = stored >= this.endSentMax ? null : nowMs;
    if (moved) this.tracking.onStored(nowMs, stored);
    return moved;
  }

  /**
   * The claim's recovery: every unsynchronized entry, folded, as one cycle below every unsent one.
   * With a bitmap, the journal holds only the cycles after it; the bitmap's chunks follow as copy.
   */
  private queueRecovery(): void {
    const from = this.stored + 1;
    const newestClosed = this.store.closed;
    // Numbered K, the batch stays below every cycle still unsent (the capture cycle K+1 and later).
    const number = newestClosed;
    const journalFrom = this.tracking.journalFrom(this.stored);
    const fold =
      journalFrom <= newestClosed
        ? this.store.foldRange(journalFrom, newestClosed)
        : new FoldIndex(this.shape.blockBytes);
    this.recoveries++;
    this.out.push({
      type: 'log',
      entry: {
        level: 'warn',
        event: 'recovery-cycle',
        fields: {
          link: this.name,
          stored: this.stored,
          from,
          to: newestClosed,
          number,
          bytes: fold.payloadBytes,
        },
      },
    });
    this.queueCycle(number, from, fold);
  }

  /**
   * Packs the next closed cycles, packet by packet, while the window and the queues allow: the
   * queues hold at most about linkQueue.framesLow frames and linkQueue.bytesLow bytes of built
   * packets, so a large cycle is copied a little at a time, never ahead of what the sockets take.
   */
  private fill(): void {
    // A resync sends nothing until the bitmap that covers it is durable (docs/resync.md).
    if (!this.tracking.mayStream) return;
    while (this.state === 'streaming' && this.queuesHaveRoom()) {
      if (this.packing) {
        // Every packet is out or being read: the end-of-cycle frame waits for the reads.
        if (this.packing.next === this.packing.order.length && this.packing.reading > 0) return;
        this.packSome();
      } else if (
        this.sentEnd < this.store.closed &&
        this.sentEnd - this.stored < this.timings.cyclesInFlightMax
      ) {
        const next = this.sentEnd + 1;
        this.queueCycle(next, next, this.cycleWithCopy(next));
      } else {
        return;
      }
    }
  }

  /** A closed cycle's writes, after the copy chunks that travel in it, if any (they lose to them). */
  private cycleWithCopy(cycle: CycleNumber): FoldIndex {
    const writes = this.store.foldRange(cycle, cycle);
    const copy = this.tracking.takeAttached(cycle);
    if (!copy) return writes;
    copy.merge(writes);
    return copy;
  }

  private queueCycle(number: CycleNumber, coversFrom: CycleNumber, fold: FoldIndex): void {
    const runs = fold.runs(limits.packetBytesMax);
    assert(runs.length <= limits.packetsPerCycleMax, 'a cycle fits in packetsPerCycleMax packets');
    const order = journalOrder(fold, runs);
    this.packing = { number, coversFrom, fold, runs, order, next: 0, digest: 0, reading: 0 };
  }

  /**
   * Builds packets of the cycle being packed while the queues have room; its end-of-cycle frame
   * after the last. A packet whose blocks are in the journal is built when their bytes are read.
   */
  private packSome(): void {
    const packing = this.packing as CycleBeingPacked;
    while (packing.next < packing.order.length && this.queuesHaveRoom()) {
      const packetIndex = packing.order[packing.next++] as number;
      const run = packing.runs[packetIndex] as Run;
      if (run.journaled) this.readPackets(packing, this.packetsReadWith(packing, { packetIndex, run }));
      else this.queuePacket(packing, packetIndex, packing.fold.extentOf(run));
    }
    this.endCycleIfPacked(packing);
  }

  /**
   * `first` and the journaled packets after it, up to packetBytesMax of them: one read of the
   * journal brings them (their records lie close together, packets being in journal order).
   */
  private packetsReadWith(
    packing: CycleBeingPacked,
    first: { packetIndex: number; run: Run },
  ): { packetIndex: number; run: Run }[] {
    const packets = [first];
    let blocks = first.run.blockCount;
    const blocksMax = Math.floor(limits.packetBytesMax / this.shape.blockBytes);
    while (packing.next < packing.order.length) {
      const packetIndex = packing.order[packing.next] as number;
      const run = packing.runs[packetIndex] as Run;
      if (!run.journaled || blocks + run.blockCount > blocksMax) break;
      packets.push({ packetIndex, run });
      blocks += run.blockCount;
      packing.next++;
    }
    return packets;
  }

  private readPackets(packing: CycleBeingPacked, packets: { packetIndex: number; run: Run }[]): void {
    const token = ++this.packetReadTokens;
    this.packetReads.set(token, { packing, packets });
    const pieces = packets.flatMap(({ run }) => packing.fold.journaledPieces(run));
    this.packetReadBytes += pieces.reduce((sum, piece) => sum + piece.blockCount, 0) * this.shape.blockBytes;
    packing.reading++;
    this.out.push({ type: 'read-blocks', link: this.name, token, pieces });
  }

  /**
   * The bytes of a packet read back from the journal; ignored when its session has ended since.
   * Null: its records are gone, which only an ended session's request may meet.
   */
  onBlocksRead(nowMs: number, token: number, data: Uint8Array | null): void {
    const read = this.packetReads.get(token);
    if (!read) return;
    this.packetReads.delete(token);
    if (data === null) {
      const first = (read.packets[0] as { packetIndex: number }).packetIndex;
      this.fail(
        nowMs,
        `the journal records of packet ${first} of cycle ${read.packing.number} (and ${read.packets.length - 1} read with it) were collected while it was being sent`,
      );
      return;
    }
    const { packing, packets } = read;
    const blockBytes = this.shape.blockBytes;
    const blocks = packets.reduce((sum, { run }) => sum + run.blockCount, 0);
    assert(data.length === blocks * blockBytes, 'a packet read brings its blocks');
    this.packetReadBytes -= data.length;
    packing.reading--;
    let at = 0;
    for (const { packetIndex, run } of packets) {
      const { volume, block, blockCount } = run;
      const bytes = blockCount * blockBytes;
      this.queuePacket(packing, packetIndex, {
        volume,
        block,
        blockCount,
        data: data.subarray(at, at + bytes),
      });
      at += bytes;
    }
    this.endCycleIfPacked(packing);
  }

  private queuePacket(packing: CycleBeingPacked, packetIndex: number, extent: Extent): void {
    const frame = dataFrameOf(packing.number, packetIndex, extent);
    const bytes = extent.data?.length ?? 0;
    this.shippedBytes += bytes;
    packing.digest = addDigest(packing.digest, packetDigest(frame));
    const connection = this.pickConnection();
    connection.queue.push(frame);
    connection.queuedBytes += bytes;
  }

  /** Every packet of the cycle is queued: its end-of-cycle frame follows, and the next cycle may start. */
  private endCycleIfPacked(packing: CycleBeingPacked): void {
    if (packing.next < packing.order.length || packing.reading > 0) return;
    this.pickConnection().queue.push({
      type: 'end-of-cycle',
      cycle: packing.number,
      coversFrom: packing.coversFrom,
      packetCount: packing.runs.length,
      digest: packing.digest,
      consistent: this.tracking.consistentAfter(packing.number),
    });
    this.sentEnd = Math.max(this.sentEnd, packing.number);
    this.packing = null;
  }

  /** A session ended: the cycle being packed and the reads for it are forgotten (answers ignored). */
  private dropPacking(): void {
    this.packing = null;
    this.packetReads.clear();
    this.packetReadBytes = 0;
  }

  /** Packets of a cycle go out in an order that has nothing to do with the order of the writes. */
  private pickConnection(): LinkConnection {
    const index = Math.floor(this.environment.random() * this.connections.length);
    return this.connections[index] as LinkConnection;
  }

  private queuesHaveRoom(): boolean {
    let frames = this.packetReads.size;
    let bytes = this.packetReadBytes;
    for (const connection of this.connections) {
      frames += connection.queue.length;
      bytes += connection.queuedBytes;
    }
    return frames < linkQueue.framesLow && bytes < linkQueue.bytesLow;
  }

  /** Frames to write on one connection now, at most maxFrames: the link's own frames first. */
  pollFrames(nowMs: number, connectionId: number, maxFrames: number): Frame[] {
    this.fill();
    const connection = this.connection(connectionId);
    if (!connection?.opened) return [];
    const frames = connection.control.splice(0, maxFrames);
    for (const frame of connection.queue.splice(0, maxFrames - frames.length)) {
      if (frame.type === 'data') connection.queuedBytes -= frame.payload.length;
      else if (frame.type === 'end-of-cycle') this.onEndSent(nowMs, frame.cycle);
      frames.push(frame);
    }
    if (frames.length > 0) connection.lastSentMs = nowMs;
    return frames;
  }

  /** The stored-progress clock starts when the first unanswered end-of-cycle frame leaves. */
  private onEndSent(nowMs: number, cycle: CycleNumber): void {
    this.endSentMax = Math.max(this.endSentMax, cycle);
    if (cycle > this.stored) this.awaitingStoredSinceMs ??= nowMs;
  }

  /**
   * Sends a frame of the link itself (a switchover) on the session's first connection, ahead of any
   * queued data; false when no session streams.
   */
  sendControl(frame: Frame): boolean {
    const connection = this.connections.find((candidate) => candidate.opened);
    if (this.state !== 'streaming' || !connection) return false;
    connection.control.push(frame);
    return true;
  }

  /** Any failure: close every connection of the session, retry after a growing delay. */
  fail(nowMs: number, reason: string): void {
    this.failures++;
    this.lastFailure = reason;
    this.out.push({
      type: 'log',
      entry: {
        level: 'warn',
        event: 'link-failed',
        fields: { link: this.name, reason, stored: this.stored },
      },
    });
    this.closeAll(reason);
    this.dropPacking();
    this.tracking.endSession();
    this.awaySinceMs ??= nowMs;
    this.state = 'idle';
    this.retryAtMs = nowMs + this.backoffMs;
    this.backoffMs = Math.min(this.backoffMs * 2, this.timings.reconnectMsMax);
  }

  /**
   * The secondary will not take us as we are (its ERROR frame, or a superseded frame the group did
   * not trust); try again rarely, someone has to fix a config.
   */
  refuse(nowMs: number, reason: string): void {
    this.failures++;
    this.lastFailure = reason;
    this.refusal = reason;
    this.out.push({
      type: 'log',
      entry: { level: 'error', event: 'link-refused', fields: { link: this.name, reason } },
    });
    this.closeAll(reason);
    this.dropPacking();
    this.tracking.endSession();
    this.awaySinceMs ??= nowMs;
    this.state = 'refused';
    this.retryAtMs = nowMs + this.timings.reconnectMsMax;
  }

  /**
   * The primary is fenced: the session ends for good, with `reason` shown as the refusal. The group
   * no longer ticks a fenced primary's links, so none reconnects.
   */
  halt(reason: string): void {
    this.lastFailure = reason;
    this.refusal = reason;
    this.closeAll(reason);
    this.dropPacking();
    this.tracking.endSession();
    this.state = 'refused';
  }

  private closeAll(reason: string): void {
    for (const connection of this.connections) {
      this.out.push({ type: 'disconnect', link: this.name, connection: connection.id, reason });
    }
    this.connections = [];
  }

  /** Closed cycles this secondary has not stored. */
  lagCycles(): number {
    return Math.max(0, this.store.closed - this.stored);
  }

  private connection(id: number): LinkConnection | undefined {
    return this.connections.find((candidate) => candidate.id === id);
  }
}

/** The first run outside its volume, named; null when every run fits. */
function runsProblem(shape: GroupShape, runs: readonly BlockRun[]): string | null {
  for (const run of runs) {
    const volume = shape.volumes[run.volume];
    if (!volume) return `divergence names volume ${run.volume}, the group has ${shape.volumes.length}`;
    const blocks = volume.sizeBytes / shape.blockBytes;
    if (run.block + run.blockCount > blocks)
      return `divergence names blocks ${run.block}..${run.block + run.blockCount - 1} of volume ${run.volume}, which has ${blocks}`;
  }
  return null;
}

/**
 * The runs' indices in the order their bytes lie in the journal (a reference grows with the append
 * sequence), runs whose bytes are in memory or zero first. Block order would read a cycle of
 * scattered writes back one record per read.
 */
function journalOrder(fold: FoldIndex, runs: readonly Run[]): number[] {
  const keys = runs.map((run) => (run.journaled ? fold.firstRef(run) : -1));
  return runs.map((_, index) => index).sort((a, b) => (keys[a] as number) - (keys[b] as number));
}
