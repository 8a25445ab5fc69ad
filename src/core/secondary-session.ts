/**
 * The session side of a secondary: the connections a primary opens to it, the hello that joins each
 * to a session (checked before anything of the followed primary is touched), heartbeats, and the
 * frames in and out. Any failure closes the whole session and tells the store, which deletes what
 * it holds of cycles that are not stored. A new session id from the primary is such a failure.
 *
 * The cycles themselves are the store's (secondary-store.ts): the session hands it DATA and
 * END-OF-CYCLE frames and answers the primary with what the store holds (WELCOME, STORED).
 */

import {
  type BlockRun,
  type DataFrame,
  type EndOfCycleFrame,
  type Frame,
  type HelloFrame,
  protocolVersion,
  type SwitchoverFrame,
} from '../protocol/frames.ts';
import { assert } from './assert.ts';
import { HandshakeError, ProtocolError, StagingSpaceError } from './errors.ts';
import {
  agreesThrough,
  type Binding,
  bindingOf,
  checkBoundPrimary,
  compareHistories,
  type Generation,
  generationChainProblem,
  type HistoryRelation,
  type PrimaryIdentity,
} from './identity.ts';
import { type LinkTimings, limits } from './limits.ts';
import { checkSameShape, checkShapeRules } from './shape.ts';
import { type ActionSink, type CycleNumber, type GroupShape, type LogEntry, volumeBlocks } from './types.ts';

/** What the session asks of the connections and of site.json. */
export type SessionAction =
  /**
   * Record, durably and atomically, that this secondary now follows this primary and generation;
   * done before any later action, so nothing of that primary is stored before the binding is.
   */
  | { type: 'bind'; binding: Binding }
  | { type: 'send'; connection: number; frame: Frame }
  | { type: 'close'; connection: number; reason: string }
  | { type: 'log'; entry: LogEntry }
  /**
   * The primary followed asks this site to take over in a planned switchover (docs/failover.md):
   * everything up to `cycle` is stored here as a consistent image, and it takes no more writes.
   */
  | { type: 'promotion-requested'; connection: number; cycle: CycleNumber; generation: string };

/**
 * A site that was a primary and now follows the one that superseded it: its own chain and the
 * cycle its volumes hold. Until bound, it accepts only a primary whose chain extends this one right
 * after that cycle (site.json `demotedFrom`).
 */
export interface DemotedFrom {
  cycle: CycleNumber;
  generations: Generation[];
  /**
   * The blocks it wrote after that cycle (a rejoin; none after a switchover): until a resync made
   * its image the group's again, each handshake states them to the primary.
   */
  divergence?: BlockRun[] | null;
  /**
   * Set by a split brain's resolution (`cyclerep rejoin --discard-my-data`): this site gave up its
   * own history, so it follows a primary whose chain diverged from its own too (docs/failover.md).
   * Only a primary whose chain agrees with this one through `cycle` gets the divergence alone (a
   * delta); any other is told every block, as one consistent unit.
   */
  acceptDiverged?: boolean;
}

/** What the session reads of, and hands to, the cycles below it (SecondaryStore). */
export interface SessionStore {
  readonly stored: CycleNumber;
  readonly applied: CycleNumber;
  /** The newest cycle held whose image is consistent (below `stored` in an unfinished resync). */
  readonly consistentStored: CycleNumber;
  /** A stored record is on its way to disk: a welcome waits for it, so the number it states is exact. */
  readonly storeInFlight: boolean;
  /** The volumes show a consistent cut of the group's history (not during an in-place resync or a rejoin). */
  readonly imageConsistent: boolean;
  /** Throws ProtocolError when the packet does not fit. */
  onData(frame: DataFrame, session: number): void;
  /** Throws ProtocolError when the end does not fit. */
  onEndOfCycle(frame: EndOfCycleFrame, session: number): void;
  /** The session failed: cycles that are not stored are void. */
  onSessionFailed(): void;
}

/** The runs a session's handshake states (divergenceFor); `everyBlock` when they are the whole group. */
interface StatedDivergence {
  runs: BlockRun[];
  everyBlock: boolean;
}

interface ConnectionState {
  lastReceivedMs: number;
  lastSentMs: number;
  /** Session this connection joined with its HELLO, or null before it. */
  session: number | null;
}

export class SecondarySession {
  /** A counter for the simulator's report. */
  failures = 0;
  /** The session of the primary followed, or null between sessions. */
  /**
   * The live session; `divergenceStated` once a rejoined site's divergence went out on one of its
   * connections (the primary adds up what the handshake states: once per session, not per connection);
   * `divergence` what this session's primary is told (divergenceFor).
   */
  private session: {
    id: number;
    connectionCount: number;
    divergenceStated: boolean;
    divergence: StatedDivergence;
  } | null = null;
  /** The primary site and generation followed; set by the first accepted hello, never changed. */
  private binding: Binding | null;
  private readonly connections = new Map<number, ConnectionState>();
  /** Connections that joined while a store was in flight: they are welcomed once it is stored. */
  private pendingWelcomes: number[] = [];

  constructor(
    private readonly name: string,
    private readonly shape: GroupShape,
    private readonly timings: LinkTimings,
    binding: Binding | null,
    private readonly store: SessionStore,
    private readonly out: ActionSink<SessionAction>,
    private readonly demotedFrom: DemotedFrom | null = null,
  ) {
    this.binding = binding;
  }

  /** The primary site and generation followed, or null before the first accepted hello. */
  get boundTo(): Binding | null {
    return this.binding;
  }

  /** The id of the live session, or null between sessions. */
  get sessionId(): number | null {
    return this.session?.id ?? null;
  }

  // ---- connections ---------------------------------------------------------------------------

  onConnectionOpened(nowMs: number, connection: number): void {
    this.connections.set(connection, { lastReceivedMs: nowMs, lastSentMs: nowMs, session: null });
  }

  onConnectionLost(connection: number, reason: string): void {
    const state = this.connections.get(connection);
    if (!state) return;
    this.connections.delete(connection);
    if (this.inSession(state)) this.fail(`connection ${connection} lost: ${reason}`);
  }

  /** The connection's bytes did not decode: tell the peer, close, and fail the session it is in. */
  onProtocolError(nowMs: number, connection: number, error: ProtocolError): void {
    this.refuseConnection(nowMs, connection, error.code, error.message);
    const state = this.connections.get(connection);
    this.connections.delete(connection);
    if (state && this.inSession(state)) this.fail(`${error.code}: ${error.message}`);
  }

  /**
   * Bytes arrived on a connection, whole frames or not: the primary is alive. Liveness counts
   * progress, so a large frame on a slow link, or a long catch-up, never looks like silence.
   */
  onBytesReceived(nowMs: number, connection: number): void {
    const state = this.connections.get(connection);
    if (state) state.lastReceivedMs = nowMs;
  }

  onFrame(nowMs: number, connection: number, frame: Frame): void {
    const state = this.connections.get(connection);
    if (!state) return;
    state.lastReceivedMs = nowMs;
    try {
      this.dispatch(nowMs, connection, state, frame);
    } catch (error) {
      if (error instanceof StagingSpaceError) this.refuseStaging(nowMs, connection, error);
      else if (error instanceof ProtocolError) this.onProtocolError(nowMs, connection, error);
      else throw error;
    }
  }

  /**
   * No room to stage more of a resync: the primary hears why with the numbers (and, as for any
   * refusal, retries rarely), the session ends, and what arrived of unstored cycles is void. The
   * image stays at its consistent cycle; the cycles already stored stay for the resync's resumption.
   */
  private refuseStaging(nowMs: number, connection: number, error: StagingSpaceError): void {
    this.log('error', 'staging-space-short', { ...error.shortage, reason: error.message });
    this.refuseConnection(nowMs, connection, error.code, error.message);
    const state = this.connections.get(connection);
    this.connections.delete(connection);
    if (state && this.inSession(state)) this.fail(`${error.code}: ${error.message}`);
  }

  private dispatch(nowMs: number, connection: number, state: ConnectionState, frame: Frame): void {
    if (frame.type === 'hello') {
      this.onHello(nowMs, connection, state, frame);
      return;
    }
    const session = this.inSession(state) ? this.session : null;
    if (!session) {
      throw new ProtocolError('unexpected-frame', `${frame.type} before hello on connection ${connection}`);
    }
    switch (frame.type) {
      case 'heartbeat':
        return;
      case 'data':
        this.store.onData(frame, session.id);
        return;
      case 'end-of-cycle':
        this.store.onEndOfCycle(frame, session.id);
        return;
      case 'error':
        this.fail(`primary gave up: ${frame.code}: ${frame.message}`);
        return;
      case 'switchover':
        this.onSwitchover(nowMs, connection, frame);
        return;
      default:
        throw new ProtocolError('unexpected-frame', `${frame.type} frame from the primary`);
    }
  }

  private inSession(state: ConnectionState): boolean {
    return this.session !== null && state.session === this.session.id;
  }

  // ---- handshake -----------------------------------------------------------------------------

  private onHello(nowMs: number, connection: number, state: ConnectionState, hello: HelloFrame): void {
    if (state.session !== null) throw new ProtocolError('unexpected-frame', 'second hello on one connection');
    if (hello.protocolVersion !== protocolVersion) {
      this.refuseHandshake(
        nowMs,
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
      checkHello(hello, this.shape.group, this.shape);
      if (this.binding) checkBoundPrimary(this.binding, identityOfHello(hello));
      else if (this.demotedFrom) checkSupersedingPrimary(this.demotedFrom, identityOfHello(hello));
    } catch (error) {
      if (!(error instanceof HandshakeError)) throw error;
      this.refuseHandshake(nowMs, connection, error);
      return;
    }
    if (hello.connectionCount < 1 || hello.connectionCount > limits.connectionsPerLinkMax) {
      throw new ProtocolError('frame-bad-field', `session of ${hello.connectionCount} connections`);
    }
    if (!this.binding?.history) this.bind(identityOfHello(hello));
    if (this.session?.id !== hello.sessionId) {
      // A new session means the primary saw a failure (or restarted): whatever we hold of cycles
      // that are not stored is void before anything of the new session arrives.
      if (this.session) this.fail(`new session ${hello.sessionId} from the primary`);
      this.session = {
        id: hello.sessionId,
        connectionCount: hello.connectionCount,
        divergenceStated: false,
        divergence: this.demotedFrom
          ? divergenceFor(this.demotedFrom, identityOfHello(hello), this.shape)
          : { runs: [], everyBlock: false },
      };
      this.log('info', 'session-started', {
        session: hello.sessionId,
        stored: this.store.stored,
        applied: this.store.applied,
      });
      if (this.session.divergence.everyBlock && this.demotedFrom)
        this.log('warn', 'rejoin-full-copy', {
          cycle: this.demotedFrom.cycle,
          primarySite: hello.primarySite,
          generation: hello.generations.at(-1)?.id ?? '',
          reason: `the primary's history does not hold the same cycles as this site's through cycle ${this.demotedFrom.cycle}: every block is copied from it as one consistent unit`,
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
    else this.sendWelcome(nowMs, connection);
  }

  /**
   * The first primary accepted is the one followed from now on; its binding is durable first. A
   * binding recorded before chains were kept gains the chain of the same primary (checked above).
   */
  private bind(identity: PrimaryIdentity): void {
    const completing = this.binding !== null;
    assert(
      !completing || this.binding?.history === undefined,
      'a secondary binds once (a binding without history is completed once)',
    );
    this.binding = bindingOf(identity);
    this.out.push({ type: 'bind', binding: this.binding });
    this.log('info', completing ? 'primary-history-recorded' : 'primary-bound', {
      primarySite: this.binding.primarySite,
      generation: this.binding.generation,
    });
  }

  private sendWelcome(nowMs: number, connection: number): void {
    const state = this.connections.get(connection);
    if (!state || !this.inSession(state) || !this.session) return;
    if (!this.session.divergenceStated) {
      this.session.divergenceStated = true;
      this.sendDivergence(nowMs, connection);
    }
    this.send(nowMs, connection, {
      type: 'welcome',
      protocolVersion,
      sessionId: this.session.id,
      secondary: this.name,
      stored: this.store.stored,
      applied: this.store.applied,
      consistentStored: this.store.consistentStored,
    });
  }

  /**
   * A rejoined old primary states, before the first welcome of each session, the blocks it wrote
   * after the cycle it diverged from, until it stored the resync that makes its image the group's
   * again (docs/failover.md, "Failback").
   */
  private sendDivergence(nowMs: number, connection: number): void {
    const stated = this.session?.divergence;
    if (!this.demotedFrom || !stated || stated.runs.length === 0) return;
    // Its own writes stated alone: with the image consistent there are none left to replace.
    if (!stated.everyBlock && this.store.imageConsistent) return;
    // A consistent cycle after it is stored: the resync that replaces the divergence is, and is
    // being applied. The primary dropped that resync's bitmap; stated again, the divergence would
    // make it copy every block.
    if (this.store.consistentStored > this.demotedFrom.cycle) return;
    const perFrame = limits.divergenceExtentsPerFrameMax;
    for (let from = 0; from < stated.runs.length; from += perFrame)
      this.send(nowMs, connection, {
        type: 'divergence',
        cycle: this.demotedFrom.cycle,
        runs: stated.runs.slice(from, from + perFrame),
      });
  }

  private refuseHandshake(nowMs: number, connection: number, error: HandshakeError): void {
    this.log('error', 'primary-refused', { code: error.code, reason: error.message });
    this.refuseConnection(nowMs, connection, error.code, error.message);
    this.connections.delete(connection);
  }

  private refuseConnection(nowMs: number, connection: number, code: string, message: string): void {
    this.send(nowMs, connection, { type: 'error', code, message });
    this.out.push({ type: 'close', connection, reason: `${code}: ${message}` });
  }

  // ---- what the store tells ------------------------------------------------------------------

  /** A cycle is stored: the primary hears so, and connections that waited for it are welcomed. */
  onCycleStored(nowMs: number): void {
    this.reportProgress(nowMs);
    for (const connection of this.pendingWelcomes.splice(0)) this.sendWelcome(nowMs, connection);
  }

  onCycleApplied(nowMs: number): void {
    this.reportProgress(nowMs);
  }

  /** The next cycle is not what the primary said it sent: the session that brought it fails. */
  onCycleRefused(error: ProtocolError): void {
    this.fail(`${error.code}: ${error.message}`);
  }

  private reportProgress(nowMs: number): void {
    const connection = this.sessionConnection();
    if (connection !== undefined)
      this.send(nowMs, connection, {
        type: 'stored',
        stored: this.store.stored,
        applied: this.store.applied,
      });
  }

  /**
   * A planned switchover: taken only when everything up to the cycle is stored as a consistent
   * image and nothing beyond it; otherwise the primary hears why and goes on leading. The site may
   * still refuse it (its config cannot run a primary): the node answers that on `connection`.
   */
  private onSwitchover(nowMs: number, connection: number, frame: SwitchoverFrame): void {
    const { stored, consistentStored } = this.store;
    if (stored !== frame.cycle || consistentStored !== frame.cycle) {
      const message = `switchover at cycle ${frame.cycle} refused: this site stored ${stored}, consistent through ${consistentStored}`;
      this.log('warn', 'switchover-refused', { cycle: frame.cycle, stored, consistentStored });
      this.send(nowMs, connection, { type: 'error', code: 'switchover-refused', message });
      return;
    }
    this.log('warn', 'switchover-requested', { cycle: frame.cycle, generation: frame.generation });
    this.out.push({
      type: 'promotion-requested',
      connection,
      cycle: frame.cycle,
      generation: frame.generation,
    });
  }

  // ---- failure and heartbeats ----------------------------------------------------------------

  /** Any failure: close the session; the store deletes the entries of every cycle that is not stored. */
  private fail(reason: string): void {
    this.failures++;
    this.log('warn', 'link-failed', { reason, stored: this.store.stored, applied: this.store.applied });
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

  onTick(nowMs: number): void {
    for (const [connection, state] of this.connections) {
      if (nowMs - state.lastReceivedMs > this.timings.heartbeatMsTimeout) {
        this.connections.delete(connection);
        this.out.push({ type: 'close', connection, reason: 'heartbeat timeout' });
        if (this.inSession(state)) this.fail(`no frame for ${nowMs - state.lastReceivedMs} ms`);
        continue;
      }
      if (this.inSession(state) && nowMs - state.lastSentMs >= this.timings.heartbeatMsInterval) {
        this.send(nowMs, connection, { type: 'heartbeat', nonce: nowMs >>> 0 });
      }
    }
  }

  // ---- helpers -------------------------------------------------------------------------------

  private send(nowMs: number, connection: number, frame: Frame): void {
    const state = this.connections.get(connection);
    if (state) state.lastSentMs = nowMs;
    this.out.push({ type: 'send', connection, frame });
  }

  private sessionConnection(): number | undefined {
    if (!this.session) return undefined;
    for (const [connection, state] of this.connections)
      if (state.session === this.session.id) return connection;
    return undefined;
  }

  private log(level: LogEntry['level'], event: string, fields: LogEntry['fields']): void {
    this.out.push({ type: 'log', entry: { level, event, fields: { secondary: this.name, ...fields } } });
  }
}

/**
 * A demoted site follows only the primary that superseded it: one whose chain extends its own
 * right after the cycle its volumes hold. Any other (an older generation, a split brain, a primary
 * whose generation began elsewhere) would make its image a mix of two histories.
 */
function checkSupersedingPrimary(demoted: DemotedFrom, offered: PrimaryIdentity): void {
  const relation = compareHistories(offered.generations, demoted.generations);
  if (relation.relation === 'ahead' && relation.supersededAt === demoted.cycle + 1) return;
  // A split brain's loser that follows from cycle 0 takes any primary of the group's history with
  // a copy of every block; one that follows from its fork cycle only a primary of the same fork
  // (another one would refuse its stored number, or take it for cycles it never sent).
  const related = relation.relation === 'ahead' || relation.relation === 'diverged';
  if (demoted.acceptDiverged && related && demoted.cycle === 0) return;
  if (demoted.acceptDiverged && agreesThrough(offered.generations, demoted.generations, demoted.cycle))
    return;
  const mine = demoted.generations.at(-1);
  const follows = demoted.acceptDiverged
    ? `it gave up its own history (a split brain's resolution) and follows only a primary whose history forked from it right after cycle ${demoted.cycle}`
    : `it follows only a primary whose generation chain extends that one from cycle ${demoted.cycle + 1}`;
  throw new HandshakeError(
    'primary-mismatch',
    `this site was the primary of generation ${mine?.id} and holds its image at cycle ${demoted.cycle}; ${follows}; refused primary site ${offered.site} generation ${offered.generations.at(-1)?.id} (${describeRelation(relation)})`,
  );
}

function describeRelation(relation: HistoryRelation): string {
  if (relation.relation === 'ahead') return `superseded it at cycle ${relation.supersededAt}`;
  if (relation.relation === 'diverged')
    return `diverged: its history forked at cycle ${relation.myFirst.startedAt}, this one's at ${relation.theirFirst.startedAt}`;
  return relation.relation;
}

/**
 * What a demoted site states to the primary `offered` before its welcome: the blocks it wrote after
 * `demoted.cycle` when the primary's chain agrees with its own through that cycle (the image there
 * is the same on both sites), else every block (docs/failover.md, "Split brain"). The second case
 * is only reached by a split brain's loser (checkSupersedingPrimary lets no other such primary in):
 * the cycles it would be sent after its own cycle belong to another history, and only a copy of
 * every block in the same consistent unit makes them right.
 */
function divergenceFor(demoted: DemotedFrom, offered: PrimaryIdentity, shape: GroupShape): StatedDivergence {
  if (agreesThrough(offered.generations, demoted.generations, demoted.cycle))
    return { runs: demoted.divergence ?? [], everyBlock: false };
  const runs = shape.volumes.map((_, volume) => ({
    volume,
    block: 0,
    blockCount: volumeBlocks(shape, volume),
  }));
  return { runs, everyBlock: true };
}

/** The identity a hello states. */
function identityOfHello(hello: HelloFrame): PrimaryIdentity {
  return { site: hello.primarySite, generations: hello.generations };
}

/**
 * Throws HandshakeError unless a hello is of `group`, well-formed by the config's rules (names,
 * block size, sizes, a generation chain ending at its primary) and, when this site already holds
 * volumes, describes exactly `held`. A fresh secondary (held null) checks the same before it
 * creates any file from what the hello says.
 */
export function checkHello(hello: HelloFrame, group: string, held: GroupShape | null): void {
  if (hello.group !== group) {
    throw new HandshakeError(
      'group-mismatch',
      `group "${hello.group}" offered, this site is of group "${group}"`,
    );
  }
  const offered = { group: hello.group, blockBytes: hello.blockBytes, volumes: hello.volumes };
  checkShapeRules(offered);
  const chain = generationChainProblem(hello.primarySite, hello.generations);
  if (chain) throw new HandshakeError('hello-invalid', `hello: primary site ${hello.primarySite}: ${chain}`);
  if (held) checkSameShape(offered, held);
}
