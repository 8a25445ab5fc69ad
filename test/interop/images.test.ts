// Proves whole-image work through the NBD front door with Debian's tools: qemu-img converts a
// 256 MiB image into the primary's export, and `qemu-img compare` finds the secondary's export equal
// once replication is idle; an ext4 file system made with `mke2fs -d` and copied in arrives at the
// secondary as an image that `e2fsck -fn` accepts and whose files `debugfs` dumps unchanged.
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { after, before, test } from 'node:test';
import { freePort, type Site, Workspace, waitForStatus } from '../integration/harness.ts';

const workspace = new Workspace();
const sizeBytes = 256 * 1024 * 1024;
let primaryUrl = '';
let secondaryUrl = '';
let primaryHttp = 0;
const sites: Site[] = [];
const env = { ...process.env, PATH: `/usr/bin:/bin:/usr/sbin:/sbin:${process.env.PATH ?? ''}` };

function run(command: string, args: string[]): { status: number | null; stdout: string; stderr: string } {
  const result = spawnSync(command, args, {
    encoding: 'utf8',
    env,
    timeout: 180_000,
    maxBuffer: 64 * 1024 * 1024,
  });
  if (result.error)
    throw new Error(
      `${command} could not run (is it installed? .ci/run installs it): ${result.error.message}`,
    );
  return { status: result.status, stdout: result.stdout, stderr: result.stderr };
}

async function idle(): Promise<void> {
  await waitForStatus(
    primaryHttp,
    (s) =>
      (s.secondaries as { lagBytes: number; applied: number; stored: number }[]).every(
        (link) => link.lagBytes === 0 && link.applied === link.stored,
      ),
    60_000,
  );
}

before(async () => {
  const nbdPrimary = await freePort();
  const nbdSecondary = await freePort();
  const secondary = await workspace.secondaryConfig('dr1');
  writeFileSync(
    secondary.path,
    `${readFileSync(secondary.path, 'utf8')}\nnbd: { listen: 127.0.0.1:${nbdSecondary} }\n`,
  );
  const primary = await workspace.primaryConfig({
    secondaries: [{ name: 'dr1', port: secondary.port }],
    volumes: [sizeBytes],
    extra: `nbd: { listen: 127.0.0.1:${nbdPrimary} }`,
  });
  primaryHttp = primary.httpPort;
  sites.push(workspace.startSecondary(secondary.path));
  await sites[0]?.waitForEvent('secondary-started');
  sites.push(workspace.startPrimary(primary.path));
  await sites[1]?.waitForEvent('nbd-listening');
  primaryUrl = `nbd://127.0.0.1:${nbdPrimary}/vol0`;
  secondaryUrl = `nbd://127.0.0.1:${nbdSecondary}/vol0`;
  await waitForStatus(primaryHttp, (s) => (s.secondaries as { link: string }[])[0]?.link === 'streaming');
});

after(async () => {
  for (const site of sites) await site.stop();
  await workspace.cleanup();
});

test('qemu-img convert -n of a 256 MiB image, then qemu-img compare of the two exports', {
  timeout: 180_000,
}, async () => {
  const source = workspace.path('source.img');
  // Half random data, half zeroes: both kinds of block travel.
  writeFileSync(source, Buffer.concat([randomBytes(sizeBytes / 2), Buffer.alloc(sizeBytes / 2)]));
  const convert = run('qemu-img', ['convert', '-n', '-f', 'raw', '-O', 'raw', source, primaryUrl]);
  assert.equal(convert.status, 0, convert.stderr);
  await idle();
  const sameAsSource = run('qemu-img', ['compare', '-f', 'raw', '-F', 'raw', source, secondaryUrl]);
  assert.equal(sameAsSource.status, 0, sameAsSource.stdout + sameAsSource.stderr);
  const exportsEqual = run('qemu-img', ['compare', '-f', 'raw', '-F', 'raw', primaryUrl, secondaryUrl]);
  assert.equal(exportsEqual.status, 0, exportsEqual.stdout + exportsEqual.stderr);
  assert.match(exportsEqual.stdout, /Images are identical/);
});

test('an ext4 file system copied in is whole at the secondary: e2fsck -fn passes, files unchanged', {
  timeout: 180_000,
}, async () => {
  const tree = workspace.path('tree');
  mkdirSync(`${tree}/docs`, { recursive: true });
  const files: Record<string, Buffer> = {
    'hello.txt': Buffer.from('cyclerep was here\n'),
    'docs/random.bin': randomBytes(3 * 1024 * 1024 + 123),
    'docs/zeros.bin': Buffer.alloc(1024 * 1024),
  };
  for (const [name, content] of Object.entries(files)) writeFileSync(`${tree}/${name}`, content);
  const fsImage = workspace.path('fs.img');
  const make = run('mke2fs', ['-q', '-F', '-t', 'ext4', '-b', '4096', '-d', tree, fsImage, '64M']);
  assert.equal(make.status, 0, make.stderr);
  const copy = run('qemu-img', ['convert', '-n', '-f', 'raw', '-O', 'raw', fsImage, primaryUrl]);
  assert.equal(copy.status, 0, copy.stderr);
  await idle();
  // The secondary's image file must be whole on its own: stop it so the file is at rest.
  assert.equal(await sites[0]?.stop(), 0);
  const replicaFile = workspace.path('replica-fs.img');
  const extract = run('qemu-img', [
    'dd',
    '-f',
    'raw',
    '-O',
    'raw',
    `if=${workspace.path('dr1', 'volumes', 'vol0.img')}`,
    `of=${replicaFile}`,
    'bs=1M',
    'count=64',
  ]);
  assert.equal(extract.status, 0, extract.stderr);
  const check = run('e2fsck', ['-fn', replicaFile]);
  assert.equal(check.status, 0, check.stdout + check.stderr);
  for (const [name, content] of Object.entries(files)) {
    const out = workspace.path(`dumped-${name.replace('/', '-')}`);
    const dump = run('debugfs', ['-R', `dump /${name} ${out}`, replicaFile]);
    assert.equal(dump.status, 0, dump.stderr);
    assert.equal(Buffer.compare(readFileSync(out), content), 0, `${name} differs`);
  }
});
