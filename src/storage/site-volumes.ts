/**
 * Opening a site's volumes at start. Images are created only when the site is: site.json absent
 * and nothing of an earlier site in the data directory (a creation cut short is finished, as its
 * marker records it: site-creation.ts). From then on every image must be the one created, at its
 * recorded size; anything else is refused before a byte is written anywhere.
 */
import { join } from 'node:path';
import { StorageError } from '../core/errors.ts';
import type { GroupShape } from '../core/types.ts';
import type { FileSystem } from '../io/file-system.ts';
import { creationMarkerPath, writeCreationMarker } from './site-creation.ts';
import {
  type ConfiguredShape,
  checkConfigAgainstSite,
  imagePath,
  type RecordedShape,
  siteFilePath,
  type VolumeRecord,
} from './site-file.ts';
import { VolumeFile } from './volume-file.ts';

/** A site's volumes, open, in id order, with the records site.json keeps of them. */
export interface SiteVolumes {
  shape: GroupShape;
  files: VolumeFile[];
  records: VolumeRecord[];
}

/**
 * An existing site: the configuration is checked against site.json (ConfigError), then every
 * image against its record (StorageError: missing, emptied, resized or replaced). Writes nothing.
 */
export function openSiteVolumes(
  fs: FileSystem,
  dataDir: string,
  recorded: RecordedShape,
  configured: ConfiguredShape,
): SiteVolumes {
  checkConfigAgainstSite(recorded, configured, dataDir);
  const files: VolumeFile[] = [];
  try {
    for (const volume of recorded.volumes) {
      const path = imagePath(dataDir, volume.name);
      files.push(VolumeFile.open(fs, path, volume, recorded.blockBytes, { dataDir, volume: volume.name }));
    }
  } catch (error) {
    for (const file of files) file.close();
    throw error;
  }
  return {
    shape: {
      group: recorded.group,
      blockBytes: recorded.blockBytes,
      volumes: recorded.volumes.map(({ name, sizeBytes }) => ({ name, sizeBytes })),
    },
    files,
    records: recordsOf(files, recorded.volumes),
  };
}

/**
 * A new site: its images created sparse, in the order given, which fixes their ids for good. The
 * creation marker is durable first, so a creation cut short is finished by the next start.
 */
export function createSiteVolumes(fs: FileSystem, dataDir: string, shape: GroupShape): SiteVolumes {
  assertNoEarlierSite(fs, dataDir);
  writeCreationMarker(fs, dataDir, shape);
  return openEach(shape, (volume) =>
    VolumeFile.create(fs, imagePath(dataDir, volume.name), volume.sizeBytes, shape.blockBytes),
  );
}

/**
 * Finishes a site creation cut short, as the creation marker records it (`shape`): the data
 * directory must hold nothing but images that creation may have made. Writes no image's content.
 */
export function finishSiteVolumes(fs: FileSystem, dataDir: string, shape: GroupShape): SiteVolumes {
  const marker = creationMarkerPath(dataDir);
  const named = new Set(shape.volumes.map((volume) => `${volume.name}.img`));
  const strangers = [
    ...filesIn(fs, join(dataDir, 'volumes'))
      .filter((name) => !named.has(name))
      .map((name) => join(dataDir, 'volumes', name)),
    ...filesIn(fs, join(dataDir, 'journal')).map((name) => join(dataDir, 'journal', name)),
  ];
  if (strangers.length > 0)
    throw new StorageError(
      'site-file-corrupt',
      `${siteFilePath(dataDir)} is missing and ${marker} records a site creation cut short, but ${strangers.slice(0, 4).join(', ')}${strangers.length > 4 ? ', ...' : ''} cannot be of that creation; refusing to guess. Restore site.json, or move the data directory away to start afresh`,
    );
  return openEach(shape, (volume) =>
    VolumeFile.finishCreation(
      fs,
      imagePath(dataDir, volume.name),
      volume.sizeBytes,
      shape.blockBytes,
      marker,
    ),
  );
}

/** Opens (or creates) every volume of `shape` in order; closes the ones opened if one fails. */
function openEach(
  shape: GroupShape,
  open: (volume: { name: string; sizeBytes: number }) => VolumeFile,
): SiteVolumes {
  const files: VolumeFile[] = [];
  try {
    for (const volume of shape.volumes) files.push(open(volume));
  } catch (error) {
    for (const file of files) file.close();
    throw error;
  }
  return { shape, files, records: recordsOf(files, shape.volumes) };
}

function recordsOf(files: VolumeFile[], volumes: { name: string; sizeBytes: number }[]): VolumeRecord[] {
  return volumes.map((volume, id) => ({
    id,
    name: volume.name,
    sizeBytes: volume.sizeBytes,
    inode: (files[id] as VolumeFile).inode,
  }));
}

/**
 * Without site.json, images or journal segments in the data directory are what is left of a site
 * whose record was lost (or whose creation was interrupted): refused, never overwritten.
 */
export function assertNoEarlierSite(fs: FileSystem, dataDir: string): void {
  const leftovers = ['volumes', 'journal'].flatMap((folder) =>
    filesIn(fs, join(dataDir, folder)).map((name) => join(folder, name)),
  );
  if (leftovers.length === 0) return;
  throw new StorageError(
    'site-file-corrupt',
    `${siteFilePath(dataDir)} is missing, but ${dataDir} holds ${leftovers.slice(0, 4).join(', ')}${leftovers.length > 4 ? ', ...' : ''}: the data of a site whose record was lost; refusing to create a new site over it. Restore site.json, or move the data directory away to start afresh`,
  );
}

function filesIn(fs: FileSystem, directory: string): string[] {
  try {
    return fs.readdirSync(directory);
  } catch (cause) {
    if ((cause as NodeJS.ErrnoException).code === 'ENOENT') return [];
    throw cause;
  }
}
