/**
 * A primary site as a process: the PrimaryGroup state machine wired to its journal (segment files),
 * its volume files, TCP connections to the secondaries, timers and the status endpoint, with a
 * library API for sources: write, writeZeroes, read, flush, close.
 *
 * Volume files are written back only once the journal records carrying the data are durable, so
 * after any crash the volumes hold nothing the journal lacks; until then reads are served from the
 * journal's in-memory index. At start-up every journaled write of an uncollected cycle is written
 * to the volumes again (redo), which repairs whatever a crash left half done.
 */
import type { Server as HttpServer } from 'node:http';
import { connect } from 'node:net';
import { join } from 'node:path';
import { type ConnectionOptions, connect as connectTls } from 'node:tls';
import { CyclerepError, type StorageFault, storageFaultOf } from '../core/errors.ts';
import { FoldIndex } from '../core/fold.ts';
import { currentGeneration, type PrimaryIdentity, type SiteId } from '../core/identity.ts';
import { limits } from '../core/limits.ts';
import { type PrimaryAction, PrimaryGroup, type PrimaryStatus } from '../core/primary-group.ts';
import type { PrimaryRecord } from '../core/records.ts';
import type { CycleNumber, Extent, GroupShape } from '../core/types.ts';
import { nodeFileSystem } from '../io/node-file-system.ts';
import type { NbdExport } from '../nbd/connection.ts';
import { type NbdServer, startNbdServer } from '../nbd/server.ts';
import { FramedSocket, parseAddress } from '../net/framed-socket.ts';
import { explainPskFailure, loadPsk, pskClientOptions } from '../net/psk.ts';
import { clientOptions, loadTlsMaterial, type TlsMaterial } from '../net/tls.ts';
import type { PrimaryFileConfig } from '../ops/config.ts';
import type { Logger } from '../ops/logger.ts';
import { SiteMetrics } from '../ops/metrics.ts';
import { closeStatusServer, startStatusServer } from '../ops/status-server.ts';
import { applyOverlay, collectOverlay } from '../storage/block-overlay.ts';
import { primaryRecordCodec } from '../storage/record-codec.ts';
import { SegmentJournal } from '../storage/segment-journal.ts';
import { writeSiteFileIfChanged } from '../storage/site-file.ts';
import type { VolumeFile } from '../storage/volume-file.ts';
import { logLinkSecurity, watchLinkSecurityFiles } from './link-security.ts';
import { linkTimingsOf } from './secondary-node.ts';
import { loadPrimaryIdentity } from './site-identity.ts';
import { openPrimarySite } from './site-storage.ts';
import { volumeWritesInFlight, WriteQueue } from './write-queue.ts';

/** Writes waiting for journal space at most; beyond, a write is refused with journal-full. */
export const writesWaitingMax = 4096;
/** Frames written to one socket per pump before yielding to other work. */
const framesPerPump = 256;
/** Largest single volume write of a write-back batch (runs are merged up to this). */
const writeBackRunBytesMax = 1024 * 1024;
/** Journaled writes per write-back batch: folding one batch holds the event loop about a millisecond. */
const writeBackBatchWritesMax = 256;

/** Durable writes on their way to the volume files; folded once their turn comes. */
interface WriteBackBatch {
  extents: Extent[];
  fold: FoldIndex | null;
}

/** The newest content of a block in one batch: from its fold once made, else its writes newest first. */
function newestInBatch(
  batch: WriteBackBatch,
  volume: number,
  block: number,
  blockBytes: number,
): Uint8Array | null | undefined {
  if (batch.fold) return batch.fold.get(volume, block);
  for (let i = batch.extents.length - 1; i >= 0; i--) {
    const extent = batch.extents[i] as Extent;
    if (extent.volume !== volume || block < extent.block || block >= extent.block + extent.blockCount)
      continue;
    if (!extent.data) return null;
    const start = (block - extent.block) * blockBytes;
    return extent.data.subarray(start, start + blockBytes);
  }
  return undefined;
}

export type PrimaryNodeErrorCode = 'write-misaligned' | 'write-out-of-range' | 'journal-full' | 'stopping';

/** A source's request the primary will not take; only that request fails. */
export class PrimaryNodeError extends CyclerepError {
  declare readonly code: PrimaryNodeErrorCode;
  constructor(code: PrimaryNodeErrorCode, message: string) {
    super(code, message);
  }
}

export interface PrimaryNodeStatus extends PrimaryStatus {
  /** This site's identity and the generation it is primary of (what secondaries bind to). */
  site: SiteId;
  generation: string;
  journalFiles: number;
  journalCapacityBytes: number;
  journalDiskBytes: number;
  journalFull: boolean;
  writesWaiting: number;
  journalWrites: number;
  journalSyncs: number;
  journalAppends: number;
  /** Why the site is stopping on its own, or null: the storage failure and when it happened. */
  fault: StorageFault | null;
}

/** How stop() ends the site: how long NBD requests in flight may take, how long status stays up. */
export interface StopOptions {
  /** NBD requests in flight get this long to finish; connections still open then are cut. */
  nbdDrainMs?: number;
  /** The status endpoint keeps answering (with the fault, if any) this long before it closes. */
  statusLingerMs?: number;
}

interface Waiter {
  resolve: (cycle: CycleNumber) => void;
  reject: (error: Error) => void;
}

interface FlushWaiter {
  resolve: () => void;
  reject: (error: Error) => void;
}

export class PrimaryNode {
  /** Prometheus figures of this site (GET /metrics). */
  readonly metrics = new SiteMetrics('primary', () => this.status());
  private writtenAtLastSwitch = 0;
  private readonly core: PrimaryGroup;
  private readonly sockets = new Map<number, FramedSocket>();
  private readonly connected = new Set<number>();
  private readonly waiters = new Map<number, Waiter>();
  private readonly flushWaiters = new Map<number, FlushWaiter>();
  private nextToken = 1;
  private lastAppend: Promise<void> = Promise.resolve();
  /** Journaled writes not yet durable: written to the volumes once they are. */
  private writeBackQueue: { seq: number; extent: Extent }[] = [];
  /**
   * Batches of durable writes being written to the volume files, oldest first, each folded (newest
   * wins): between the core forgetting a collected cycle and its write landing, reads find the
   * data here. Batches land one after the other, so an older write never lands after a newer one.
   */
  private readonly writeBacks: WriteBackBatch[] = [];
  /** Settles when every write-back issued so far has landed (or failed, which is fatal). */
  private writeBackTail: Promise<void> = Promise.resolve();
  private waiting: (() => void)[] = [];
  private waitingRejects: ((error: Error) => void)[] = [];
  private pumpScheduled = false;
  private timer: NodeJS.Timeout | null = null;
  private http: HttpServer | null = null;
  private nbd: NbdServer | null = null;
  private stopping = false;
  private stopped: Promise<void> | null = null;
  /** Certificate, key and CA of the site link, when it runs over TLS. */
  private tlsMaterial: TlsMaterial | null = null;
  /** How the site link's connections are secured (certificates or pre-shared key), or null: plain. */
  private linkOptions: ConnectionOptions | null = null;
  private stopWatchingTls: () => void = () => {};
  fatal: Error | null = null;
  fault: StorageFault | null = null;

  private constructor(
    private readonly config: PrimaryFileConfig,
    private readonly shape: GroupShape,
    private readonly identity: PrimaryIdentity,
    private readonly journal: SegmentJournal<PrimaryRecord>,
    private readonly volumes: VolumeFile[],
    records: PrimaryRecord[],
    private readonly logger: Logger,
    private readonly onFatal: (error: Error) => void,
  ) {
    this.loadLinkSecurity();
    this.core = PrimaryGroup.recover(
      {
        shape,
        secondaries: config.secondaries.map((secondary) => secondary.name),
        nodes: 1,
        ack: config.ack,
        cycleMsMin: config.cycle.intervalMinMs,
        cyclesQueuedMax: config.cycle.queuedMax,
        connectionsPerLink: Math.max(...config.secondaries.map((secondary) => secondary.connections)),
        timings: linkTimingsOf(config.link),
        identity,
      },
      Math.random,
      records,
    );
  }

  /** Starts the site; `offline` replays and repairs the volumes only (for recover). */
  static async start(
    config: PrimaryFileConfig,
    logger: Logger,
    onFatal: (error: Error) => void,
    options: { offline?: boolean } = {},
  ): Promise<PrimaryNode> {
    const identity = loadPrimaryIdentity(nodeFileSystem, config.dataDir, logger);
    const site = openPrimarySite(nodeFileSystem, config);
    const { shape, files: volumes } = site.volumes;
    const record = (): void =>
      writeSiteFileIfChanged(nodeFileSystem, config.dataDir, {
        role: 'primary',
        config,
        site: identity.site,
        generations: identity.generations,
        volumes: site.volumes.records,
      });
    // A new site is recorded at once: its images exist from now on.
    if (site.created) record();
    let node: PrimaryNode | null = null;
    const opened = SegmentJournal.open<PrimaryRecord>({
      fs: nodeFileSystem,
      directory: join(config.dataDir, 'journal'),
      segmentBytesMax: config.journal.segmentSize,
      codec: primaryRecordCodec,
      checkpoint: () => (node ? node.checkpoint() : []),
    });
    if (opened.report.cut) logger.warn('journal-tail-cut', { ...opened.report.cut });
    // Every check passed: only now is site.json brought up to date (a refused start changes nothing).
    record();
    node = new PrimaryNode(config, shape, identity, opened.journal, volumes, opened.records, logger, onFatal);
    await node.redo(opened.records);
    node.run(node.core.takeActions());
    if (options.offline) return node;
    if (config.nbd)
      node.nbd = await startNbdServer(
        config.nbd,
        () => node.nbdExports(),
        logger,
        () => node.tlsMaterial?.context ?? null,
        (command, error) => node.metrics.observeNbdRequest(command, error),
      );
    if (config.http)
      node.http = await startStatusServer(config.http.listen, () => node.status(), config.http, node.metrics);
    logLinkSecurity(config, logger);
    node.stopWatchingTls = watchLinkSecurityFiles(config, () => node.reloadTls());
    node.timer = setInterval(
      () => node.tick(),
      Math.max(10, Math.min(config.cycle.intervalMinMs, config.link.heartbeatMs) / 4),
    );
    logger.info('primary-started', {
      site: identity.site,
      generation: currentGeneration(identity).id,
      capture: node.core.capture,
      closed: node.core.closed,
      collected: node.core.collected,
      journalRecords: opened.report.records,
    });
    return node;
  }

  private checkpoint(): PrimaryRecord[] {
    return [
      { kind: 'switch', closed: this.core.closed },
      { kind: 'collect', upTo: this.core.collected },
    ];
  }

  /**
   * Writes every journaled write to the volumes again, in journal order, then flushes them. Every
   * record still in the journal is redone, collected cycles included: the core appends its collect
   * record before the node has written those cycles back, so the record does not prove they are on
   * the volumes; only the deletion of a segment (after a volume flush) does.
   */
  private async redo(records: PrimaryRecord[]): Promise<void> {
    let count = 0;
    for (const record of records) {
      if (record.kind !== 'write') continue;
      await (this.volumes[record.extent.volume] as VolumeFile).writeExtent(record.extent);
      count++;
    }
    await Promise.all(this.volumes.map((volume) => volume.flush()));
    if (count > 0) this.logger.info('volumes-redone', { writes: count });
  }

  // ---- the source API ------------------------------------------------------------------------

  /**
   * The site's id of the volume at `index` in the configuration's list. Callers of the source API
   * count in the configuration's order; journal records and frames use the ids fixed when the site
   * was created (site.json), so reordering the configuration cannot send a write elsewhere.
   */
  private volumeId(index: number): number {
    const name = this.config.volumes[index]?.name;
    const id = this.shape.volumes.findIndex((volume) => volume.name === name);
    if (name === undefined || id < 0) throw new PrimaryNodeError('write-out-of-range', `no volume ${index}`);
    return id;
  }

  /**
   * Writes whole blocks of the volume at `index` in the configuration's list; resolves with the
   * cycle at acknowledgement (immediate or cycle mode).
   */
  write(index: number, offset: number, data: Uint8Array): Promise<CycleNumber> {
    const volume = this.volumeId(index);
    return this.timed(this.writeParts(volume, offset, data), (seconds) => this.metrics.observeWrite(seconds));
  }

  private writeParts(volume: number, offset: number, data: Uint8Array): Promise<CycleNumber> {
    this.checkRange(volume, offset, data.length);
    // One journal record carries at most packetBytesMax; a longer write is several, acknowledged together.
    const parts: Promise<CycleNumber>[] = [];
    for (let done = 0; done < data.length; done += limits.packetBytesMax) {
      const chunk = data.subarray(done, Math.min(data.length, done + limits.packetBytesMax));
      parts.push(
        this.submit(
          volume,
          (offset + done) / this.shape.blockBytes,
          chunk.length / this.shape.blockBytes,
          chunk,
        ),
      );
    }
    return Promise.all(parts).then((cycles) => Math.max(...cycles));
  }

  /** Trim or write-zeroes: journaled and sent without payload. */
  writeZeroes(index: number, offset: number, length: number): Promise<CycleNumber> {
    const volume = this.volumeId(index);
    this.checkRange(volume, offset, length);
    const submitted = this.submit(
      volume,
      offset / this.shape.blockBytes,
      length / this.shape.blockBytes,
      null,
    );
    return this.timed(submitted, (seconds) => this.metrics.observeWrite(seconds));
  }

  /** `promise`, with its time from now to its settling handed to `observe` (for the metrics). */
  private timed<T>(promise: Promise<T>, observe: (seconds: number) => void): Promise<T> {
    const startedMs = performance.now();
    const settled = (): void => observe((performance.now() - startedMs) / 1000);
    promise.then(settled, settled);
    return promise;
  }

  /** Bytes the sources wrote into the cycle that just closed, for the cycle-size histogram. */
  private observeCycleClosed(): void {
    const written = this.core.status(Date.now()).writtenBytes;
    this.metrics.observeCycleClosed(written - this.writtenAtLastSwitch);
    this.writtenAtLastSwitch = written;
  }

  private checkRange(volume: number, offset: number, length: number): void {
    if (this.fatal) throw this.fatal;
    if (this.stopping)
      throw new PrimaryNodeError('stopping', 'the primary is stopping and takes no more writes');
    const file = this.volumes[volume];
    if (!file) throw new PrimaryNodeError('write-out-of-range', `no volume ${volume}`);
    const block = this.shape.blockBytes;
    if (offset % block !== 0 || length % block !== 0 || length === 0) {
      throw new PrimaryNodeError(
        'write-misaligned',
        `offset ${offset} and length ${length} must be whole ${block}-byte blocks`,
      );
    }
    if (offset + length > file.sizeBytes) {
      throw new PrimaryNodeError(
        'write-out-of-range',
        `${offset}+${length} beyond the ${file.sizeBytes} bytes of volume ${volume}`,
      );
    }
  }

  private submit(
    volume: number,
    block: number,
    blockCount: number,
    data: Uint8Array | null,
  ): Promise<CycleNumber> {
    return this.whenJournalHasRoom().then(
      () =>
        new Promise<CycleNumber>((resolve, reject) => {
          if (this.fatal) {
            reject(this.fatal);
            return;
          }
          const token = this.nextToken++;
          this.waiters.set(token, { resolve, reject });
          // The caller's buffer may be reused after we return: keep our own copy.
          const extent: Extent = { volume, block, blockCount, data: data ? new Uint8Array(data) : null };
          this.run(this.core.onWrite(Date.now(), { token, node: 0, extent }));
        }),
    );
  }

  /** At journal.capacity writes wait (never lose data) until collection frees space. */
  private whenJournalHasRoom(): Promise<void> {
    if (this.fatal) return Promise.reject(this.fatal);
    if (this.journal.bytes < this.config.journal.capacity) return Promise.resolve();
    if (this.waiting.length >= writesWaitingMax) {
      return Promise.reject(
        new PrimaryNodeError(
          'journal-full',
          `journal at capacity and ${writesWaitingMax} writes already waiting`,
        ),
      );
    }
    if (this.waiting.length === 0) {
      this.logger.warn('journal-full', { capacity: this.config.journal.capacity, bytes: this.journal.bytes });
    }
    return new Promise((resolve, reject) => {
      this.waiting.push(resolve);
      this.waitingRejects.push(reject);
    });
  }

  private releaseWaiting(): void {
    while (this.waiting.length > 0 && this.journal.bytes < this.config.journal.capacity)
      this.waiting.shift()?.();
  }

  /** Every write acknowledged before the call is durable when it resolves. */
  flush(): Promise<void> {
    if (this.fatal) return Promise.reject(this.fatal);
    const flushed = new Promise<void>((resolve, reject) => {
      const token = this.nextToken++;
      this.flushWaiters.set(token, { resolve, reject });
      this.run(this.core.onFlush(Date.now(), token));
    });
    return this.timed(flushed, (seconds) => this.metrics.observeFlush(seconds));
  }

  /**
   * The newest data, acknowledged or not yet: journal index, then volume writes in flight, then
   * the file. The first two are looked up before the file is read: a write-back that finishes
   * during the read would otherwise take its block out of both while the read saw the old bytes.
   */
  async read(index: number, offset: number, length: number): Promise<Uint8Array> {
    const volume = this.volumeId(index);
    const file = this.volumes[volume];
    if (!file) throw new PrimaryNodeError('write-out-of-range', `no volume ${volume}`);
    const overlay = collectOverlay(offset, length, this.shape.blockBytes, (block) => {
      const content = this.core.newestBlock(volume, block);
      return content === undefined ? this.inFlightBlock(volume, block) : content;
    });
    return applyOverlay(await file.read(offset, length), offset, this.shape.blockBytes, overlay);
  }

  /** One writable NBD export per volume; FUA is the write followed by a flush. */
  nbdExports(): NbdExport[] {
    return this.config.volumes.map((volume, index) => ({
      name: volume.name,
      sizeBytes: volume.size,
      blockBytes: this.shape.blockBytes,
      readOnly: false,
      read: (offset, length) => this.read(index, offset, length),
      write: async (offset, data, fua) => {
        await this.write(index, offset, data);
        if (fua) await this.flush();
      },
      writeZeroes: async (offset, length, fua) => {
        await this.writeZeroes(index, offset, length);
        if (fua) await this.flush();
      },
      flush: () => this.flush(),
    }));
  }

  get blockBytes(): number {
    return this.shape.blockBytes;
  }

  // ---- actions -------------------------------------------------------------------------------

  private tick(): void {
    this.run(this.core.onTick(Date.now()));
  }

  private run(actions: PrimaryAction[]): void {
    for (const action of actions) this.execute(action);
    this.schedulePump();
  }

  private execute(action: PrimaryAction): void {
    switch (action.type) {
      case 'journal-append':
        this.lastAppend = this.journal.append(action.record);
        this.lastAppend.catch((error) => this.fail(error));
        if (action.record.kind === 'write')
          this.writeBackQueue.push({ seq: action.seq, extent: action.record.extent });
        else if (action.record.kind === 'switch') this.observeCycleClosed();
        return;
      case 'journal-sync':
        this.journal.sync().then(
          () => {
            this.writeBack(action.upTo);
            this.complete(() => this.core.onJournalSynced(Date.now(), action.upTo));
          },
          (error) => this.fail(error),
        );
        return;
      case 'journal-collect':
        this.collect(action.upTo);
        return;
      case 'ack': {
        const waiter = this.waiters.get(action.token);
        this.waiters.delete(action.token);
        // Acknowledged only once the record is in the kernel's hands.
        this.lastAppend.then(
          () => waiter?.resolve(action.cycle),
          (error) => waiter?.reject(error),
        );
        return;
      }
      case 'flush-done': {
        const waiter = this.flushWaiters.get(action.token);
        this.flushWaiters.delete(action.token);
        waiter?.resolve();
        return;
      }
      case 'write-refused': {
        const waiter = this.waiters.get(action.token);
        this.waiters.delete(action.token);
        waiter?.reject(action.error);
        return;
      }
      case 'connect':
        this.connect(action.link, action.connection);
        return;
      case 'disconnect':
        this.sockets.get(action.connection)?.close(action.reason);
        return;
      case 'node-switch':
        return;
      case 'log':
        this.logger.log(action.entry);
        return;
    }
  }

  private complete(step: () => PrimaryAction[]): void {
    if (!this.fatal) this.run(step());
  }

  /**
   * Durable journal records up to `upTo`: their data may now go to the volume files, in batches of
   * at most writeBackBatchWritesMax writes, each after the previous one. A batch is folded by block
   * when its turn comes (a block written twice is written once, runs are merged; folding a whole
   * second of writes at once would stall the event loop), then its runs are written concurrently,
   * since within a batch nothing overlaps.
   */
  private writeBack(upTo: number): void {
    let count = 0;
    while (count < this.writeBackQueue.length && (this.writeBackQueue[count] as { seq: number }).seq <= upTo)
      count++;
    const durable = this.writeBackQueue.splice(0, count);
    for (let at = 0; at < durable.length; at += writeBackBatchWritesMax) {
      const batch: WriteBackBatch = {
        extents: durable.slice(at, at + writeBackBatchWritesMax).map(({ extent }) => extent),
        fold: null,
      };
      this.writeBacks.push(batch);
      const landed = this.writeBackTail.then(() => this.writeBatch(batch));
      this.writeBackTail = landed.then(
        () => {
          this.writeBacks.shift();
        },
        (error) => this.fail(error),
      );
    }
  }

  private async writeBatch(batch: WriteBackBatch): Promise<void> {
    const fold = new FoldIndex(this.shape.blockBytes);
    for (const extent of batch.extents) fold.add(extent);
    batch.fold = fold;
    const writes = new WriteQueue(volumeWritesInFlight);
    for (const run of fold.runs(writeBackRunBytesMax)) {
      writes.push(() => (this.volumes[run.volume] as VolumeFile).writeExtent(fold.extentOf(run)));
    }
    await writes.drained();
  }

  /** The newest content of a block in a write-back not yet landed, or undefined. */
  private inFlightBlock(volume: number, block: number): Uint8Array | null | undefined {
    for (let i = this.writeBacks.length - 1; i >= 0; i--) {
      const content = newestInBatch(
        this.writeBacks[i] as WriteBackBatch,
        volume,
        block,
        this.shape.blockBytes,
      );
      if (content !== undefined) return content;
    }
    return undefined;
  }

  /** Every secondary stored cycles up to `upTo`: volumes made durable first, then the segments go. */
  private collect(upTo: CycleNumber): void {
    this.writeBackTail
      .then(() => Promise.all(this.volumes.map((volume) => volume.flush())))
      .then(() => {
        // A failed write-back is fatal: its records must stay in the journal for the redo.
        if (this.fatal) return;
        return this.journal.deleteUpTo(upTo);
      })
      .then(
        (deleted) => {
          if (deleted)
            this.logger.log({ level: 'debug', event: 'journal-segments-deleted', fields: { upTo, deleted } });
          this.releaseWaiting();
        },
        (error) => this.fail(error),
      );
  }

  private connect(link: string, id: number): void {
    const secondary = this.config.secondaries.find((candidate) => candidate.name === link);
    if (!secondary) return;
    const target = parseAddress(secondary.address);
    const secureOptions = this.linkOptions;
    const socket = secureOptions
      ? connectTls({ ...('path' in target ? { path: target.path } : target), ...secureOptions })
      : 'path' in target
        ? connect(target.path)
        : connect(target.port, target.host);
    let secured = false;
    const framed = new FramedSocket(socket, {
      onFrame: (frame) => this.run(this.core.onFrame(Date.now(), id, frame)),
      onProtocolError: (error) => {
        this.logger.warn('bad-bytes-from-secondary', {
          link,
          connection: id,
          code: error.code,
          reason: error.message,
        });
      },
      onClose: (reason) => {
        this.sockets.delete(id);
        this.connected.delete(id);
        // In TLS 1.3 the secondary judges this site's certificate after the handshake looks done
        // here, so its refusal arrives as a bare hang-up; say what it most likely means.
        const refused = secureOptions && secured && framed.bytesIn === 0;
        const why = refused
          ? `${reason}: the secondary ended the TLS session before any frame (did it refuse this site's certificate or key? its log says why)`
          : explainPskFailure(reason);
        this.run(this.core.onConnectionLost(Date.now(), id, why));
      },
      onDrain: () => this.schedulePump(),
    });
    this.sockets.set(id, framed);
    // Over TLS the link is up once the secondary's certificate and identity passed.
    socket.once(secureOptions ? 'secureConnect' : 'connect', () => {
      secured = true;
      this.connected.add(id);
      this.run(this.core.onConnected(Date.now(), id));
    });
  }

  /** Reads the certificate files or the pre-shared key; on failure the previous ones stay. */
  private loadLinkSecurity(): void {
    const tls = this.config.tls ? loadTlsMaterial(this.config.tls) : null;
    const psk = this.config.psk ? loadPsk(this.config.psk) : null;
    this.tlsMaterial = tls;
    this.linkOptions = tls ? clientOptions(tls) : psk ? pskClientOptions(psk) : null;
  }

  /** Reads the certificate, key and CA again (SIGHUP): new connections use them. */
  reloadTls(): void {
    if (!this.config.tls && !this.config.psk) return;
    try {
      this.loadLinkSecurity();
      this.logger.info('tls-reloaded', { file: this.config.tls?.cert ?? this.config.psk?.keyFile ?? '' });
    } catch (error) {
      this.logger.error('tls-reload-failed', {
        reason: (error as Error).message,
        keeping: 'the previous certificate',
      });
    }
  }

  private schedulePump(): void {
    if (this.pumpScheduled) return;
    this.pumpScheduled = true;
    setImmediate(() => {
      this.pumpScheduled = false;
      this.pump();
    });
  }

  /** Hands frames to every connected socket while it can take them. */
  private pump(): void {
    const now = Date.now();
    for (const id of this.connected) {
      const socket = this.sockets.get(id);
      if (!socket) continue;
      for (let sent = 0; sent < framesPerPump && socket.writable; ) {
        const frames = this.core.pollFrames(now, id, 16);
        if (frames.length === 0) break;
        for (const frame of frames) socket.send(frame);
        sent += frames.length;
        if (sent >= framesPerPump) this.schedulePump();
      }
    }
  }

  /**
   * Storage failed: nothing more can be made durable. Every write, flush and write waiting for
   * journal room is answered with the failure now (a full disk stays recognisable in its cause),
   * and the owner is told to stop the process. Everything acknowledged is in the journal.
   */
  private fail(error: unknown): void {
    if (this.fatal) return;
    this.fatal = error instanceof Error ? error : new Error(String(error));
    this.fault = storageFaultOf(this.fatal, new Date());
    this.logger.error('storage-failed', { kind: this.fault.kind, reason: this.fault.message });
    for (const waiter of [...this.waiters.values(), ...this.flushWaiters.values()]) waiter.reject(this.fatal);
    this.waiters.clear();
    this.flushWaiters.clear();
    for (const reject of this.waitingRejects) reject(this.fatal);
    this.waiting = [];
    this.waitingRejects = [];
    this.onFatal(this.fatal);
  }

  status(): PrimaryNodeStatus {
    return {
      ...this.core.status(Date.now()),
      site: this.identity.site,
      generation: currentGeneration(this.identity).id,
      journalFiles: this.journal.segmentCount,
      journalDiskBytes: this.journal.bytes,
      journalCapacityBytes: this.config.journal.capacity,
      journalFull: this.journal.bytes >= this.config.journal.capacity,
      writesWaiting: this.waiting.length,
      journalWrites: this.journal.writeCalls,
      journalSyncs: this.journal.syncCalls,
      journalAppends: this.journal.appended,
      fault: this.fault,
    };
  }

  /**
   * Stops taking writes, makes everything durable, closes the links and files; the same path after
   * a storage failure (then the failure is not reported again). NBD clients get NBD_ESHUTDOWN for
   * new requests while those in flight finish. Rejects with the first new storage error.
   */
  stop(options: StopOptions = {}): Promise<void> {
    this.stopped ??= this.stopOnce(options);
    return this.stopped;
  }

  private async stopOnce(options: StopOptions): Promise<void> {
    if (this.timer) clearInterval(this.timer);
    this.stopWatchingTls();
    await this.nbd?.shutdown(options.nbdDrainMs ?? this.config.shutdown.timeoutMs / 2);
    this.stopping = true;
    // Writes still waiting for journal room were never journaled: they fail, loudly, not silently.
    this.waitingRejects.forEach((reject) => {
      reject(new PrimaryNodeError('stopping', 'the primary stopped before this write could be journaled'));
    });
    this.waiting = [];
    this.waitingRejects = [];
    const errors: unknown[] = [];
    const attempt = (step: () => Promise<unknown> | unknown) =>
      Promise.resolve()
        .then(step)
        .catch((error) => errors.push(error));
    await attempt(() => this.journal.sync());
    await this.writeBackTail;
    for (const socket of this.sockets.values()) socket.close('primary stopping');
    await attempt(() => Promise.all(this.volumes.map((volume) => volume.flush())));
    await attempt(() => this.journal.close());
    for (const volume of this.volumes) volume.close();
    await closeStatusServer(this.http, this.fault ? (options.statusLingerMs ?? 0) : 0);
    this.logger.info('primary-stopped', { capture: this.core.capture, closed: this.core.closed });
    // After a storage failure the same failure comes back from every step: it was reported.
    if (errors.length > 0 && !this.fatal) throw errors[0];
  }
}
