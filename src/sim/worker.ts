/** Worker thread: runs one range of seeds and posts back its report and printed lines. */
import { parentPort, workerData } from 'node:worker_threads';
import type { BugName } from '../core/types.ts';
import { runSimulation } from './runner.ts';

interface Job {
  seedStart: number;
  seeds: number;
  bugs: BugName[];
  traceAll: boolean;
  stopAtFirst: boolean;
}

const job = workerData as Job;
const lines: string[] = [];
const report = runSimulation({
  seedStart: job.seedStart,
  seeds: job.seeds,
  bugs: new Set(job.bugs),
  traceAll: job.traceAll,
  stopAtFirst: job.stopAtFirst,
  print: (line) => lines.push(line),
  quiet: true,
});
parentPort?.postMessage({ report, lines });
