// Proves that bad peers are refused with a message naming the problem and cost no data: a
// secondary of another group, a secondary with other volume sizes, garbage bytes and an oversized
// frame sent to a secondary's port, and a "secondary" that answers garbage to the primary.
import assert from 'node:assert/strict';
import { connect, createServer } from 'node:net';
import { test } from 'node:test';
import { crc32c } from '../../src/protocol/crc32c.ts';
import { frameMagic } from '../../src/protocol/frames.ts';
import { freePort, sleep, volumeSizes, waitForStatus, workspacesCleanedAfterTests } from './harness.ts';
import { journalSegments, waitForEvents } from './journal-files.ts';

const fresh = workspacesCleanedAfterTests();

test('a secondary of another group refuses the primary, naming both groups, and journals nothing', {
  timeout: 60_000,
}, async () => {
  const workspace = fresh();
  const secondary = await workspace.secondaryConfig('dr1', { group: 'other', volumes: volumeSizes });
  const primary = await workspace.primaryConfig({ secondaries: [{ name: 'dr1', port: secondary.port }] });
  const dr1 = workspace.startSecondary(secondary.path);
  await dr1.waitForEvent('secondary-started');
  const load = workspace.startLoadPrimary(primary.path, { LOAD_SETTLE_MS: '200' });
  const refused = await dr1.waitForEvent('primary-refused');
  assert.equal(refused.code, 'group-mismatch');
  assert.match(refused.reason as string, /group "it" offered, this site is of group "other"/);
  const primarySide = await load.waitForEvent('link-refused');
  assert.match(primarySide.reason as string, /group-mismatch/);
  const status = await waitForStatus(primary.httpPort, (s) => (s.closed as number) > 2);
  assert.equal((status.secondaries as { link: string }[])[0]?.link === 'streaming', false);
  // Refused twice: the first attempt was handled to its end before the journal is looked at.
  await waitForEvents(dr1, 'primary-refused', 2);
  assert.deepEqual(journalSegments(workspace, 'dr1'), [], 'nothing was journaled at the refusing secondary');
  await load.stop();
  await dr1.stop();
});

test('a secondary with other volume sizes refuses the primary, naming the volume and both sizes', {
  timeout: 60_000,
}, async () => {
  const workspace = fresh();
  const secondary = await workspace.secondaryConfig('dr1', { volumes: [4 * 1024 * 1024, 4 * 1024 * 1024] });
  const primary = await workspace.primaryConfig({ secondaries: [{ name: 'dr1', port: secondary.port }] });
  const dr1 = workspace.startSecondary(secondary.path);
  await dr1.waitForEvent('secondary-started');
  const load = workspace.startLoadPrimary(primary.path, { LOAD_SETTLE_MS: '200' });
  const refused = await dr1.waitForEvent('primary-refused');
  assert.equal(refused.code, 'volumes-mismatch');
  assert.match(refused.reason as string, /volume "vol0" is 8388608 bytes at the primary, 4194304 here/);
  await waitForEvents(dr1, 'primary-refused', 2);
  assert.deepEqual(journalSegments(workspace, 'dr1'), []);
  await load.stop();
  await dr1.stop();
});

async function sendRaw(port: number, bytes: Uint8Array): Promise<void> {
  await new Promise<void>((resolve) => {
    const socket = connect(port, '127.0.0.1', () => socket.write(bytes));
    socket.on('error', () => resolve());
    socket.on('close', () => resolve());
    setTimeout(() => {
      socket.destroy();
      resolve();
    }, 2000);
  });
}

test('garbage and an oversized frame sent to a secondary are refused while replication goes on', {
  timeout: 60_000,
}, async () => {
  const workspace = fresh();
  const secondary = await workspace.secondaryConfig('dr1');
  const primary = await workspace.primaryConfig({ secondaries: [{ name: 'dr1', port: secondary.port }] });
  const dr1 = workspace.startSecondary(secondary.path);
  await dr1.waitForEvent('secondary-started');
  const load = workspace.startLoadPrimary(primary.path);
  await load.waitForWrites(300);
  const before = await waitForStatus(
    primary.httpPort,
    (s) => (s.secondaries as { link: string }[])[0]?.link === 'streaming',
  );
  await sendRaw(
    secondary.port,
    new TextEncoder().encode('GET / HTTP/1.1\r\nHost: x\r\n\r\nthis is not a cyclerep frame'),
  );
  const huge = new Uint8Array(20);
  const view = new DataView(huge.buffer);
  view.setUint32(0, frameMagic);
  view.setUint8(4, 4);
  view.setUint32(8, 0xffff_fff0);
  view.setUint32(16, crc32c(huge.subarray(0, 16)));
  await sendRaw(secondary.port, huge);
  const codes = () => dr1.events('bad-bytes-from-primary').map((event) => event.code);
  for (let i = 0; i < 100 && codes().length < 2; i++) await sleep(20);
  assert.deepEqual(codes(), ['frame-bad-magic', 'frame-too-large']);
  const later = await waitForStatus(
    primary.httpPort,
    (s) => (s.closed as number) >= (before.closed as number) + 3,
  );
  const link = (later.secondaries as { link: string; failures: number; stored: number }[])[0];
  assert.equal(link?.link, 'streaming');
  assert.equal(link?.failures, 0, 'the real session never noticed');
  assert.ok((link?.stored as number) > (before.closed as number));
  assert.equal(await load.stop(), 0);
  assert.equal(await dr1.stop(), 0);
  const cut = workspace.checkCut('dr1');
  assert.ok(cut.consistent, cut.problems.slice(0, 3).join('\n'));
});

test('a "secondary" that answers garbage fails the link on the primary, which keeps running and retrying', {
  timeout: 60_000,
}, async () => {
  const workspace = fresh();
  const port = await freePort();
  let connections = 0;
  const liar = createServer((socket) => {
    connections++;
    socket.on('error', () => {});
    socket.write(Buffer.from('garbage garbage garbage garbage'));
  });
  await new Promise<void>((resolve) => liar.listen(port, '127.0.0.1', () => resolve()));
  try {
    const primary = await workspace.primaryConfig({ secondaries: [{ name: 'dr1', port }], connections: 1 });
    const load = workspace.startLoadPrimary(primary.path, { LOAD_SETTLE_MS: '200' });
    const bad = await load.waitForEvent('bad-bytes-from-secondary');
    assert.equal(bad.code, 'frame-bad-magic');
    await load.waitForWrites(200);
    for (let i = 0; i < 100 && connections < 3; i++) await sleep(20);
    assert.ok(connections >= 3, `the primary retried (${connections} connections)`);
    assert.equal(await load.stop(), 0, 'it stops cleanly; the secondary never caught up, so it waited');
  } finally {
    liar.close();
  }
});
