// Proves fail-stop with real processes, a real full disk and real NBD sockets. A primary whose data
// directory is a small tmpfs answers the write that finds the disk full with NBD_ENOSPC and the
// flush after it with an error, shows the fault in /status, and exits 3 with a client still
// connected; after the tmpfs is grown, a restart has every acknowledged write. A secondary whose
// disk fills exits 3, the primary marks the link failed, and after the operator frees space and
// restarts it the secondary converges. SIGTERM ends a primary with an idle client or a client
// hammering writes, exit 0, and the refused requests are counted, not logged one by one.
// The tmpfs needs root and mount (CI runs as root); without them these tests fail, they never skip.
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { after, test } from 'node:test';
import { nbdErrors } from '../../src/nbd/protocol.ts';
import { ensureDir, freePort, type Site, sleep, Workspace, waitForStatus } from './harness.ts';
import { NbdSocketClient } from './nbd-socket-client.ts';

const workspaces: Workspace[] = [];
const mounts: string[] = [];
after(async () => {
  // Detached at once even while a process still has files open there; cleanup then kills them.
  for (const dir of mounts) spawnSync('umount', ['-l', dir]);
  for (const workspace of workspaces) await workspace.cleanup();
});

function fresh(): Workspace {
  const workspace = new Workspace();
  workspaces.push(workspace);
  return workspace;
}

/** A tmpfs of `size` at `dir`: a disk that really fills, with ENOSPC from the kernel. */
function mountTmpfs(dir: string, size: string): void {
  ensureDir(dir);
  const result = spawnSync('mount', ['-t', 'tmpfs', '-o', `size=${size}`, 'tmpfs', dir], {
    encoding: 'utf8',
  });
  if (result.status !== 0)
    throw new Error(
      `cannot mount a tmpfs at ${dir} (these tests need root): ${result.stderr}${result.error ?? ''}`,
    );
  mounts.push(dir);
}

/** The operator frees space: the same tmpfs, grown. */
function growTmpfs(dir: string, size: string): void {
  const result = spawnSync('mount', ['-o', `remount,size=${size}`, dir], { encoding: 'utf8' });
  assert.equal(result.status, 0, `remount ${dir}: ${result.stderr}`);
}

/** The exit code, or 'still running' once `ms` passed (generous: the bound under test is far lower). */
async function exitWithin(site: Site, ms: number): Promise<number | null | 'still running'> {
  return Promise.race([site.exited, sleep(ms).then(() => 'still running' as const)]);
}

const blockBytes = 4096;
/** Block `block` as written by write number `serial`: both numbers repeated over the block. */
function blockOf(block: number, serial: number): Buffer {
  const data = Buffer.alloc(blockBytes);
  for (let at = 0; at < blockBytes; at += 8) {
    data.writeUInt32BE(block, at);
    data.writeUInt32BE(serial, at + 4);
  }
  return data;
}

test('a primary whose disk fills answers ENOSPC, fails the flush, shows the fault, exits 3 and loses no acknowledged write', {
  timeout: 120_000,
}, async () => {
  const workspace = fresh();
  const disk = workspace.path('primary');
  mountTmpfs(disk, '8m');
  const nbdPort = await freePort();
  // A secondary nobody answers for: the journal keeps every cycle, so the disk fills.
  const awayPort = await freePort();
  const volumeBlocks = 256;
  const config = await workspace.primaryConfig({
    secondaries: [{ name: 'dr1', port: awayPort }],
    volumes: [volumeBlocks * blockBytes],
    extra: `nbd: { listen: 127.0.0.1:${nbdPort} }\nshutdown: { timeoutMs: 5000, faultStatusMs: 5000 }`,
  });
  const primary = workspace.startPrimary(config.path);
  await primary.waitForEvent('primary-started');
  const idle = await NbdSocketClient.open(nbdPort, 'vol0');
  const writer = await NbdSocketClient.open(nbdPort, 'vol0');
  // The newest acknowledged write of each block; the volume's blocks are few, so once they are
  // allocated only the journal grows.
  const acknowledged = new Map<number, number>();
  let failed: { block: number; serial: number; write: number; flush: number } | null = null;
  for (let serial = 1; serial < 100_000 && !failed; serial++) {
    const block = serial % volumeBlocks;
    const [write, flush] = await writer.send([
      writer.writeRequest(block * blockBytes, blockOf(block, serial)),
      writer.flushRequest(),
    ]);
    if (write === 0 && flush === 0) acknowledged.set(block, serial);
    else failed = { block, serial, write: write as number, flush: flush as number };
  }
  assert.ok(failed, 'the disk filled');
  assert.equal(failed.write, nbdErrors.ENOSPC, 'the write that found the disk full: NBD_ENOSPC');
  assert.notEqual(failed.flush, 0, 'the flush after it is answered with an error, not left hanging');
  const status = await waitForStatus(config.httpPort, (s) => s.fault != null, 4000);
  const fault = status.fault as { kind: string; message: string; at: string };
  assert.equal(fault.kind, 'disk-full');
  assert.match(fault.message, /ENOSPC|no space/i);
  assert.ok(!Number.isNaN(Date.parse(fault.at)), `fault.at is a time: ${fault.at}`);
  assert.equal(
    await exitWithin(primary, 30_000),
    3,
    `exit code 3 with clients connected\n${primary.stderr.slice(-2000)}`,
  );
  await idle.closed;
  const failure = primary.events('storage-failed')[0];
  assert.equal(failure?.kind, 'disk-full');
  // The operator frees space and starts the site again: every acknowledged write is there.
  growTmpfs(disk, '64m');
  const restarted = workspace.startPrimary(config.path);
  await restarted.waitForEvent('primary-started');
  assert.equal(await restarted.stop(), 0);
  const image = readFileSync(workspace.path('primary', 'volumes', 'vol0.img'));
  for (let block = 0; block < volumeBlocks; block++) {
    const found = image.subarray(block * blockBytes, (block + 1) * blockBytes);
    const serial = acknowledged.get(block);
    const expected = serial === undefined ? Buffer.alloc(blockBytes) : blockOf(block, serial);
    // The refused write may or may not have reached the journal: either content is allowed for it.
    const allowed =
      found.equals(expected) || (block === failed.block && found.equals(blockOf(block, failed.serial)));
    assert.ok(allowed, `block ${block}: acknowledged write ${serial} is not what the volume holds`);
  }
});

test('a secondary whose disk fills exits 3, the primary fails the link, and after a restart with room it converges', {
  timeout: 180_000,
}, async () => {
  const workspace = fresh();
  const disk = workspace.path('dr1');
  mountTmpfs(disk, '8m');
  const secondary = await workspace.secondaryConfig('dr1', {
    extra: 'shutdown: { timeoutMs: 5000, faultStatusMs: 0 }',
  });
  const primary = await workspace.primaryConfig({ secondaries: [{ name: 'dr1', port: secondary.port }] });
  const dr1 = workspace.startSecondary(secondary.path);
  await dr1.waitForEvent('secondary-started');
  const load = workspace.startLoadPrimary(primary.path);
  await waitForStatus(
    primary.httpPort,
    (s) => (s.secondaries as { link: string }[])[0]?.link === 'streaming',
  );
  assert.equal(await exitWithin(dr1, 90_000), 3, `the secondary exits 3\n${dr1.stderr.slice(-2000)}`);
  assert.equal(dr1.events('storage-failed')[0]?.kind, 'disk-full');
  const failedLink = await waitForStatus(
    primary.httpPort,
    (s) => {
      const link = (s.secondaries as { link: string; lastFailure: string | null }[])[0];
      return link?.link !== 'streaming' && !!link?.lastFailure;
    },
    30_000,
  );
  assert.notEqual((failedLink.secondaries as { link: string }[])[0]?.link, 'streaming');
  growTmpfs(disk, '256m');
  const again = workspace.startSecondary(secondary.path);
  await again.waitForEvent('secondary-started');
  load.kill('SIGUSR2');
  await load.waitForOutput('"paused":true');
  await waitForStatus(
    primary.httpPort,
    (s) => {
      const link = (s.secondaries as { link: string; lagBytes: number }[])[0];
      return link?.link === 'streaming' && link.lagBytes === 0;
    },
    60_000,
  );
  assert.equal(await load.stop(), 0);
  assert.equal(await again.stop(), 0);
  workspace.assertReplica('dr1');
});

/** A primary with an NBD listener and a secondary that never answers. */
async function primaryWithNbd(workspace: Workspace): Promise<{ site: Site; nbdPort: number }> {
  const nbdPort = await freePort();
  const config = await workspace.primaryConfig({
    secondaries: [{ name: 'dr1', port: await freePort() }],
    extra: `nbd: { listen: 127.0.0.1:${nbdPort} }\nshutdown: { timeoutMs: 3000, faultStatusMs: 0 }`,
  });
  const site = workspace.startPrimary(config.path);
  await site.waitForEvent('nbd-listening');
  return { site, nbdPort };
}

test('SIGTERM ends a primary with an idle NBD client connected: exit 0, the client is closed', {
  timeout: 60_000,
}, async () => {
  const workspace = fresh();
  const { site, nbdPort } = await primaryWithNbd(workspace);
  const idle = await NbdSocketClient.open(nbdPort, 'vol0');
  site.kill('SIGTERM');
  assert.equal(await exitWithin(site, 30_000), 0, site.stderr.slice(-2000));
  await idle.closed;
});

test('SIGTERM ends a primary with a client hammering writes: exit 0, refused requests counted in one line', {
  timeout: 60_000,
}, async () => {
  const workspace = fresh();
  const { site, nbdPort } = await primaryWithNbd(workspace);
  const client = await NbdSocketClient.open(nbdPort, 'vol0');
  let served = 0;
  let refused = 0;
  const hammer = (async () => {
    for (let round = 0; !client.ended; round++) {
      const batch = Array.from({ length: 16 }, (_, index) =>
        client.writeRequest(((round * 16 + index) % 2048) * blockBytes, blockOf(index, round)),
      );
      for (const reply of await Promise.allSettled(client.sendEach(batch))) {
        if (reply.status === 'rejected') continue;
        if (reply.value === 0) served++;
        else refused++;
      }
    }
  })();
  while (served < 500) await sleep(10);
  site.kill('SIGTERM');
  assert.equal(await exitWithin(site, 30_000), 0, site.stderr.slice(-2000));
  await hammer;
  const lines = site.stderr.split('\n').filter((line) => line.length > 0);
  assert.ok(lines.length < 100, `${lines.length} log lines: ${lines.slice(-5).join('\n')}`);
  const closed = site.events('nbd-client-closed');
  assert.equal(closed.length, 1);
  assert.equal(closed[0]?.refusedWhileStopping, refused, 'the refused requests are counted');
});
