/**
 * A secondary site. It follows one primary, session by session, answers STORED as cycles become
 * durable here, and applies them in order; the cycles themselves (journal, store, apply, recovery)
 * are SecondaryStore's (secondary-store.ts).
 */

import { type Frame, type HelloFrame, protocolVersion } from '../protocol/frames.ts';
import { assert } from './assert.ts';
import { HandshakeError, ProtocolError } from './errors.ts';
import type { BlockContent } from './fold.ts';
import { type Binding, bindingOf, checkBoundPrimary, type PrimaryIdentity } from './identity.ts';
import { checkLinkTimings, type LinkTimings, limits } from './limits.ts';
import type { SecondaryRecord } from './records.ts';
import { checkHello, identityOfHello } from './secondary-session.ts';
import { SecondaryStore, type StoreAction } from './secondary-store.ts';
import { type Bugs, type CycleNumber, type GroupShape, type LogEntry, noBugs } from './types.ts';

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
  | StoreAction;

interface ConnectionState {
  lastReceivedMs: number;
  lastSentMs: number;
  /** Session this connection joined with its HELLO, or null before it. */
  session: number | null;
}

export class Secondary {
  private session: { id: number; connectionCount: number } | null = null;
  /** The primary site and generation followed; set by the first accepted hello, never changed. */
  private binding: Binding | null;
  private readonly connections = new Map<number, ConnectionState>();
  private pendingWelcomes: number[] = [];
  private readonly out: SecondaryAction[] = [];
  private readonly store: SecondaryStore;
  /** Time of the event being handled, for heartbeat bookkeeping. */
  private clockMs = 0;
  private readonly bugs: Bugs;
  /** Counters for the simulator's report. */
  failures = 0;

  constructor(private readonly config: SecondaryConfig) {
    const problems = checkLinkTimings(config.timings);
    assert(problems.length === 0, problems.join('; '));
    this.bugs = config.bugs ?? noBugs;
    this.binding = config.binding ?? null;
    this.store = new SecondaryStore(config.name, config.shape, this.bugs, this.out, {
      onCycleStored: () => this.onCycleStored(),
      onCycleApplied: () => this.reportProgress(),
      onCycleRefused: (nowMs, error) => this.fail(nowMs, `${error.code}: ${error.message}`),
    });
  }

  /** Every cycle up to this is complete and durable here. */
  get stored(): CycleNumber {
    return this.store.stored;
  }

  /** The read path shows the image at the end of this cycle. */
  get applied(): CycleNumber {
    return this.store.applied;
  }

  /** The volumes durably hold this cycle (the `applied` marker is in the journal). */
  get appliedDurable(): CycleNumber {
    return this.store.appliedDurable;
  }

  /** A counter for the simulator's report. */
  get recoveryCyclesApplied(): number {
    return this.store.recoveryCyclesApplied;
  }

  /** Rebuilds a secondary from its journal after a restart, then resumes any unfinished apply. */
  static recover(config: SecondaryConfig, records: Iterable<SecondaryRecord>): Secondary {
    const secondary = new Secondary(config);
    secondary.store.replay(records);
    return secondary;
  }

  /** Starts the unfinished apply, if any; call once after construction or recovery. */
  start(): SecondaryAction[] {
    this.store.resumeApply();
    return this.takeActions();
  }

  takeActions(): SecondaryAction[] {
    return this.out.splice(0);
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
        this.store.onData(frame, this.sessionId());
        return;
      case 'end-of-cycle':
        this.store.onEndOfCycle(frame, this.sessionId());
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
    if (this.store.storeInFlight) this.pendingWelcomes.push(connection);
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

  // ---- storage completions -------------------------------------------------------------------

  onJournalSynced(nowMs: number, upTo: number): SecondaryAction[] {
    this.clockMs = nowMs;
    this.store.onJournalSynced(nowMs, upTo);
    return this.takeActions();
  }

  onVolumesSynced(nowMs: number, token: number): SecondaryAction[] {
    this.clockMs = nowMs;
    this.store.onVolumesSynced(token);
    return this.takeActions();
  }

  /** The read path: a block of the cycle being applied, or undefined to read the volume. */
  overlay(volume: number, block: number): BlockContent | undefined {
    return this.store.overlay(volume, block);
  }

  private onCycleStored(): void {
    this.reportProgress();
    for (const connection of this.pendingWelcomes.splice(0)) this.sendWelcome(connection);
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
    this.store.onSessionFailed();
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

  private sessionId(): number {
    return this.session?.id ?? -1;
  }

  private sessionConnection(): number | undefined {
    if (!this.session) return undefined;
    for (const [connection, state] of this.connections)
      if (state.session === this.session.id) return connection;
    return undefined;
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
      receiving: this.store.receivingCycles(),
    };
  }
}
