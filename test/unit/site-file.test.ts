// Proves the rules a site applies to site.json and its images before it trusts them: malformed
// volume records are refused with what is wrong; the configuration is matched against the recorded
// volumes by name (a reordered list is accepted, an added, removed or resized volume, another block
// size or group is a ConfigError naming it); an image missing, emptied, of another size or replaced
// is refused naming its path and both sizes; images are never created over an earlier site's data;
// and site.json is written atomically, 0600, leaving no temporary file.
import assert from 'node:assert/strict';
import {
  copyFileSync,
  mkdirSync,
  mkdtempSync,
  readdirSync,
  renameSync,
  rmSync,
  statSync,
  truncateSync,
  writeFileSync,
} from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import { ConfigError, StorageError } from '../../src/core/errors.ts';
import { nodeFileSystem } from '../../src/io/node-file-system.ts';
import type { PrimaryFileConfig } from '../../src/ops/config.ts';
import {
  checkConfigAgainstSite,
  imagePath,
  problemOf,
  type RecordedShape,
  readSiteFile,
  recordedShape,
  writeSiteFile,
} from '../../src/storage/site-file.ts';
import { assertNoEarlierSite, createSiteVolumes, openSiteVolumes } from '../../src/storage/site-volumes.ts';

function withDirectory(body: (directory: string) => void): void {
  const directory = mkdtempSync(join(tmpdir(), 'cyclerep-site-'));
  try {
    body(directory);
  } finally {
    rmSync(directory, { recursive: true, force: true });
  }
}

const recorded: RecordedShape = {
  group: 'g',
  blockBytes: 4096,
  volumes: [
    { name: 'data', sizeBytes: 65536, inode: '11' },
    { name: 'log', sizeBytes: 8192, inode: '12' },
  ],
};

const primaryConfig = (directory: string) =>
  ({
    role: 'primary',
    group: 'g',
    dataDir: directory,
    blockSize: 4096,
    volumes: [
      { name: 'data', size: 65536 },
      { name: 'log', size: 8192 },
    ],
  }) as unknown as PrimaryFileConfig;

test('volume records in site.json: ids are positions, names unique, sizes and inodes well formed', () => {
  const site = (volumes: unknown) => ({
    role: 'primary',
    config: { role: 'primary', dataDir: '/d' },
    volumes,
  });
  const good = [
    { id: 0, name: 'data', sizeBytes: 65536, inode: '11' },
    { id: 1, name: 'log', sizeBytes: 8192, inode: '12' },
  ];
  assert.equal(problemOf(site(good)), null);
  assert.equal(problemOf(site(undefined)), null, 'a site.json older than the records is read');
  assert.match(problemOf(site([])) ?? '', /volumes: expected a non-empty list/);
  assert.match(problemOf(site([good[1], good[0]])) ?? '', /volumes\.0\.id: 1, expected 0/);
  assert.match(
    problemOf(site([good[0], { ...good[1], name: 'data' }])) ?? '',
    /volumes\.1\.name: "data" twice/,
  );
  assert.match(problemOf(site([{ ...good[0], sizeBytes: 0 }])) ?? '', /volumes\.0\.sizeBytes: 0/);
  assert.match(problemOf(site([{ ...good[0], inode: 11 }])) ?? '', /volumes\.0\.inode: 11/);
  const secondary = (shapeVolumes: unknown) => ({
    role: 'secondary',
    config: { role: 'secondary', dataDir: '/d' },
    shape: { group: 'g', blockBytes: 4096, volumes: shapeVolumes },
    volumes: good,
  });
  assert.equal(
    problemOf(
      secondary([
        { name: 'data', sizeBytes: 65536 },
        { name: 'log', sizeBytes: 8192 },
      ]),
    ),
    null,
  );
  assert.match(
    problemOf(secondary([{ name: 'data', sizeBytes: 65536 }])) ?? '',
    /volumes: do not agree with shape\.volumes/,
  );
});

test('a damaged volume record makes site.json refused as damaged, with its path', () => {
  withDirectory((directory) => {
    writeFileSync(
      join(directory, 'site.json'),
      JSON.stringify({
        role: 'primary',
        config: { role: 'primary', dataDir: directory },
        volumes: [{ id: 0, name: 'data', sizeBytes: 65536, inode: 'x' }],
      }),
    );
    assert.throws(
      () => readSiteFile(nodeFileSystem, directory),
      (error: unknown) =>
        error instanceof StorageError &&
        error.code === 'site-file-corrupt' &&
        error.message.startsWith(join(directory, 'site.json')) &&
        /volumes\.0\.inode: "x"/.test(error.message),
    );
  });
});

test('a fenced primary records who superseded it; a malformed fencedBy refuses site.json as damaged, never read past', () => {
  const site = 'a'.repeat(32);
  const fencedPrimary = (fencedBy: unknown, identity = true) => ({
    role: 'primary',
    config: { role: 'primary', dataDir: '/d' },
    ...(identity ? { site, generations: [{ id: '1'.repeat(32), startedAt: 1, primarySite: site }] } : {}),
    fencedBy,
  });
  const good = {
    site: 'b'.repeat(32),
    generation: '7'.repeat(32),
    startedAt: 120,
    at: '2026-11-26T10:00:00.000Z',
  };
  assert.equal(problemOf(fencedPrimary(good)), null);
  assert.equal(problemOf(fencedPrimary(undefined)), null, 'a primary never fenced');
  for (const bad of [
    null,
    'yes',
    { ...good, site: 'B' },
    { ...good, generation: undefined },
    { ...good, startedAt: 0 },
    { ...good, startedAt: 1.5 },
    { ...good, at: 'yesterday' },
    { ...good, at: undefined },
  ])
    assert.match(problemOf(fencedPrimary(bad)) ?? '', /^fencedBy: malformed/, JSON.stringify(bad));
  assert.match(problemOf(fencedPrimary(good, false)) ?? '', /fencedBy: without the site and generations/);
  withDirectory((directory) => {
    writeFileSync(
      join(directory, 'site.json'),
      JSON.stringify({
        ...fencedPrimary({ ...good, startedAt: -1 }),
        config: { role: 'primary', dataDir: directory },
      }),
    );
    assert.throws(
      () => readSiteFile(nodeFileSystem, directory),
      (error: unknown) =>
        error instanceof StorageError &&
        error.code === 'site-file-corrupt' &&
        /fencedBy: malformed/.test(error.message),
    );
  });
});

test('a switchover asked is on record as secondary, generation and cycle; a malformed one refuses site.json', () => {
  const site = 'a'.repeat(32);
  const asking = (handover: unknown) => ({
    role: 'primary',
    config: { role: 'primary', dataDir: '/d' },
    site,
    generations: [{ id: '1'.repeat(32), startedAt: 1, primarySite: site }],
    handover,
  });
  const good = { secondary: 'dr1', generation: '9'.repeat(32), cycle: 41 };
  assert.equal(problemOf(asking(good)), null);
  assert.equal(problemOf(asking(undefined)), null, 'no switchover asked');
  for (const bad of [
    null,
    'dr1',
    { ...good, secondary: '' },
    { ...good, generation: 'x' },
    { ...good, cycle: -1 },
  ])
    assert.match(problemOf(asking(bad)) ?? '', /^handover: malformed/, JSON.stringify(bad));
});

test('the configuration is matched by name: reordered is fine; added, removed, resized, another block size or group is named', () => {
  const configured = (volumes: { name: string; sizeBytes: number }[], extra = {}) => ({
    group: 'g',
    blockBytes: 4096,
    volumes,
    ...extra,
  });
  const data = { name: 'data', sizeBytes: 65536 };
  const log = { name: 'log', sizeBytes: 8192 };
  checkConfigAgainstSite(recorded, configured([log, data]), '/d');
  checkConfigAgainstSite(recorded, { group: 'g', blockBytes: 4096 }, '/d');
  const refused = (shape: ReturnType<typeof configured>, pattern: RegExp) =>
    assert.throws(
      () => checkConfigAgainstSite(recorded, shape, '/d'),
      (error: unknown) =>
        error instanceof ConfigError && pattern.test(error.message) && error.message.includes('/d/site.json'),
    );
  refused(
    configured([data, log, { name: 'extra', sizeBytes: 4096 }]),
    /"extra" is not a volume of this site \(it holds data, log\); a volume cannot be added/,
  );
  refused(
    configured([data]),
    /"log" is missing from the configuration, but this site holds it \(\/d\/volumes\/log\.img\)/,
  );
  refused(
    configured([data, { name: 'log', sizeBytes: 4096 }]),
    /"log" is 4096 bytes in the configuration, this site created it with 8192; a volume cannot be resized/,
  );
  refused(
    configured([data, log], { blockBytes: 8192 }),
    /blockSize: the configuration says 8192, this site was created with 4096/,
  );
  refused(
    configured([data, log], { group: 'h' }),
    /group: the configuration says "h", this site belongs to "g"/,
  );
});

test('a site.json older than the volume records gives its volumes in the journal’s order, inode unknown', () => {
  const legacy = recordedShape({ role: 'primary', config: primaryConfig('/d') });
  assert.deepEqual(legacy?.volumes, [
    { name: 'data', sizeBytes: 65536, inode: null },
    { name: 'log', sizeBytes: 8192, inode: null },
  ]);
  assert.equal(
    recordedShape({ role: 'secondary', config: primaryConfig('/d') as never, shape: null }),
    null,
    'a secondary waiting for its primary has no volumes yet',
  );
});

test('images are created once, 0600; then a missing, emptied, resized or replaced image is refused naming path and sizes', () => {
  withDirectory((directory) => {
    const shape = {
      group: 'g',
      blockBytes: 4096,
      volumes: [
        { name: 'data', sizeBytes: 65536 },
        { name: 'log', sizeBytes: 8192 },
      ],
    };
    const created = createSiteVolumes(nodeFileSystem, directory, shape);
    for (const file of created.files) file.close();
    assert.deepEqual(
      created.records.map(({ id, name, sizeBytes }) => [id, name, sizeBytes]),
      [
        [0, 'data', 65536],
        [1, 'log', 8192],
      ],
    );
    const path = imagePath(directory, 'log');
    assert.equal(statSync(path).mode & 0o777, 0o600);
    assert.equal(statSync(path).size, 8192);
    const site: RecordedShape = { ...shape, volumes: created.records };
    const opens = (): void => {
      for (const file of openSiteVolumes(nodeFileSystem, directory, site, shape).files) file.close();
    };
    opens();
    const refused = (code: string, pattern: RegExp) =>
      assert.throws(
        opens,
        (error: unknown) =>
          error instanceof StorageError && error.code === code && pattern.test(error.message),
      );
    renameSync(path, `${path}.away`);
    refused('volume-missing', new RegExp(`^${path} is missing \\(expected 8192 bytes, volume "log"`));
    renameSync(`${path}.away`, path);
    truncateSync(path, 0);
    refused('volume-size-mismatch', new RegExp(`^${path} is empty \\(0 bytes, expected 8192\\)`));
    truncateSync(path, 4096);
    refused('volume-size-mismatch', new RegExp(`^${path} is 4096 bytes, expected 8192`));
    truncateSync(path, 12288);
    refused('volume-size-mismatch', new RegExp(`^${path} is 12288 bytes, expected 8192`));
    truncateSync(path, 8192);
    opens();
    copyFileSync(path, `${path}.copy`);
    renameSync(`${path}.copy`, path);
    refused(
      'volume-foreign',
      /log\.img is not the image this site created \(inode \d+, site\.json records \d+; .*cyclerep accept-image --data-dir .* --volume log/,
    );
    // An image is never created over an earlier site's files.
    assert.throws(
      () => createSiteVolumes(nodeFileSystem, directory, shape),
      (error: unknown) =>
        error instanceof StorageError &&
        /site\.json is missing, but .* holds volumes\/data\.img/.test(error.message),
    );
  });
});

test('without site.json, journal segments or images of an earlier site are refused, an empty directory is not', () => {
  withDirectory((directory) => {
    assertNoEarlierSite(nodeFileSystem, directory);
    mkdirSync(join(directory, 'journal'));
    assertNoEarlierSite(nodeFileSystem, directory);
    writeFileSync(join(directory, 'journal', '0000000000000001.seg'), 'x');
    assert.throws(
      () => assertNoEarlierSite(nodeFileSystem, directory),
      /holds journal\/0000000000000001\.seg/,
    );
  });
});

test('site.json is written atomically, 0600, leaving no temporary file', () => {
  withDirectory((directory) => {
    writeFileSync(join(directory, 'site.json.tmp'), 'left by a crash', { mode: 0o644 });
    writeSiteFile(nodeFileSystem, directory, { role: 'primary', config: primaryConfig(directory) });
    assert.deepEqual(readdirSync(directory), ['site.json']);
    assert.equal(statSync(join(directory, 'site.json')).mode & 0o777, 0o600);
    assert.equal(readSiteFile(nodeFileSystem, directory)?.role, 'primary');
  });
});
