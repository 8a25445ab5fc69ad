// Proves, with real processes and real files, that a site trusts no image and no site.json it finds
// at start: an image deleted, emptied or cut short (on the primary or on the secondary) is refused
// with exit code 5 and a message naming the path and both sizes, and the refused start changes no
// byte on disk; an image replaced by a copy is refused as foreign until `cyclerep accept-image`
// takes it; the primary's volume list reordered in its config maps by name (the journal's redo
// lands in the right images, NBD exports and the library API find their volumes by name); a secondary restarted with a resized volume is refused (exit 2) and
// site.json stays as it was, so the original config starts again; data files are 0600; and a TLS
// private key readable by others is a config error naming the file.
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import {
  chmodSync,
  copyFileSync,
  readdirSync,
  readFileSync,
  renameSync,
  rmSync,
  statSync,
  truncateSync,
  writeFileSync,
} from 'node:fs';
import { join, relative } from 'node:path';
import { test } from 'node:test';
import { PrimaryNode } from '../../src/node/primary-node.ts';
import { ensureCa, makeSiteCertificate } from '../../src/ops/certs.ts';
import { loadConfig, type PrimaryFileConfig } from '../../src/ops/config.ts';
import { createLogger } from '../../src/ops/logger.ts';
import {
  freePort,
  root,
  type Site,
  volumeSizes,
  type Workspace,
  waitForStatus,
  workspacesCleanedAfterTests,
} from './harness.ts';

const fresh = workspacesCleanedAfterTests();

/** Every file under `directory`: its content's hash, size and mode, to show nothing changed. */
function snapshot(directory: string): Map<string, string> {
  const files = new Map<string, string>();
  const walk = (at: string): void => {
    for (const entry of readdirSync(at, { withFileTypes: true })) {
      const path = join(at, entry.name);
      if (entry.isDirectory()) walk(path);
      else {
        const stats = statSync(path);
        const hash = createHash('sha256').update(readFileSync(path)).digest('hex');
        files.set(relative(directory, path), `${hash} ${stats.size} ${(stats.mode & 0o777).toString(8)}`);
      }
    }
  };
  walk(directory);
  return files;
}

/** The exit code of a site expected to refuse its start; a site still running after 20 s is killed (null). */
async function exitOfRefusedStart(site: Site): Promise<number | null> {
  const timer = setTimeout(() => site.kill('SIGKILL'), 20_000);
  const code = await site.exited;
  clearTimeout(timer);
  return code;
}

/** A primary and a secondary (volumes taken from the primary) that replicated some load, both stopped. */
async function replicatedPair(): Promise<{
  workspace: Workspace;
  primary: { path: string; httpPort: number };
  secondary: { path: string; port: number; httpPort: number };
}> {
  const workspace = fresh();
  const secondary = await workspace.secondaryConfig('dr1');
  const primary = await workspace.primaryConfig({ secondaries: [{ name: 'dr1', port: secondary.port }] });
  const dr1 = workspace.startSecondary(secondary.path);
  await dr1.waitForEvent('secondary-started');
  const load = workspace.startLoadPrimary(primary.path);
  await load.waitForWrites(500);
  await waitForStatus(secondary.httpPort, (s) => (s.applied as number) >= 2, 30_000);
  assert.equal(await load.stop(), 0);
  assert.equal(await dr1.stop(), 0);
  workspace.assertReplica('dr1');
  return { workspace, primary, secondary };
}

const damages = [
  {
    name: 'deleted',
    apply: (path: string) => renameSync(path, `${path}.away`),
    undo: (path: string) => renameSync(`${path}.away`, path),
    message: (path: string, size: number) => new RegExp(`${path} is missing \\(expected ${size} bytes`),
  },
  {
    name: 'emptied',
    apply: (path: string) => truncateSync(path, 0),
    message: (path: string, size: number) => new RegExp(`${path} is empty \\(0 bytes, expected ${size}\\)`),
  },
  {
    name: 'cut short',
    apply: (path: string) => truncateSync(path, 4096 * 3),
    message: (path: string, size: number) => new RegExp(`${path} is 12288 bytes, expected ${size}`),
  },
];

/**
 * For each damage: applied to vol1 of `site`, the start is refused with exit 5 naming the path and
 * sizes, and nothing under the data directory changed; then the image is put back as it was (the
 * same file), and the site starts again.
 */
async function checkDamagesRefused(
  workspace: Workspace,
  site: 'primary' | 'dr1',
  start: () => Site,
): Promise<void> {
  const image = workspace.path(site, 'volumes', 'vol1.img');
  const original = readFileSync(image);
  for (const damage of damages) {
    damage.apply(image);
    const before = snapshot(workspace.path(site));
    const refused = start();
    assert.equal(await exitOfRefusedStart(refused), 5, `${site}, image ${damage.name}: ${refused.stderr}`);
    assert.match(
      refusalOf(refused),
      damage.message(image, volumeSizes[1] as number),
      `${site}, ${damage.name}`,
    );
    assert.deepEqual(
      snapshot(workspace.path(site)),
      before,
      `${site}, ${damage.name}: nothing on disk changed`,
    );
    if (damage.undo) damage.undo(image);
    else writeFileSync(image, original); // the same file (inode), its bytes back
  }
  await startsAgain(start(), site === 'primary' ? 'primary-started' : 'secondary-started');
}

/**
 * The site starts; then it is killed (kill -9 is safe at any point, and a SIGTERM sent right after
 * the start event could come before the daemon's handler is in place).
 */
async function startsAgain(site: Site, event: string): Promise<void> {
  await site.waitForEvent(event);
  site.kill('SIGKILL');
  await site.exited;
}

/** Why a start was refused: the start-failed event's reason, or the plain text of a config error. */
function refusalOf(site: Site): string {
  const reasons = site.events('start-failed').map((event) => String(event.reason));
  return reasons.length > 0 ? reasons.join('\n') : site.stderr;
}

test('an image deleted, emptied or cut short is refused at start on the primary and the secondary: exit 5, path and sizes named, nothing changed', {
  timeout: 240_000,
}, async () => {
  const { workspace, primary, secondary } = await replicatedPair();
  await checkDamagesRefused(workspace, 'primary', () => workspace.startPrimary(primary.path));
  await checkDamagesRefused(workspace, 'dr1', () => workspace.startSecondary(secondary.path));
  workspace.assertReplica('dr1');
});

test('an image replaced by a copy is refused as foreign (exit 5) until cyclerep accept-image takes it (one volume, or --all)', {
  timeout: 120_000,
}, async () => {
  const { workspace, secondary } = await replicatedPair();
  const image = workspace.path('dr1', 'volumes', 'vol0.img');
  copyFileSync(image, `${image}.copy`);
  rmSync(image);
  renameSync(`${image}.copy`, image);
  const before = snapshot(workspace.path('dr1'));
  const refused = workspace.startSecondary(secondary.path);
  assert.equal(await exitOfRefusedStart(refused), 5, refused.stderr);
  assert.match(refusalOf(refused), new RegExp(`${image} is not the image this site created \\(inode \\d+`));
  assert.match(refusalOf(refused), /cyclerep accept-image --data-dir .* --volume vol0/);
  assert.deepEqual(snapshot(workspace.path('dr1')), before);
  const accepted = spawnSync(
    process.execPath,
    ['bin/cyclerep.js', 'accept-image', '--data-dir', workspace.path('dr1'), '--volume', 'vol0'],
    { cwd: root, encoding: 'utf8', timeout: 30_000 },
  );
  assert.equal(accepted.status, 0, accepted.stderr);
  assert.match(accepted.stdout, /accepted .*vol0\.img as volume "vol0"/);
  await startsAgain(workspace.startSecondary(secondary.path), 'secondary-started');
  // A whole data directory restored as copies (new inodes): `--all` takes every image at once.
  for (const name of ['vol0', 'vol1']) {
    const path = workspace.path('dr1', 'volumes', `${name}.img`);
    copyFileSync(path, `${path}.copy`);
    renameSync(`${path}.copy`, path);
  }
  const all = spawnSync(
    process.execPath,
    ['bin/cyclerep.js', 'accept-image', '--data-dir', workspace.path('dr1'), '--all'],
    { cwd: root, encoding: 'utf8', timeout: 30_000 },
  );
  assert.equal(all.status, 0, all.stderr);
  assert.equal(all.stdout.split('\n').filter((line) => line.startsWith('accepted')).length, 2);
  await startsAgain(workspace.startSecondary(secondary.path), 'secondary-started');
});

test('the primary’s volumes reordered in its config: redo and reads map by name, every image keeps its bytes', {
  timeout: 120_000,
}, async () => {
  const workspace = fresh();
  // A secondary that never answers: nothing is collected, so every write stays in the journal and
  // the next start redoes all of them.
  const nbdPort = await freePort();
  const primary = await workspace.primaryConfig({
    secondaries: [{ name: 'dr1', port: await freePort() }],
    extra: `nbd: { listen: 127.0.0.1:${nbdPort} }`,
  });
  const load = workspace.startLoadPrimary(primary.path, { LOAD_SETTLE_MS: '0' });
  await load.waitForWrites(1000);
  assert.equal(await load.stop(), 0);
  // A start with the original order writes the journal's last records back too: the reference.
  await startsAgain(workspace.startPrimary(primary.path), 'primary-started');
  const images = workspace.image('primary');
  const text = readFileSync(primary.path, 'utf8');
  const lines = text.split('\n');
  const first = lines.findIndex((line) => line.includes('name: vol0'));
  const second = lines.findIndex((line) => line.includes('name: vol1'));
  [lines[first], lines[second]] = [lines[second] as string, lines[first] as string];
  writeFileSync(primary.path, lines.join('\n'));
  assert.notEqual(readFileSync(primary.path, 'utf8'), text);
  const reordered = workspace.startPrimary(primary.path);
  await reordered.waitForEvent('primary-started');
  const redone = reordered.events('volumes-redone')[0];
  assert.ok(redone && (redone.writes as number) > 0, `the start redid the journal: ${reordered.stderr}`);
  // Read through the primary's NBD exports, by name, while it runs.
  images.forEach((bytes, index) => {
    const copy = workspace.path(`read-vol${index}.img`);
    const copied = spawnSync('nbdcopy', [`nbd://127.0.0.1:${nbdPort}/vol${index}`, copy], {
      encoding: 'utf8',
      timeout: 30_000,
    });
    assert.equal(copied.status, 0, copied.stderr);
    assert.ok(Buffer.compare(readFileSync(copy), bytes) === 0, `vol${index} read over NBD`);
  });
  reordered.kill('SIGKILL');
  await reordered.exited;
  workspace.image('primary').forEach((bytes, index) => {
    assert.ok(Buffer.compare(bytes, images[index] as Buffer) === 0, `vol${index}.img kept its bytes`);
  });
});

test('the library API counts volumes in the configuration’s order, mapped by name after a reorder', {
  timeout: 60_000,
}, async () => {
  const workspace = fresh();
  const quiet = createLogger({ site: 'test', format: 'json', write: () => {} });
  const path = workspace.path('library.yaml');
  const yaml = (volumes: string[]) =>
    `group: lib\nrole: primary\ndataDir: ${workspace.path('lib')}\nvolumes:\n${volumes.join('\n')}\n` +
    `cycle: { intervalMinMs: 50 }\nsecondaries:\n  - { name: dr1, address: 127.0.0.1:${port} }\n`;
  const port = await freePort();
  const data = '  - { name: data, size: 1MiB }';
  const log = '  - { name: log, size: 1MiB }';
  writeFileSync(path, yaml([data, log]));
  const first = await PrimaryNode.start(loadConfig(path) as PrimaryFileConfig, quiet, () => {});
  await first.write(0, 0, new Uint8Array(4096).fill(0xda));
  await first.write(1, 0, new Uint8Array(4096).fill(0x10));
  await first.flush();
  await first.stop();
  // The journal still holds both writes (no secondary stored them): the next start redoes them.
  writeFileSync(path, yaml([log, data]));
  const second = await PrimaryNode.start(loadConfig(path) as PrimaryFileConfig, quiet, () => {});
  try {
    assert.deepEqual([...(await second.read(0, 0, 4096))].slice(0, 4), [0x10, 0x10, 0x10, 0x10], 'log');
    assert.deepEqual([...(await second.read(1, 0, 4096))].slice(0, 4), [0xda, 0xda, 0xda, 0xda], 'data');
  } finally {
    await second.stop();
  }
  assert.equal(readFileSync(workspace.path('lib', 'volumes', 'data.img'))[0], 0xda);
  assert.equal(readFileSync(workspace.path('lib', 'volumes', 'log.img'))[0], 0x10);
});

test('a secondary restarted with a resized volume is refused (exit 2) without touching site.json; the original config starts again', {
  timeout: 120_000,
}, async () => {
  const { workspace, primary, secondary } = await replicatedPair();
  const siteFile = readFileSync(workspace.path('dr1', 'site.json'), 'utf8');
  const before = snapshot(workspace.path('dr1'));
  const originalConfig = readFileSync(secondary.path, 'utf8');
  const resized = await workspace.secondaryConfig('dr1', {
    volumes: [volumeSizes[0] as number, 2 * 1024 * 1024],
  });
  const refused = workspace.startSecondary(resized.path);
  assert.equal(await exitOfRefusedStart(refused), 2, refused.stderr);
  assert.match(
    refusalOf(refused),
    /"vol1" is 2097152 bytes in the configuration, this site created it with 4194304; a volume cannot be resized/,
  );
  assert.equal(readFileSync(workspace.path('dr1', 'site.json'), 'utf8'), siteFile);
  assert.deepEqual(snapshot(workspace.path('dr1')), before);
  // The original config (volumes taken from the primary) works as before, and replication goes on.
  writeFileSync(secondary.path, originalConfig);
  const dr1 = workspace.startSecondary(secondary.path);
  await dr1.waitForEvent('secondary-started');
  const load = workspace.startLoadPrimary(primary.path);
  await load.waitForWrites(200);
  assert.equal(await load.stop(), 0);
  assert.equal(await dr1.stop(), 0);
  workspace.assertReplica('dr1');
});

test('images, journal segments and site.json are created 0600 on both sites', {
  timeout: 120_000,
}, async () => {
  const { workspace } = await replicatedPair();
  for (const site of ['primary', 'dr1']) {
    const files = [...snapshot(workspace.path(site)).entries()];
    assert.ok(
      files.some(([path]) => path.startsWith('journal')),
      `${site} has journal segments`,
    );
    assert.ok(files.some(([path]) => path === 'site.json'));
    for (const [path, facts] of files) assert.match(facts, / 600$/, `${site}/${path}: ${facts}`);
  }
});

test('a TLS private key readable by others is a config error naming the file (exit 2)', {
  timeout: 60_000,
}, async () => {
  const workspace = fresh();
  const ca = ensureCa(workspace.path('pki'));
  const { cert, key } = makeSiteCertificate(workspace.path('pki'), 'primary');
  chmodSync(key, 0o644);
  const primary = await workspace.primaryConfig({
    secondaries: [{ name: 'dr1', port: await freePort() }],
    extra: `tls: { cert: ${cert}, key: ${key}, ca: ${ca}, peers: [dr1] }`,
  });
  const refused = workspace.startPrimary(primary.path);
  assert.equal(await exitOfRefusedStart(refused), 2, refused.stderr);
  assert.match(
    refused.stderr,
    new RegExp(`tls\\.key: ${key} is readable by others \\(mode 644\\); chmod 600 it`),
  );
});
