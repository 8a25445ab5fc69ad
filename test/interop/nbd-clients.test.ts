// Proves the NBD front door with real clients from Debian (qemu-io, nbdinfo, nbdcopy, nbdsh),
// installed by .ci/run: they see the right size and flags, write patterns through several
// concurrent connections, copy whole images in and out, and read the same data back from the
// secondary's read-only export once replication is idle.
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { readFileSync, writeFileSync } from 'node:fs';
import { after, before, test } from 'node:test';
import { NbdGroup, run, runCapture } from './nbd-group.ts';

let group: NbdGroup;
const sizeBytes = 64 * 1024 * 1024;

before(async () => {
  group = await NbdGroup.start(sizeBytes);
});

after(() => group.stop());

test('nbdinfo shows the size, the flags, and a read-only secondary', () => {
  const primary = run('nbdinfo', [group.primaryUrl]);
  assert.equal(primary.status, 0, primary.stderr);
  assert.match(primary.stdout, /export-size: 67108864/);
  for (const flag of [
    'can_flush: true',
    'can_fua: true',
    'can_trim: true',
    'can_zero: true',
    'can_multi_conn: true',
    'is_read_only: false',
    'block_size_minimum: 1',
    'block_size_preferred: 4096',
  ]) {
    assert.ok(primary.stdout.includes(flag), flag);
  }
  const secondary = run('nbdinfo', [group.secondaryUrl]);
  assert.equal(secondary.status, 0, secondary.stderr);
  assert.match(secondary.stdout, /is_read_only: true/);
});

test('qemu-io writes patterns over four concurrent connections and reads them back on both sites', {
  timeout: 120_000,
}, async () => {
  const writers = [0, 1, 2, 3].map((index) =>
    runCapture('qemu-io', [
      '-f',
      'raw',
      group.primaryUrl,
      '-c',
      `write -P 0x${(0x10 + index).toString(16)} ${index * 4}M 4M`,
      '-c',
      'flush',
    ]),
  );
  assert.deepEqual(
    (await Promise.all(writers)).map((result) => result.status),
    [0, 0, 0, 0],
  );
  const readBack = run('qemu-io', [
    '-f',
    'raw',
    group.primaryUrl,
    ...[0, 1, 2, 3].flatMap((index) => ['-c', `read -P 0x${(0x10 + index).toString(16)} ${index * 4}M 4M`]),
  ]);
  assert.equal(readBack.status, 0, readBack.stdout + readBack.stderr);
  assert.doesNotMatch(readBack.stdout, /Pattern verification failed/);
  await group.idle();
  const replica = run('qemu-io', [
    '-f',
    'raw',
    '-r',
    group.secondaryUrl,
    ...[0, 1, 2, 3].flatMap((index) => ['-c', `read -P 0x${(0x10 + index).toString(16)} ${index * 4}M 4M`]),
  ]);
  assert.equal(replica.status, 0, replica.stdout + replica.stderr);
  assert.doesNotMatch(replica.stdout, /Pattern verification failed/);
});

test('nbdcopy copies an image in; the secondary export yields the same bytes', {
  timeout: 120_000,
}, async () => {
  const source = group.workspace.path('source.img');
  const image = randomBytes(sizeBytes / 2);
  writeFileSync(source, Buffer.concat([image, Buffer.alloc(sizeBytes / 2)]));
  const copyIn = run('nbdcopy', [source, group.primaryUrl]);
  assert.equal(copyIn.status, 0, copyIn.stderr);
  await group.idle();
  const out = group.workspace.path('from-secondary.img');
  const copyOut = run('nbdcopy', [group.secondaryUrl, out]);
  assert.equal(copyOut.status, 0, copyOut.stderr);
  assert.equal(Buffer.compare(readFileSync(out), readFileSync(source)), 0);
});

test('nbdsh: trimmed and zeroed blocks read back as zeroes on both sites', { timeout: 60_000 }, async () => {
  const script = [
    'h.pwrite(b"\\xee" * 8192, 1048576)',
    'h.trim(8192, 1048576)',
    'assert h.pread(8192, 1048576) == bytes(8192)',
    'h.zero(4096, 2097152)',
    'assert h.pread(4096, 2097152) == bytes(4096)',
    'h.flush()',
    'print("ok")',
  ].join('\n');
  const result = run('nbdsh', ['-u', group.primaryUrl, '-c', script]);
  assert.equal(result.status, 0, result.stderr);
  assert.match(result.stdout, /ok/);
  await group.idle();
  const replica = run('nbdsh', [
    '-u',
    group.secondaryUrl,
    '-c',
    'assert h.pread(8192, 1048576) == bytes(8192)\nprint("ok")',
  ]);
  assert.equal(replica.status, 0, replica.stderr);
});

/** An nbdsh script on a handle that asked for base:allocation before connecting to `url`. */
function nbdshWithAllocation(url: string, lines: string[]): ReturnType<typeof run> {
  const script = [
    'import errno',
    'h.add_meta_context("base:allocation")',
    `h.connect_uri(${JSON.stringify(url)})`,
    'assert h.can_meta_context("base:allocation")',
    'def extents(offset, length):',
    '    found = []',
    '    def collect(context, at, entries, error):',
    '        found.extend(zip(entries[0::2], entries[1::2]))',
    '        return 0',
    '    h.block_status(length, offset, collect)',
    '    return found',
    ...lines,
    'print("ok")',
  ].join('\n');
  return run('nbdsh', ['-c', script]);
}

test('nbdsh: block status shows data and zeroes, after trim too, on both sites', {
  timeout: 60_000,
}, async () => {
  const result = nbdshWithAllocation(group.primaryUrl, [
    'h.pwrite(b"\\x11" * 65536, 40 << 20)',
    'h.trim(16384, (40 << 20) + 16384)',
    'found = extents(40 << 20, 65536)',
    'assert found == [(16384, 0), (16384, 2), (32768, 0)], found',
    'one = []',
    'h.block_status(65536, 40 << 20, lambda c, at, e, err: one.extend(e) or 0, nbd.CMD_FLAG_REQ_ONE)',
    'assert one == [16384, 0], one',
    'h.flush()',
  ]);
  assert.equal(result.status, 0, result.stderr);
  assert.match(result.stdout, /ok/);
  await group.idle();
  const replica = nbdshWithAllocation(group.secondaryUrl, [
    'found = extents(40 << 20, 65536)',
    'assert found == [(16384, 0), (16384, 2), (32768, 0)], found',
  ]);
  assert.equal(replica.status, 0, replica.stderr);
  const map = run('nbdinfo', ['--map', group.secondaryUrl]);
  assert.equal(map.status, 0, map.stderr);
  assert.match(map.stdout, /zero/, 'nbdinfo --map names the zero extents');
});

test('nbdsh without client-side checks: out of range and zero-length requests fail alone; unaligned ones are served', {
  timeout: 60_000,
}, () => {
  const expectError = (call: string, code: string) => [
    'try:',
    `    ${call}`,
    `    raise AssertionError("${call} succeeded")`,
    'except nbd.Error as error:',
    `    assert error.errnum == errno.${code}, (error.errno, error.string)`,
  ];
  const result = nbdshWithAllocation(group.primaryUrl, [
    'h.set_strict_mode(0)',
    `size = h.get_size()`,
    ...expectError('h.pread(4096, size)', 'EINVAL'),
    ...expectError('h.pwrite(bytes(4096), size)', 'ENOSPC'),
    'h.pwrite(b"\\x33" * 512, 4096 + 100)',
    'assert h.pread(512, 4096 + 100) == b"\\x33" * 512, "an unaligned write reads back"',
    ...expectError('h.zero(4096, size)', 'ENOSPC'),
    ...expectError('extents(size, 4096)', 'EINVAL'),
    'assert h.pread(0, 0) == b""',
    'h.pwrite(b"\\x22" * 4096, 0)',
    'assert h.pread(4096, 0) == b"\\x22" * 4096, "the connection still serves"',
  ]);
  assert.equal(result.status, 0, result.stdout + result.stderr);
  assert.match(result.stdout, /ok/);
});

test('random and mutated bytes on other connections never disturb a well-behaved client', {
  timeout: 60_000,
}, async () => {
  const { connect } = await import('node:net');
  const { Random } = await import('../../src/sim/random.ts');
  const seed = Number(process.env.FUZZ_SEED ?? Date.now() % 100_000);
  const random = new Random(seed);
  const port = Number(group.primaryUrl.split(':')[2]?.split('/')[0]);
  // Client flags, then NBD_OPT_GO for "vol0" with no info requests, then a READ: mutated at random.
  const handshake = Buffer.concat([
    Buffer.from('00000003', 'hex'),
    Buffer.from('IHAVEOPT'),
    Buffer.from('000000070000000a00000004', 'hex'),
    Buffer.from('vol0'),
    Buffer.from('0000', 'hex'),
    Buffer.from('25609513000000000000000000000001000000000000000000001000', 'hex'),
  ]);
  const sendGarbage = (bytes: Uint8Array): Promise<void> =>
    new Promise((resolve) => {
      const socket = connect(port, '127.0.0.1', () => socket.end(bytes));
      socket.on('data', () => {});
      socket.on('error', () => resolve());
      socket.on('close', () => resolve());
      setTimeout(() => {
        socket.destroy();
        resolve();
      }, 200);
    });
  // Counted, not timed: both loops run until the fuzzer sent its connections and the clients were
  // served, each going on while the other has not finished, so they overlap however slow the machine.
  const fuzzedWanted = 24;
  const servedWanted = 4;
  let fuzzed = 0;
  let served = 0;
  const fuzzer = (async () => {
    while (fuzzed < fuzzedWanted || served < servedWanted) {
      const bytes = random.chance(0.5)
        ? Uint8Array.from({ length: random.int(300) }, () => random.int(256))
        : handshake.map((byte) => (random.chance(0.1) ? random.int(256) : byte));
      await Promise.all([
        sendGarbage(bytes),
        sendGarbage(Uint8Array.from({ length: random.int(64) }, () => random.int(256))),
      ]);
      fuzzed += 2;
    }
  })();
  while (served < servedWanted || fuzzed < fuzzedWanted) {
    const pattern = (0x20 + (served % 64)).toString(16);
    // Asynchronous, so the fuzzer's connections run at the same time.
    const result = await runCapture('qemu-io', [
      '-f',
      'raw',
      group.primaryUrl,
      '-c',
      `write -P 0x${pattern} 32M 64k`,
      '-c',
      `read -P 0x${pattern} 32M 64k`,
    ]);
    assert.equal(result.status, 0, `seed ${seed}: ${result.output}`);
    assert.doesNotMatch(result.output, /Pattern verification failed/);
    served++;
  }
  await fuzzer;
  process.stdout.write(`fuzzed ${fuzzed} connections, served ${served} clients (seed ${seed})\n`);
  const info = run('nbdinfo', [group.primaryUrl]);
  assert.equal(info.status, 0, 'the server still answers');
});
