// Proves the daemons' real code under faults with the whole-site simulator: real PrimaryNode and
// SecondaryNodes, their journals, volume files, write-back, apply, redo and `cyclerep recover`, over
// simulated disks that lose, tear and reorder what was not synced, simulated links and simulated
// time. Thousands of seeds end with no violation of the oracle (which takes nothing from the code
// under test); each planted defect of the node and storage code is caught within the seeds that
// ran clean, so the checks can fail; and a seed replays exactly.
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { availableParallelism } from 'node:os';
import { test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { mutants, runMutant } from '../../src/sim/mutants.ts';
import { runSiteSeed } from '../../src/sim/sites/site-run.ts';
import { runSiteSimulationParallel } from '../../src/sim/sites/site-runner.ts';
import { diskFaultsEnabled, roleChangesEnabled, wipesEnabled } from '../../src/sim/sites/site-scenario.ts';

/** CI runs 2,000 seeds; SITE_SIM_SEEDS raises (or, for a quick local run, lowers) that. */
const seeds = Number(process.env.SITE_SIM_SEEDS ?? 2000);
const root = fileURLToPath(new URL('../..', import.meta.url));

test(`${seeds} whole-site scenarios under faults violate nothing`, { timeout: 40 * 60_000 }, async () => {
  const lines: string[] = [];
  const report = await runSiteSimulationParallel({
    seeds,
    seedStart: 1,
    jobs: availableParallelism(),
    print: (line) => lines.push(line),
  });
  process.stdout.write(`${lines.slice(-6).join('\n')}\n`);
  assert.equal(report.violations, 0, lines.join('\n'));
  assert.equal(report.seedsRun, seeds);
  // The scenarios must really crash, tear and recover, or "no violation" would prove little.
  for (const [kind, count] of Object.entries(report.faults)) {
    // Disk faults are on unless SIM_DISK_FAULTS=0 turns them off.
    if ((kind === 'disk-full' || kind === 'disk-error') && !diskFaultsEnabled()) continue;
    // So are wipes, unless SIM_WIPES=0.
    if (kind === 'secondary-wipe' && !wipesEnabled()) continue;
    assert.ok(count > 0, `no ${kind} injected`);
  }
  assert.ok(report.restarts > seeds / 2, `only ${report.restarts} restarts`);
  assert.ok(report.recovers > 0, 'no secondary came back through cyclerep recover');
  assert.ok(report.lostInCrash > 0, 'no machine crash took an unflushed write back');
  assert.ok(report.lostSectors + report.tornSectors > 0, 'no machine crash lost or tore a sector');
  assert.ok(report.imagesJudged > seeds * 20, `only ${report.imagesJudged} images judged`);
  // Tracking and resync must happen too (docs/resync.md), or their checks would prove little.
  assert.ok(report.trackingStarted > 0, 'no secondary switched to tracking');
  assert.ok(report.resyncComplete > 0, 'no resync completed');
  if (wipesEnabled()) assert.ok(report.initialSyncs > 0, 'no wiped secondary came back through initial sync');
  // And the operator's role changes (docs/failover.md), unless SIM_ROLE_CHANGES=0.
  if (roleChangesEnabled()) {
    assert.ok(report.switchovers > 0, 'no switchover was carried out');
    assert.ok(report.promotions > 0 && report.lostInFailover > 0, 'no failover left writes behind');
    assert.ok(report.rejoins > 0, 'no old primary rejoined');
    assert.ok(report.splitBrains > 0, 'no split brain was resolved');
    assert.ok(report.splitBrainDeltas > 0, 'no split brain was resolved with a delta');
  }
});

for (const mutant of mutants.filter((candidate) => candidate.simulator === 'sites')) {
  // Within the seeds the test above ran clean, so the defect is what fails the first failing one.
  const seedsClean = Math.min(seeds, mutant.seedsToCatch ?? 1000);
  test(`the planted defect ${mutant.name} is caught within ${seedsClean} seeds`, {
    timeout: 20 * 60_000,
  }, async () => {
    let output = '';
    const code = await runMutant(
      mutant,
      ['--seeds', String(seedsClean), '--stop-at-first', '--no-shrink', '--jobs', '1'],
      (text) => {
        output += text;
      },
    );
    assert.equal(code, 1, `${mutant.name} (${mutant.defect}) went unnoticed:\n${output.slice(-3000)}`);
    // The failing seed ran clean without the defect (the test above), so the defect is what failed it.
    const failing = Number(/^FAIL seed (\d+):/m.exec(output)?.[1]);
    assert.ok(failing >= 1 && failing <= seeds, output.slice(-3000));
    assert.match(output, /violation: /);
    process.stdout.write(`# ${mutant.name}: first caught by seed ${failing}\n`);
  });
}

/**
 * Seeds (with their shrunk fault schedules) that found real defects, kept as they are so that
 * each stays a check even if the scenario drawing changes the seeds above. Those found by disk
 * faults run with them whatever SIM_DISK_FAULTS says (their indices count the disk faults).
 */
const regressions: {
  seed: number;
  faults: number[];
  diskFaults?: true;
  /** Found by a role change (docs/failover.md): run with them whatever SIM_ROLE_CHANGES says. */
  roleChanges?: true;
  /** Found with in-place staging drawn as it is by default (the others run with SIM_IN_PLACE=0). */
  inPlace?: true;
  found: string;
}[] = [
  {
    seed: 54,
    faults: [2, 4],
    found:
      "an initial sync's first cycle was stored before its all-chunks bitmap was durable; a primary machine crash lost the bitmap and the secondary applied a unit without the collected cycles' blocks",
  },
  {
    seed: 1872,
    faults: [0, 1, 4],
    found:
      'a fold into the bitmap skipped cycles the secondary had stored in a resync, without raising the base: wiped, it came back at 0 and its copy lacked their blocks',
  },
  {
    seed: 632,
    faults: [1, 2],
    found:
      'a secondary wiped again after storing resync cycles came back below the journal floor, which collection had moved past the bitmap: the primary folded cycles it no longer held',
  },
  {
    seed: 261,
    faults: [0],
    found:
      'collection deleted every segment but one whose checkpoint was not durable; after a power loss the primary numbered cycles from 1 again',
  },
  {
    seed: 981,
    faults: [2],
    found:
      'cyclerep recover stopped while its collection still unlinked a segment; the daemon after it failed on ENOENT',
  },
  {
    seed: 821,
    faults: [1],
    found:
      "a segment's creation wrote a journal.state floor above a segment still being collected, before its own checkpoint was on disk; a power loss left an empty journal",
  },
  {
    seed: 588,
    faults: [5],
    found:
      'the redo wrote every journaled write one after the other: over a slow disk a restart took minutes',
  },
  {
    seed: 77,
    faults: [3],
    diskFaults: true,
    found: 'a primary whose disk filled up served stale reads while it stopped',
  },
  {
    seed: 7,
    faults: [3, 6, 12, 13],
    diskFaults: true,
    found:
      'after a failed fdatasync the restarted primary went on from frames only in the page cache; a power loss took them from behind durable frames and the journal was refused as damaged',
  },
  {
    seed: 17766,
    faults: [1, 5],
    found:
      'a link failed in the tick that paused copy reads for a due switch; nothing cleared the pause on a quiet primary, so the next resync issued no copy read and never ended',
  },
  {
    seed: 29968,
    faults: [0, 6],
    found:
      'a machine crash between collect and the deletion of its segments left the journal over capacity; the restarted primary never collected again and held every write for ever',
  },
  {
    seed: 71,
    faults: [6],
    diskFaults: true,
    found:
      'a secondary whose disk filled while it created its volumes at first contact was left with images and no site.json, and refused every start after',
  },
  {
    seed: 52595,
    faults: [0, 1, 2],
    inPlace: true,
    found:
      "a secondary's new segment restated the applied cycle that was durable, not the marker appended before it; the release of that cycle then deleted the older segment, and after a restart the secondary never applied again (found by the 100,000-seed run)",
  },
  {
    seed: 87,
    faults: [],
    roleChanges: true,
    found:
      "a secondary stopped for a switchover still appended to its journal after the stop, creating a segment the promoted primary's new journal had created already",
  },
  {
    seed: 150,
    faults: [],
    roleChanges: true,
    found:
      'a secondary stopped for a promotion with an apply backlog still read journal blocks for its apply after the stop had closed the journal',
  },
  {
    seed: 177,
    faults: [],
    roleChanges: true,
    found:
      'a late release of a secondary stopped for a promotion deleted segments and rewrote journal.state under the journal the promotion had put in place',
  },
  {
    seed: 8793,
    faults: [4, 8, 9],
    roleChanges: true,
    inPlace: true,
    found:
      "a secondary staging in place was promoted with an in-place resync cycle stored: the promotion's settle applied it, and the new primary exposed an image that was no consistent cut",
  },
  {
    seed: 2305,
    faults: [2, 3],
    roleChanges: true,
    inPlace: true,
    found:
      'the same promotion of an in-place resync cycle (seed 8793): the new primary showed a write its history did not hold',
  },
  {
    seed: 3903,
    faults: [2, 5, 7, 12],
    diskFaults: true,
    roleChanges: true,
    inPlace: true,
    found:
      "a secondary's durable-watermark frame failed on a full disk; no append waited for it, so the site ran on for seconds with a dead journal and failed only at its next append",
  },
  {
    seed: 23111,
    faults: [0, 2],
    roleChanges: true,
    inPlace: true,
    found:
      'a secondary wiped while the primary was down came back below the journal floor and was switched to tracking at once: the bitmap began at its stored number 0 and folded only cycles still in the journal, so its resync skipped blocks written only in collected cycles',
  },
];

/**
 * Runs `run` with SIM_DISK_FAULTS as `diskFaults` asks, SIM_ROLE_CHANGES as `roleChanges` does
 * (the older regressions were found without them), and every secondary staging its resyncs
 * unless `inPlace` (SIM_IN_PLACE=0: most regressions were found so, and in-place staging relaxes
 * the oracle), then puts the variables back as they were.
 */
async function withDiskFaults<T>(
  diskFaults: boolean,
  roleChanges: boolean,
  inPlace: boolean,
  run: () => Promise<T>,
): Promise<T> {
  const before = {
    SIM_DISK_FAULTS: process.env.SIM_DISK_FAULTS,
    SIM_IN_PLACE: process.env.SIM_IN_PLACE,
    SIM_ROLE_CHANGES: process.env.SIM_ROLE_CHANGES,
  };
  if (diskFaults) process.env.SIM_DISK_FAULTS = '1';
  process.env.SIM_ROLE_CHANGES = roleChanges ? '1' : '0';
  process.env.SIM_IN_PLACE = inPlace ? '1' : '0';
  try {
    return await run();
  } finally {
    for (const [name, value] of Object.entries(before)) {
      if (value === undefined) delete process.env[name];
      else process.env[name] = value;
    }
  }
}

for (const { seed, faults, diskFaults, roleChanges, inPlace, found } of regressions) {
  const title = `seed ${seed} (faults ${faults.join(',') || 'none'}${diskFaults ? ', disk faults on' : ''}${roleChanges ? ', role changes on' : ''}${inPlace ? ', in-place staging as drawn' : ''}) runs clean; it found: ${found}`;
  test(title, async () => {
    const result = await withDiskFaults(diskFaults === true, roleChanges === true, inPlace === true, () =>
      runSiteSeed(seed, faults),
    );
    assert.deepEqual(result.violations, [], result.trace.join('\n'));
  });
}

test('a whole-site seed replays exactly: same trace, same figures', async () => {
  const first = await runSiteSeed(17, undefined, true);
  const second = await runSiteSeed(17, undefined, true);
  assert.deepEqual(second.trace, first.trace);
  assert.deepEqual(second.stats, first.stats);
  assert.ok(first.trace.length > 50);
});

test('npm run sim exits 0 with a report; a planted defect makes it exit 1 with a replay command', {
  timeout: 300_000,
}, () => {
  const clean = spawnSync('npx', ['tsx', 'src/sim/main.ts', '--seeds', '4', '--jobs', '2'], {
    cwd: root,
    encoding: 'utf8',
  });
  assert.equal(clean.status, 0, clean.stdout + clean.stderr);
  assert.match(clean.stdout.trim().split('\n').at(-1) ?? '', /^sim: 4 seeds, 0 violations$/);
  assert.match(clean.stdout, /faults injected: connection-drop \d+/);
  assert.match(clean.stdout, /seeds\/s\)/);
  const planted = spawnSync(
    'npx',
    ['tsx', 'src/sim/main.ts', '--mutant', 'zero-run-short', '--seeds', '3', '--jobs', '1', '--no-shrink'],
    { cwd: root, encoding: 'utf8' },
  );
  assert.equal(planted.status, 1, planted.stdout + planted.stderr);
  assert.match(planted.stdout, /replay: npm run sim -- --seed-start \d+ --seeds 1/);
  const unknown = spawnSync('npx', ['tsx', 'src/sim/main.ts', '--mutant', 'nonsense'], {
    cwd: root,
    encoding: 'utf8',
  });
  assert.equal(unknown.status, 2);
  assert.match(unknown.stderr, /unknown --mutant nonsense/);
});
