/**
 * A secondary site as a process: the Secondary state machine wired to its receive journal (segment
 * files), its volume files, a TCP listener for the primary's connections, timers and the status
 * endpoint. Everything the state machine asks for is done here, and its completions are fed back.
 */
import type { Server as HttpServer } from 'node:http';
import { createServer, type Server, type Socket } from 'node:net';
import { join } from 'node:path';
import { createServer as createTlsServer, Server as TlsServer } from 'node:tls';
import { HandshakeError, type ProtocolError, type StorageFault, storageFaultOf } from '../core/errors.ts';
import type { Binding, SiteId } from '../core/identity.ts';
import { type LinkTimings, limits } from '../core/limits.ts';
import type { SecondaryRecord } from '../core/records.ts';
import { checkHello, Secondary, type SecondaryAction } from '../core/secondary.ts';
import type { GroupShape } from '../core/types.ts';
import { nodeFileSystem } from '../io/node-file-system.ts';
import type { NbdExport } from '../nbd/connection.ts';
import { type NbdServer, startNbdServer } from '../nbd/server.ts';
import { FramedSocket } from '../net/framed-socket.ts';
import { explainPskFailure, loadPsk, type PskMaterial, pskServerOptions } from '../net/psk.ts';
import { loadTlsMaterial, refusalOfClient, serverOptions, type TlsMaterial } from '../net/tls.ts';
import type { SecondaryFileConfig } from '../ops/config.ts';
import type { Logger } from '../ops/logger.ts';
import { SiteMetrics } from '../ops/metrics.ts';
import { closeStatusServer, listenOn, startStatusServer } from '../ops/status-server.ts';
import type { Frame, HelloFrame } from '../protocol/frames.ts';
import { applyOverlay, collectOverlay } from '../storage/block-overlay.ts';
import { secondaryRecordCodec } from '../storage/record-codec.ts';
import { SegmentJournal } from '../storage/segment-journal.ts';
import { type VolumeRecord, writeSiteFileIfChanged } from '../storage/site-file.ts';
import type { VolumeFile } from '../storage/volume-file.ts';
import { logLinkSecurity, watchLinkSecurityFiles } from './link-security.ts';
import type { StopOptions } from './primary-node.ts';
import { loadSecondaryIdentity } from './site-identity.ts';
import { createSecondarySite, type OpenedSite, openSecondarySite } from './site-storage.ts';
import { volumeWritesInFlight, WriteQueue } from './write-queue.ts';

/** Incoming connections accepted at once; more are refused before any byte is read. */
const connectionsMax = limits.connectionsPerLinkMax * 2;
const receiveSegmentBytes = 64 * 1024 * 1024;
/** A read that keeps meeting new applies gives up after this many attempts. */
const readRetriesMax = 100;

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
  volumes: { name: string; sizeBytes: number }[];
  /** Why the site is stopping on its own, or null: the storage failure and when it happened. */
  fault: StorageFault | null;
}

export function linkTimingsOf(link: SecondaryFileConfig['link']): LinkTimings {
  return {
    heartbeatMsInterval: link.heartbeatMs,
    heartbeatMsTimeout: link.timeoutMs,
    reconnectMsMin: link.reconnectMinMs,
    reconnectMsMax: link.reconnectMaxMs,
    cyclesInFlightMax: link.cyclesInFlightMax,
    storedProgressMsTimeout: link.storedProgressTimeoutMs,
  };
}

export class SecondaryNode {
  /** Prometheus figures of this site (GET /metrics). */
  readonly metrics = new SiteMetrics('secondary', () => this.status());
  private core: Secondary | null = null;
  private journal: SegmentJournal<SecondaryRecord> | null = null;
  private volumes: VolumeFile[] = [];
  private shape: GroupShape | null;
  private readonly sockets = new Map<number, FramedSocket>();
  private nextConnection = 1;
  private server: Server | null = null;
  private http: HttpServer | null = null;
  private nbd: NbdServer | null = null;
  private tlsMaterial: TlsMaterial | null = null;
  private pskMaterial: PskMaterial | null = null;
  private stopWatchingTls: () => void = () => {};
  private timer: NodeJS.Timeout | null = null;
  /** Volume writes of the cycle being applied, a few at a time. */
  private readonly volumeWrites = new WriteQueue(volumeWritesInFlight);
  private stopping = false;
  private stopped: Promise<void> | null = null;
  /** Set when storage failed: the process must stop, the replica is left as the journal knows it. */
  fatal: Error | null = null;
  /** This site's identity, and the primary site and generation it follows (null until bound). */
  private readonly site: SiteId;
  private binding: Binding | null;
  /** The volumes this site created, as site.json records them (null until they exist). */
  private volumeRecords: VolumeRecord[] | null = null;
  fault: StorageFault | null = null;

  private constructor(
    private readonly config: SecondaryFileConfig,
    private readonly logger: Logger,
    private readonly onFatal: (error: Error) => void,
  ) {
    const identity = loadSecondaryIdentity(nodeFileSystem, config.dataDir, logger);
    this.site = identity.site;
    this.binding = identity.binding;
    this.shape = null;
  }

  /** Starts the site; `offline` opens storage and finishes interrupted work only (for recover). */
  static async start(
    config: SecondaryFileConfig,
    logger: Logger,
    onFatal: (error: Error) => void,
    options: { offline?: boolean } = {},
  ): Promise<SecondaryNode> {
    const node = new SecondaryNode(config, logger, onFatal);
    const site = openSecondarySite(nodeFileSystem, config);
    if (site) node.openStorage(site);
    else
      logger.info('waiting-for-primary', {
        reason: 'no volumes configured; they are taken from the primary at first contact',
      });
    if (options.offline) return node;
    node.server = node.createLinkServer();
    node.server.maxConnections = connectionsMax;
    await listenOn(node.server, config.listen);
    logLinkSecurity(config, logger);
    node.stopWatchingTls = watchLinkSecurityFiles(config, () => node.reloadTls());
    if (config.http)
      node.http = await startStatusServer(config.http.listen, () => node.status(), config.http, node.metrics);
    if (config.nbd)
      node.nbd = await startNbdServer(
        config.nbd,
        () => node.nbdExports(),
        logger,
        () => node.tlsMaterial?.context ?? null,
        (command, error) => node.metrics.observeNbdRequest(command, error),
      );
    node.timer = setInterval(() => node.tick(), Math.max(10, Math.floor(config.link.heartbeatMs / 4)));
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
    // A new site is recorded at once: its images exist from now on.
    if (site.created) this.writeSite(shape);
    const opened = SegmentJournal.open<SecondaryRecord>({
      fs: nodeFileSystem,
      directory: join(this.config.dataDir, 'journal'),
      segmentBytesMax: receiveSegmentBytes,
      codec: secondaryRecordCodec,
      checkpoint: () => [{ kind: 'applied', cycle: this.core?.appliedDurable ?? 0 }],
    });
    if (opened.report.cut) this.logger.warn('journal-tail-cut', { ...opened.report.cut });
    // Every check passed: only now is site.json brought up to date (a refused start changes nothing).
    this.writeSite(shape);
    this.volumes = files;
    this.journal = opened.journal;
    this.core = Secondary.recover(
      { name: this.config.name, shape, timings: linkTimingsOf(this.config.link), binding: this.binding },
      opened.records,
    );
    this.shape = shape;
    this.run(this.core.start());
  }

  /** site.json with this site's identity, binding and volume records; atomic (see writeSiteFile). */
  private writeSite(shape: GroupShape | null): void {
    writeSiteFileIfChanged(nodeFileSystem, this.config.dataDir, {
      role: 'secondary',
      config: this.config,
      shape,
      site: this.site,
      binding: this.binding,
      ...(this.volumeRecords ? { volumes: this.volumeRecords } : {}),
    });
  }

  /** Plain TCP, or TLS 1.3 requiring a client certificate from the CA and an allowed identity. */
  private createLinkServer(): Server {
    if (this.config.psk) return this.createPskServer(this.config.psk);
    if (!this.config.tls) return createServer({ pauseOnConnect: false }, (socket) => this.accept(socket));
    this.tlsMaterial = loadTlsMaterial(this.config.tls);
    const server = createTlsServer(serverOptions(this.tlsMaterial), (socket) => {
      const refusal = refusalOfClient(socket, (this.tlsMaterial as TlsMaterial).peers);
      if (refusal) {
        this.logger.warn('primary-refused', {
          code: socket.authorized ? 'peer-identity' : 'peer-untrusted',
          reason: refusal,
          from: socket.remoteAddress ?? '',
        });
        socket.destroy();
        return;
      }
      this.accept(socket);
    });
    server.on('tlsClientError', (error, socket) => {
      this.logger.warn('primary-refused', {
        code: 'tls',
        reason: error.message,
        from: socket.remoteAddress ?? '',
      });
    });
    return server;
  }

  /** TLS 1.3 with the pre-shared key; the primary's identity must be among psk.peers. */
  private createPskServer(config: NonNullable<SecondaryFileConfig['psk']>): Server {
    this.pskMaterial = loadPsk(config);
    const server = createTlsServer(
      pskServerOptions(
        () => this.pskMaterial as PskMaterial,
        (identity) =>
          this.logger.warn('primary-refused', {
            code: 'peer-identity',
            reason: `identity ${identity} is not among the allowed peers (${(this.pskMaterial as PskMaterial).peers.join(', ')})`,
          }),
      ),
      (socket) => this.accept(socket),
    );
    server.on('tlsClientError', (error, socket) => {
      this.logger.warn('primary-refused', {
        code: 'tls',
        reason: explainPskFailure(error.message),
        from: socket.remoteAddress ?? '',
      });
    });
    return server;
  }

  /** Reads the certificate, key and CA (or the pre-shared key) again: new connections use them. */
  reloadTls(): void {
    if (this.config.psk) {
      try {
        this.pskMaterial = loadPsk(this.config.psk);
        this.logger.info('tls-reloaded', { file: this.config.psk.keyFile });
      } catch (error) {
        this.logger.error('tls-reload-failed', {
          reason: (error as Error).message,
          keeping: 'the previous key',
        });
      }
      return;
    }
    if (!this.config.tls || !(this.server instanceof TlsServer)) return;
    try {
      const material = loadTlsMaterial(this.config.tls);
      this.server.setSecureContext(serverOptions(material));
      this.tlsMaterial = material;
      this.logger.info('tls-reloaded', { cert: this.config.tls.cert });
    } catch (error) {
      this.logger.error('tls-reload-failed', {
        reason: (error as Error).message,
        keeping: 'the previous certificate',
      });
    }
  }

  private accept(socket: Socket): void {
    if (this.stopping) {
      socket.destroy();
      return;
    }
    const id = this.nextConnection++;
    const framed = new FramedSocket(socket, {
      onFrame: (frame) => this.onFrame(id, frame),
      onProtocolError: (error) => {
        this.logger.warn('bad-bytes-from-primary', {
          connection: id,
          code: error.code,
          reason: error.message,
        });
        if (this.core) this.run(this.core.onProtocolError(Date.now(), id, error));
        else this.refuseBeforeStorage(id, error);
      },
      onClose: (reason) => {
        this.sockets.delete(id);
        if (this.core) this.run(this.core.onConnectionLost(Date.now(), id, reason));
      },
    });
    this.sockets.set(id, framed);
    if (this.core) this.run(this.core.onConnectionOpened(Date.now(), id));
  }

  private onFrame(connection: number, frame: Frame): void {
    // Storage failed: store nothing more, answer nothing more; the process is on its way out.
    if (this.fatal) return;
    if (!this.core && frame.type === 'hello') this.adoptShape(connection, frame);
    if (!this.core) {
      this.sockets.get(connection)?.destroy('no volumes yet and the first frame is not a hello');
      return;
    }
    this.run(this.core.onFrame(Date.now(), connection, frame));
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
      this.openStorage(createSecondarySite(nodeFileSystem, this.config, shape));
    } catch (error) {
      this.fail(error);
      return;
    }
    for (const id of this.sockets.keys())
      this.run((this.core as Secondary).onConnectionOpened(Date.now(), id));
  }

  /** No storage is open yet, so no state machine: the refusal is sent from here. */
  private refuseBeforeStorage(connection: number, error: HandshakeError | ProtocolError): void {
    this.logger.error('primary-refused', { code: error.code, reason: error.message });
    const socket = this.sockets.get(connection);
    socket?.send({ type: 'error', code: error.code, message: error.message });
    socket?.close(`${error.code}: ${error.message}`);
  }

  private tick(): void {
    if (this.core) this.run(this.core.onTick(Date.now()));
  }

  private run(actions: SecondaryAction[]): void {
    for (const action of actions) {
      // After a storage failure nothing more is done: a binding that did not reach the disk must
      // not be followed by a welcome.
      if (this.fatal) return;
      this.execute(action);
    }
  }

  private execute(action: SecondaryAction): void {
    const journal = this.journal as SegmentJournal<SecondaryRecord>;
    switch (action.type) {
      case 'bind':
        this.bind(action.binding);
        return;
      case 'send':
        this.sockets.get(action.connection)?.send(action.frame);
        return;
      case 'close':
        this.sockets.get(action.connection)?.close(action.reason);
        return;
      case 'journal-append':
        journal.append(action.record).catch((error) => this.fail(error));
        return;
      case 'journal-sync':
        journal.sync().then(
          () => this.complete((core) => core.onJournalSynced(Date.now(), action.upTo)),
          (error) => this.fail(error),
        );
        return;
      case 'journal-release':
        journal.deleteUpTo(action.upTo).catch((error) => this.fail(error));
        return;
      case 'volume-write': {
        const volume = this.volumes[action.extent.volume] as VolumeFile;
        this.volumeWrites.push(() => volume.writeExtent(action.extent));
        return;
      }
      case 'volume-sync': {
        this.volumeWrites
          .drained()
          .then(() => Promise.all(this.volumes.map((volume) => volume.flush())))
          .then(
            () => this.complete((core) => core.onVolumesSynced(Date.now(), action.token)),
            (error) => this.fail(error),
          );
        return;
      }
      case 'log':
        this.logger.log(action.entry);
        return;
    }
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

  private complete(step: (core: Secondary) => SecondaryAction[]): void {
    if (this.core && !this.fatal) this.run(step(this.core));
  }

  private fail(error: unknown): void {
    if (this.fatal) return;
    this.fatal = error instanceof Error ? error : new Error(String(error));
    this.fault = storageFaultOf(this.fatal, new Date());
    this.logger.error('storage-failed', { kind: this.fault.kind, reason: this.fault.message });
    this.onFatal(this.fatal);
  }

  /** Resolves once every stored cycle is applied and durable (for recover and tests). */
  async settle(timeoutMs = 60_000): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    while (this.core && this.core.appliedDurable < this.core.stored && !this.fatal) {
      if (Date.now() > deadline) throw new Error(`apply did not finish within ${timeoutMs} ms`);
      await new Promise((resolve) => setTimeout(resolve, 5));
    }
    if (this.fatal) throw this.fatal;
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
    for (let attempt = 0; ; attempt++) {
      const applied = core.applied;
      const overlay = collectOverlay(offset, length, file.blockBytes, (block) => core.overlay(volume, block));
      const bytes = await file.read(offset, length);
      if (core.applied === applied) return applyOverlay(bytes, offset, file.blockBytes, overlay);
      if (attempt >= readRetriesMax) throw new Error(`read of volume ${volume} kept racing applies`);
    }
  }

  /**
   * One read-only NBD export per volume, showing the applied image. Volumes taken from the primary
   * at first contact are exported from then on (exports are looked up when a client asks).
   */
  nbdExports(): NbdExport[] {
    const refuse = (): Promise<void> => Promise.reject(new Error('the secondary is read-only'));
    return (this.shape?.volumes ?? []).map((volume, index) => ({
      name: volume.name,
      sizeBytes: volume.sizeBytes,
      blockBytes: this.shape?.blockBytes ?? 4096,
      readOnly: true,
      read: (offset, length) => this.read(index, offset, length),
      write: refuse,
      writeZeroes: refuse,
      flush: () => Promise.resolve(),
    }));
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
      volumes: this.shape?.volumes ?? [],
      fault: this.fault,
    };
  }

  /**
   * Stops taking connections, lets the journal and volumes settle, closes everything; the same path
   * after a storage failure. NBD readers get NBD_ESHUTDOWN for new requests while those in flight
   * finish. Rejects with the first new storage error.
   */
  stop(options: StopOptions = {}): Promise<void> {
    this.stopped ??= this.stopOnce(options);
    return this.stopped;
  }

  private async stopOnce(options: StopOptions): Promise<void> {
    this.stopping = true;
    if (this.timer) clearInterval(this.timer);
    this.stopWatchingTls();
    await this.nbd?.shutdown(options.nbdDrainMs ?? this.config.shutdown.timeoutMs / 2);
    for (const socket of this.sockets.values()) socket.close('secondary stopping');
    await new Promise<void>((resolve) => (this.server ? this.server.close(() => resolve()) : resolve()));
    const errors: unknown[] = [];
    const attempt = (step: () => Promise<unknown>) =>
      step().catch((error: unknown) => {
        errors.push(error);
      });
    await attempt(() => this.volumeWrites.drained());
    await attempt(() => Promise.all(this.volumes.map((volume) => volume.flush())));
    await attempt(async () => this.journal?.close());
    for (const volume of this.volumes) volume.close();
    await closeStatusServer(this.http, this.fault ? (options.statusLingerMs ?? 0) : 0);
    this.logger.info('secondary-stopped', {
      stored: this.core?.stored ?? 0,
      applied: this.core?.applied ?? 0,
    });
    // After a storage failure the same failure comes back from every step: it was reported.
    if (errors.length > 0 && !this.fatal) throw errors[0];
  }
}
