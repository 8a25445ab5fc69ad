// Proves NBD_OPT_STARTTLS with real clients: with `nbd.tls: required`, qemu-io (tls-creds-x509)
// writes and reads back over TLS 1.3 after checking the server's certificate against the CA, and
// nbdinfo does the same with an nbds:// URI; a client without TLS is refused politely, with the
// spec's NBD_REP_ERR_TLS_REQD and a message; a client trusting another CA refuses the server.
import assert from 'node:assert/strict';
import { copyFileSync, mkdirSync, writeFileSync } from 'node:fs';
import { after, before, test } from 'node:test';
import { ensureCa, makeSiteCertificate } from '../../src/ops/certs.ts';
import { freePort, type Site, Workspace } from '../integration/harness.ts';
import { run } from './nbd-group.ts';

const workspace = new Workspace();
let site: Site;
let port = 0;

/** A qemu tls-creds directory trusting the CA in `caDirectory`. */
function clientCreds(name: string, caDirectory: string): string {
  const directory = workspace.path(name);
  mkdirSync(directory, { recursive: true });
  copyFileSync(`${caDirectory}/ca.crt`, `${directory}/ca-cert.pem`);
  return directory;
}

before(async () => {
  const pki = workspace.path('pki');
  ensureCa(pki);
  const { cert, key } = makeSiteCertificate(pki, 'primary');
  ensureCa(workspace.path('other-pki'), 'another CA');
  port = await freePort();
  const config = workspace.path('primary.yaml');
  writeFileSync(
    config,
    [
      'group: nbdtls',
      'role: primary',
      `dataDir: ${workspace.path('primary')}`,
      'volumes:',
      '  - { name: vol0, size: 16MiB }',
      `nbd: { listen: 127.0.0.1:${port}, tls: required }`,
      `tls: { cert: ${cert}, key: ${key}, ca: ${pki}/ca.crt, peers: [dr1] }`,
    ].join('\n'),
  );
  site = workspace.startPrimary(config);
  await site.waitForEvent('nbd-listening');
});

after(async () => {
  await site.stop();
  await workspace.cleanup();
});

const tlsImage = (creds: string) => [
  '--object',
  `tls-creds-x509,id=tls0,endpoint=client,dir=${creds}`,
  '--image-opts',
  `driver=nbd,host=127.0.0.1,port=${port},export=vol0,tls-creds=tls0`,
];

test('qemu-io writes and reads back over STARTTLS, checking the server against the CA', async () => {
  const creds = clientCreds('qemu', workspace.path('pki'));
  const result = run('qemu-io', [
    ...tlsImage(creds),
    '-c',
    'write -P 0x5a 1M 256k',
    '-c',
    'read -P 0x5a 1M 256k',
  ]);
  assert.equal(result.status, 0, result.stdout + result.stderr);
  assert.doesNotMatch(result.stdout, /Pattern verification failed/);
  const info = run('nbdinfo', [`nbds://127.0.0.1:${port}/vol0?tls-certificates=${creds}`]);
  assert.equal(info.status, 0, info.stderr);
  assert.match(info.stdout, /export-size: 16777216/);
  assert.equal((await site.waitForEvent('nbd-tls')).version, 'TLSv1.3');
});

test('a client without TLS is refused with NBD_REP_ERR_TLS_REQD and a message', () => {
  const plain = run('qemu-io', ['-f', 'raw', `nbd://127.0.0.1:${port}/vol0`, '-c', 'read 0 4k']);
  assert.notEqual(plain.status, 0);
  assert.match(plain.stdout + plain.stderr, /requires NBD_OPT_STARTTLS/);
  const info = run('nbdinfo', [`nbd://127.0.0.1:${port}/vol0`]);
  assert.notEqual(info.status, 0);
});

test('a client that trusts another CA refuses the server: no data moves', () => {
  const creds = clientCreds('wrong-ca', workspace.path('other-pki'));
  const result = run('qemu-io', [...tlsImage(creds), '-c', 'read 0 4k']);
  assert.notEqual(result.status, 0);
  assert.match(result.stdout + result.stderr, /certificate|verif|trust|issuer/i);
});
