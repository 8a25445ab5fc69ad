// Proves crash safety with real processes: under load, the secondary and then the primary are
// killed with SIGKILL (CRASH_ITERATIONS times each, 30 by default, at least 1), each time only while
// work is in flight: the secondary once it has stored cycles since its last restart, the primary
// once it has acknowledged writes since its last start. After each kill, `cyclerep recover` makes
// the dead site's image files whole and they must be a consistent cut; the secondary's image moves
// forward between kills and never back; the primary keeps every write it acknowledged, as recorded
// by the load process one by one before each acknowledgement reached its source (LOAD_ACK_FILE).
// After the load stops, the secondary converges to the primary, byte for byte.
import assert from 'node:assert/strict';
import { existsSync, readFileSync } from 'node:fs';
import { after, test } from 'node:test';
import { Random } from '../../src/sim/random.ts';
import { sleep, Workspace, waitForStatus } from './harness.ts';

const iterations = Number(process.env.CRASH_ITERATIONS ?? 30);
const seed = Number(process.env.CRASH_SEED ?? Date.now() % 100_000);
const random = new Random(seed);
const workspaces: Workspace[] = [];
after(async () => {
  for (const workspace of workspaces) await workspace.cleanup();
});

/** Bound on waiting for progress after a restart: only a site that never moves again reaches it. */
const progressMsMax = 60_000;

/**
 * The newest counter acknowledged per source, from the load's acknowledgement file, and how many
 * acknowledgements it holds. Every line must be whole: a line is written with one write(2) call.
 */
function acknowledgements(path: string, sources: number): { newest: number[]; count: number } {
  const newest = Array.from({ length: sources }, () => -1);
  if (!existsSync(path)) return { newest, count: 0 };
  const text = readFileSync(path, 'utf8');
  assert.ok(text === '' || text.endsWith('\n'), `${path} ends in a partial line`);
  const lines = text.split('\n').filter((line) => line !== '');
  for (const line of lines) {
    const match = /^(\d+) (\d+)$/.exec(line);
    assert.ok(match, `${path}: malformed line "${line}"`);
    const source = Number(match[1]);
    assert.ok(source < sources, `${path}: source ${source}`);
    newest[source] = Math.max(newest[source] as number, Number(match[2]));
  }
  return { newest, count: lines.length };
}

async function waitForAcknowledgements(path: string, count: number): Promise<void> {
  const deadline = Date.now() + progressMsMax;
  while (acknowledgements(path, 4).count < count) {
    assert.ok(
      Date.now() < deadline,
      `fewer than ${count} acknowledgements in ${path} within ${progressMsMax} ms`,
    );
    await sleep(10);
  }
}

test(`kill -9 of the secondary under load, ${iterations} times, each while cycles stream (seed ${seed})`, {
  timeout: 30 * 60_000,
}, async () => {
  assert.ok(iterations >= 1, `CRASH_ITERATIONS=${iterations}: a crash loop needs at least one kill`);
  const workspace = new Workspace();
  workspaces.push(workspace);
  const secondary = await workspace.secondaryConfig('dr1');
  const primary = await workspace.primaryConfig({ secondaries: [{ name: 'dr1', port: secondary.port }] });
  let dr1 = workspace.startSecondary(secondary.path);
  let storedAtStart = (await dr1.waitForEvent('secondary-started')).stored as number;
  const load = workspace.startLoadPrimary(primary.path);
  await load.waitForWrites(200);
  let previous = [-1, -1, -1, -1];
  let kills = 0;
  for (let iteration = 0; iteration < iterations; iteration++) {
    // In flight: the secondary stored a cycle since it (re)started, and the load goes on.
    await waitForStatus(secondary.httpPort, (s) => (s.stored as number) > storedAtStart, progressMsMax);
    await sleep(random.between(0, 150));
    dr1.kill('SIGKILL');
    await dr1.exited;
    kills++;
    const recovered = workspace.recover('dr1');
    assert.equal(recovered.status, 0, recovered.output);
    const cut = workspace.checkCut('dr1');
    assert.ok(cut.consistent, `iteration ${iteration}: ${cut.problems.slice(0, 5).join('\n')}`);
    cut.newest.forEach((counter, source) => {
      assert.ok(
        counter >= (previous[source] as number),
        `iteration ${iteration}: source ${source} went back from ${previous[source]} to ${counter}`,
      );
    });
    assert.ok(
      cut.newest.some((counter, source) => counter > (previous[source] as number)),
      `iteration ${iteration}: the image did not move since the previous kill (${JSON.stringify(cut.newest)})`,
    );
    previous = cut.newest;
    dr1 = workspace.startSecondary(secondary.path);
    storedAtStart = (await dr1.waitForEvent('secondary-started')).stored as number;
  }
  assert.equal(kills, iterations);
  assert.equal(await load.stop(), 0, load.stderr.slice(-2000));
  assert.equal(await dr1.stop(), 0);
  workspace.assertReplica('dr1');
});

test(`kill -9 of the primary under load, ${iterations} times, each while writes are acknowledged (seed ${seed})`, {
  timeout: 30 * 60_000,
}, async () => {
  assert.ok(iterations >= 1, `CRASH_ITERATIONS=${iterations}: a crash loop needs at least one kill`);
  const workspace = new Workspace();
  workspaces.push(workspace);
  const secondary = await workspace.secondaryConfig('dr1');
  const primary = await workspace.primaryConfig({ secondaries: [{ name: 'dr1', port: secondary.port }] });
  const dr1 = workspace.startSecondary(secondary.path);
  await dr1.waitForEvent('secondary-started');
  const ackFile = workspace.path('acknowledged.txt');
  let kills = 0;
  for (let iteration = 0; iteration < iterations; iteration++) {
    const before = acknowledgements(ackFile, 4).count;
    const load = workspace.startLoadPrimary(primary.path, { LOAD_ACK_FILE: ackFile });
    await load.waitForEvent('primary-started');
    // In flight: the sources keep writing; kill after a random number of fresh acknowledgements.
    await waitForAcknowledgements(ackFile, before + random.between(20, 400));
    load.kill('SIGKILL');
    const code = await load.exited;
    kills++;
    assert.notEqual(
      code,
      5,
      `iteration ${iteration}: primary image inconsistent at start:\n${load.stdout.slice(-1000)}`,
    );
    // Read after the process is gone: every acknowledgement it ever gave is in the file.
    const acknowledged = acknowledgements(ackFile, 4).newest;
    const recovered = workspace.recover('primary');
    assert.equal(recovered.status, 0, recovered.output);
    const cut = workspace.checkCut('primary');
    assert.ok(cut.consistent, `iteration ${iteration}: ${cut.problems.slice(0, 5).join('\n')}`);
    acknowledged.forEach((counter, source) => {
      assert.ok(
        (cut.newest[source] as number) >= counter,
        `iteration ${iteration}: source ${source} had counter ${counter} acknowledged, the primary holds ${cut.newest[source]}`,
      );
    });
  }
  assert.equal(kills, iterations);
  const last = workspace.startLoadPrimary(primary.path, { LOAD_OFF: '1' });
  await last.waitForOutput('"started"');
  assert.equal(await last.stop(), 0, last.stderr.slice(-2000));
  assert.equal(await dr1.stop(), 0);
  workspace.assertReplica('dr1');
});
