/**
 * `npm run fuzz -- [--seconds 10] [--seed N] [--target frames,secondary,nbd,records]`: runs each
 * mutation fuzz target for the given time (millions of cases for a long run), prints cases per
 * second, and on a failure the seed and case number that replay it. Exit 1 on a failure.
 */
import { parseArgs } from 'node:util';
import { runFuzz } from './run.ts';
import { fuzzTargets } from './targets.ts';

const { values } = parseArgs({
  options: {
    seconds: { type: 'string', default: '10' },
    seed: { type: 'string' },
    target: { type: 'string' },
    case: { type: 'string' },
  },
});
const names = values.target ? values.target.split(',') : Object.keys(fuzzTargets);
const seed = values.seed === undefined ? Date.now() % 1_000_000 : Number(values.seed);
let failed = false;
for (const name of names) {
  const target = fuzzTargets[name];
  if (!target) {
    process.stderr.write(`unknown target "${name}"; targets: ${Object.keys(fuzzTargets).join(', ')}\n`);
    process.exit(2);
  }
  const result = await runFuzz(target, {
    seed,
    seconds: Number(values.seconds),
    only: values.case === undefined ? undefined : Number(values.case),
  });
  process.stdout.write(
    `${name}: ${result.cases.toLocaleString('en-US')} cases in ${result.seconds.toFixed(1)} s (${Math.round(result.cases / result.seconds).toLocaleString('en-US')}/s), seed ${seed}` +
      (result.failure
        ? `\n  FAILED at case ${result.failure.case}: ${result.failure.message}\n  replay: npm run fuzz -- --target ${name} --seed ${seed} --case ${result.failure.case}`
        : '') +
      '\n',
  );
  if (result.failure) failed = true;
}
process.exit(failed ? 1 : 0);
