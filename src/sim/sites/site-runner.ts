/** Runs many whole-site seeds, on several worker threads if asked, and sums them into one report. */
import { Worker } from 'node:worker_threads';
import { emptySiteRunStats, runSiteSeed, type SiteRunResult, type SiteRunStats } from './site-run.ts';
import {
  describeSiteScenario,
  diskFaultsEnabled,
  drawSiteScenario,
  siteFaultKinds,
} from './site-scenario.ts';

export interface SiteSimulationOptions {
  seeds: number;
  seedStart: number;
  traceAll?: boolean;
  stopAtFirst?: boolean;
  /** On a failure, also search for a shorter fault schedule that still fails (default true). */
  shrink?: boolean;
  keepFaults?: readonly number[];
  print?: (line: string) => void;
  /** Leave out the summary (a worker's part of a larger run). */
  quiet?: boolean;
}

export interface SiteSimulationReport extends SiteRunStats {
  seedsRun: number;
  violations: number;
  failingSeeds: number[];
  wallSeconds: number;
}

export async function runSiteSimulation(options: SiteSimulationOptions): Promise<SiteSimulationReport> {
  const print = options.print ?? (() => {});
  const started = performance.now();
  const report = emptyReport();
  for (let seed = options.seedStart; seed < options.seedStart + options.seeds; seed++) {
    const result = await runSiteSeed(seed, options.keepFaults, options.traceAll);
    add(report, result);
    if (options.traceAll) for (const line of result.trace) print(line);
    if (result.violations.length > 0) {
      await printFailure(print, seed, options, result);
      if (options.stopAtFirst) break;
    }
  }
  report.wallSeconds = (performance.now() - started) / 1000;
  if (!options.quiet) printSiteReport(print, report);
  return report;
}

/** Greedy shrinking: drops faults one at a time while the seed still fails. */
async function shrinkFaults(seed: number): Promise<number[]> {
  let kept = drawSiteScenario(seed).faults.map((_, index) => index);
  for (const candidate of [...kept]) {
    const without = kept.filter((index) => index !== candidate);
    if ((await runSiteSeed(seed, without)).violations.length > 0) kept = without;
  }
  return kept;
}

async function printFailure(
  print: (line: string) => void,
  seed: number,
  options: SiteSimulationOptions,
  result: SiteRunResult,
): Promise<void> {
  print(`FAIL ${describeSiteScenario(drawSiteScenario(seed, options.keepFaults))}`);
  for (const violation of result.violations) print(`  violation: ${violation}`);
  let replayFaults = options.keepFaults ? ` --faults ${options.keepFaults.join(',') || 'none'}` : '';
  let shown = result;
  if (options.shrink !== false && !options.keepFaults) {
    const kept = await shrinkFaults(seed);
    shown = await runSiteSeed(seed, kept);
    const schedule = drawSiteScenario(seed, kept).faults;
    print(
      `  shortest fault schedule found: ${schedule.map((fault) => `${fault.kind}@${fault.atMs}`).join(' ') || 'none'}`,
    );
    for (const violation of shown.violations) print(`  violation with it: ${violation}`);
    replayFaults = ` --faults ${kept.join(',') || 'none'}`;
  }
  print(`  events leading to it (last ${shown.trace.length}):`);
  for (const line of shown.trace) print(`    ${line}`);
  const environment = diskFaultsEnabled() ? '' : 'SIM_DISK_FAULTS=0 ';
  print(`  replay: ${environment}npm run sim -- --seed-start ${seed} --seeds 1${replayFaults} --trace`);
}

export interface SiteWorkerJob {
  seedStart: number;
  seeds: number;
  stopAtFirst: boolean;
  shrink: boolean;
  keepFaults: number[] | null;
}

/** Splits the seeds over `jobs` worker threads; failures are printed in seed order, then one report. */
export async function runSiteSimulationParallel(
  options: SiteSimulationOptions & { jobs: number },
): Promise<SiteSimulationReport> {
  const print = options.print ?? (() => {});
  const started = performance.now();
  const jobs = Math.max(1, Math.min(options.jobs, options.seeds));
  const share = Math.ceil(options.seeds / jobs);
  const parts: Promise<{ report: SiteSimulationReport; lines: string[] }>[] = [];
  for (let job = 0; job < jobs; job++) {
    const seedStart = options.seedStart + job * share;
    const seeds = Math.min(share, options.seedStart + options.seeds - seedStart);
    if (seeds <= 0) break;
    parts.push(
      runWorker({
        seedStart,
        seeds,
        stopAtFirst: !!options.stopAtFirst,
        shrink: options.shrink !== false,
        keepFaults: options.keepFaults ? [...options.keepFaults] : null,
      }),
    );
  }
  const total = emptyReport();
  for (const { report, lines } of await Promise.all(parts)) {
    for (const line of lines) print(line);
    merge(total, report);
  }
  total.wallSeconds = (performance.now() - started) / 1000;
  printSiteReport(print, total);
  return total;
}

function runWorker(job: SiteWorkerJob): Promise<{ report: SiteSimulationReport; lines: string[] }> {
  // Compiled (dist/), the worker is plain JavaScript; from the sources it registers tsx first.
  const compiled = import.meta.url.endsWith('.js');
  const url = new URL(compiled ? './site-worker.js' : './site-worker.ts', import.meta.url).href;
  const bootstrap = compiled
    ? `import(${JSON.stringify(url)})`
    : `import('tsx/esm/api').then(({ register }) => { register(); return import(${JSON.stringify(url)}); })`;
  return new Promise((resolve, reject) => {
    const worker = new Worker(bootstrap, { eval: true, workerData: job });
    worker.once('message', (message: { report: SiteSimulationReport; lines: string[] }) => {
      resolve(message);
      void worker.terminate();
    });
    worker.once('error', reject);
    worker.once('exit', (code) => {
      if (code !== 0) reject(new Error(`simulation worker exited with ${code}`));
    });
  });
}

function emptyReport(): SiteSimulationReport {
  return { seedsRun: 0, violations: 0, failingSeeds: [], wallSeconds: 0, ...emptySiteRunStats() };
}

function addStats(total: SiteRunStats, part: SiteRunStats): void {
  for (const kind of siteFaultKinds) total.faults[kind] += part.faults[kind];
  for (const key of [
    'events',
    'writes',
    'zeroRuns',
    'flushes',
    'reissued',
    'lostInCrash',
    'refused',
    'restarts',
    'failStops',
    'recovers',
    'imagesJudged',
    'syncs',
    'lostSectors',
    'tornSectors',
    'revertedEntries',
    'segmentsCreated',
    'segmentsRemoved',
    'trackingStarted',
    'pacedSeeds',
    'compressedSeeds',
    'pacingStarted',
    'pacingSaturated',
    'resyncStarted',
    'resyncComplete',
    'initialSyncs',
    'inconsistentImageWarnings',
    'imagesInconsistent',
    'switchovers',
    'promotions',
    'rejoins',
    'splitBrains',
    'splitBrainDeltas',
    'splitBrainLoserWrites',
    'roleChangesRefused',
    'lostInFailover',
    'simulatedMs',
  ] as const)
    total[key] += part[key];
}

function add(report: SiteSimulationReport, result: SiteRunResult): void {
  report.seedsRun++;
  report.violations += result.violations.length;
  if (result.violations.length > 0) report.failingSeeds.push(result.seed);
  addStats(report, result.stats);
}

function merge(total: SiteSimulationReport, part: SiteSimulationReport): void {
  total.seedsRun += part.seedsRun;
  total.violations += part.violations;
  total.failingSeeds.push(...part.failingSeeds);
  addStats(total, part);
}

export function printSiteReport(print: (line: string) => void, report: SiteSimulationReport): void {
  print(`faults injected: ${siteFaultKinds.map((kind) => `${kind} ${report.faults[kind]}`).join(', ')}`);
  print(
    `writes ${report.writes}, zero runs ${report.zeroRuns}, flushes ${report.flushes}, writes issued again after a process crash ${report.reissued}, writes a machine crash took back ${report.lostInCrash}, refused ${report.refused}`,
  );
  print(
    `restarts ${report.restarts}, of which through cyclerep recover ${report.recovers}, after a fail-stop on a disk fault ${report.failStops}, images judged ${report.imagesJudged}`,
  );
  print(
    `disk syncs ${report.syncs}; machine crashes lost ${report.lostSectors} sectors, tore ${report.tornSectors}, reverted ${report.revertedEntries} directory entries; journal segments created ${report.segmentsCreated}, removed ${report.segmentsRemoved}`,
  );
  print(
    `secondaries switched to tracking ${report.trackingStarted}, resyncs started ${report.resyncStarted}, completed ${report.resyncComplete}, initial syncs ${report.initialSyncs}; write pacing in ${report.pacedSeeds} seeds, began delaying ${report.pacingStarted} times, at its bound ${report.pacingSaturated}; links compressed in ${report.compressedSeeds} seeds; in-place staging: images said inconsistent ${report.inconsistentImageWarnings} times, reads left unjudged for it ${report.imagesInconsistent}`,
  );
  print(
    `role changes: switchovers ${report.switchovers}, promotions ${report.promotions} (writes after the promoted cut undone ${report.lostInFailover}), rejoins ${report.rejoins}, split brains ${report.splitBrains} (resolved with a delta ${report.splitBrainDeltas}; writes of their own undone ${report.splitBrainLoserWrites}), refused or given up ${report.roleChangesRefused}`,
  );
  const seedsPerSecond = report.wallSeconds > 0 ? report.seedsRun / report.wallSeconds : 0;
  print(
    `events ${report.events}, simulated ${(report.simulatedMs / 1000).toFixed(0)} s, wall time ${report.wallSeconds.toFixed(1)} s (${seedsPerSecond.toFixed(1)} seeds/s)`,
  );
  if (report.failingSeeds.length > 0) print(`failing seeds: ${report.failingSeeds.slice(0, 20).join(' ')}`);
  print(`sim: ${report.seedsRun} seeds, ${report.violations} violations`);
}
