/**
 * A primary site as a process: the PrimaryGroup state machine wired to its storage (journal and
 * volumes, primary/primary-storage.ts), its sources (primary/source-api.ts), the write-back of
 * durable writes to the volumes (primary/write-back.ts) and the connections to its secondaries
 * (primary/link-connections.ts), with the services and the stop every site has (site/). Here the
 * group's actions are carried out and its completions fed back.
 *
 * Volume files are written back only once the journal records carrying the data are durable, so
 * after any crash the volumes hold nothing the journal lacks; until then reads are served from the
 * journal's in-memory index. At start-up every journaled write of an uncollected cycle is written
 * to the volumes again (redo), which repairs whatever a crash left half done.
 */

import { assert } from '../core/assert.ts';
import type { TrackingState } from '../core/changed-blocks.ts';
import type { StorageFault } from '../core/errors.ts';
import type { JournalPiece } from '../core/fold.ts';
import { currentGeneration, type FencedBy, type PrimaryIdentity, type SiteId } from '../core/identity.ts';
import { type PrimaryAction, PrimaryGroup, type PrimaryStatus } from '../core/primary-group.ts';
import type { PrimaryRecord } from '../core/records.ts';
import type { CycleNumber, Extent } from '../core/types.ts';
import type { Clock } from '../io/clock.ts';
import { nodeEnvironment, type SiteEnvironment } from '../io/environment.ts';
import type { NbdExport } from '../nbd/connection.ts';
import { type PrimaryFileConfig, writeBackBytesMax } from '../ops/config.ts';
import type { Logger } from '../ops/logger.ts';
import { SiteMetrics } from '../ops/metrics.ts';
import type { CompressionCodec } from '../protocol/compression.ts';
import type { FencedRecord, HandoverRecord, VolumeRecord } from '../storage/site-file.ts';
import { dropTrackingState, saveTrackingState } from '../storage/tracking-file.ts';
import { JournalRoom } from './primary/journal-room.ts';
import { PrimaryLinks } from './primary/link-connections.ts';
import { type LinkDialer, networkDialer } from './primary/link-dialer.ts';
import { NodeLinkDialer } from './primary/node-link-dialer.ts';
import { OldPrimaryListener } from './primary/old-primary-listener.ts';
import { PrimaryNodeError } from './primary/primary-node-error.ts';
import { openPrimaryStorage, type PrimaryStorage, redoJournaledWrites } from './primary/primary-storage.ts';
import { SourceApi } from './primary/source-api.ts';
import { trackingConfigOf } from './primary/tracking-config.ts';
import { WriteBack } from './primary/write-back.ts';
import { type PacingStatus, WritePacer } from './primary/write-pacer.ts';
import { JournalBlockGone, JournalBlocks } from './site/journal-blocks.ts';
import { linkTimingsOf } from './site/link-timings.ts';
import { volumeExports } from './site/nbd-exports.ts';
import { closeSiteStorage } from './site/site-journal.ts';
import { SiteRuntime, type SiteStartOptions, type StopOptions } from './site/site-runtime.ts';

export { writesWaitingMax } from './primary/journal-room.ts';
export { PrimaryNodeError, type PrimaryNodeErrorCode } from './primary/primary-node-error.ts';
export type { SiteStartOptions, StopOptions } from './site/site-runtime.ts';

/** A secondary link's compression (config secondaries[].compression): block-data payload bytes before and after. */
export interface LinkCompressionStatus {
  codec: CompressionCodec;
  payloadBytes: number;
  sentBytes: number;
  /** payloadBytes / sentBytes, 1 before anything was sent. */
  ratio: number;
}

export interface PrimaryNodeStatus extends PrimaryStatus {
  secondaries: (PrimaryStatus['secondaries'][number] & { compression: LinkCompressionStatus | null })[];
  /** This site's identity and the generation it is primary of (what secondaries bind to). */
  site: SiteId;
  generation: string;
  journalFiles: number;
  journalCapacityBytes: number;
  journalDiskBytes: number;
  journalFull: boolean;
  writesWaiting: number;
  /** Write pacing's delay and what it added so far; null without pacing. */
  pacing: PacingStatus | null;
  journalWrites: number;
  journalSyncs: number;
  journalAppends: number;
  /**
   * Block data in memory: writes not yet durable or not yet on the volumes (the journal's index
   * keeps references), against memory.dataBytesMax and the share it leaves them.
   */
  memory: {
    dataBytesMax: number;
    writeBackBytes: number;
    writeBackBytesPeak: number;
    writeBackBytesMax: number;
    /** Writes waiting because the write-back holds its share (volumes slower than the journal). */
    writeBackFull: boolean;
  };
  /** Why the site is stopping on its own, or null: the storage failure and when it happened. */
  fault: StorageFault | null;
  /**
   * Set once this primary learnt it was superseded (docs/failover.md, "Fencing"): who superseded
   * it, from which cycle, and when it learnt it. Its writes are refused (NBD: EPERM) from then on.
   */
  fenced: FencedRecord | null;
  /** A planned switchover under way: to whom, into which generation, at which cycle once asked. */
  switchover: { secondary: string; generation: string; cycle: number | null } | null;
  /** Set when this site became the primary by promotion: the cycle and the generation it superseded. */
  promotedFrom: { cycle: number; generation: string } | null;
}

export class PrimaryNode {
  /** Prometheus figures of this site (GET /metrics). */
  readonly metrics: SiteMetrics;
  private readonly runtime: SiteRuntime;
  /** The site's only source of time. */
  private readonly clock: Clock;
  private readonly core: PrimaryGroup;
  private readonly dialer: LinkDialer;
  private readonly links: PrimaryLinks;
  private readonly writeBack: WriteBack;
  private readonly journalRoom: JournalRoom;
  /** Delays new writes while a secondary lags (config `pacing`); null without pacing. */
  private readonly pacer: WritePacer | null;
  private readonly sources: SourceApi;
  /** Where the journaled writes' bytes lie: the group's index keeps references, not bytes. */
  private readonly journalBlocks: JournalBlocks<PrimaryRecord>;
  /** Settles once the latest journal append is in the kernel's hands: acknowledgements wait for it. */
  private lastAppend: Promise<void> = Promise.resolve();
  private writtenAtLastSwitch = 0;
  /**
   * Settles once every collection asked for so far is done (it never rejects: a failure fails the
   * site). A stop waits for it before closing the files: every start carries one out.
   */
  private collections: Promise<void> = Promise.resolve();
  /** Per secondary, the last bitmap file write: the next waits for it. */
  private readonly trackingWrites = new Map<string, Promise<void>>();
  /** Answers primaries that dial this site as their secondary (config `listen`), or null. */
  private oldPrimaries: OldPrimaryListener | null = null;
  /** See divergedPrimarySeen. */
  private divergedPrimary: PrimaryIdentity | null = null;
  /** Who superseded this primary and when it learnt it (before this start, or since): null while it leads. */
  private fenced: FencedRecord | null;

  private constructor(
    private readonly config: PrimaryFileConfig,
    private readonly storage: PrimaryStorage,
    private readonly environment: SiteEnvironment,
    private readonly logger: Logger,
    onFatal: (error: Error) => void,
  ) {
    this.clock = environment.clock;
    this.fenced = storage.fencedBy;
    this.metrics = new SiteMetrics('primary', () => this.status(), {
      processMetrics: environment.processMetrics !== false,
    });
    // Storage failed: every write, flush and write waiting for journal room is answered with the
    // failure now, then the owner is told to stop the process. Everything acknowledged is in the journal.
    this.runtime = new SiteRuntime(config, environment, logger, (error) => {
      this.sources.failAll(error);
      this.refuseWaitingWrites(error);
      onFatal(error);
    });
    this.dialer = environment.network
      ? networkDialer(environment.network)
      : new NodeLinkDialer(config, logger);
    this.core = PrimaryGroup.recover(
      {
        shape: storage.shape,
        secondaries: config.secondaries.map((secondary) => secondary.name),
        nodes: 1,
        ack: config.ack,
        cycleMsMin: config.cycle.intervalMinMs,
        cyclesQueuedMax: config.cycle.queuedMax,
        connectionsPerLink: Math.max(...config.secondaries.map((secondary) => secondary.connections)),
        timings: linkTimingsOf(config.link),
        identity: storage.identity,
        tracking: trackingConfigOf(config, storage.shape.blockBytes),
        // Half the write-back's share: the next sync is under way well before writes must wait.
        syncBytes: Math.max(1, Math.floor(writeBackBytesMax(config) / 2)),
        fencedBy: storage.fencedBy ? fencedByOf(storage.fencedBy) : null,
        handover: storage.handover,
      },
      environment.random,
      storage.records,
      storage.trackings,
    );
    this.runtime.watchJournal(storage.journal);
    this.journalBlocks = new JournalBlocks(storage.journal, storage.shape.blockBytes, writeBlocks, true);
    for (const { seq, cycle, position } of storage.places)
      this.journalBlocks.onReplayed(seq, cycle, position);
    this.writeBack = new WriteBack(
      storage.volumes,
      storage.shape.blockBytes,
      (error) => this.fail(error),
      () => this.journalRoom.onSpaceFreed(),
    );
    this.journalRoom = new JournalRoom(
      storage.journal,
      config.journal.capacity,
      this.writeBack,
      writeBackBytesMax(config),
      logger,
    );
    this.links = new PrimaryLinks(config.secondaries, this.dialer, this.core, this.clock, logger, {
      onConnected: (connection) => this.run(this.core.onConnected(this.clock.now(), connection)),
      onBytes: (connection) => this.core.onBytesReceived(this.clock.now(), connection),
      onFrame: (connection, frame) => this.run(this.core.onFrame(this.clock.now(), connection, frame)),
      onLost: (connection, why) => this.run(this.core.onConnectionLost(this.clock.now(), connection, why)),
      onPumped: () => {
        const actions = this.core.pendingActions();
        if (actions.length > 0) this.run(actions);
      },
    });
    this.pacer = config.pacing
      ? new WritePacer(config.pacing, this.clock, () => this.core.status(this.clock.now()), logger)
      : null;
    this.sources = new SourceApi({
      configured: config.volumes,
      shape: storage.shape,
      volumes: storage.volumes,
      core: this.core,
      clock: this.clock,
      journalRoom: this.journalRoom,
      pacer: this.pacer,
      writeBack: this.writeBack,
      readJournaled: (pieces) => this.readJournaled(pieces),
      metrics: this.metrics,
      failure: this.runtime,
      run: (actions) => this.run(actions),
    });
  }

  /** Starts the site; see SiteStartOptions (`offline`: replay and repair the volumes only, for recover). */
  static async start(
    config: PrimaryFileConfig,
    logger: Logger,
    onFatal: (error: Error) => void,
    options: SiteStartOptions = {},
  ): Promise<PrimaryNode> {
    const environment = options.environment ?? nodeEnvironment;
    let node: PrimaryNode | null = null;
    const storage = openPrimaryStorage(config, environment, logger, () => (node ? node.checkpoint() : []));
    node = new PrimaryNode(config, storage, environment, logger, onFatal);
    await redoJournaledWrites(
      storage.volumes,
      storage.records,
      (pieces) => node.journalBlocks.read(pieces),
      storage.shape.blockBytes,
      logger,
    );
    // The redo read every record; those of collected cycles are never read again.
    node.journalBlocks.onReleased(node.core.collected);
    storage.records.length = 0;
    node.run(node.core.start());
    if (options.offline) return node;
    await node.runtime.serve({
      nbdExports: () => node.nbdExports(),
      status: () => node.status(),
      metrics: node.metrics,
      nbdTlsContext: () => node.dialer.tlsContext(),
      ...(options.admin ? { admin: options.admin } : {}),
    });
    node.dialer.start();
    node.oldPrimaries = await OldPrimaryListener.start(
      config,
      () => storage.identity,
      environment,
      logger,
      (offered) => {
        node.divergedPrimary = offered;
      },
    );
    node.runtime.tickEvery(
      Math.max(10, Math.min(config.cycle.intervalMinMs, config.link.heartbeatMs) / 4),
      () => node.tick(),
    );
    logger.info('primary-started', {
      site: storage.identity.site,
      generation: currentGeneration(storage.identity).id,
      capture: node.core.capture,
      closed: node.core.closed,
      collected: node.core.collected,
      journalRecords: storage.report.records,
    });
    if (storage.fencedBy) node.logFenced(storage.fencedBy, 'started fenced (site.json fencedBy)');
    if (storage.handover && !storage.fencedBy)
      logger.warn('switchover-resumed', {
        ...storage.handover,
        reason:
          'this primary asked its secondary to take over before it stopped and never heard the answer (site.json handover): it takes no writes and asks again; a secondary that took over fences it instead (then: cyclerep rejoin)',
      });
    return node;
  }

  // ---- the source API (primary/source-api.ts) -------------------------------------------------

  /**
   * Writes whole blocks of the volume at `index` in the configuration's list; resolves with the
   * cycle at acknowledgement (immediate or cycle mode). The caller may reuse `data` once the call
   * returns, unless it says `handedOver`: then it never touches `data` again, and a buffer that
   * is exactly the write is kept as it is instead of copied.
   */
  write(index: number, offset: number, data: Uint8Array, handedOver = false): Promise<CycleNumber> {
    return this.sources.write(index, offset, data, handedOver);
  }

  /** Trim or write-zeroes: journaled and sent without payload. */
  writeZeroes(index: number, offset: number, length: number): Promise<CycleNumber> {
    return this.sources.writeZeroes(index, offset, length);
  }

  /** Every write acknowledged before the call is durable when it resolves. */
  flush(): Promise<void> {
    return this.sources.flush();
  }

  /** The newest data, acknowledged or not yet. */
  read(index: number, offset: number, length: number): Promise<Uint8Array> {
    return this.sources.read(index, offset, length);
  }

  /** One writable NBD export per volume, in the configuration's order; FUA is the write followed by a flush. */
  /**
   * One NBD export per volume, looked up when a client asks: writable, or read-only once this
   * primary is fenced (a write that reaches it anyway is refused by the group, with the fence).
   */
  nbdExports(): NbdExport[] {
    return volumeExports(
      this.config.volumes.map((volume) => ({ name: volume.name, sizeBytes: volume.size })),
      this.storage.shape.blockBytes,
      {
        read: (index, offset, length) => this.read(index, offset, length),
        writer: this,
        readOnly: this.fenced !== null,
      },
    );
  }

  get blockBytes(): number {
    return this.storage.shape.blockBytes;
  }

  /** Set when storage failed: the process must stop. */
  get fatal(): Error | null {
    return this.runtime.fatal;
  }

  /** Why the site is stopping on its own, or null: the storage failure and when it happened. */
  get fault(): StorageFault | null {
    return this.runtime.fault;
  }

  /** Reads the certificate, key and CA (or the pre-shared key) again (SIGHUP): new connections use them. */
  reloadTls(): void {
    this.runtime.reloadStatusTls();
    this.dialer.reload();
    this.oldPrimaries?.reload();
  }

  // ---- the group's actions -------------------------------------------------------------------

  private tick(): void {
    this.run(this.core.onTick(this.clock.now()));
  }

  /** Carries out the group's actions (site/site-runtime.ts has the convention), then pumps frames. */
  private run(actions: PrimaryAction[]): void {
    this.runtime.carryOut(actions, (action) => this.execute(action), fileFreePrimaryActions);
    this.links.schedulePump();
  }

  /** The completion of storage work, fed to the group unless storage failed meanwhile. */
  private complete(step: () => PrimaryAction[]): void {
    if (!this.runtime.fatal) this.run(step());
  }

  private execute(action: PrimaryAction): void {
    switch (action.type) {
      case 'journal-append':
        this.onJournalAppend(action.seq, action.record);
        return;
      case 'journal-sync':
        this.onJournalSync(action.upTo);
        return;
      case 'journal-collect':
        this.onJournalCollect(action.upTo);
        return;
      case 'ack':
        this.sources.onAcknowledged(action.token, action.cycle, this.lastAppend);
        return;
      case 'flush-done':
        this.sources.onFlushed(action.token);
        return;
      case 'write-refused':
        this.sources.onRefused(action.token, action.error);
        return;
      case 'connect':
        this.links.connect(action.link, action.connection);
        return;
      case 'disconnect':
        this.links.disconnect(action.connection, action.reason);
        return;
      case 'node-switch':
        return;
      case 'log':
        this.logger.log(action.entry);
        return;
      case 'tracking-save':
        this.onTrackingSave(action.link, action.token, action.state);
        return;
      case 'tracking-drop':
        this.afterTrackingWrites(action.link, () =>
          dropTrackingState(this.environment.fs, this.config.dataDir, action.link),
        );
        return;
      case 'copy-read':
        this.onCopyRead(action.link, action.token, action.volume, action.block, action.blockCount);
        return;
      case 'read-blocks':
        this.onReadBlocks(action.link, action.token, action.pieces);
        return;
      case 'fence':
        this.onFenced(action.by);
        return;
      case 'handover-record':
        this.recordHandover(action.record);
        return;
    }
  }

  /**
   * Superseded: the group refuses writes from now on; the record is made durable so a restart
   * stays fenced, and writes waiting for journal room are refused now rather than wait for room
   * that a primary without secondaries never gets back. A failed record stops the site (a storage
   * failure): it then learns it again from the promoted site when it is started again.
   */
  private onFenced(by: FencedBy): void {
    const record: FencedRecord = { ...by, at: new Date(this.clock.now()).toISOString() };
    this.fenced = record;
    const refusal = this.core.writeRefusal();
    assert(refusal !== null, 'the group refuses writes once it asked for a fence');
    this.refuseWaitingWrites(refusal);
    try {
      this.storage.recordFence(record);
    } catch (error) {
      this.fail(error);
    }
    this.logFenced(record, 'a promoted site says this primary was superseded, and its chain extends ours');
  }

  /**
   * A switchover's ask goes on record before its frame (the group sends it once told), and off
   * record when it ends. A failed record stops the site (a storage failure) with no frame sent.
   */
  private recordHandover(record: HandoverRecord | null): void {
    try {
      this.storage.recordHandover(record);
    } catch (error) {
      this.fail(error);
      return;
    }
    if (record) this.clock.soon(() => this.complete(() => this.core.onHandoverRecorded(this.clock.now())));
  }

  private logFenced(record: FencedRecord, reason: string): void {
    this.logger.error('fenced', {
      reason,
      site: record.site,
      generation: record.generation,
      startedAt: record.startedAt,
      since: record.at,
      effect: 'writes are refused (NBD: EPERM), no cycle is captured, no secondary is fed',
    });
  }

  /**
   * A packet's bytes, read back from the journal. Records a collection released meanwhile belong
   * to a session that ended (the group collects nothing it still sends): the group hears of it.
   */
  private onReadBlocks(link: string, token: number, pieces: JournalPiece[]): void {
    this.journalBlocks.read(pieces).then(
      (data) => this.complete(() => this.core.onBlocksRead(this.clock.now(), link, token, data)),
      (error) => {
        if (error instanceof JournalBlockGone)
          this.complete(() => this.core.onBlocksRead(this.clock.now(), link, token, null));
        else this.fail(error);
      },
    );
  }

  /**
   * The bytes of journaled writes for a source's read or a resync's copy read. Damage found there
   * stops the site, as at the catch-up: the record is one the secondaries and the redo still need.
   */
  private readJournaled(pieces: JournalPiece[]): Promise<Uint8Array> {
    return this.journalBlocks.read(pieces).catch((error: unknown) => {
      this.fail(error);
      throw error;
    });
  }

  /** The bitmap durable first, then the group may collect the journal past that secondary. */
  private onTrackingSave(link: string, token: number, state: TrackingState): void {
    this.afterTrackingWrites(link, async () => {
      await saveTrackingState(this.environment.fs, this.config.dataDir, link, state);
      this.logger.log({
        level: 'debug',
        event: 'tracking-saved',
        fields: { link, base: state.base, through: state.through },
      });
      this.complete(() => this.core.onTrackingSaved(this.clock.now(), link, token));
    });
  }

  /** One bitmap file write at a time per secondary: two would share its temporary file. */
  private afterTrackingWrites(link: string, write: () => Promise<void>): void {
    const previous = this.trackingWrites.get(link) ?? Promise.resolve();
    const next = previous.then(write);
    this.trackingWrites.set(link, next);
    next.catch((error) => this.fail(error));
  }

  /** A resync's copy read, through the same read path as the sources' reads. */
  private onCopyRead(link: string, token: number, volume: number, block: number, blockCount: number): void {
    const blockBytes = this.storage.shape.blockBytes;
    this.sources.readVolume(volume, block * blockBytes, blockCount * blockBytes).then(
      (data) => this.complete(() => this.core.onCopyRead(this.clock.now(), link, token, data)),
      (error) => this.fail(error),
    );
  }

  private onJournalAppend(seq: number, record: PrimaryRecord): void {
    const position = this.storage.journal.append(record);
    this.journalBlocks.onAppended(seq, record, position);
    this.lastAppend = position.then(() => {});
    this.lastAppend.catch((error) => this.fail(error));
    if (record.kind === 'write') this.writeBack.onJournaled(seq, record.extent);
    else if (record.kind === 'switch') this.observeCycleClosed();
  }

  /** Records up to `upTo` durable: their writes may go to the volumes, and the group hears of it. */
  private onJournalSync(upTo: number): void {
    this.storage.journal.sync().then(
      () => {
        this.writeBack.onDurable(upTo);
        this.complete(() => this.core.onJournalSynced(this.clock.now(), upTo));
      },
      (error) => this.fail(error),
    );
  }

  /** Every secondary stored cycles up to `upTo`: volumes made durable first, then the segments go. */
  private onJournalCollect(upTo: CycleNumber): void {
    const collection = this.writeBack
      .landed()
      .then(() => Promise.all(this.storage.volumes.map((volume) => volume.flush())))
      // The group let go of those cycles: reads that named their records before finish first.
      .then(() => this.journalBlocks.readsSettled())
      .then(() => {
        // A failed write-back is fatal: its records must stay in the journal for the redo.
        if (this.runtime.fatal) return;
        this.journalBlocks.onReleased(upTo);
        return this.storage.journal.deleteUpTo(upTo);
      })
      .then(
        (deleted) => {
          if (deleted)
            this.logger.log({ level: 'debug', event: 'journal-segments-deleted', fields: { upTo, deleted } });
          this.journalRoom.onSpaceFreed();
        },
        (error) => this.fail(error),
      );
    this.collections = Promise.all([this.collections, collection]).then(() => {});
  }

  /** Bytes the sources wrote into the cycle that just closed, for the cycle-size histogram. */
  private observeCycleClosed(): void {
    const written = this.core.status(this.clock.now()).writtenBytes;
    this.metrics.observeCycleClosed(written - this.writtenAtLastSwitch);
    this.writtenAtLastSwitch = written;
  }

  private checkpoint(): PrimaryRecord[] {
    return [
      { kind: 'switch', closed: this.core.closed },
      { kind: 'collect', upTo: this.core.collected },
    ];
  }

  private compressionOf(secondary: string): LinkCompressionStatus | null {
    const figures = this.links.compressionFigures(secondary);
    if (!figures) return null;
    const ratio = figures.sentBytes > 0 ? figures.payloadBytes / figures.sentBytes : 1;
    return { ...figures, ratio };
  }

  /** Writes waiting for journal room or out their pacing delay were never journaled: each fails with `error`. */
  private refuseWaitingWrites(error: Error): void {
    this.pacer?.rejectAll(error);
    this.journalRoom.rejectAll(error);
  }

  private fail(error: unknown): void {
    this.runtime.fail(error);
  }

  status(): PrimaryNodeStatus {
    const journal = this.storage.journal;
    const core = this.core.status(this.clock.now());
    return {
      ...core,
      secondaries: core.secondaries.map((link) => ({ ...link, compression: this.compressionOf(link.name) })),
      site: this.storage.identity.site,
      generation: currentGeneration(this.storage.identity).id,
      journalFiles: journal.segmentCount,
      journalDiskBytes: journal.bytes,
      journalCapacityBytes: this.config.journal.capacity,
      journalFull: this.journalRoom.full,
      writesWaiting: this.journalRoom.waitingCount,
      pacing: this.pacer?.status() ?? null,
      journalWrites: journal.writeCalls,
      journalSyncs: journal.syncCalls,
      journalAppends: journal.appended,
      memory: {
        dataBytesMax: this.config.memory.dataBytesMax,
        writeBackBytes: this.writeBack.heldBytes,
        writeBackBytesPeak: this.writeBack.heldBytesPeak,
        writeBackBytesMax: writeBackBytesMax(this.config),
        writeBackFull: this.journalRoom.writeBackFull,
      },
      fault: this.runtime.fault,
      fenced: this.fenced,
      switchover: this.core.switchover,
      promotedFrom: this.storage.promotedFrom,
    };
  }

  // ---- planned switchover (docs/failover.md; site-host.ts drives it) ---------------------------

  /**
   * Starts handing over to `secondary` as the primary of `generation`, or says why not. Writes are
   * refused from now on (NBD: ESHUTDOWN), those waiting for journal room included.
   */
  beginSwitchover(secondary: string, generation: string): string | null {
    const refusal = this.core.switchoverRefusal(secondary);
    if (refusal) return refusal;
    this.run(this.core.beginSwitchover(this.clock.now(), secondary, generation));
    this.refuseWaitingWrites(this.core.writeRefusal() as Error);
    return null;
  }

  /** Takes writes again if the secondary was not asked yet; false once it was. */
  abortSwitchover(): boolean {
    const aborted = this.core.abortSwitchover();
    this.run(this.core.pendingActions());
    return aborted;
  }

  /** The link the switchover goes to: whether it still streams, and what it stored. */
  switchoverLink(): { streaming: boolean; stored: number } | null {
    const name = this.core.switchover?.secondary;
    const link = this.core.status(this.clock.now()).secondaries.find((each) => each.name === name);
    return link ? { streaming: link.link === 'streaming', stored: link.stored } : null;
  }

  /**
   * A split brain's resolution here stops writes before it lists them (PrimaryGroup
   * stopWritesToGiveUp); writes waiting for journal room are refused with it. `false` resumes.
   */
  stopWritesToGiveUp(stop: boolean): void {
    this.core.stopWritesToGiveUp(stop);
    const refusal = this.core.writeRefusal();
    if (refusal) this.refuseWaitingWrites(refusal);
  }

  /** The blocks this primary wrote after `cycle` and what they were (PrimaryGroup.writtenAfter). */
  writtenAfter(cycle: number): ReturnType<PrimaryGroup['writtenAfter']> {
    return this.core.writtenAfter(cycle);
  }

  /**
   * The chain of the newest primary of a diverged history that dialled this site (a split brain),
   * since this process started: where a resolution here may take a delta from (rejoin.ts).
   */
  get divergedPrimarySeen(): PrimaryIdentity | null {
    return this.divergedPrimary;
  }

  /** This site's identity, for the data directory it becomes when it follows another primary. */
  get identity(): PrimaryIdentity {
    return this.storage.identity;
  }

  get volumeRecords(): VolumeRecord[] {
    return this.storage.volumeRecords;
  }

  /**
   * Stops taking writes, makes everything durable, closes the links and files; the same path after
   * a storage failure (then the failure is not reported again). NBD clients get NBD_ESHUTDOWN for
   * new requests while those in flight finish. Rejects with the first new storage error.
   */
  stop(options: StopOptions = {}): Promise<void> {
    return this.runtime.stop(options, {
      windDown: async (attempt) => {
        this.dialer.close();
        await this.oldPrimaries?.close();
        this.sources.stopTaking();
        // Writes still waiting for journal room were never journaled: they fail, loudly, not silently.
        this.refuseWaitingWrites(
          new PrimaryNodeError('stopping', 'the primary stopped before this write could be journaled'),
        );
        await attempt(() => this.storage.journal.sync());
        await this.writeBack.landed();
        this.links.closeAll('primary stopping');
        await this.collections;
        this.runtime.closingStorage();
        await closeSiteStorage(attempt, this.storage.volumes, this.storage.journal);
      },
      stopped: () =>
        this.logger.info('primary-stopped', { capture: this.core.capture, closed: this.core.closed }),
    });
  }
}

/**
 * The actions a stopping primary still carries out once its storage is closing (carryOut): answers
 * to its sources and peers, never a file.
 */
const fileFreePrimaryActions: ReadonlySet<PrimaryAction['type']> = new Set([
  'ack',
  'flush-done',
  'write-refused',
  'disconnect',
  'node-switch',
  'log',
]);

/** What the group needs of a fence record: who and from when, not when it was learnt. */
function fencedByOf(record: FencedRecord): FencedBy {
  return { site: record.site, generation: record.generation, startedAt: record.startedAt };
}

/** A write record carries block data (none for zeroes); the primary's other records carry none. */
function writeBlocks(record: PrimaryRecord): { cycle: CycleNumber; extent: Extent } | null {
  return record.kind === 'write' ? record : null;
}
