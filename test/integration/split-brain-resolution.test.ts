// A split brain with real processes (docs/failover.md): a primary replicates to dr1 and dr2 and is
// killed; both secondaries are promoted, each into its own generation of the same history. Each
// dials the other as its secondary and is refused, naming the split brain; neither takes data
// from the other. `cyclerep rejoin --discard-my-data` on dr2 makes it follow dr1 with a full copy,
// and the two images end byte-identical.
import assert from 'node:assert/strict';
import { appendFileSync } from 'node:fs';
import { after, test } from 'node:test';
import { runCyclerep, type Site, sleep, status, Workspace, waitForStatus } from './harness.ts';

const workspace = new Workspace();
after(() => workspace.cleanup());

test('both secondaries promoted: refused as a split brain both ways, resolved by one command on the site that gives up', {
  timeout: 240_000,
}, async () => {
  const promotable = ['cycle: { intervalMinMs: 100 }', 'journal: { capacity: 256MiB, segmentSize: 8MiB }'];
  const dr1 = await workspace.secondaryConfig('dr1', { extra: promotable.join('\n') });
  const dr2 = await workspace.secondaryConfig('dr2', {
    extra: [...promotable, 'secondaries:', `  - { name: dr1, address: 127.0.0.1:${dr1.port} }`].join('\n'),
  });
  // Each lists the other as its secondary for when it is promoted.
  appendFileSync(
    dr1.path,
    ['', 'secondaries:', `  - { name: dr2, address: 127.0.0.1:${dr2.port} }`, ''].join('\n'),
  );
  const primaryConfig = await workspace.primaryConfig({
    secondaries: [
      { name: 'dr1', port: dr1.port },
      { name: 'dr2', port: dr2.port },
    ],
  });
  const dr1Site = workspace.startSecondary(dr1.path);
  const dr2Site = workspace.startSecondary(dr2.path);
  await dr1Site.waitForEvent('secondary-started');
  await dr2Site.waitForEvent('secondary-started');
  const primary = workspace.startLoadPrimary(primaryConfig.path);
  await waitForStatus(
    primaryConfig.httpPort,
    (s) => {
      const links = s.secondaries as { stored: number }[];
      return links.every((each) => each.stored >= 5);
    },
    60_000,
  );
  primary.kill('SIGKILL');
  await primary.exited;
  await waitForStatus(dr1.httpPort, (s) => s.link === 'idle', 10_000);
  await waitForStatus(dr2.httpPort, (s) => s.link === 'idle', 10_000);

  for (const site of [dr1, dr2]) {
    const promoted = await runCyclerep(['promote', '--url', `http://127.0.0.1:${site.httpPort}`]);
    assert.equal(promoted.status, 0, promoted.output);
  }
  const [first, second] = [await status(dr1.httpPort), await status(dr2.httpPort)];
  assert.notEqual(first.generation, second.generation);
  // Each dials the other and hears of the split brain; nothing is replicated either way.
  const splitBrainRefusal = async (site: Site): Promise<Record<string, unknown>> => {
    const deadline = Date.now() + 30_000;
    for (;;) {
      const found = site.events('link-refused').find((event) => /split-brain/.test(String(event.reason)));
      if (found) return found;
      if (Date.now() > deadline) throw new Error(`no split-brain refusal:\n${site.stderr.slice(-3000)}`);
      await sleep(50);
    }
  };
  for (const refusal of [await splitBrainRefusal(dr1Site), await splitBrainRefusal(dr2Site)]) {
    assert.ok(String(refusal.reason).includes(first.generation as string), 'names both generations');
    assert.ok(String(refusal.reason).includes(second.generation as string), 'names both generations');
  }
  assert.equal(dr1Site.events('resync-started').length + dr2Site.events('resync-started').length, 0);

  // dr2 gives up its history: it follows dr1 with a full copy.
  const resolved = await runCyclerep([
    'rejoin',
    '--discard-my-data',
    '--url',
    `http://127.0.0.1:${dr2.httpPort}`,
    '--timeout-seconds',
    '120',
  ]);
  assert.equal(
    resolved.status,
    0,
    `${resolved.output}\n${dr2Site.stderr.slice(-3000)}\n${dr1Site.stderr.slice(-3000)}`,
  );
  const following = await status(dr2.httpPort);
  assert.equal(following.role, 'secondary');
  assert.equal((following.primary as { generation: string }).generation, first.generation);
  assert.equal(await dr1Site.stop(), 0);
  assert.equal(await dr2Site.stop(), 0);
  const [image1, image2] = [workspace.image('dr1'), workspace.image('dr2')];
  for (const [index, bytes] of image1.entries())
    assert.equal(Buffer.compare(bytes, image2[index] as Buffer), 0, `vol${index}: dr2 equals dr1`);
});
