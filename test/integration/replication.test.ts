// Proves, with real processes on 127.0.0.1: a primary under load replicates to a secondary whose
// image files end up equal to the primary's, byte for byte, and form a consistent cut of the
// sources' dependent writes; the status endpoint and `cyclerep status` tell the truth about it;
// SIGTERM stops both sites cleanly (exit 0).
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { after, test } from 'node:test';
import { root, status, Workspace, waitForStatus } from './harness.ts';

const workspace = new Workspace();
after(() => workspace.cleanup());

test('a secondary under load converges to the primary, byte for byte, as a consistent cut', {
  timeout: 60_000,
}, async () => {
  const { secondary, primary, dr1, load } = await workspace.startLoadedPair();
  await load.waitForWrites(3000);
  const running = await waitForStatus(primary.httpPort, (s) => (s.closed as number) >= 3);
  assert.equal(running.role, 'primary');
  const text = spawnSync(
    process.execPath,
    ['bin/cyclerep.js', 'status', '--url', `http://127.0.0.1:${primary.httpPort}`],
    {
      cwd: root,
      encoding: 'utf8',
    },
  );
  assert.equal(text.status, 0);
  assert.match(text.stdout, /^it role:primary capture:\d+ closed:\d+ journal:/);
  assert.match(
    text.stdout,
    /\n {2}dr1 link:streaming mode:streaming stored:\d+ applied:\d+ lag:\d+ cycles, /,
  );
  assert.ok(!text.stdout.includes('\u001b['), 'no colour when the output is not a terminal');
  assert.equal(await load.stop(), 0);
  const secondaryStatus = await status(secondary.httpPort);
  assert.equal(secondaryStatus.role, 'secondary');
  assert.equal(secondaryStatus.applied, secondaryStatus.stored);
  assert.equal(await dr1.stop(), 0);
  workspace.assertReplica('dr1');
  const cut = workspace.checkCut('dr1');
  assert.ok(
    cut.newest.every((counter) => counter > 100),
    `sources wrote: ${cut.newest}`,
  );
  assert.deepEqual(
    dr1.events('volumes-adopted').length,
    1,
    'the secondary took its volumes from the primary',
  );
});

test('over a compressed link the replica converges byte for byte, and the status shows what compression saved', {
  timeout: 60_000,
}, async () => {
  const compressed = new Workspace();
  try {
    const secondary = await compressed.secondaryConfig('dr1');
    const primary = await compressed.primaryConfig({
      secondaries: [{ name: 'dr1', port: secondary.port, compression: 'brotli' }],
    });
    const dr1 = compressed.startSecondary(secondary.path);
    await dr1.waitForEvent('secondary-started');
    const load = compressed.startLoadPrimary(primary.path);
    await load.waitForWrites(1000);
    const link = (
      await waitForStatus(primary.httpPort, (s) => {
        const compression = (s.secondaries as { compression?: { sentBytes: number } }[])[0]?.compression;
        return (compression?.sentBytes ?? 0) > 0;
      })
    ).secondaries as {
      compression: { codec: string; payloadBytes: number; sentBytes: number; ratio: number };
    }[];
    const figures = link[0]?.compression;
    // The load's blocks carry a small header and a repeated pattern: far smaller compressed.
    assert.equal(figures?.codec, 'brotli');
    assert.ok((figures?.ratio ?? 0) > 2, JSON.stringify(figures));
    assert.equal(await load.stop(), 0);
    assert.equal(await dr1.stop(), 0);
    compressed.assertReplica('dr1');
    compressed.checkCut('dr1');
  } finally {
    await compressed.cleanup();
  }
});

test('with ack: cycle, writes are answered at the cycle switch and the replica converges just the same', {
  timeout: 60_000,
}, async () => {
  const cycleWorkspace = new Workspace();
  try {
    const secondary = await cycleWorkspace.secondaryConfig('dr1');
    const primary = await cycleWorkspace.primaryConfig({
      secondaries: [{ name: 'dr1', port: secondary.port }],
      extra: 'ack: cycle',
    });
    const dr1 = cycleWorkspace.startSecondary(secondary.path);
    await dr1.waitForEvent('secondary-started');
    const load = cycleWorkspace.startLoadPrimary(primary.path);
    await load.waitForWrites(300);
    assert.equal(await load.stop(), 0);
    assert.equal(await dr1.stop(), 0);
    cycleWorkspace.assertReplica('dr1');
  } finally {
    await cycleWorkspace.cleanup();
  }
});
