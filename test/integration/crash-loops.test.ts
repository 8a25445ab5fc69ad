// Proves crash safety with real processes: under load, the secondary and then the primary are
// killed with SIGKILL at random moments (CRASH_ITERATIONS times each, 30 by default). After each
// kill, `cyclerep recover` makes the dead site's image files whole and they must be a consistent
// cut; the secondary's image never goes back in time; the primary keeps every write it had
// acknowledged. After the load stops, the secondary converges to the primary, byte for byte.
import assert from 'node:assert/strict';
import { after, test } from 'node:test';
import { Random } from '../../src/sim/random.ts';
import { sleep, Workspace } from './harness.ts';

const iterations = Number(process.env.CRASH_ITERATIONS ?? 30);
const seed = Number(process.env.CRASH_SEED ?? Date.now() % 100_000);
const random = new Random(seed);
const workspaces: Workspace[] = [];
after(async () => {
  for (const workspace of workspaces) await workspace.cleanup();
});

test(`kill -9 of the secondary under load, ${iterations} times (seed ${seed})`, {
  timeout: 30 * 60_000,
}, async () => {
  const workspace = new Workspace();
  workspaces.push(workspace);
  const secondary = await workspace.secondaryConfig('dr1');
  const primary = await workspace.primaryConfig({ secondaries: [{ name: 'dr1', port: secondary.port }] });
  let dr1 = workspace.startSecondary(secondary.path);
  await dr1.waitForEvent('secondary-started');
  const load = workspace.startLoadPrimary(primary.path);
  await load.waitForWrites(200);
  let previous = [-1, -1, -1, -1];
  for (let iteration = 0; iteration < iterations; iteration++) {
    await sleep(random.between(50, 400));
    dr1.kill('SIGKILL');
    await dr1.exited;
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
    previous = cut.newest;
    dr1 = workspace.startSecondary(secondary.path);
    await dr1.waitForEvent('secondary-started');
  }
  assert.equal(await load.stop(), 0, load.stderr.slice(-2000));
  assert.equal(await dr1.stop(), 0);
  workspace.assertReplica('dr1');
  assert.ok(
    previous.some((counter) => counter > 0),
    'the secondary applied writes between the kills',
  );
});

test(`kill -9 of the primary under load, ${iterations} times (seed ${seed})`, {
  timeout: 30 * 60_000,
}, async () => {
  const workspace = new Workspace();
  workspaces.push(workspace);
  const secondary = await workspace.secondaryConfig('dr1');
  const primary = await workspace.primaryConfig({ secondaries: [{ name: 'dr1', port: secondary.port }] });
  const dr1 = workspace.startSecondary(secondary.path);
  await dr1.waitForEvent('secondary-started');
  let lost = 0;
  for (let iteration = 0; iteration < iterations; iteration++) {
    const load = workspace.startLoadPrimary(primary.path);
    await load.waitForEvent('primary-started');
    await load.waitForWrites(random.between(20, 400));
    const acknowledged = load.acknowledged();
    load.kill('SIGKILL');
    assert.notEqual(
      await load.exited,
      5,
      `iteration ${iteration}: primary image inconsistent at start:\n${load.stdout.slice(-1000)}`,
    );
    const recovered = workspace.recover('primary');
    assert.equal(recovered.status, 0, recovered.output);
    const cut = workspace.checkCut('primary');
    assert.ok(cut.consistent, `iteration ${iteration}: ${cut.problems.slice(0, 5).join('\n')}`);
    acknowledged.forEach((counter, source) => {
      if ((cut.newest[source] as number) < counter) lost++;
      assert.ok(
        (cut.newest[source] as number) >= counter,
        `iteration ${iteration}: source ${source} had counter ${counter} acknowledged, the primary holds ${cut.newest[source]}`,
      );
    });
  }
  const last = workspace.startLoadPrimary(primary.path, { LOAD_OFF: '1' });
  await last.waitForOutput('"started"');
  assert.equal(await last.stop(), 0, last.stderr.slice(-2000));
  assert.equal(await dr1.stop(), 0);
  workspace.assertReplica('dr1');
  assert.equal(lost, 0);
});
