// Proves, with a real client, that in `ack: cycle` mode an NBD write is answered only once the
// cycle number has moved past the write's cycle: three writes in a row from one qemu-io take three
// cycle switches. The primary's export is on a Unix socket here, so that path is proven too.
import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { status } from '../integration/harness.ts';
import { NbdGroup, run } from './nbd-group.ts';

let group: NbdGroup;

before(async () => {
  // A long cycle: a switch comes at most every 800 ms, so immediate replies could not keep up.
  group = await NbdGroup.start(16 * 1024 * 1024, {
    ack: 'cycle',
    cycle: '{ intervalMinMs: 800, queuedMax: 8 }',
    unixSocket: true,
  });
});

after(() => group.stop());

const capture = async (): Promise<number> => (await status(group.primaryHttp)).capture as number;

test('ack: cycle over NBD: each write is answered after its cycle closed, and it replicates', {
  timeout: 60_000,
}, async () => {
  const before = await capture();
  const writes = run('qemu-io', [
    '-f',
    'raw',
    group.primaryUrl,
    '-c',
    'write -P 0x41 0 64k',
    '-c',
    'write -P 0x42 64k 64k',
    '-c',
    'write -P 0x43 128k 64k',
  ]);
  assert.equal(writes.status, 0, writes.stdout + writes.stderr);
  const afterWrites = await capture();
  // Each write waits for the switch that closes its cycle and the next one lands in a later cycle,
  // so three sequential writes need three switches; immediate replies would need at most one.
  assert.ok(afterWrites - before >= 3, `capture went from ${before} to ${afterWrites}`);
  await group.idle();
  const replica = run('qemu-io', [
    '-f',
    'raw',
    '-r',
    group.secondaryUrl,
    '-c',
    'read -P 0x41 0 64k',
    '-c',
    'read -P 0x42 64k 64k',
    '-c',
    'read -P 0x43 128k 64k',
  ]);
  assert.equal(replica.status, 0, replica.stdout + replica.stderr);
  assert.doesNotMatch(replica.stdout, /Pattern verification failed/);
});
