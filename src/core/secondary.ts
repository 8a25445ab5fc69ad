/**
 * A secondary site. It journals the packets it receives per cycle, stores a cycle once it holds
 * exactly the packets the end-of-cycle frame names (count and digest), answers STORED, and applies
 * stored cycles strictly in order, each as a unit. On any failure it deletes the entries of every
 * cycle that is not stored (the claim's "deleting journal entries in each secondary").
 *
 * Apply is redo-logged through the journal itself: a stored cycle's packets stay in the journal
 * until its `applied` marker is durable, so a crash during apply finishes the apply at restart.
 * While a cycle is being written to the volumes, the read path overlays its blocks, so a reader
 * never sees a half-applied cycle.
 */

import {
  addDigest,
  type DataFrame,
  dataFrameOf,
  type EndOfCycleFrame,
  extentOfDataFrame,
  type Frame,
  type HelloFrame,
  packetDigest,
  protocolVersion,
} from '../protocol/frames.ts';
import { assert } from './assert.ts';
import { HandshakeError, ProtocolError } from './errors.ts';
import { type BlockContent, FoldIndex } from './fold.ts';
import { type Binding, bindingOf, checkBoundPrimary, type PrimaryIdentity } from './identity.ts';
import { checkLinkTimings, type LinkTimings, limits } from './limits.ts';
import type { SecondaryRecord } from './records.ts';
import { checkHello, identityOfHello } from './secondary-session.ts';
import {
  type Bugs,
  type CycleNumber,
  type Extent,
  type GroupShape,
  type LogEntry,
  noBugs,
  volumeBlocks,
} from './types.ts';

// The node checks a hello before it creates volumes from it, so the check is part of this API.
export { checkHello };

export interface SecondaryConfig {
  name: string;
  shape: GroupShape;
  timings: LinkTimings;
  /** The primary site and generation this secondary follows (site.json), or null: not bound yet. */
  binding?: Binding | null;
  bugs?: Bugs;
}

export type SecondaryAction =
  /**
   * Record, durably and atomically, that this secondary now follows this primary and generation;
   * done before any later action, so nothing of that primary is stored before the binding is.
   */
  | { type: 'bind'; binding: Binding }
  | { type: 'send'; connection: number; frame: Frame }
  | { type: 'close'; connection: number; reason: string }
  | { type: 'journal-append'; seq: number; record: SecondaryRecord }
  /** Make every record appended so far durable, then call onJournalSynced(upTo). */
  | { type: 'journal-sync'; upTo: number }
  /** Records of cycles up to `upTo` are applied durably and may go. */
  | { type: 'journal-release'; upTo: CycleNumber }
  | { type: 'volume-write'; extent: Extent }
  /** Make every volume write so far durable, then call onVolumesSynced(token). */
  | { type: 'volume-sync'; token: number }
  | { type: 'log'; entry: LogEntry };

interface ReceivingCycle {
  packets: Map<number, DataFrame>;
  end: EndOfCycleFrame | null;
  digest: number;
  /** The session that delivered these packets; entries of an older session must not survive it. */
  session: number;
}

interface StoredCycle {
  cycle: CycleNumber;
  coversFrom: CycleNumber;
  fold: FoldIndex;
}

interface ConnectionState {
  lastReceivedMs: number;
  lastSentMs: number;
  /** Session this connection joined with its HELLO, or null before it. */
  session: number | null;
}

export class Secondary {
  /** Every cycle up to this is complete and durable here. */
  stored: CycleNumber = 0;
  /** The read path shows the image at the end of this cycle. */
  applied: CycleNumber = 0;
  /** The volumes durably hold this cycle (the `applied` marker is in the journal). */
  appliedDurable: CycleNumber = 0;
  private session: { id: number; connectionCount: number } | null = null;
  /** The primary site and generation followed; set by the first accepted hello, never changed. */
  private binding: Binding | null;
  private readonly connections = new Map<number, ConnectionState>();
  private receiving = new Map<CycleNumber, ReceivingCycle>();
  private readonly storedCycles = new Map<CycleNumber, StoredCycle>();
  private storing: (StoredCycle & { seq: number }) | null = null;
  private applying: (StoredCycle & { phase: 'volumes' | 'marker'; wait: number }) | null = null;
  private pendingWelcomes: number[] = [];
  private appendSeq = 0;
  private durableSeq = 0;
  private syncRequestedSeq = 0;
  private volumeSyncs = 0;
  private out: SecondaryAction[] = [];
  /** Time of the event being handled, for heartbeat bookkeeping. */
  private clockMs = 0;
  private readonly bugs: Bugs;
  /** Counters for the simulator's report. */
  failures = 0;
  recoveryCyclesApplied = 0;

  constructor(private readonly config: SecondaryConfig) {
    const problems = checkLinkTimings(config.timings);
    assert(problems.length === 0, problems.join('; '));
    this.bugs = config.bugs ?? noBugs;
    this.binding = config.binding ?? null;
  }

  /** Rebuilds a secondary from its journal after a restart, then resumes any unfinished apply. */
  static recover(config: SecondaryConfig, records: Iterable<SecondaryRecord>): Secondary {
    const secondary = new Secondary(config);
    secondary.replay(records);
    return secondary;
  }

  private replay(records: Iterable<SecondaryRecord>): void {
    const buffers = new Map<CycleNumber, { packetIndex: number; extent: Extent }[]>();
    for (const record of records) {
      switch (record.kind) {
        case 'packet': {
          const extents = buffers.get(record.cycle) ?? [];
          extents.push({ packetIndex: record.packetIndex, extent: record.extent });
          buffers.set(record.cycle, extents);
          break;
        }
        case 'stored': {
          const fold = new FoldIndex(this.config.shape.blockBytes);
          for (const { extent } of buffers.get(record.cycle) ?? []) fold.add(extent);
          buffers.delete(record.cycle);
          this.storedCycles.set(record.cycle, { cycle: record.cycle, coversFrom: record.coversFrom, fold });
          this.stored = Math.max(this.stored, record.cycle);
          break;
        }
        case 'discard':
          if (!this.bugs.has('keep-incomplete')) buffers.clear();
          break;
        case 'applied':
          this.appliedDurable = Math.max(this.appliedDurable, record.cycle);
          break;
      }
    }
    // Records of applied cycles may have been released; the applied marker vouches for them.
    this.stored = Math.max(this.stored, this.appliedDurable);
    for (const cycle of [...this.storedCycles.keys()]) {
      if (cycle <= this.appliedDurable) this.storedCycles.delete(cycle);
    }
    this.applied = this.appliedDurable;
    // A restart is a failure: packets of cycles that were not stored are void. The deliberate
    // defect keeps them, as if they still belonged to a live cycle.
    if (this.bugs.has('keep-incomplete')) {
      for (const [cycle, extents] of buffers) {
        const packets = new Map<number, DataFrame>();
        for (const { packetIndex, extent } of extents)
          packets.set(packetIndex, dataFrameOf(cycle, packetIndex, extent));
        this.receiving.set(cycle, { packets, end: null, digest: 0, session: -1 });
      }
    }
  }

  /** Starts the unfinished apply, if any; call once after construction or recovery. */
  start(): SecondaryAction[] {
    if (!this.bugs.has('skip-redo')) this.tryApply();
    return this.takeActions();
  }

  takeActions(): SecondaryAction[] {
    const actions = this.out;
    this.out = [];
    return actions;
  }

  // ---- connections ---------------------------------------------------------------------------

  onConnectionOpened(nowMs: number, connection: number): SecondaryAction[] {
    this.clockMs = nowMs;
    this.connections.set(connection, { lastReceivedMs: nowMs, lastSentMs: nowMs, session: null });
    return this.takeActions();
  }

  onConnectionLost(nowMs: number, connection: number, reason: string): SecondaryAction[] {
    this.clockMs = nowMs;
    const state = this.connections.get(connection);
    if (!state) return this.takeActions();
    this.connections.delete(connection);
    if (this.inSession(state)) this.fail(nowMs, `connection ${connection} lost: ${reason}`);
    return this.takeActions();
  }

  /** The connection's bytes did not decode: tell the peer, close, and fail the session it is in. */
  onProtocolError(nowMs: number, connection: number, error: ProtocolError): SecondaryAction[] {
    this.clockMs = nowMs;
    this.rejectConnection(nowMs, connection, error);
    return this.takeActions();
  }

  private rejectConnection(nowMs: number, connection: number, error: ProtocolError): void {
    this.refuseConnection(connection, error.code, error.message);
    const state = this.connections.get(connection);
    this.connections.delete(connection);
    if (state && this.inSession(state)) this.fail(nowMs, `${error.code}: ${error.message}`);
  }

  onFrame(nowMs: number, connection: number, frame: Frame): SecondaryAction[] {
    this.clockMs = nowMs;
    const state = this.connections.get(connection);
    if (!state) return this.takeActions();
    state.lastReceivedMs = nowMs;
    try {
      this.dispatch(nowMs, connection, state, frame);
    } catch (error) {
      if (!(error instanceof ProtocolError)) throw error;
      this.rejectConnection(nowMs, connection, error);
    }
    return this.takeActions();
  }

  private dispatch(nowMs: number, connection: number, state: ConnectionState, frame: Frame): void {
    if (frame.type === 'hello') {
      this.onHello(nowMs, connection, state, frame);
      return;
    }
    if (!this.inSession(state)) {
      throw new ProtocolError('unexpected-frame', `${frame.type} before hello on connection ${connection}`);
    }
    switch (frame.type) {
      case 'heartbeat':
        return;
      case 'data':
        this.onData(frame);
        return;
      case 'end-of-cycle':
        this.onEndOfCycle(frame);
        return;
      case 'error':
        this.fail(nowMs, `primary gave up: ${frame.code}: ${frame.message}`);
        return;
      default:
        throw new ProtocolError('unexpected-frame', `${frame.type} frame from the primary`);
    }
  }

  private inSession(state: ConnectionState): boolean {
    return this.session !== null && state.session === this.session.id;
  }

  private onHello(nowMs: number, connection: number, state: ConnectionState, hello: HelloFrame): void {
    if (state.session !== null) throw new ProtocolError('unexpected-frame', 'second hello on one connection');
    if (hello.protocolVersion !== protocolVersion) {
      this.refuseHandshake(
        connection,
        new HandshakeError(
          'version-unsupported',
          `protocol ${hello.protocolVersion}, this site speaks ${protocolVersion}`,
        ),
      );
      return;
    }
    // Every check of the offered primary comes before anything of the live session is touched, so
    // a refused primary (another group, another identity) never disturbs the one being followed.
    try {
      checkHello(hello, this.config.shape.group, this.config.shape);
      if (this.binding) checkBoundPrimary(this.binding, identityOfHello(hello));
    } catch (error) {
      if (!(error instanceof HandshakeError)) throw error;
      this.refuseHandshake(connection, error);
      return;
    }
    if (hello.connectionCount < 1 || hello.connectionCount > limits.connectionsPerLinkMax) {
      throw new ProtocolError('frame-bad-field', `session of ${hello.connectionCount} connections`);
    }
    if (!this.binding) this.bind(identityOfHello(hello));
    if (this.session?.id !== hello.sessionId) {
      // A new session means the primary saw a failure (or restarted): whatever we hold of cycles
      // that are not stored is void before anything of the new session arrives.
      if (this.session) this.fail(nowMs, `new session ${hello.sessionId} from the primary`);
      this.session = { id: hello.sessionId, connectionCount: hello.connectionCount };
      this.log('info', 'session-started', {
        session: hello.sessionId,
        stored: this.stored,
        applied: this.applied,
      });
    }
    const members = [...this.connections.values()].filter(
      (other) => other.session === hello.sessionId,
    ).length;
    if (members >= this.session.connectionCount) {
      throw new ProtocolError(
        'unexpected-frame',
        `more than ${this.session.connectionCount} connections in session`,
      );
    }
    state.session = hello.sessionId;
    if (this.storing) this.pendingWelcomes.push(connection);
    else this.sendWelcome(connection);
  }

  /** The first primary accepted is the one followed from now on; its binding is durable first. */
  private bind(identity: PrimaryIdentity): void {
    assert(this.binding === null, 'a secondary binds once');
    this.binding = bindingOf(identity);
    this.out.push({ type: 'bind', binding: this.binding });
    this.log('info', 'primary-bound', {
      primarySite: this.binding.primarySite,
      generation: this.binding.generation,
    });
  }

  private sendWelcome(connection: number): void {
    const state = this.connections.get(connection);
    if (!state || !this.inSession(state) || !this.session) return;
    this.send(connection, {
      type: 'welcome',
      protocolVersion,
      sessionId: this.session.id,
      secondary: this.config.name,
      stored: this.stored,
      applied: this.applied,
    });
  }

  private refuseHandshake(connection: number, error: HandshakeError): void {
    this.log('error', 'primary-refused', { code: error.code, reason: error.message });
    this.refuseConnection(connection, error.code, error.message);
    this.connections.delete(connection);
  }

  private refuseConnection(connection: number, code: string, message: string): void {
    this.send(connection, { type: 'error', code, message });
    this.out.push({ type: 'close', connection, reason: `${code}: ${message}` });
  }

  // ---- receiving -----------------------------------------------------------------------------

  private onData(frame: DataFrame): void {
    this.checkCycleNumber(frame.cycle, 'data');
    this.checkExtent(frame);
    const cycle = this.receivingCycle(frame.cycle);
    if (cycle.packets.has(frame.packetIndex)) {
      throw new ProtocolError(
        'packet-invalid',
        `cycle ${frame.cycle} packet ${frame.packetIndex} arrived twice`,
      );
    }
    if (cycle.end && frame.packetIndex >= cycle.end.packetCount) {
      throw new ProtocolError(
        'packet-invalid',
        `cycle ${frame.cycle} packet ${frame.packetIndex} of ${cycle.end.packetCount}`,
      );
    }
    cycle.packets.set(frame.packetIndex, frame);
    cycle.digest = addDigest(cycle.digest, packetDigest(frame));
    this.append({
      kind: 'packet',
      cycle: frame.cycle,
      packetIndex: frame.packetIndex,
      extent: extentOfDataFrame(frame),
    });
    this.tryStore();
  }

  private onEndOfCycle(frame: EndOfCycleFrame): void {
    this.checkCycleNumber(frame.cycle, 'end-of-cycle');
    if (frame.coversFrom > frame.cycle || frame.coversFrom <= this.stored) {
      throw new ProtocolError(
        'cycle-out-of-order',
        `cycle ${frame.cycle} covers from ${frame.coversFrom}, stored is ${this.stored}`,
      );
    }
    if (frame.packetCount > limits.packetsPerCycleMax) {
      throw new ProtocolError('packet-invalid', `cycle ${frame.cycle} of ${frame.packetCount} packets`);
    }
    const cycle = this.receivingCycle(frame.cycle);
    if (cycle.end) throw new ProtocolError('unexpected-frame', `second end of cycle ${frame.cycle}`);
    cycle.end = frame;
    this.tryStore();
  }

  private checkCycleNumber(cycle: CycleNumber, what: string): void {
    const floor = this.storing ? this.storing.cycle : this.stored;
    if (cycle <= floor) {
      throw new ProtocolError('cycle-out-of-order', `${what} of cycle ${cycle}, stored is ${this.stored}`);
    }
    // A recovery cycle's number may be far above the stored one, so the bound is on how many
    // cycles are buffered, not on how far ahead they are.
    if (!this.receiving.has(cycle) && this.receiving.size >= limits.receiveCyclesBufferedMax) {
      throw new ProtocolError(
        'cycle-out-of-order',
        `${what} of cycle ${cycle} would be the ${this.receiving.size + 1}th incomplete cycle, at most ${limits.receiveCyclesBufferedMax}`,
      );
    }
  }

  private checkExtent(frame: DataFrame): void {
    const blocks = volumeBlocks(this.config.shape, frame.volume);
    const payloadBytes = frame.zero ? 0 : frame.blockCount * this.config.shape.blockBytes;
    if (
      frame.volume >= this.config.shape.volumes.length ||
      frame.blockCount < 1 ||
      frame.block + frame.blockCount > blocks ||
      frame.payload.length !== payloadBytes ||
      frame.packetIndex >= limits.packetsPerCycleMax
    ) {
      throw new ProtocolError(
        'packet-invalid',
        `cycle ${frame.cycle} packet ${frame.packetIndex}: volume ${frame.volume} blocks ${frame.block}+${frame.blockCount}, ${frame.payload.length} bytes`,
      );
    }
  }

  private receivingCycle(number: CycleNumber): ReceivingCycle {
    let cycle = this.receiving.get(number);
    if (!cycle) {
      cycle = { packets: new Map(), end: null, digest: 0, session: this.session?.id ?? -1 };
      this.receiving.set(number, cycle);
    }
    return cycle;
  }

  /** Stores the next cycle in order once it is complete: its record durable first, STORED after. */
  private tryStore(): void {
    if (this.storing) return;
    const expectedFrom = this.stored + 1;
    for (const [number, cycle] of this.receiving) {
      const end = cycle.end;
      if (!end || end.coversFrom !== expectedFrom) continue;
      if (!this.bugs.has('apply-partial')) {
        if (cycle.packets.size < end.packetCount) return;
        if (cycle.digest !== end.digest) {
          throw new ProtocolError(
            'cycle-digest-mismatch',
            `cycle ${number}: digest of received packets differs`,
          );
        }
      }
      const fold = new FoldIndex(this.config.shape.blockBytes);
      for (const packet of [...cycle.packets.values()].sort((a, b) => a.packetIndex - b.packetIndex)) {
        fold.add(extentOfDataFrame(packet));
      }
      this.receiving.delete(number);
      const seq = this.append({ kind: 'stored', cycle: number, coversFrom: end.coversFrom });
      this.storing = { cycle: number, coversFrom: end.coversFrom, fold, seq };
      this.requestSync(seq);
      return;
    }
  }

  // ---- storage completions -------------------------------------------------------------------

  onJournalSynced(nowMs: number, upTo: number): SecondaryAction[] {
    this.clockMs = nowMs;
    this.durableSeq = Math.max(this.durableSeq, upTo);
    if (this.storing && this.durableSeq >= this.storing.seq) this.onStored(nowMs);
    if (this.applying?.phase === 'marker' && this.durableSeq >= this.applying.wait) this.onApplied();
    return this.takeActions();
  }

  private onStored(_nowMs: number): void {
    const storing = this.storing;
    assert(storing, 'a cycle was being stored');
    assert(storing.coversFrom === this.stored + 1, 'cycles are stored in order');
    this.storing = null;
    this.stored = storing.cycle;
    this.storedCycles.set(storing.cycle, storing);
    this.log('debug', 'cycle-stored', { cycle: storing.cycle, coversFrom: storing.coversFrom });
    this.reportProgress();
    for (const connection of this.pendingWelcomes.splice(0)) this.sendWelcome(connection);
    try {
      this.tryStore();
    } catch (error) {
      if (!(error instanceof ProtocolError)) throw error;
      this.fail(_nowMs, `${error.code}: ${error.message}`);
    }
    this.tryApply();
  }

  /** Applies the next stored cycle, whole: the read path shows it from the first volume write on. */
  private tryApply(): void {
    if (this.applying) return;
    const next = [...this.storedCycles.values()].find((cycle) => cycle.coversFrom === this.applied + 1);
    if (!next) return;
    const token = ++this.volumeSyncs;
    this.applying = { ...next, phase: 'volumes', wait: token };
    this.applied = next.cycle;
    if (next.coversFrom < next.cycle) this.recoveryCyclesApplied++;
    for (const extent of next.fold.extents(limits.packetBytesMax))
      this.out.push({ type: 'volume-write', extent });
    this.out.push({ type: 'volume-sync', token });
  }

  onVolumesSynced(nowMs: number, token: number): SecondaryAction[] {
    this.clockMs = nowMs;
    if (this.applying?.phase === 'volumes' && this.applying.wait === token) {
      const seq = this.append({ kind: 'applied', cycle: this.applying.cycle });
      this.applying.phase = 'marker';
      this.applying.wait = seq;
      this.requestSync(seq);
    }
    return this.takeActions();
  }

  private onApplied(): void {
    const applying = this.applying;
    assert(applying, 'a cycle was being applied');
    this.applying = null;
    this.appliedDurable = applying.cycle;
    this.storedCycles.delete(applying.cycle);
    this.out.push({ type: 'journal-release', upTo: applying.cycle });
    this.reportProgress();
    this.tryApply();
  }

  /** The read path: a block of the cycle being applied, or undefined to read the volume. */
  overlay(volume: number, block: number): BlockContent | undefined {
    return this.applying?.fold.get(volume, block);
  }

  private reportProgress(): void {
    const connection = this.sessionConnection();
    if (connection !== undefined)
      this.send(connection, { type: 'stored', stored: this.stored, applied: this.applied });
  }

  // ---- failure -------------------------------------------------------------------------------

  /**
   * Any failure: close the session and delete the entries of every cycle that is not stored. A
   * cycle whose stored record is already on its way to disk is complete and stays.
   */
  private fail(_nowMs: number, reason: string): void {
    this.failures++;
    this.log('warn', 'link-failed', { reason, stored: this.stored, applied: this.applied });
    for (const [connection, state] of this.connections) {
      if (this.session && state.session === this.session.id) {
        this.out.push({ type: 'close', connection, reason });
        this.connections.delete(connection);
      }
    }
    this.session = null;
    this.pendingWelcomes = [];
    if (this.bugs.has('keep-incomplete')) return;
    const dropped = this.receiving.size;
    this.receiving = new Map();
    this.append({ kind: 'discard', stored: this.stored });
    if (dropped > 0) this.log('info', 'incomplete-cycles-deleted', { cycles: dropped, stored: this.stored });
  }

  onTick(nowMs: number): SecondaryAction[] {
    this.clockMs = nowMs;
    for (const [connection, state] of this.connections) {
      if (nowMs - state.lastReceivedMs > this.config.timings.heartbeatMsTimeout) {
        this.connections.delete(connection);
        this.out.push({ type: 'close', connection, reason: 'heartbeat timeout' });
        if (this.inSession(state)) this.fail(nowMs, `no frame for ${nowMs - state.lastReceivedMs} ms`);
        continue;
      }
      if (this.inSession(state) && nowMs - state.lastSentMs >= this.config.timings.heartbeatMsInterval) {
        this.send(connection, { type: 'heartbeat', nonce: nowMs >>> 0 });
      }
    }
    return this.takeActions();
  }

  // ---- helpers -------------------------------------------------------------------------------

  private send(connection: number, frame: Frame): void {
    const state = this.connections.get(connection);
    if (state) state.lastSentMs = this.clockMs;
    this.out.push({ type: 'send', connection, frame });
  }

  private sessionConnection(): number | undefined {
    if (!this.session) return undefined;
    for (const [connection, state] of this.connections)
      if (state.session === this.session.id) return connection;
    return undefined;
  }

  private append(record: SecondaryRecord): number {
    const seq = ++this.appendSeq;
    this.out.push({ type: 'journal-append', seq, record });
    return seq;
  }

  private requestSync(seq: number): void {
    if (seq <= this.syncRequestedSeq) return;
    this.syncRequestedSeq = this.appendSeq;
    this.out.push({ type: 'journal-sync', upTo: this.appendSeq });
  }

  private log(level: LogEntry['level'], event: string, fields: LogEntry['fields']): void {
    this.out.push({
      type: 'log',
      entry: { level, event, fields: { secondary: this.config.name, ...fields } },
    });
  }

  /** The primary site and generation followed, or null before the first accepted hello. */
  get boundTo(): Binding | null {
    return this.binding;
  }

  /** What the simulator's checkers read: cycles buffered and the session they came from. */
  inspect(): {
    session: number | null;
    receiving: { cycle: CycleNumber; session: number; packets: number }[];
  } {
    return {
      session: this.session?.id ?? null,
      receiving: [...this.receiving].map(([cycle, entry]) => ({
        cycle,
        session: entry.session,
        packets: entry.packets.size,
      })),
    };
  }
}
