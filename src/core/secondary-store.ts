/**
 * The cycles of a secondary. It journals the packets it receives per cycle, stores a cycle once it
 * holds exactly the packets the end-of-cycle frame names (count and digest), and applies stored
 * cycles strictly in order, each as a unit. When the session fails it deletes the entries of every
 * cycle that is not stored (the claim's "deleting journal entries in each secondary").
 *
 * Apply is redo-logged through the journal itself: a stored cycle's packets stay in the journal
 * until its `applied` marker is durable, so a crash during apply finishes the apply at restart.
 * While a cycle is being written to the volumes, the read path overlays its blocks, so a reader
 * never sees a half-applied cycle.
 *
 * Block data is not held in memory: once a packet's record is appended, the store keeps where its
 * bytes are (a reference to the record by its append sequence, fold.ts's BlockRef), and the node,
 * which knows where each appended record lies in the journal, reads them back where they are needed
 * (apply: `volume-write-from-journal`; the read path: overlay's references). So a resync that stages
 * gigabytes before it applies them costs the secondary references, not gigabytes.
 *
 * A resync's cycles are stored with `consistent: false` until its last copied chunk's cycle; how
 * they are applied is the site's `resync.staging` (types.ts ResyncStaging). `consistent`: they wait
 * in the journal and go with the next consistent cycle as one unit, so the journal's disk must hold
 * the whole resync; before it would fill, the store refuses more (StagingSpaceError, with the
 * numbers) and the image stays at its consistent cycle. `in-place`: each is applied alone as it is
 * stored, needing no room, and the image is no consistent cut until the next consistent cycle is
 * applied (`imageConsistent`, and the `applied` record says so, so a restart knows it too).
 *
 * The store knows nothing of connections: the session hands it the frames of cycles and tells it
 * of failures; it tells the session when a cycle is stored or applied (StoreEvents).
 */

import { addDigest, type DataFrame, type EndOfCycleFrame, packetDigest } from '../protocol/frames.ts';
import { assert } from './assert.ts';
import { ProtocolError, type StagingShortage, StagingSpaceError } from './errors.ts';
import { type BlockContent, FoldIndex, type JournalPiece, type Run } from './fold.ts';
import { limits } from './limits.ts';
import {
  type ExtentInJournal,
  extentInJournal,
  type ReplayedSecondaryRecord,
  type SecondaryRecord,
} from './records.ts';
import {
  type ActionSink,
  type CycleNumber,
  type Extent,
  type GroupShape,
  type LogEntry,
  type ResyncStaging,
  volumeBlocks,
} from './types.ts';

/** How the store takes a resync's cycles, and the room it keeps on the journal's disk meanwhile. */
export interface StagingPolicy {
  mode: ResyncStaging;
  /** Staging stops short of leaving less than this free (markers, site.json, other writes). */
  freeBytesMin: number;
}

/**
 * Bytes a packet's record takes beyond its data (journal frame header, record header): counted
 * against the free space measured, so an estimate between two measurements errs on the safe side.
 */
const packetRecordOverheadBytes = 64;

/** What the store asks of the journal and the volumes. */
export type StoreAction =
  /**
   * Append `record`; `seq` numbers the appends of this run, continuing the records replay was given
   * (the first replayed record is 1): references name a packet's record by it.
   */
  | { type: 'journal-append'; seq: number; record: SecondaryRecord }
  /** Make every record appended so far durable, then call onJournalSynced(upTo). */
  | { type: 'journal-sync'; upTo: number }
  /** Records of cycles up to `upTo` are applied durably and may go. */
  | { type: 'journal-release'; upTo: CycleNumber }
  | { type: 'volume-write'; extent: Extent }
  /**
   * Write each run's blocks with the bytes its pieces name, read back from the journal. The runs
   * are in the order their bytes lie in the journal, at most packetBytesMax of them: read together.
   */
  | { type: 'volume-write-from-journal'; runs: JournaledRun[] }
  /** Make every volume write so far durable, then call onVolumesSynced(token). */
  | { type: 'volume-sync'; token: number }
  /**
   * Call onApplyStep soon, after other events had their turn: an apply goes on in steps of at most
   * applyStepBlocksMax blocks, so a cycle of a gigabyte never holds the event loop for seconds.
   */
  | { type: 'apply-step' }
  | { type: 'log'; entry: LogEntry };

/** What the store tells the session side of its secondary. */
export interface StoreEvents {
  /** A cycle is stored: the primary may hear so, and welcomes held back for it may go. */
  onCycleStored(nowMs: number): void;
  /** A cycle is applied durably: the primary may hear so. */
  onCycleApplied(nowMs: number): void;
  /** The next complete cycle, checked once the one before it was stored, is not what was sent. */
  onCycleRefused(nowMs: number, error: ProtocolError): void;
}

/** A received packet without its payload, which is in the journal from its append on. */
interface ReceivedPacket extends ExtentInJournal {
  packetIndex: number;
  /** The append that journaled it: the fold's references name it. */
  seq: number;
}

interface ReceivingCycle {
  packets: Map<number, ReceivedPacket>;
  /** Block data of its packets, in the journal. */
  bytes: number;
  end: EndOfCycleFrame | null;
  digest: number;
  /** The session that delivered these packets; entries of an older session must not survive it. */
  session: number;
}

/**
 * A stored cycle: its packets, in packet order, as where their data lies. Folded only when it is
 * applied, in steps: a list of packets costs far less memory than a fold of their blocks.
 */
interface StoredCycle {
  cycle: CycleNumber;
  coversFrom: CycleNumber;
  /** False for a resync's cycles before its last copied chunk: applied only with a later one. */
  consistent: boolean;
  packets: ReceivedPacket[];
  /** Block data of its packets, in the journal. */
  bytes: number;
}

/** Stored cycles applied together: from the image at coversFrom-1 straight to the image at `cycle`. */
interface ApplyUnit {
  cycle: CycleNumber;
  coversFrom: CycleNumber;
  /** Whether the image after it is a consistent cut (false only for an in-place resync's cycle). */
  consistent: boolean;
  /** The cycles, oldest first: folded in this order, later ones win. */
  chain: StoredCycle[];
}

/**
 * The unit being applied. `folding`: its fold is being built, the read path still shows the cycle
 * before; `volumes`: the fold is the read path's overlay and its writes go out (then the volume
 * sync, `wait` its token); `marker`: the applied record is on its way (`wait` its append).
 */
interface Applying extends ApplyUnit {
  phase: 'folding' | 'volumes' | 'marker';
  fold: FoldIndex | null;
  wait: number;
  /** The apply's remaining steps; null once every volume write and the volume sync went out. */
  steps: Generator<void, void> | null;
}

export class SecondaryStore {
  /** Every cycle up to this is complete and durable here. */
  stored: CycleNumber = 0;
  /** The read path shows the image at the end of this cycle. */
  applied: CycleNumber = 0;
  /** The volumes durably hold this cycle (the `applied` marker is in the journal). */
  appliedDurable: CycleNumber = 0;
  /** A counter for the simulator's report. */
  recoveryCyclesApplied = 0;
  /** Whether the image the read path shows (`applied`) is a consistent cut. */
  imageConsistent = true;
  /** Units this run put in the read path whose image is not consistent (the simulator's oracle). */
  inconsistentUnitsShown = 0;
  /** Whether the image the volumes durably hold (`appliedDurable`) is a consistent cut. */
  private appliedDurableConsistent = true;
  /** The newest applied cycle whose image was consistent: what a welcome states in an in-place resync. */
  private consistentDurable: CycleNumber = 0;
  /** The last refusal to stage, until a staged packet fits again or a unit is applied. */
  stagingShortage: StagingShortage | null = null;
  /** Block data of the stored cycles not applied durably yet (all of a staged resync). */
  private storedBytes = 0;
  /** Whether the newest stored cycle is consistent: when not, a resync is being staged. */
  private newestStoredConsistent = true;
  /** The disk's free bytes as last measured, and the bytes appended since: null until measured. */
  private diskFree: { measuredBytes: number; appendedBytes: number } | null = null;
  private receiving = new Map<CycleNumber, ReceivingCycle>();
  private readonly storedCycles = new Map<CycleNumber, StoredCycle>();
  private storing: (StoredCycle & { seq: number }) | null = null;
  private applying: Applying | null = null;
  private appendSeq = 0;
  private durableSeq = 0;
  private syncRequestedSeq = 0;
  private volumeSyncs = 0;

  constructor(
    private readonly name: string,
    private readonly shape: GroupShape,
    private readonly out: ActionSink<StoreAction>,
    private readonly events: StoreEvents,
    private readonly staging: StagingPolicy,
  ) {}

  /**
   * Rebuilds the cycles from the journal after a restart; resumeApply finishes an interrupted apply.
   * The records are numbered 1, 2, 3, ... in the order given, and appends go on from there: the
   * folds keep references by these numbers, never the packets' bytes (which may be left on disk).
   */
  replay(records: Iterable<ReplayedSecondaryRecord>): void {
    const buffers = new Map<CycleNumber, { packetIndex: number; seq: number; extent: ExtentInJournal }[]>();
    for (const record of records) {
      const seq = ++this.appendSeq;
      switch (record.kind) {
        case 'packet': {
          const extents = buffers.get(record.cycle) ?? [];
          extents.push({ packetIndex: record.packetIndex, seq, extent: extentInJournal(record.extent) });
          buffers.set(record.cycle, extents);
          break;
        }
        case 'stored': {
          const packets = (buffers.get(record.cycle) ?? []).map(
            ({ packetIndex, seq: packetSeq, extent }) => ({
              ...extent,
              packetIndex,
              seq: packetSeq,
            }),
          );
          buffers.delete(record.cycle);
          this.storedCycles.set(record.cycle, {
            cycle: record.cycle,
            coversFrom: record.coversFrom,
            consistent: record.consistent,
            packets: inPacketOrder(packets),
            bytes: payloadBytesOf(packets, this.shape.blockBytes),
          });
          this.stored = Math.max(this.stored, record.cycle);
          break;
        }
        case 'discard':
          buffers.clear();
          break;
        case 'applied':
          this.replayApplied(record.cycle, record.consistent);
          break;
      }
    }
    // Records of applied cycles may have been released; the applied marker vouches for them.
    this.stored = Math.max(this.stored, this.appliedDurable);
    for (const cycle of [...this.storedCycles.keys()]) {
      if (cycle <= this.appliedDurable) this.storedCycles.delete(cycle);
    }
    this.storedBytes = 0;
    for (const cycle of this.storedCycles.values()) this.storedBytes += cycle.bytes;
    this.newestStoredConsistent = this.storedCycles.get(this.stored)?.consistent ?? true;
    this.applied = this.appliedDurable;
    this.imageConsistent = this.appliedDurableConsistent;
    this.durableSeq = this.appendSeq;
    this.syncRequestedSeq = this.appendSeq;
    // A restart is a failure: packets of cycles that were not stored (left in buffers) are void.
  }

  /** An applied marker: the newest says what the volumes hold; consistent ones, the last consistent cut. */
  private replayApplied(cycle: CycleNumber, consistent: boolean): void {
    if (cycle >= this.appliedDurable) {
      this.appliedDurable = cycle;
      this.appliedDurableConsistent = consistent;
    }
    if (consistent) this.consistentDurable = Math.max(this.consistentDurable, cycle);
  }

  /**
   * What a new journal segment restates first: the applied marker, and when the image is not
   * consistent, the newest consistent one before it (the welcome states it).
   */
  checkpoint(): SecondaryRecord[] {
    // An applied marker appended but not yet durable comes before this checkpoint in the journal,
    // and a segment is durable before the next one starts: the checkpoint restates it. Restating
    // only what was durable let the release that follows the marker delete the older segment (the
    // cycle's records and the marker) and leave a journal saying the cycle was never applied.
    const marker = this.applying?.phase === 'marker' ? this.applying : null;
    const cycle = marker ? marker.cycle : this.appliedDurable;
    const consistent = marker ? marker.consistent : this.appliedDurableConsistent;
    const applied: SecondaryRecord = { kind: 'applied', cycle, consistent };
    if (consistent) return [applied];
    return [{ kind: 'applied', cycle: this.consistentDurable, consistent: true }, applied];
  }

  /** Starts the apply a restart interrupted, if any. */
  resumeApply(): void {
    this.tryApply();
  }

  /** A stored record is on its way to disk: the stored number is about to move. */
  get storeInFlight(): boolean {
    return this.storing !== null;
  }

  // ---- receiving -----------------------------------------------------------------------------

  /** A packet of a cycle, delivered in session `session`; throws ProtocolError when it does not fit. */
  onData(frame: DataFrame, session: number): void {
    this.checkCycleNumber(frame.cycle, 'data');
    this.checkExtent(frame);
    const cycle = this.receivingCycle(frame.cycle, session);
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
    const payloadBytes = frame.zero ? 0 : frame.payload.length;
    this.checkStagingRoom(payloadBytes);
    cycle.digest = addDigest(cycle.digest, packetDigest(frame));
    cycle.bytes += payloadBytes;
    if (this.diskFree) this.diskFree.appendedBytes += payloadBytes + packetRecordOverheadBytes;
    const extent = { volume: frame.volume, block: frame.block, blockCount: frame.blockCount };
    const seq = this.append({
      kind: 'packet',
      cycle: frame.cycle,
      packetIndex: frame.packetIndex,
      extent: { ...extent, data: frame.zero ? null : frame.payload },
    });
    // From here on the payload is the journal's: only where it went is kept.
    cycle.packets.set(frame.packetIndex, {
      ...extent,
      zero: frame.zero,
      packetIndex: frame.packetIndex,
      seq,
    });
    this.tryStore();
  }

  /** The end of a cycle, delivered in session `session`; throws ProtocolError when it does not fit. */
  onEndOfCycle(frame: EndOfCycleFrame, session: number): void {
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
    const cycle = this.receivingCycle(frame.cycle, session);
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
    const blocks = volumeBlocks(this.shape, frame.volume);
    const payloadBytes = frame.zero ? 0 : frame.blockCount * this.shape.blockBytes;
    if (
      frame.volume >= this.shape.volumes.length ||
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

  private receivingCycle(number: CycleNumber, session: number): ReceivingCycle {
    let cycle = this.receiving.get(number);
    if (!cycle) {
      cycle = { packets: new Map(), bytes: 0, end: null, digest: 0, session };
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
      if (cycle.packets.size < end.packetCount) return;
      if (cycle.digest !== end.digest) {
        throw new ProtocolError(
          'cycle-digest-mismatch',
          `cycle ${number}: digest of received packets differs`,
        );
      }
      const packets = inPacketOrder([...cycle.packets.values()]);
      this.receiving.delete(number);
      const seq = this.append({
        kind: 'stored',
        cycle: number,
        coversFrom: end.coversFrom,
        consistent: end.consistent,
      });
      this.storing = {
        cycle: number,
        coversFrom: end.coversFrom,
        consistent: end.consistent,
        packets,
        bytes: cycle.bytes,
        seq,
      };
      this.requestSync(seq);
      return;
    }
  }

  // ---- storage completions -------------------------------------------------------------------

  onJournalSynced(nowMs: number, upTo: number): void {
    this.durableSeq = Math.max(this.durableSeq, upTo);
    if (this.storing && this.durableSeq >= this.storing.seq) this.onStored(nowMs);
    if (this.applying?.phase === 'marker' && this.durableSeq >= this.applying.wait) this.onApplied(nowMs);
  }

  private onStored(nowMs: number): void {
    const storing = this.storing;
    assert(storing, 'a cycle was being stored');
    assert(storing.coversFrom === this.stored + 1, 'cycles are stored in order');
    this.storing = null;
    this.stored = storing.cycle;
    this.storedCycles.set(storing.cycle, storing);
    this.storedBytes += storing.bytes;
    this.newestStoredConsistent = storing.consistent;
    this.log('debug', 'cycle-stored', {
      cycle: storing.cycle,
      coversFrom: storing.coversFrom,
      consistent: storing.consistent,
    });
    this.events.onCycleStored(nowMs);
    try {
      this.tryStore();
    } catch (error) {
      if (!(error instanceof ProtocolError)) throw error;
      this.events.onCycleRefused(nowMs, error);
    }
    this.tryApply();
  }

  /** Applies the next unit of stored cycles, whole: the read path shows it from the first volume write on. */
  private tryApply(): void {
    if (this.applying) return;
    const next = this.nextUnit();
    if (!next) return;
    this.applying = { ...next, phase: 'folding', fold: null, wait: 0, steps: null };
    this.applying.steps = this.applySteps(this.applying);
    this.onApplyStep();
  }

  /** The next step of the apply under way, if it has steps left (the node calls it on `apply-step`). */
  onApplyStep(): void {
    const steps = this.applying?.steps;
    if (!steps) return;
    if (steps.next().done) (this.applying as Applying).steps = null;
    else this.out.push({ type: 'apply-step' });
  }

  /**
   * The apply of `next` as steps of at most applyStepBlocksMax blocks each: fold its cycles, then
   * (the read path showing the unit from here on) write its runs, then sync the volumes.
   */
  private *applySteps(applying: Applying): Generator<void, void> {
    const next = applying;
    const fold = new FoldIndex(this.shape.blockBytes);
    let blocks = 0;
    for (const cycle of next.chain) {
      for (const packet of cycle.packets) {
        fold.addJournaled(packet, packet.seq);
        blocks += packet.blockCount;
        if (blocks >= limits.applyStepBlocksMax) {
          blocks = 0;
          yield;
        }
      }
    }
    applying.fold = fold;
    applying.phase = 'volumes';
    this.applied = next.cycle;
    this.onImageMoved(next);
    if (next.coversFrom < next.cycle) this.recoveryCyclesApplied++;
    const runs = fold.runs(limits.packetBytesMax);
    for (const run of runs) {
      if (run.journaled) continue;
      this.out.push({ type: 'volume-write', extent: fold.extentOf(run) });
      blocks += run.blockCount;
      if (blocks >= limits.applyStepBlocksMax) {
        blocks = 0;
        yield;
      }
    }
    // In journal order, a read's worth at a time: block order would read scattered writes back
    // one record per read.
    for (const group of journalOrderGroups(
      fold,
      runs,
      Math.floor(limits.packetBytesMax / this.shape.blockBytes),
    )) {
      this.out.push({ type: 'volume-write-from-journal', runs: group });
      blocks += group.reduce((sum, run) => sum + run.blockCount, 0);
      if (blocks >= limits.applyStepBlocksMax) {
        blocks = 0;
        yield;
      }
    }
    applying.wait = ++this.volumeSyncs;
    this.out.push({ type: 'volume-sync', token: applying.wait });
  }

  /** The read path shows `unit` from now on: say so when its image is, or stops being, a consistent cut. */
  private onImageMoved(unit: ApplyUnit): void {
    const was = this.imageConsistent;
    this.imageConsistent = unit.consistent;
    if (!unit.consistent) this.inconsistentUnitsShown++;
    if (was && !unit.consistent) {
      this.log('warn', 'image-inconsistent', {
        cycle: unit.cycle,
        coversFrom: unit.coversFrom,
        reason:
          'resync.staging is in-place: a resync cycle is applied on its own; the exposed image is not a consistent cut until the resync ends',
      });
    } else if (!was && unit.consistent) {
      this.log('info', 'image-consistent', { cycle: unit.cycle, coversFrom: unit.coversFrom });
    }
  }

  /** Whether `cycle` ends a unit: a consistent cycle always; any cycle when resyncs apply in place. */
  private endsUnit(cycle: StoredCycle): boolean {
    return cycle.consistent || this.staging.mode === 'in-place';
  }

  /** The stored cycles by the cycle each covers from: each continues the one before it. */
  private storedByFrom(): Map<CycleNumber, StoredCycle> {
    const byFrom = new Map<CycleNumber, StoredCycle>();
    for (const cycle of this.storedCycles.values()) byFrom.set(cycle.coversFrom, cycle);
    return byFrom;
  }

  /**
   * The newest cycle the stored cycles can bring the volumes to: the last one ending a unit chained
   * from appliedDurable. With consistent staging a resync's cycles after its last consistent one
   * wait for the primary's next ones, so an apply may never reach `stored` while it is unfinished.
   */
  get applicableThrough(): CycleNumber {
    const byFrom = this.storedByFrom();
    let reach = this.appliedDurable;
    for (let cycle = byFrom.get(reach + 1); cycle; cycle = byFrom.get(cycle.cycle + 1)) {
      if (this.endsUnit(cycle)) reach = cycle.cycle;
    }
    return reach;
  }

  /**
   * The newest cycle this site holds a consistent image of, stored or applied: the welcome's
   * `consistentStored`. Below `stored` while a resync is unfinished, whichever the staging: the
   * primary then knows only its bitmap (or a copy of everything) can finish it.
   */
  get consistentStored(): CycleNumber {
    const byFrom = this.storedByFrom();
    let reach = this.appliedDurableConsistent ? this.appliedDurable : this.consistentDurable;
    for (let cycle = byFrom.get(this.appliedDurable + 1); cycle; cycle = byFrom.get(cycle.cycle + 1)) {
      if (cycle.consistent) reach = cycle.cycle;
    }
    return reach;
  }

  /**
   * The stored cycles from applied+1 up to the first that ends a unit, merged in order (later cycles
   * win); null while that cycle is not stored yet (a resync staged and still under way).
   */
  private nextUnit(): ApplyUnit | null {
    const byFrom = this.storedByFrom();
    const chain: StoredCycle[] = [];
    let from = this.applied + 1;
    for (;;) {
      const cycle = byFrom.get(from);
      if (!cycle) return null;
      chain.push(cycle);
      if (this.endsUnit(cycle)) break;
      from = cycle.cycle + 1;
    }
    const last = chain[chain.length - 1] as StoredCycle;
    const first = chain[0] as StoredCycle;
    return { cycle: last.cycle, coversFrom: first.coversFrom, consistent: last.consistent, chain };
  }

  onVolumesSynced(token: number): void {
    if (this.applying?.phase === 'volumes' && this.applying.steps === null && this.applying.wait === token) {
      const seq = this.append({
        kind: 'applied',
        cycle: this.applying.cycle,
        consistent: this.applying.consistent,
      });
      this.applying.phase = 'marker';
      this.applying.wait = seq;
      this.requestSync(seq);
    }
  }

  private onApplied(nowMs: number): void {
    const applying = this.applying;
    assert(applying, 'a cycle was being applied');
    this.applying = null;
    this.appliedDurable = applying.cycle;
    this.appliedDurableConsistent = applying.consistent;
    if (applying.consistent) this.consistentDurable = applying.cycle;
    for (const cycle of applying.chain) {
      this.storedCycles.delete(cycle.cycle);
      this.storedBytes -= cycle.bytes;
    }
    // What was staged is applied: a shortage reported before is history.
    this.stagingShortage = null;
    this.out.push({ type: 'journal-release', upTo: applying.cycle });
    this.events.onCycleApplied(nowMs);
    this.tryApply();
  }

  /**
   * Bytes of block data the store holds in memory: none, since stored cycles are lists of where
   * their packets lie and the fold of the unit being applied keeps references.
   */
  get payloadBytesInMemory(): number {
    return this.applying?.fold?.payloadBytesInMemory ?? 0;
  }

  /**
   * The read path: a block of the cycle being applied (its bytes, null for zeroes, or a reference
   * into the journal), or undefined to read the volume.
   */
  overlay(volume: number, block: number): BlockContent | undefined {
    return this.applying?.fold?.content(volume, block);
  }

  // ---- room to stage a resync ----------------------------------------------------------------

  /** The journal's disk has `freeBytes` free now (measured by the node, less what it has queued). */
  onDiskSpace(freeBytes: number): void {
    assert(Number.isFinite(freeBytes), 'free bytes are a number');
    this.diskFree = { measuredBytes: freeBytes, appendedBytes: 0 };
  }

  /** Block data staged: stored cycles not applied yet and the cycles arriving. */
  get stagedBytes(): number {
    let bytes = this.storedBytes + (this.storing?.bytes ?? 0);
    for (const cycle of this.receiving.values()) bytes += cycle.bytes;
    return bytes;
  }

  /** The disk's free bytes as last measured less what was appended since; null until measured. */
  get diskFreeBytes(): number | null {
    return this.diskFree ? this.diskFree.measuredBytes - this.diskFree.appendedBytes : null;
  }

  /**
   * Refuses a packet of `payloadBytes` while a resync is staged (its newest stored cycle is not
   * consistent, so nothing of it can be applied and released) when it would leave less than
   * freeBytesMin free: the disk must not fill with half a resync. Cycles of an ordinary stream are
   * applied and released as they come, and an in-place resync stages nothing, so neither is held.
   */
  private checkStagingRoom(payloadBytes: number): void {
    const free = this.diskFreeBytes;
    if (this.staging.mode !== 'consistent' || this.newestStoredConsistent || free === null) return;
    if (free - payloadBytes - packetRecordOverheadBytes >= this.staging.freeBytesMin) {
      this.stagingShortage = null;
      return;
    }
    const shortage: StagingShortage = {
      applied: this.applied,
      stored: this.stored,
      stagedBytes: this.stagedBytes,
      freeBytes: free,
      freeBytesMin: this.staging.freeBytesMin,
      volumeBytes: this.shape.volumes.reduce((sum, volume) => sum + volume.sizeBytes, 0),
    };
    this.stagingShortage = shortage;
    throw new StagingSpaceError(shortage, shortageMessage(shortage));
  }

  // ---- failure -------------------------------------------------------------------------------

  /**
   * The session failed: delete the entries of every cycle that is not stored. A cycle whose stored
   * record is already on its way to disk is complete and stays.
   */
  onSessionFailed(): void {
    const dropped = this.receiving.size;
    this.receiving = new Map();
    this.append({ kind: 'discard', stored: this.stored });
    if (dropped > 0) this.log('info', 'incomplete-cycles-deleted', { cycles: dropped, stored: this.stored });
  }

  // ---- helpers -------------------------------------------------------------------------------

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
    this.out.push({ type: 'log', entry: { level, event, fields: { secondary: this.name, ...fields } } });
  }

  /** What the simulator's checkers read: the cycles buffered and the session each came from. */
  receivingCycles(): { cycle: CycleNumber; session: number; packets: number }[] {
    return [...this.receiving].map(([cycle, entry]) => ({
      cycle,
      session: entry.session,
      packets: entry.packets.size,
    }));
  }
}

/** Bytes for a message: MiB with one decimal, exact below one. */
function mebibytes(bytes: number): string {
  return bytes < 1024 * 1024 ? `${bytes} bytes` : `${(bytes / (1024 * 1024)).toFixed(1)} MiB`;
}

/** What the primary is told, and the log says: the numbers, the image kept, the two ways out. */
function shortageMessage(shortage: StagingShortage): string {
  const { applied, stored, stagedBytes, freeBytes, freeBytesMin, volumeBytes } = shortage;
  return (
    `no room to stage the resync: ${mebibytes(stagedBytes)} staged (cycles ${applied + 1}..${stored} stored ` +
    `and not applied, and those arriving), ${mebibytes(Math.max(0, freeBytes))} free on the secondary's ` +
    `journal disk, ${mebibytes(freeBytesMin)} kept free; the resync may need up to ${mebibytes(volumeBytes)} ` +
    `(the volumes' size) plus the cycles written meanwhile. The secondary's image stays consistent at cycle ` +
    `${applied}. Free room on its journal disk, or set resync.staging: in-place on it (its image is then ` +
    'not consistent until the resync ends)'
  );
}

/** Block data of packets, in bytes (zero runs carry none). */
function payloadBytesOf(packets: readonly ExtentInJournal[], blockBytes: number): number {
  let bytes = 0;
  for (const packet of packets) if (!packet.zero) bytes += packet.blockCount * blockBytes;
  return bytes;
}

function inPacketOrder(packets: ReceivedPacket[]): ReceivedPacket[] {
  return packets.sort((a, b) => a.packetIndex - b.packetIndex);
}

/** A run of blocks whose bytes are in the journal, as the pieces of the records holding them. */
export interface JournaledRun {
  volume: number;
  block: number;
  blockCount: number;
  pieces: JournalPiece[];
}

/** The fold's journaled runs in journal order, in groups of at most `blocksMax` blocks (one alone may be more). */
function journalOrderGroups(fold: FoldIndex, runs: readonly Run[], blocksMax: number): JournaledRun[][] {
  const journaled = runs.filter((run) => run.journaled);
  const keys = new Map(journaled.map((run) => [run, fold.firstRef(run) as number]));
  journaled.sort((a, b) => (keys.get(a) as number) - (keys.get(b) as number));
  const groups: JournaledRun[][] = [];
  let group: JournaledRun[] = [];
  let blocks = 0;
  for (const run of journaled) {
    if (group.length > 0 && blocks + run.blockCount > blocksMax) {
      groups.push(group);
      group = [];
      blocks = 0;
    }
    const { volume, block, blockCount } = run;
    group.push({ volume, block, blockCount, pieces: fold.journaledPieces(run) });
    blocks += blockCount;
  }
  if (group.length > 0) groups.push(group);
  return groups;
}
