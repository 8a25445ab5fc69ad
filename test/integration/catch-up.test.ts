// Proves that a large catch-up never starves the link: with the secondary away, 192 MiB of scattered
// 4 KiB writes go into the primary through NBD (fio); the secondary then starts and catches up in
// one recovery cycle with the integration timings (heartbeat 100 ms, timeout 600 ms) and not one
// link failure on either site, and ends byte for byte equal to the primary. Before the fix, the
// primary built and wrote hundreds of megabytes per turn, the secondary encoded whole segments in
// one step and copied the recovery cycle whole to apply it: each held an event loop past the timeout.
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { test } from 'node:test';
import { fioOverNbd, freePort, type Site, waitForStatus, workspacesCleanedAfterTests } from './harness.ts';

const newWorkspace = workspacesCleanedAfterTests();
const mib = 1024 * 1024;
const writtenMib = 192;
const volumeBytes = 256 * mib;

/** Link failures after the secondary came up (the primary's refused dials before it do not count). */
function linkFailuresAfter(site: Site, event: string): string[] {
  const lines = site.stderr.split('\n').filter((line) => line.startsWith('{'));
  const from = lines.findIndex((line) => line.includes(`"event":"${event}"`));
  return lines.slice(Math.max(0, from)).filter((line) => line.includes('"event":"link-failed"'));
}

test('a catch-up of 192 MiB of 4 KiB writes causes no link failure and converges', {
  timeout: 240_000,
}, async (t) => {
  const workspace = newWorkspace();
  const secondary = await workspace.secondaryConfig('dr1');
  const nbdPort = await freePort();
  const primary = await workspace.primaryConfig({
    secondaries: [{ name: 'dr1', port: secondary.port }],
    volumes: [volumeBytes],
    extra: `nbd: { listen: 127.0.0.1:${nbdPort} }`,
  });
  const primarySite = workspace.startPrimary(primary.path);
  await primarySite.waitForEvent('nbd-listening');
  await fioOverNbd(nbdPort, {
    name: 'catch-up',
    rw: 'randwrite',
    bs: '4k',
    iodepth: 16,
    size: writtenMib * mib,
    randrepeat: 0,
  });
  const before = await waitForStatus(primary.httpPort, (status) => lagOf(status) >= writtenMib * mib);
  const closed = before.closed as number;
  const dr1 = workspace.startSecondary(secondary.path);
  await waitForStatus(
    primary.httpPort,
    (status) => lagOf(status) === 0 && firstLink(status).applied === (status.closed as number),
    180_000,
  );
  t.diagnostic(`dr1 peak resident memory ${dr1.peakResidentMib()} MiB`);
  assert.deepEqual(linkFailuresAfter(primarySite, 'recovery-cycle'), [], 'no link failure on the primary');
  assert.deepEqual(linkFailuresAfter(dr1, 'session-started'), [], 'no link failure on the secondary');
  assert.equal(firstLink(await waitForStatus(primary.httpPort, () => true)).recoveries, 1);
  assert.ok(((await waitForStatus(primary.httpPort, () => true)).closed as number) >= closed);
  assert.equal(await dr1.stop(), 0);
  assert.equal(await primarySite.stop(), 0);
  const image = (site: string) => readFileSync(workspace.path(site, 'volumes', 'vol0.img'));
  assert.ok(image('dr1').equals(image('primary')), 'dr1 equals the primary byte for byte');
});

function firstLink(status: Record<string, unknown>): Record<string, number> {
  return (status.secondaries as Record<string, number>[])[0] as Record<string, number>;
}

function lagOf(status: Record<string, unknown>): number {
  return firstLink(status).lagBytes ?? 0;
}
