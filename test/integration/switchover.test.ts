// Planned switchover with real processes (docs/failover.md). The primary `main` takes writes over
// NBD and replicates to dr1; `cyclerep switchover` stops its writes (the writer sees ESHUTDOWN),
// hands its last cycle to dr1, which becomes the primary of a new generation, and main follows it
// from that cycle. Every acknowledged write is on both sites, no resync happens (main streams
// from the next cycle at once), and writes on the new primary reach the old one.
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { after, test } from 'node:test';
import { blockBytes, freePort, runCyclerep, status, Workspace, waitForStatus } from './harness.ts';
import { NbdSocketClient } from './nbd-socket-client.ts';

const workspace = new Workspace();
after(() => workspace.cleanup());

const nbdESHUTDOWN = 108;
const volumeBytes = 4 * 1024 * 1024;

function blockOf(serial: number): Buffer {
  const block = Buffer.alloc(blockBytes);
  block.writeUInt32BE(serial, 0);
  block.fill(serial & 0xff, 4);
  return block;
}

test('switchover under writes: no acknowledged write lost, no resync, the old primary follows the new one', {
  timeout: 240_000,
}, async (t) => {
  const mainNbd = await freePort();
  const dr1Nbd = await freePort();
  const mainListen = await freePort();
  const secondary = await workspace.secondaryConfig('dr1', {
    volumes: [volumeBytes],
    extra: [
      `nbd: { listen: 127.0.0.1:${dr1Nbd} }`,
      'secondaries:',
      `  - { name: main, address: 127.0.0.1:${mainListen} }`,
      'cycle: { intervalMinMs: 100 }',
      'journal: { capacity: 256MiB, segmentSize: 8MiB }',
    ].join('\n'),
  });
  const primaryConfig = await workspace.primaryConfig({
    secondaries: [{ name: 'dr1', port: secondary.port }],
    volumes: [volumeBytes],
    extra: [`nbd: { listen: 127.0.0.1:${mainNbd} }`, 'name: main', `listen: 127.0.0.1:${mainListen}`].join(
      '\n',
    ),
  });
  let dr1 = workspace.startSecondary(secondary.path);
  await dr1.waitForEvent('secondary-started');
  const main = workspace.startPrimary(primaryConfig.path);
  await main.waitForEvent('primary-started');
  const before = await waitForStatus(
    primaryConfig.httpPort,
    (s) => {
      const [link] = s.secondaries as { link: string; mode: string }[];
      return link?.link === 'streaming' && link.mode === 'streaming';
    },
    30_000,
  );

  // A writer over NBD: each block's newest acknowledged serial is kept.
  const writer = await NbdSocketClient.open(mainNbd, 'vol0');
  const acknowledged = new Map<number, number>();
  const blocks = volumeBytes / blockBytes;
  let refusedWith = 0;
  const writing = (async () => {
    for (let serial = 1; refusedWith === 0; serial++) {
      const block = (serial * 7) % blocks;
      const [answer] = await writer.send([writer.writeRequest(block * blockBytes, blockOf(serial))]);
      if (answer === 0) acknowledged.set(block, serial);
      else refusedWith = answer as number;
    }
  })();
  await waitForStatus(
    primaryConfig.httpPort,
    (s) => (s.closed as number) >= (before.closed as number) + 5,
    30_000,
  );

  const startedMs = Date.now();
  const switched = await runCyclerep([
    'switchover',
    '--url',
    `http://127.0.0.1:${primaryConfig.httpPort}`,
    '--timeout-seconds',
    '60',
  ]);
  assert.equal(
    switched.status,
    0,
    `${switched.output}\n${main.stderr.slice(-3000)}\n${dr1.stderr.slice(-3000)}`,
  );
  t.diagnostic(`switchover took ${Date.now() - startedMs} ms (command to both roles in force)`);
  await writing;
  writer.destroy();
  assert.equal(refusedWith, nbdESHUTDOWN, 'writes after the switchover began get ESHUTDOWN');
  assert.ok(acknowledged.size > 10, `${acknowledged.size} blocks written`);
  t.diagnostic(`${acknowledged.size} blocks acknowledged before the switchover refused writes`);

  const mainAfter = await status(primaryConfig.httpPort);
  const dr1After = await status(secondary.httpPort);
  assert.equal(mainAfter.role, 'secondary');
  assert.equal(dr1After.role, 'primary');
  assert.notEqual(dr1After.generation, before.generation, 'a new generation');
  const [asked] = main.events('switchover-asked');
  const cycle = asked?.cycle as number;
  assert.equal(mainAfter.applied, cycle, 'the old primary holds the image of the last cycle');
  assert.equal(dr1After.closed, cycle, "the new primary's numbering goes on from it");
  const [link] = dr1After.secondaries as { name: string; link: string; mode: string; stored: number }[];
  assert.equal(link?.name, 'main');
  assert.equal(link?.mode, 'streaming', 'no resync: the old primary follows from the cycle');
  assert.equal(main.events('resync-started').length + dr1.events('resync-started').length, 0);

  // Both images hold every acknowledged write, byte for byte the same.
  const mainImage = readFileSync(workspace.path('primary', 'volumes', 'vol0.img'));
  const dr1Image = readFileSync(workspace.path('dr1', 'volumes', 'vol0.img'));
  assert.equal(Buffer.compare(mainImage, dr1Image), 0, 'the two sites hold the same image');
  for (const [block, serial] of acknowledged)
    assert.equal(
      dr1Image.readUInt32BE(block * blockBytes),
      serial,
      `block ${block}: acknowledged serial ${serial}`,
    );

  // The new primary takes writes, and the old one receives them.
  const client = await NbdSocketClient.open(dr1Nbd, 'vol0');
  assert.deepEqual(
    await client.send([client.writeRequest(0, blockOf(999_999)), client.flushRequest()]),
    [0, 0],
  );
  client.destroy();
  await waitForStatus(primaryConfig.httpPort, (s) => (s.applied as number) > cycle, 30_000);

  // Restarts keep the roles: each site's data directory decides, whatever its config says.
  assert.equal(await main.stop(), 0, main.stderr.slice(-2000));
  assert.equal(await dr1.stop(), 0, dr1.stderr.slice(-2000));
  assert.equal(readFileSync(workspace.path('primary', 'volumes', 'vol0.img')).readUInt32BE(0), 999_999);
  dr1 = workspace.startSecondary(secondary.path);
  await dr1.waitForEvent('primary-started');
  const mainAgain = workspace.startPrimary(primaryConfig.path);
  await mainAgain.waitForEvent('secondary-started');
  await waitForStatus(primaryConfig.httpPort, (s) => s.link === 'streaming', 30_000);
});
