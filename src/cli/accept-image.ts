/**
 * `cyclerep accept-image --data-dir D --volume NAME`, offline, with the site stopped: takes an
 * image that was replaced deliberately (restored from a backup, the data directory copied to
 * another file system) as this site's own, by recording its inode in site.json. The image must
 * still have the recorded size; nothing else about it can be checked, so the operator vouches for
 * its content (docs/storage.md, "Volume images").
 */
import { closeSync, fstatSync, openSync } from 'node:fs';
import { imagePath, readSiteFile, siteFilePath, writeSiteFile } from '../storage/site-file.ts';
import { exitCodeOfStartFailure } from './daemon.ts';
import { exitCodes } from './exit-codes.ts';

export function runAcceptImage(dataDir: string | undefined, volume: string | undefined): number {
  const say = (line: string): void => {
    process.stderr.write(`cyclerep accept-image: ${line}\n`);
  };
  if (!dataDir || !volume) {
    say('--data-dir D and --volume NAME are required');
    return exitCodes.usage;
  }
  let site: ReturnType<typeof readSiteFile>;
  try {
    site = readSiteFile(dataDir);
  } catch (error) {
    say((error as Error).message);
    return exitCodeOfStartFailure(error);
  }
  const records = site?.volumes;
  if (!site || !records) {
    say(`${siteFilePath(dataDir)} records no volume images: nothing to accept`);
    return exitCodes.usage;
  }
  const record = records.find((candidate) => candidate.name === volume);
  if (!record) {
    say(
      `no volume "${volume}" in ${siteFilePath(dataDir)} (it holds ${records.map((r) => r.name).join(', ')})`,
    );
    return exitCodes.usage;
  }
  const path = imagePath(dataDir, volume);
  let stats: { size: bigint; ino: bigint };
  try {
    const fd = openSync(path, 'r');
    stats = fstatSync(fd, { bigint: true });
    closeSync(fd);
  } catch (error) {
    say(`${path}: ${(error as Error).message}`);
    return exitCodes.damaged;
  }
  if (Number(stats.size) !== record.sizeBytes) {
    say(
      `${path} is ${stats.size} bytes, expected ${record.sizeBytes}; only an image of the recorded size is accepted`,
    );
    return exitCodes.damaged;
  }
  const previous = record.inode;
  record.inode = String(stats.ino);
  writeSiteFile(dataDir, site);
  process.stdout.write(`accepted ${path} as volume "${volume}" (inode ${record.inode}, was ${previous})\n`);
  return exitCodes.ok;
}
