// Proves the TLS site link with real processes and real TLS sockets on 127.0.0.1: replication runs
// over TLS 1.3 with mutual authentication; a primary whose certificate chains to another CA, one
// whose certificate expired, and one whose identity is not allowed are refused with the reason on
// both sides and nothing journaled; the primary refuses a secondary of the wrong identity; a plain
// TCP peer gets nowhere; and an authenticated primary of another group is still refused.
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { copyFileSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { connect } from 'node:net';
import { after, before, test } from 'node:test';
import { ensureCa, makeSiteCertificate } from '../../src/ops/certs.ts';
import { runCyclerep, type Site, sleep, volumeSizes, Workspace, waitForStatus } from './harness.ts';
import { journalSegments, waitForEvents } from './journal-files.ts';

const pki = new Workspace();
const workspaces: Workspace[] = [];
let ca = '';

before(async () => {
  ca = ensureCa(pki.path('ca'));
  for (const name of ['primary', 'dr1', 'dr2', 'rogue', 'ops']) makeSiteCertificate(pki.path('ca'), name);
  // The same CA, a certificate for "primary" that expires at once.
  mkdirSync(pki.path('expired'), { recursive: true });
  for (const file of ['ca.crt', 'ca.key']) copyFileSync(pki.path('ca', file), pki.path('expired', file));
  makeSiteCertificate(pki.path('expired'), 'primary', 0);
  makeSiteCertificate(pki.path('expired'), 'dr1', 0);
  // Another CA altogether, with its own "primary".
  ensureCa(pki.path('other'), 'some other CA');
  makeSiteCertificate(pki.path('other'), 'primary');
  await sleep(1100); // the certificate made with -days 0 is past its notAfter from here on
});

after(async () => {
  for (const workspace of workspaces) await workspace.cleanup();
  await pki.cleanup();
});

function tlsSection(directory: string, name: string, peers: string[], caPath = ca): string {
  return `tls: { cert: ${pki.path(directory, `${name}.crt`)}, key: ${pki.path(directory, `${name}.key`)}, ca: ${caPath}, peers: [${peers.join(', ')}] }`;
}

/**
 * dr1 journaled nothing: checked once it refused the primary a second time, so the first attempt
 * was handled to its end and anything it would have journaled would be on disk.
 */
async function assertNothingJournaled(workspace: Workspace, dr1: Site, reason: RegExp): Promise<void> {
  await waitForEvents(dr1, 'primary-refused', 2, reason);
  assert.deepEqual(journalSegments(workspace, 'dr1'), [], 'nothing was journaled at the refusing secondary');
}

/**
 * Pauses the load and waits until dr1 stored everything: the pairs stop with a short settle time
 * (LOAD_SETTLE_MS) for the refusal tests, so a test that compares images waits for the state itself.
 */
async function settle(load: Site, httpPort: number): Promise<void> {
  load.kill('SIGUSR2');
  await load.waitForOutput('"paused"');
  await waitForStatus(httpPort, (s) => (s.secondaries as { lagBytes: number }[])[0]?.lagBytes === 0, 60_000);
}

/** Waits until dr1's journal holds a segment (it does while it is fed cycles). */
async function waitForJournal(workspace: Workspace): Promise<void> {
  const deadline = Date.now() + 30_000;
  while (journalSegments(workspace, 'dr1').length === 0) {
    assert.ok(Date.now() < deadline, 'dr1 journaled nothing in 30 s while accepted');
    await sleep(20);
  }
}

/**
 * The first refusal whose reason matches: a primary opens several connections, and those it drops
 * itself once the link failed show up as hang-ups.
 */
async function refusal(site: Site, pattern: RegExp): Promise<Record<string, unknown>> {
  const deadline = Date.now() + 15_000;
  for (;;) {
    const found = site.events('primary-refused').find((event) => pattern.test(String(event.reason)));
    if (found) return found;
    if (Date.now() > deadline)
      throw new Error(`no primary-refused matching ${pattern}: ${site.stderr.slice(-3000)}`);
    await sleep(50);
  }
}

/** dr1 with its certificate, allowing only "primary", and a load primary with the given TLS section. */
async function pair(primaryTls: string, options: { secondaryTls?: string; secondaryGroup?: string } = {}) {
  const workspace = new Workspace();
  workspaces.push(workspace);
  const secondary = await workspace.secondaryConfig('dr1', {
    group: options.secondaryGroup,
    volumes: volumeSizes,
    extra: options.secondaryTls ?? tlsSection('ca', 'dr1', ['primary']),
  });
  const primary = await workspace.primaryConfig({
    secondaries: [{ name: 'dr1', port: secondary.port }],
    extra: primaryTls,
  });
  const dr1 = workspace.startSecondary(secondary.path);
  await dr1.waitForEvent('secondary-started');
  const load = workspace.startLoadPrimary(primary.path, { LOAD_SETTLE_MS: '200' });
  return { workspace, secondary, primary, dr1, load };
}

test('replication runs over TLS 1.3 with mutual authentication and converges byte for byte', {
  timeout: 90_000,
}, async () => {
  const { workspace, secondary, primary, dr1, load } = await pair(tlsSection('ca', 'primary', ['dr1']));
  assert.equal((await dr1.waitForEvent('link-tls')).version, 'TLSv1.3');
  await waitForStatus(
    primary.httpPort,
    (s) => (s.secondaries as { link: string }[])[0]?.link === 'streaming',
  );
  await load.waitForWrites(300);
  // The journal check of the refusal tests can see: here, where the primary is accepted, it does.
  await waitForJournal(workspace);
  // A plain TCP peer speaking the frame protocol gets no further than the TLS handshake.
  await new Promise<void>((resolve) => {
    const socket = connect(secondary.port, '127.0.0.1', () =>
      socket.write(Buffer.from('CYRPnot a tls client')),
    );
    socket.on('error', () => resolve());
    socket.on('close', () => resolve());
  });
  const plain = await dr1.waitForEvent('primary-refused');
  assert.equal(plain.code, 'tls');
  await settle(load, primary.httpPort);
  assert.equal(await load.stop(), 0);
  assert.equal(await dr1.stop(), 0);
  workspace.assertReplica('dr1');
});

test('a primary whose certificate chains to another CA is refused on both sides and nothing is journaled', {
  timeout: 60_000,
}, async () => {
  const { workspace, dr1, load } = await pair(tlsSection('other', 'primary', ['dr1'], ca));
  const refused = await refusal(dr1, /certificate of primary not trusted: UNABLE_TO_VERIFY_LEAF_SIGNATURE/);
  assert.equal(refused.code, 'peer-untrusted');
  // A loaded machine may first fail a connect on time: wait for the failure this test is about.
  await waitForEvents(load, 'link-failed', 1, /ended the TLS session before any frame/);
  await assertNothingJournaled(workspace, dr1, /UNABLE_TO_VERIFY_LEAF_SIGNATURE/);
  await load.stop();
  await dr1.stop();
});

test('an expired certificate is refused, naming the expiry', { timeout: 60_000 }, async () => {
  const { workspace, dr1, load } = await pair(tlsSection('expired', 'primary', ['dr1']));
  const refused = await refusal(dr1, /certificate of primary not trusted: CERT_HAS_EXPIRED/);
  assert.equal(refused.code, 'peer-untrusted');
  await assertNothingJournaled(workspace, dr1, /CERT_HAS_EXPIRED/);
  await load.stop();
  await dr1.stop();
});

test('a secondary presenting an expired certificate is refused by the primary, naming the expiry', {
  timeout: 60_000,
}, async () => {
  const { dr1, load } = await pair(tlsSection('ca', 'primary', ['dr1']), {
    secondaryTls: tlsSection('expired', 'dr1', ['primary']),
  });
  // A loaded machine may first fail a connect on time: wait for the failure this test is about.
  await waitForEvents(load, 'link-failed', 1, /certificate has expired/);
  await load.stop();
  await dr1.stop();
});

test('identities not among the peers are refused: a rogue primary at the secondary, a wrong secondary at the primary', {
  timeout: 60_000,
}, async () => {
  const rogue = await pair(tlsSection('ca', 'rogue', ['dr1']));
  const refused = await rogue.dr1.waitForEvent('primary-refused');
  assert.equal(refused.code, 'peer-identity');
  assert.match(refused.reason as string, /identity rogue is not among the allowed peers \(primary\)/);
  await assertNothingJournaled(rogue.workspace, rogue.dr1, /identity rogue/);
  await rogue.load.stop();
  await rogue.dr1.stop();
  // dr1's process presents dr2's certificate; the primary allows only dr1.
  const wrong = await pair(tlsSection('ca', 'primary', ['dr1']), {
    secondaryTls: tlsSection('ca', 'dr2', ['primary']),
  });
  // A loaded machine may first fail a connect on time: wait for the failure this test is about.
  await waitForEvents(
    wrong.load,
    'link-failed',
    1,
    /secondary refused: identity dr2 is not among the allowed peers \(dr1\)/,
  );
  await wrong.load.stop();
  await wrong.dr1.stop();
});

test('a secondary of group "other" refuses an authenticated primary of group "it"', {
  timeout: 60_000,
}, async () => {
  const { workspace, dr1, load } = await pair(tlsSection('ca', 'primary', ['dr1']), {
    secondaryGroup: 'other',
  });
  const refused = await dr1.waitForEvent('primary-refused');
  assert.equal(refused.code, 'group-mismatch');
  await assertNothingJournaled(workspace, dr1, /group "it" offered/);
  await load.stop();
  await dr1.stop();
});

/** A real primary process whose certificate files hold an expired certificate, refused by dr1. */
async function refusedForExpiry() {
  const workspace = new Workspace();
  workspaces.push(workspace);
  const cert = workspace.path('primary.crt');
  const key = workspace.path('primary.key');
  copyFileSync(pki.path('expired', 'primary.crt'), cert);
  copyFileSync(pki.path('expired', 'primary.key'), key);
  const secondary = await workspace.secondaryConfig('dr1', {
    volumes: volumeSizes,
    extra: tlsSection('ca', 'dr1', ['primary']),
  });
  const primary = await workspace.primaryConfig({
    secondaries: [{ name: 'dr1', port: secondary.port }],
    extra: `tls: { cert: ${cert}, key: ${key}, ca: ${ca}, peers: [dr1] }`,
  });
  const dr1 = workspace.startSecondary(secondary.path);
  await dr1.waitForEvent('secondary-started');
  const site = workspace.startPrimary(primary.path);
  await refusal(dr1, /CERT_HAS_EXPIRED/);
  return { cert, key, primary, dr1, site };
}

test('a renewed certificate is taken on SIGHUP, without a restart', { timeout: 60_000 }, async () => {
  const { cert, key, primary, dr1, site } = await refusedForExpiry();
  copyFileSync(pki.path('ca', 'primary.crt'), cert);
  copyFileSync(pki.path('ca', 'primary.key'), key);
  site.kill('SIGHUP');
  await site.waitForEvent('tls-reloaded');
  await waitForStatus(
    primary.httpPort,
    (s) => (s.secondaries as { link: string }[])[0]?.link === 'streaming',
  );
  assert.equal(await site.stop(), 0);
  assert.equal(await dr1.stop(), 0);
});

test('a certificate file replaced on disk is taken without a signal', { timeout: 60_000 }, async () => {
  const { cert, key, primary, dr1, site } = await refusedForExpiry();
  await sleep(1100); // a new modification time, whatever the file system's resolution
  copyFileSync(pki.path('ca', 'primary.key'), key);
  copyFileSync(pki.path('ca', 'primary.crt'), cert);
  await site.waitForEvent('tls-reloaded', 20_000);
  await waitForStatus(
    primary.httpPort,
    (s) => (s.secondaries as { link: string }[])[0]?.link === 'streaming',
  );
  assert.equal(await site.stop(), 0);
  assert.equal(await dr1.stop(), 0);
});

/** A hex key file of `bytes` random bytes, mode 0600. */
function keyFile(workspace: Workspace, name: string, bytes = 32): string {
  const path = workspace.path(name);
  writeFileSync(path, `${randomBytes(bytes).toString('hex')}\n`, { mode: 0o600 });
  return path;
}

test('pre-shared-key mode: replication over TLS 1.3 with a shared key; a wrong key or identity is refused', {
  timeout: 90_000,
}, async () => {
  const keys = new Workspace();
  workspaces.push(keys);
  const shared = keyFile(keys, 'link.psk');
  const good = await pair(`psk: { keyFile: ${shared}, identity: primary }`, {
    secondaryTls: `psk: { keyFile: ${shared}, peers: [primary] }`,
  });
  assert.equal((await good.dr1.waitForEvent('link-tls')).mode, 'pre-shared key');
  await good.load.waitForWrites(300);
  await settle(good.load, good.primary.httpPort);
  assert.equal(await good.load.stop(), 0);
  assert.equal(await good.dr1.stop(), 0);
  good.workspace.assertReplica('dr1');

  const other = keyFile(keys, 'other.psk');
  const wrongKey = await pair(`psk: { keyFile: ${other}, identity: primary }`, {
    secondaryTls: `psk: { keyFile: ${shared}, peers: [primary] }`,
  });
  await refusal(wrongKey.dr1, /wrong pre-shared key/);
  await assertNothingJournaled(wrongKey.workspace, wrongKey.dr1, /wrong pre-shared key/);
  await wrongKey.load.stop();
  await wrongKey.dr1.stop();

  const stranger = await pair(`psk: { keyFile: ${shared}, identity: stranger }`, {
    secondaryTls: `psk: { keyFile: ${shared}, peers: [primary] }`,
  });
  const refused = await refusal(stranger.dr1, /identity stranger is not among the allowed peers \(primary\)/);
  assert.equal(refused.code, 'peer-identity');
  await assertNothingJournaled(stranger.workspace, stranger.dr1, /identity stranger/);
  await stranger.load.stop();
  await stranger.dr1.stop();
});

test('http.tls: the status listener serves https with the site certificate; the CLI reads it and sends admin verbs with a client certificate', {
  timeout: 60_000,
}, async () => {
  const workspace = new Workspace();
  workspaces.push(workspace);
  const secondary = await workspace.secondaryConfig('dr1', {
    volumes: volumeSizes,
    extra: tlsSection('ca', 'dr1', ['primary']),
  });
  const plainHttp = `http: { listen: 127.0.0.1:${secondary.httpPort} }`;
  const config = readFileSync(secondary.path, 'utf8');
  assert.ok(config.includes(plainHttp));
  writeFileSync(
    secondary.path,
    config.replace(plainHttp, `http: { listen: 127.0.0.1:${secondary.httpPort}, tls: { admins: [ops] } }`),
  );
  const dr1 = workspace.startSecondary(secondary.path);
  await dr1.waitForEvent('secondary-started');
  const url = `https://127.0.0.1:${secondary.httpPort}`;
  const trust = ['--ca', ca, '--peer', 'dr1'];
  const read = await runCyclerep(['status', '--json', '--url', url, ...trust]);
  assert.equal(read.status, 0, read.output);
  assert.equal((JSON.parse(read.output) as { role: string }).role, 'secondary');
  const untrusted = await runCyclerep(['status', '--url', url]);
  assert.notEqual(untrusted.status, 0);
  assert.match(untrusted.output, /cannot read .*certificate/);
  // A verb reaches the site (it answers for itself: nothing to promote from) with the admin's certificate.
  const promote = await runCyclerep([
    'promote',
    '--url',
    url,
    ...trust,
    '--cert',
    pki.path('ca', 'ops.crt'),
    '--key',
    pki.path('ca', 'ops.key'),
    '--timeout-seconds',
    '5',
  ]);
  assert.equal(promote.status, 6, promote.output);
  assert.match(promote.output, /refused \(HTTP 409\)/);
  assert.doesNotMatch(promote.output, /loopback only|client certificate/);
  const halfCertificate = await runCyclerep(['promote', '--url', url, '--cert', pki.path('ca', 'ops.crt')]);
  assert.equal(halfCertificate.status, 2, halfCertificate.output);
  assert.match(halfCertificate.output, /--cert and --key go together/);
  assert.equal(await dr1.stop(), 0);
});
