// A data directory changing role (storage/role-change.ts): the conversion leaves a
// primary's site.json with the extended chain and a journal that starts after the promoted cycle,
// and a crash at any point after role-change.json is finished by running the plan again.
import assert from 'node:assert/strict';
import { mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, test } from 'node:test';
import { StorageError } from '../../src/core/errors.ts';
import type { Generation } from '../../src/core/identity.ts';
import { PrimaryGroup } from '../../src/core/primary-group.ts';
import type { PrimaryRecord, SecondaryRecord } from '../../src/core/records.ts';
import { nodeFileSystem } from '../../src/io/node-file-system.ts';
import { type PrimaryFileConfig, type SecondaryFileConfig, validateConfig } from '../../src/ops/config.ts';
import { writeFileAtomic } from '../../src/storage/durable-file.ts';
import { primaryRecordCodec, secondaryRecordCodec } from '../../src/storage/record-codec.ts';
import {
  changeRole,
  finishRoleChange,
  planPromotion,
  readRoleChangeFile,
  roleChangeFilePath,
} from '../../src/storage/role-change.ts';
import { SegmentJournal } from '../../src/storage/segment-journal.ts';
import { readSiteFile } from '../../src/storage/site-file.ts';
import { primaryConfig } from './fixtures.ts';

const dirs: string[] = [];
after(() => {
  for (const dir of dirs) rmSync(dir, { recursive: true, force: true });
});

const oldPrimary = 'a'.repeat(32);
const thisSite = 'b'.repeat(32);
const history: Generation[] = [{ id: '1'.repeat(32), startedAt: 1, primarySite: oldPrimary }];

function dataDirWithSecondaryJournal(): { dataDir: string; config: PrimaryFileConfig } {
  const dataDir = mkdtempSync(join(tmpdir(), 'cyclerep-promotion-'));
  dirs.push(dataDir);
  // What a secondary leaves: its segments and state; any of them would refuse a primary's replay.
  mkdirSync(join(dataDir, 'journal'));
  writeFileSync(join(dataDir, 'journal', '0000000000000001.seg'), 'a secondary segment');
  writeFileSync(join(dataDir, 'journal', 'journal.state'), 'its state');
  const config = validateConfig({
    group: 'g',
    role: 'primary',
    dataDir,
    volumes: [{ name: 'data', size: '1MiB' }],
    journal: { capacity: '64MiB', segmentSize: '8MiB' },
  }) as PrimaryFileConfig;
  return { dataDir, config };
}

function planFor(config: PrimaryFileConfig, applied: number) {
  return planPromotion({
    site: thisSite,
    applied,
    history,
    newGenerationId: '2'.repeat(32),
    volumes: [{ id: 0, name: 'data', sizeBytes: 1024 ** 2, inode: '7' }],
    config,
  });
}

/** The primary the converted directory replays into: its capture cycle and collected number. */
function replayedPrimary(dataDir: string, config: PrimaryFileConfig): PrimaryGroup {
  const { journal, records } = SegmentJournal.open<PrimaryRecord>({
    fs: nodeFileSystem,
    directory: join(dataDir, 'journal'),
    segmentBytesMax: config.journal.segmentSize,
    codec: primaryRecordCodec,
    checkpoint: () => [],
  });
  void journal.close();
  const site = readSiteFile(nodeFileSystem, dataDir);
  assert.equal(site?.role, 'primary');
  const generations = site?.role === 'primary' ? (site.generations as Generation[]) : [];
  return PrimaryGroup.recover(
    primaryConfig({ secondaries: ['old'], identity: { site: thisSite, generations } }),
    () => 0.5,
    records,
  );
}

test('a promotion leaves a primary site.json with the extended chain and a journal that starts after the cycle', async () => {
  const { dataDir, config } = dataDirWithSecondaryJournal();
  await changeRole(nodeFileSystem, dataDir, planFor(config, 41));
  const site = readSiteFile(nodeFileSystem, dataDir);
  assert.ok(site?.role === 'primary');
  assert.equal(site.site, thisSite);
  assert.deepEqual(site.generations, [
    ...history,
    { id: '2'.repeat(32), startedAt: 42, primarySite: thisSite },
  ]);
  assert.deepEqual(site.promotedFrom, { cycle: 41, generation: '1'.repeat(32) });
  assert.equal(readRoleChangeFile(nodeFileSystem, dataDir), null, 'role-change.json is gone');
  const group = replayedPrimary(dataDir, config);
  assert.equal(group.collected, 41);
  assert.equal(group.closed, 41);
  assert.equal(group.capture, 42, 'capture goes on from the promoted cycle');
});

test('a promotion cut short after role-change.json is finished by running the plan again, however far it got', async () => {
  for (const stage of ['marker only', 'journal half made', 'site.json written']) {
    const { dataDir, config } = dataDirWithSecondaryJournal();
    const plan = planFor(config, 9);
    if (stage === 'marker only') {
      writeFileAtomic(nodeFileSystem, roleChangeFilePath(dataDir), JSON.stringify(plan));
    } else {
      await changeRole(nodeFileSystem, dataDir, plan);
      writeFileAtomic(nodeFileSystem, roleChangeFilePath(dataDir), JSON.stringify(plan));
      if (stage === 'journal half made')
        writeFileSync(join(dataDir, 'journal', '0000000000000009.seg'), 'torn leftovers');
    }
    const found = readRoleChangeFile(nodeFileSystem, dataDir);
    assert.ok(found, stage);
    await finishRoleChange(nodeFileSystem, dataDir, found);
    assert.equal(readRoleChangeFile(nodeFileSystem, dataDir), null, stage);
    assert.ok(!readdirSync(join(dataDir, 'journal')).includes('0000000000000009.seg'), 'leftovers removed');
    const group = replayedPrimary(dataDir, config);
    assert.equal(group.capture, 10, stage);
    assert.equal(group.collected, 9, stage);
  }
});

test('a damaged role-change.json is refused naming the file, never guessed', () => {
  const { dataDir, config } = dataDirWithSecondaryJournal();
  const plan = planFor(config, 3);
  const cases: [string, RegExp][] = [
    ['{ not json', /unreadable/],
    [JSON.stringify({ ...plan, fromCycle: -1 }), /fromCycle: malformed/],
    [JSON.stringify({ ...plan, generations: history }), /generations: fewer than two/],
    [JSON.stringify({ ...plan, fromCycle: 5 }), /does not start after fromCycle/],
    [JSON.stringify({ ...plan, site: 'c'.repeat(32) }), /belongs to site/],
  ];
  for (const [text, pattern] of cases) {
    writeFileSync(roleChangeFilePath(dataDir), text);
    assert.throws(
      () => readRoleChangeFile(nodeFileSystem, dataDir),
      (error: unknown) =>
        error instanceof StorageError &&
        error.message.startsWith(roleChangeFilePath(dataDir)) &&
        pattern.test(error.message),
      text,
    );
  }
  assert.ok(readFileSync(roleChangeFilePath(dataDir)).length > 0, 'left as found for a look');
});

test("a primary's data directory made a secondary's: applied at the cycle, unbound, its bitmaps gone", async () => {
  const { dataDir } = dataDirWithSecondaryJournal();
  mkdirSync(join(dataDir, 'tracking'));
  writeFileSync(join(dataDir, 'tracking', 'dr1.bitmap'), 'a bitmap of the link this site fed');
  const secondaryConfig = validateConfig({
    group: 'g',
    role: 'secondary',
    name: 'main',
    dataDir,
    journal: { segmentSize: '8MiB' },
  }) as SecondaryFileConfig;
  const ownChain: Generation[] = [{ id: '3'.repeat(32), startedAt: 1, primarySite: thisSite }];
  await changeRole(nodeFileSystem, dataDir, {
    to: 'secondary',
    site: thisSite,
    fromCycle: 17,
    generations: ownChain,
    supersededBy: '4'.repeat(32),
    divergence: null,
    volumes: [{ id: 0, name: 'data', sizeBytes: 1024 ** 2, inode: '7' }],
    config: secondaryConfig,
  });
  assert.equal(readRoleChangeFile(nodeFileSystem, dataDir), null);
  assert.deepEqual(readdirSync(join(dataDir, 'tracking')), []);
  const site = readSiteFile(nodeFileSystem, dataDir);
  assert.ok(site?.role === 'secondary');
  assert.equal(site.binding, null, 'it follows nobody until the superseding primary says hello');
  assert.deepEqual(site.demotedFrom, { cycle: 17, generations: ownChain, supersededBy: '4'.repeat(32) });
  assert.deepEqual(site.shape?.volumes, [{ name: 'data', sizeBytes: 1024 ** 2 }]);
  const { journal, records } = SegmentJournal.open<SecondaryRecord>({
    fs: nodeFileSystem,
    directory: join(dataDir, 'journal'),
    segmentBytesMax: secondaryConfig.journal.segmentSize,
    codec: secondaryRecordCodec,
    checkpoint: () => [],
  });
  await journal.close();
  assert.ok(records.length > 0);
  for (const record of records) assert.deepEqual(record, { kind: 'applied', cycle: 17, consistent: true });
});
