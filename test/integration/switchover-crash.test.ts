// A planned switchover whose old primary is killed -9 after it asked its secondary to take over
// and before it became that site's secondary (docs/failover.md). dr1 promotes and is stopped for
// a while; main, started again, cannot reach it and takes no writes (it asked, so dr1 may lead:
// site.json `handover`); once dr1 is back main is fenced when it dials it, and `cyclerep rejoin`
// makes it dr1's secondary with nothing to undo and no resync. Every write main acknowledged is on
// dr1; main acknowledged none after its restart.
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { after, test } from 'node:test';
import { blockBytes, freePort, runCyclerep, status, Workspace, waitForStatus } from './harness.ts';
import { NbdSocketClient } from './nbd-socket-client.ts';

const workspace = new Workspace();
after(() => workspace.cleanup());

const volumeBytes = 4 * 1024 * 1024;

function blockOf(serial: number): Buffer {
  const block = Buffer.alloc(blockBytes);
  block.writeUInt32BE(serial, 0);
  block.fill(serial & 0xff, 4);
  return block;
}

test('an old primary killed -9 after it asked for a switchover takes no writes when back, and rejoins with nothing to undo', {
  timeout: 240_000,
}, async () => {
  const mainNbd = await freePort();
  const mainListen = await freePort();
  const secondary = await workspace.secondaryConfig('dr1', {
    volumes: [volumeBytes],
    extra: [
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
  let main = workspace.startPrimary(primaryConfig.path);
  await main.waitForEvent('primary-started');
  await waitForStatus(primaryConfig.httpPort, (s) => {
    const [link] = s.secondaries as { link: string; mode: string }[];
    return link?.link === 'streaming' && link.mode === 'streaming';
  });
  const writer = await NbdSocketClient.open(mainNbd, 'vol0');
  const acknowledged = new Map<number, number>();
  for (let serial = 1; serial <= 64; serial++) {
    const [answer] = await writer.send([writer.writeRequest(serial * blockBytes, blockOf(serial))]);
    assert.equal(answer, 0);
    acknowledged.set(serial, serial);
  }
  writer.destroy();

  const switching = runCyclerep([
    'switchover',
    '--url',
    `http://127.0.0.1:${primaryConfig.httpPort}`,
    '--timeout-seconds',
    '10',
  ]);
  const asked = await main.waitForEvent('switchover-asked', 30_000);
  main.kill('SIGKILL');
  await main.exited;
  assert.deepEqual(main.events('demoted'), [], 'killed before it became the secondary');
  assert.notEqual((await switching).status, 0, 'the command saw its site die');
  const promoted = await dr1.waitForEvent('promoted', 30_000);
  assert.equal(promoted.applied, asked.cycle);

  // dr1 is down for a while (it stops cleanly as the primary it is now), so main cannot learn it
  // was superseded. Back, main takes no write: dr1 may lead, and whatever main acknowledged would
  // be undone.
  assert.equal(await dr1.stop(), 0, dr1.stderr.slice(-2000));
  main = workspace.startPrimary(primaryConfig.path);
  await main.waitForEvent('switchover-resumed');
  const client = await NbdSocketClient.open(mainNbd, 'vol0');
  const [refused] = await client.send([client.writeRequest(0, blockOf(999))]);
  client.destroy();
  assert.notEqual(refused, 0, 'a write after the restart is refused');
  dr1 = workspace.startSecondary(secondary.path);
  await dr1.waitForEvent('primary-started');
  const fenced = await main.waitForEvent('fenced', 30_000);
  assert.equal(fenced.startedAt, (asked.cycle as number) + 1);

  const rejoined = await runCyclerep([
    'rejoin',
    '--url',
    `http://127.0.0.1:${primaryConfig.httpPort}`,
    '--timeout-seconds',
    '60',
  ]);
  assert.equal(rejoined.status, 0, `${rejoined.output}\n${main.stderr.slice(-3000)}`);
  const started = await main.waitForEvent('rejoin-started');
  assert.equal(started.discardedWrites, 0, 'nothing to undo');
  assert.equal(started.divergentRuns, 0);
  const dr1Status = await status(secondary.httpPort);
  const [link] = dr1Status.secondaries as { name: string; mode: string }[];
  assert.equal(link?.mode, 'streaming', 'no resync');
  assert.equal(main.events('resync-started').length + dr1.events('resync-started').length, 0);
  assert.equal(await main.stop(), 0, main.stderr.slice(-2000));
  assert.equal(await dr1.stop(), 0, dr1.stderr.slice(-2000));
  const mainImage = readFileSync(workspace.path('primary', 'volumes', 'vol0.img'));
  const dr1Image = readFileSync(workspace.path('dr1', 'volumes', 'vol0.img'));
  assert.equal(Buffer.compare(mainImage, dr1Image), 0, 'the two sites hold the same image');
  for (const [block, serial] of acknowledged)
    assert.equal(dr1Image.readUInt32BE(block * blockBytes), serial, `block ${block}`);
  assert.equal(dr1Image.readUInt32BE(0), 0, 'the refused write is nowhere');
});
