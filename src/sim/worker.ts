/** Worker thread: runs one range of seeds and posts back its report and printed lines. */
import { parentPort, workerData } from 'node:worker_threads';
import { runSimulation, type WorkerJob } from './runner.ts';

const job = workerData as WorkerJob;
const lines: string[] = [];
const report = runSimulation({
  seedStart: job.seedStart,
  seeds: job.seeds,
  traceAll: job.traceAll,
  stopAtFirst: job.stopAtFirst,
  shrink: job.shrink,
  ...(job.keepFaults ? { keepFaults: job.keepFaults } : {}),
  print: (line) => lines.push(line),
  quiet: true,
});
parentPort?.postMessage({ report, lines });
