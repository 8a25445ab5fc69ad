// Runs every mutation fuzz target (test/fuzz/: site-link frames, the secondary's protocol logic,
// NBD handshake and requests over real exports, journal records) for FUZZ_SECONDS each (1.5 s in
// CI, and at least a floor of cases however slow the machine; `npm run fuzz -- --seconds 600` for millions of cases). A failure names the seed and case that
// replay it. Then proves the fuzzers can fail: each catches a defect planted in its own target
// (test/fuzz/planted.ts) within its budget, and the secondary's and the NBD fuzzers really reach
// store, apply and checked replies.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { nbdReach } from '../fuzz/nbd-target.ts';
import { type PlantedDefect, plantedDefects, withPlantedDefect } from '../fuzz/planted.ts';
import { runFuzz } from '../fuzz/run.ts';
import { secondaryReach } from '../fuzz/secondary-target.ts';
import { type FuzzTarget, fuzzTargets } from '../fuzz/targets.ts';

const seconds = Number(process.env.FUZZ_SECONDS ?? 1.5);
const seed = Number(process.env.FUZZ_SEED ?? Date.now() % 1_000_000);

/** Cases each target runs at least, however slow the machine: the budget is time, the floor is work. */
const casesMin: Record<string, number> = { frames: 500, records: 500, secondary: 200, nbd: 40 };

for (const [name, target] of Object.entries(fuzzTargets)) {
  test(`fuzz ${name}: mutated input never breaks the code behind it (seed ${seed})`, {
    timeout: 300_000,
  }, async () => {
    const result = await runFuzz(target, { seed, seconds, casesMin: casesMin[name] ?? 100 });
    assert.equal(
      result.failure,
      null,
      `case ${result.failure?.case}: ${result.failure?.message}\nreplay: npm run fuzz -- --target ${name} --seed ${seed} --case ${result.failure?.case}`,
    );
  });
}

test('fuzz secondary: most mutated sessions still store and apply cycles', { timeout: 300_000 }, async () => {
  Object.assign(secondaryReach, { cases: 0, stored: 0, applied: 0 });
  const target = fuzzTargets.secondary as FuzzTarget;
  await runFuzz(target, { seed, seconds: 0, casesMin: 300, casesMax: 300 });
  const stored = secondaryReach.stored / secondaryReach.cases;
  const applied = secondaryReach.applied / secondaryReach.cases;
  process.stdout.write(
    `secondary fuzzer: ${secondaryReach.cases} cases, ${(stored * 100).toFixed(0)}% stored a cycle, ${(applied * 100).toFixed(0)}% applied one\n`,
  );
  // About two thirds do (64-68% over the seeds tried); a third is the floor that says the oracle is fed.
  assert.ok(stored > 1 / 3, `only ${(stored * 100).toFixed(1)}% of cases stored a cycle`);
  assert.ok(applied > 1 / 3, `only ${(applied * 100).toFixed(1)}% of cases applied a cycle`);
});

test('fuzz nbd: replies to requests are checked one by one', { timeout: 300_000 }, async () => {
  Object.assign(nbdReach, { cases: 0, requestsChecked: 0 });
  const target = fuzzTargets.nbd as FuzzTarget;
  await runFuzz(target, { seed, seconds: 0, casesMin: 40, casesMax: 40 });
  process.stdout.write(`nbd fuzzer: ${nbdReach.cases} cases, ${nbdReach.requestsChecked} replies checked\n`);
  // About three replies a case are checked; one a case is the floor.
  assert.ok(nbdReach.requestsChecked > nbdReach.cases, `${nbdReach.requestsChecked} replies checked`);
});

/**
 * Each fuzz target with a defect of its own target it must catch, and within how many cases: about
 * ten times the most any of 30 seeds needed (frames/records 14-307, secondary 349, NBD 31).
 */
const planted: [target: string, defect: PlantedDefect, casesMax: number][] = [
  ['frames', 'reader-bounds', 1000],
  ['frames', 'reader-u64-range', 4000],
  ['records', 'reader-bounds', 1000],
  ['records', 'reader-u64-range', 4000],
  ['secondary', 'secondary-extent-range', 4000],
  ['nbd', 'nbd-range', 400],
  ['nbd', 'nbd-lost-reply', 400],
];

for (const [name, defect, casesMax] of planted) {
  test(`fuzz ${name} catches the planted defect ${defect}: ${plantedDefects[defect].description}`, {
    timeout: 300_000,
  }, async () => {
    const target = fuzzTargets[name];
    assert.ok(target, name);
    const result = await withPlantedDefect(defect, () =>
      runFuzz(target, { seed, seconds: Number.POSITIVE_INFINITY, casesMax }),
    );
    assert.ok(result.failure, `${defect} went unnoticed for ${result.cases} cases (seed ${seed})`);
    process.stdout.write(
      `${defect} caught by fuzz ${name} at case ${result.failure.case} after ${result.seconds.toFixed(2)} s: ${result.failure.message.split('\n')[0]}\n`,
    );
  });
}
