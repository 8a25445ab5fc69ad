/**
 * One link's tracking mode and resync (docs/resync.md). While the secondary is away, a persisted
 * changed-block bitmap stands in for the journal entries it has not stored, so the journal can be
 * collected past it. When it is back, the bitmap's chunks are read from the primary's image, each
 * read inside one capture cycle and sent in that cycle before the cycle's own writes, and the
 * cycles of the resync are marked inconsistent until the last chunk's cycle: the secondary applies
 * them as one unit.
 */
import { assert } from './assert.ts';
import { ChangedBlocks, type ChunkRun, type TrackingState } from './changed-blocks.ts';
import { FoldIndex } from './fold.ts';
import { ProgressRate, type ProgressRateConfig, resyncRateConfig } from './progress-rate.ts';
import type { ActionSink, CycleNumber, Extent, GroupShape, LogEntry } from './types.ts';
import { volumeBlocks } from './types.ts';

export interface TrackingConfig {
  /** Links holding the journal's floor switch to tracking when it holds this many bytes. */
  journalBytesHigh: number;
  /** A link away this long switches to tracking (Infinity: never for this reason). */
  awayMsMax: number;
  /** Blocks per bit of the bitmap. */
  chunkBlocks: number;
  /** Blocks one copy read covers at most. */
  copyReadBlocksMax: number;
  /** Bytes of copy read but not yet stored by the secondary. */
  copyWindowBytes: number;
  /** A bitmap with chunks cleared is saved again at most this often. */
  saveMsMin: number;
  /** How the status measures the copy's rate (and so its ETA). */
  copyRate: ProgressRateConfig;
}

export const trackingNever: TrackingConfig = {
  journalBytesHigh: Number.POSITIVE_INFINITY,
  awayMsMax: Number.POSITIVE_INFINITY,
  chunkBlocks: 16,
  copyReadBlocksMax: 256,
  copyWindowBytes: 64 * 1024 * 1024,
  saveMsMin: 5000,
  copyRate: resyncRateConfig,
};

export type TrackingRequest =
  /** Write the bitmap durably, then call onTrackingSaved(link, token). */
  | { type: 'tracking-save'; link: string; token: number; state: TrackingState }
  /** The resync ended: the bitmap file may go (one that survives only causes a needless copy). */
  | { type: 'tracking-drop'; link: string }
  /** Read blocks through the primary's read path, then call onCopyRead(token, data). */
  | { type: 'copy-read'; link: string; token: number; volume: number; block: number; blockCount: number }
  | { type: 'log'; entry: LogEntry };

export type SecondaryMode = 'streaming' | 'journal' | 'tracking' | 'resync';

export interface ResyncProgress {
  bytesLeft: number;
  copiedBytes: number;
  bytesPerSecond: number;
  etaSeconds: number | null;
}

interface CopyRead {
  run: ChunkRun;
  cycle: CycleNumber;
  bytes: number;
}

interface AttachedCopy {
  runs: ChunkRun[];
  /** The chunks' content, until the cycle is packed. */
  fold: FoldIndex | null;
  bytes: number;
}

/** The copy of one session: what is left to read, what is being read, what travels in which cycle. */
interface CopySession {
  toRead: ChangedBlocks;
  reading: Map<number, CopyRead>;
  attached: Map<CycleNumber, AttachedCopy>;
  windowBytes: number;
  lastAttachCycle: CycleNumber;
  /** The first cycle of this session sent as consistent: once stored, the resync is over. */
  consistentSent: CycleNumber | null;
  /**
   * Whether the bitmap as this session began is durable. Until it is, nothing is sent: a stored
   * resync cycle at the secondary relies on the bitmap for every block it lacks, so a primary
   * crash must find that bitmap (the whole-site simulator's seed 54 found an initial sync whose
   * first cycle went out before its all-chunks bitmap was saved).
   */
  bitmapDurable: boolean;
  copiedBytes: number;
}

export class LinkTracking {
  private blocks: ChangedBlocks | null = null;
  private base: CycleNumber = 0;
  private through: CycleNumber = 0;
  /** `through` of the newest durable save: collection may pass the link up to it. */
  private savedThrough: CycleNumber | null = null;
  private saving: { token: number; through: CycleNumber } | null = null;
  /** A session began while a save was out: save again once it is in, then the session may stream. */
  private saveAgain = false;
  private saveTokens = 0;
  private lastSaveMs = Number.NEGATIVE_INFINITY;
  private clearedSinceSave = false;
  private copy: CopySession | null = null;
  private readTokens = 0;
  /** How fast this session's copy goes, for the status's rate and ETA. */
  private readonly copyRate: ProgressRate;

  constructor(
    private readonly link: string,
    private readonly shape: GroupShape,
    private readonly config: TrackingConfig,
    private readonly out: ActionSink<TrackingRequest>,
  ) {
    this.copyRate = new ProgressRate(config.copyRate);
  }

  get active(): boolean {
    return this.blocks !== null;
  }

  /** Whether a copy read is out: no cycle switch may start before it is answered. */
  get reading(): boolean {
    return (this.copy?.reading.size ?? 0) > 0;
  }

  /** The newest cycle the journal must keep everything above for this link. */
  hold(stored: CycleNumber): CycleNumber {
    return this.savedThrough === null ? stored : Math.max(stored, this.savedThrough);
  }

  /** The first cycle the journal must still send this link after stored number `stored`. */
  journalFrom(stored: CycleNumber): CycleNumber {
    return this.active ? Math.max(stored, this.through) + 1 : stored + 1;
  }

  /** Restores the bitmap a previous process saved; the journal floor is `collected`. */
  restore(state: TrackingState, collected: CycleNumber): void {
    const blocks = ChangedBlocks.fromState(state, this.config.chunkBlocks, this.volumeBlockCounts());
    this.blocks = blocks;
    this.base = state.base;
    this.through = Math.max(state.through, collected);
    if (state.through < collected) {
      // Collection passes a tracking link only up to max(its stored number, the saved `through`)
      // (see hold), so cycles between `through` and the floor were stored by this secondary: they
      // are at the secondary, not lost. A secondary back below the floor (wiped, restored) lacks
      // them: the raised base sends it every chunk (startSession). Marking every chunk here
      // instead made a primary killed mid-resync start the copy over.
      this.base = Math.max(state.base, collected);
      this.log('info', 'tracking-base-raised', { through: state.through, base: this.base, collected });
    }
    this.savedThrough = this.through;
  }

  /**
   * Folds the closed cycles the link has not stored into the bitmap and saves it; the journal may
   * pass the link once the save is durable. `cycleFold` gives one closed cycle's content.
   */
  track(
    stored: CycleNumber,
    closed: CycleNumber,
    collected: CycleNumber,
    cycleFold: (cycle: CycleNumber) => FoldIndex,
  ): void {
    if (this.copy) return;
    if (!this.blocks) {
      this.blocks = new ChangedBlocks(this.config.chunkBlocks, this.volumeBlockCounts());
      this.base = stored;
      this.through = stored;
      this.log('warn', 'tracking-started', { stored, closed });
    }
    const blocks = this.blocks;
    if (stored > this.through) {
      // Cycles through+1..stored are at the secondary (stored in a resync), not in the bitmap: a
      // secondary below `stored` (wiped since) is no longer covered by it (sim seed 1872).
      this.base = Math.max(this.base, stored);
    }
    if (Math.max(stored, this.through) < collected) {
      // The journal no longer holds the cycles after what the secondary stored (a wiped secondary
      // back after collection): their folds are empty, so only every chunk covers them (seed 23111).
      this.log('warn', 'resync-full', { stored, base: this.base, through: this.through, collected });
      blocks.markAll();
      this.through = collected;
    }
    for (let cycle = Math.max(stored, this.through) + 1; cycle <= closed; cycle++) {
      cycleFold(cycle).forEachBlock((volume, block) => blocks.markBlocks(volume, block, 1));
    }
    this.through = Math.max(this.through, closed);
    // A save in flight carries the bitmap as it was: another follows it with these cycles. Waiting
    // for a moment with no save out instead let a secondary that reconnects faster than a save
    // completes (each session's start saves) hold the journal for ever (whole-site sim seed 30180).
    if (this.saving) this.saveAgain = true;
    else this.save();
  }

  /**
   * A rejoining old primary (docs/failover.md, "Failback"): its image is this group's at
   * `divergedFrom` (its stored number, unless it staged part of an earlier rejoin resync since)
   * except at `runs`, which it wrote after that cycle and this primary never had. They join the
   * bitmap (made if none, based at `stored`, the journal covering every cycle after it), so the
   * session's resync copies them from this primary's volumes with everything written since, as one
   * consistent unit: only blocks that differ travel.
   */
  mergeDivergence(
    stored: CycleNumber,
    divergedFrom: CycleNumber,
    runs: readonly { volume: number; block: number; blockCount: number }[],
  ): void {
    if (!this.blocks) {
      this.blocks = new ChangedBlocks(this.config.chunkBlocks, this.volumeBlockCounts());
      this.base = stored;
      this.through = stored;
      // Stored past its divergence point: it staged part of an earlier rejoin resync whose bitmap
      // is gone here; only a copy of everything is sure to cover what that resync had left.
      if (stored !== divergedFrom) this.blocks.markAll();
    }
    const blocks = this.blocks;
    for (const run of runs) blocks.markBlocks(run.volume, run.block, run.blockCount);
    this.log('warn', 'rejoin-divergence', {
      stored,
      divergedFrom,
      runs: runs.length,
      chunks: blocks.chunkCount,
    });
  }

  onSaved(token: number): boolean {
    if (this.saving?.token !== token) return false;
    this.savedThrough = Math.max(this.savedThrough ?? 0, this.saving.through);
    this.saving = null;
    if (this.saveAgain) {
      this.saveAgain = false;
      this.save();
    } else if (this.copy) {
      this.copy.bitmapDurable = true;
    }
    return true;
  }

  /** Whether the link may send: not during a resync whose bitmap is not durable yet. */
  get mayStream(): boolean {
    return this.copy?.bitmapDurable ?? true;
  }

  private save(): void {
    const blocks = this.blocks;
    assert(blocks, 'only a tracking link saves a bitmap');
    const token = ++this.saveTokens;
    this.saving = { token, through: this.through };
    this.clearedSinceSave = false;
    this.out.push({
      type: 'tracking-save',
      link: this.link,
      token,
      state: {
        base: this.base,
        through: this.through,
        chunkBlocks: blocks.chunkBlocks,
        bits: blocks.snapshot(),
      },
    });
  }

  // ---- a session -----------------------------------------------------------------------------

  /**
   * A session begins with the secondary at stored number `stored`. Returns whether a copy runs:
   * then the cycles sent are inconsistent until the copy is done.
   */
  startSession(
    nowMs: number,
    stored: CycleNumber,
    collected: CycleNumber,
    consistentStored: CycleNumber,
  ): boolean {
    this.copy = null;
    this.copyRate.reset(nowMs);
    // Below the bitmap's base, or with cycles between it and the journal's floor that neither
    // holds (collection passed `through` while the secondary stored them, and it lost them since):
    // only a copy of everything covers it.
    if (this.blocks && (stored < this.base || Math.max(stored, this.through) < collected)) {
      this.log('warn', 'resync-full', { stored, base: this.base, through: this.through, collected });
      this.blocks.markAll();
      this.base = stored;
      // Every chunk is marked: the journal below its floor is no longer needed for this link.
      this.through = Math.max(this.through, collected);
    } else if (!this.blocks && (stored < collected || consistentStored < stored)) {
      // New, wiped or restored from an old copy: the journal no longer reaches back to it. Or it
      // holds cycles of a resync whose bitmap this primary does not have (removed by an operator):
      // only a copy of everything can finish that.
      this.blocks = new ChangedBlocks(this.config.chunkBlocks, this.volumeBlockCounts());
      this.blocks.markAll();
      this.base = stored;
      this.through = collected;
      this.savedThrough = collected;
      this.log('warn', 'initial-sync', { stored, collected, consistentStored });
    }
    if (!this.blocks) return false;
    this.copy = {
      toRead: this.blocks.clone(),
      reading: new Map(),
      attached: new Map(),
      windowBytes: 0,
      lastAttachCycle: 0,
      consistentSent: null,
      copiedBytes: 0,
      bitmapDurable: false,
    };
    this.log('warn', 'resync-started', { stored, chunks: this.blocks.chunkCount });
    if (this.saving === null) this.save();
    else this.saveAgain = true;
    return true;
  }

  /**
   * The link went down: the copy stops where it is. Chunks stored by the secondary are already
   * cleared, so the next session copies only what is left (logged: a resync must not start over).
   */
  endSession(): void {
    const copy = this.copy;
    if (copy) {
      const chunkBytes = this.config.chunkBlocks * this.shape.blockBytes;
      const bytesLeft = (this.blocks?.chunkCount ?? 0) * chunkBytes;
      this.log('warn', 'resync-interrupted', { copiedBytes: copy.copiedBytes, bytesLeft });
    }
    this.copy = null;
  }

  /** Starts copy reads while the window allows; `capture` is the cycle they will travel in. */
  issueReads(capture: CycleNumber): void {
    const copy = this.copy;
    if (!copy) return;
    const blockBytes = this.shape.blockBytes;
    const chunksMax = Math.max(1, Math.floor(this.config.copyReadBlocksMax / this.config.chunkBlocks));
    while (copy.windowBytes < this.config.copyWindowBytes) {
      const run = copy.toRead.takeRun(chunksMax);
      if (!run) return;
      const { block, blockCount } = copy.toRead.blocksOf(run);
      const token = ++this.readTokens;
      const bytes = blockCount * blockBytes;
      copy.reading.set(token, { run, cycle: capture, bytes });
      copy.windowBytes += bytes;
      this.out.push({ type: 'copy-read', link: this.link, token, volume: run.volume, block, blockCount });
    }
  }

  /** A copy read's bytes: they travel in the cycle that was capturing when the read began. */
  onCopyRead(nowMs: number, token: number, data: Uint8Array): boolean {
    const read = this.copy?.reading.get(token);
    if (!read || !this.copy) return false;
    const copy = this.copy;
    copy.reading.delete(token);
    const { block, blockCount } = copy.toRead.blocksOf(read.run);
    assert(data.length === blockCount * this.shape.blockBytes, 'a copy read returns its blocks');
    let attached = copy.attached.get(read.cycle);
    if (!attached) {
      attached = { runs: [], fold: new FoldIndex(this.shape.blockBytes), bytes: 0 };
      copy.attached.set(read.cycle, attached);
    }
    assert(attached.fold, 'a cycle is packed only once its copy reads are in');
    for (const extent of splitZeroes(read.run.volume, block, data, this.shape.blockBytes)) {
      attached.fold.add(extent);
    }
    attached.runs.push(read.run);
    attached.bytes += read.bytes;
    copy.lastAttachCycle = Math.max(copy.lastAttachCycle, read.cycle);
    copy.copiedBytes += read.bytes;
    this.copyRate.record(nowMs, copy.copiedBytes);
    return true;
  }

  /** The copy that travels in `cycle`, placed before the cycle's own writes; taken once. */
  takeAttached(cycle: CycleNumber): FoldIndex | null {
    const attached = this.copy?.attached.get(cycle);
    if (!attached?.fold) return null;
    const fold = attached.fold;
    attached.fold = null;
    return fold;
  }

  /** Whether the image after `cycle` is consistent: no copy left to read, none after it. */
  consistentAfter(cycle: CycleNumber): boolean {
    const copy = this.copy;
    if (!copy) return true;
    const consistent = copy.toRead.isEmpty && copy.reading.size === 0 && cycle >= copy.lastAttachCycle;
    if (consistent) copy.consistentSent ??= cycle;
    return consistent;
  }

  /**
   * The copy cannot go on until the capture cycle closes: it holds copied chunks, no read is out,
   * chunks are left and the next read would not fit the window.
   */
  copyWaitsForSwitch(capture: CycleNumber): boolean {
    const copy = this.copy;
    if (!copy || copy.reading.size > 0 || copy.toRead.isEmpty || !copy.attached.has(capture)) return false;
    const readBytesMax = this.config.copyReadBlocksMax * this.shape.blockBytes;
    return copy.windowBytes + readBytesMax > this.config.copyWindowBytes;
  }

  /** A cycle switch is needed though no write came: a copy waits in the capture cycle, or the end. */
  wantsSwitch(capture: CycleNumber, sentEnd: CycleNumber, closed: CycleNumber): boolean {
    const copy = this.copy;
    if (!copy) return false;
    if (copy.attached.has(capture)) return true;
    return (
      copy.consistentSent === null && copy.toRead.isEmpty && copy.reading.size === 0 && sentEnd >= closed
    );
  }

  /** The secondary stored up to `stored`: chunks that travelled in those cycles are there. */
  onStored(nowMs: number, stored: CycleNumber): void {
    const copy = this.copy;
    const blocks = this.blocks;
    if (!copy || !blocks) return;
    for (const [cycle, attached] of copy.attached) {
      if (cycle > stored) continue;
      for (const run of attached.runs) {
        for (let chunk = run.chunk; chunk < run.chunk + run.chunkCount; chunk++)
          blocks.clear(run.volume, chunk);
      }
      copy.windowBytes -= attached.bytes;
      copy.attached.delete(cycle);
      this.clearedSinceSave = true;
      // Cleared chunks are known equal only for a secondary at `stored` or above: one that comes
      // back below it (wiped, restored) must not be judged by this bitmap.
      this.base = Math.max(this.base, stored);
      // The secondary holds every cycle up to `stored`, so the bitmap now needs the journal only
      // above it; and a saved bitmap with `base` above `through` is refused as damaged at restart.
      this.through = Math.max(this.through, this.base);
    }
    if (blocks.isEmpty && copy.consistentSent !== null && stored >= copy.consistentSent) {
      this.finish(stored, copy);
      return;
    }
    if (this.clearedSinceSave && !this.saving && nowMs - this.lastSaveMs >= this.config.saveMsMin) {
      this.lastSaveMs = nowMs;
      this.save();
    }
  }

  private finish(stored: CycleNumber, copy: CopySession): void {
    this.log('warn', 'resync-complete', { stored, copiedBytes: copy.copiedBytes });
    this.blocks = null;
    this.copy = null;
    this.savedThrough = null;
    this.saving = null;
    this.saveAgain = false;
    this.out.push({ type: 'tracking-drop', link: this.link });
  }

  // ---- observation ---------------------------------------------------------------------------

  /**
   * Bytes the bitmap still marks (chunks at full size), bytes copied this session, the copy's rate
   * over the last seconds (0 while unknown or not copying) and the seconds left at that rate (null
   * while unknown).
   */
  progress(nowMs: number): ResyncProgress {
    const chunkBytes = this.config.chunkBlocks * this.shape.blockBytes;
    const bytesLeft = (this.blocks?.chunkCount ?? 0) * chunkBytes;
    if (!this.copy) return { bytesLeft, copiedBytes: 0, bytesPerSecond: 0, etaSeconds: null };
    return {
      bytesLeft,
      copiedBytes: this.copy.copiedBytes,
      bytesPerSecond: this.copyRate.bytesPerSecond(nowMs) ?? 0,
      etaSeconds: this.copyRate.etaSeconds(nowMs, bytesLeft),
    };
  }

  get copying(): boolean {
    return this.copy !== null;
  }

  private volumeBlockCounts(): number[] {
    return this.shape.volumes.map((_, volume) => volumeBlocks(this.shape, volume));
  }

  private log(level: LogEntry['level'], event: string, fields: LogEntry['fields']): void {
    this.out.push({ type: 'log', entry: { level, event, fields: { link: this.link, ...fields } } });
  }
}

/** A read's blocks as extents, runs of all-zero blocks without data (they travel as zero runs). */
export function splitZeroes(volume: number, first: number, data: Uint8Array, blockBytes: number): Extent[] {
  const extents: Extent[] = [];
  const blockCount = data.length / blockBytes;
  let runStart = 0;
  let runZero = isZeroBlock(data, 0, blockBytes);
  for (let index = 1; index <= blockCount; index++) {
    const zero = index < blockCount ? isZeroBlock(data, index * blockBytes, blockBytes) : !runZero;
    if (index < blockCount && zero === runZero) continue;
    extents.push({
      volume,
      block: first + runStart,
      blockCount: index - runStart,
      data: runZero ? null : data.subarray(runStart * blockBytes, index * blockBytes),
    });
    runStart = index;
    runZero = zero;
  }
  return extents;
}

function isZeroBlock(data: Uint8Array, offset: number, length: number): boolean {
  for (let i = offset; i < offset + length; i++) if (data[i] !== 0) return false;
  return true;
}
