// Proves configuration validation: the DESIGN.md examples load with their defaults, sizes parse as
// people write them, and every kind of mistake is refused with a message naming the file and key.
import assert from 'node:assert/strict';
import { chmodSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import { ConfigError } from '../../src/core/errors.ts';
import { configInRole, loadConfig, loadConfigFile, validateConfig } from '../../src/ops/config.ts';
import { formatSize, parseSize } from '../../src/ops/sizes.ts';

const primaryYaml = `
group: demo
role: primary
dataDir: ./var/demo/primary
blockSize: 4KiB
volumes:
  - { name: data, size: 1GiB }
  - { name: log, size: 256MiB }
cycle: { intervalMinMs: 1000, queuedMax: 4 }
ack: immediate
journal: { capacity: 4GiB }
nbd: { listen: 127.0.0.1:10809 }
http: { listen: 127.0.0.1:9180 }
secondaries:
  - { name: dr1, address: 127.0.0.1:7400 }
`;

const secondaryYaml = `
group: demo
role: secondary
name: dr1
dataDir: ./var/demo/dr1
listen: 127.0.0.1:7400
nbd: { listen: 127.0.0.1:10810 }
http: { listen: 127.0.0.1:9181 }
`;

function withFile(text: string, check: (path: string) => void): void {
  const dir = mkdtempSync(join(tmpdir(), 'cyclerep-config-'));
  try {
    const path = join(dir, 'site.yaml');
    writeFileSync(path, text);
    check(path);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

function refused(text: string, pattern: RegExp): void {
  withFile(text, (path) => {
    assert.throws(
      () => loadConfig(path),
      (error: unknown) =>
        error instanceof ConfigError && error.message.startsWith(path) && pattern.test(error.message),
    );
  });
}

test('sizes parse as written in configs and print back', () => {
  assert.equal(parseSize(4096), 4096);
  assert.equal(parseSize('64KiB'), 65536);
  assert.equal(parseSize('1GiB'), 1024 ** 3);
  assert.equal(parseSize('1.5MiB'), 1.5 * 1024 ** 2);
  assert.equal(parseSize('12 apples'), null);
  assert.equal(parseSize(-1), null);
  assert.equal(formatSize(256 * 1024 ** 2), '256MiB');
});

test('the DESIGN.md primary example loads, with defaults filled in', () => {
  withFile(primaryYaml, (path) => {
    const config = loadConfig(path);
    assert.equal(config.role, 'primary');
    if (config.role !== 'primary') return;
    assert.equal(config.blockSize, 4096);
    assert.deepEqual(config.volumes[1], { name: 'log', size: 256 * 1024 ** 2 });
    assert.equal(config.journal.capacity, 4 * 1024 ** 3);
    assert.equal(config.journal.segmentSize, 64 * 1024 ** 2);
    assert.equal(config.secondaries[0]?.connections, 1);
    assert.equal(config.link.heartbeatMs, 1000);
  });
});

test('the DESIGN.md secondary example loads without volumes', () => {
  withFile(secondaryYaml, (path) => {
    const config = loadConfig(path);
    assert.equal(config.role, 'secondary');
    assert.equal(config.volumes, undefined);
  });
});

test('a value of the wrong type is refused naming the key', () => {
  refused(
    primaryYaml.replace('intervalMinMs: 1000', 'intervalMinMs: fast'),
    /cycle\.intervalMinMs: expected number, got "fast"/,
  );
});

test('an unknown key is refused naming it and where it is', () => {
  refused(primaryYaml.replace('queuedMax: 4', 'queuedMax: 4, maxQueue: 5'), /cycle: unknown key "maxQueue"/);
  refused(
    primaryYaml.replace('intervalMinMs: 1000, queuedMax: 4', 'minMs: 1000, maxQueued: 4'),
    /cycle: unknown keys "minMs" \(renamed intervalMinMs\), "maxQueued" \(renamed queuedMax\)/,
  );
  refused(`${primaryYaml}colour: blue\n`, /\(top level\): unknown key "colour"/);
});

test('a volume without a size is refused naming the volume', () => {
  refused(primaryYaml.replace('{ name: log, size: 256MiB }', '{ name: log }'), /volumes\.1\.size: /);
});

test('a size that is not a size, or not a multiple of the block size, is refused', () => {
  refused(primaryYaml.replace('size: 1GiB', 'size: huge'), /volumes\.0\.size: expected a size/);
  refused(
    primaryYaml.replace('size: 1GiB', 'size: 5000'),
    /volumes\.0\.size: 5000 is not a positive multiple of blockSize 4096/,
  );
  refused(primaryYaml.replace('blockSize: 4KiB', 'blockSize: 3000'), /blockSize: 3000 is not a power of two/);
});

test('a missing role, a bad ack mode, duplicate names and bad addresses are refused', () => {
  refused(primaryYaml.replace('role: primary', ''), /role: expected "primary" or "secondary"/);
  refused(primaryYaml.replace('ack: immediate', 'ack: eventually'), /ack: /);
  refused(primaryYaml.replace('name: log', 'name: data'), /volumes: two volumes share a name/);
  refused(
    primaryYaml.replace('address: 127.0.0.1:7400', 'address: nowhere'),
    /secondaries\.0\.address: expected host:port/,
  );
});

test('YAML that does not parse, or a duplicate key, is refused with the file named', () => {
  refused('group: [unclosed', /not valid YAML/);
  refused(`${primaryYaml}group: again\n`, /not valid YAML/);
});

test('a file that cannot be read is a ConfigError naming the path', () => {
  assert.throws(() => loadConfig('/nonexistent/cyclerep.yaml'), /\/nonexistent\/cyclerep.yaml: cannot read/);
});

test('validateConfig names its source in every message', () => {
  assert.throws(
    () => validateConfig({ role: 'secondary', group: 'g' }, 'inline'),
    /inline: dataDir: missing\ninline: name: missing/,
  );
});

test('the nbd section takes its bounds, with defaults, and refuses values past them', () => {
  withFile(primaryYaml, (path) => {
    const config = loadConfig(path);
    assert.deepEqual(config.nbd, {
      listen: '127.0.0.1:10809',
      connectionsMax: 64,
      handshakesMax: 16,
      handshakeTimeoutMs: 10_000,
      requestsPerConnectionMax: 64,
      requestsInFlightMax: 256,
      requestBytesMax: 32 * 1024 * 1024,
      requestBytesInFlightMax: 256 * 1024 * 1024,
      requestPayloadTimeoutMs: 30_000,
      replyBytesQueuedMax: 64 * 1024 * 1024,
      replyTimeoutMs: 30_000,
      tls: 'off',
    });
    assert.deepEqual(config.http, { listen: '127.0.0.1:9180', connectionsMax: 64, requestTimeoutMs: 5000 });
  });
  const nbd = (section: string) =>
    primaryYaml.replace('nbd: { listen: 127.0.0.1:10809 }', `nbd: { listen: 127.0.0.1:10809, ${section} }`);
  refused(nbd('requestsInFlightMax: 0'), /nbd\.requestsInFlightMax: /);
  refused(nbd('connectionsMax: 5000'), /nbd\.connectionsMax: /);
  refused(nbd('requestBytesMax: 64MiB'), /nbd\.requestBytesMax: between 4KiB and 32MiB/);
  withFile(nbd('requestBytesMax: 32MiB, requestsInFlightMax: 65536'), (path) => {
    assert.equal(loadConfig(path).nbd?.requestsInFlightMax, 65536);
  });
  refused(nbd('handshakesMax: 0'), /nbd\.handshakesMax: /);
  refused(nbd('handshakeTimeoutMs: 99'), /nbd\.handshakeTimeoutMs: /);
  refused(nbd('requestPayloadTimeoutMs: 600001'), /nbd\.requestPayloadTimeoutMs: /);
  refused(nbd('replyTimeoutMs: fast'), /nbd\.replyTimeoutMs: expected number/);
  refused(nbd('requestBytesInFlightMax: 4MiB'), /nbd\.requestBytesInFlightMax: between 8MiB and 64GiB/);
  refused(nbd('replyBytesQueuedMax: 32KiB'), /nbd\.replyBytesQueuedMax: between 64KiB and 4GiB/);
  refused(
    nbd('requestBytesInFlightMax: 16MiB'),
    /nbd\.requestBytesInFlightMax: below nbd\.requestBytesMax, so the largest request could never be served/,
  );
  withFile(
    nbd('handshakeTimeoutMs: 100, requestBytesInFlightMax: 32MiB, replyBytesQueuedMax: 64KiB'),
    (path) => {
      const config = loadConfig(path).nbd;
      assert.deepEqual(
        [config?.handshakeTimeoutMs, config?.requestBytesInFlightMax, config?.replyBytesQueuedMax],
        [100, 32 * 1024 ** 2, 64 * 1024],
      );
    },
  );
  const http = (section: string) =>
    primaryYaml.replace('http: { listen: 127.0.0.1:9180 }', `http: { listen: 127.0.0.1:9180, ${section} }`);
  refused(http('connectionsMax: 0'), /http\.connectionsMax: /);
  refused(http('requestTimeoutMs: 50'), /http\.requestTimeoutMs: /);
  refused(http('keepAlive: true'), /http: unknown key "keepAlive"/);
});

test('a site link off this machine needs a tls section or insecure: true; tls files must be readable', () => {
  const remote = primaryYaml.replace('address: 127.0.0.1:7400', 'address: 192.0.2.10:7400');
  refused(remote, /secondaries\.0\.address: 192\.0\.2\.10:7400 leaves this machine without TLS/);
  withFile(`${remote}insecure: true\n`, (path) => assert.equal(loadConfig(path).insecure, true));
  refused(
    secondaryYaml.replace('listen: 127.0.0.1:7400', 'listen: 0.0.0.0:7400'),
    /listen: 0\.0\.0\.0:7400 leaves this machine without TLS/,
  );
  refused(
    `${remote}tls: { cert: /nonexistent/site.crt, key: /nonexistent/site.key, ca: /nonexistent/ca.crt, peers: [dr1] }\n`,
    /tls\.cert: cannot read \/nonexistent\/site\.crt/,
  );
  refused(`${primaryYaml}tls: { cert: a, key: b, ca: c, peers: [] }\n`, /tls\.peers: /);
  withFile(primaryYaml, (path) =>
    assert.equal(loadConfig(path).tls, undefined, 'loopback without tls loads'),
  );
});

test('nbd.allow takes addresses and subnets; nbd.tls needs the tls section', () => {
  const nbd = (section: string) =>
    primaryYaml.replace('nbd: { listen: 127.0.0.1:10809 }', `nbd: { listen: 127.0.0.1:10809, ${section} }`);
  refused(nbd('allow: [somewhere]'), /nbd\.allow\.0: expected an IP address or a subnet/);
  refused(nbd('allow: []'), /nbd\.allow: /);
  withFile(nbd('allow: [127.0.0.1, 10.0.0.0/8, "2001:db8::/32"]'), (path) =>
    assert.deepEqual(loadConfig(path).nbd?.allow, ['127.0.0.1', '10.0.0.0/8', '2001:db8::/32']),
  );
  refused(nbd('tls: required'), /nbd\.tls: required needs the tls section/);
});

test('http.tls names the admins allowed from another machine and needs the tls section', () => {
  const http = (section: string) =>
    primaryYaml.replace('http: { listen: 127.0.0.1:9180 }', `http: { listen: 127.0.0.1:9180, ${section} }`);
  refused(http('tls: { admins: [ops] }'), /http\.tls: needs the tls section/);
  refused(http('tls: { admins: [] }'), /http\.tls\.admins: /);
  refused(http('tls: { admin: [ops] }'), /http\.tls: .*admin/);
});

test('a tls key that does not match its certificate is refused at load, naming both files', async () => {
  const { ensureCa, makeSiteCertificate } = await import('../../src/ops/certs.ts');
  const dir = mkdtempSync(join(tmpdir(), 'cyclerep-tls-'));
  try {
    const ca = ensureCa(dir);
    const a = makeSiteCertificate(dir, 'a');
    const b = makeSiteCertificate(dir, 'b');
    withFile(`${primaryYaml}tls: { cert: ${a.cert}, key: ${a.key}, ca: ${ca}, peers: [dr1] }\n`, (path) =>
      assert.equal(loadConfig(path).tls?.peers[0], 'dr1'),
    );
    refused(
      `${primaryYaml}tls: { cert: ${a.cert}, key: ${b.key}, ca: ${ca}, peers: [dr1] }\n`,
      /tls: .*a\.crt with .*b\.key: .*key values mismatch/,
    );
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('a tls key file readable by group or others is refused at load, naming the file and its mode', async () => {
  const { ensureCa, makeSiteCertificate } = await import('../../src/ops/certs.ts');
  const dir = mkdtempSync(join(tmpdir(), 'cyclerep-tls-'));
  try {
    const ca = ensureCa(dir);
    const site = makeSiteCertificate(dir, 'a');
    const yaml = `${primaryYaml}tls: { cert: ${site.cert}, key: ${site.key}, ca: ${ca}, peers: [dr1] }\n`;
    chmodSync(site.key, 0o640);
    refused(yaml, new RegExp(`tls\\.key: ${site.key} is readable by others \\(mode 640\\); chmod 600 it`));
    chmodSync(site.key, 0o644);
    refused(yaml, /tls\.key: .*a\.key is readable by others \(mode 644\)/);
    chmodSync(site.key, 0o600);
    withFile(yaml, (path) => assert.equal(loadConfig(path).tls?.key, site.key));
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('psk: the key file must be private, hex, 32 to 64 bytes; roles need identity or peers', () => {
  const dir = mkdtempSync(join(tmpdir(), 'cyclerep-psk-'));
  try {
    const key = join(dir, 'link.psk');
    writeFileSync(key, `${'ab'.repeat(32)}\n`, { mode: 0o600 });
    withFile(`${primaryYaml}psk: { keyFile: ${key}, identity: primary }\n`, (path) =>
      assert.equal(loadConfig(path).psk?.identity, 'primary'),
    );
    refused(`${primaryYaml}psk: { keyFile: ${key} }\n`, /psk\.identity: missing/);
    refused(`${secondaryYaml}psk: { keyFile: ${key} }\n`, /psk\.peers: missing/);
    chmodSync(key, 0o644);
    refused(
      `${primaryYaml}psk: { keyFile: ${key}, identity: primary }\n`,
      /psk\.keyFile: .* readable by others \(mode 644\)/,
    );
    writeFileSync(key, 'ab'.repeat(8), { mode: 0o600 });
    chmodSync(key, 0o600);
    refused(
      `${primaryYaml}psk: { keyFile: ${key}, identity: primary }\n`,
      /a key of 8 bytes; 32 to 64 are accepted/,
    );
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test("a secondary's receive journal segments default to 64MiB and must hold the largest record", () => {
  withFile(secondaryYaml, (path) => {
    const config = loadConfig(path);
    assert.equal(config.role === 'secondary' && config.journal.segmentSize, 64 * 1024 ** 2);
  });
  withFile(`${secondaryYaml}journal: { segmentSize: 16MiB }\n`, (path) => {
    assert.equal(loadConfig(path).journal.segmentSize, 16 * 1024 ** 2);
  });
  refused(`${secondaryYaml}journal: { segmentSize: 1MiB }\n`, /journal\.segmentSize: at least 8388608 bytes/);
  // A capacity is kept for when the site is promoted (docs/failover.md); its form is checked now.
  refused(`${secondaryYaml}journal: { capacity: lots }\n`, /journal\.capacity: expected a size/);
  refused(`${secondaryYaml}journal: { segments: 4 }\n`, /journal: unknown key "segments"/);
});

test('a secondary stages its resyncs unless told resync.staging: in-place; nothing else is taken', () => {
  withFile(secondaryYaml, (path) => {
    const config = loadConfig(path);
    assert.equal(config.role === 'secondary' && config.resync.staging, 'consistent');
  });
  withFile(`${secondaryYaml}resync: { staging: in-place }\n`, (path) => {
    const config = loadConfig(path);
    assert.equal(config.role === 'secondary' && config.resync.staging, 'in-place');
  });
  refused(`${secondaryYaml}resync: { staging: inconsistent }\n`, /resync\.staging: /);
  refused(`${secondaryYaml}resync: { stagingBytesMax: 1GiB }\n`, /resync: unknown key "stagingBytesMax"/);
  refused(`${primaryYaml}resync: { staging: inplace }\n`, /resync\.staging: /);
});

test("a site's config may carry both roles' sections; configInRole validates it whole as the other role", () => {
  const both = `${secondaryYaml}secondaries:\n  - { name: old-primary, address: 127.0.0.1:7401 }\ncycle: { intervalMinMs: 200 }\nack: cycle\njournal: { capacity: 1GiB, segmentSize: 16MiB }\n`;
  withFile(both, (path) => {
    const loaded = loadConfigFile(path);
    assert.equal(loaded.config.role, 'secondary');
    const promoted = configInRole(loaded, 'primary', [{ name: 'data', size: 1024 ** 2 }]);
    assert.equal(promoted.role, 'primary');
    if (promoted.role !== 'primary') return;
    assert.deepEqual(
      promoted.secondaries.map((secondary) => secondary.name),
      ['old-primary'],
    );
    assert.equal(promoted.ack, 'cycle');
    assert.equal(promoted.cycle.intervalMinMs, 200);
    assert.equal(promoted.journal.capacity, 1024 ** 3);
    assert.deepEqual(promoted.volumes, [{ name: 'data', size: 1024 ** 2 }], "the site's volumes");
    assert.equal(promoted.listen, '127.0.0.1:7400', 'still listens where old primaries dial');
    assert.equal(promoted.memory.dataBytesMax, 256 * 1024 ** 2, "the primary's default, not the secondary's");
  });
  // A bad value of the other role's sections is refused at load, before the site is touched.
  refused(`${secondaryYaml}ack: sometimes\n`, /ack: /);
  refused(`${secondaryYaml}secondaries:\n  - { name: x }\n`, /secondaries\.0\.address: missing/);
  // What only the whole other role can check is named with the role it was checked as.
  withFile(`${secondaryYaml}journal: { capacity: 8MiB, segmentSize: 16MiB }\n`, (path) => {
    assert.throws(
      () => configInRole(loadConfigFile(path), 'primary', [{ name: 'data', size: 1024 ** 2 }]),
      (error: unknown) =>
        error instanceof ConfigError &&
        error.message.includes(`${path} (as a primary): journal.segmentSize: larger than journal.capacity`),
    );
  });
  // A primary rejoining as a secondary needs its name.
  withFile(primaryYaml, (path) => {
    assert.throws(
      () => configInRole(loadConfigFile(path), 'secondary', []),
      (error: unknown) =>
        error instanceof ConfigError && /\(as a secondary\): name: missing/.test(error.message),
    );
  });
  withFile(`${primaryYaml}name: main\nlisten: 127.0.0.1:7401\n`, (path) => {
    const demoted = configInRole(loadConfigFile(path), 'secondary', []);
    assert.equal(demoted.role === 'secondary' && demoted.listen, '127.0.0.1:7401');
  });
});

test('the tracking section: defaults, bounds, and a journal large enough for tracking to free it', () => {
  const base = primaryYaml.replace(/journal:.*\n/, '');
  withFile(base, (path) => {
    const config = loadConfig(path);
    assert.ok(config.role === 'primary');
    assert.deepEqual(config.tracking, {
      enabled: true,
      journalFraction: 0.5,
      awaySecondsMax: 600,
      granularity: 64 * 1024,
      copyWindow: 64 * 1024 ** 2,
    });
  });
  refused(
    `${base}journal: { capacity: 16MiB, segmentSize: 8MiB }\n`,
    /journal\.capacity: at least 4 x journal\.segmentSize/,
  );
  withFile(
    `${base}journal: { capacity: 16MiB, segmentSize: 8MiB }\ntracking: { enabled: false }\n`,
    (path) => {
      assert.equal(loadConfig(path).role, 'primary');
    },
  );
  refused(`${base}tracking: { granularity: 1000 }\n`, /tracking\.granularity: 1000 is not whole blocks/);
  refused(`${base}tracking: { copyWindow: 64KiB }\n`, /tracking\.copyWindow: at least/);
  refused(`${base}tracking: { journalFraction: 0 }\n`, /tracking.*journalFraction/);
});

test("a primary's memory.dataBytesMax too small for its secondaries is refused with what it needs", () => {
  refused(
    `${primaryYaml}memory: { dataBytesMax: 64MiB }\n`,
    /memory\.dataBytesMax: 64MiB must hold the copy windows and packet queues of its secondary \(69MiB\) and at least 32MiB for writes on their way to the volumes: raise it to at least 101MiB, or lower tracking\.copyWindow/,
  );
  // The same budget holds one secondary with a smaller copy window.
  withFile(`${primaryYaml}memory: { dataBytesMax: 64MiB }\ntracking: { copyWindow: 16MiB }\n`, (path) => {
    assert.equal(loadConfig(path).role, 'primary');
  });
});
