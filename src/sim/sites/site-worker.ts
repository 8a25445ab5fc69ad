/** Worker thread: runs one range of whole-site seeds and posts back its report and printed lines. */
import { parentPort, workerData } from 'node:worker_threads';
import { runSiteSimulation, type SiteWorkerJob } from './site-runner.ts';

const job = workerData as SiteWorkerJob;
const lines: string[] = [];
const report = await runSiteSimulation({
  seedStart: job.seedStart,
  seeds: job.seeds,
  stopAtFirst: job.stopAtFirst,
  shrink: job.shrink,
  ...(job.keepFaults ? { keepFaults: job.keepFaults } : {}),
  print: (line) => lines.push(line),
  quiet: true,
});
parentPort?.postMessage({ report, lines });
