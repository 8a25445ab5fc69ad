// Proves the protocol under faults with the deterministic core simulator: thousands of seeded
// scenarios (drops, stalls, corrupted bytes, partitions, crashes of every site, several nodes and
// secondaries) end with no invariant violated; each deliberate defect of the core, planted in a copy
// of the sources (src/sim/mutants.ts), is caught within 500 seeds, so the checkers can fail; and a
// seed replays exactly.
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { availableParallelism } from 'node:os';
import { test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { mutants, runMutant } from '../../src/sim/mutants.ts';
import { runSeed, runSimulationParallel } from '../../src/sim/runner.ts';

/** CI runs 2,000 seeds; SIM_SEEDS raises (or, for a quick local run, lowers) that. */
const seeds = Number(process.env.SIM_SEEDS ?? 2000);
const root = fileURLToPath(new URL('../..', import.meta.url));

test(`${seeds} seeded scenarios under faults violate no invariant`, { timeout: 20 * 60_000 }, async () => {
  const lines: string[] = [];
  const report = await runSimulationParallel({
    seeds,
    seedStart: 1,
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

const coreMutants = mutants.filter((mutant) => mutant.simulator === 'core');

test('the core simulator has its deliberate defects', () => {
  assert.ok(coreMutants.length >= 7, `only ${coreMutants.length} core mutants`);
});

for (const mutant of coreMutants) {
  test(`the mutant ${mutant.name} (${mutant.defect}) is caught within 500 seeds`, {
    timeout: 5 * 60_000,
  }, async () => {
    let output = '';
    const code = await runMutant(
      mutant,
      ['--core', '--seeds', '500', '--stop-at-first', '--no-shrink', '--jobs', '1'],
      (text) => {
        output += text;
      },
    );
    assert.equal(code, 1, `${mutant.name} went unnoticed for 500 seeds (exit ${code}):\n${output}`);
    assert.match(output, /^ {2}violation: /m, output);
    assert.match(output, /^sim: \d+ seeds, [1-9]\d* violations$/m, output);
    assert.match(output, /replay: npm run sim -- --core --seed-start \d+ --seeds 1 --trace/);
  });
}

test('a seed replays exactly: same events, same trace, same figures', () => {
  const first = runSeed(17, true);
  const second = runSeed(17, true);
  assert.deepEqual(second.trace, first.trace);
  assert.deepEqual(second.stats, first.stats);
  assert.ok(first.trace.length > 10);
});

test('npm run sim -- --core exits 0 with a clean report, 1 when a defect is found, 2 on a usage error', {
  timeout: 120_000,
}, () => {
  const clean = spawnSync('npx', ['tsx', 'src/sim/main.ts', '--core', '--seeds', '4', '--jobs', '2'], {
    cwd: root,
    encoding: 'utf8',
  });
  assert.equal(clean.status, 0, clean.stderr);
  assert.match(clean.stdout.trim().split('\n').at(-1) ?? '', /^sim: 4 seeds, 0 violations$/);
  assert.match(clean.stdout, /faults injected: connection-drop \d+/);
  assert.match(clean.stdout, /recoveries performed \d+, recovery cycles applied \d+, largest lag \d+ cycles/);
  const buggy = spawnSync(
    'npx',
    [
      'tsx',
      'src/sim/main.ts',
      '--mutant',
      'apply-partial',
      '--core',
      '--seeds',
      '3',
      '--jobs',
      '1',
      '--no-shrink',
    ],
    { cwd: root, encoding: 'utf8' },
  );
  assert.equal(buggy.status, 1, buggy.stdout + buggy.stderr);
  assert.match(buggy.stdout, /^sim: planted apply-partial /);
  assert.match(buggy.stdout.trim().split('\n').at(-1) ?? '', /^sim: 3 seeds, [1-9]\d* violations$/);
  const unknown = spawnSync('npx', ['tsx', 'src/sim/main.ts', '--mutant', 'nonsense'], {
    cwd: root,
    encoding: 'utf8',
  });
  assert.equal(unknown.status, 2);
  assert.match(unknown.stderr, /unknown --mutant nonsense/);
  // The former switch is gone: a usage error, not a crash (exit 1 would read as "a violation").
  const former = spawnSync('npx', ['tsx', 'src/sim/main.ts', '--core', '--bug', 'apply-partial'], {
    cwd: root,
    encoding: 'utf8',
  });
  assert.equal(former.status, 2, former.stderr);
  assert.match(former.stderr, /Unknown option '--bug'/);
});
