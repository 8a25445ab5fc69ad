/**
 * `cyclerep accept-image --data-dir D --volume NAME` (or `--all`), offline, with the site
 * stopped: takes images that were replaced deliberately (restored from a backup, the data
 * directory copied to another file system) as this site's own, by recording their inodes in
 * site.json. Each image must still have the recorded size; nothing else about it can be checked,
 * so the operator vouches for its content (docs/storage.md, "Volume images and site.json").
 */
import type { FileStats } from '../io/file-system.ts';
import { nodeFileSystem } from '../io/node-file-system.ts';
import { imagePath, readSiteFile, siteFilePath, writeSiteFile } from '../storage/site-file.ts';
import { exitCodes, startFailureCode } from './exit-codes.ts';

export function runAcceptImage(options: {
  dataDir: string | undefined;
  volume: string | undefined;
  all: boolean;
}): number {
  const say = (line: string): void => {
    process.stderr.write(`cyclerep accept-image: ${line}\n`);
  };
  const { dataDir, volume, all } = options;
  if (!dataDir || (!volume && !all) || (volume && all)) {
    say('--data-dir D and either --volume NAME or --all are required');
    return exitCodes.usage;
  }
  let site: ReturnType<typeof readSiteFile>;
  try {
    site = readSiteFile(nodeFileSystem, dataDir);
  } catch (error) {
    say((error as Error).message);
    return startFailureCode(error);
  }
  const records = site?.volumes;
  if (!site || !records) {
    say(`${siteFilePath(dataDir)} records no volume images: nothing to accept`);
    return exitCodes.usage;
  }
  const chosen = all ? records : records.filter((candidate) => candidate.name === volume);
  if (chosen.length === 0) {
    say(
      `no volume "${volume}" in ${siteFilePath(dataDir)} (it holds ${records.map((r) => r.name).join(', ')})`,
    );
    return exitCodes.usage;
  }
  const accepted: string[] = [];
  for (const record of chosen) {
    const path = imagePath(dataDir, record.name);
    let stats: FileStats;
    try {
      const fd = nodeFileSystem.openSync(path, 'r');
      try {
        stats = nodeFileSystem.fstatSync(fd);
      } finally {
        nodeFileSystem.closeSync(fd);
      }
    } catch (error) {
      say(`${path}: ${(error as Error).message}; nothing accepted`);
      return exitCodes.damaged;
    }
    if (stats.size !== record.sizeBytes) {
      say(
        `${path} is ${stats.size} bytes, expected ${record.sizeBytes}; only an image of the recorded size is accepted; nothing accepted`,
      );
      return exitCodes.damaged;
    }
    accepted.push(`accepted ${path} as volume "${record.name}" (inode ${stats.inode}, was ${record.inode})`);
    record.inode = stats.inode;
  }
  // Every image checked first: all of them are accepted, or none.
  writeSiteFile(nodeFileSystem, dataDir, site);
  process.stdout.write(`${accepted.join('\n')}\n`);
  return exitCodes.ok;
}
