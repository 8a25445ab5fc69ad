// Proves, with real processes, that each secondary recovers on its own link and the journal
// keeps what an absent secondary lacks: with dr2 stopped under load, dr1 keeps up, the primary
// deletes nothing dr2 has not stored; when dr2 returns it catches up with one recovery cycle, and
// only then is the journal emptied. Both replicas end equal to the primary.
import assert from 'node:assert/strict';
import { after, test } from 'node:test';
import { Workspace, waitForStatus } from './harness.ts';

const workspace = new Workspace();
after(() => workspace.cleanup());

interface LinkStatus {
  name: string;
  link: string;
  stored: number;
  lagCycles: number;
  lagBytes: number;
  recoveries: number;
}

function links(status: Record<string, unknown>): Record<string, LinkStatus> {
  return Object.fromEntries((status.secondaries as LinkStatus[]).map((link) => [link.name, link]));
}

test('an absent secondary holds the journal; the present one keeps up; both converge', {
  timeout: 120_000,
}, async () => {
  const one = await workspace.secondaryConfig('dr1');
  const two = await workspace.secondaryConfig('dr2');
  const primary = await workspace.primaryConfig({
    secondaries: [
      { name: 'dr1', port: one.port },
      { name: 'dr2', port: two.port },
    ],
  });
  const dr1 = workspace.startSecondary(one.path);
  let dr2 = workspace.startSecondary(two.path);
  await Promise.all([dr1.waitForEvent('secondary-started'), dr2.waitForEvent('secondary-started')]);
  const load = workspace.startLoadPrimary(primary.path);
  await load.waitForWrites(500);
  assert.equal(await dr2.stop(), 0);
  const absentSince = await waitForStatus(primary.httpPort, (s) => links(s).dr2?.link !== 'streaming');
  const dr2Stored = links(absentSince).dr2?.stored as number;
  // dr1 keeps up: it stores cycles well past where dr2 stopped, while dr2 is away.
  const during = await waitForStatus(
    primary.httpPort,
    (s) => (links(s).dr1?.stored as number) >= dr2Stored + 5 && links(s).dr2?.link !== 'streaming',
    60_000,
  );
  const whileAway = links(during);
  assert.ok(
    (during.collected as number) <= dr2Stored,
    `collected ${during.collected} beyond dr2's stored ${dr2Stored}`,
  );
  assert.ok((whileAway.dr2?.lagBytes as number) > 0);
  dr2 = workspace.startSecondary(two.path);
  load.kill('SIGUSR2');
  await load.waitForOutput('"paused"');
  const settled = await waitForStatus(
    primary.httpPort,
    (s) => Object.values(links(s)).every((link) => link.lagBytes === 0) && s.collected === s.closed,
  );
  assert.ok((links(settled).dr2?.recoveries as number) >= 1, 'dr2 came back through a recovery cycle');
  assert.equal(settled.journalBytes, 0);
  // dr2 may have stored a cycle whose STORED never reached the primary before it stopped.
  const recovery = load
    .events('recovery-cycle')
    .find((event) => event.link === 'dr2' && (event.from as number) > dr2Stored);
  assert.ok(recovery, 'dr2 was sent one recovery cycle covering what it missed');
  assert.ok(
    (recovery.to as number) - (recovery.from as number) >= 4,
    `it covered several cycles: ${JSON.stringify(recovery)}`,
  );
  assert.equal(await load.stop(), 0);
  assert.equal(await dr1.stop(), 0);
  assert.equal(await dr2.stop(), 0);
  workspace.assertReplica('dr1');
  workspace.assertReplica('dr2');
});
