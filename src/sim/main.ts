/**
 * `npm run sim -- --seeds N [--seed-start S] [--trace]`: runs N seeded whole-site scenarios (real
 * PrimaryNode and SecondaryNodes over simulated disks, links and time) and prints a report; exits 0
 * only when no invariant was violated. `--core` runs the protocol core alone (faster). `--mutant NAME`
 * runs the same command on a copy of the sources with a deliberate defect planted (src/sim/mutants.ts).
 * A failing seed is printed with its scenario and the events that led to the violation;
 * `--seed-start S --seeds 1` replays it exactly.
 */

import { availableParallelism } from 'node:os';
import { parseArgs } from 'node:util';
import { type Mutant, mutants, runMutant } from './mutants.ts';
import { runSimulation, runSimulationParallel } from './runner.ts';
import { runSiteSimulation, runSiteSimulationParallel } from './sites/site-runner.ts';

async function main(): Promise<number> {
  const { values } = parseArgs({
    options: {
      seeds: { type: 'string', default: '200' },
      'seed-start': { type: 'string', default: '1' },
      trace: { type: 'boolean', default: false },
      'stop-at-first': { type: 'boolean', default: false },
      jobs: { type: 'string', default: String(availableParallelism()) },
      faults: { type: 'string' },
      'no-shrink': { type: 'boolean', default: false },
      core: { type: 'boolean', default: false },
      mutant: { type: 'string' },
      help: { type: 'boolean', default: false },
    },
  });
  if (values.help) {
    process.stdout.write(
      'usage: npm run sim -- [--seeds N] [--seed-start S] [--trace] [--stop-at-first]\n' +
        '                     [--jobs J] [--faults I,J,... | none] [--no-shrink] [--core] [--mutant NAME]\n' +
        'Without --core: whole sites (real nodes, journals and volume files over simulated disks).\n' +
        '--core: the protocol state machines alone (PrimaryGroup, Secondary) over a simulated network.\n' +
        '--mutant NAME: the same run on a copy of the sources with a deliberate defect planted;\n' +
        `  for the whole sites: ${mutantNames('sites')}\n` +
        `  for --core: ${mutantNames('core')}\n`,
    );
    return 0;
  }
  if (values.mutant !== undefined) return runNamedMutant(values.mutant);
  const seeds = Number(values.seeds);
  const seedStart = Number(values['seed-start']);
  if (!Number.isSafeInteger(seeds) || seeds < 1 || !Number.isSafeInteger(seedStart) || seedStart < 0) {
    process.stderr.write('sim: --seeds must be a positive integer and --seed-start a non-negative one\n');
    return 2;
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
    traceAll: values.trace,
    stopAtFirst: values['stop-at-first'],
    shrink: !values['no-shrink'],
    ...(keepFaults ? { keepFaults } : {}),
    print: (line: string) => process.stdout.write(`${line}\n`),
  };
  // One seed, or a trace, runs on the main thread so that its output streams as it happens.
  const onMainThread = jobs === 1 || seeds === 1 || values.trace;
  if (!values.core) {
    const report = onMainThread
      ? await runSiteSimulation(options)
      : await runSiteSimulationParallel({ ...options, jobs });
    return report.violations === 0 ? 0 : 1;
  }
  const report = onMainThread ? runSimulation(options) : await runSimulationParallel({ ...options, jobs });
  return report.violations === 0 ? 0 : 1;
}

/** Runs the same command on a copy of the sources with the named defect planted. */
async function runNamedMutant(name: string): Promise<number> {
  const mutant = mutants.find((candidate) => candidate.name === name);
  if (!mutant) {
    process.stderr.write(`sim: unknown --mutant ${name}; known: ${mutants.map((m) => m.name).join(', ')}\n`);
    return 2;
  }
  const rest = process.argv
    .slice(2)
    .filter(
      (argument, index, all) =>
        argument !== '--mutant' && all[index - 1] !== '--mutant' && !argument.startsWith('--mutant='),
    );
  process.stdout.write(`sim: planted ${mutant.name} (${mutant.defect}) in a copy of the sources\n`);
  if (mutant.simulator === 'core' && !rest.includes('--core')) {
    process.stdout.write(
      `sim: ${mutant.name} is one the core simulator catches; add --core to run that one\n`,
    );
  }
  return runMutant(mutant, rest, (text) => process.stdout.write(text));
}

function mutantNames(simulator: Mutant['simulator']): string {
  return mutants
    .filter((mutant) => mutant.simulator === simulator)
    .map((mutant) => mutant.name)
    .join(', ');
}

function parseFaultList(text: string | undefined): number[] | undefined | 'invalid' {
  if (text === undefined) return undefined;
  if (text === 'none') return [];
  const indices = text.split(',').map(Number);
  return indices.every((index) => Number.isSafeInteger(index) && index >= 0) ? indices : 'invalid';
}

// A mistyped option (or the former --bug) is a usage error, exit 2: exit 1 means a violation was found.
process.exitCode = await main().catch((error: unknown) => {
  if (!String((error as { code?: unknown }).code).startsWith('ERR_PARSE_ARGS')) throw error;
  process.stderr.write(
    `sim: ${(error as Error).message.split('.')[0]}; npm run sim -- --help lists the options\n`,
  );
  return 2;
});
