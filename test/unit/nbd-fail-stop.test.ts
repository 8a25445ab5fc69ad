// Proves how an NBD connection fails and stops, without sockets: a request whose export fails is
// answered with the errno of the real cause (NBD_ENOSPC for a full disk however deeply the errno is
// wrapped, NBD_ESHUTDOWN for a site that is stopping, NBD_EPERM for a write to a fenced primary,
// NBD_EIO otherwise), a failed FLUSH is answered
// too; shutdown() answers new requests NBD_ESHUTDOWN, lets the one in flight finish, then closes,
// and counts what it refused instead of logging each.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { StorageError, WriteError } from '../../src/core/errors.ts';
import { commands, nbdErrors } from '../../src/nbd/protocol.ts';
import { PrimaryNodeError } from '../../src/node/primary-node.ts';
import { blockBytes, Client, connected, flush, memoryExport } from './nbd-client.ts';

function errnoError(code: string): Error {
  return Object.assign(new Error(`${code}: from the kernel, write`), { code });
}

const cases: [string, Error, number][] = [
  ['a bare ENOSPC', errnoError('ENOSPC'), nbdErrors.ENOSPC],
  ['a quota (EDQUOT)', errnoError('EDQUOT'), nbdErrors.ENOSPC],
  [
    'ENOSPC wrapped by the journal',
    new StorageError('storage-io', 'journal: write failed', { cause: errnoError('ENOSPC') }),
    nbdErrors.ENOSPC,
  ],
  ['an I/O error', errnoError('EIO'), nbdErrors.EIO],
  ['no errno at all', new Error('something else'), nbdErrors.EIO],
  ['a stopping site', new PrimaryNodeError('stopping', 'the primary is stopping'), nbdErrors.ESHUTDOWN],
  ['a fenced primary', new WriteError('fenced', 'this primary was superseded'), nbdErrors.EPERM],
];

for (const [what, failure, expected] of cases) {
  test(`a write and a flush failing with ${what} are answered with errno ${expected}`, async () => {
    const target = memoryExport('data', 1 << 20);
    target.write = () => Promise.reject(failure);
    target.flush = () => Promise.reject(failure);
    const client = await connected([target], 'data');
    client.request(commands.write, 1, 0, blockBytes, new Uint8Array(blockBytes));
    client.request(commands.flush, 2, 0, 0);
    await flush();
    assert.deepEqual(client.simpleReply().slice(0, 2), [1, expected]);
    assert.deepEqual(client.simpleReply().slice(0, 2), [2, expected]);
  });
}

test('shutdown: new requests get ESHUTDOWN, the one in flight finishes, then the connection closes', async () => {
  const target = memoryExport('data', 1 << 20);
  let landWrite: () => void = () => {};
  target.write = () => new Promise((resolve) => (landWrite = resolve));
  const client = await connected([target], 'data');
  client.request(commands.write, 1, 0, blockBytes, new Uint8Array(blockBytes));
  await flush();
  client.connection.shutdown();
  assert.equal(client.closed, null, 'open while a request is in flight');
  client.request(commands.write, 2, blockBytes, blockBytes, new Uint8Array(blockBytes));
  client.request(commands.flush, 3, 0, 0);
  await flush();
  assert.deepEqual(client.simpleReply().slice(0, 2), [2, nbdErrors.ESHUTDOWN]);
  assert.deepEqual(client.simpleReply().slice(0, 2), [3, nbdErrors.ESHUTDOWN]);
  landWrite();
  await flush();
  assert.deepEqual(client.simpleReply().slice(0, 2), [1, 0], 'the write in flight was answered');
  assert.equal(client.closed, 'server stopping');
  assert.equal(client.connection.refusedWhileStopping, 2);
});

test('shutdown of an idle connection, or of one still haggling, closes it at once', async () => {
  const idle = await connected([memoryExport('data', 1 << 20)], 'data');
  idle.connection.shutdown();
  assert.equal(idle.closed, 'server stopping');
  assert.equal(idle.connection.refusedWhileStopping, 0);
  const haggling = new Client([memoryExport('data', 1 << 20)]);
  haggling.connection.shutdown();
  assert.equal(haggling.closed, 'server stopping');
});
