// A split brain with real processes (docs/failover.md): a primary replicates to dr1 and dr2 and is
// killed; both secondaries are promoted, each into its own generation of the same history. Each
// dials the other as its secondary and is refused, naming the split brain; neither takes data
// from the other. `cyclerep rejoin --discard-my-data` on dr2 makes it follow dr1, and the two images
// end byte-identical: with a delta when both were promoted at the same cycle (the blocks either wrote
// since), with a copy of every block when not (their cycles after the earlier fork differ).
import assert from 'node:assert/strict';
import { appendFileSync } from 'node:fs';
import { after, test } from 'node:test';
import { nbdErrors } from '../../src/nbd/protocol.ts';
import {
  blockBytes,
  freePort,
  runCyclerep,
  type Site,
  sleep,
  status,
  volumeSizes,
  Workspace,
  waitForStatus,
} from './harness.ts';
import { NbdSocketClient } from './nbd-socket-client.ts';

const workspace = new Workspace();
const own = new Workspace();
after(() => {
  workspace.cleanup();
  own.cleanup();
});

/**
 * A load primary replicating to two secondaries whose configs carry a primary's sections too (each
 * lists the other as its secondary, for when it is promoted), once both stored 5 cycles.
 */
async function twoPromotableSecondaries(
  workspace: Workspace,
  names: [string, string],
  extra: [string[], string[]] = [[], []],
) {
  const promotable = ['cycle: { intervalMinMs: 100 }', 'journal: { capacity: 256MiB, segmentSize: 8MiB }'];
  const first = await workspace.secondaryConfig(names[0], { extra: [...promotable, ...extra[0]].join('\n') });
  const second = await workspace.secondaryConfig(names[1], {
    extra: [
      ...promotable,
      ...extra[1],
      'secondaries:',
      `  - { name: ${names[0]}, address: 127.0.0.1:${first.port} }`,
    ].join('\n'),
  });
  appendFileSync(
    first.path,
    ['', 'secondaries:', `  - { name: ${names[1]}, address: 127.0.0.1:${second.port} }`, ''].join('\n'),
  );
  const primaryConfig = await workspace.primaryConfig({
    secondaries: [
      { name: names[0], port: first.port },
      { name: names[1], port: second.port },
    ],
  });
  const sites = [workspace.startSecondary(first.path), workspace.startSecondary(second.path)] as const;
  for (const site of sites) await site.waitForEvent('secondary-started');
  const primary = workspace.startLoadPrimary(primaryConfig.path);
  await waitForStatus(
    primaryConfig.httpPort,
    (s) => (s.secondaries as { stored: number }[]).every((each) => each.stored >= 5),
    60_000,
  );
  return { configs: [first, second] as const, sites, primaryConfig, primary };
}

/**
 * Waits until the other promoted site dialled `site` as its secondary and was refused by it as a
 * primary: `site` then knows where the other's history forked (its listener logs the relation; a
 * refusal while it was still a secondary has none).
 */
async function dialledAsPrimary(site: Site): Promise<void> {
  const deadline = Date.now() + 30_000;
  while (!site.events('primary-refused').some((event) => event.relation === 'diverged')) {
    assert.ok(Date.now() < deadline, `never dialled as a primary:\n${site.stderr.slice(-3000)}`);
    await sleep(50);
  }
}

test('both secondaries promoted: refused as a split brain both ways, resolved by one command on the site that gives up', {
  timeout: 240_000,
}, async () => {
  const {
    configs: [dr1, dr2],
    sites: [dr1Site, dr2Site],
    primary,
  } = await twoPromotableSecondaries(workspace, ['dr1', 'dr2']);
  primary.kill('SIGKILL');
  await primary.exited;
  await waitForStatus(dr1.httpPort, (s) => s.link === 'idle', 10_000);
  await waitForStatus(dr2.httpPort, (s) => s.link === 'idle', 10_000);

  for (const site of [dr1, dr2]) {
    const promoted = await runCyclerep(['promote', '--url', `http://127.0.0.1:${site.httpPort}`]);
    assert.equal(promoted.status, 0, promoted.output);
  }
  const forks = [await dr1Site.waitForEvent('promoted'), await dr2Site.waitForEvent('promoted')].map(
    (event) => event.applied as number,
  );
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

  // dr2 gives up its history: it follows dr1, with a delta only if both promoted at one cycle.
  await dialledAsPrimary(dr2Site);
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
  const started = await dr2Site.waitForEvent('rejoin-started');
  assert.equal(
    started.fullCopy,
    forks[0] !== forks[1],
    `promoted at cycles ${forks.join(' and ')}: every block copied exactly when they differ`,
  );
  assert.equal(await dr1Site.stop(), 0);
  assert.equal(await dr2Site.stop(), 0);
  const [image1, image2] = [workspace.image('dr1'), workspace.image('dr2')];
  for (const [index, bytes] of image1.entries())
    assert.equal(Buffer.compare(bytes, image2[index] as Buffer), 0, `vol${index}: dr2 equals dr1`);
});

test('both promoted at one cycle: the site that gives up takes only the blocks either site wrote since', {
  timeout: 240_000,
}, async (t) => {
  const nbdPorts = [await freePort(), await freePort()];
  const {
    configs: [dr1, dr2],
    sites: [one, two],
    primaryConfig,
    primary,
  } = await twoPromotableSecondaries(
    own,
    ['one', 'two'],
    [[`nbd: { listen: 127.0.0.1:${nbdPorts[0]} }`], [`nbd: { listen: 127.0.0.1:${nbdPorts[1]} }`]],
  );
  // The load pauses; no cycle closes without writes, so both settle at the primary's last cycle.
  primary.kill('SIGUSR2');
  await primary.waitForOutput('"paused":true');
  const settled = await waitForStatus(
    primaryConfig.httpPort,
    (s) =>
      (s.secondaries as { applied: number }[]).every((each) => each.applied === s.closed) &&
      (s.capture as number) === (s.closed as number) + 1,
    30_000,
  );
  primary.kill('SIGKILL');
  await primary.exited;
  for (const site of [dr1, dr2]) {
    await waitForStatus(site.httpPort, (s) => s.link === 'idle', 10_000);
    const promoted = await runCyclerep(['promote', '--url', `http://127.0.0.1:${site.httpPort}`]);
    assert.equal(promoted.status, 0, promoted.output);
  }
  const forks = [await one.waitForEvent('promoted'), await two.waitForEvent('promoted')];
  assert.deepEqual(
    forks.map((event) => event.applied),
    [settled.closed, settled.closed],
  );

  // Each writes after the split: dr1 (the survivor) one block, dr2 two others.
  const write = async (port: number, offset: number, fill: number): Promise<void> => {
    const client = await NbdSocketClient.open(port, 'vol1');
    const data = Buffer.alloc(blockBytes, fill);
    assert.deepEqual(await client.send([client.writeRequest(offset, data), client.flushRequest()]), [0, 0]);
    client.destroy();
  };
  await write(nbdPorts[0] as number, 0, 0x11);
  await write(nbdPorts[1] as number, 64 * blockBytes, 0x22);
  await write(nbdPorts[1] as number, 128 * blockBytes, 0x33);
  // dr1's write is in a cycle of its own, closed after the one both promoted at.
  await waitForStatus(dr1.httpPort, (s) => (s.closed as number) > (settled.closed as number), 10_000);
  await dialledAsPrimary(two);

  // A client keeps writing on dr2 while it gives up its history and saves what it undoes: every
  // write it acknowledged is listed, saved and undone; from the list on, writes are refused
  // (ESHUTDOWN, or the connection closes as the site stops) and the writer stops.
  const racer = await NbdSocketClient.open(nbdPorts[1] as number, 'vol0');
  let acknowledged = 0;
  let ending = '';
  const racing = (async () => {
    for (let block = 0; block < 4096; block++) {
      // 64 blocks over and over: what the rejoin copies stays bounded however fast the writer is.
      const request = racer.writeRequest((block % 64) * blockBytes, Buffer.alloc(blockBytes, 0x44));
      const [result] = await racer.send([request]);
      if (result !== 0) {
        ending = `NBD error ${result}`;
        return;
      }
      acknowledged++;
    }
  })().catch((error: Error) => {
    ending = error.message;
  });
  await sleep(200);
  const resolved = await runCyclerep([
    'rejoin',
    '--discard-my-data',
    '--save-discarded',
    own.path('undone.bin'),
    '--url',
    `http://127.0.0.1:${dr2.httpPort}`,
    '--timeout-seconds',
    '120',
  ]);
  assert.equal(
    resolved.status,
    0,
    `${resolved.output}\n${two.stderr.slice(-3000)}\n${one.stderr.slice(-3000)}`,
  );
  await racing;
  racer.destroy();
  t.diagnostic(`a writer raced the rejoin: ${acknowledged} writes acknowledged, then ${ending}`);
  assert.ok(
    ending === `NBD error ${nbdErrors.ESHUTDOWN}` || ending === 'connection closed',
    `writes are refused once the site gives up: ${ending}`,
  );
  assert.ok(acknowledged > 0, 'the writer raced the rejoin');
  const started = await two.waitForEvent('rejoin-started');
  assert.equal(started.cycle, settled.closed, 'its own history began after the cycle both promoted at');
  assert.equal(started.discardedWrites, 2 + acknowledged, 'every acknowledged write is listed');
  const blocksWritten = 2 + Math.min(acknowledged, 64);
  assert.ok((started.savedBytes as number) >= blocksWritten * blockBytes, 'and their blocks saved');
  const divergence = await one.waitForEvent('rejoin-divergence', 60_000);
  assert.equal(divergence.divergedFrom, settled.closed);
  const resync = await one.waitForEvent('resync-complete', 60_000);
  const copied = resync.copiedBytes as number;
  const volumeBytes = volumeSizes.reduce((sum, size) => sum + size, 0);
  t.diagnostic(`split-brain delta: ${copied} bytes copied of ${volumeBytes}`);
  assert.ok(
    copied > 0 && copied < volumeBytes / 8,
    `only the blocks either site wrote travel: ${copied} (${acknowledged} writes raced the rejoin)`,
  );
  assert.equal(two.events('rejoin-full-copy').length, 0);

  assert.equal(await one.stop(), 0);
  assert.equal(await two.stop(), 0);
  const [image1, image2] = [own.image('one'), own.image('two')];
  for (const [index, bytes] of image1.entries())
    assert.equal(Buffer.compare(bytes, image2[index] as Buffer), 0, `vol${index}: dr2 equals dr1`);
  const vol1 = image2[1] as Buffer;
  assert.equal(vol1[0], 0x11, "dr1's write is on dr2");
  assert.notEqual(vol1[64 * blockBytes], 0x22, "dr2's own writes are undone");
  assert.notEqual(vol1[128 * blockBytes], 0x33, "dr2's own writes are undone");
});
