/**
 * A secondary site as a process: the Secondary state machine wired to its receive journal and its
 * volume files (opened at start, or created at first contact from the primary's hello), the
 * connections its primary makes (secondary/node-link-listener.ts in production), with the services
 * and the stop every site has (site/). Here the state machine's actions are carried out and its
 * completions fed back.
 */

import { join } from 'node:path';
import {
  HandshakeError,
  type ProtocolError,
  type StagingShortage,
  type StorageFault,
} from '../core/errors.ts';
import type { Binding, Generation, SiteId } from '../core/identity.ts';
import { limits } from '../core/limits.ts';
import type { ReplayedSecondaryRecord, SecondaryRecord } from '../core/records.ts';
import { checkHello, Secondary, type SecondaryAction } from '../core/secondary.ts';
import type { CycleNumber, Extent, GroupShape, ResyncStaging } from '../core/types.ts';
import type { Clock } from '../io/clock.ts';
import { nodeEnvironment, type SiteEnvironment } from '../io/environment.ts';
import type { LinkSocket } from '../io/network.ts';
import type { NbdExport } from '../nbd/connection.ts';
import type { SecondaryFileConfig } from '../ops/config.ts';
import type { Logger } from '../ops/logger.ts';
import { SiteMetrics } from '../ops/metrics.ts';
import type { Frame, HelloFrame } from '../protocol/frames.ts';
import { secondaryRecordCodec } from '../storage/record-codec.ts';
import type { JournalPosition, SegmentJournal } from '../storage/segment-journal.ts';
import { type DemotedRecord, type VolumeRecord, writeSiteFileIfChanged } from '../storage/site-file.ts';
import type { VolumeFile } from '../storage/volume-file.ts';
import { type ConnectionEvents, SecondaryConnections } from './secondary/link-connections.ts';
import { listenOnNetwork, type SecondaryLinkListener } from './secondary/link-listener.ts';
import { NodeLinkListener } from './secondary/node-link-listener.ts';
import { JournalBlocks } from './site/journal-blocks.ts';
import { linkTimingsOf } from './site/link-timings.ts';
import { volumeExports } from './site/nbd-exports.ts';
import { closeSiteStorage, openSiteJournal } from './site/site-journal.ts';
import { SiteRuntime, type SiteStartOptions, type StopOptions } from './site/site-runtime.ts';
import { readThroughJournaledOverlay } from './site/volume-reads.ts';
import { volumeWritesInFlight, WriteQueue } from './site/write-queue.ts';
import { loadSecondaryIdentity } from './site-identity.ts';
import { createSecondarySite, type OpenedSite, openSecondarySite } from './site-storage.ts';

export { linkTimingsOf } from './site/link-timings.ts';

/** A read that keeps meeting new applies gives up after this many attempts. */
const readRetriesMax = 100;
/** Volume writes of an apply queued (not yet started) before its next step is taken. */
const applyWritesQueuedMax = 256;

export interface SecondaryStatusReport {
  group: string;
  role: 'secondary';
  name: string;
  /** The same words as the primary's view of the link: `streaming` while a session runs, else `idle`. */
  link: 'streaming' | 'idle';
  /** This site's identity, and the primary site and generation it follows (null until the first). */
  site: SiteId;
  primary: Binding | null;
  stored: number;
  applied: number;
  journalBytes: number;
  /**
   * Bytes of block data held in memory (packets waiting for their journal write, and any the
   * stored cycles hold, which is none), the most it was in this run, and the configured budget.
   */
  memory: { dataBytes: number; dataBytesPeak: number; dataBytesMax: number };
  volumes: { name: string; sizeBytes: number }[];
  /**
   * Whether the exposed image (NBD, reads) is a consistent cut. False only with `resync.staging:
   * in-place`, from a resync's first cycle applied until its consistent cycle is.
   */
  consistent: boolean;
  /** Since when this process has seen the image not consistent (ISO 8601), or null while it is. */
  inconsistentSince: string | null;
  /** How a resync is taken, what it holds staged, and the room left on the journal's disk. */
  staging: StagingStatus;
  /** Why the site is stopping on its own, or null: the storage failure and when it happened. */
  fault: StorageFault | null;
}

export interface StagingStatus {
  mode: ResyncStaging;
  /** Block data in the journal of cycles stored and not applied, and of cycles arriving. */
  stagedBytes: number;
  /** The journal disk's free bytes as last measured (every tick), less what was appended since. */
  diskFreeBytes: number | null;
  /** What staging leaves free at least. */
  diskFreeBytesMin: number;
  /** The last refusal to stage more of a resync, with its numbers; null once staging fits again. */
  shortage: StagingShortage | null;
}

export class SecondaryNode {
  /** Prometheus figures of this site (GET /metrics). */
  readonly metrics: SiteMetrics;
  private readonly runtime: SiteRuntime;
  /** The site's only source of time. */
  private readonly clock: Clock;
  private core: Secondary | null = null;
  private journal: SegmentJournal<SecondaryRecord> | null = null;
  /** Where the packets' data lies in the journal: the core keeps references, not bytes. */
  private journalBlocks: JournalBlocks<SecondaryRecord> | null = null;
  private volumes: VolumeFile[] = [];
  private shape: GroupShape | null = null;
  private readonly connections: SecondaryConnections;
  private listener: SecondaryLinkListener | null = null;
  /** Volume writes of the cycle being applied, a few at a time. */
  private readonly volumeWrites = new WriteQueue(volumeWritesInFlight);
  /** Volume syncs of an apply under way (drain, then fdatasync of every volume). */
  private readonly volumeSyncs = new Set<Promise<void>>();
  /** This site's identity, and the primary site and generation it follows (null until bound). */
  private readonly site: SiteId;
  private binding: Binding | null;
  /** The volumes this site created, as site.json records them (null until they exist). */
  private volumeRecords: VolumeRecord[] | null = null;
  /** When this process first saw the exposed image not consistent (clock ms), or null. */
  private inconsistentSinceMs: number | null = null;
  /** A failed free-space measurement was logged: once per run is enough. */
  private diskSpaceFailureLogged = false;
  /** Set when this site was a primary (site.json demotedFrom): whom it may follow until bound. */
  private readonly demotedFrom: DemotedRecord | null;
  /**
   * The daemon's, told when the primary asks this site to take over (a switchover): it starts the
   * promotion and answers null, or says why it cannot.
   */
  private onPromotionRequested: (cycle: CycleNumber, generation: string) => string | null = () =>
    'this process cannot change role (no daemon runs it)';
  /** When the primary last sent a frame (clock ms), or null: what a promotion reports. */
  private lastContactMs: number | null = null;
  /** The newest cycle the primary sent any of: it had closed that cycle (the loss window's end). */
  private newestCycleSeen: CycleNumber = 0;

  private constructor(
    private readonly config: SecondaryFileConfig,
    environment: SiteEnvironment,
    private readonly logger: Logger,
    onFatal: (error: Error) => void,
  ) {
    this.clock = environment.clock;
    this.metrics = new SiteMetrics('secondary', () => this.status(), {
      processMetrics: environment.processMetrics !== false,
    });
    // Storage failed: the replica is left as the journal knows it, and the owner stops the process.
    this.runtime = new SiteRuntime(config, environment, logger, (error) => {
      this.explainFullDisk();
      onFatal(error);
    });
    this.connections = new SecondaryConnections(this.clock, logger, this.connectionEvents());
    const identity = loadSecondaryIdentity(environment.fs, config.dataDir, logger, environment.randomBytes);
    this.site = identity.site;
    this.binding = identity.binding;
    this.demotedFrom = identity.demotedFrom;
  }

  /**
   * A full disk with cycles stored and not applied: during a resync the whole unit (copy and cycles)
   * waits in the journal until its last cycle arrives, so this is where a resync runs out of room.
   * Says so with the numbers and what to do; the primary alone knows the bytes still to come (its
   * resyncBytesLeft), so they are named, not guessed.
   */
  private explainFullDisk(): void {
    const core = this.core;
    if (this.runtime.fault?.kind !== 'disk-full' || !core || core.stored <= core.applied) return;
    this.logger.error('staging-disk-full', {
      dataDir: this.config.dataDir,
      applied: core.applied,
      stored: core.stored,
      stagedCycles: core.stored - core.applied,
      stagedBytes: this.journal?.bytes ?? 0,
      advice:
        `the exposed image stays consistent at cycle ${core.applied}; cycles ${core.applied + 1}..${core.stored} are ` +
        'stored and not applied (a resync stages its copy and cycles here and applies them as one unit once its ' +
        `last cycle is stored). Free at least the primary's resyncBytesLeft (cyclerep status on the primary) on ` +
        `${this.config.dataDir}, then restart: the staged cycles stay stored and the resync resumes (or set ` +
        'resync.staging: in-place, which needs no room but leaves the image inconsistent until the resync ends)',
    });
  }

  /** Starts the site; see SiteStartOptions (`offline`: open storage and finish interrupted work only, for recover). */
  static async start(
    config: SecondaryFileConfig,
    logger: Logger,
    onFatal: (error: Error) => void,
    options: SiteStartOptions = {},
  ): Promise<SecondaryNode> {
    const node = new SecondaryNode(config, options.environment ?? nodeEnvironment, logger, onFatal);
    if (options.onPromotionRequested) node.onPromotionRequested = options.onPromotionRequested;
    const site = openSecondarySite(node.runtime.environment.fs, config);
    if (site) node.openStorage(site);
    else
      logger.info('waiting-for-primary', {
        reason: 'no volumes configured; they are taken from the primary at first contact',
      });
    if (options.offline) return node;
    const network = node.runtime.environment.network;
    const accept = (socket: LinkSocket): void => node.connections.accept(socket);
    node.listener = network
      ? await listenOnNetwork(network, config.listen, accept)
      : await NodeLinkListener.start(config, config.listen, logger, accept);
    await node.runtime.serve({
      nbdExports: () => node.nbdExports(),
      status: () => node.status(),
      metrics: node.metrics,
      nbdTlsContext: () => node.listener?.tlsContext() ?? null,
      ...(options.admin ? { admin: options.admin } : {}),
    });
    node.runtime.tickEvery(Math.max(10, Math.floor(config.link.heartbeatMs / 4)), () => node.tick());
    logger.info('secondary-started', {
      listen: config.listen,
      stored: node.core?.stored ?? 0,
      applied: node.core?.applied ?? 0,
    });
    return node;
  }

  /** Opens the journal over the site's volumes, replays, and resumes an interrupted apply. */
  private openStorage(site: OpenedSite): void {
    const { shape, files, records } = site.volumes;
    this.volumeRecords = records;
    // Replay keeps where each packet lies, not its data: the core numbers the records 1, 2, 3, ...
    const replayed: ReplayedSecondaryRecord[] = [];
    const places: { seq: number; cycle: number; position: JournalPosition }[] = [];
    const opened = openSiteJournal<SecondaryRecord>({
      onReplayed: (record, position) => {
        const seq = replayed.length + 1;
        replayed.push(withDataLeftInJournal(record));
        if (record.kind === 'packet' && record.extent.data !== null)
          places.push({ seq, cycle: record.cycle, position });
      },
      fs: this.runtime.environment.fs,
      site,
      dataDir: this.config.dataDir,
      segmentBytesMax: this.config.journal.segmentSize,
      codec: secondaryRecordCodec,
      checkpoint: () => this.core?.checkpoint() ?? [{ kind: 'applied', cycle: 0, consistent: true }],
      recordSite: () => this.writeSite(shape),
      logger: this.logger,
    });
    this.volumes = files;
    this.journal = opened.journal;
    this.runtime.watchJournal(opened.journal);
    this.journalBlocks = new JournalBlocks(opened.journal, shape.blockBytes, packetBlocks, false);
    for (const { seq, cycle, position } of places) this.journalBlocks.onReplayed(seq, cycle, position);
    this.core = Secondary.recover(
      {
        name: this.config.name,
        shape,
        timings: linkTimingsOf(this.config.link),
        binding: this.binding,
        demotedFrom: this.demotedFrom,
        staging: { mode: this.config.resync.staging, freeBytesMin: limits.stagingFreeBytesMin },
      },
      replayed,
    );
    this.shape = shape;
    if (!this.core.imageConsistent)
      this.logger.warn('image-inconsistent', {
        applied: this.core.applied,
        stored: this.core.stored,
        reason: this.core.showsGivenUpHistory
          ? `this site gave up its history after cycle ${this.demotedFrom?.cycle} (a split brain's resolution): its image is a cut of the primary it follows only once it applied what that primary sends (docs/failover.md)`
          : this.demotedFrom?.divergence
            ? `this site was a primary and holds its own writes after cycle ${this.demotedFrom.cycle}, which the primary it follows never had: the resync of a rejoin replaces them (docs/failover.md)`
            : 'the volumes hold part of an in-place resync (resync.staging: in-place): the exposed image is not a consistent cut until the primary completes the resync',
      });
    this.measureDiskSpace();
    this.noteImageConsistency();
    this.run(this.core.start());
  }

  /**
   * Tells the core the room on the journal's disk, less the records queued and not yet written:
   * a staged resync stops short of filling it (SecondaryStore.checkStagingRoom).
   */
  private measureDiskSpace(): void {
    const core = this.core;
    if (!core || !this.journal) return;
    let freeBytes: number;
    try {
      freeBytes = this.runtime.environment.fs.statfsSync(join(this.config.dataDir, 'journal')).freeBytes;
    } catch (error) {
      if (!this.diskSpaceFailureLogged)
        this.logger.warn('disk-space-unknown', {
          reason: `statfs of the journal failed: ${(error as Error).message}; a resync staged here is not held back before the disk fills`,
        });
      this.diskSpaceFailureLogged = true;
      return;
    }
    core.onDiskSpace(this.clock.now(), freeBytes - this.journal.pendingBytes);
  }

  /** Keeps when this process first saw the exposed image not consistent (the status shows it). */
  private noteImageConsistency(): void {
    if (!this.core || this.core.imageConsistent) this.inconsistentSinceMs = null;
    else this.inconsistentSinceMs ??= this.clock.now();
  }

  /** site.json with this site's identity, binding and volume records; atomic (see writeSiteFile). */
  private writeSite(shape: GroupShape | null): void {
    writeSiteFileIfChanged(this.runtime.environment.fs, this.config.dataDir, {
      role: 'secondary',
      config: this.config,
      shape,
      site: this.site,
      binding: this.binding,
      ...(this.volumeRecords ? { volumes: this.volumeRecords } : {}),
      ...(this.demotedFrom ? { demotedFrom: this.demotedFrom } : {}),
    });
  }

  /** Reads the certificate, key and CA (or the pre-shared key) again: new connections use them. */
  reloadTls(): void {
    this.runtime.reloadStatusTls();
    this.listener?.reload();
  }

  // ---- connections from the primary ----------------------------------------------------------

  /** What the primary's connections do to the state machine (none before storage is open). */
  private connectionEvents(): ConnectionEvents {
    return {
      onOpened: (connection) => {
        if (this.core) this.run(this.core.onConnectionOpened(this.clock.now(), connection));
      },
      onBytes: (connection) => this.core?.onBytesReceived(this.clock.now(), connection),
      onFrame: (connection, frame) => this.onFrame(connection, frame),
      onProtocolError: (connection, error) => {
        if (this.core) this.run(this.core.onProtocolError(this.clock.now(), connection, error));
        else this.refuseBeforeStorage(connection, error);
      },
      onLost: (connection, reason) => {
        if (this.core) this.run(this.core.onConnectionLost(this.clock.now(), connection, reason));
      },
    };
  }

  private onFrame(connection: number, frame: Frame): void {
    // Storage failed: store nothing more, answer nothing more; the process is on its way out.
    if (this.runtime.fatal) return;
    this.lastContactMs = this.clock.now();
    if (frame.type === 'data' || frame.type === 'end-of-cycle')
      this.newestCycleSeen = Math.max(this.newestCycleSeen, frame.cycle);
    if (!this.core && frame.type === 'hello') this.adoptShape(connection, frame);
    if (!this.core) {
      this.connections.destroy(connection, 'no volumes yet and the first frame is not a hello');
      return;
    }
    this.run(this.core.onFrame(this.clock.now(), connection, frame));
  }

  /**
   * First contact without configured volumes: take the primary's, once, and keep them from then
   * on. Names and sizes from the wire are held to the config's rules before any file is made of
   * them, and the primary hears why it was refused.
   */
  private adoptShape(connection: number, hello: HelloFrame): void {
    try {
      checkHello(hello, this.config.group, null);
    } catch (error) {
      if (!(error instanceof HandshakeError)) throw error;
      this.refuseBeforeStorage(connection, error);
      return;
    }
    const shape: GroupShape = { group: hello.group, blockBytes: hello.blockBytes, volumes: hello.volumes };
    this.logger.info('volumes-adopted', {
      volumes: shape.volumes.map((volume) => `${volume.name}:${volume.sizeBytes}`).join(','),
    });
    try {
      this.openStorage(createSecondarySite(this.runtime.environment.fs, this.config, shape));
    } catch (error) {
      this.fail(error);
      return;
    }
    for (const id of this.connections.ids())
      this.run((this.core as Secondary).onConnectionOpened(this.clock.now(), id));
  }

  /** No storage is open yet, so no state machine: the refusal is sent from here. */
  private refuseBeforeStorage(connection: number, error: HandshakeError | ProtocolError): void {
    this.logger.error('primary-refused', { code: error.code, reason: error.message });
    this.connections.send(connection, { type: 'error', code: error.code, message: error.message });
    this.connections.close(connection, `${error.code}: ${error.message}`);
  }

  // ---- the state machine's actions -----------------------------------------------------------

  private tick(): void {
    if (!this.core) return;
    this.measureDiskSpace();
    this.noteImageConsistency();
    this.run(this.core.onTick(this.clock.now()));
  }

  /** Carries out the state machine's actions (site/site-runtime.ts has the convention). */
  private run(actions: SecondaryAction[]): void {
    this.runtime.carryOut(actions, (action) => this.execute(action), fileFreeSecondaryActions);
  }

  /**
   * Feeds a storage completion to the core. Not once the site began to stop: what it would start
   * (an applied record, a STORED, a release) would reach files the stop is closing; the restart
   * applies the unit again and the primary resends what was not acknowledged as stored.
   */
  private complete(step: (core: Secondary) => SecondaryAction[]): void {
    if (this.core && !this.runtime.fatal && !this.runtime.stopping) this.run(step(this.core));
  }

  private execute(action: SecondaryAction): void {
    const journal = this.journal as SegmentJournal<SecondaryRecord>;
    const journalBlocks = this.journalBlocks as JournalBlocks<SecondaryRecord>;
    switch (action.type) {
      case 'bind':
        this.bind(action.binding);
        return;
      case 'promotion-requested': {
        const refusal = this.onPromotionRequested(action.cycle, action.generation);
        if (refusal === null) return;
        this.logger.error('switchover-refused', { cycle: action.cycle, reason: refusal });
        this.connections.send(action.connection, {
          type: 'error',
          code: 'switchover-refused',
          message: refusal,
        });
        return;
      }
      case 'send':
        this.connections.send(action.connection, action.frame);
        return;
      case 'close':
        this.connections.close(action.connection, action.reason);
        return;
      case 'journal-append': {
        const position = journal.append(action.record);
        position.then(
          () => this.onJournalWritten(),
          (error) => this.fail(error),
        );
        journalBlocks.onAppended(action.seq, action.record, position);
        // Packets received beyond the memory budget wait in the kernel, not here.
        if (journal.pendingBytes > this.config.memory.dataBytesMax) this.connections.holdReading(true);
        return;
      }
      case 'journal-sync':
        journal.sync().then(
          () => this.complete((core) => core.onJournalSynced(this.clock.now(), action.upTo)),
          (error) => this.fail(error),
        );
        return;
      case 'journal-release':
        journalBlocks.onReleased(action.upTo);
        journal.deleteUpTo(action.upTo).catch((error) => this.fail(error));
        return;
      case 'volume-write': {
        const volume = this.volumes[action.extent.volume] as VolumeFile;
        this.volumeWrites.push(() => volume.writeExtent(action.extent));
        return;
      }
      case 'volume-write-from-journal': {
        // Read when its turn comes: the bytes in memory are those of the writes in flight only.
        // The runs' records lie close together in the journal: one read brings them all; each run
        // is then a write of its own in the queue, as many at a time as any (a volume-sync waits
        // for them too: they are queued before the read's task ends).
        const { runs } = action;
        this.volumeWrites.push(async () => {
          const data = await journalBlocks.read(runs.flatMap((run) => run.pieces));
          let at = 0;
          for (const { volume, block, blockCount } of runs) {
            const file = this.volumes[volume] as VolumeFile;
            const bytes = blockCount * file.blockBytes;
            const extent = { volume, block, blockCount, data: data.subarray(at, at + bytes) };
            this.volumeWrites.push(() => file.writeExtent(extent));
            at += bytes;
          }
        });
        return;
      }
      case 'volume-sync': {
        const synced = this.volumeWrites
          .drained()
          .then(() => Promise.all(this.volumes.map((volume) => volume.flush())))
          .then(
            () => this.complete((core) => core.onVolumesSynced(this.clock.now(), action.token)),
            (error) => this.fail(error),
          );
        // A stop waits for it: the volumes must not close under its fdatasync.
        this.volumeSyncs.add(synced);
        void synced.finally(() => this.volumeSyncs.delete(synced));
        return;
      }
      case 'apply-step':
        // Once the writes issued so far are mostly under way (the unit's runs are not all queued at
        // once), and after the I/O callbacks and timers waiting: links and readers go on in between.
        // A stop drains the writes issued and stops there: the restart applies the unit again.
        this.volumeWrites.room(applyWritesQueuedMax).then(() =>
          this.clock.soon(() => {
            if (!this.runtime.stopping) this.complete((core) => core.onApplyStep(this.clock.now()));
          }),
        );
        return;
      case 'log':
        this.logger.log(action.entry);
        return;
    }
  }

  /** A record reached the file: reading goes on once the journal is well below the memory budget. */
  private onJournalWritten(): void {
    const journal = this.journal as SegmentJournal<SecondaryRecord>;
    if (journal.pendingBytes <= this.config.memory.dataBytesMax / 2) this.connections.holdReading(false);
  }

  /** Records the primary followed from now on, before anything of it is stored. */
  private bind(binding: Binding): void {
    this.binding = binding;
    try {
      this.writeSite(this.shape);
    } catch (error) {
      this.fail(error);
    }
  }

  private fail(error: unknown): void {
    this.runtime.fail(error);
  }

  /** Set when storage failed: the process must stop, the replica is left as the journal knows it. */
  get fatal(): Error | null {
    return this.runtime.fatal;
  }

  /** Why the site is stopping on its own, or null: the storage failure and when it happened. */
  get fault(): StorageFault | null {
    return this.runtime.fault;
  }

  /**
   * Whether the read path may show an image that is no consistent cut, as a count that moves with
   * each such image shown: the simulator's oracle leaves a read unjudged when the count moved
   * during it or the image was inconsistent at either end (only ever with in-place staging).
   */
  get imageState(): { consistent: boolean; inconsistentUnitsShown: number } {
    return {
      consistent: this.core?.imageConsistent ?? true,
      inconsistentUnitsShown: this.core?.inconsistentUnitsShown ?? 0,
    };
  }

  /**
   * Resolves once every stored cycle that can be applied is applied and durable (for recover, a
   * promotion and tests): during a resync the stored cycles after its last consistent one cannot
   * be, yet. Rejects only when the apply made no progress for `stallMs`: a large backlog (a DR site
   * promoted after a long lag) takes as long as it takes.
   */
  async settle(stallMs = 60_000): Promise<void> {
    let progressAtMs = this.clock.now();
    // Progress is any volume write of the apply finishing, not only a whole cycle applied: one
    // resync unit may hold the volumes' size.
    let writes = this.volumeWrites.finished;
    while (this.core && this.core.appliedDurable < this.core.applicableThrough && !this.runtime.fatal) {
      if (this.volumeWrites.finished > writes) {
        writes = this.volumeWrites.finished;
        progressAtMs = this.clock.now();
      }
      if (this.clock.now() - progressAtMs > stallMs)
        throw new Error(
          `apply made no progress for ${stallMs} ms (applied ${this.core.appliedDurable} of ${this.core.applicableThrough})`,
        );
      await new Promise<void>((resolve) => this.clock.after(5, resolve));
    }
    if (this.runtime.fatal) throw this.runtime.fatal;
  }

  /**
   * The read path: the applied image, never half a cycle. The overlay of the cycle being applied is
   * taken before the file is read, and the read is retried if another apply began meanwhile (its
   * volume writes could have been half seen), like a sequence lock.
   */
  async read(volume: number, offset: number, length: number): Promise<Uint8Array> {
    const file = this.volumes[volume];
    const core = this.core;
    if (!file || !core) throw new Error(`no volume ${volume}`);
    const journalBlocks = this.journalBlocks as JournalBlocks<SecondaryRecord>;
    for (let attempt = 0; ; attempt++) {
      const applied = core.applied;
      const appliedDurable = core.appliedDurable;
      try {
        const image = await readThroughJournaledOverlay(
          file,
          offset,
          length,
          (block) => core.overlay(volume, block),
          (pieces) => journalBlocks.read(pieces),
        );
        if (core.applied === applied) return image;
      } catch (error) {
        // The overlay's cycle was applied and its records released meanwhile (JournalBlockGone, or
        // its segment deleted under the read): the file has its blocks now, so read again.
        if (core.appliedDurable === appliedDurable) throw error;
      }
      if (attempt >= readRetriesMax) throw new Error(`read of volume ${volume} kept racing applies`);
    }
  }

  /**
   * One read-only NBD export per volume, showing the applied image. Volumes taken from the primary
   * at first contact are exported from then on (exports are looked up when a client asks).
   */
  nbdExports(): NbdExport[] {
    return volumeExports(this.shape?.volumes ?? [], this.shape?.blockBytes ?? 4096, {
      read: (index, offset, length) => this.read(index, offset, length),
      writer: null,
    });
  }

  /**
   * What the site knows when asked to take over (docs/failover.md): whether its primary is
   * connected, when it last heard from it, what it applied, and the newest cycle the primary was
   * seen to have closed, so the operator sees the window of writes a promotion would leave behind.
   */
  promotionFacts(): PromotionFacts {
    const now = this.clock.now();
    const applied = this.core?.applied ?? 0;
    return {
      primaryConnected: this.core?.inspect().session != null,
      lastContact: this.lastContactMs === null ? null : new Date(this.lastContactMs).toISOString(),
      secondsSinceContact: this.lastContactMs === null ? null : (now - this.lastContactMs) / 1000,
      applied,
      stored: this.core?.stored ?? 0,
      applicableThrough: this.core?.applicableThrough ?? 0,
      newestCycleSeen: this.newestCycleSeen,
      cyclesSeenBeyondApplicable: Math.max(0, this.newestCycleSeen - (this.core?.applicableThrough ?? 0)),
      imageConsistent: this.core?.imageConsistent ?? true,
      primary: this.binding,
      history: this.historyToExtend(),
    };
  }

  /** This site's identity and volume records, which a promotion carries over (null before volumes). */
  promotionBasis(): { site: SiteId; history: Generation[] | null; volumes: VolumeRecord[] | null } {
    return { site: this.site, history: this.historyToExtend(), volumes: this.volumeRecords };
  }

  /**
   * The chain a promotion extends: the followed primary's; for a site that was a primary and
   * follows nobody yet (a switchover whose frame may never have arrived), its own, as long as its
   * image is still the consistent one it handed over at. Null when there is none to extend.
   */
  private historyToExtend(): Generation[] | null {
    if (this.binding) return this.binding.history ?? null;
    if (this.demotedFrom && (this.core?.imageConsistent ?? false)) return this.demotedFrom.generations;
    return null;
  }

  status(): SecondaryStatusReport {
    const inspection = this.core?.inspect();
    return {
      group: this.config.group,
      role: 'secondary',
      name: this.config.name,
      link: inspection?.session != null ? 'streaming' : 'idle',
      site: this.site,
      primary: this.binding,
      stored: this.core?.stored ?? 0,
      applied: this.core?.applied ?? 0,
      journalBytes: this.journal?.bytes ?? 0,
      memory: {
        dataBytes: (this.journal?.pendingBytes ?? 0) + (this.core?.payloadBytesInMemory ?? 0),
        dataBytesPeak: this.journal?.pendingBytesPeak ?? 0,
        dataBytesMax: this.config.memory.dataBytesMax,
      },
      volumes: this.shape?.volumes ?? [],
      consistent: this.core?.imageConsistent ?? true,
      inconsistentSince:
        this.core && !this.core.imageConsistent
          ? new Date(this.inconsistentSinceMs ?? this.clock.now()).toISOString()
          : null,
      staging: {
        mode: this.config.resync.staging,
        stagedBytes: this.core?.stagedBytes ?? 0,
        diskFreeBytes: this.core?.diskFreeBytes ?? null,
        diskFreeBytesMin: limits.stagingFreeBytesMin,
        shortage: this.core?.stagingShortage ?? null,
      },
      fault: this.runtime.fault,
    };
  }

  /**
   * Stops taking connections, lets the journal and volumes settle, closes everything; the same path
   * after a storage failure. NBD readers get NBD_ESHUTDOWN for new requests while those in flight
   * finish. Rejects with the first new storage error.
   */
  stop(options: StopOptions = {}): Promise<void> {
    this.connections.refuseNew();
    return this.runtime.stop(options, {
      windDown: async (attempt) => {
        this.connections.closeAll('secondary stopping');
        this.runtime.closingStorage();
        await this.listener?.close();
        await attempt(() => this.volumeWrites.drained());
        await Promise.allSettled([...this.volumeSyncs]);
        await closeSiteStorage(attempt, this.volumes, this.journal);
      },
      stopped: () =>
        this.logger.info('secondary-stopped', {
          stored: this.core?.stored ?? 0,
          applied: this.core?.applied ?? 0,
        }),
    });
  }
}

/** The actions a stopping secondary still carries out once its storage is closing (carryOut). */
const fileFreeSecondaryActions: ReadonlySet<SecondaryAction['type']> = new Set(['send', 'close', 'log']);

/** What a secondary reports when asked to take over: see SecondaryNode.promotionFacts. */
export interface PromotionFacts {
  primaryConnected: boolean;
  lastContact: string | null;
  secondsSinceContact: number | null;
  applied: CycleNumber;
  stored: CycleNumber;
  /** The newest stored cycle with a consistent image: what a promotion starts from. */
  applicableThrough: CycleNumber;
  newestCycleSeen: CycleNumber;
  /** Cycles the primary was seen to close that this site cannot apply: at least that much is lost. */
  cyclesSeenBeyondApplicable: number;
  imageConsistent: boolean;
  primary: Binding | null;
  /** The generation chain a promotion would extend, or null (see historyToExtend). */
  history: Generation[] | null;
}

/** A packet carries block data; the secondary's other records carry none. */
function packetBlocks(record: SecondaryRecord): { cycle: CycleNumber; extent: Extent } | null {
  return record.kind === 'packet' ? record : null;
}

/** A record as the core replays it: a packet's data stays in the journal (JournalBlocks reads it). */
function withDataLeftInJournal(record: SecondaryRecord): ReplayedSecondaryRecord {
  if (record.kind !== 'packet') return record;
  const { volume, block, blockCount, data } = record.extent;
  return { ...record, extent: { volume, block, blockCount, zero: data === null } };
}
