/** Runs many seeds, on several worker threads if asked, and sums their statistics into one report. */
import { Worker } from 'node:worker_threads';
import { Cluster, type RunResult } from './cluster.ts';
import { describeScenario, drawScenario, faultKinds } from './scenario.ts';
import { addStats, emptyStats, type SimStats } from './stats.ts';

export interface SimulationOptions {
  seeds: number;
  seedStart: number;
  traceAll?: boolean;
  stopAtFirst?: boolean;
  /** On a failure, also search for a shorter fault schedule that still fails (default true). */
  shrink?: boolean;
  /** Run only these faults of each seed's schedule (replays a shrunk failure). */
  keepFaults?: readonly number[];
  print?: (line: string) => void;
  /** Leave out the summary lines (a worker's part of a larger run). */
  quiet?: boolean;
}

export interface SimulationReport extends SimStats {
  seedsRun: number;
  violations: number;
  failingSeeds: number[];
  wallSeconds: number;
}

export function runSeed(seed: number, traceAll = false, keepFaults?: readonly number[]): RunResult {
  return new Cluster(drawScenario(seed, keepFaults), traceAll).run();
}

/**
 * Greedy shrinking: drops the faults of a failing seed one at a time, keeping each removal after
 * which the seed still fails. Returns the indices of the faults that remain.
 */
export function shrinkFaults(seed: number): number[] {
  let kept = drawScenario(seed).faults.map((_, index) => index);
  for (const candidate of [...kept]) {
    const without = kept.filter((index) => index !== candidate);
    if (runSeed(seed, false, without).violations.length > 0) kept = without;
  }
  return kept;
}

export function runSimulation(options: SimulationOptions): SimulationReport {
  const print = options.print ?? (() => {});
  const started = performance.now();
  const report = emptyReport();
  for (let seed = options.seedStart; seed < options.seedStart + options.seeds; seed++) {
    const result = runSeed(seed, options.traceAll, options.keepFaults);
    add(report, result);
    if (result.violations.length > 0) {
      printFailure(print, seed, options, result);
      if (options.stopAtFirst) break;
    }
  }
  report.wallSeconds = (performance.now() - started) / 1000;
  if (!options.quiet) printReport(print, report);
  return report;
}

/** Splits the seeds over `jobs` worker threads; failures are printed in seed order, then one report. */
export async function runSimulationParallel(
  options: SimulationOptions & { jobs: number },
): Promise<SimulationReport> {
  const print = options.print ?? (() => {});
  const started = performance.now();
  const jobs = Math.max(1, Math.min(options.jobs, options.seeds));
  const share = Math.ceil(options.seeds / jobs);
  const parts: Promise<{ report: SimulationReport; lines: string[] }>[] = [];
  for (let job = 0; job < jobs; job++) {
    const seedStart = options.seedStart + job * share;
    const seeds = Math.min(share, options.seedStart + options.seeds - seedStart);
    if (seeds <= 0) break;
    parts.push(
      runWorker({
        seedStart,
        seeds,
        traceAll: !!options.traceAll,
        stopAtFirst: !!options.stopAtFirst,
        shrink: options.shrink !== false,
        keepFaults: options.keepFaults ? [...options.keepFaults] : null,
      }),
    );
  }
  const results = await Promise.all(parts);
  const total = emptyReport();
  for (const { report, lines } of results) {
    for (const line of lines) print(line);
    merge(total, report);
  }
  total.wallSeconds = (performance.now() - started) / 1000;
  printReport(print, total);
  return total;
}

export interface WorkerJob {
  seedStart: number;
  seeds: number;
  traceAll: boolean;
  stopAtFirst: boolean;
  shrink: boolean;
  keepFaults: number[] | null;
}

function runWorker(job: WorkerJob): Promise<{ report: SimulationReport; lines: string[] }> {
  // Compiled (dist/), the worker is plain JavaScript. From the sources, workers do not inherit tsx's
  // module hooks, so the worker registers them before loading its code.
  const compiled = import.meta.url.endsWith('.js');
  const url = new URL(compiled ? './worker.js' : './worker.ts', import.meta.url).href;
  const bootstrap = compiled
    ? `import(${JSON.stringify(url)})`
    : `import('tsx/esm/api').then(({ register }) => { register(); return import(${JSON.stringify(url)}); })`;
  return new Promise((resolve, reject) => {
    const worker = new Worker(bootstrap, { eval: true, workerData: job });
    worker.once('message', (message: { report: SimulationReport; lines: string[] }) => {
      resolve(message);
      void worker.terminate();
    });
    worker.once('error', reject);
    worker.once('exit', (code) => {
      if (code !== 0) reject(new Error(`simulation worker exited with ${code}`));
    });
  });
}

function merge(total: SimulationReport, part: SimulationReport): void {
  total.seedsRun += part.seedsRun;
  total.violations += part.violations;
  total.failingSeeds.push(...part.failingSeeds);
  addStats(total, part);
}

function emptyReport(): SimulationReport {
  return { ...emptyStats(), seedsRun: 0, violations: 0, failingSeeds: [], wallSeconds: 0 };
}

function add(report: SimulationReport, result: RunResult): void {
  report.seedsRun++;
  report.violations += result.violations.length;
  if (result.violations.length > 0) report.failingSeeds.push(result.seed);
  addStats(report, result.stats);
}

function printFailure(
  print: (line: string) => void,
  seed: number,
  options: SimulationOptions,
  result: RunResult,
): void {
  const faultFlag = options.keepFaults ? ` --faults ${options.keepFaults.join(',') || 'none'}` : '';
  print(`FAIL ${describeScenario(drawScenario(seed, options.keepFaults))}`);
  for (const violation of result.violations) print(`  violation: ${violation}`);
  if (options.shrink !== false && !options.keepFaults) {
    const kept = shrinkFaults(seed);
    const shrunk = runSeed(seed, false, kept);
    const schedule = drawScenario(seed, kept).faults;
    print(
      `  shortest fault schedule found: ${schedule.map((fault) => `${fault.kind}@${fault.atMs}`).join(' ') || 'none'}`,
    );
    for (const violation of shrunk.violations) print(`  violation with it: ${violation}`);
    print(`  events leading to it (${shrunk.trace.length} shown):`);
    for (const line of shrunk.trace) print(`    ${line}`);
    print(
      `  replay the shrunk run: npm run sim -- --core --seed-start ${seed} --seeds 1 --faults ${kept.join(',') || 'none'} --trace`,
    );
  } else {
    print(`  events leading to it (${result.trace.length} shown):`);
    for (const line of result.trace) print(`    ${line}`);
  }
  print(`  replay: npm run sim -- --core --seed-start ${seed} --seeds 1${faultFlag} --trace`);
}

function printReport(print: (line: string) => void, report: SimulationReport): void {
  const faults = faultKinds.map((kind) => `${kind} ${report.faults[kind]}`).join(', ');
  print(`faults injected: ${faults}`);
  print(
    `writes ${report.writes}, cycles closed ${report.cyclesClosed}, recoveries performed ${report.recoveries}, ` +
      `recovery cycles applied ${report.recoveryCyclesApplied}, largest lag ${report.maxLagCycles} cycles`,
  );
  print(`events ${report.events}, wall time ${report.wallSeconds.toFixed(1)} s`);
  if (report.failingSeeds.length > 0) print(`failing seeds: ${report.failingSeeds.slice(0, 20).join(' ')}`);
  print(`sim: ${report.seedsRun} seeds, ${report.violations} violations`);
}
