/**
 * The primary of a group: sequencing (capture number, cycle switch, acknowledgement), the journal
 * (what it appends, when it asks for durability, when it collects), and one PrimaryLink per
 * secondary. No I/O: handlers take events and return actions (docs/core.md); frames are pulled
 * with pollFrames.
 */

import type { BlockRun, Frame, SupersededFrame } from '../protocol/frames.ts';
import { assert } from './assert.ts';
import { ChangedBlocks, type TrackingState } from './changed-blocks.ts';
import { ConfigError, WriteError } from './errors.ts';
import { type BlockContent, FoldIndex } from './fold.ts';
import {
  compareHistories,
  currentGeneration,
  type FencedBy,
  generationChainProblem,
  type HistoryRelation,
  type PrimaryIdentity,
} from './identity.ts';
import { checkLinkTimings, type LinkTimings, limits } from './limits.ts';
import type { SecondaryMode, TrackingConfig } from './link-tracking.ts';
import { type CycleStore, type LinkRequest, type LinkState, PrimaryLink } from './primary-link.ts';
import {
  type ExtentInJournal,
  extentInJournal,
  type PrimaryRecord,
  type ReplayedPrimaryRecord,
} from './records.ts';
import { type AckMode, type CycleNumber, type Extent, type GroupShape, volumeBlocks } from './types.ts';

export interface PrimaryConfig {
  shape: GroupShape;
  secondaries: string[];
  /** Sequencer nodes feeding the group; more than one needs ack mode `cycle`. */
  nodes: number;
  ack: AckMode;
  /** A cycle switch happens at least this long after the previous one. */
  cycleMsMin: number;
  /** No switch while a connected secondary has this many closed cycles not stored. */
  cyclesQueuedMax: number;
  connectionsPerLink: number;
  timings: LinkTimings;
  /** This primary's site and generation chain (site.json), stated in every hello. */
  identity: PrimaryIdentity;
  /** When an away secondary's journal entries give way to a changed-block bitmap (docs/resync.md). */
  tracking: TrackingConfig;
  /**
   * Bytes of writes appended since the last journal sync at which the group asks for another
   * without waiting for a switch or a flush: the node holds writes in memory until they are durable
   * and written back, so this bounds that memory (docs/storage.md, "Memory").
   */
  syncBytes: number;
  /**
   * Set when this primary learnt it was superseded (site.json `fencedBy`): it starts fenced, takes
   * no writes and dials no secondary (docs/failover.md, "Fencing").
   */
  fencedBy?: FencedBy | null;
  /**
   * A switchover this primary asked before a restart and never heard the answer to (site.json
   * `handover`): the secondary may lead already, so it takes no writes and asks again.
   */
  handover?: { secondary: string; generation: string } | null;
}

export type PrimaryAction =
  | LinkRequest
  /** Append to the journal; `token` names the source write it carries, if any. */
  | { type: 'journal-append'; seq: number; record: PrimaryRecord; token: number | null }
  /** Make every record appended so far durable, then call onJournalSynced(upTo). */
  | { type: 'journal-sync'; upTo: number }
  /** Entries of cycles up to `upTo` may go: every secondary stored them (volumes first made durable). */
  | { type: 'journal-collect'; upTo: CycleNumber }
  | { type: 'ack'; token: number; cycle: CycleNumber }
  | { type: 'flush-done'; token: number }
  | { type: 'write-refused'; token: number; error: WriteError }
  /** Tell sequencer node `node` that the capture number is now `cycle`; it answers with onNodeSwitch. */
  | { type: 'node-switch'; node: number; cycle: CycleNumber }
  /**
   * This primary was superseded (a superseded frame whose chain extends its own): record `by`
   * durably, and answer writes with the refusals the group sends from now on. Emitted once.
   */
  | { type: 'fence'; by: FencedBy }
  /**
   * Record durably that the secondary is asked to take over (then call onHandoverRecorded: the frame
   * goes only after), or, `record` null, that no switchover is asked any more.
   */
  | { type: 'handover-record'; record: { secondary: string; generation: string; cycle: CycleNumber } | null };

export interface PrimaryWrite {
  token: number;
  node: number;
  extent: Extent;
}

/** A planned switchover: to which link, into which generation, and (once asked) at which cycle. */
interface Handover {
  link: PrimaryLink;
  generation: string;
  cycle: CycleNumber | null;
  /** The cycle whose ask is being recorded (the frame waits for it), or null. */
  recording: CycleNumber | null;
  /** Whether an ask may be on record: the end of the switchover clears it. */
  recorded: boolean;
}

interface CycleEntry {
  fold: FoldIndex;
  writes: number;
  /** Payload bytes the journal holds for this cycle (zero runs hold none), before folding. */
  journalBytes: number;
  /** Bytes sources wrote into this cycle, zero runs included: what a secondary lags by. */
  writtenBytes: number;
  firstWriteMs: number | null;
}

interface PendingAck {
  token: number;
  cycle: CycleNumber;
  seq: number;
}

interface SequencerNode {
  capture: CycleNumber;
  /** Cycle-mode writes waiting for the number to move past their cycle (and for durability). */
  pending: PendingAck[];
}

export interface SecondaryStatus {
  name: string;
  link: LinkState;
  /** streaming, journal (away, held in the journal), tracking (away, bitmap), resync (copying). */
  mode: SecondaryMode;
  /** Bytes the bitmap still marks (0 unless tracking or resyncing), and bytes copied this session. */
  resyncBytesLeft: number;
  resyncBytesCopied: number;
  /** The copy's bytes per second over about the last 10 s (0 while unknown or not copying). */
  resyncBytesPerSecond: number;
  /** Seconds until resyncBytesLeft is copied at that rate; null while unknown. */
  resyncEtaSeconds: number | null;
  stored: CycleNumber;
  applied: CycleNumber;
  lagCycles: number;
  lagBytes: number;
  lagSeconds: number;
  /** Bytes of block data sent in DATA frames since the process started, resends included. */
  shippedBytes: number;
  failures: number;
  recoveries: number;
  lastFailure: string | null;
  /** Why the secondary refused this primary (for instance another identity), until it accepts it. */
  refusal: string | null;
}

export interface PrimaryStatus {
  group: string;
  role: 'primary';
  capture: CycleNumber;
  closed: CycleNumber;
  collected: CycleNumber;
  journalBytes: number;
  /** Bytes the sources wrote since the process started (zero runs included). */
  writtenBytes: number;
  secondaries: SecondaryStatus[];
}

export function checkPrimaryConfig(config: PrimaryConfig): void {
  const problems = checkLinkTimings(config.timings);
  if (config.nodes < 1 || config.nodes > limits.nodesMax)
    problems.push(`nodes must be 1..${limits.nodesMax}`);
  if (config.nodes > 1 && config.ack === 'immediate') {
    problems.push(
      'ack: immediate is not dependent-write consistent with several sequencer nodes; use ack: cycle',
    );
  }
  if (config.secondaries.length > limits.secondariesMax) {
    problems.push(`secondaries must be 0..${limits.secondariesMax}`);
  }
  if (new Set(config.secondaries).size !== config.secondaries.length)
    problems.push('secondary names must differ');
  if (config.cycleMsMin < 0) problems.push('cycle.intervalMinMs must not be negative');
  if (config.cyclesQueuedMax < 1) problems.push('cycle.queuedMax must be at least 1');
  if (!(config.syncBytes >= 1)) problems.push('syncBytes must be at least 1');
  if (problems.length > 0) throw new ConfigError(problems.join('; '));
}

export class PrimaryGroup implements CycleStore {
  capture: CycleNumber = 1;
  closed: CycleNumber = 0;
  collected: CycleNumber = 0;
  private writtenBytes = 0;
  private readonly cycles = new Map<CycleNumber, CycleEntry>();
  private readonly nodes: SequencerNode[] = [];
  private readonly links: PrimaryLink[] = [];
  private appendSeq = 0;
  private durableSeq = 0;
  private syncRequestedSeq = 0;
  /** Bytes of writes appended since the last sync was asked for. */
  private bytesSinceSyncRequest = 0;
  /** A switch record waiting for durability: cycle `closed` becomes sendable then. */
  private closing: { closed: CycleNumber; seq: number } | null = null;
  /** A switch the nodes have not all confirmed yet. */
  private switching: { target: CycleNumber; confirmed: Set<number> } | null = null;
  private lastSwitchMs = Number.NEGATIVE_INFINITY;
  /** A switch is due and waits for copy reads in flight: no new one starts until it happened. */
  private copyReadsPaused = false;
  private pendingFlushes: { token: number; seq: number }[] = [];
  private readonly out: PrimaryAction[] = [];
  private connectionIds = 0;
  /** Who superseded this primary, once it knows: no writes, no switches, no links from then on. */
  private fencedBy: FencedBy | null;
  /** A planned switchover under way (docs/failover.md), or null. */
  private handover: Handover | null = null;
  /** Set while a split brain's resolution here gives this site's history up (stopWritesToGiveUp). */
  private givingUp = false;

  constructor(
    private readonly config: PrimaryConfig,
    random: () => number,
  ) {
    checkPrimaryConfig(config);
    for (let node = 0; node < config.nodes; node++) this.nodes.push({ capture: 1, pending: [] });
    this.cycles.set(1, newCycle(config.shape.blockBytes));
    const environment = {
      random,
      nextConnectionId: () => ++this.connectionIds,
      identity: config.identity,
    };
    for (const name of config.secondaries) {
      this.links.push(
        new PrimaryLink(
          name,
          config.shape,
          config.connectionsPerLink,
          config.timings,
          this,
          environment,
          this.out,
          config.tracking,
        ),
      );
    }
    this.fencedBy = config.fencedBy ?? null;
    if (this.fencedBy) for (const link of this.links) link.halt(this.fencedReason());
    if (config.handover) this.resumeHandover(config.handover);
  }

  /** Who superseded this primary, or null while it leads. */
  get fenced(): FencedBy | null {
    return this.fencedBy;
  }

  /**
   * Rebuilds a primary from its journal after a restart. Records are replayed in order; the
   * caller has already cut a torn tail. Cycles above the last switch record stay open; start()
   * then closes those a node had already moved past. The replayed records are numbered 1, 2, 3...
   * as appends are, and the folds refer to them: their data stays in the journal.
   */
  static recover(
    config: PrimaryConfig,
    random: () => number,
    records: Iterable<ReplayedPrimaryRecord>,
    trackings: ReadonlyMap<string, TrackingState> = new Map(),
  ): PrimaryGroup {
    const group = new PrimaryGroup(config, random);
    group.cycles.clear();
    let newestTag = 0;
    for (const record of records) {
      const seq = ++group.appendSeq;
      if (record.kind === 'write') {
        if (record.cycle <= group.collected) continue;
        const extent = extentInJournal(record.extent);
        group.entry(record.cycle).fold.addJournaled(extent, seq);
        group.account(group.entry(record.cycle), extent, null);
        newestTag = Math.max(newestTag, record.cycle);
      } else if (record.kind === 'switch') {
        group.closed = Math.max(group.closed, record.closed);
      } else {
        group.collected = Math.max(group.collected, record.upTo);
        for (const cycle of [...group.cycles.keys()]) if (cycle <= record.upTo) group.cycles.delete(cycle);
      }
    }
    group.durableSeq = group.appendSeq;
    group.syncRequestedSeq = group.appendSeq;
    group.closed = Math.max(group.closed, group.collected);
    group.capture = Math.max(group.closed + 1, newestTag);
    for (let cycle = group.collected + 1; cycle <= group.capture; cycle++) group.entry(cycle);
    for (const node of group.nodes) node.capture = group.capture;
    for (const link of group.links) {
      link.stored = group.collected;
      link.applied = group.collected;
      const tracking = trackings.get(link.name);
      if (tracking) link.tracking.restore(tracking, group.collected);
    }
    return group;
  }

  /** Finishes what a restart left unfinished; call once after construction or recovery. */
  start(): PrimaryAction[] {
    // Writes tagged above the last durable switch but below the capture number came from a node
    // that had switched already: those cycles close now, in order.
    if (this.capture - 1 > this.closed) this.closeCycle(this.capture - 1);
    this.finishCollection();
    return this.takeActions();
  }

  /**
   * A crash between a collect record and the deletion of its segments leaves them on disk, and
   * nothing else deletes them but the next collection. That one needs a cycle above to close, so a
   * write, which a journal over its capacity with them holds back for good (sim seed 29968). So the
   * collection is carried out again at every start. Its record is appended again first: the journal
   * deletes nothing before this run's first append, whose segment restates the group. Like every
   * record but a source's write, it is not held to journal.capacity: one record per start.
   */
  private finishCollection(): void {
    if (this.collected === 0) return;
    this.append({ kind: 'collect', upTo: this.collected }, null);
    this.out.push({ type: 'journal-collect', upTo: this.collected });
  }

  /** Every action since the last handler returned: each handler hands back what it caused. */
  private takeActions(): PrimaryAction[] {
    // Copy reads start only between switches, so that each falls inside one capture cycle.
    if (this.switching === null && !this.copyReadsPaused) {
      for (const link of this.links) link.tracking.issueReads(this.capture);
    }
    return this.out.splice(0);
  }

  // ---- sources -------------------------------------------------------------------------------

  onWrite(nowMs: number, write: PrimaryWrite): PrimaryAction[] {
    const node = this.nodes[write.node];
    assert(node, () => `write from unknown node ${write.node}`);
    const problem = this.writeRefusal() ?? this.validateExtent(write.extent);
    if (problem) {
      this.out.push({ type: 'write-refused', token: write.token, error: problem });
      return this.takeActions();
    }
    const cycle = node.capture;
    assert(cycle > this.closed, () => `node ${write.node} tags cycle ${cycle} but ${this.closed} is closed`);
    const seq = this.append({ kind: 'write', cycle, extent: write.extent }, write.token);
    const entry = this.entry(cycle);
    // The fold keeps where the bytes are (this append), not the bytes: the node holds them until
    // the record is written and reads them back from the journal after that (bounded memory).
    const extent = extentInJournal(write.extent);
    entry.fold.addJournaled(extent, seq);
    this.account(entry, extent, nowMs);
    if (write.extent.data) this.bytesSinceSyncRequest += write.extent.data.length;
    if (this.bytesSinceSyncRequest >= this.config.syncBytes) this.requestSync(seq);
    if (this.config.ack === 'immediate') {
      this.out.push({ type: 'ack', token: write.token, cycle });
    } else {
      node.pending.push({ token: write.token, cycle, seq });
    }
    return this.takeActions();
  }

  /** Every write acknowledged before the flush becomes durable before the flush is answered. */
  onFlush(_nowMs: number, token: number): PrimaryAction[] {
    if (this.durableSeq >= this.appendSeq) {
      this.out.push({ type: 'flush-done', token });
    } else {
      this.pendingFlushes.push({ token, seq: this.appendSeq });
      this.requestSync(this.appendSeq);
    }
    return this.takeActions();
  }

  private validateExtent(extent: Extent): WriteError | null {
    const blocks = volumeBlocks(this.config.shape, extent.volume);
    if (!this.config.shape.volumes[extent.volume]) {
      return new WriteError('write-unknown-volume', `no volume ${extent.volume}`);
    }
    if (!Number.isSafeInteger(extent.block) || extent.block < 0 || extent.blockCount < 1) {
      return new WriteError('write-out-of-range', `bad extent ${extent.block}+${extent.blockCount}`);
    }
    if (extent.block + extent.blockCount > blocks) {
      return new WriteError(
        'write-out-of-range',
        `blocks ${extent.block}..${extent.block + extent.blockCount - 1} beyond the ${blocks} blocks of volume ${extent.volume}`,
      );
    }
    if (extent.data && extent.data.length !== extent.blockCount * this.config.shape.blockBytes) {
      return new WriteError(
        'write-misaligned',
        `${extent.data.length} bytes for ${extent.blockCount} blocks`,
      );
    }
    return null;
  }

  // ---- cycle switch --------------------------------------------------------------------------

  onTick(nowMs: number): PrimaryAction[] {
    // A fenced primary captures nothing new and keeps its links down; flushes still complete.
    if (this.fencedBy) return this.takeActions();
    if (this.handover) this.driveHandover(nowMs);
    else if (this.switchDue(nowMs)) this.beginSwitch(nowMs);
    for (const link of this.links) link.onTick(nowMs);
    this.trackAway(nowMs);
    return this.takeActions();
  }

  /**
   * An away secondary must not make the sources wait: when the journal fills, or it has been away
   * long enough, its unstored cycles fold into its bitmap and the journal may pass it (docs/resync.md).
   */
  private trackAway(nowMs: number): void {
    const tracking = this.config.tracking;
    const full = this.journalBytesHeld() >= tracking.journalBytesHigh;
    const floor = Math.min(...this.links.map((link) => link.hold()));
    for (const link of this.links) {
      if (link.hold() >= this.closed) continue;
      // Failing a link frees nothing when the cycles it holds are empty (the bytes are in the
      // capture cycle, or held by another link): it would only loop through resyncs.
      if (this.heldBytesAbove(link.hold()) === 0) continue;
      const away = link.state !== 'streaming';
      const awayTooLong = away && link.awaySinceMs !== null && nowMs - link.awaySinceMs >= tracking.awayMsMax;
      if (!awayTooLong && !(full && link.hold() === floor)) continue;
      if (!away) {
        link.fail(
          nowMs,
          `the journal holds ${this.journalBytesHeld()} bytes, at least ${tracking.journalBytesHigh}, and this secondary holds its floor (stored ${link.stored}): it switches to tracking and resyncs`,
        );
      }
      link.tracking.track(link.stored, this.closed, this.collected, (cycle) => this.entry(cycle).fold);
    }
  }

  /** The bitmap of `link` is durable up to the cycle it was saved with: the journal may pass it. */
  onTrackingSaved(_nowMs: number, link: string, token: number): PrimaryAction[] {
    if (this.linkNamed(link)?.tracking.onSaved(token)) this.collect();
    return this.takeActions();
  }

  /**
   * The bytes of a `read-blocks` request of a link, read back from the journal, in piece order;
   * null when its records were collected meanwhile (a request of an ended session).
   */
  onBlocksRead(nowMs: number, link: string, token: number, data: Uint8Array | null): PrimaryAction[] {
    this.linkNamed(link)?.onBlocksRead(nowMs, token, data);
    return this.takeActions();
  }

  /** The bytes of a copy read, read through the primary's read path. */
  onCopyRead(nowMs: number, link: string, token: number, data: Uint8Array): PrimaryAction[] {
    this.linkNamed(link)?.tracking.onCopyRead(nowMs, token, data);
    return this.takeActions();
  }

  /** Journal payload of the closed cycles above `cycle`. */
  private heldBytesAbove(cycle: CycleNumber): number {
    let bytes = 0;
    for (const [number, entry] of this.cycles)
      if (number > cycle && number <= this.closed) bytes += entry.journalBytes;
    return bytes;
  }

  private journalBytesHeld(): number {
    let bytes = 0;
    for (const entry of this.cycles.values()) bytes += entry.journalBytes;
    return bytes;
  }

  private switchDue(nowMs: number): boolean {
    // The pause holds only for a switch due now. Kept from an earlier tick, it outlived a switch no
    // longer wanted (the resync whose copy wanted it failed with reads out, and no write came): no
    // copy read ever started again, and the next session's resync never ended (sim seed 17766).
    this.copyReadsPaused = false;
    if (this.switching || this.closing) return false;
    // A resync whose copy window is full waits for the capture cycle to close and be stored:
    // holding it to cycle.intervalMinMs would cap the copy at a window per interval.
    const copyWaits = this.links.some(
      (link) => link.state === 'streaming' && link.tracking.copyWaitsForSwitch(this.capture),
    );
    if (!copyWaits && nowMs - this.lastSwitchMs < this.config.cycleMsMin) return false;
    const wanted = this.links.some(
      (link) =>
        link.state === 'streaming' && link.tracking.wantsSwitch(this.capture, link.sentEndCycle, this.closed),
    );
    if (this.entry(this.capture).writes === 0 && !wanted) return false;
    // Closed cycles that a connected secondary has not stored wait to be sent; past the bound the
    // capture cycle keeps growing instead. A disconnected secondary does not hold the group back:
    // it will get one recovery cycle however many cycles close meanwhile.
    const due = this.links.every(
      (link) => link.state !== 'streaming' || this.closed - link.stored < this.config.cyclesQueuedMax,
    );
    // A copy read must fall inside one capture cycle (docs/resync.md): the switch waits for those
    // out, and no new one starts meanwhile, or a steady copy would hold cycles open indefinitely.
    this.copyReadsPaused = due && this.links.some((link) => link.tracking.reading);
    return due && !this.copyReadsPaused;
  }

  private beginSwitch(nowMs: number): void {
    const target = this.capture + 1;
    this.capture = target;
    this.entry(target);
    this.lastSwitchMs = nowMs;
    this.switching = { target, confirmed: new Set() };
    if (this.nodes.length === 1) {
      this.switchNode(0, target);
      return;
    }
    this.nodes.forEach((_, node) => {
      this.out.push({ type: 'node-switch', node, cycle: target });
    });
  }

  /** Node `node` now tags new writes with `cycle`. When every node has, cycle-1 is closed. */
  onNodeSwitch(_nowMs: number, node: number, cycle: CycleNumber): PrimaryAction[] {
    this.switchNode(node, cycle);
    return this.takeActions();
  }

  private switchNode(node: number, cycle: CycleNumber): void {
    const sequencer = this.nodes[node];
    assert(sequencer, () => `switch for unknown node ${node}`);
    if (!this.switching || this.switching.target !== cycle) return;
    sequencer.capture = cycle;
    this.switching.confirmed.add(node);
    if (this.switching.confirmed.size === this.nodes.length) {
      this.switching = null;
      this.closeCycle(cycle - 1);
    }
    this.releaseAcks();
  }

  private closeCycle(closed: CycleNumber): void {
    const seq = this.append({ kind: 'switch', closed }, null);
    this.closing = { closed, seq };
    this.requestSync(seq);
  }

  // ---- durability and acknowledgement --------------------------------------------------------

  onJournalSynced(nowMs: number, upTo: number): PrimaryAction[] {
    this.durableSeq = Math.max(this.durableSeq, upTo);
    if (this.closing && this.durableSeq >= this.closing.seq) {
      // Only a durable closed cycle may leave: a secondary must never hold writes that a crash
      // of the primary's machine could take back.
      this.closed = this.closing.closed;
      this.closing = null;
      // With no secondary (replication not set up yet), a closed cycle has nobody to wait for.
      if (this.links.length === 0) this.collect();
      this.out.push({
        type: 'log',
        entry: { level: 'debug', event: 'cycle-closed', fields: { closed: this.closed, atMs: nowMs } },
      });
    }
    this.releaseAcks();
    const flushes = this.pendingFlushes.filter((flush) => flush.seq <= this.durableSeq);
    this.pendingFlushes = this.pendingFlushes.filter((flush) => flush.seq > this.durableSeq);
    for (const flush of flushes) this.out.push({ type: 'flush-done', token: flush.token });
    return this.takeActions();
  }

  /** Cycle mode: a node's writes of cycle N are answered once the node is past N and they are durable. */
  private releaseAcks(): void {
    for (const node of this.nodes) {
      let released = 0;
      for (const pending of node.pending) {
        if (pending.cycle >= node.capture) break;
        if (pending.seq > this.durableSeq) {
          this.requestSync(pending.seq);
          break;
        }
        this.out.push({ type: 'ack', token: pending.token, cycle: pending.cycle });
        released++;
      }
      if (released > 0) node.pending.splice(0, released);
    }
  }

  private requestSync(seq: number): void {
    if (seq <= this.syncRequestedSeq) return;
    this.syncRequestedSeq = this.appendSeq;
    this.bytesSinceSyncRequest = 0;
    this.out.push({ type: 'journal-sync', upTo: this.appendSeq });
  }

  private append(record: PrimaryRecord, token: number | null): number {
    const seq = ++this.appendSeq;
    this.out.push({ type: 'journal-append', seq, record, token });
    return seq;
  }

  // ---- links ---------------------------------------------------------------------------------

  onConnected(nowMs: number, connection: number): PrimaryAction[] {
    this.linkOf(connection)?.onConnected(nowMs, connection);
    return this.takeActions();
  }

  onConnectionLost(nowMs: number, connection: number, reason: string): PrimaryAction[] {
    this.linkOf(connection)?.onConnectionLost(nowMs, connection, reason);
    return this.takeActions();
  }

  onFrame(nowMs: number, connection: number, frame: Frame): PrimaryAction[] {
    const link = this.linkOf(connection);
    if (!link) return this.takeActions();
    if (frame.type === 'superseded') this.onSuperseded(nowMs, link, connection, frame);
    else {
      if (frame.type === 'error' && frame.code === 'switchover-refused')
        this.onSwitchoverRefused(link, frame.message);
      if (link.onFrame(nowMs, connection, frame)) this.collect();
    }
    return this.takeActions();
  }

  // ---- planned switchover ----------------------------------------------------------------------

  /** Why a switchover to `secondary` cannot start now, or null (docs/failover.md). */
  switchoverRefusal(secondary: string): string | null {
    if (this.fencedBy) return 'this primary is fenced';
    if (this.handover) return `a switchover to ${this.handover.link.name} is under way`;
    const link = this.linkNamed(secondary);
    if (!link)
      return `no secondary named "${secondary}" (known: ${this.links.map((each) => each.name).join(', ')})`;
    if (this.links.length > 1)
      return `this primary has ${this.links.length} secondaries; a switchover hands over to the only one (the others would refuse the new primary's generation)`;
    if (link.state !== 'streaming' || link.mode() !== 'streaming')
      return `${secondary} is not streaming (link ${link.state}, mode ${link.mode()}): it must be connected and caught up with the journal`;
    return null;
  }

  /**
   * Starts a planned switchover to `secondary`: writes are refused from now on, the capture cycle
   * closes, and once the secondary stored every closed cycle it is asked to take over as the
   * primary of `generation` (driveHandover). Call only when switchoverRefusal said null.
   */
  beginSwitchover(_nowMs: number, secondary: string, generation: string): PrimaryAction[] {
    assert(this.switchoverRefusal(secondary) === null, 'a switchover that was refused');
    this.handover = {
      link: this.linkNamed(secondary) as PrimaryLink,
      generation,
      cycle: null,
      recording: null,
      recorded: false,
    };
    this.log('warn', 'switchover-started', { secondary, generation, capture: this.capture });
    return this.takeActions();
  }

  /**
   * A switchover asked before a restart: whether the secondary took over is unknown, so no write is
   * taken; it is asked again once it streams (a promoted one fences this primary instead).
   */
  private resumeHandover(resumed: { secondary: string; generation: string }): void {
    const link = this.linkNamed(resumed.secondary);
    assert(
      link,
      () => `a switchover on record to ${resumed.secondary}, which is no secondary of this primary`,
    );
    this.handover = { link, generation: resumed.generation, cycle: null, recording: null, recorded: true };
  }

  /**
   * Gives up a switchover not yet asked of the secondary: writes are taken again. False once asked.
   * An ask being recorded (the frame not gone) is given up too, and its record cleared (the actions).
   */
  abortSwitchover(): boolean {
    if (!this.handover || this.handover.cycle !== null) return false;
    this.log('warn', 'switchover-aborted', { secondary: this.handover.link.name });
    this.endHandover();
    return true;
  }

  /** No switchover is under way any more; one on record is cleared. */
  private endHandover(): void {
    if (this.handover?.recorded) this.out.push({ type: 'handover-record', record: null });
    this.handover = null;
  }

  /** The switchover under way: the cycle the secondary was asked to take over at (null: not yet). */
  get switchover(): { secondary: string; generation: string; cycle: CycleNumber | null } | null {
    if (!this.handover) return null;
    return {
      secondary: this.handover.link.name,
      generation: this.handover.generation,
      cycle: this.handover.cycle,
    };
  }

  /**
   * Closes what was captured (no write joins any more), then, once the secondary stored every
   * closed cycle and streams, asks it to take over after the newest: from then on this primary
   * holds nothing the new one lacks.
   */
  private driveHandover(nowMs: number): void {
    const handover = this.handover as Handover;
    if (handover.cycle !== null || this.switching || this.closing) return;
    if (this.entry(this.capture).writes > 0) {
      this.beginSwitch(nowMs);
      return;
    }
    const link = handover.link;
    if (handover.recording !== null || link.state !== 'streaming' || link.stored < this.closed) return;
    // On record before the frame goes: a restart must not take writes while the secondary may lead.
    handover.recording = this.closed;
    handover.recorded = true;
    this.out.push({
      type: 'handover-record',
      record: { secondary: link.name, generation: handover.generation, cycle: this.closed },
    });
  }

  /** The ask is on record: the frame goes, unless the moment passed (the next tick records it again). */
  onHandoverRecorded(_nowMs: number): PrimaryAction[] {
    const handover = this.handover;
    if (!handover || handover.recording === null || this.fencedBy) return this.takeActions();
    const cycle = handover.recording;
    handover.recording = null;
    const link = handover.link;
    const frame = { type: 'switchover', cycle, generation: handover.generation } as const;
    if (cycle !== this.closed || link.stored < cycle || !link.sendControl(frame)) return this.takeActions();
    handover.cycle = cycle;
    this.log('warn', 'switchover-asked', { secondary: link.name, cycle, generation: handover.generation });
    return this.takeActions();
  }

  /** The secondary will not take over: it never became a primary, so this one leads on and takes writes. */
  private onSwitchoverRefused(link: PrimaryLink, reason: string): void {
    if (this.handover?.link !== link) return;
    this.log('error', 'switchover-refused', { secondary: link.name, reason });
    this.endHandover();
  }

  private log(
    level: 'info' | 'warn' | 'error',
    event: string,
    fields: Record<string, string | number>,
  ): void {
    this.out.push({ type: 'log', entry: { level, event, fields } });
  }

  // ---- rejoin --------------------------------------------------------------------------------

  /**
   * A split brain's resolution (rejoin --discard-my-data) lists and saves the writes this site
   * took: from now on it takes none, so that list is every write it will have to undo. `false`
   * takes writes again (the resolution was refused before anything changed).
   */
  stopWritesToGiveUp(stop: boolean): void {
    this.givingUp = stop;
  }

  /**
   * What a rejoin undoes (docs/failover.md, "Failback"): the blocks this primary wrote after
   * `cycle`, in runs of whole tracking chunks, with the count and bytes of those writes. Null when
   * that cannot be told from the journal (it collected past `cycle`, or the runs are too many):
   * only a copy of everything is then sure.
   */
  writtenAfter(cycle: CycleNumber): { runs: BlockRun[]; writes: number; bytes: number } | null {
    if (cycle < this.collected) return null;
    const shape = this.config.shape;
    const blocks = new ChangedBlocks(
      this.config.tracking.chunkBlocks,
      shape.volumes.map((_, volume) => volumeBlocks(shape, volume)),
    );
    let writes = 0;
    let bytes = 0;
    for (const [number, entry] of this.cycles) {
      if (number <= cycle) continue;
      writes += entry.writes;
      bytes += entry.writtenBytes;
      entry.fold.forEachBlock((volume, block) => blocks.markBlocks(volume, block, 1));
    }
    const runs: BlockRun[] = [];
    for (
      let run = blocks.takeRun(Number.MAX_SAFE_INTEGER);
      run;
      run = blocks.takeRun(Number.MAX_SAFE_INTEGER)
    ) {
      if (runs.length === limits.divergenceExtentsMax) return null;
      runs.push({ volume: run.volume, ...blocks.blocksOf(run) });
    }
    return { runs, writes, bytes };
  }

  // ---- fencing -------------------------------------------------------------------------------

  /**
   * A site this primary dialled as a secondary says it leads now. Trusted only when its chain
   * strictly extends this primary's own (so it holds this primary's current generation): anything
   * else is a split brain, a foreign site or a forgery, refused on that link and never a fence.
   */
  private onSuperseded(nowMs: number, link: PrimaryLink, connection: number, frame: SupersededFrame): void {
    if (!link.hears(connection)) return;
    const problem = generationChainProblem(frame.site, frame.generations);
    const relation = problem ? null : compareHistories(frame.generations, this.config.identity.generations);
    if (relation?.relation !== 'ahead') {
      link.refuse(
        nowMs,
        `site ${frame.site} says this primary was superseded, but ${problem ? `its chain is unusable: ${problem}` : untrustedChain(relation as HistoryRelation)}: not fenced`,
      );
      return;
    }
    assert(this.fencedBy === null, 'a fenced primary has no link to hear from');
    this.fence({
      site: relation.superseding.primarySite,
      generation: relation.superseding.id,
      startedAt: relation.supersededAt,
    });
  }

  /**
   * From now on every write is refused, no cycle switches and no link is served. Writes journaled
   * but not yet acknowledged (ack mode cycle) are refused too: they belong to cycles after the
   * promotion, which the new primary never had. Flushes of journaled writes still complete.
   */
  private fence(by: FencedBy): void {
    this.fencedBy = by;
    const reason = this.fencedReason();
    for (const link of this.links) link.halt(reason);
    for (const node of this.nodes) {
      for (const pending of node.pending)
        this.out.push({ type: 'write-refused', token: pending.token, error: this.fencedError() });
      node.pending = [];
    }
    this.out.push({ type: 'fence', by });
  }

  private fencedReason(): string {
    const by = this.fencedBy as FencedBy;
    return `this primary (generation ${currentGeneration(this.config.identity).id}) was superseded by site ${by.site}, generation ${by.generation}, from cycle ${by.startedAt} on`;
  }

  /**
   * The refusal every write meets now: fenced, or a switchover under way (its writes would belong
   * to the new primary's cycles); null while this primary takes writes.
   */
  writeRefusal(): WriteError | null {
    if (this.fencedBy) return this.fencedError();
    if (this.givingUp)
      return new WriteError(
        'giving-up-history',
        'this site is giving up its history (cyclerep rejoin --discard-my-data): it takes no more writes; write to the primary it will follow',
      );
    if (this.handover)
      return new WriteError(
        'switching-over',
        `a switchover to ${this.handover.link.name} is under way: this primary takes no more writes (docs/failover.md); write to the new primary once it leads`,
      );
    return null;
  }

  private fencedError(): WriteError {
    return new WriteError(
      'fenced',
      `${this.fencedReason()}: it takes no writes (docs/failover.md, "Fencing"); write to the new primary`,
    );
  }

  /** Bytes arrived on a connection (whole frames or not): its secondary is alive. */
  onBytesReceived(nowMs: number, connection: number): void {
    this.linkOf(connection)?.onBytesReceived(nowMs, connection);
  }

  /**
   * Frames to send on a connection. Building them may ask for the bytes of packets from the
   * journal (`read-blocks`): take those with pendingActions once done polling.
   */
  pollFrames(nowMs: number, connection: number, maxFrames: number): Frame[] {
    return this.linkOf(connection)?.pollFrames(nowMs, connection, maxFrames) ?? [];
  }

  /** What polling frames asked for since the last handler returned (pollFrames returns frames only). */
  pendingActions(): PrimaryAction[] {
    return this.takeActions();
  }

  /** Journal entries go once every secondary stored them. */
  private collect(): void {
    const storedNumbers = this.links.map((link) => link.hold());
    const floor = storedNumbers.length === 0 ? this.closed : Math.min(...storedNumbers);
    if (floor <= this.collected) return;
    assert(floor <= this.closed, 'nothing above the closed number is stored');
    this.collected = floor;
    for (const cycle of [...this.cycles.keys()]) if (cycle <= floor) this.cycles.delete(cycle);
    this.append({ kind: 'collect', upTo: floor }, null);
    this.out.push({ type: 'journal-collect', upTo: floor });
  }

  // ---- the journal as a cycle store ----------------------------------------------------------

  foldRange(from: CycleNumber, to: CycleNumber): FoldIndex {
    assert(
      from > this.collected && to <= this.closed && from <= to,
      () => `fold ${from}..${to} inside the journal`,
    );
    if (from === to) return this.entry(from).fold;
    const merged = new FoldIndex(this.config.shape.blockBytes);
    for (let cycle = from; cycle <= to; cycle++) merged.merge(this.entry(cycle).fold);
    return merged;
  }

  /**
   * The newest content of a block among the cycles the journal holds (capture cycle first): null
   * for zeroes, else a reference to the journal record that holds its bytes; undefined when none
   * of them wrote it: then the volume file holds the newest data.
   */
  newestBlock(volume: number, block: number): BlockContent | undefined {
    for (let cycle = this.capture; cycle > this.collected; cycle--) {
      const content = this.cycles.get(cycle)?.fold.content(volume, block);
      if (content !== undefined) return content;
    }
    return undefined;
  }

  private entry(cycle: CycleNumber): CycleEntry {
    let entry = this.cycles.get(cycle);
    if (!entry) {
      entry = newCycle(this.config.shape.blockBytes);
      this.cycles.set(cycle, entry);
    }
    return entry;
  }

  private account(entry: CycleEntry, extent: ExtentInJournal, nowMs: number | null): void {
    entry.writes++;
    const bytes = extent.blockCount * this.config.shape.blockBytes;
    entry.writtenBytes += bytes;
    if (!extent.zero) entry.journalBytes += bytes;
    if (nowMs !== null) this.writtenBytes += bytes;
    if (entry.firstWriteMs === null && nowMs !== null) entry.firstWriteMs = nowMs;
  }

  private linkOf(connection: number): PrimaryLink | undefined {
    return this.links.find((link) => link.owns(connection));
  }

  // ---- observation ---------------------------------------------------------------------------

  status(nowMs: number): PrimaryStatus {
    const journalBytes = this.journalBytesHeld();
    return {
      group: this.config.shape.group,
      role: 'primary',
      capture: this.capture,
      closed: this.closed,
      collected: this.collected,
      journalBytes,
      writtenBytes: this.writtenBytes,
      secondaries: this.links.map((link) => this.linkStatus(link, nowMs)),
    };
  }

  private linkStatus(link: PrimaryLink, nowMs: number): SecondaryStatus {
    let lagBytes = 0;
    let oldestMs: number | null = null;
    for (const [cycle, entry] of this.cycles) {
      if (cycle <= link.stored) continue;
      lagBytes += entry.writtenBytes;
      if (entry.firstWriteMs !== null && (oldestMs === null || entry.firstWriteMs < oldestMs)) {
        oldestMs = entry.firstWriteMs;
      }
    }
    const progress = link.tracking.progress(nowMs);
    return {
      name: link.name,
      link: link.state,
      mode: link.mode(),
      resyncBytesLeft: progress.bytesLeft,
      resyncBytesCopied: progress.copiedBytes,
      resyncBytesPerSecond: progress.bytesPerSecond,
      resyncEtaSeconds: progress.etaSeconds,
      stored: link.stored,
      applied: link.applied,
      lagCycles: link.lagCycles(),
      lagBytes: lagBytes + progress.bytesLeft,
      lagSeconds: oldestMs === null ? 0 : (nowMs - oldestMs) / 1000,
      shippedBytes: link.shippedBytes,
      failures: link.failures,
      recoveries: link.recoveries,
      lastFailure: link.lastFailure,
      refusal: link.refusal,
    };
  }

  /** Links by name, for the simulator's fault injection and checks. */
  linkNamed(name: string): PrimaryLink | undefined {
    return this.links.find((link) => link.name === name);
  }
}

function newCycle(blockBytes: number): CycleEntry {
  return { fold: new FoldIndex(blockBytes), writes: 0, journalBytes: 0, writtenBytes: 0, firstWriteMs: null };
}

/** Why a superseded frame's chain does not prove this primary was superseded. */
function untrustedChain(relation: HistoryRelation): string {
  switch (relation.relation) {
    case 'diverged':
      return `its chain branched from this primary's after generation ${relation.lastCommon.id} (a split brain)`;
    case 'unrelated':
      return "its chain holds no generation of this primary's";
    case 'same':
      return "its chain ends at this primary's own generation";
    case 'behind':
      return "its chain is older than this primary's";
    case 'ahead':
      return 'its chain is ahead';
  }
}
