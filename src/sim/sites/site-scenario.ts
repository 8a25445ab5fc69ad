/** One whole-site scenario, drawn entirely from its seed. */
import type { AckMode, ResyncStaging } from '../../core/types.ts';
import type { PacingConfig } from '../../core/write-pacing.ts';
import { Random } from '../random.ts';

export const siteFaultKinds = [
  'connection-drop',
  'connection-stall',
  'byte-corrupt',
  'link-partition',
  'primary-crash',
  'primary-machine-crash',
  'secondary-crash',
  'secondary-machine-crash',
  'disk-full',
  'disk-error',
  'secondary-wipe',
] as const;
export type SiteFaultKind = (typeof siteFaultKinds)[number];

export interface SiteFault {
  atMs: number;
  kind: SiteFaultKind;
  /** Which secondary (link or site) the fault hits, where it applies; for disk faults 0 is the primary. */
  target: number;
  /** How long a stall or partition lasts, or how long a crashed site stays down. */
  durationMs: number;
  /** A crashed secondary is brought back with `cyclerep recover` first (its files judged after). */
  recover: boolean;
}

/**
 * What the operator does once the faults are over (docs/failover.md). With one secondary: a
 * planned `switchover`; or a `failover`: the primary dies, the secondary is promoted, the old
 * primary comes back, is fenced and rejoins with a delta. With two, a `split-brain`: the primary
 * dies for good and both secondaries are promoted, each into its own generation; they refuse each
 * other until `rejoin --discard-my-data` on the second makes it follow the first with a full copy.
 */
export const roleChangeKinds = ['switchover', 'failover', 'split-brain'] as const;
export type RoleChangeKind = (typeof roleChangeKinds)[number];

export interface RoleChangePlan {
  kind: RoleChangeKind;
  /** When the operator acts (the sites must be up: it waits for a site a fault left down). */
  atMs: number;
  /**
   * A failover or split brain: how the primary dies, how long it stays down (for good in a split
   * brain), whether `promote --force` is used.
   */
  primaryCrash: 'process' | 'machine';
  downMs: number;
  force: boolean;
  /** How long the sources write to the new primary before they stop. */
  writeMsAfter: number;
}

/**
 * A primary that switches an away secondary to a changed-block bitmap soon (docs/resync.md): a
 * journal of a few segments, tracking after a few simulated seconds away, a coarse or fine bitmap.
 */
export interface SiteTracking {
  journalCapacity: number;
  journalFraction: number;
  awaySecondsMax: number;
  granularityBlocks: number;
}

export interface SiteScenario {
  seed: number;
  blockBytes: number;
  volumeBlocks: number[];
  secondaries: number;
  connectionsPerLink: number;
  ack: AckMode;
  cycleIntervalMinMs: number;
  cycleQueuedMax: number;
  heartbeatMs: number;
  timeoutMs: number;
  reconnectMinMs: number;
  reconnectMaxMs: number;
  cyclesInFlightMax: number;
  /** Journal segments this small roll over every few cycles. */
  segmentBytes: number;
  /** Null: the primary's defaults (a journal far larger than the run, tracking after 600 s away). */
  tracking: SiteTracking | null;
  /** Write pacing in some seeds (config `pacing`), with bounds a lagging secondary reaches; null in most. */
  pacing: PacingConfig | null;
  /** Every link's `compression` (protocol 6): brotli in 1 seed of 3. */
  linkCompression: 'off' | 'brotli';
  /** Each secondary's `resync.staging`: in-place for some, whose image may be inconsistent during a resync. */
  resyncStaging: ResyncStaging[];
  latencyMs: number[];
  /** Each site's disk: longest delay of a read or write, and of a sync. Some scenarios have slow disks. */
  disks: { ioDelayMsMax: number; syncDelayMsMax: number; volumesSlower: number }[];
  sources: number;
  crossDependencyChance: number;
  thinkMsMax: number;
  flushChance: number;
  zeroChance: number;
  /** The data directories exist (made durable by the operator) before the sites first start. */
  provisioned: boolean;
  faultPhaseMs: number;
  settleMsMax: number;
  faults: SiteFault[];
  /** Null in most seeds; see RoleChangePlan. */
  roleChange: RoleChangePlan | null;
}

export function drawSiteScenario(seed: number, keepFaults?: readonly number[]): SiteScenario {
  const random = new Random(seed);
  const secondaries = random.between(1, 2);
  const heartbeatMs = random.between(40, 120);
  const faultPhaseMs = random.between(2000, 5000);
  const scenario: SiteScenario = {
    seed,
    blockBytes: 512,
    volumeBlocks: Array.from({ length: random.between(1, 3) }, () => random.between(16, 64)),
    secondaries,
    connectionsPerLink: random.between(1, 2),
    ack: random.chance(0.5) ? 'immediate' : 'cycle',
    cycleIntervalMinMs: random.between(10, 250),
    cycleQueuedMax: random.between(1, 4),
    heartbeatMs,
    timeoutMs: heartbeatMs * random.between(3, 6),
    reconnectMinMs: random.between(20, 100),
    reconnectMaxMs: random.between(300, 1500),
    cyclesInFlightMax: random.between(1, 4),
    segmentBytes: random.pick([8 * 1024, 32 * 1024, 1024 * 1024]),
    tracking: null,
    pacing: null,
    linkCompression: 'off',
    resyncStaging: [],
    latencyMs: Array.from({ length: secondaries }, () => random.between(1, 40)),
    // The primary's disk first, then each secondary's.
    disks: Array.from({ length: secondaries + 1 }, () =>
      random.chance(0.7)
        ? { ioDelayMsMax: random.between(0, 3), syncDelayMsMax: random.between(0, 12), volumesSlower: 1 }
        : {
            ioDelayMsMax: random.between(4, 30),
            syncDelayMsMax: random.between(4, 30),
            // Volume images on slower media than the journal: write-back and apply fall behind.
            volumesSlower: random.pick([1, 4, 10]),
          },
    ),
    sources: random.between(2, 6),
    crossDependencyChance: random.pick([0.2, 0.5, 0.9]),
    thinkMsMax: random.between(2, 40),
    flushChance: random.pick([0.02, 0.1, 0.3]),
    zeroChance: random.pick([0.05, 0.2]),
    provisioned: random.chance(0.5),
    faultPhaseMs,
    // Long enough for a secondary whose volumes sit on a disk ten times slower to catch up.
    settleMsMax: 120_000,
    faults: [
      ...drawFaults(random.fork(), faultPhaseMs, secondaries),
      // Drawn apart and listed last, so the faults above (and their indices) stay as they were
      // with disk faults off (SIM_DISK_FAULTS=0).
      ...(diskFaultsEnabled()
        ? drawDiskFaults(new Random(seed ^ 0xd15cfa17), faultPhaseMs, secondaries)
        : []),
      // Drawn apart and listed last too (SIM_WIPES=0 leaves them out).
      ...(wipesEnabled() ? drawWipes(new Random(seed ^ 0x3e1f), faultPhaseMs, secondaries) : []),
    ].filter((_, index) => keepFaults === undefined || keepFaults.includes(index)),
    roleChange: null,
  };
  // Drawn apart, so that every other choice of the seed stays as it was before tracking existed,
  // and before in-place staging did.
  const staging = new Random(seed ^ 0x57a9);
  return {
    ...scenario,
    tracking: drawTracking(new Random(seed ^ 0x7ac6), scenario.segmentBytes),
    resyncStaging: Array.from({ length: secondaries }, () =>
      staging.chance(0.2) && inPlaceEnabled() ? 'in-place' : 'consistent',
    ),
    roleChange: drawRoleChange(new Random(seed ^ 0xfa11), secondaries, faultPhaseMs),
    pacing: drawPacing(new Random(seed ^ 0x9ace), scenario.cycleIntervalMinMs),
    linkCompression: compressionEnabled() && new Random(seed ^ 0xc0de).chance(1 / 3) ? 'brotli' : 'off',
  };
}

/** Compressed links in 1 seed of 3, unless `SIM_COMPRESSION=0`. */
export function compressionEnabled(): boolean {
  return process.env.SIM_COMPRESSION !== '0';
}

/** Write pacing in 1 seed of 4, unless `SIM_PACING=0`. */
export function pacingEnabled(): boolean {
  return process.env.SIM_PACING !== '0';
}

/**
 * Bounds low enough that links cut, stalled or slow reach them (and reach the longest delay), yet
 * at least what the config requires.
 */
function drawPacing(random: Random, cycleIntervalMinMs: number): PacingConfig | null {
  if (!pacingEnabled() || !random.chance(0.25)) return null;
  const startFraction = random.pick([0.3, 0.5, 0.8]);
  const intervalSeconds = cycleIntervalMinMs / 1000;
  // What checkPacing asks: delays start at two intervals or later, and ramp over one at least.
  const leastSeconds = Math.max((2 * intervalSeconds) / startFraction, intervalSeconds / (1 - startFraction));
  const lagSecondsMax = Math.max(leastSeconds, random.pick([0.02, 0.1, 0.3, 1])) * 1.01;
  return { lagSecondsMax, delayMsMax: random.pick([2, 20, 200, 1000]), startFraction };
}

/**
 * Role changes, unless `SIM_ROLE_CHANGES=0`: in 3 seeds of 10 with one secondary, a switchover or a
 * failover; in 2 of 10 with two, a split brain (a promoted site does not take over its old
 * primary's other secondaries yet, docs/failover.md: with two, both are promoted).
 */
export function roleChangesEnabled(): boolean {
  return process.env.SIM_ROLE_CHANGES !== '0';
}

function drawRoleChange(random: Random, secondaries: number, faultPhaseMs: number): RoleChangePlan | null {
  if (!roleChangesEnabled() || !random.chance(secondaries === 1 ? 0.3 : 0.2)) return null;
  return {
    kind: secondaries === 1 ? random.pick(['switchover', 'failover'] as const) : 'split-brain',
    atMs: faultPhaseMs + random.between(0, 400),
    primaryCrash: random.chance(0.5) ? 'process' : 'machine',
    downMs: random.between(20, 1500),
    force: random.chance(0.5),
    writeMsAfter: random.between(200, 2000),
  };
}

/**
 * Swarm testing (as TigerBeetle's VOPR does): each seed weighs the fault kinds its own way, some
 * not at all, so that some runs crash sites over and over while others only cut links.
 */
function drawFaults(random: Random, faultPhaseMs: number, secondaries: number): SiteFault[] {
  const weights: [SiteFaultKind, number][] = siteFaultKinds
    .filter((kind) => kind !== 'disk-full' && kind !== 'disk-error' && kind !== 'secondary-wipe')
    .map((kind) => [kind, random.pick([0, 1, 1, 3])]);
  const total = weights.reduce((sum, [, weight]) => sum + weight, 0);
  const faults: SiteFault[] = [];
  const count = total === 0 ? 0 : random.between(1, 12);
  for (let i = 0; i < count; i++) {
    let draw = random.int(total);
    let kind: SiteFaultKind = 'connection-drop';
    for (const [candidate, weight] of weights) {
      if (draw < weight) {
        kind = candidate;
        break;
      }
      draw -= weight;
    }
    faults.push({
      atMs: random.between(100, faultPhaseMs),
      kind,
      target: random.int(secondaries),
      durationMs: random.between(20, 1500),
      recover: random.chance(0.5),
    });
  }
  return faults.sort((a, b) => a.atMs - b.atMs);
}

/**
 * Scenarios draw full disks and failed syncs too, unless `SIM_DISK_FAULTS=0` (to compare with the
 * runs from before they were on by default, or to tell a disk-fault finding from another).
 */
export function diskFaultsEnabled(): boolean {
  return process.env.SIM_DISK_FAULTS !== '0';
}

/**
 * Secondaries with `resync.staging: in-place` (about one in five), whose image the oracle does not
 * judge while they say it is inconsistent; `SIM_IN_PLACE=0` makes every secondary stage, as before.
 */
export function inPlaceEnabled(): boolean {
  return process.env.SIM_IN_PLACE !== '0';
}

/** Scenarios where a secondary's data directory is deleted too; `SIM_WIPES=0` leaves them out. */
export function wipesEnabled(): boolean {
  return process.env.SIM_WIPES !== '0';
}

/**
 * A full disk (every write fails with ENOSPC for a while) or one failed fdatasync (EIO), on the
 * primary (target 0) or a secondary: the site must fail-stop and, restarted once space is back,
 * lose nothing it acknowledged. In 4 seeds of 10.
 */
function drawDiskFaults(random: Random, faultPhaseMs: number, secondaries: number): SiteFault[] {
  if (!random.chance(0.4)) return [];
  return Array.from({ length: random.between(1, 2) }, () => ({
    atMs: random.between(100, faultPhaseMs),
    kind: random.chance(0.6) ? ('disk-full' as const) : ('disk-error' as const),
    target: random.int(secondaries + 1),
    durationMs: random.between(20, 800),
    recover: false,
  }));
}

/** In half the seeds, weighed like the rest: a journal that fills in seconds, or a short absence. */
function drawTracking(random: Random, segmentBytes: number): SiteTracking | null {
  if (!random.chance(0.5)) return null;
  // The journal's high mark in bytes of held cycles: a second of writes fills the largest. The
  // capacity holds at least four segments, as the configuration requires with tracking, and two
  // segments above the high mark (trackingConfigOf takes the lower of both marks).
  const highBytes = random.pick([8 * 1024, 32 * 1024, 128 * 1024]);
  const journalCapacity = Math.max(4 * segmentBytes, highBytes * random.pick([1, 2, 4]) + 2 * segmentBytes);
  return {
    journalCapacity,
    journalFraction: highBytes / journalCapacity,
    // Outages here last up to 1.5 s: the shorter absences switch, the longer let the journal fill.
    awaySecondsMax: random.pick([0.25, 0.5, 1, 5, 20]),
    granularityBlocks: random.pick([1, 2, 4, 16]),
  };
}

/**
 * A secondary whose data directory is deleted while it is stopped (a replaced disk, an operator's
 * rm -rf), restarted empty: it must join again through initial sync. In 1 seed of 4.
 */
function drawWipes(random: Random, faultPhaseMs: number, secondaries: number): SiteFault[] {
  if (!random.chance(0.25)) return [];
  return Array.from({ length: random.between(1, 2) }, () => ({
    atMs: random.between(100, faultPhaseMs),
    kind: 'secondary-wipe' as const,
    target: random.int(secondaries),
    durationMs: random.between(20, 1500),
    recover: false,
  }));
}

export function describeSiteScenario(scenario: SiteScenario): string {
  return (
    `seed ${scenario.seed}: ${scenario.secondaries} secondaries, volumes of ${scenario.volumeBlocks.join('+')} blocks, ` +
    `ack ${scenario.ack}, ${scenario.connectionsPerLink} connection(s)/link, cycle.intervalMinMs ${scenario.cycleIntervalMinMs}, ` +
    `segments of ${scenario.segmentBytes} bytes, ${describeTracking(scenario.tracking)}, ${describePacing(scenario.pacing)}${scenario.linkCompression === 'off' ? '' : `links compressed (${scenario.linkCompression}), `}${scenario.sources} sources, disks (io/sync ms, volumes slower) ${scenario.disks.map((disk) => `${disk.ioDelayMsMax}/${disk.syncDelayMsMax}x${disk.volumesSlower}`).join(' ')}, ` +
    `faults: ${scenario.faults.map((fault) => `${fault.kind}@${fault.atMs}`).join(' ') || 'none'}` +
    describeRoleChange(scenario.roleChange)
  );
}

function describeRoleChange(plan: RoleChangePlan | null): string {
  if (!plan) return '';
  const failover = `primary ${plan.primaryCrash} crash, down ${plan.downMs} ms, promote${plan.force ? ' --force' : ''}`;
  return `, then ${plan.kind}@${plan.atMs}${plan.kind === 'switchover' ? '' : ` (${failover})`}, writes for ${plan.writeMsAfter} ms after`;
}

function describePacing(pacing: PacingConfig | null): string {
  if (!pacing) return '';
  return `pacing below ${pacing.lagSecondsMax.toFixed(3)} s lag (from ${pacing.startFraction} of it, delays up to ${pacing.delayMsMax} ms), `;
}

function describeTracking(tracking: SiteTracking | null): string {
  if (!tracking) return 'tracking as by default';
  return `journal of ${tracking.journalCapacity} bytes, tracking at ${tracking.journalFraction} of it or ${tracking.awaySecondsMax} s away, ${tracking.granularityBlocks} blocks a bit`;
}
