// Proves that a site's creation (images, site.json, the journal's directory) may be cut short at any
// step and the next start finishes it, and that finishing it never touches a file the creation did
// not make. The real start of a primary's storage (openPrimaryStorage: identity, images, site.json,
// journal) runs over the simulated disk; the process dies before its Nth file system call, for every
// N up to a whole start, followed by a process crash or a power loss that loses every unsynced entry
// change; the next start must open a site that then survives a power loss and starts again as an
// existing site. A data directory the creation did not leave that way is refused, naming the path
// and what to do, and left exactly as it was.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { StorageError } from '../../src/core/errors.ts';
import type { SiteEnvironment } from '../../src/io/environment.ts';
import { type FileSystem, syncDirectorySync } from '../../src/io/file-system.ts';
import { openPrimaryStorage } from '../../src/node/primary/primary-storage.ts';
import type { PrimaryFileConfig } from '../../src/ops/config.ts';
import { validateConfig } from '../../src/ops/config.ts';
import type { Logger } from '../../src/ops/logger.ts';
import { Random } from '../../src/sim/random.ts';
import { SimFileSystem } from '../../src/sim/sim-file-system.ts';
import { creationMarkerPath } from '../../src/storage/site-creation.ts';
import { imagePath, readSiteFile, siteFilePath } from '../../src/storage/site-file.ts';

const dataDir = '/site';
const config = validateConfig(
  {
    group: 'g',
    role: 'primary',
    dataDir,
    blockSize: 512,
    volumes: [
      { name: 'data', size: 64 * 512 },
      { name: 'log', size: 16 * 512 },
    ],
    secondaries: [{ name: 'dr', address: '127.0.0.1:7400' }],
  },
  'test',
) as PrimaryFileConfig;

const silent: Logger = { log() {}, info() {}, warn() {}, error() {} };

/** A disk where a power loss keeps no unsynced entry change; a site is opened with synchronous calls only. */
function strictDisk(seed: number): SimFileSystem {
  const fs = new SimFileSystem({
    random: new Random(seed),
    scheduler: { after: () => assert.fail('a site is opened with synchronous calls only') },
    syncDelayMsMax: 0,
    ioDelayMsMax: 0,
    metadata: 'posix',
    crashOdds: { entryKept: 0 },
  });
  fs.mkdirSync(dataDir, 0o700);
  syncDirectorySync(fs, '/');
  return fs;
}

class ProcessDied extends Error {}

/** `fs` as a process sees it that dies before its call number `callsMax` (counted from 0). */
function dyingAt(fs: FileSystem, callsMax: number): FileSystem {
  let calls = 0;
  return new Proxy(fs, {
    get(target, key, receiver) {
      const value = Reflect.get(target, key, receiver);
      if (typeof value !== 'function') return value;
      return (...args: unknown[]) => {
        if (calls++ >= callsMax) throw new ProcessDied(`died before call ${calls - 1}`);
        return value.apply(target, args);
      };
    },
  });
}

function environmentOf(fs: FileSystem): SiteEnvironment {
  return {
    fs,
    clock: undefined as unknown as SiteEnvironment['clock'],
    random: () => 0.5,
    randomBytes: (count) => new Uint8Array(count).fill(7),
  };
}

/** The start of a primary's storage, closed again as kill -9 leaves it. */
function start(fs: FileSystem): void {
  const storage = openPrimaryStorage(config, environmentOf(fs), silent, () => []);
  storage.journal.abandon();
  for (const volume of storage.volumes) volume.close();
}

/** Every file and its bytes as a read sees them: to show that a refused start changed nothing. */
function snapshot(fs: SimFileSystem): string[] {
  return fs.listFiles().map((path) => `${path} ${Buffer.from(fs.cachedBytes(path) ?? []).toString('hex')}`);
}

/** The site must be whole: site.json with both images recorded, no marker, and it starts again after a power loss. */
function assertWholeSite(fs: SimFileSystem, where: string): void {
  const site = readSiteFile(fs, dataDir);
  assert.ok(site?.volumes, `${where}: site.json records the volumes`);
  assert.deepEqual(
    site.volumes.map((volume) => volume.name),
    ['data', 'log'],
    where,
  );
  assert.ok(!fs.existsSync(creationMarkerPath(dataDir)), `${where}: the creation marker is gone`);
  fs.crash('machine');
  start(fs);
  assert.deepEqual(readSiteFile(fs, dataDir), site, `${where}: the site reopened as it was recorded`);
}

test('a site creation cut short at any step, by kill -9 or a power loss, is finished by the next start', () => {
  let finished = 0;
  for (const crash of ['process', 'machine'] as const) {
    for (let callsMax = 0; ; callsMax++) {
      const where = `${crash} crash before call ${callsMax}`;
      const fs = strictDisk(callsMax + 1);
      let died = false;
      try {
        start(dyingAt(fs, callsMax));
      } catch (error) {
        if (!(error instanceof ProcessDied)) throw error;
        died = true;
      }
      if (!died) break;
      const hadImages = fs.listFiles().some((path) => path.endsWith('.img'));
      fs.crash(crash);
      if (hadImages && !readSiteFile(fs, dataDir)) finished++;
      start(fs);
      assertWholeSite(fs, where);
    }
  }
  assert.ok(finished > 0, 'some crash came after images were made and before site.json');
});

test('a site whose disk filled up after its images were made, before site.json, starts once there is room', () => {
  const fs = strictDisk(1);
  const full = fs.failWith({ call: 'write', code: 'ENOSPC', path: `${siteFilePath(dataDir)}.tmp` });
  assert.throws(() => start(fs.forProcess()), /ENOSPC/);
  assert.ok(fs.existsSync(imagePath(dataDir, 'data')) && !fs.existsSync(siteFilePath(dataDir)));
  full.cancel();
  fs.crash('process');
  start(fs.forProcess());
  assertWholeSite(fs, 'after the full disk');
});

/** A creation cut short after its images were made, before site.json: the state the next start finishes. */
function interruptedCreation(): SimFileSystem {
  const fs = strictDisk(1);
  const full = fs.failWith({ call: 'write', code: 'ENOSPC', path: `${siteFilePath(dataDir)}.tmp` });
  assert.throws(() => start(fs), /ENOSPC/);
  full.cancel();
  return fs;
}

/** Replaces a file's content, durably: what an operator's copy leaves. */
function putFile(fs: SimFileSystem, path: string, bytes: Uint8Array): void {
  fs.removeIfPresentSync(path);
  const fd = fs.openSync(path, 'w', 0o600);
  fs.writeSync(fd, bytes, 0, bytes.length, 0);
  fs.fsyncSync(fd);
  fs.closeSync(fd);
  syncDirectorySync(fs, path.slice(0, path.lastIndexOf('/')));
}

test('finishing a creation never touches a file it did not make: refused, naming the path and what to do', () => {
  const plants: { what: string; plant: (fs: SimFileSystem) => void; reason: RegExp }[] = [
    {
      what: 'an image of another size in the place of one the creation names',
      plant: (fs) => putFile(fs, imagePath(dataDir, 'log'), new Uint8Array(1024).fill(9)),
      reason:
        /\/site\/volumes\/log\.img is 1024 bytes, but the site creation \/site\/site-creation\.json records, cut short, makes it 8192: not an image that creation made; refusing to touch it\. Move it away/,
    },
    {
      what: 'an image the creation does not name',
      plant: (fs) => putFile(fs, `${dataDir}/volumes/other.img`, new Uint8Array(512).fill(9)),
      reason:
        /\/site\/site\.json is missing and \/site\/site-creation\.json records a site creation cut short, but \/site\/volumes\/other\.img cannot be of that creation; refusing to guess\. Restore site\.json, or move the data directory away/,
    },
    {
      what: 'a journal segment',
      plant: (fs) => {
        fs.mkdirSync(`${dataDir}/journal`, 0o700);
        putFile(fs, `${dataDir}/journal/0000000000000001.seg`, new Uint8Array(64).fill(9));
      },
      reason: /but \/site\/journal\/0000000000000001\.seg cannot be of that creation/,
    },
    {
      what: 'a damaged creation marker',
      plant: (fs) => putFile(fs, creationMarkerPath(dataDir), Buffer.from('{"creating": {"group": "../x"}}')),
      reason:
        /\/site\/site-creation\.json: creating\.group: .*; it records a site creation that was cut short/,
    },
  ];
  for (const { what, plant, reason } of plants) {
    const fs = interruptedCreation();
    plant(fs);
    const before = snapshot(fs);
    assert.throws(
      () => start(fs),
      (error) => error instanceof StorageError && reason.test(error.message),
      what,
    );
    assert.deepEqual(snapshot(fs), before, `${what}: the refused start changed nothing`);
  }
});

test('images without site.json and without a creation marker are refused as before, naming the path', () => {
  const fs = interruptedCreation();
  fs.unlinkSync(creationMarkerPath(dataDir));
  const before = snapshot(fs);
  assert.throws(
    () => start(fs),
    /\/site\/site\.json is missing, but \/site holds volumes\/data\.img, volumes\/log\.img: the data of a site whose record was lost; refusing to create a new site over it\. Restore site\.json, or move the data directory away to start afresh/,
  );
  assert.deepEqual(snapshot(fs), before);
});
