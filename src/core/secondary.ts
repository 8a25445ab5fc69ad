/**
 * A secondary site: SecondarySession (secondary-session.ts) follows one primary, session by
 * session, and SecondaryStore (secondary-store.ts) journals, stores and applies its cycles. Both
 * push onto this machine's one list of actions, which each handler returns (docs/core.md).
 */

import type { Frame } from '../protocol/frames.ts';
import { assert } from './assert.ts';
import type { ProtocolError, StagingShortage } from './errors.ts';
import type { BlockContent } from './fold.ts';
import { agreesThrough, type Binding, type Generation } from './identity.ts';
import { checkLinkTimings, type LinkTimings, limits } from './limits.ts';
import type { ReplayedSecondaryRecord, SecondaryRecord } from './records.ts';
import { checkHello, type DemotedFrom, SecondarySession, type SessionAction } from './secondary-session.ts';
import { SecondaryStore, type StagingPolicy, type StoreAction } from './secondary-store.ts';
import type { CycleNumber, GroupShape } from './types.ts';

// The node checks a hello before it creates volumes from it, so the check is part of this API.
export { checkHello };

export interface SecondaryConfig {
  name: string;
  shape: GroupShape;
  timings: LinkTimings;
  /** The primary site and generation this secondary follows (site.json), or null: not bound yet. */
  binding?: Binding | null;
  /** How a resync is taken (docs/resync.md); by default staged whole and applied as one unit. */
  staging?: StagingPolicy;
  /** Set when this site was a primary: until bound, only the primary that superseded it is followed. */
  demotedFrom?: DemotedFrom | null;
}

export const defaultStaging: StagingPolicy = { mode: 'consistent', freeBytesMin: limits.stagingFreeBytesMin };

export type SecondaryAction = SessionAction | StoreAction;

export class Secondary {
  private readonly out: SecondaryAction[] = [];
  private readonly store: SecondaryStore;
  private readonly session: SecondarySession;
  private readonly demotedFrom: DemotedFrom | null;
  /** Whether the bound primary's chain agrees with a split brain loser's (showsGivenUpHistory). */
  private boundAgreement: { history: readonly Generation[]; agrees: boolean } | null = null;

  constructor(config: SecondaryConfig) {
    const problems = checkLinkTimings(config.timings);
    assert(problems.length === 0, problems.join('; '));
    this.demotedFrom = config.demotedFrom ?? null;
    this.store = new SecondaryStore(
      config.name,
      config.shape,
      this.out,
      {
        onCycleStored: (nowMs) => this.session.onCycleStored(nowMs),
        onCycleApplied: (nowMs) => this.session.onCycleApplied(nowMs),
        onCycleRefused: (_nowMs, error) => this.session.onCycleRefused(error),
      },
      config.staging ?? defaultStaging,
    );
    this.session = new SecondarySession(
      config.name,
      config.shape,
      config.timings,
      config.binding ?? null,
      this.store,
      this.out,
      config.demotedFrom ?? null,
    );
  }

  /**
   * Rebuilds a secondary from its journal after a restart; start() then resumes an unfinished apply.
   * The records are numbered 1, 2, 3, ... in the order given (packets' data may be left on disk),
   * and the appends of this run go on from there: references into the journal use these numbers.
   */
  static recover(config: SecondaryConfig, records: Iterable<ReplayedSecondaryRecord>): Secondary {
    const secondary = new Secondary(config);
    secondary.store.replay(records);
    return secondary;
  }

  /** Starts the unfinished apply, if any; call once after construction or recovery. */
  start(): SecondaryAction[] {
    this.store.resumeApply();
    return this.takeActions();
  }

  // ---- connections (the session) -------------------------------------------------------------

  onConnectionOpened(nowMs: number, connection: number): SecondaryAction[] {
    this.session.onConnectionOpened(nowMs, connection);
    return this.takeActions();
  }

  onConnectionLost(_nowMs: number, connection: number, reason: string): SecondaryAction[] {
    this.session.onConnectionLost(connection, reason);
    return this.takeActions();
  }

  /** The connection's bytes did not decode: tell the peer, close, and fail the session it is in. */
  onProtocolError(nowMs: number, connection: number, error: ProtocolError): SecondaryAction[] {
    this.session.onProtocolError(nowMs, connection, error);
    return this.takeActions();
  }

  /** Bytes arrived on a connection (whole frames or not): the primary is alive. */
  onBytesReceived(nowMs: number, connection: number): void {
    this.session.onBytesReceived(nowMs, connection);
  }

  onFrame(nowMs: number, connection: number, frame: Frame): SecondaryAction[] {
    this.session.onFrame(nowMs, connection, frame);
    return this.takeActions();
  }

  onTick(nowMs: number): SecondaryAction[] {
    this.session.onTick(nowMs);
    return this.takeActions();
  }

  // ---- storage completions (the store) -------------------------------------------------------

  /**
   * The journal's disk has `freeBytes` free now (the node measures it every tick, less what it has
   * queued and not written): a resync staged stops short of filling it.
   */
  onDiskSpace(_nowMs: number, freeBytes: number): void {
    this.store.onDiskSpace(freeBytes);
  }

  onJournalSynced(nowMs: number, upTo: number): SecondaryAction[] {
    this.store.onJournalSynced(nowMs, upTo);
    return this.takeActions();
  }

  /** The next step of the apply under way (asked for by an `apply-step` action). */
  onApplyStep(_nowMs: number): SecondaryAction[] {
    this.store.onApplyStep();
    return this.takeActions();
  }

  onVolumesSynced(_nowMs: number, token: number): SecondaryAction[] {
    this.store.onVolumesSynced(token);
    return this.takeActions();
  }

  /** Every action since the last handler returned: each handler hands back what it caused. */
  private takeActions(): SecondaryAction[] {
    return this.out.splice(0);
  }

  // ---- observation ---------------------------------------------------------------------------

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

  /** The newest cycle an apply can reach with what is stored (below `stored` during a resync). */
  get applicableThrough(): CycleNumber {
    return this.store.applicableThrough;
  }

  /**
   * Whether the image the read path shows is a consistent cut of the followed primary's history:
   * false from an in-place resync's first cycle applied until its consistent cycle is (never false
   * with consistent staging), and while a split brain's loser shows its own history's image.
   */
  get imageConsistent(): boolean {
    return this.store.imageConsistent && !this.showsGivenUpHistory;
  }

  /**
   * A split brain's loser (demotedFrom.acceptDiverged) shows its own history's image until it
   * applies something of the primary it follows. That image is a cut of the survivor's history only
   * when the survivor's chain agrees with its own through its cycle (agreesThrough), which is known
   * once it is bound; until then it is not claimed (docs/failover.md, "Split brain").
   */
  get showsGivenUpHistory(): boolean {
    const demoted = this.demotedFrom;
    if (!demoted?.acceptDiverged || this.store.applied > demoted.cycle) return false;
    const history = this.session.boundTo?.history;
    if (!history) return true;
    // Asked at every read and status: the chains are compared once per binding.
    if (this.boundAgreement?.history !== history)
      this.boundAgreement = { history, agrees: agreesThrough(history, demoted.generations, demoted.cycle) };
    return !this.boundAgreement.agrees;
  }

  /** Units this run put in the read path whose image is not consistent (the simulator's oracle). */
  get inconsistentUnitsShown(): number {
    return this.store.inconsistentUnitsShown;
  }

  /** Block data staged in the journal (stored, not applied; and arriving). */
  get stagedBytes(): number {
    return this.store.stagedBytes;
  }

  /** The journal disk's free bytes as last measured, less what was appended since; null: not measured. */
  get diskFreeBytes(): number | null {
    return this.store.diskFreeBytes;
  }

  /** The last refusal to stage more of a resync, until staging fits again or the unit is applied. */
  get stagingShortage(): StagingShortage | null {
    return this.store.stagingShortage;
  }

  /** The records a new journal segment starts with: the applied markers. */
  checkpoint(): SecondaryRecord[] {
    return this.store.checkpoint();
  }

  /** Bytes of block data held in memory by the stored and applying cycles (references hold none). */
  get payloadBytesInMemory(): number {
    return this.store.payloadBytesInMemory;
  }

  /**
   * The read path: a block of the cycle being applied (bytes, null for zeroes, or a reference into
   * the journal), or undefined to read the volume.
   */
  overlay(volume: number, block: number): BlockContent | undefined {
    return this.store.overlay(volume, block);
  }

  /** The primary site and generation followed, or null before the first accepted hello. */
  get boundTo(): Binding | null {
    return this.session.boundTo;
  }

  /** Counters for the simulator's report. */
  get failures(): number {
    return this.session.failures;
  }

  get recoveryCyclesApplied(): number {
    return this.store.recoveryCyclesApplied;
  }

  /** What the simulator's checkers read: cycles buffered and the session they came from. */
  inspect(): {
    session: number | null;
    receiving: { cycle: CycleNumber; session: number; packets: number }[];
  } {
    return { session: this.session.sessionId, receiving: this.store.receivingCycles() };
  }
}
