// Proves that the primary's memory does not grow with its journal (issue 12): 768 MiB are written
// (fio through NBD) while its only secondary is not running, with tracking off so that the journal
// holds all of it; with memory.dataBytesMax at 128 MiB the primary's peak resident memory stays
// under 400 MiB, far from the bytes written (its index keeps
// references into the segments, not the bytes: before, it held about 1.2 x the journal, 920 MiB
// here). Restarted with the 768 MiB still journaled, its replay and redo read record by record and
// stay under the same bound; the secondary then starts, the catch-up reads its packets back from the
// segments, and the secondary ends byte for byte equal to the primary.
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { test } from 'node:test';
import { fioOverNbd, freePort, type Site, waitForStatus, workspacesCleanedAfterTests } from './harness.ts';

const newWorkspace = workspacesCleanedAfterTests();
const mib = 1024 * 1024;
const writtenMib = 768;
const peakMibMax = 400;

test(`a primary holding ${writtenMib} MiB in its journal stays under ${peakMibMax} MiB resident, across a restart and the catch-up`, {
  timeout: 600_000,
}, async (t) => {
  const workspace = newWorkspace();
  const secondary = await workspace.secondaryConfig('dr1');
  const nbdPort = await freePort();
  const primary = await workspace.primaryConfig({
    secondaries: [{ name: 'dr1', port: secondary.port }],
    volumes: [1024 * mib],
    journal: '{ capacity: 1GiB, segmentSize: 64MiB }',
    extra: `nbd: { listen: 127.0.0.1:${nbdPort} }\ntracking: { enabled: false }\nmemory: { dataBytesMax: 128MiB }`,
  });
  let primarySite = workspace.startPrimary(primary.path);
  await primarySite.waitForEvent('nbd-listening');
  await fioOverNbd(nbdPort, { name: 'fill', rw: 'write', bs: '1m', iodepth: 8, size: writtenMib * mib });
  const held = await waitForStatus(
    primary.httpPort,
    (s) => (s.journalBytes as number) >= writtenMib * mib,
    30_000,
  );
  assert.equal((held.secondaries as { stored: number }[])[0]?.stored, 0, 'the secondary stored nothing');
  checkPeak(t, primarySite, 'while writing');

  assert.equal(await primarySite.stop(), 0);
  const restartedAt = Date.now();
  primarySite = workspace.startPrimary(primary.path);
  await primarySite.waitForEvent('nbd-listening', 300_000);
  t.diagnostic(`restart (replay and redo of ${writtenMib} MiB) took ${Date.now() - restartedAt} ms`);
  checkPeak(t, primarySite, 'after a restart with the journal full');

  const dr1 = workspace.startSecondary(secondary.path);
  await waitForStatus(
    primary.httpPort,
    (s) => {
      const link = (s.secondaries as Record<string, unknown>[])[0] as Record<string, unknown>;
      return link.mode === 'streaming' && link.lagBytes === 0 && link.applied === s.closed;
    },
    500_000,
  );
  checkPeak(t, primarySite, 'after the catch-up');
  assert.equal(await dr1.stop(), 0);
  assert.equal(await primarySite.stop(), 0);
  const image = (site: string) => readFileSync(workspace.path(site, 'volumes', 'vol0.img'));
  assert.ok(image('dr1').equals(image('primary')), 'dr1 equals the primary byte for byte');
});

function checkPeak(t: { diagnostic(message: string): void }, site: Site, when: string): void {
  const peakMib = site.peakResidentMib();
  t.diagnostic(`primary peak resident memory ${when}: ${peakMib} MiB`);
  assert.ok(peakMib < peakMibMax, `the primary peaked at ${peakMib} MiB resident ${when}`);
}
