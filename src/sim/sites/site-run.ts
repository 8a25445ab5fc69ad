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
import { SiteHost } from '../../node/site-host.ts';
import {
  type FileConfig,
  type LoadedConfig,
  type SecondaryFileConfig,
  validateConfig,
} from '../../ops/config.ts';
import type { Logger } from '../../ops/logger.ts';
import { Random } from '../random.ts';
import { type FaultHandle, SimFileSystem } from '../sim-file-system.ts';
import { History } from './history.ts';
import { RoleChanges, type RoleChangeWorld, roleChangeStepMsMax } from './role-changes.ts';
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
  /** Journal segment files created (rollovers, and first segments) and removed (collection), on every disk. */
  segmentsCreated: number;
  segmentsRemoved: number;
  /** From the primary's log: secondaries switched to a bitmap, resyncs begun and ended, initial syncs. */
  trackingStarted: number;
  resyncStarted: number;
  /** Seeds with write pacing, and from the primary's log, the times it began delaying writes and reached its bound. */
  pacedSeeds: number;
  /** Seeds whose links compress block data. */
  compressedSeeds: number;
  pacingStarted: number;
  pacingSaturated: number;
  resyncComplete: number;
  initialSyncs: number;
  /** `image-inconsistent` warnings: an in-place resync began (or a start found one unfinished). */
  inconsistentImageWarnings: number;
  /** Images of a secondary left unjudged because it said they were inconsistent (in-place only). */
  imagesInconsistent: number;
  /** Role changes (docs/failover.md): carried out, refused or given up, and writes a failover undid. */
  switchovers: number;
  promotions: number;
  rejoins: number;
  splitBrains: number;
  /** Split brains resolved with a delta (both sites promoted at one cycle), not a copy of every block. */
  splitBrainDeltas: number;
  /** Writes the split brain's second primary acknowledged, every one to be undone by its rejoin. */
  splitBrainLoserWrites: number;
  roleChangesRefused: number;
  /** Acknowledged writes after the cut a promoted secondary held: the failover's window of loss. */
  lostInFailover: number;
  simulatedMs: number;
}

export interface SiteRunResult {
  seed: number;
  violations: string[];
  trace: string[];
  stats: SiteRunStats;
}

/** One site: its disk, its config, and the process running it (in whichever role it now has). */
export interface Site {
  /** Its name in the group, and of its processes. */
  name: string;
  dataDir: string;
  /** Where it listens as a secondary. */
  listen: string;
  /** Its config file as the operator wrote it; site.json decides the role after a role change. */
  loaded: LoadedConfig;
  diskIndex: number;
  disk: SimFileSystem;
  process: SimProcess | null;
  host: SiteHost | null;
  /** A restart is scheduled: the site is down on purpose (a role change waits for it). */
  restartPending: boolean;
  /**
   * It rejoined after a failover: its image is its old one until the resync's unit is applied,
   * so it is judged only while it says its image is consistent (and must converge).
   */
  rejoining: boolean;
  /**
   * Promoted while cut off from the primary (a split brain): until it gives up its history, its
   * image must stay exactly this (diverged sites never exchange data).
   */
  divergedImage: Uint8Array[] | null;
  incarnations: number;
  /** Highest applied number this site ever reported (secondaries). */
  appliedMax: number;
  /** The least cut of the last image its read path showed: what it may never fall below. */
  floor: number[];
  /** Once the sources are done: its read path showed every write. */
  readHoldsAll: boolean;
  /**
   * A disk fault was injected since this process started: a storage failure is expected. With the
   * process it was injected under (a process started since never saw it).
   */
  diskFault: { handle: FaultHandle; untilMs: number; process: SimProcess | null } | null;
}

/** Simulated time a role change may add to a run: a few of its steps at their longest. */
const roleChangeMsMax = 3 * roleChangeStepMsMax;

export class SiteRun implements RoleChangeWorld {
  private readonly world = new World((owner, error) => {
    const where = owner ? owner.name : 'the simulator';
    this.violation(
      `${where} threw (a real process would die of it): ${(error as Error)?.stack ?? String(error)}`,
    );
  });
  private readonly random: Random;
  readonly history: History;
  readonly sources: Sources;
  readonly network: SimNetwork;
  private readonly roleChanges = new RoleChanges(this);
  /** The site the sources write to, and the others: a role change swaps them. */
  primary: Site;
  secondaries: Site[];
  private readonly violations: string[] = [];
  private readonly trace: string[] = [];
  readonly stats: SiteRunStats;
  done = false;

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
    // The primary listens too when it may become a secondary: over a link as slow as its secondary's.
    if (scenario.roleChange) links.set(this.primaryListen, scenario.latencyMs[0] as number);
    this.network = new SimNetwork(this.world, this.random.fork(), links);
    this.sources = new Sources(
      this.history,
      this.random.fork(),
      scenario,
      (ms, run) => this.world.schedule(null, ms, run),
      (text) => this.violation(text),
      traceAll ? (line) => this.note(line) : undefined,
    );
    this.primary = this.newSite('primary', this.primaryListen, this.primaryDocument(), 0);
    this.secondaries = Array.from({ length: scenario.secondaries }, (_, index) =>
      this.newSite(`dr${index + 1}`, this.listenAddress(index), this.secondaryDocument(index), index + 1),
    );
    this.stats = emptySiteRunStats();
  }

  private listenAddress(index: number): string {
    return `127.0.0.1:${7400 + index}`;
  }

  private get primaryListen(): string {
    return this.listenAddress(9);
  }

  private newSite(name: string, listen: string, document: Record<string, unknown>, diskIndex: number): Site {
    const loaded = {
      config: this.shapeConfig(validateConfig(document, `sim ${name}`)),
      document,
      source: `sim ${name}`,
    };
    const dataDir = loaded.config.dataDir;
    return {
      name,
      dataDir,
      listen,
      loaded,
      diskIndex,
      disk: this.newDisk(dataDir, diskIndex),
      process: null,
      host: null,
      restartPending: false,
      rejoining: false,
      divergedImage: null,
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

  /**
   * The primary's config file. With a role change ahead it carries the secondary role's sections
   * too (its name and where it listens), as docs/failover.md asks of a site that may be demoted.
   */
  private primaryDocument(): Record<string, unknown> {
    const scenario = this.scenario;
    return {
      group: 'sim',
      role: 'primary',
      dataDir: '/sim/primary',
      blockSize: scenario.blockBytes,
      volumes: scenario.volumeBlocks.map((blocks, index) => ({
        name: `vol${index}`,
        size: blocks * scenario.blockBytes,
      })),
      ...this.primarySections(),
      secondaries: Array.from({ length: scenario.secondaries }, (_, index) => ({
        name: `dr${index + 1}`,
        address: this.listenAddress(index),
        connections: scenario.connectionsPerLink,
        compression: scenario.linkCompression,
      })),
      ...(scenario.roleChange ? { name: 'primary', listen: this.primaryListen } : {}),
    };
  }

  /** A secondary's config file; with a role change ahead, with a primary's sections too. */
  private secondaryDocument(index: number): Record<string, unknown> {
    const scenario = this.scenario;
    return {
      group: 'sim',
      role: 'secondary',
      name: `dr${index + 1}`,
      dataDir: `/sim/dr${index + 1}`,
      blockSize: scenario.blockBytes,
      listen: this.listenAddress(index),
      link: this.linkConfig(),
      resync: { staging: scenario.resyncStaging[index] ?? 'consistent' },
      ...(scenario.roleChange
        ? {
            ...this.primarySections(),
            // Once promoted, it feeds every other site: the old primary and the other secondaries.
            secondaries: [
              {
                name: 'primary',
                address: this.primaryListen,
                connections: scenario.connectionsPerLink,
                compression: scenario.linkCompression,
              },
              ...Array.from({ length: scenario.secondaries }, (_, other) => other)
                .filter((other) => other !== index)
                .map((other) => ({
                  name: `dr${other + 1}`,
                  address: this.listenAddress(other),
                  connections: scenario.connectionsPerLink,
                  compression: scenario.linkCompression,
                })),
            ],
          }
        : {}),
    };
  }

  /** What a site needs to lead: how it acknowledges, cuts cycles and tracks an away secondary. */
  private primarySections(): Record<string, unknown> {
    const scenario = this.scenario;
    return {
      ack: scenario.ack,
      ...(scenario.tracking ? { tracking: this.trackingConfig(scenario.tracking) } : {}),
      ...(scenario.pacing ? { pacing: scenario.pacing } : {}),
      cycle: { intervalMinMs: scenario.cycleIntervalMinMs, queuedMax: scenario.cycleQueuedMax },
      link: this.linkConfig(),
    };
  }

  /**
   * Journal sizes far below the smallest a user may configure, in either role: a primary's
   * segments roll over every few cycles, and a journal of a few of them makes an away secondary
   * switch to tracking; a secondary's segment must fit a recovery cycle's packet, which may hold
   * every block of the group.
   */
  readonly shapeConfig = (config: FileConfig): FileConfig => {
    const scenario = this.scenario;
    if (config.role === 'primary') {
      const capacity = scenario.tracking?.journalCapacity ?? config.journal.capacity;
      return { ...config, journal: { capacity, segmentSize: scenario.segmentBytes } };
    }
    const groupBytes = scenario.volumeBlocks.reduce((sum, blocks) => sum + blocks, 0) * scenario.blockBytes;
    return { ...config, journal: { segmentSize: Math.max(scenario.segmentBytes, groupBytes + 8192) } };
  };

  private trackingConfig(tracking: SiteTracking): Record<string, number> {
    const granularity = tracking.granularityBlocks * this.scenario.blockBytes;
    return {
      journalFraction: tracking.journalFraction,
      awaySecondsMax: tracking.awaySecondsMax,
      granularity,
      copyWindow: Math.max(granularity, limits.packetBytesMax),
    };
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
    for (const site of this.secondaries) this.startSite(site);
    this.startSite(this.primary);
    for (const fault of scenario.faults) this.world.schedule(null, fault.atMs, () => this.inject(fault));
    this.world.schedule(null, checkEveryMs, () => this.periodicCheck());
    const plan = scenario.roleChange;
    if (plan) this.world.schedule(null, plan.atMs, () => this.roleChanges.begin(plan));
    else this.world.schedule(null, scenario.faultPhaseMs + 500, () => this.stopSources());
    const endMs = scenario.faultPhaseMs + 500 + (plan ? roleChangeMsMax : 0) + scenario.settleMsMax;
    while (!this.done && this.violations.length === 0 && (await this.world.step(endMs))) {}
    if (!this.done && this.violations.length === 0)
      this.violation(
        `no convergence within ${scenario.settleMsMax} ms after the sources stopped: ${this.standing()}`,
      );
    this.finishStats();
    this.kill();
    return { seed: scenario.seed, violations: this.violations, trace: this.trace, stats: this.stats };
  }

  now(): number {
    return this.world.elapsedMs;
  }

  schedule(ms: number, run: () => void): void {
    this.world.schedule(null, ms, run);
  }

  /** A site's image through its read path (a primary's or a secondary's). */
  imageOf(site: Site): Promise<Uint8Array[]> {
    const node = site.host?.node;
    if (!node) return Promise.reject(new Error(`${site.name} is down`));
    return this.readImage((volume, offset, length) => node.read(volume, offset, length));
  }

  /** The greatest consistent cut `image` shows, each source's prefix at least `lower`. */
  cutOf(image: Uint8Array[], lower: readonly number[]): ReturnType<History['greatestCut']> {
    return this.history.greatestCut((volume, block) => this.blockOf(image, volume, block), lower);
  }

  stopSources(): void {
    this.sources.stopped = true;
    this.note('sources stop');
  }

  private finishStats(): void {
    Object.assign(this.stats, this.sources.stats);
    this.stats.events = this.world.events;
    this.stats.simulatedMs = this.world.elapsedMs;
    this.stats.pacedSeeds = this.scenario.pacing ? 1 : 0;
    this.stats.compressedSeeds = this.scenario.linkCompression === 'off' ? 0 : 1;
    for (const site of [this.primary, ...this.secondaries]) this.countDisk(site.disk);
  }

  private countDisk(disk: SimFileSystem): void {
    this.stats.syncs += disk.stats.syncs;
    this.stats.lostSectors += disk.stats.lostSectors;
    this.stats.tornSectors += disk.stats.tornSectors;
    this.stats.revertedEntries += disk.stats.revertedEntries;
    this.stats.segmentsCreated += disk.stats.segmentsCreated;
    this.stats.segmentsRemoved += disk.stats.segmentsRemoved;
  }

  /** Ends every process, so no callback of this run outlives it. */
  private kill(): void {
    for (const site of [this.primary, ...this.secondaries]) if (site.process) site.process.alive = false;
  }

  // ---- sites ----

  private environmentOf(site: Site, process: SimProcess): SiteEnvironment {
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
    else if (event === 'pacing-started') this.stats.pacingStarted++;
    else if (event === 'pacing-saturated') this.stats.pacingSaturated++;
  }

  newProcess(site: Site): SimProcess {
    site.incarnations++;
    const process = new SimProcess(site.name, site.incarnations);
    site.process = process;
    return process;
  }

  /**
   * Starts a site as `cyclerep run` does (SiteHost: the role its data directory holds), after
   * `cyclerep recover` if asked (a secondary's files are judged then).
   */
  startSite(site: Site, recoverFirst = false): void {
    site.restartPending = false;
    const process = this.newProcess(site);
    const restart = (): void => this.startSite(site);
    const onFatal = this.failStopOf(site, process, restart);
    this.runSite(site, process, onFatal, recoverFirst).catch((error: Error) => {
      if (!process.alive) return;
      if (site.diskFault) this.exitAfterFailure(site, process, restart);
      else this.violation(`${process.name}: ${error.message}`);
    });
  }

  private async runSite(
    site: Site,
    process: SimProcess,
    onFatal: (error: Error) => void,
    recoverFirst: boolean,
  ): Promise<void> {
    if (recoverFirst) await this.recover(site, process, onFatal);
    if (!process.alive) return;
    const host = await SiteHost.start(
      site.loaded,
      this.loggerOf(process),
      onFatal,
      this.environmentOf(site, process),
      this.shapeConfig,
    ).catch((error: Error) => {
      throw new Error(`did not start: ${error.message}`);
    });
    if (!process.alive) return;
    site.host = host;
    this.note(`${process.name} started as a ${host.config.role}`);
    if (site === this.primary && host.node instanceof PrimaryNode)
      await this.surveyPrimary(host.node, process);
  }

  /** `cyclerep recover` on a secondary: an offline start that applies what it stored, then exits. */
  private async recover(site: Site, process: SimProcess, onFatal: (error: Error) => void): Promise<void> {
    const options = { environment: this.environmentOf(site, process), offline: true };
    const config = site.loaded.config as SecondaryFileConfig;
    const node = await SecondaryNode.start(config, this.loggerOf(process), onFatal, options).catch(
      (error: Error) => {
        throw new Error(`cyclerep recover failed: ${error.message}`);
      },
    );
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
  }

  /**
   * Before the sources go on, judges what a (re)started primary kept: after a machine crash the
   * largest cut holding every write made durable (the history forgets the rest); after a process
   * crash every acknowledged write, block by block.
   */
  private async surveyPrimary(node: PrimaryNode, process: SimProcess): Promise<void> {
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
  judgePrimaryImage(image: Uint8Array[], lower: readonly number[], upper: readonly number[]): string | null {
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

  /**
   * What the daemon does on a storage failure: stop (every request answered with the failure),
   * exit 3. Expected only after a disk fault was injected; the site comes back once it is over.
   */
  private failStopOf(site: Site, process: SimProcess, restart: () => void) {
    return (error: Error): void => {
      if (!process.alive) return;
      if (!site.diskFault) {
        this.violation(`${process.name}: storage failed with no disk fault injected: ${error.message}`);
        return;
      }
      this.note(`${process.name} fail-stops: ${error.message}`);
      const stopped = site.host?.node ? site.host.node.stop() : Promise.resolve();
      stopped.then(
        () => this.exitAfterFailure(site, process, restart),
        () => this.exitAfterFailure(site, process, restart),
      );
    };
  }

  private exitAfterFailure(site: Site, process: SimProcess, restart: () => void): void {
    if (!process.alive) return;
    this.stats.failStops++;
    this.crash(site as Site, 'process');
    if (site === this.primary) this.sources.detach(false);
    const untilMs = site.diskFault?.untilMs ?? 0;
    site.restartPending = true;
    this.world.schedule(null, Math.max(0, untilMs - this.world.elapsedMs) + 20, () => {
      site.diskFault = null;
      if (site === this.primary) this.sources.expectFailures = false;
      this.stats.restarts++;
      restart();
    });
  }

  /** Fails the site's disk: every write with ENOSPC for a while, or its next fdatasync with EIO. */
  private injectDiskFault(fault: SiteFault): void {
    const site = (fault.target === 0 ? this.primary : this.secondaries[fault.target - 1]) as Site;
    if (!site.process?.alive) return;
    const handle =
      fault.kind === 'disk-full'
        ? site.disk.failWith({ call: 'write', code: 'ENOSPC' })
        : site.disk.failWith({ call: 'fdatasync', code: 'EIO', times: 1 });
    // Faults may overlap: the site stays faulted until the last of them ends (seed 2113 restarted
    // a secondary when a short fault ended inside a long one, on a disk still full).
    const untilMs = Math.max(site.diskFault?.untilMs ?? 0, this.world.elapsedMs + fault.durationMs);
    site.diskFault = { handle, untilMs, process: site.process };
    if (site === this.primary) this.sources.expectFailures = true;
    this.world.schedule(null, fault.durationMs, () => handle.cancel());
  }

  // ---- faults ----

  private inject(fault: SiteFault): void {
    if (this.done) return;
    this.stats.faults[fault.kind]++;
    this.note(`fault ${fault.kind} target ${fault.target} for ${fault.durationMs} ms`);
    // Link faults hit the link to a secondary (disk faults number the primary 0).
    const link = this.secondaries[fault.target]?.listen ?? '';
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

  crash(site: Site, kind: 'process' | 'machine'): boolean {
    const process = site.process;
    if (!process?.alive) return false;
    process.alive = false;
    site.host = null;
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
    const site = this.primary;
    if (!this.crash(site, kind)) return;
    this.sources.detach(kind === 'machine');
    site.restartPending = true;
    this.world.schedule(null, downMs, () => {
      this.stats.restarts++;
      this.startSite(site);
    });
  }

  private crashSecondary(index: number, kind: 'process' | 'machine', downMs: number, recover: boolean): void {
    const site = this.secondaries[index] as Site;
    if (!this.crash(site, kind)) return;
    site.restartPending = true;
    this.world.schedule(null, downMs, () => {
      this.stats.restarts++;
      this.startSite(site, recover);
    });
  }

  /**
   * Stops a secondary, deletes its data directory (a new disk: nothing of it survives) and starts
   * it again empty. It comes back at cycle 0, all zeroes, a consistent cut: the floor it may never
   * fall below, and its applied number, start over with it.
   */
  private wipeSecondary(index: number, downMs: number): void {
    this.wipe(this.secondaries[index] as Site, downMs);
  }

  wipe(site: Site, downMs = 100): void {
    if (!this.crash(site, 'process')) return;
    this.countDisk(site.disk);
    site.disk = this.newDisk(site.dataDir, site.diskIndex);
    site.floor = [];
    site.appliedMax = 0;
    this.note(`${site.name} wiped`);
    site.restartPending = true;
    this.world.schedule(null, downMs, () => {
      this.stats.restarts++;
      this.startSite(site);
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
    const primary = primaryNodeOf(this.primary);
    const primaryProcess = this.primary.process;
    const primarySite = this.primary;
    if (primary && primaryProcess && !this.sources.awaitingSurvey) {
      const lower = [...this.sources.acknowledged];
      this.readImage((volume, offset, length) => primary.read(volume, offset, length)).then(
        (image) => {
          // A role change that began meanwhile stops the node under the read: nothing to judge
          // (an NBD read is drained before the files change hands; these reads are not).
          if (
            !primaryProcess.alive ||
            this.primary !== primarySite ||
            this.changedUnder(primarySite, primary)
          )
            return;
          const problem = this.judgePrimaryImage(image, lower, this.sources.issued);
          if (problem) return this.violation(`${primaryProcess.name} read path: ${problem}`);
          if (settled) this.primary.readHoldsAll = this.holdsAll(image);
        },
        (error: Error) => {
          // A node a role change stopped under the read answers it with an error: no finding.
          if (primaryProcess.alive && !primarySite.diskFault && !this.changedUnder(primarySite, primary))
            this.violation(`${primaryProcess.name}: a read failed: ${error.message}`);
        },
      );
    }
    for (const site of this.secondaries) {
      if (site.divergedImage) this.checkDiverged(site);
      else this.checkSecondary(site, settled);
    }
    if (settled) this.checkConverged();
  }

  /**
   * A secondary's read path must show a consistent cut at least as new as the last it showed
   * (`floor`, the least cut of that image: never above the truth, so never a false alarm).
   */
  private checkSecondary(site: Site, settled: boolean): void {
    // A site in another role meanwhile (an old primary not yet rejoined) is not judged as a secondary.
    const node = secondaryNodeOf(site);
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
        if (!process.alive || this.changedUnder(site, node)) return;
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
        if (process.alive && !site.diskFault && !this.changedUnder(site, node))
          this.violation(`${process.name}: a read failed: ${error.message}`);
      },
    );
  }

  /** Whether a role change stopped (or is stopping) `node` of the site: its reads may fail. */
  private changedUnder(site: Site, node: PrimaryNode | SecondaryNode): boolean {
    return site.host?.node !== node || site.host.changingRole;
  }

  /**
   * A site promoted while cut off from the primary (a split brain) takes no writes here: until it
   * gives up its history, its read path must show exactly the image it was promoted with. Anything
   * else came from the other primary, and diverged sites must never exchange data.
   */
  private checkDiverged(site: Site): void {
    const node = primaryNodeOf(site);
    const process = site.process;
    const expected = site.divergedImage;
    if (!node || !process || !expected) return;
    this.readImage((volume, offset, length) => node.read(volume, offset, length)).then(
      (image) => {
        if (!process.alive || site.divergedImage !== expected || site.host?.node !== node) return;
        this.stats.imagesJudged++;
        const volume = image.findIndex((bytes, index) => !equalBytes(bytes, expected[index] as Uint8Array));
        if (volume >= 0)
          this.violation(
            `${process.name}: its image changed while it was a diverged primary (volume ${volume}): it took data from the primary it split from`,
          );
      },
      (error: Error) => {
        if (process.alive && !this.changedUnder(site, node))
          this.violation(`${process.name}: a read failed: ${error.message}`);
      },
    );
  }

  private inPlace(site: Site): boolean {
    // Drawn per secondary as the run began (the primary's disk is 0): role changes reorder the list.
    return this.scenario.resyncStaging[site.diskIndex - 1] === 'in-place';
  }

  /**
   * The one relaxation of the oracle: a secondary with in-place staging may show an image that is no
   * consistent cut between an in-place resync's first cycle applied and its consistent cycle. A read
   * is left unjudged when the image was said inconsistent at its start or end, or one was shown in
   * between; never for a secondary with consistent staging.
   */
  private mayBeInconsistent(
    site: Site,
    before: SecondaryNode['imageState'],
    after: SecondaryNode['imageState'],
  ): boolean {
    // A rejoining site shows its old image, with writes the failover undid, until its resync's
    // unit is applied: it is judged from the moment it says its image is consistent.
    if (site.rejoining && (!before.consistent || !after.consistent)) return true;
    if (!this.inPlace(site)) return false;
    return (
      !before.consistent ||
      !after.consistent ||
      before.inconsistentUnitsShown !== after.inconsistentUnitsShown
    );
  }

  /** The site's floor, within what the history still holds (a machine crash may have shortened it). */
  floorOf(site: Site): number[] {
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
  private filesOf(site: Site): Uint8Array[] | string {
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

  private judgeFiles(site: Site, when: string, lower: readonly number[]): boolean {
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
    const sitesUp = primaryNodeOf(this.primary) && this.secondaries.every((site) => secondaryNodeOf(site));
    if (!sitesUp) return;
    const holdsAll = (site: Site): boolean => {
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

  standing(): string {
    const parts = [
      `issued ${this.sources.issued.join(',')}`,
      `acknowledged ${this.sources.acknowledged.join(',')}`,
    ];
    const primary = primaryNodeOf(this.primary)?.status();
    parts.push(primary ? `primary capture ${primary.capture} closed ${primary.closed}` : 'primary down');
    for (const site of this.secondaries) {
      const status = secondaryNodeOf(site)?.status();
      const asPrimary = primaryNodeOf(site)?.status();
      parts.push(
        status
          ? `${site.name} stored ${status.stored} applied ${status.applied}`
          : asPrimary
            ? `${site.name} a primary (capture ${asPrimary.capture}, fenced ${asPrimary.fenced !== null})`
            : `${site.name} down`,
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

  violation(text: string): void {
    this.note(`VIOLATION ${text}`);
    this.violations.push(text);
  }

  note(line: string): void {
    const stamped = `${String(this.world.elapsedMs).padStart(6)} ms ${line}`;
    this.trace.push(stamped);
    if (this.trace.length > traceLinesMax && !this.traceAll) this.trace.shift();
  }
}

/** Every figure of a run at zero: a run's start, and a report's sum before its first run. */
export function emptySiteRunStats(): SiteRunStats {
  return {
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
    segmentsCreated: 0,
    segmentsRemoved: 0,
    trackingStarted: 0,
    resyncStarted: 0,
    pacedSeeds: 0,
    compressedSeeds: 0,
    pacingStarted: 0,
    pacingSaturated: 0,
    resyncComplete: 0,
    initialSyncs: 0,
    inconsistentImageWarnings: 0,
    imagesInconsistent: 0,
    switchovers: 0,
    promotions: 0,
    rejoins: 0,
    splitBrains: 0,
    splitBrainDeltas: 0,
    splitBrainLoserWrites: 0,
    roleChangesRefused: 0,
    lostInFailover: 0,
    simulatedMs: 0,
  };
}

export function primaryNodeOf(site: Site): PrimaryNode | null {
  const node = site.host?.node;
  return node instanceof PrimaryNode ? node : null;
}

export function secondaryNodeOf(site: Site): SecondaryNode | null {
  const node = site.host?.node;
  return node instanceof SecondaryNode ? node : null;
}

function equalBytes(a: Uint8Array, b: Uint8Array): boolean {
  return a.length === b.length && Buffer.compare(a, b) === 0;
}

export function runSiteSeed(
  seed: number,
  keepFaults?: readonly number[],
  traceAll = false,
): Promise<SiteRunResult> {
  return new SiteRun(drawSiteScenario(seed, keepFaults), traceAll).run();
}
