/**
 * `npm run sim -- --seeds N [--seed-start S] [--bug NAME] [--trace]`: runs N seeded scenarios and
 * prints a report; exits 0 only when no invariant was violated. A failing seed is printed with its
 * scenario and the events that led to the violation; `--seed-start S --seeds 1` replays it exactly.
 */

import { availableParallelism } from 'node:os';
import { parseArgs } from 'node:util';
import { type BugName, bugNames } from '../core/types.ts';
import { runSimulation, runSimulationParallel } from './runner.ts';

async function main(): Promise<number> {
  const { values } = parseArgs({
    options: {
      seeds: { type: 'string', default: '200' },
      'seed-start': { type: 'string', default: '1' },
      bug: { type: 'string', multiple: true, default: [] },
      trace: { type: 'boolean', default: false },
      'stop-at-first': { type: 'boolean', default: false },
      jobs: { type: 'string', default: String(availableParallelism()) },
      faults: { type: 'string' },
      'no-shrink': { type: 'boolean', default: false },
      help: { type: 'boolean', default: false },
    },
  });
  if (values.help) {
    process.stdout.write(
      'usage: npm run sim -- [--seeds N] [--seed-start S] [--bug NAME]... [--trace] [--stop-at-first]\n' +
        '                     [--jobs J] [--faults I,J,... | none] [--no-shrink]\n' +
        `bugs: ${bugNames.join(', ')}\n`,
    );
    return 0;
  }
  const seeds = Number(values.seeds);
  const seedStart = Number(values['seed-start']);
  if (!Number.isSafeInteger(seeds) || seeds < 1 || !Number.isSafeInteger(seedStart) || seedStart < 0) {
    process.stderr.write('sim: --seeds must be a positive integer and --seed-start a non-negative one\n');
    return 2;
  }
  const bugs = new Set<BugName>();
  for (const name of values.bug) {
    if (!(bugNames as readonly string[]).includes(name)) {
      process.stderr.write(`sim: unknown --bug ${name}; known: ${bugNames.join(', ')}\n`);
      return 2;
    }
    bugs.add(name as BugName);
  }
  const jobs = Number(values.jobs);
  if (!Number.isSafeInteger(jobs) || jobs < 1) {
    process.stderr.write('sim: --jobs must be a positive integer\n');
    return 2;
  }
  const keepFaults = parseFaultList(values.faults);
  if (keepFaults === 'invalid') {
    process.stderr.write('sim: --faults takes fault indices separated by commas, or none\n');
    return 2;
  }
  const options = {
    seeds,
    seedStart,
    bugs,
    traceAll: values.trace,
    stopAtFirst: values['stop-at-first'],
    shrink: !values['no-shrink'],
    ...(keepFaults ? { keepFaults } : {}),
    print: (line: string) => process.stdout.write(`${line}\n`),
  };
  // One seed, or a trace, runs on the main thread so that its output streams as it happens.
  const report =
    jobs === 1 || seeds === 1 || values.trace
      ? runSimulation(options)
      : await runSimulationParallel({ ...options, jobs });
  return report.violations === 0 ? 0 : 1;
}

function parseFaultList(text: string | undefined): number[] | undefined | 'invalid' {
  if (text === undefined) return undefined;
  if (text === 'none') return [];
  const indices = text.split(',').map(Number);
  return indices.every((index) => Number.isSafeInteger(index) && index >= 0) ? indices : 'invalid';
}

process.exitCode = await main();
