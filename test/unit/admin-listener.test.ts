// Proves that the status listener takes admin verbs (docs/failover.md) only from this machine: a
// peer's address is judged loopback or not, and a request whose peer address can no longer be told
// (the client reset the connection right after sending it: Node then reports no remote address)
// is refused on a TCP listener rather than taken for a Unix socket's. Real sockets on 127.0.0.1.
import assert from 'node:assert/strict';
import { connect } from 'node:net';
import { test } from 'node:test';
import { type AdminAnswer, isLoopbackPeer, startStatusServer } from '../../src/ops/status-server.ts';

test('loopback peers are 127.0.0.0/8 and ::1, IPv4-mapped or not; anything else is not', () => {
  for (const address of ['127.0.0.1', '127.3.2.1', '::1', '::ffff:127.0.0.1'])
    assert.equal(isLoopbackPeer(address, { unixSocket: false }), true, address);
  for (const address of ['10.0.0.1', '::ffff:10.0.0.1', '192.168.1.127', 'fe80::1', '::2', '0.0.0.0'])
    assert.equal(isLoopbackPeer(address, { unixSocket: false }), false, address);
});

test('no remote address is a Unix socket peer only on a Unix socket listener', () => {
  assert.equal(isLoopbackPeer(undefined, { unixSocket: true }), true);
  assert.equal(isLoopbackPeer(undefined, { unixSocket: false }), false);
});

test('a request whose client resets the connection at once is never carried out on a TCP listener', async () => {
  const verbs: string[] = [];
  const admin = async (verb: string): Promise<AdminAnswer> => {
    verbs.push(verb);
    return { status: 202, body: { ok: true } };
  };
  const server = await startStatusServer('127.0.0.1:0', () => ({}), undefined, undefined, admin);
  try {
    const address = server.address();
    assert.ok(address && typeof address === 'object');
    const requests = 20;
    for (let index = 0; index < requests; index++) {
      await new Promise<void>((resolve) => {
        const socket = connect(address.port, '127.0.0.1', () => {
          socket.write('POST /admin/promote?force=true HTTP/1.1\r\nHost: site\r\nContent-Length: 0\r\n\r\n');
          socket.resetAndDestroy();
        });
        socket.on('error', () => {});
        socket.on('close', () => resolve());
      });
    }
    await new Promise((resolve) => setTimeout(resolve, 100));
    assert.deepEqual(verbs, [], 'a request from a peer that cannot be told is refused');
    // An ordinary loopback request is still served.
    const response = await fetch(`http://127.0.0.1:${address.port}/admin/promote`, { method: 'POST' });
    assert.equal(response.status, 202);
    assert.deepEqual(verbs, ['promote']);
  } finally {
    await new Promise((resolve) => server.close(resolve));
  }
});
