// Runs every mutation fuzz target (test/fuzz/: site-link frames, the secondary's protocol logic,
// NBD handshake and requests over real exports, journal records) for FUZZ_SECONDS each (1.5 s in
// CI; `npm run fuzz -- --seconds 600` for millions of cases). A failure names the seed and case that
// replay it. Then proves the fuzzers can fail: each catches a defect planted in its own target
// (test/fuzz/planted.ts) within its budget, and the secondary's and the NBD fuzzers really reach
// store, apply and checked replies.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { nbdReach } from '../fuzz/nbd-target.ts';
import { type PlantedDefect, plantedDefects, withPlantedDefect } from '../fuzz/planted.ts';
import { runFuzz } from '../fuzz/run.ts';
import { secondaryReach } from '../fuzz/secondary-target.ts';
import { fuzzTargets } from '../fuzz/targets.ts';

const seconds = Number(process.env.FUZZ_SECONDS ?? 1.5);
const seed = Number(process.env.FUZZ_SEED ?? Date.now() % 1_000_000);

for (const [name, target] of Object.entries(fuzzTargets)) {
  test(`fuzz ${name}: mutated input never breaks the code behind it (seed ${seed})`, async () => {
    const result = await runFuzz(target, { seed, seconds });
    assert.equal(
      result.failure,
      null,
      `case ${result.failure?.case}: ${result.failure?.message}\nreplay: npm run fuzz -- --target ${name} --seed ${seed} --case ${result.failure?.case}`,
    );
    assert.ok(result.cases > 50, `${result.cases} cases ran`);
  });
}

test('fuzz secondary: most mutated sessions still store and apply cycles', async () => {
  Object.assign(secondaryReach, { cases: 0, stored: 0, applied: 0 });
  await runFuzz(fuzzTargets.secondary as NonNullable<(typeof fuzzTargets)['secondary']>, {
    seed,
    seconds: 0.5,
  });
  const stored = secondaryReach.stored / secondaryReach.cases;
  const applied = secondaryReach.applied / secondaryReach.cases;
  process.stdout.write(
    `secondary fuzzer: ${secondaryReach.cases} cases, ${(stored * 100).toFixed(0)}% stored a cycle, ${(applied * 100).toFixed(0)}% applied one\n`,
  );
  // About two thirds do (seeds 1 to 3: 66-68%); a third is the floor that says the oracle is fed.
  assert.ok(stored > 1 / 3, `only ${(stored * 100).toFixed(1)}% of cases stored a cycle`);
  assert.ok(applied > 1 / 3, `only ${(applied * 100).toFixed(1)}% of cases applied a cycle`);
});

test('fuzz nbd: replies to requests are checked one by one', async () => {
  Object.assign(nbdReach, { cases: 0, requestsChecked: 0 });
  await runFuzz(fuzzTargets.nbd as NonNullable<(typeof fuzzTargets)['nbd']>, { seed, seconds: 0.5 });
  process.stdout.write(`nbd fuzzer: ${nbdReach.cases} cases, ${nbdReach.requestsChecked} replies checked\n`);
  assert.ok(nbdReach.requestsChecked > nbdReach.cases, `${nbdReach.requestsChecked} replies checked`);
});

/** Each fuzz target with a defect of its own target it must catch, well inside this budget. */
const planted: [target: string, defect: PlantedDefect][] = [
  ['frames', 'reader-bounds'],
  ['frames', 'reader-u64-range'],
  ['records', 'reader-bounds'],
  ['records', 'reader-u64-range'],
  ['secondary', 'secondary-extent-range'],
  ['nbd', 'nbd-range'],
  ['nbd', 'nbd-lost-reply'],
];
const plantedSecondsMax = 10;

for (const [name, defect] of planted) {
  test(`fuzz ${name} catches the planted defect ${defect}: ${plantedDefects[defect].description}`, async () => {
    const target = fuzzTargets[name];
    assert.ok(target, name);
    const result = await withPlantedDefect(defect, () =>
      runFuzz(target, { seed, seconds: plantedSecondsMax }),
    );
    assert.ok(result.failure, `${defect} went unnoticed for ${result.cases} cases (seed ${seed})`);
    process.stdout.write(
      `${defect} caught by fuzz ${name} at case ${result.failure.case} after ${result.seconds.toFixed(2)} s: ${result.failure.message.split('\n')[0]}\n`,
    );
  });
}
