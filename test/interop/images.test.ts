// Proves whole-image work through the NBD front door with Debian's tools: qemu-img converts a
// 256 MiB image into the primary's export, and `qemu-img compare` finds the secondary's export equal
// once replication is idle; an ext4 file system made with `mke2fs -d` and copied in arrives at the
// secondary as an image that `e2fsck -fn` accepts and whose files `debugfs` dumps unchanged.
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { after, before, test } from 'node:test';
import { NbdGroup, run } from './nbd-group.ts';

let group: NbdGroup;
const sizeBytes = 256 * 1024 * 1024;

before(async () => {
  group = await NbdGroup.start(sizeBytes);
});

after(() => group.stop());

test('qemu-img convert -n of a 256 MiB image, then qemu-img compare of the two exports', {
  timeout: 180_000,
}, async () => {
  const source = group.workspace.path('source.img');
  // Half random data, half zeroes: both kinds of block travel.
  writeFileSync(source, Buffer.concat([randomBytes(sizeBytes / 2), Buffer.alloc(sizeBytes / 2)]));
  const convert = run('qemu-img', ['convert', '-n', '-f', 'raw', '-O', 'raw', source, group.primaryUrl]);
  assert.equal(convert.status, 0, convert.stderr);
  await group.idle();
  const sameAsSource = run('qemu-img', ['compare', '-f', 'raw', '-F', 'raw', source, group.secondaryUrl]);
  assert.equal(sameAsSource.status, 0, sameAsSource.stdout + sameAsSource.stderr);
  const exportsEqual = run('qemu-img', [
    'compare',
    '-f',
    'raw',
    '-F',
    'raw',
    group.primaryUrl,
    group.secondaryUrl,
  ]);
  assert.equal(exportsEqual.status, 0, exportsEqual.stdout + exportsEqual.stderr);
  assert.match(exportsEqual.stdout, /Images are identical/);
});

test('an ext4 file system copied in is whole at the secondary: e2fsck -fn passes, files unchanged', {
  timeout: 180_000,
}, async () => {
  const tree = group.workspace.path('tree');
  mkdirSync(`${tree}/docs`, { recursive: true });
  const files: Record<string, Buffer> = {
    'hello.txt': Buffer.from('cyclerep was here\n'),
    'docs/random.bin': randomBytes(3 * 1024 * 1024 + 123),
    'docs/zeros.bin': Buffer.alloc(1024 * 1024),
  };
  for (const [name, content] of Object.entries(files)) writeFileSync(`${tree}/${name}`, content);
  const fsImage = group.workspace.path('fs.img');
  const make = run('mke2fs', ['-q', '-F', '-t', 'ext4', '-b', '4096', '-d', tree, fsImage, '64M']);
  assert.equal(make.status, 0, make.stderr);
  const copy = run('qemu-img', ['convert', '-n', '-f', 'raw', '-O', 'raw', fsImage, group.primaryUrl]);
  assert.equal(copy.status, 0, copy.stderr);
  await group.idle();
  // The secondary's image file must be whole on its own: stop it so the file is at rest.
  assert.equal(await group.secondary.stop(), 0);
  const replicaFile = group.workspace.path('replica-fs.img');
  const extract = run('qemu-img', [
    'dd',
    '-f',
    'raw',
    '-O',
    'raw',
    `if=${group.workspace.path('dr1', 'volumes', 'vol0.img')}`,
    `of=${replicaFile}`,
    'bs=1M',
    'count=64',
  ]);
  assert.equal(extract.status, 0, extract.stderr);
  const check = run('e2fsck', ['-fn', replicaFile]);
  assert.equal(check.status, 0, check.stdout + check.stderr);
  for (const [name, content] of Object.entries(files)) {
    const out = group.workspace.path(`dumped-${name.replace('/', '-')}`);
    const dump = run('debugfs', ['-R', `dump /${name} ${out}`, replicaFile]);
    assert.equal(dump.status, 0, dump.stderr);
    assert.equal(Buffer.compare(readFileSync(out), content), 0, `${name} differs`);
  }
});
