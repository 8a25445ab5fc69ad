/**
 * One simulated group: the real PrimaryGroup and Secondary state machines, driven over a simulated
 * network (real encoded frames, latency, several connections per link, drops, stalls, corrupted
 * bytes, partitions), simulated disks that lose unflushed data on a machine crash, crashes and
 * restarts of every site, and sources that issue dependent writes. After every step the
 * invariants of DESIGN.md are checked; the first violation ends the run.
 */

import { isBlockRef, type JournalPiece, refIndex, refSeq } from '../core/fold.ts';
import type { PrimaryIdentity } from '../core/identity.ts';
import type { LinkTimings } from '../core/limits.ts';
import { trackingNever } from '../core/link-tracking.ts';
import { type PrimaryAction, type PrimaryConfig, PrimaryGroup } from '../core/primary-group.ts';
import type { PrimaryRecord, SecondaryRecord } from '../core/records.ts';
import { Secondary, type SecondaryAction, type SecondaryConfig } from '../core/secondary.ts';
import type { CycleNumber, LogEntry } from '../core/types.ts';
import { volumeBlocks } from '../core/types.ts';
import { encodeFrame, FrameDecoder } from '../protocol/frames.ts';
import { type CrashKind, SimLog, SimVolume } from './disk.ts';
import { EventQueue } from './event-queue.ts';
import { blockContent, describeBlock, Oracle, type SimWrite } from './oracle.ts';
import { Random } from './random.ts';
import type { Fault, Scenario } from './scenario.ts';
import { emptyStats, type SimStats } from './stats.ts';

export interface RunStats extends SimStats {
  endMs: number;
}

export interface RunResult {
  seed: number;
  violations: string[];
  trace: string[];
  stats: RunStats;
}

type SimEvent =
  | { kind: 'tick'; site: number; epoch: number }
  | { kind: 'source'; source: number }
  | { kind: 'deliver'; connection: number; toSecondary: boolean; bytes: Uint8Array }
  | { kind: 'connected'; connection: number }
  | { kind: 'lost'; connection: number; side: 'primary' | 'secondary'; reason: string }
  | { kind: 'primary-synced'; point: number; upTo: number; epoch: number }
  | { kind: 'secondary-synced'; site: number; point: number; upTo: number; epoch: number }
  | { kind: 'volumes-synced'; site: number; points: number[]; token: number; epoch: number }
  | { kind: 'apply-step'; site: number; epoch: number }
  | { kind: 'node-switch'; node: number; cycle: CycleNumber; epoch: number }
  | { kind: 'blocks-read'; link: string; token: number; pieces: JournalPiece[]; epoch: number }
  | { kind: 'fault'; fault: Fault }
  | { kind: 'restart'; site: number }
  | { kind: 'settle' };

/** Site index of the primary; secondaries are 0..n-1. */
const primarySite = -1;

interface SimConnection {
  id: number;
  secondary: number;
  primaryOpen: boolean;
  secondaryOpen: boolean;
  established: boolean;
  toSecondary: FrameDecoder;
  toPrimary: FrameDecoder;
  /** Time the last chunk in each direction is delivered: TCP keeps order inside a connection. */
  lastAtToSecondary: number;
  lastAtToPrimary: number;
  stallUntil: number;
  corruptToSecondary: boolean;
  corruptToPrimary: boolean;
}

interface SecondarySite {
  config: SecondaryConfig;
  core: Secondary | null;
  log: SimLog<SecondaryRecord>;
  /**
   * The log id of each record by the core's append sequence (replayed records first): the store's
   * references into its journal are resolved through it, as the node resolves them to positions.
   */
  logIds: Map<number, number>;
  volumes: SimVolume[];
  epoch: number;
  /** Highest applied number ever shown: it must never go down, restarts included. */
  appliedShown: CycleNumber;
  /** Stored number the site holds durably (kept while it is down). */
  storedDurable: CycleNumber;
  /** Something that changes the read image happened since the last consistency check. */
  dirty: boolean;
  partitionedUntil: number;
  recoveryCyclesApplied: number;
}

interface SimSource {
  id: number;
  node: number;
  busy: boolean;
  lastAckedData: number | null;
}

type Operation =
  | { kind: 'write'; write: SimWrite }
  | { kind: 'flush'; source: number; ackCountAtIssue: number };

const traceLength = 80;
const framesPerPollMax = 256;

export class Cluster {
  readonly stats: RunStats;
  readonly violations: string[] = [];
  private readonly trace: string[] = [];
  private readonly queue = new EventQueue<SimEvent>();
  private nowMs = 0;
  private readonly random: Random;
  private readonly coreRandom: Random;
  private readonly oracle: Oracle;
  private readonly primaryConfig: PrimaryConfig;
  private primary: PrimaryGroup | null;
  private readonly primaryLog = new SimLog<PrimaryRecord>();
  /** The log id of each record by the primary's append sequence: its folds refer to records by it. */
  private primaryLogIds = new Map<number, number>();
  private primaryEpoch = 0;
  private readonly sites: SecondarySite[];
  private readonly connections = new Map<number, SimConnection>();
  private readonly sources: SimSource[];
  private readonly operations = new Map<number, Operation>();
  private nextToken = 1;
  private ackCount = 0;
  /** Every write acknowledged at or before this count was followed by a completed flush. */
  private flushedAckCount = 0;
  private settling = false;
  private finished = false;

  constructor(
    private readonly scenario: Scenario,
    private readonly traceAll = false,
  ) {
    this.random = new Random(scenario.seed ^ 0x5eed);
    this.coreRandom = this.random.fork();
    this.oracle = new Oracle(scenario.shape);
    this.stats = { ...emptyStats(), endMs: 0 };
    this.primaryConfig = {
      shape: scenario.shape,
      secondaries: scenario.secondaries,
      nodes: scenario.nodes,
      ack: scenario.ack,
      cycleMsMin: scenario.cycleMsMin,
      cyclesQueuedMax: scenario.cyclesQueuedMax,
      // The core simulator has no primary volumes to copy from: no tracking, and no initial sync
      // (its secondaries are never wiped). The whole-site simulator runs tracking and resync.
      tracking: trackingNever,
      connectionsPerLink: scenario.connectionsPerLink,
      timings: scenario.timings,
      identity: simulatedIdentity(scenario.seed),
      // Small, so that syncs between switches happen in every run (no draw: seeds keep their runs).
      syncBytes: 16 * scenario.shape.blockBytes,
    };
    this.primary = new PrimaryGroup(this.primaryConfig, () => this.coreRandom.next());
    this.sites = scenario.secondaries.map((name) => this.newSite(name, scenario.timings));
    this.sources = Array.from({ length: scenario.sources }, (_, id) => ({
      id,
      node: id % scenario.nodes,
      busy: false,
      lastAckedData: null,
    }));
  }

  private newSite(name: string, timings: LinkTimings): SecondarySite {
    const config: SecondaryConfig = { name, shape: this.scenario.shape, timings };
    return {
      config,
      core: new Secondary(config),
      log: new SimLog<SecondaryRecord>(),
      logIds: new Map(),
      volumes: this.scenario.shape.volumes.map(
        (_, index) => new SimVolume(volumeBlocks(this.scenario.shape, index), this.scenario.shape.blockBytes),
      ),
      epoch: 0,
      appliedShown: 0,
      storedDurable: 0,
      dirty: false,
      partitionedUntil: 0,
      recoveryCyclesApplied: 0,
    };
  }

  run(): RunResult {
    this.queue.push(0, { kind: 'tick', site: primarySite, epoch: 0 });
    this.sites.forEach((_, site) => {
      this.queue.push(0, { kind: 'tick', site, epoch: 0 });
    });
    for (const source of this.sources)
      this.queue.push(this.random.int(20), { kind: 'source', source: source.id });
    for (const fault of this.scenario.faults) this.queue.push(fault.atMs, { kind: 'fault', fault });
    this.queue.push(this.scenario.faultPhaseMs, { kind: 'settle' });
    const deadline = this.scenario.faultPhaseMs + this.scenario.settleMsMax;
    while (!this.finished && this.violations.length === 0) {
      const next = this.queue.pop();
      if (!next) break;
      if (next.atMs > deadline) {
        this.violations.push(
          `no convergence ${this.scenario.settleMsMax} ms after the faults stopped: ${this.standing()}`,
        );
        break;
      }
      this.nowMs = next.atMs;
      this.stats.events++;
      this.handle(next.event);
      this.pumpFrames();
      this.checkInvariants();
    }
    this.stats.endMs = this.nowMs;
    this.stats.recoveryCyclesApplied += this.sites.reduce(
      (sum, site) => sum + (site.core?.recoveryCyclesApplied ?? 0),
      0,
    );
    this.stats.cyclesClosed = this.oracle.closed;
    return { seed: this.scenario.seed, violations: this.violations, trace: this.trace, stats: this.stats };
  }

  // ---- events --------------------------------------------------------------------------------

  private handle(event: SimEvent): void {
    switch (event.kind) {
      case 'tick':
        this.onTick(event.site, event.epoch);
        return;
      case 'source':
        this.issue(event.source);
        return;
      case 'deliver':
        this.deliver(event.connection, event.toSecondary, event.bytes);
        return;
      case 'connected':
        this.onConnected(event.connection);
        return;
      case 'lost':
        this.onLost(event.connection, event.side, event.reason);
        return;
      case 'primary-synced':
        if (!this.primary || event.epoch !== this.primaryEpoch) return;
        this.primaryLog.markDurable(event.point);
        this.runPrimary(this.primary.onJournalSynced(this.nowMs, event.upTo));
        return;
      case 'secondary-synced': {
        const site = this.sites[event.site] as SecondarySite;
        if (!site.core || event.epoch !== site.epoch) return;
        site.log.markDurable(event.point);
        this.runSecondary(event.site, site.core.onJournalSynced(this.nowMs, event.upTo));
        site.storedDurable = site.core.stored;
        site.dirty = true;
        return;
      }
      case 'volumes-synced': {
        const site = this.sites[event.site] as SecondarySite;
        if (!site.core || event.epoch !== site.epoch) return;
        site.volumes.forEach((volume, index) => {
          volume.markDurable(event.points[index] as number);
        });
        this.runSecondary(event.site, site.core.onVolumesSynced(this.nowMs, event.token));
        return;
      }
      case 'apply-step': {
        const site = this.sites[event.site] as SecondarySite;
        if (!site.core || event.epoch !== site.epoch) return;
        this.runSecondary(event.site, site.core.onApplyStep(this.nowMs));
        return;
      }
      case 'node-switch':
        if (!this.primary || event.epoch !== this.primaryEpoch) return;
        this.runPrimary(this.primary.onNodeSwitch(this.nowMs, event.node, event.cycle));
        return;
      case 'blocks-read':
        if (!this.primary || event.epoch !== this.primaryEpoch) return;
        this.runPrimary(
          this.primary.onBlocksRead(this.nowMs, event.link, event.token, this.primaryBytes(event.pieces)),
        );
        return;
      case 'fault':
        this.inject(event.fault);
        return;
      case 'restart':
        this.restart(event.site);
        return;
      case 'settle':
        this.settle();
        return;
    }
  }

  private onTick(site: number, epoch: number): void {
    if (site === primarySite) {
      if (!this.primary || epoch !== this.primaryEpoch) return;
      this.runPrimary(this.primary.onTick(this.nowMs));
      this.sampleLag();
      if (this.settling) this.checkConverged();
    } else {
      const target = this.sites[site] as SecondarySite;
      if (!target.core || epoch !== target.epoch) return;
      this.runSecondary(site, target.core.onTick(this.nowMs));
    }
    if (!this.finished) this.queue.push(this.nowMs + this.scenario.tickMs, { kind: 'tick', site, epoch });
  }

  private sampleLag(): void {
    if (!this.primary) return;
    for (const name of this.scenario.secondaries) {
      const lag = this.primary.linkNamed(name)?.lagCycles() ?? 0;
      if (lag > this.stats.maxLagCycles) this.stats.maxLagCycles = lag;
    }
  }

  // ---- sources -------------------------------------------------------------------------------

  private issue(sourceId: number): void {
    const source = this.sources[sourceId] as SimSource;
    if (this.settling || source.busy || !this.primary) return;
    const choice = this.random.next();
    const token = this.nextToken++;
    source.busy = true;
    if (choice < 0.08) {
      this.operations.set(token, { kind: 'flush', source: sourceId, ackCountAtIssue: this.ackCount });
      this.runPrimary(this.primary.onFlush(this.nowMs, token));
      return;
    }
    const write = this.drawWrite(source, token, choice < 0.2);
    this.oracle.issue(write);
    this.operations.set(token, { kind: 'write', write });
    this.stats.writes++;
    this.runPrimary(this.primary.onWrite(this.nowMs, { token, node: source.node, extent: write.extent }));
  }

  /** A write inside the source's node's region of one volume (nodes never race on a block). */
  private drawWrite(source: SimSource, id: number, zero: boolean): SimWrite {
    const shape = this.scenario.shape;
    const volume = this.random.int(shape.volumes.length);
    const blocks = volumeBlocks(shape, volume);
    const regionBlocks = Math.floor(blocks / this.scenario.nodes);
    const regionStart = source.node * regionBlocks;
    const block = regionStart + this.random.int(regionBlocks);
    const countMax = Math.min(zero ? 8 : 4, regionStart + regionBlocks - block);
    const blockCount = this.random.between(1, countMax);
    let data: Uint8Array | null = null;
    if (!zero) {
      data = new Uint8Array(blockCount * shape.blockBytes);
      for (let i = 0; i < blockCount; i++)
        data.set(blockContent(id, i, shape.blockBytes), i * shape.blockBytes);
    }
    const deps: number[] = [];
    if (source.lastAckedData !== null) deps.push(source.lastAckedData);
    if (this.random.chance(this.scenario.crossDependencyChance)) {
      const other = this.random.pick(this.sources);
      if (other.id !== source.id && other.lastAckedData !== null) deps.push(other.lastAckedData);
    }
    return {
      id,
      source: source.id,
      extent: { volume, block, blockCount, data },
      deps,
      logId: null,
      cycle: null,
      ackOrder: null,
      lost: false,
    };
  }

  private completeOperation(token: number): Operation | undefined {
    const operation = this.operations.get(token);
    if (!operation) return undefined;
    this.operations.delete(token);
    const sourceId = operation.kind === 'write' ? operation.write.source : operation.source;
    const source = this.sources[sourceId] as SimSource;
    source.busy = false;
    this.queue.push(this.nowMs + this.random.int(this.scenario.thinkMsMax + 1), {
      kind: 'source',
      source: sourceId,
    });
    return operation;
  }

  // ---- primary actions -----------------------------------------------------------------------

  private runPrimary(actions: PrimaryAction[]): void {
    for (const action of actions) this.runPrimaryAction(action);
  }

  private runPrimaryAction(action: PrimaryAction): void {
    switch (action.type) {
      case 'journal-append': {
        const logId = this.primaryLog.append(action.record);
        this.primaryLogIds.set(action.seq, logId);
        if (action.token !== null && action.record.kind === 'write') {
          this.oracle.journaled(action.token, logId, action.record.cycle);
        }
        return;
      }
      case 'journal-sync':
        this.queue.push(this.nowMs + this.random.int(this.scenario.storageMsMax + 1), {
          kind: 'primary-synced',
          point: this.primaryLog.syncPoint(),
          upTo: action.upTo,
          epoch: this.primaryEpoch,
        });
        return;
      case 'journal-collect':
        this.primaryLog.drop((record) => record.kind === 'write' && record.cycle <= action.upTo);
        return;
      case 'ack':
        this.onAck(action.token, action.cycle);
        return;
      case 'flush-done': {
        const operation = this.completeOperation(action.token);
        if (operation?.kind === 'flush') {
          this.flushedAckCount = Math.max(this.flushedAckCount, operation.ackCountAtIssue);
        }
        return;
      }
      case 'write-refused':
        this.violations.push(`primary refused a valid write ${action.token}: ${action.error.message}`);
        return;
      case 'connect':
        this.connect(action.link, action.connection);
        return;
      case 'disconnect':
        this.closeEnd(action.connection, 'primary', action.reason);
        return;
      case 'node-switch':
        this.queue.push(this.nowMs + this.random.int(this.scenario.nodeSwitchMsMax + 1), {
          kind: 'node-switch',
          node: action.node,
          cycle: action.cycle,
          epoch: this.primaryEpoch,
        });
        return;
      case 'log':
        this.onLog('primary', action.entry);
        return;
      case 'read-blocks':
        this.queue.push(this.nowMs + this.random.int(this.scenario.storageMsMax + 1), {
          kind: 'blocks-read',
          link: action.link,
          token: action.token,
          pieces: action.pieces,
          epoch: this.primaryEpoch,
        });
        return;
      case 'tracking-save':
      case 'tracking-drop':
      case 'copy-read':
        this.violations.push(`the core simulator runs no tracking, yet the primary asked for ${action.type}`);
        return;
      case 'fence':
        // No site here is ever promoted, so no superseded frame is ever sent: a fence is a defect.
        this.violations.push(
          `the core simulator promotes no site, yet the primary was fenced by site ${action.by.site} generation ${action.by.generation}`,
        );
        return;
      case 'handover-record':
        // No switchover is ever started here: an ask put on record is a defect.
        this.violations.push('the core simulator runs no switchover, yet the primary recorded one');
        return;
    }
  }

  private onAck(token: number, cycle: CycleNumber): void {
    const operation = this.completeOperation(token);
    if (operation?.kind !== 'write') {
      this.violations.push(`ack for unknown write ${token}`);
      return;
    }
    const write = operation.write;
    if (write.logId === null) {
      this.violations.push(`write ${write.id} acknowledged before it was journaled`);
      return;
    }
    if (write.cycle !== cycle)
      this.violations.push(`write ${write.id} journaled in ${write.cycle}, acked as ${cycle}`);
    write.ackOrder = ++this.ackCount;
    if (write.extent.data) (this.sources[write.source] as SimSource).lastAckedData = write.id;
  }

  // ---- secondary actions ---------------------------------------------------------------------

  private runSecondary(siteIndex: number, actions: SecondaryAction[]): void {
    const site = this.sites[siteIndex] as SecondarySite;
    for (const action of actions) {
      switch (action.type) {
        case 'bind':
          // The binding lives in site.json, which survives a crash: so does the config here.
          site.config = { ...site.config, binding: action.binding };
          break;
        case 'promotion-requested':
          // No primary here ever asks for a switchover: a request is a defect.
          this.violations.push(
            `the core simulator runs no switchover, yet secondary ${siteIndex} was asked to take over at cycle ${action.cycle}`,
          );
          break;
        case 'send':
          this.send(action.connection, false, encodeFrame(action.frame));
          break;
        case 'close':
          this.closeEnd(action.connection, 'secondary', action.reason);
          break;
        case 'journal-append':
          site.logIds.set(action.seq, site.log.append(action.record));
          break;
        case 'journal-sync':
          this.queue.push(this.nowMs + this.random.int(this.scenario.storageMsMax + 1), {
            kind: 'secondary-synced',
            site: siteIndex,
            point: site.log.syncPoint(),
            upTo: action.upTo,
            epoch: site.epoch,
          });
          break;
        case 'journal-release':
          site.log.drop((record) => releasable(record, action.upTo));
          break;
        case 'volume-write-from-journal': {
          for (const run of action.runs) {
            const data = this.journaledBytes(site, run.pieces);
            if (data) (site.volumes[run.volume] as SimVolume).write(run.block, run.blockCount, data);
          }
          site.dirty = true;
          break;
        }
        case 'volume-write':
          (site.volumes[action.extent.volume] as SimVolume).write(
            action.extent.block,
            action.extent.blockCount,
            action.extent.data,
          );
          site.dirty = true;
          break;
        case 'apply-step':
          // Other events may come between the steps, as on a real event loop.
          this.queue.push(this.nowMs + this.random.int(2), {
            kind: 'apply-step',
            site: siteIndex,
            epoch: site.epoch,
          });
          break;
        case 'volume-sync':
          this.queue.push(this.nowMs + this.random.int(this.scenario.storageMsMax + 1), {
            kind: 'volumes-synced',
            site: siteIndex,
            points: site.volumes.map((volume) => volume.syncPoint()),
            token: action.token,
            epoch: site.epoch,
          });
          break;
        case 'log':
          this.onLog(site.config.name, action.entry);
          break;
      }
    }
    site.dirty = true;
  }

  private onLog(who: string, entry: LogEntry): void {
    if (entry.event === 'recovery-cycle') this.stats.recoveries++;
    if (entry.level === 'debug' && !this.traceAll && entry.event !== 'cycle-closed') return;
    const fields = Object.entries(entry.fields)
      .map(([key, value]) => `${key}=${value}`)
      .join(' ');
    this.note(`${who}: ${entry.event} ${fields}`);
  }

  private note(line: string): void {
    this.trace.push(`t=${this.nowMs} ${line}`);
    if (!this.traceAll && this.trace.length > traceLength) this.trace.shift();
  }

  // ---- network -------------------------------------------------------------------------------

  private latency(secondary: number): number {
    return (this.scenario.latencyMs[secondary] as number) + this.random.int(3);
  }

  private connect(linkName: string, id: number): void {
    const secondary = this.scenario.secondaries.indexOf(linkName);
    const site = this.sites[secondary] as SecondarySite;
    const connection: SimConnection = {
      id,
      secondary,
      primaryOpen: true,
      secondaryOpen: false,
      established: false,
      toSecondary: new FrameDecoder(),
      toPrimary: new FrameDecoder(),
      lastAtToSecondary: 0,
      lastAtToPrimary: 0,
      stallUntil: 0,
      corruptToSecondary: false,
      corruptToPrimary: false,
    };
    this.connections.set(id, connection);
    const at = this.nowMs + this.latency(secondary);
    if (!site.core || site.partitionedUntil > this.nowMs) {
      this.queue.push(at, { kind: 'lost', connection: id, side: 'primary', reason: 'connection refused' });
      return;
    }
    this.queue.push(at, { kind: 'connected', connection: id });
  }

  private onConnected(id: number): void {
    const connection = this.connections.get(id);
    const site = connection ? this.sites[connection.secondary] : undefined;
    if (!connection || !site || !connection.primaryOpen || !this.primary) return;
    if (!site.core) {
      this.queue.push(this.nowMs, {
        kind: 'lost',
        connection: id,
        side: 'primary',
        reason: 'connection refused',
      });
      return;
    }
    connection.established = true;
    connection.secondaryOpen = true;
    this.runSecondary(connection.secondary, site.core.onConnectionOpened(this.nowMs, id));
    this.runPrimary(this.primary.onConnected(this.nowMs, id));
  }

  private onLost(id: number, side: 'primary' | 'secondary', reason: string): void {
    const connection = this.connections.get(id);
    if (!connection) return;
    if (side === 'primary') {
      if (!connection.primaryOpen || !this.primary) return;
      connection.primaryOpen = false;
      this.runPrimary(this.primary.onConnectionLost(this.nowMs, id, reason));
    } else {
      const site = this.sites[connection.secondary] as SecondarySite;
      if (!connection.secondaryOpen || !site.core) return;
      connection.secondaryOpen = false;
      this.runSecondary(connection.secondary, site.core.onConnectionLost(this.nowMs, id, reason));
    }
    if (!connection.primaryOpen && !connection.secondaryOpen) this.connections.delete(id);
  }

  /** One end closes its socket; the other end learns it after the link's latency (or after a partition). */
  private closeEnd(id: number, side: 'primary' | 'secondary', reason: string): void {
    const connection = this.connections.get(id);
    if (!connection) return;
    if (side === 'primary') connection.primaryOpen = false;
    else connection.secondaryOpen = false;
    const site = this.sites[connection.secondary] as SecondarySite;
    const at = Math.max(
      this.nowMs + this.latency(connection.secondary),
      site.partitionedUntil,
      connection.stallUntil,
    );
    const peer = side === 'primary' ? 'secondary' : 'primary';
    this.queue.push(at, { kind: 'lost', connection: id, side: peer, reason: `peer closed: ${reason}` });
  }

  private pumpFrames(): void {
    if (!this.primary) return;
    for (const connection of this.connections.values()) {
      if (!connection.established || !connection.primaryOpen) continue;
      const frames = this.primary.pollFrames(this.nowMs, connection.id, framesPerPollMax);
      for (const frame of frames) this.send(connection.id, true, encodeFrame(frame));
    }
    this.runPrimary(this.primary.pendingActions());
  }

  private send(id: number, toSecondary: boolean, bytes: Uint8Array): void {
    const connection = this.connections.get(id);
    if (!connection?.established) return;
    if (toSecondary ? !connection.primaryOpen : !connection.secondaryOpen) return;
    let payload = bytes;
    if (toSecondary ? connection.corruptToSecondary : connection.corruptToPrimary) {
      payload = bytes.slice();
      const at = this.random.int(payload.length);
      payload[at] = (payload[at] as number) ^ (1 << this.random.int(8));
      if (toSecondary) connection.corruptToSecondary = false;
      else connection.corruptToPrimary = false;
      this.note(`fault: corrupted byte ${at} of a frame on connection ${id}`);
    }
    const site = this.sites[connection.secondary] as SecondarySite;
    const last = toSecondary ? connection.lastAtToSecondary : connection.lastAtToPrimary;
    const at = Math.max(
      last,
      this.nowMs + this.latency(connection.secondary),
      connection.stallUntil,
      site.partitionedUntil,
    );
    if (toSecondary) connection.lastAtToSecondary = at;
    else connection.lastAtToPrimary = at;
    // Split the bytes so the decoders meet frames cut at arbitrary places, as TCP delivers them.
    const cut =
      payload.length > 1 && this.random.chance(0.3)
        ? this.random.between(1, payload.length - 1)
        : payload.length;
    this.queue.push(at, { kind: 'deliver', connection: id, toSecondary, bytes: payload.subarray(0, cut) });
    if (cut < payload.length) {
      this.queue.push(at, { kind: 'deliver', connection: id, toSecondary, bytes: payload.subarray(cut) });
    }
  }

  private deliver(id: number, toSecondary: boolean, bytes: Uint8Array): void {
    const connection = this.connections.get(id);
    if (!connection) return;
    if (toSecondary) {
      const site = this.sites[connection.secondary] as SecondarySite;
      if (!connection.secondaryOpen || !site.core) return;
      const result = connection.toSecondary.push(bytes);
      for (const frame of result.frames) {
        if (!connection.secondaryOpen || !site.core) return;
        this.runSecondary(connection.secondary, site.core.onFrame(this.nowMs, id, frame));
      }
      if (result.error && connection.secondaryOpen && site.core) {
        connection.secondaryOpen = false;
        this.runSecondary(connection.secondary, site.core.onProtocolError(this.nowMs, id, result.error));
        this.closeEnd(id, 'secondary', result.error.message);
      }
      return;
    }
    if (!connection.primaryOpen || !this.primary) return;
    const result = connection.toPrimary.push(bytes);
    for (const frame of result.frames) {
      if (!connection.primaryOpen || !this.primary) return;
      this.runPrimary(this.primary.onFrame(this.nowMs, id, frame));
    }
    if (result.error && connection.primaryOpen) {
      connection.primaryOpen = false;
      this.runPrimary(
        this.primary.onConnectionLost(this.nowMs, id, `${result.error.code}: ${result.error.message}`),
      );
      this.closeEnd(id, 'primary', result.error.message);
    }
  }

  // ---- faults --------------------------------------------------------------------------------

  private inject(fault: Fault): void {
    if (this.settling) return;
    this.stats.faults[fault.kind]++;
    this.note(`fault: ${fault.kind} target=${fault.target} duration=${fault.durationMs}`);
    const links = [...this.connections.values()].filter(
      (connection) => connection.secondary === fault.target && connection.established,
    );
    switch (fault.kind) {
      case 'connection-drop': {
        if (links.length === 0) return;
        const victim = this.random.pick(links);
        this.closeEnd(victim.id, 'primary', 'connection reset (fault)');
        this.closeEnd(victim.id, 'secondary', 'connection reset (fault)');
        return;
      }
      case 'connection-stall':
        for (const connection of links) connection.stallUntil = this.nowMs + fault.durationMs;
        return;
      case 'byte-corrupt': {
        if (links.length === 0) return;
        const victim = this.random.pick(links);
        if (this.random.chance(0.7)) victim.corruptToSecondary = true;
        else victim.corruptToPrimary = true;
        return;
      }
      case 'link-partition':
        (this.sites[fault.target] as SecondarySite).partitionedUntil = this.nowMs + fault.durationMs;
        return;
      case 'primary-crash':
      case 'primary-machine-crash':
        this.crashPrimary(fault.kind === 'primary-crash' ? 'process' : 'machine', fault.durationMs);
        return;
      case 'secondary-crash':
      case 'secondary-machine-crash':
        this.crashSecondary(
          fault.target,
          fault.kind === 'secondary-crash' ? 'process' : 'machine',
          fault.durationMs,
        );
        return;
    }
  }

  /** A process crash closes its sockets (the peers see a reset); a machine crash just goes silent. */
  private dropConnections(
    filter: (connection: SimConnection) => boolean,
    side: 'primary' | 'secondary',
    kind: CrashKind,
  ): void {
    for (const connection of this.connections.values()) {
      if (!filter(connection)) continue;
      const wasOpen = side === 'primary' ? connection.primaryOpen : connection.secondaryOpen;
      if (side === 'primary') connection.primaryOpen = false;
      else connection.secondaryOpen = false;
      if (wasOpen && kind === 'process') this.closeEnd(connection.id, side, 'peer process died');
    }
  }

  private crashPrimary(kind: CrashKind, downMs: number): void {
    if (!this.primary) return;
    this.primary = null;
    this.primaryEpoch++;
    this.dropConnections(() => true, 'primary', kind);
    const { lost, tornTail } = this.primaryLog.crash(kind, this.random);
    const lostWrites = this.oracle.dropLost(this.primaryLog.survivingIds());
    this.note(`primary crashed (${kind}): ${lost} journal records lost${tornTail ? ', tail torn' : ''}`);
    for (const write of lostWrites) {
      if (write.ackOrder !== null && write.ackOrder <= this.flushedAckCount) {
        this.violations.push(
          `write ${write.id} was acknowledged and flushed, yet lost in a crash of the primary`,
        );
      }
    }
    // Sources see their connections fail; what they had in flight is in doubt. A lost write is
    // no longer something a later write can depend on.
    for (const source of this.sources) {
      source.busy = false;
      const last = source.lastAckedData === null ? undefined : this.oracle.writes.get(source.lastAckedData);
      if (last?.lost) source.lastAckedData = null;
    }
    this.operations.clear();
    this.queue.push(this.nowMs + downMs, { kind: 'restart', site: primarySite });
  }

  private crashSecondary(index: number, kind: CrashKind, downMs: number): void {
    const site = this.sites[index] as SecondarySite;
    if (!site.core) return;
    site.recoveryCyclesApplied += site.core.recoveryCyclesApplied;
    site.core = null;
    site.epoch++;
    this.dropConnections((connection) => connection.secondary === index, 'secondary', kind);
    const journal = site.log.crash(kind, this.random);
    let tornBlocks = 0;
    for (const volume of site.volumes) tornBlocks += volume.crash(kind, this.random).torn;
    this.note(
      `${site.config.name} crashed (${kind}): ${journal.lost} journal records lost, ${tornBlocks} volume blocks torn`,
    );
    this.queue.push(this.nowMs + downMs, { kind: 'restart', site: index });
  }

  private restart(index: number): void {
    if (index === primarySite) {
      if (this.primary) return;
      const closedBefore = this.oracle.closed;
      const entries = this.primaryLog.replayEntries();
      this.primaryLogIds = new Map(entries.map((entry, index) => [index + 1, entry.id]));
      this.primary = PrimaryGroup.recover(
        this.primaryConfig,
        () => this.coreRandom.next(),
        entries.map((entry) => entry.record),
      );
      this.note(`primary restarted: capture ${this.primary.capture}, closed ${this.primary.closed}`);
      if (this.primary.closed < closedBefore) {
        this.violations.push(
          `primary restarted with closed ${this.primary.closed}, below ${closedBefore} closed before`,
        );
      }
      this.runPrimary(this.primary.start());
      this.queue.push(this.nowMs, { kind: 'tick', site: primarySite, epoch: this.primaryEpoch });
      for (const source of this.sources) {
        this.queue.push(this.nowMs + this.random.int(20), { kind: 'source', source: source.id });
      }
      return;
    }
    const site = this.sites[index] as SecondarySite;
    if (site.core) return;
    const entries = site.log.replayEntries();
    site.logIds = new Map(entries.map((entry, index) => [index + 1, entry.id]));
    site.core = Secondary.recover(
      site.config,
      entries.map((entry) => entry.record),
    );
    this.note(`${site.config.name} restarted: stored ${site.core.stored}, applied ${site.core.applied}`);
    if (site.core.stored < site.storedDurable) {
      this.violations.push(
        `${site.config.name} restarted with stored ${site.core.stored}, below ${site.storedDurable}`,
      );
    }
    this.runSecondary(index, site.core.start());
    site.storedDurable = site.core.stored;
    this.queue.push(this.nowMs, { kind: 'tick', site: index, epoch: site.epoch });
  }

  /** The fault phase ends: heal everything, stop writing, and wait for every secondary to converge. */
  private settle(): void {
    this.settling = true;
    this.note('settle: faults stop, sources stop, every site comes back');
    for (const site of this.sites) site.partitionedUntil = Math.min(site.partitionedUntil, this.nowMs);
    for (const connection of this.connections.values())
      connection.stallUntil = Math.min(connection.stallUntil, this.nowMs);
    if (!this.primary) this.restart(primarySite);
    this.sites.forEach((site, index) => {
      if (!site.core) this.restart(index);
    });
  }

  // ---- invariants ----------------------------------------------------------------------------

  private checkInvariants(): void {
    if (this.primary) {
      this.oracle.noteClosed(this.primary.closed);
      this.checkJournalFloor(this.primary.collected);
    }
    this.sites.forEach((site) => {
      if (!site.core) return;
      site.storedDurable = Math.max(site.storedDurable, site.core.stored);
      this.checkSecondary(site, site.core);
    });
    if (this.oracle.violations.length > 0) this.violations.push(...this.oracle.violations.splice(0));
  }

  /** Invariant 4: the primary keeps every entry some secondary has not stored. */
  private checkJournalFloor(collected: CycleNumber): void {
    for (const site of this.sites) {
      if (collected > site.storedDurable) {
        this.violations.push(
          `journal: primary deleted entries up to cycle ${collected}, ${site.config.name} stored only ${site.storedDurable}`,
        );
      }
    }
  }

  private checkSecondary(site: SecondarySite, core: Secondary): void {
    const name = site.config.name;
    if (core.applied < site.appliedShown) {
      this.violations.push(
        `monotonic: ${name} applied went from ${site.appliedShown} down to ${core.applied}`,
      );
      return;
    }
    site.appliedShown = core.applied;
    if (core.applied > this.oracle.closed) {
      this.violations.push(
        `${name} shows cycle ${core.applied}, the primary closed only ${this.oracle.closed}`,
      );
      return;
    }
    const inspection = core.inspect();
    for (const entry of inspection.receiving) {
      if (entry.session !== inspection.session) {
        this.violations.push(
          `journal: ${name} keeps ${entry.packets} packets of incomplete cycle ${entry.cycle} from an earlier session after a failure`,
        );
        return;
      }
    }
    if (site.dirty) {
      site.dirty = false;
      this.checkConsistency(site, core);
    }
  }

  /**
   * The bytes the pieces name, read from the site's log as the node reads them from its journal, or
   * false (with a violation) when a piece's record is gone: a reference outlived its record.
   */
  private journaledBytes(site: SecondarySite, pieces: JournalPiece[]): Uint8Array | false {
    const blockBytes = this.scenario.shape.blockBytes;
    const parts: Uint8Array[] = [];
    for (const piece of pieces) {
      const id = site.logIds.get(piece.seq);
      const record = id === undefined ? undefined : site.log.get(id);
      if (record?.kind !== 'packet' || record.extent.data === null) {
        this.violations.push(
          `journal: ${site.config.name} refers to append ${piece.seq}, which holds no packet data (${record?.kind ?? 'gone'})`,
        );
        return false;
      }
      const from = piece.index * blockBytes;
      parts.push(record.extent.data.subarray(from, from + piece.blockCount * blockBytes));
    }
    return parts.length === 1 ? (parts[0] as Uint8Array) : Buffer.concat(parts);
  }

  /**
   * The bytes of a packet the primary reads back from its log, as the node reads its journal; null
   * when a record was collected meanwhile (the primary's link then ignores a request of an ended
   * session, and fails a live one).
   */
  private primaryBytes(pieces: JournalPiece[]): Uint8Array | null {
    const blockBytes = this.scenario.shape.blockBytes;
    const parts: Uint8Array[] = [];
    for (const piece of pieces) {
      const id = this.primaryLogIds.get(piece.seq);
      const record = id === undefined ? undefined : this.primaryLog.get(id);
      if (record?.kind !== 'write' || record.extent.data === null) return null;
      const from = piece.index * blockBytes;
      parts.push(record.extent.data.subarray(from, from + piece.blockCount * blockBytes));
    }
    return parts.length === 1 ? (parts[0] as Uint8Array) : Buffer.concat(parts);
  }

  /** Invariant 1: the read path shows exactly the primary's image at the end of cycle `applied`. */
  private checkConsistency(site: SecondarySite, core: Secondary): void {
    const expected = this.oracle.image(core.applied);
    const blockBytes = this.scenario.shape.blockBytes;
    site.volumes.forEach((volume, index) => {
      if (this.violations.length > 0) return;
      const want = expected.volumes[index] as Uint8Array;
      for (let block = 0; block < volume.blocks; block++) {
        const start = block * blockBytes;
        const overlay = core.overlay(index, block);
        const content = isBlockRef(overlay)
          ? this.journaledBytes(site, [{ seq: refSeq(overlay), index: refIndex(overlay), blockCount: 1 }])
          : overlay;
        // A reference the log cannot resolve was reported as a violation.
        if (content === false) return;
        const shown =
          content === undefined
            ? volume.current.subarray(start, start + blockBytes)
            : (content ?? new Uint8Array(blockBytes));
        const wanted = want.subarray(start, start + blockBytes);
        if (Buffer.compare(shown, wanted) !== 0) {
          this.violations.push(
            `consistency: ${site.config.name} shows cycle ${core.applied}, but volume ${index} block ${block} holds ` +
              `${describeBlock(shown)} where the primary had ${describeBlock(wanted)}`,
          );
          return;
        }
      }
    });
  }

  private checkConverged(): void {
    const primary = this.primary;
    if (!primary || this.sources.some((source) => source.busy)) return;
    const status = primary.status(this.nowMs);
    if (status.collected !== status.closed || status.secondaries.some((link) => link.lagBytes !== 0)) return;
    for (const site of this.sites) {
      const core = site.core;
      if (!core || core.appliedDurable !== status.closed || core.applied !== status.closed) return;
    }
    if (this.oracle.newestTag() > status.closed) {
      this.violations.push(
        `converged at cycle ${status.closed}, but writes were tagged ${this.oracle.newestTag()}`,
      );
      return;
    }
    // The image files themselves, without the read path's overlay, equal the primary's content.
    const expected = this.oracle.image(status.closed);
    for (const site of this.sites) {
      site.volumes.forEach((volume, index) => {
        if (Buffer.compare(volume.current, expected.volumes[index] as Uint8Array) !== 0) {
          this.violations.push(
            `convergence: ${site.config.name} volume ${index} differs from the primary at rest`,
          );
        }
      });
    }
    this.note(`converged at cycle ${status.closed}`);
    this.finished = true;
  }

  private standing(): string {
    const primary = this.primary?.status(this.nowMs);
    const secondaries = this.sites
      .map(
        (site) =>
          `${site.config.name} stored ${site.core?.stored ?? '-'} applied ${site.core?.applied ?? '-'}`,
      )
      .join(', ');
    return primary
      ? `primary capture ${primary.capture} closed ${primary.closed} collected ${primary.collected}; ${secondaries}; ` +
          primary.secondaries
            .map((link) => `${link.name}: ${link.link} (${link.lastFailure ?? 'no failure'})`)
            .join(', ')
      : `primary down; ${secondaries}`;
  }
}

/** Secondary journal records that an applied marker at `upTo` makes unnecessary. */
function releasable(record: SecondaryRecord, upTo: CycleNumber): boolean {
  switch (record.kind) {
    case 'packet':
    case 'stored':
      return record.cycle <= upTo;
    case 'applied':
      return record.cycle < upTo;
    case 'discard':
      return record.stored <= upTo;
  }
}

/** The simulated primary's identity: fixed by the seed, so a run replays exactly. */
function simulatedIdentity(seed: number): PrimaryIdentity {
  const hex = (salt: number): string => ((seed ^ salt) >>> 0).toString(16).padStart(32, '0');
  return { site: hex(0x517e), generations: [{ id: hex(0x6e17), startedAt: 1, primarySite: hex(0x517e) }] };
}
