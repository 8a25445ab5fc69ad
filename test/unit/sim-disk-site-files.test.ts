// Proves that what a new site creates outside its journal (the data directory, volumes/, the images,
// site.json) is durable once the call that made it returns: over the simulated disk with strict POSIX
// metadata, a machine crash right after loses every entry change that no directory sync covered, and
// the site must still find everything it created, whether its data directory existed before or not.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { syncDirectorySync } from '../../src/io/file-system.ts';
import type { PrimaryFileConfig } from '../../src/ops/config.ts';
import { Random } from '../../src/sim/random.ts';
import { SimFileSystem } from '../../src/sim/sim-file-system.ts';
import { imagePath, readSiteFile, writeSiteFile } from '../../src/storage/site-file.ts';
import { createSiteVolumes } from '../../src/storage/site-volumes.ts';
import { VolumeFile } from '../../src/storage/volume-file.ts';
import { shape } from './fixtures.ts';

/** A disk where a machine crash loses every entry change not synced; the synchronous calls never wait. */
function strictDisk(): SimFileSystem {
  return new SimFileSystem({
    random: new Random(1),
    scheduler: { after: () => assert.fail('a site is created with synchronous calls only') },
    syncDelayMsMax: 0,
    ioDelayMsMax: 0,
    metadata: 'posix',
    crashOdds: { entryKept: 0 },
  });
}

/** A data directory the operator made beforehand (durable), and one the site makes itself. */
const dataDirectories = [
  { dataDir: '/site', prepare: (fs: SimFileSystem) => makeDurableDirectory(fs, '/site') },
  { dataDir: '/srv/replicas/site', prepare: () => {} },
];

function makeDurableDirectory(fs: SimFileSystem, path: string): void {
  fs.mkdirSync(path, 0o700);
  syncDirectorySync(fs, '/');
}

for (const { dataDir, prepare } of dataDirectories) {
  test(`a new site's images survive a power loss right after their creation (data directory ${dataDir})`, () => {
    const fs = strictDisk();
    prepare(fs);
    const created = createSiteVolumes(fs, dataDir, shape);
    for (const file of created.files) file.close();
    fs.crash('machine');
    for (const record of created.records) {
      const image = VolumeFile.open(fs, imagePath(dataDir, record.name), record, shape.blockBytes, {
        dataDir,
        volume: record.name,
      });
      image.close();
    }
  });

  test(`site.json survives a power loss right after it was written (data directory ${dataDir})`, () => {
    const fs = strictDisk();
    prepare(fs);
    const config = { role: 'primary', group: 'g', dataDir } as unknown as PrimaryFileConfig;
    writeSiteFile(fs, dataDir, { role: 'primary', config });
    fs.crash('machine');
    assert.deepEqual(readSiteFile(fs, dataDir), { role: 'primary', config });
  });
}
