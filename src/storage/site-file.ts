/**
 * `<dataDir>/site.json`: what a data directory holds (role, the validated configuration, and for a
 * secondary the volumes it took from the primary), so that offline tools such as
 * `cyclerep recover --data-dir D` need nothing else.
 */
import { existsSync, mkdirSync, readFileSync, renameSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { StorageError } from '../core/errors.ts';
import type { GroupShape } from '../core/types.ts';
import type { PrimaryFileConfig, SecondaryFileConfig } from '../ops/config.ts';

export type SiteFile =
  | { role: 'primary'; config: PrimaryFileConfig }
  | { role: 'secondary'; config: SecondaryFileConfig; shape: GroupShape | null };

export function siteFilePath(dataDir: string): string {
  return join(dataDir, 'site.json');
}

export function readSiteFile(dataDir: string): SiteFile | null {
  const path = siteFilePath(dataDir);
  if (!existsSync(path)) return null;
  try {
    return JSON.parse(readFileSync(path, 'utf8')) as SiteFile;
  } catch (cause) {
    throw new StorageError('journal-corrupt', `${path}: unreadable: ${(cause as Error).message}`, { cause });
  }
}

/** Written to a temporary name and renamed, so a crash leaves the old file or the new one. */
export function writeSiteFile(dataDir: string, site: SiteFile): void {
  mkdirSync(dataDir, { recursive: true });
  const path = siteFilePath(dataDir);
  writeFileSync(`${path}.tmp`, `${JSON.stringify(site, null, 2)}\n`);
  renameSync(`${path}.tmp`, path);
}
