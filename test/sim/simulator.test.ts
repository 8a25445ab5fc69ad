// Proves the protocol under faults with the deterministic simulator: thousands of seeded
// scenarios (drops, stalls, corrupted bytes, partitions, crashes of every site, several nodes and
// secondaries) end with no invariant violated; each deliberate defect is caught within 500 seeds,
// so the checkers can fail; and a seed replays exactly.
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { availableParallelism } from 'node:os';
import { test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { type BugName, bugNames, noBugs } from '../../src/core/types.ts';
import { runSeed, runSimulation, runSimulationParallel } from '../../src/sim/runner.ts';

/** CI runs 2,000 seeds; SIM_SEEDS raises (or, for a quick local run, lowers) that. */
const seeds = Number(process.env.SIM_SEEDS ?? 2000);
const root = fileURLToPath(new URL('../..', import.meta.url));

test(`${seeds} seeded scenarios under faults violate no invariant`, { timeout: 20 * 60_000 }, async () => {
  const lines: string[] = [];
  const report = await runSimulationParallel({
    seeds,
    seedStart: 1,
    bugs: noBugs,
    jobs: availableParallelism(),
    print: (line) => lines.push(line),
  });
  process.stdout.write(`${lines.slice(-4).join('\n')}\n`);
  assert.equal(report.violations, 0, lines.join('\n'));
  assert.equal(report.seedsRun, seeds);
  // The scenarios must really exercise recovery, or "no violation" would prove little.
  assert.ok(report.recoveries > seeds, `only ${report.recoveries} recoveries in ${seeds} seeds`);
  assert.ok(report.recoveryCyclesApplied > seeds / 10);
  for (const [kind, count] of Object.entries(report.faults)) assert.ok(count > 0, `no ${kind} injected`);
});

for (const bug of bugNames) {
  test(`the deliberate defect ${bug} is caught within 500 seeds`, { timeout: 5 * 60_000 }, () => {
    const lines: string[] = [];
    const report = runSimulation({
      seeds: 500,
      seedStart: 1,
      bugs: new Set<BugName>([bug]),
      stopAtFirst: true,
      print: (line) => lines.push(line),
    });
    assert.ok(report.violations > 0, `${bug} went unnoticed for 500 seeds`);
    assert.match(lines.join('\n'), /replay: npm run sim -- --seed-start \d+ --seeds 1 --bug /);
  });
}

test('a seed replays exactly: same events, same trace, same figures', () => {
  const first = runSeed(17, noBugs, true);
  const second = runSeed(17, noBugs, true);
  assert.deepEqual(second.trace, first.trace);
  assert.deepEqual(second.stats, first.stats);
  assert.ok(first.trace.length > 10);
});

test('npm run sim exits 0 with a clean report and 1 when a defect is found', { timeout: 120_000 }, () => {
  const clean = spawnSync('npx', ['tsx', 'src/sim/main.ts', '--seeds', '4', '--jobs', '2'], {
    cwd: root,
    encoding: 'utf8',
  });
  assert.equal(clean.status, 0, clean.stderr);
  assert.match(clean.stdout.trim().split('\n').at(-1) ?? '', /^sim: 4 seeds, 0 violations$/);
  assert.match(clean.stdout, /faults injected: connection-drop \d+/);
  assert.match(clean.stdout, /recoveries performed \d+, recovery cycles applied \d+, largest lag \d+ cycles/);
  const buggy = spawnSync('npx', ['tsx', 'src/sim/main.ts', '--seeds', '3', '--bug', 'apply-partial'], {
    cwd: root,
    encoding: 'utf8',
  });
  assert.equal(buggy.status, 1);
  assert.match(buggy.stdout.trim().split('\n').at(-1) ?? '', /^sim: 3 seeds, [1-9]\d* violations$/);
  const unknown = spawnSync('npx', ['tsx', 'src/sim/main.ts', '--bug', 'nonsense'], {
    cwd: root,
    encoding: 'utf8',
  });
  assert.equal(unknown.status, 2);
  assert.match(unknown.stderr, /unknown --bug nonsense/);
});
