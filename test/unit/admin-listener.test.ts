// Proves that the status listener takes admin verbs (docs/failover.md) only from this machine, or
// with http.tls from a client certificate it names: a peer's address is judged loopback or not, a
// request whose peer address can no longer be told (the client reset the connection right after
// sending it: Node then reports no remote address) is refused on a TCP listener rather than taken
// for a Unix socket's, and over TLS a client certificate counts only when it chains to the site's
// CA and names an admin. Real sockets on 127.0.0.1, real certificates (openssl).
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { connect } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import { createServer as createTlsServer, type TLSSocket, connect as tlsConnect } from 'node:tls';
import { siteRequest } from '../../src/cli/site-client.ts';
import { ensureCa, makeSiteCertificate } from '../../src/ops/certs.ts';
import {
  type AdminAnswer,
  type AdminPeer,
  adminPeerOf,
  adminRefusal,
  isLoopbackPeer,
  startStatusServer,
} from '../../src/ops/status-server.ts';

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

test('from another machine, admin verbs need http.tls and a verified client certificate naming an admin', () => {
  const tcp = { unixSocket: false };
  const remote = (identities: string[] | null, certificateProblem?: string): AdminPeer => ({
    remoteAddress: '10.1.2.3',
    identities,
    ...(certificateProblem ? { certificateProblem } : {}),
  });
  assert.equal(adminRefusal({ remoteAddress: '127.0.0.1', identities: null }, tcp, ['ops']), null);
  assert.equal(adminRefusal({ remoteAddress: '127.0.0.1', identities: null }, tcp, null), null);
  assert.match(adminRefusal(remote(['ops']), tcp, null) ?? '', /loopback only .*10\.1\.2\.3 refused/);
  assert.equal(adminRefusal(remote(['ops']), tcp, ['backup', 'ops']), null);
  assert.match(adminRefusal(remote(null), tcp, ['ops']) ?? '', /10\.1\.2\.3 presented none/);
  assert.match(
    adminRefusal(remote(null, 'UNABLE_TO_VERIFY_LEAF_SIGNATURE'), tcp, ['ops']) ?? '',
    /presented one that does not \(UNABLE_TO_VERIFY_LEAF_SIGNATURE\)/,
  );
  assert.match(
    adminRefusal(remote(['dr1']), tcp, ['ops']) ?? '',
    /names dr1, not one of http\.tls\.admins \(ops\)/,
  );
});

test("a TLS peer's identities count only when its certificate chains to the site's CA", async () => {
  const dir = mkdtempSync(join(tmpdir(), 'cyclerep-admin-tls-'));
  try {
    const site = makeSiteCertificate(join(dir, 'ca'), 'dr1');
    const ops = makeSiteCertificate(join(dir, 'ca'), 'ops');
    const stranger = makeSiteCertificate(join(dir, 'other-ca'), 'ops');
    const ca = readFileSync(ensureCa(join(dir, 'ca')));
    const peers: AdminPeer[] = [];
    const server = createTlsServer(
      {
        cert: readFileSync(site.cert),
        key: readFileSync(site.key),
        ca,
        requestCert: true,
        rejectUnauthorized: false,
      },
      (socket: TLSSocket) => {
        peers.push(adminPeerOf(socket));
        socket.end();
      },
    );
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    const port = (server.address() as { port: number }).port;
    const handshake = (client?: { cert: string; key: string }) =>
      new Promise<void>((resolve, reject) => {
        const socket = tlsConnect({
          port,
          host: '127.0.0.1',
          ca,
          ...(client ? { cert: readFileSync(client.cert), key: readFileSync(client.key) } : {}),
        });
        socket.on('error', reject);
        socket.on('close', () => resolve());
        socket.resume();
      });
    await handshake(ops);
    await handshake(stranger);
    await handshake();
    server.close();
    assert.deepEqual(peers[0], { remoteAddress: '127.0.0.1', identities: ['ops'] });
    assert.equal(peers[1]?.identities, null, 'a certificate of another CA names nobody');
    assert.match(peers[1]?.certificateProblem ?? '', /./);
    assert.equal(peers[2]?.identities, null);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('with http.tls the listener serves https; status needs no client certificate, the CLI client reaches it', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'cyclerep-admin-https-'));
  try {
    const site = makeSiteCertificate(join(dir, 'ca'), 'dr1');
    const ca = ensureCa(join(dir, 'ca'));
    const verbs: string[] = [];
    const server = await startStatusServer(
      '127.0.0.1:0',
      () => ({ role: 'secondary' }),
      undefined,
      undefined,
      async (verb) => {
        verbs.push(verb);
        return { status: 202, body: { ok: true } };
      },
      {
        context: { cert: readFileSync(site.cert), key: readFileSync(site.key), ca: readFileSync(ca) },
        admins: ['ops'],
      },
    );
    try {
      const port = (server.address() as { port: number }).port;
      const plain = { ca: null, cert: null, key: null, peer: null };
      await assert.rejects(
        siteRequest('GET', `https://127.0.0.1:${port}/status`, plain, 5000),
        /certificate/,
      );
      const trusting = { ...plain, ca, peer: 'dr1' };
      const status = await siteRequest('GET', `https://127.0.0.1:${port}/status`, trusting, 5000);
      assert.deepEqual(status, { status: 200, body: { role: 'secondary' } });
      await assert.rejects(
        siteRequest('GET', `https://127.0.0.1:${port}/status`, { ...trusting, peer: 'dr2' }, 5000),
        /names dr1, not dr2/,
      );
      const posted = await siteRequest('POST', `https://127.0.0.1:${port}/admin/promote`, trusting, 5000);
      assert.equal(posted.status, 202, 'loopback is still this machine');
      assert.deepEqual(verbs, ['promote']);
    } finally {
      await new Promise((resolve) => server.close(resolve));
    }
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
