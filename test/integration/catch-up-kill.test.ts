// Proves that kill -9 of the primary while a catch-up reads its packets back from the journal loses
// nothing: the secondary is away (not started, later SIGSTOPped) while the sources write, so the
// journal holds cycles it has not stored (tracking is off); once it is back and the catch-up is
// under way, the primary is killed with SIGKILL at a random moment of it, several times, writing on
// each time. Every restart replays and redoes the journal and reads its image through the journal's
// references (the load checks it is a consistent cut, exit code 5 if not); at the end the secondary
// equals the primary byte for byte and is a consistent cut.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { Random } from '../../src/sim/random.ts';
import { sleep, waitForStatus, workspacesCleanedAfterTests } from './harness.ts';

const newWorkspace = workspacesCleanedAfterTests();
const kills = 4;
const seed = Number(process.env.CRASH_SEED ?? Date.now() % 100_000);
const random = new Random(seed);

test(`kill -9 of the primary during a catch-up from its journal, ${kills} times, loses nothing (seed ${seed})`, {
  timeout: 300_000,
}, async (t) => {
  const workspace = newWorkspace();
  const secondary = await workspace.secondaryConfig('dr1');
  const primary = await workspace.primaryConfig({
    secondaries: [{ name: 'dr1', port: secondary.port }],
    extra: 'tracking: { enabled: false }',
  });
  // The secondary away: the journal fills with cycles it has not stored.
  let load = workspace.startLoadPrimary(primary.path);
  await load.waitForEvent('primary-started');
  await load.waitForWrites(3000, 60_000);
  load.kill('SIGKILL');
  assert.equal(await load.exited, null);

  const dr1 = workspace.startSecondary(secondary.path);
  await dr1.waitForEvent('secondary-started');
  let midCatchUp = 0;
  for (let kill = 0; kill < kills; kill++) {
    load = workspace.startLoadPrimary(primary.path);
    await load.waitForEvent('primary-started', 60_000);
    if (kill > 0) {
      // The secondary away again while the sources write: a backlog to catch up.
      dr1.kill('SIGSTOP');
      await load.waitForWrites(2000, 60_000);
      dr1.kill('SIGCONT');
    }
    // Killed once the catch-up is under way (connected, cycles closed it has not stored), at a
    // random moment of it: the recovery cycle's packets are read back from the journal.
    const catchingUp = await waitForStatus(
      primary.httpPort,
      (status) => {
        const link = (status.secondaries as Record<string, unknown>[])[0] as Record<string, unknown>;
        return link.link === 'streaming' && (link.stored as number) < (status.closed as number);
      },
      30_000,
    ).then(
      () => true,
      () => false,
    );
    if (catchingUp) midCatchUp++;
    await sleep(random.between(0, 80));
    load.kill('SIGKILL');
    const code = await load.exited;
    assert.notEqual(
      code,
      5,
      `kill ${kill}: the primary's image was inconsistent at start:\n${load.stdout.slice(-1000)}`,
    );
    assert.notEqual(code, 3, `kill ${kill}: the primary failed:\n${load.stderr.slice(-2000)}`);
  }
  t.diagnostic(`${midCatchUp} of ${kills} kills came while the catch-up was under way`);
  assert.ok(midCatchUp > 0, 'no kill came during a catch-up');
  const last = workspace.startLoadPrimary(primary.path, { LOAD_OFF: '1' });
  await last.waitForOutput('"started"', 60_000);
  await waitForStatus(
    primary.httpPort,
    (status) => {
      const link = (status.secondaries as Record<string, unknown>[])[0] as Record<string, unknown>;
      return link.lagBytes === 0 && link.applied === status.closed;
    },
    120_000,
  );
  assert.equal(await last.stop(), 0, last.stderr.slice(-2000));
  assert.equal(await dr1.stop(), 0, dr1.stderr.slice(-2000));
  assert.deepEqual(
    dr1.events('link-failed').filter((event) => /journal|damage/.test(String(event.reason))),
    [],
    'no link failed over the journal',
  );
  workspace.assertReplica('dr1');
});
