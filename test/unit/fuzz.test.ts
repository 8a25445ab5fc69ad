// Runs every mutation fuzz target (test/fuzz/targets.ts: site-link frames, the secondary's protocol
// logic, NBD handshake and requests, journal records) for FUZZ_SECONDS each (1 s in CI; `npm run
// fuzz -- --seconds 600` for millions of cases). A failure names the seed and case that replay it.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { runFuzz } from '../fuzz/run.ts';
import { fuzzTargets } from '../fuzz/targets.ts';

const seconds = Number(process.env.FUZZ_SECONDS ?? 1);
const seed = Number(process.env.FUZZ_SEED ?? Date.now() % 1_000_000);

for (const [name, target] of Object.entries(fuzzTargets)) {
  test(`fuzz ${name}: mutated input never breaks the parser (seed ${seed})`, () => {
    const result = runFuzz(target, { seed, seconds });
    assert.equal(
      result.failure,
      null,
      `case ${result.failure?.case}: ${result.failure?.message}\nreplay: npm run fuzz -- --target ${name} --seed ${seed} --case ${result.failure?.case}`,
    );
    assert.ok(result.cases > 100, `${result.cases} cases ran`);
  });
}
