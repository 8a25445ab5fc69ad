// Proves recovery over a real faulty link: the site link runs through a proxy that drops, stalls,
// corrupts and slows connections on a seeded schedule (FAULT_SEED) while sources write. Every
// failure ends in a recovery; when the faults stop the secondary converges, byte for byte, to a
// consistent cut.
import assert from 'node:assert/strict';
import { after, test } from 'node:test';
import { FaultProxy } from './fault-proxy.ts';
import { freePort, sleep, Workspace, waitForStatus } from './harness.ts';

const seed = Number(process.env.FAULT_SEED ?? Date.now() % 100_000);
const workspace = new Workspace();
let proxy: FaultProxy | null = null;
after(async () => {
  await proxy?.close();
  await workspace.cleanup();
});

test(`replication through a faulty link converges (seed ${seed})`, { timeout: 240_000 }, async () => {
  const secondary = await workspace.secondaryConfig('dr1');
  const proxyPort = await freePort();
  proxy = new FaultProxy(secondary.port, seed);
  await proxy.listen(proxyPort);
  const primary = await workspace.primaryConfig({
    secondaries: [{ name: 'dr1', port: proxyPort }],
    connections: 2,
  });
  const dr1 = workspace.startSecondary(secondary.path);
  await dr1.waitForEvent('secondary-started');
  const load = workspace.startLoadPrimary(primary.path);
  await load.waitForWrites(200);
  proxy.startFaults();
  // Faults go on until at least 12 were injected, however long a loaded machine takes for that.
  const faultsWanted = 12;
  const injectedCount = () => Object.values(proxy?.injected ?? {}).reduce((a, b) => a + b, 0);
  const deadline = Date.now() + 90_000;
  while (injectedCount() < faultsWanted) {
    assert.ok(Date.now() < deadline, `only ${injectedCount()} faults injected in 90 s`);
    await sleep(50);
  }
  proxy.stopFaults();
  const injected = { ...proxy.injected };
  load.kill('SIGUSR2');
  await load.waitForOutput('"paused"');
  const settled = await waitForStatus(
    primary.httpPort,
    (s) => (s.secondaries as { lagBytes: number }[])[0]?.lagBytes === 0 && s.collected === s.closed,
    30_000,
  );
  const link = (settled.secondaries as { failures: number; recoveries: number }[])[0];
  assert.ok((link?.failures as number) >= 1, `the link failed: ${JSON.stringify(link)}`);
  assert.ok((link?.recoveries as number) >= 1, 'and recovered');
  assert.equal(await load.stop(), 0);
  assert.equal(await dr1.stop(), 0);
  workspace.assertReplica('dr1');
  process.stdout.write(
    `faults injected: ${JSON.stringify(injected)}, link failures ${link?.failures}, recoveries ${link?.recoveries}\n`,
  );
});
