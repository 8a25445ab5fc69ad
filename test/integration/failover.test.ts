// Unplanned failover with real processes (docs/failover.md). A primary replicates under load to
// dr1, whose config carries a primary's sections too. `cyclerep promote` is refused while the
// primary is connected; after a kill -9 of the primary it makes dr1 the primary of a new generation
// in the same process: its image is a consistent cut of the old primary's history at the cycle it
// promoted from, its NBD export takes writes, cycle numbers go on from that cycle, and a restart
// from the same (secondary-role) config runs it as the primary it now is. The old primary, back,
// is told by dr1 that it was superseded and fences itself; `rejoin --save-discarded FILE` saves
// the blocks of its writes after the promotion cycle (refused, changing nothing, when FILE exists),
// then it follows dr1 with a delta and ends byte-identical to it.
import assert from 'node:assert/strict';
import { readFileSync, writeFileSync } from 'node:fs';
import { after, test } from 'node:test';
import { nbdErrors } from '../../src/nbd/protocol.ts';
import type { DiscardedManifest } from '../../src/node/discarded-save.ts';
import {
  blockBytes,
  freePort,
  runCyclerep,
  status,
  volumeSizes,
  Workspace,
  waitForStatus,
} from './harness.ts';
import { NbdSocketClient } from './nbd-socket-client.ts';

const workspace = new Workspace();
after(() => workspace.cleanup());

function promote(httpPort: number, ...flags: string[]): Promise<{ status: number | null; output: string }> {
  return runCyclerep([
    'promote',
    '--url',
    `http://127.0.0.1:${httpPort}`,
    '--timeout-seconds',
    '60',
    ...flags,
  ]);
}

test('promote: refused while the primary is connected; after its loss, dr1 becomes the primary of a new generation', {
  timeout: 240_000,
}, async (t) => {
  const nbdPort = await freePort();
  const oldPrimaryListen = await freePort();
  const oldNbdPort = await freePort();
  const secondary = await workspace.secondaryConfig('dr1', {
    extra: [
      `nbd: { listen: 127.0.0.1:${nbdPort} }`,
      'secondaries:',
      `  - { name: main, address: 127.0.0.1:${oldPrimaryListen} }`,
      'cycle: { intervalMinMs: 100 }',
      'journal: { capacity: 256MiB, segmentSize: 8MiB }',
    ].join('\n'),
  });
  const primaryConfig = await workspace.primaryConfig({
    secondaries: [{ name: 'dr1', port: secondary.port }],
    // Its sections as a secondary, for the rejoin: its name and where the new primary dials it.
    extra: [
      'name: main',
      `listen: 127.0.0.1:${oldPrimaryListen}`,
      `nbd: { listen: 127.0.0.1:${oldNbdPort} }`,
    ].join('\n'),
  });
  let dr1 = workspace.startSecondary(secondary.path);
  await dr1.waitForEvent('secondary-started');
  const primary = workspace.startLoadPrimary(primaryConfig.path);
  const live = await waitForStatus(
    primaryConfig.httpPort,
    (s) => {
      const links = s.secondaries as { stored: number }[];
      return (links[0]?.stored ?? 0) >= 5;
    },
    60_000,
  );

  const refused = await promote(secondary.httpPort);
  assert.equal(refused.status, 6, refused.output);
  assert.match(refused.output, /the primary is connected/);
  assert.match(refused.output, /newest cycle seen:/);
  assert.equal((await status(secondary.httpPort)).role, 'secondary', 'nothing changed');

  primary.kill('SIGKILL');
  await primary.exited;
  const before = await waitForStatus(secondary.httpPort, (s) => s.link === 'idle', 10_000);
  const promoted = await promote(secondary.httpPort);
  assert.equal(promoted.status, 0, `${promoted.output}\n${dr1.stderr.slice(-3000)}`);
  const after = await status(secondary.httpPort);
  assert.equal(after.role, 'primary');
  assert.notEqual(after.generation, live.generation, 'a new generation');
  assert.equal(after.site, before.site, "the secondary's own identity leads it");
  const event = await dr1.waitForEvent('promoted');
  const from = event?.applied as number;
  assert.ok(from >= 5, `promoted at cycle ${from}`);
  assert.equal(after.closed, from, 'numbering goes on from the promoted cycle');
  assert.equal(after.capture, from + 1);
  const cut = workspace.checkCut('dr1');
  assert.ok(
    cut.consistent,
    `the promoted image is a consistent cut:\n${cut.problems.slice(0, 5).join('\n')}`,
  );

  // Writes through the NBD export, which is read-write now.
  const client = await NbdSocketClient.open(nbdPort, 'vol1');
  const lastBlock = 4 * 1024 * 1024 - blockBytes;
  const data = Buffer.alloc(blockBytes, 0x5a);
  assert.deepEqual(await client.send([client.writeRequest(lastBlock, data), client.flushRequest()]), [0, 0]);
  client.destroy();

  // The old primary comes back: it dials dr1 as its secondary, is told it was superseded, and
  // fences itself: writes refused, said in its status and log, and dr1 logs whom it told.
  const oldPrimary = workspace.startPrimary(primaryConfig.path);
  const fenced = await oldPrimary.waitForEvent('fenced', 30_000);
  assert.equal(
    fenced.generation,
    after.generation,
    `fenced by the new generation: ${JSON.stringify(fenced)}`,
  );
  const oldStatus = await waitForStatus(primaryConfig.httpPort, (s) => s.fenced != null, 10_000);
  assert.equal((oldStatus.fenced as { site: string }).site, after.site);
  await dr1.waitForEvent('old-primary-told');
  // --save-discarded onto a file that exists: refused, and the site is still fenced as it was.
  const taken = workspace.path('taken.bin');
  writeFileSync(taken, 'something else');
  const refusedSave = await runCyclerep([
    'rejoin',
    '--save-discarded',
    taken,
    '--url',
    `http://127.0.0.1:${primaryConfig.httpPort}`,
    '--timeout-seconds',
    '30',
  ]);
  assert.equal(refusedSave.status, 6, refusedSave.output);
  assert.match(refusedSave.output, /taken\.bin: cannot create it .*must not exist yet/);
  assert.equal(readFileSync(taken, 'utf8'), 'something else');
  const stillFenced = await status(primaryConfig.httpPort);
  assert.equal(stillFenced.role, 'primary');
  assert.ok(stillFenced.fenced, 'nothing changed');
  // Its exports are read-only from the fence on: a client sees the flag and a write is refused.
  const fencedClient = await NbdSocketClient.open(oldNbdPort, 'vol1');
  assert.equal(fencedClient.readOnly, true, 'a fenced primary exports its volumes read-only');
  assert.deepEqual(await fencedClient.send([fencedClient.writeRequest(0, data)]), [nbdErrors.EPERM]);
  fencedClient.destroy();
  // Rejoin: the old primary follows dr1; the blocks it wrote after the promotion cycle (its journal
  // held cycles dr1 never stored when it was killed) are saved, then resynced from dr1 with dr1's
  // own writes.
  const savedPath = workspace.path('undone.bin');
  const rejoined = await runCyclerep([
    'rejoin',
    '--save-discarded',
    savedPath,
    '--url',
    `http://127.0.0.1:${primaryConfig.httpPort}`,
    '--timeout-seconds',
    '120',
  ]);
  assert.equal(
    rejoined.status,
    0,
    `${rejoined.output}\n${oldPrimary.stderr.slice(-3000)}\n${dr1.stderr.slice(-3000)}`,
  );
  const rejoinStarted = await oldPrimary.waitForEvent('rejoin-started');
  assert.equal(rejoinStarted?.cycle, from, 'undone from the cycle dr1 promoted at');
  assert.equal(rejoinStarted?.fullCopy, false, 'a delta, not a full copy');
  const saved = readSavedDiscards(savedPath);
  assert.equal(saved.manifest.afterCycle, from);
  assert.equal(saved.manifest.bytes, saved.data.length);
  assert.equal(rejoinStarted?.savedBytes, saved.manifest.bytes);
  assert.ok(saved.manifest.runs.length > 0 && saved.manifest.bytes > 0, 'something was undone and saved');
  const oldAfter = await status(primaryConfig.httpPort);
  assert.equal(oldAfter.role, 'secondary');
  assert.equal(oldAfter.consistent, true);
  const divergence = await dr1.waitForEvent('rejoin-divergence');
  const resync = await dr1.waitForEvent('resync-complete');
  const copied = resync.copiedBytes as number;
  assert.ok((divergence.chunks as number) > 0, 'the divergence reached dr1');
  const volumeBytes = volumeSizes.reduce((sum, size) => sum + size, 0);
  t.diagnostic(
    `rejoin: ${String(rejoinStarted?.discardedWrites)} writes (${String(rejoinStarted?.discardedBytes)} bytes) undone in ${String(rejoinStarted?.divergentRuns)} runs; ${copied} bytes copied of ${volumeBytes} (${((100 * copied) / volumeBytes).toFixed(1)}%)`,
  );
  assert.ok(copied > 0 && copied < volumeBytes / 4, 'only blocks that differ travel');
  assert.equal(await oldPrimary.stop(), 0, oldPrimary.stderr.slice(-2000));

  // A restart from the same secondary-role config: the data directory decides the role.
  assert.equal(await dr1.stop(), 0, dr1.stderr.slice(-2000));
  const images = [workspace.image('primary'), workspace.image('dr1')];
  for (const [index, bytes] of (images[0] ?? []).entries())
    assert.equal(
      Buffer.compare(bytes, images[1]?.[index] as Buffer),
      0,
      `vol${index}: the rejoined site equals dr1`,
    );
  assert.deepEqual(readFileSync(workspace.path('dr1', 'volumes', 'vol1.img')).subarray(lastBlock), data);
  // What was saved is what the rejoin undid: some of it differs from the image that replaced it.
  const replaced = saved.manifest.runs.filter((run) => {
    const index = Number(run.volume.replace('vol', ''));
    const now = ((images[1] as Buffer[])[index] as Buffer).subarray(run.offset, run.offset + run.length);
    return Buffer.compare(now, saved.data.subarray(run.at, run.at + run.length)) !== 0;
  });
  assert.ok(replaced.length > 0, 'the saved blocks hold the writes the rejoin undid');
  dr1 = workspace.startSecondary(secondary.path);
  await dr1.waitForEvent('primary-started');
  assert.equal(dr1.events('role-from-site-state').length, 1);
  const restarted = await status(secondary.httpPort);
  assert.equal(restarted.role, 'primary');
  assert.equal(restarted.generation, after.generation);
  assert.ok((restarted.capture as number) > from, 'the numbering never goes back');
  assert.equal((await status(secondary.httpPort)).role, 'primary');
  assert.equal((await promote(secondary.httpPort)).status, 6, 'a primary is not promoted again');
});

/** A `--save-discarded` file: a header line, a JSON manifest line, then the runs' bytes. */
function readSavedDiscards(path: string): { manifest: DiscardedManifest; data: Buffer } {
  const bytes = readFileSync(path);
  const first = bytes.indexOf(10);
  const second = bytes.indexOf(10, first + 1);
  assert.equal(bytes.subarray(0, first).toString(), 'cyclerep-discarded 1');
  const manifest = JSON.parse(bytes.subarray(first + 1, second).toString()) as DiscardedManifest;
  return { manifest, data: bytes.subarray(second + 1) };
}
