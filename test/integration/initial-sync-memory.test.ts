// Proves that an initial sync costs the secondary references, not the bytes it copies: 768 MiB are
// written (fio through NBD) to a 1 GiB volume of a primary whose secondary never ran; the brand-new
// secondary then starts, stages the whole copy as one unit (docs/resync.md), applies it and ends
// byte for byte equal to the primary, with its peak resident memory (VmHWM) under 512 MiB. Before
// the secondary's folds pointed into its journal it held the staged copy in memory: 1,135 MiB here.
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { test } from 'node:test';
import { fioOverNbd, freePort, waitForStatus, workspacesCleanedAfterTests } from './harness.ts';

const newWorkspace = workspacesCleanedAfterTests();
const mib = 1024 * 1024;
const writtenMib = 768;
const peakMibMax = 512;

test(`a new secondary's initial sync of ${writtenMib} MiB stays under ${peakMibMax} MiB resident and converges`, {
  timeout: 600_000,
}, async (t) => {
  const workspace = newWorkspace();
  const secondary = await workspace.secondaryConfig('dr1');
  const nbdPort = await freePort();
  const primary = await workspace.primaryConfig({
    secondaries: [{ name: 'dr1', port: secondary.port }],
    volumes: [1024 * mib],
    journal: '{ capacity: 64MiB, segmentSize: 8MiB }',
    extra: `nbd: { listen: 127.0.0.1:${nbdPort} }\ntracking: { journalFraction: 0.5 }`,
  });
  const primarySite = workspace.startPrimary(primary.path);
  await primarySite.waitForEvent('nbd-listening');
  await fioOverNbd(nbdPort, { name: 'fill', rw: 'write', bs: '1m', iodepth: 8, size: writtenMib * mib });
  const dr1 = workspace.startSecondary(secondary.path);
  await waitForStatus(
    primary.httpPort,
    (s) => {
      const link = (s.secondaries as Record<string, unknown>[])[0] as Record<string, unknown>;
      return (
        link.mode === 'streaming' &&
        link.lagBytes === 0 &&
        link.stored === s.closed &&
        link.applied === s.closed
      );
    },
    500_000,
  );
  const peakMib = dr1.peakResidentMib();
  t.diagnostic(`dr1 peak resident memory ${peakMib} MiB`);
  assert.ok(peakMib < peakMibMax, `dr1 peaked at ${peakMib} MiB resident`);
  assert.equal(await dr1.stop(), 0);
  assert.equal(await primarySite.stop(), 0);
  const image = (site: string) => readFileSync(workspace.path(site, 'volumes', 'vol0.img'));
  assert.ok(image('dr1').equals(image('primary')), 'dr1 equals the primary byte for byte');
});
