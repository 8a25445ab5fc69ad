/**
 * One seeded run of whole sites: a real PrimaryNode and real SecondaryNodes, built from their
 * configs, with their real journals, volume files, write-back, apply and redo, over simulated disks
 * (SimFileSystem), simulated links (SimNetwork) and simulated time (World). Sources write through the
 * primary's library API; faults cut, stall and corrupt links and crash sites as processes (kill -9)
 * or machines (power loss); crashed secondaries come back directly or through `cyclerep recover`.
 *
 * The oracle is the History: every image a site shows (its read path, at any moment) and every
 * secondary's files after a recover must be a consistent cut of what the sources did; the primary
 * must show every write that was acknowledged (or, after a machine crash, acknowledged before a
 * completed FLUSH); applied never goes down; when the faults stop, every site converges to the whole
 * history, in its read path and in its files.
 */

import { limits } from '../../core/limits.ts';
import type { LogEntry } from '../../core/types.ts';
import type { SiteEnvironment } from '../../io/environment.ts';
import { PrimaryNode } from '../../node/primary-node.ts';
import { SecondaryNode } from '../../node/secondary-node.ts';
import { type PrimaryFileConfig, type SecondaryFileConfig, validateConfig } from '../../ops/config.ts';
import type { Logger } from '../../ops/logger.ts';
import { Random } from '../random.ts';
import { type FaultHandle, SimFileSystem } from '../sim-file-system.ts';
import { History } from './history.ts';
import { SimNetwork } from './sim-network.ts';
import {
  drawSiteScenario,
  type SiteFault,
  type SiteFaultKind,
  type SiteScenario,
  type SiteTracking,
  siteFaultKinds,
} from './site-scenario.ts';
import { Sources } from './sources.ts';
import { SimProcess, World } from './world.ts';

const checkEveryMs = 100;
const traceLinesMax = 120;

export interface SiteRunStats {
  events: number;
  writes: number;
  zeroRuns: number;
  flushes: number;
  reissued: number;
  lostInCrash: number;
  refused: number;
  faults: Record<SiteFaultKind, number>;
  restarts: number;
  /** Sites that stopped on an injected disk fault and came back. */
  failStops: number;
  recovers: number;
  imagesJudged: number;
  /** fsyncs and fdatasyncs that completed, on every disk. */
  syncs: number;
  /** Unsynced sectors machine crashes lost or tore, and unsynced directory entries they reverted. */
  lostSectors: number;
  tornSectors: number;
  revertedEntries: number;
  /** From the primary's log: secondaries switched to a bitmap, resyncs begun and ended, initial syncs. */
  trackingStarted: number;
  resyncStarted: number;
  resyncComplete: number;
  initialSyncs: number;
  /** `image-inconsistent` warnings: an in-place resync began (or a start found one unfinished). */
  inconsistentImageWarnings: number;
  /** Images of a secondary left unjudged because it said they were inconsistent (in-place only). */
  imagesInconsistent: number;
  simulatedMs: number;
}

export interface SiteRunResult {
  seed: number;
  violations: string[];
  trace: string[];
  stats: SiteRunStats;
}

interface Site<N> {
  name: string;
  dataDir: string;
  disk: SimFileSystem;
  process: SimProcess | null;
  node: N | null;
  incarnations: number;
  /** Highest applied number this site ever reported (secondaries). */
  appliedMax: number;
  /** The least cut of the last image its read path showed: what it may never fall below. */
  floor: number[];
  /** Once the sources are done: its read path showed every write. */
  readHoldsAll: boolean;
  /** A disk fault was injected since this process started: a storage failure is expected. */
  diskFault: { handle: FaultHandle; untilMs: number } | null;
}

export class SiteRun {
  private readonly world = new World((owner, error) => {
    const where = owner ? owner.name : 'the simulator';
    this.violation(
      `${where} threw (a real process would die of it): ${(error as Error)?.stack ?? String(error)}`,
    );
  });
  private readonly random: Random;
  private readonly history: History;
  private readonly sources: Sources;
  private readonly network: SimNetwork;
  private readonly primary: Site<PrimaryNode>;
  private readonly secondaries: Site<SecondaryNode>[];
  private readonly primaryConfig: PrimaryFileConfig;
  private readonly secondaryConfigs: SecondaryFileConfig[];
  private readonly violations: string[] = [];
  private readonly trace: string[] = [];
  private readonly stats: SiteRunStats;
  private done = false;

  constructor(
    private readonly scenario: SiteScenario,
    private readonly traceAll = false,
  ) {
    this.random = new Random(scenario.seed ^ 0x5eed);
    const owners = History.drawOwners(this.random.fork(), scenario.volumeBlocks, scenario.sources);
    this.history = new History(scenario.sources, scenario.volumeBlocks, scenario.blockBytes, owners);
    const links = new Map(
      scenario.latencyMs.map((latency, index) => [this.listenAddress(index), latency] as const),
    );
    this.network = new SimNetwork(this.world, this.random.fork(), links);
    this.sources = new Sources(
      this.history,
      this.random.fork(),
      scenario,
      (ms, run) => this.world.schedule(null, ms, run),
      (text) => this.violation(text),
      traceAll ? (line) => this.note(line) : undefined,
    );
    this.primaryConfig = this.buildPrimaryConfig();
    this.secondaryConfigs = Array.from({ length: scenario.secondaries }, (_, index) =>
      this.buildSecondaryConfig(index),
    );
    this.primary = this.newSite('primary', this.primaryConfig.dataDir, 0);
    this.secondaries = this.secondaryConfigs.map((config, index) =>
      this.newSite(config.name, config.dataDir, index + 1),
    );
    this.stats = {
      events: 0,
      writes: 0,
      zeroRuns: 0,
      flushes: 0,
      reissued: 0,
      lostInCrash: 0,
      refused: 0,
      faults: Object.fromEntries(siteFaultKinds.map((kind) => [kind, 0])) as Record<SiteFaultKind, number>,
      restarts: 0,
      failStops: 0,
      recovers: 0,
      imagesJudged: 0,
      syncs: 0,
      lostSectors: 0,
      tornSectors: 0,
      revertedEntries: 0,
      trackingStarted: 0,
      resyncStarted: 0,
      resyncComplete: 0,
      initialSyncs: 0,
      inconsistentImageWarnings: 0,
      imagesInconsistent: 0,
      simulatedMs: 0,
    };
  }

  private listenAddress(index: number): string {
    return `127.0.0.1:${7400 + index}`;
  }

  private newSite<N>(name: string, dataDir: string, diskIndex: number): Site<N> {
    return {
      name,
      dataDir,
      disk: this.newDisk(dataDir, diskIndex),
      process: null,
      node: null,
      incarnations: 0,
      appliedMax: 0,
      floor: [],
      readHoldsAll: false,
      diskFault: null,
    };
  }

  /** A site's disk, empty but for the data directory when the operator provisions it. */
  private newDisk(dataDir: string, diskIndex: number): SimFileSystem {
    const speed = this.scenario.disks[diskIndex] as SiteScenario['disks'][number];
    const disk = new SimFileSystem({
      random: this.random.fork(),
      scheduler: { after: (ms, run) => this.world.schedule(null, ms, run) },
      ioDelayMsMax: speed.ioDelayMsMax,
      syncDelayMsMax: speed.syncDelayMsMax,
      slowFiles: { matches: (path) => path.includes('/volumes/'), factor: speed.volumesSlower },
    });
    if (this.scenario.provisioned) {
      // The operator made the data directory (a mount point, say) and it is durable.
      disk.mkdirSync(dataDir, 0o700);
      const parent = disk.openSync('/sim', 'r');
      disk.fsyncSync(parent);
      disk.closeSync(parent);
      const root = disk.openSync('/', 'r');
      disk.fsyncSync(root);
      disk.closeSync(root);
    }
    return disk;
  }

  private buildPrimaryConfig(): PrimaryFileConfig {
    const scenario = this.scenario;
    const config = validateConfig(
      {
        group: 'sim',
        role: 'primary',
        dataDir: '/sim/primary',
        blockSize: scenario.blockBytes,
        volumes: scenario.volumeBlocks.map((blocks, index) => ({
          name: `vol${index}`,
          size: blocks * scenario.blockBytes,
        })),
        ack: scenario.ack,
        ...(scenario.tracking ? { tracking: this.trackingConfig(scenario.tracking) } : {}),
        cycle: { intervalMinMs: scenario.cycleIntervalMinMs, queuedMax: scenario.cycleQueuedMax },
        link: this.linkConfig(),
        secondaries: Array.from({ length: scenario.secondaries }, (_, index) => ({
          name: `dr${index + 1}`,
          address: this.listenAddress(index),
          connections: scenario.connectionsPerLink,
        })),
      },
      'sim primary',
    ) as PrimaryFileConfig;
    // Segments far below the smallest a user may configure, so that rollover happens every few
    // cycles; a journal of a few of them, so that an away secondary switches to tracking.
    const capacity = scenario.tracking?.journalCapacity ?? config.journal.capacity;
    return { ...config, journal: { capacity, segmentSize: scenario.segmentBytes } };
  }

  private trackingConfig(tracking: SiteTracking): Record<string, number> {
    const granularity = tracking.granularityBlocks * this.scenario.blockBytes;
    return {
      journalFraction: tracking.journalFraction,
      awaySecondsMax: tracking.awaySecondsMax,
      granularity,
      copyWindow: Math.max(granularity, limits.packetBytesMax),
    };
  }

  private buildSecondaryConfig(index: number): SecondaryFileConfig {
    const config = validateConfig(
      {
        group: 'sim',
        role: 'secondary',
        name: `dr${index + 1}`,
        dataDir: `/sim/dr${index + 1}`,
        blockSize: this.scenario.blockBytes,
        listen: this.listenAddress(index),
        link: this.linkConfig(),
        resync: { staging: this.scenario.resyncStaging[index] ?? 'consistent' },
      },
      `sim dr${index + 1}`,
    ) as SecondaryFileConfig;
    // A recovery cycle's packet may hold every block of the group: a segment must fit it.
    const groupBytes =
      this.scenario.volumeBlocks.reduce((sum, blocks) => sum + blocks, 0) * this.scenario.blockBytes;
    return { ...config, journal: { segmentSize: Math.max(this.scenario.segmentBytes, groupBytes + 8192) } };
  }

  private linkConfig(): Record<string, number> {
    const scenario = this.scenario;
    return {
      heartbeatMs: scenario.heartbeatMs,
      timeoutMs: scenario.timeoutMs,
      reconnectMinMs: scenario.reconnectMinMs,
      reconnectMaxMs: scenario.reconnectMaxMs,
      cyclesInFlightMax: scenario.cyclesInFlightMax,
      storedProgressTimeoutMs: scenario.heartbeatMs * 50,
    };
  }

  // ---- the run ----

  async run(): Promise<SiteRunResult> {
    const onUnhandled = (reason: unknown): void => {
      this.violation(
        `a promise was rejected and nobody handled it (a real process would die of it): ${(reason as Error)?.stack ?? String(reason)}`,
      );
    };
    process.on('unhandledRejection', onUnhandled);
    try {
      return await this.runScenario();
    } finally {
      process.off('unhandledRejection', onUnhandled);
    }
  }

  private async runScenario(): Promise<SiteRunResult> {
    const scenario = this.scenario;
    this.secondaries.forEach((site, index) => {
      this.startSecondary(site, index, false);
    });
    this.startPrimary();
    for (const fault of scenario.faults) this.world.schedule(null, fault.atMs, () => this.inject(fault));
    this.world.schedule(null, checkEveryMs, () => this.periodicCheck());
    this.world.schedule(null, scenario.faultPhaseMs + 500, () => {
      this.sources.stopped = true;
      this.note('sources stop');
    });
    const endMs = scenario.faultPhaseMs + 500 + scenario.settleMsMax;
    while (!this.done && this.violations.length === 0 && (await this.world.step(endMs))) {}
    if (!this.done && this.violations.length === 0)
      this.violation(
        `no convergence within ${scenario.settleMsMax} ms after the sources stopped: ${this.standing()}`,
      );
    this.finishStats();
    this.kill();
    return { seed: scenario.seed, violations: this.violations, trace: this.trace, stats: this.stats };
  }

  private finishStats(): void {
    Object.assign(this.stats, this.sources.stats);
    this.stats.events = this.world.events;
    this.stats.simulatedMs = this.world.elapsedMs;
    for (const site of [this.primary, ...this.secondaries]) this.countDisk(site.disk);
  }

  private countDisk(disk: SimFileSystem): void {
    this.stats.syncs += disk.stats.syncs;
    this.stats.lostSectors += disk.stats.lostSectors;
    this.stats.tornSectors += disk.stats.tornSectors;
    this.stats.revertedEntries += disk.stats.revertedEntries;
  }

  /** Ends every process, so no callback of this run outlives it. */
  private kill(): void {
    for (const site of [this.primary, ...this.secondaries]) if (site.process) site.process.alive = false;
  }

  // ---- sites ----

  private environmentOf(site: Site<unknown>, process: SimProcess): SiteEnvironment {
    const random = this.random.fork();
    return {
      fs: site.disk.forProcess(),
      clock: this.world.clockOf(process),
      random: () => random.next(),
      randomBytes: (count) => Uint8Array.from({ length: count }, () => random.int(256)),
      network: this.network.forProcess(process),
      processMetrics: false,
    };
  }

  private loggerOf(process: SimProcess): Logger {
    const log = (entry: LogEntry): void => {
      if (!process.alive) return;
      this.count(entry.event);
      if (entry.level === 'debug' && !this.traceAll) return;
      this.note(`${process.name} ${entry.level} ${entry.event} ${JSON.stringify(entry.fields)}`);
    };
    return {
      log,
      info: (event, fields = {}) => log({ level: 'info', event, fields }),
      warn: (event, fields = {}) => log({ level: 'warn', event, fields }),
      error: (event, fields = {}) => log({ level: 'error', event, fields }),
    };
  }

  /** The events of docs/resync.md, so that the run's summary shows they happen. */
  private count(event: string): void {
    if (event === 'tracking-started') this.stats.trackingStarted++;
    else if (event === 'resync-started') this.stats.resyncStarted++;
    else if (event === 'resync-complete') this.stats.resyncComplete++;
    else if (event === 'initial-sync') this.stats.initialSyncs++;
    else if (event === 'image-inconsistent') this.stats.inconsistentImageWarnings++;
  }

  private newProcess(site: Site<unknown>): SimProcess {
    site.incarnations++;
    const process = new SimProcess(site.name, site.incarnations);
    site.process = process;
    return process;
  }

  private startPrimary(): void {
    const site = this.primary;
    const process = this.newProcess(site);
    const restart = (): void => this.startPrimary();
    const onFatal = this.failStopOf(site, process, restart);
    this.runPrimary(process, onFatal).catch((error: Error) => {
      if (!process.alive) return;
      if (site.diskFault) this.exitAfterFailure(site, process, restart);
      else this.violation(`${process.name}: ${error.message}`);
    });
  }

  /**
   * Starts the primary and, before the sources go on, judges what it kept: after a machine crash
   * the largest cut holding every write made durable (the history forgets the rest); after a
   * process crash every acknowledged write, block by block.
   */
  private async runPrimary(process: SimProcess, onFatal: (error: Error) => void): Promise<void> {
    const site = this.primary;
    const node = await PrimaryNode.start(this.primaryConfig, this.loggerOf(process), onFatal, {
      environment: this.environmentOf(site, process),
    }).catch((error: Error) => {
      throw new Error(`did not start: ${error.message}`);
    });
    if (!process.alive) return;
    site.node = node;
    this.note(`${process.name} started`);
    const image = await this.readImage((volume, offset, length) => node.read(volume, offset, length));
    if (!process.alive) return;
    if (this.sources.awaitingSurvey) {
      const cut = this.history.greatestCut(
        (volume, block) => this.blockOf(image, volume, block),
        [...this.sources.durable],
      );
      if (cut.problem !== null) {
        this.violation(`${process.name} after a machine crash: ${cut.problem}`);
        return;
      }
      this.note(`${process.name} kept writes ${cut.prefix.join(',')} of ${this.sources.issued.join(',')}`);
      this.sources.survived(cut.prefix);
    } else {
      const problem = this.judgePrimaryImage(image, this.sources.acknowledged, this.sources.issued);
      if (problem) {
        this.violation(`${process.name} after its start: ${problem}`);
        return;
      }
    }
    this.sources.attach(node);
  }

  /** The primary's image block by block: every write in `lower` there, nothing past `upper`. */
  private judgePrimaryImage(
    image: Uint8Array[],
    lower: readonly number[],
    upper: readonly number[],
  ): string | null {
    for (let volume = 0; volume < image.length; volume++) {
      this.stats.imagesJudged++;
      const problem = this.history.judgeBlocks(
        (v, block) => this.blockOf(image, v, block),
        volume,
        lower,
        upper,
      );
      if (problem) return problem;
    }
    return null;
  }

  private startSecondary(site: Site<SecondaryNode>, index: number, recoverFirst: boolean): void {
    const process = this.newProcess(site);
    const config = this.secondaryConfigs[index] as SecondaryFileConfig;
    const restart = (): void => this.startSecondary(site, index, false);
    const onFatal = this.failStopOf(site, process, restart);
    const options = { environment: this.environmentOf(site, process) };
    const recovered = recoverFirst
      ? SecondaryNode.start(config, this.loggerOf(process), onFatal, { ...options, offline: true }).then(
          async (node) => {
            await node.settle();
            const image = node.imageState;
            await node.stop();
            // `cyclerep recover` exits here: nothing it started may still be running.
            if (site.disk.pendingOperations > 0)
              this.violation(
                `${process.name}: cyclerep recover stopped with ${site.disk.pendingOperations} disk calls still running`,
              );
            this.stats.recovers++;
            // Recovered in the middle of an in-place resync, the files are no consistent cut: unjudged.
            if (this.mayBeInconsistent(site, image, image)) this.stats.imagesInconsistent++;
            else this.judgeFiles(site, 'after cyclerep recover', this.floorOf(site));
          },
        )
      : Promise.resolve();
    recovered
      .then(() =>
        process.alive ? SecondaryNode.start(config, this.loggerOf(process), onFatal, options) : null,
      )
      .then(
        (node) => {
          if (!node || !process.alive) return;
          site.node = node;
          this.note(`${process.name} started`);
        },
        (error: Error) => {
          if (!process.alive) return;
          if (site.diskFault) this.exitAfterFailure(site, process, restart);
          else this.violation(`${process.name} did not start: ${error.message}`);
        },
      );
  }

  /**
   * What the daemon does on a storage failure: stop (every request answered with the failure),
   * exit 3. Expected only after a disk fault was injected; the site comes back once it is over.
   */
  private failStopOf(site: Site<PrimaryNode | SecondaryNode>, process: SimProcess, restart: () => void) {
    return (error: Error): void => {
      if (!process.alive) return;
      if (!site.diskFault) {
        this.violation(`${process.name}: storage failed with no disk fault injected: ${error.message}`);
        return;
      }
      this.note(`${process.name} fail-stops: ${error.message}`);
      const stopped = site.node ? site.node.stop() : Promise.resolve();
      stopped.then(
        () => this.exitAfterFailure(site, process, restart),
        () => this.exitAfterFailure(site, process, restart),
      );
    };
  }

  private exitAfterFailure(
    site: Site<PrimaryNode | SecondaryNode>,
    process: SimProcess,
    restart: () => void,
  ): void {
    if (!process.alive) return;
    this.stats.failStops++;
    this.crash(site as Site<unknown>, 'process');
    if (site === this.primary) this.sources.detach(false);
    const untilMs = site.diskFault?.untilMs ?? 0;
    this.world.schedule(null, Math.max(0, untilMs - this.world.elapsedMs) + 20, () => {
      site.diskFault = null;
      if (site === this.primary) this.sources.expectFailures = false;
      this.stats.restarts++;
      restart();
    });
  }

  /** Fails the site's disk: every write with ENOSPC for a while, or its next fdatasync with EIO. */
  private injectDiskFault(fault: SiteFault): void {
    const site = (fault.target === 0 ? this.primary : this.secondaries[fault.target - 1]) as Site<
      PrimaryNode | SecondaryNode
    >;
    if (!site.process?.alive) return;
    const handle =
      fault.kind === 'disk-full'
        ? site.disk.failWith({ call: 'write', code: 'ENOSPC' })
        : site.disk.failWith({ call: 'fdatasync', code: 'EIO', times: 1 });
    // Faults may overlap: the site stays faulted until the last of them ends (seed 2113 restarted
    // a secondary when a short fault ended inside a long one, on a disk still full).
    const untilMs = Math.max(site.diskFault?.untilMs ?? 0, this.world.elapsedMs + fault.durationMs);
    site.diskFault = { handle, untilMs };
    if (site === this.primary) this.sources.expectFailures = true;
    this.world.schedule(null, fault.durationMs, () => handle.cancel());
  }

  // ---- faults ----

  private inject(fault: SiteFault): void {
    if (this.done) return;
    this.stats.faults[fault.kind]++;
    this.note(`fault ${fault.kind} target ${fault.target} for ${fault.durationMs} ms`);
    const link = this.listenAddress(fault.target);
    switch (fault.kind) {
      case 'disk-full':
      case 'disk-error':
        this.injectDiskFault(fault);
        return;
      case 'connection-drop': {
        const connection = this.random.pick([...this.network.openConnections(link), null]);
        if (connection) this.network.reset(connection);
        return;
      }
      case 'connection-stall':
        for (const connection of this.network.openConnections(link))
          this.network.stall(connection, fault.durationMs);
        return;
      case 'byte-corrupt': {
        const connection = this.random.pick([...this.network.openConnections(link), null]);
        if (connection) this.network.corruptNextPiece(connection);
        return;
      }
      case 'link-partition':
        this.network.partition(link, fault.durationMs);
        return;
      case 'primary-crash':
      case 'primary-machine-crash':
        this.crashPrimary(fault.kind === 'primary-machine-crash' ? 'machine' : 'process', fault.durationMs);
        return;
      case 'secondary-crash':
      case 'secondary-machine-crash':
        this.crashSecondary(
          fault.target,
          fault.kind === 'secondary-machine-crash' ? 'machine' : 'process',
          fault.durationMs,
          fault.recover,
        );
        return;
      case 'secondary-wipe':
        this.wipeSecondary(fault.target, fault.durationMs);
        return;
    }
  }

  private crash(site: Site<unknown>, kind: 'process' | 'machine'): boolean {
    const process = site.process;
    if (!process?.alive) return false;
    process.alive = false;
    site.node = null;
    site.process = null;
    site.readHoldsAll = false;
    this.network.processDied(process);
    const before = site.disk.listFiles('current').join(' ');
    site.disk.crash(kind);
    this.note(`${process.name} crashed (${kind})`);
    if (this.traceAll)
      this.note(`  files before: ${before}\n  files after: ${site.disk.listFiles('current').join(' ')}`);
    return true;
  }

  private crashPrimary(kind: 'process' | 'machine', downMs: number): void {
    if (!this.crash(this.primary, kind)) return;
    this.sources.detach(kind === 'machine');
    this.world.schedule(null, downMs, () => {
      this.stats.restarts++;
      this.startPrimary();
    });
  }

  private crashSecondary(index: number, kind: 'process' | 'machine', downMs: number, recover: boolean): void {
    const site = this.secondaries[index] as Site<SecondaryNode>;
    if (!this.crash(site, kind)) return;
    this.world.schedule(null, downMs, () => {
      this.stats.restarts++;
      this.startSecondary(site, index, recover);
    });
  }

  /**
   * Stops a secondary, deletes its data directory (a new disk: nothing of it survives) and starts
   * it again empty. It comes back at cycle 0, all zeroes, a consistent cut: the floor it may never
   * fall below, and its applied number, start over with it.
   */
  private wipeSecondary(index: number, downMs: number): void {
    const site = this.secondaries[index] as Site<SecondaryNode>;
    if (!this.crash(site, 'process')) return;
    this.countDisk(site.disk);
    site.disk = this.newDisk(site.dataDir, index + 1);
    site.floor = [];
    site.appliedMax = 0;
    this.note(`${site.name} wiped`);
    this.world.schedule(null, downMs, () => {
      this.stats.restarts++;
      this.startSecondary(site, index, false);
    });
  }

  // ---- checks ----

  /**
   * Reads every site through its read path and judges what it shows. Volumes are read one after
   * the other, not at one instant: each is judged alone, and a secondary's volumes together only
   * when no apply began or ended meanwhile (a reader of several volumes sees several moments).
   */
  private periodicCheck(): void {
    if (this.done) return;
    this.world.schedule(null, checkEveryMs, () => this.periodicCheck());
    const settled = this.sources.stopped && this.sources.quiet;
    const primary = this.primary.node;
    const primaryProcess = this.primary.process;
    if (primary && primaryProcess && !this.sources.awaitingSurvey) {
      const lower = [...this.sources.acknowledged];
      this.readImage((volume, offset, length) => primary.read(volume, offset, length)).then(
        (image) => {
          if (!primaryProcess.alive) return;
          const problem = this.judgePrimaryImage(image, lower, this.sources.issued);
          if (problem) return this.violation(`${primaryProcess.name} read path: ${problem}`);
          if (settled) this.primary.readHoldsAll = this.holdsAll(image);
        },
        (error: Error) => {
          if (primaryProcess.alive && !this.primary.diskFault)
            this.violation(`${primaryProcess.name}: a read failed: ${error.message}`);
        },
      );
    }
    for (const site of this.secondaries) this.checkSecondary(site, settled);
    if (settled) this.checkConverged();
  }

  /**
   * A secondary's read path must show a consistent cut at least as new as the last it showed
   * (`floor`, the least cut of that image: never above the truth, so never a false alarm).
   */
  private checkSecondary(site: Site<SecondaryNode>, settled: boolean): void {
    const node = site.node;
    const process = site.process;
    if (!node || !process) return;
    // Before its first contact a new secondary has no volumes to show.
    if (node.status().volumes.length === 0) return;
    const applied = node.status().applied;
    if (applied < site.appliedMax)
      this.violation(`${site.name}: applied went down from ${site.appliedMax} to ${applied}`);
    site.appliedMax = Math.max(site.appliedMax, applied);
    const floor = this.floorOf(site);
    // What the secondary says of its image is used for in-place staging only: otherwise the history
    // judges every image, whatever the code under test claims.
    const before = node.imageState;
    this.readImage((volume, offset, length) => node.read(volume, offset, length)).then(
      (image) => {
        if (!process.alive) return;
        if (this.mayBeInconsistent(site, before, node.imageState)) {
          this.stats.imagesInconsistent++;
          return;
        }
        if (node.status().applied !== applied) {
          this.judgeEachVolume(`${process.name} read path`, image, floor);
          return;
        }
        this.stats.imagesJudged++;
        const cut = this.history.cut((volume, block) => this.blockOf(image, volume, block), floor);
        if (cut.problem !== null)
          return this.violation(`${process.name} read path, all volumes: ${cut.problem}`);
        site.floor = cut.prefix;
        if (settled) site.readHoldsAll = this.holdsAll(image);
      },
      (error: Error) => {
        if (process.alive && !site.diskFault)
          this.violation(`${process.name}: a read failed: ${error.message}`);
      },
    );
  }

  private inPlace(site: Site<unknown>): boolean {
    const index = this.secondaries.indexOf(site as Site<SecondaryNode>);
    return this.scenario.resyncStaging[index] === 'in-place';
  }

  /**
   * The one relaxation of the oracle: a secondary with in-place staging may show an image that is no
   * consistent cut between an in-place resync's first cycle applied and its consistent cycle. A read
   * is left unjudged when the image was said inconsistent at its start or end, or one was shown in
   * between; never for a secondary with consistent staging.
   */
  private mayBeInconsistent(
    site: Site<unknown>,
    before: SecondaryNode['imageState'],
    after: SecondaryNode['imageState'],
  ): boolean {
    if (!this.inPlace(site)) return false;
    return (
      !before.consistent ||
      !after.consistent ||
      before.inconsistentUnitsShown !== after.inconsistentUnitsShown
    );
  }

  /** The site's floor, within what the history still holds (a machine crash may have shortened it). */
  private floorOf(site: Site<unknown>): number[] {
    return this.history.sources.map((writes, source) => Math.min(site.floor[source] ?? 0, writes.length));
  }

  /** Whether `image` shows every write the sources issued. */
  private holdsAll(image: Uint8Array[]): boolean {
    return (
      this.history.judge((volume, block) => this.blockOf(image, volume, block), this.sources.issued) === null
    );
  }

  private judgeEachVolume(what: string, image: Uint8Array[], lower: readonly number[]): boolean {
    return image.every((_, volume) => this.judge(`${what}, volume ${volume}`, image, lower, [volume]));
  }

  /** Every volume, read whole through `read`. */
  private async readImage(
    read: (volume: number, offset: number, length: number) => Promise<Uint8Array>,
  ): Promise<Uint8Array[]> {
    const blockBytes = this.scenario.blockBytes;
    return Promise.all(
      this.scenario.volumeBlocks.map((blocks, volume) => read(volume, 0, blocks * blockBytes)),
    );
  }

  private judge(what: string, image: Uint8Array[], lower: readonly number[], volumes?: number[]): boolean {
    this.stats.imagesJudged++;
    const verdict = this.history.judge((volume, block) => this.blockOf(image, volume, block), lower, volumes);
    if (verdict) this.violation(`${what}: ${verdict}`);
    return verdict === null;
  }

  private blockOf(image: Uint8Array[], volume: number, block: number): Uint8Array {
    const blockBytes = this.scenario.blockBytes;
    return (image[volume] as Uint8Array).subarray(block * blockBytes, (block + 1) * blockBytes);
  }

  /** A site's volume files as its disk holds them (the page cache: what a reader of the files sees). */
  private filesOf(site: Site<unknown>): Uint8Array[] | string {
    const blockBytes = this.scenario.blockBytes;
    const image: Uint8Array[] = [];
    for (let volume = 0; volume < this.scenario.volumeBlocks.length; volume++) {
      const path = `${site.dataDir}/volumes/vol${volume}.img`;
      const bytes = site.disk.cachedBytes(path);
      const size = (this.scenario.volumeBlocks[volume] as number) * blockBytes;
      if (!bytes) return `${path} is missing`;
      if (bytes.length !== size) return `${path} is ${bytes.length} bytes, not ${size}`;
      image.push(bytes);
    }
    return image;
  }

  private judgeFiles(site: Site<unknown>, when: string, lower: readonly number[]): boolean {
    const image = this.filesOf(site);
    if (typeof image === 'string') {
      // A secondary that never heard of its volumes has none yet.
      if (lower.every((count) => count === 0)) return true;
      this.violation(`${site.name} files ${when}: ${image}`);
      return false;
    }
    return this.judge(`${site.name} files ${when}`, image, lower);
  }

  /** Once the sources are done: has every site every write, in its read path and its files? */
  private checkConverged(): void {
    const all = this.sources.issued;
    const sitesUp = this.primary.node && this.secondaries.every((site) => site.node);
    if (!sitesUp) return;
    const holdsAll = (site: Site<unknown>): boolean => {
      const files = this.filesOf(site);
      return (
        typeof files !== 'string' &&
        this.history.judge((volume, block) => this.blockOf(files, volume, block), all) === null
      );
    };
    if (!holdsAll(this.primary) || !this.secondaries.every(holdsAll)) return;
    // Files are not enough: what the read paths show must hold every write too.
    if (![this.primary, ...this.secondaries].every((site) => site.readHoldsAll)) return;
    this.done = true;
    this.note("converged: every site's files hold every write");
  }

  private standing(): string {
    const parts = [
      `issued ${this.sources.issued.join(',')}`,
      `acknowledged ${this.sources.acknowledged.join(',')}`,
    ];
    const primary = this.primary.node?.status();
    parts.push(primary ? `primary capture ${primary.capture} closed ${primary.closed}` : 'primary down');
    for (const site of this.secondaries) {
      const status = site.node?.status();
      parts.push(
        status ? `${site.name} stored ${status.stored} applied ${status.applied}` : `${site.name} down`,
      );
      const files = this.filesOf(site);
      if (typeof files !== 'string') {
        const verdict = this.history.judge(
          (volume, block) => this.blockOf(files, volume, block),
          this.sources.issued,
        );
        if (verdict) parts.push(`${site.name} files: ${verdict}`);
      }
    }
    return parts.join('; ');
  }

  private violation(text: string): void {
    this.note(`VIOLATION ${text}`);
    this.violations.push(text);
  }

  private note(line: string): void {
    const stamped = `${String(this.world.elapsedMs).padStart(6)} ms ${line}`;
    this.trace.push(stamped);
    if (this.trace.length > traceLinesMax && !this.traceAll) this.trace.shift();
  }
}

export function runSiteSeed(
  seed: number,
  keepFaults?: readonly number[],
  traceAll = false,
): Promise<SiteRunResult> {
  return new SiteRun(drawSiteScenario(seed, keepFaults), traceAll).run();
}
