/**
 * `<dataDir>/site.json`: what a data directory holds (role, the validated configuration, and for a
 * secondary the volumes it took from the primary), so that offline tools such as
 * `cyclerep recover --data-dir D` need nothing else.
 */
import { existsSync, mkdirSync, readFileSync, renameSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { StorageError } from '../core/errors.ts';
import {
  type Binding,
  type Generation,
  generationChainProblem,
  isBinding,
  isId,
  type SiteId,
} from '../core/identity.ts';
import type { GroupShape } from '../core/types.ts';
import type { PrimaryFileConfig, SecondaryFileConfig } from '../ops/config.ts';

/**
 * `site` is the site's identity, made at creation; a primary keeps its generation chain, a
 * secondary the primary and generation it follows (null until its first accepted hello). Files
 * written before identities existed lack them; the node then makes them and writes them back.
 */
export type SiteFile =
  | { role: 'primary'; config: PrimaryFileConfig; site?: SiteId; generations?: Generation[] }
  | {
      role: 'secondary';
      config: SecondaryFileConfig;
      shape: GroupShape | null;
      site?: SiteId;
      binding?: Binding | null;
    };

export function siteFilePath(dataDir: string): string {
  return join(dataDir, 'site.json');
}

export function readSiteFile(dataDir: string): SiteFile | null {
  const path = siteFilePath(dataDir);
  if (!existsSync(path)) return null;
  let document: unknown;
  try {
    document = JSON.parse(readFileSync(path, 'utf8'));
  } catch (cause) {
    throw new StorageError('journal-corrupt', `${path}: unreadable: ${(cause as Error).message}`, { cause });
  }
  const problem = problemOf(document);
  if (problem) throw new StorageError('journal-corrupt', `${path}: ${problem}; refusing to guess`);
  return document as SiteFile;
}

/** What makes a parsed site.json unusable, or null; never used silently when damaged. */
function problemOf(document: unknown): string | null {
  const site = document as {
    role?: unknown;
    config?: { role?: unknown; dataDir?: unknown };
    shape?: unknown;
  };
  if (site === null || typeof site !== 'object') return 'not an object';
  if (site.role !== 'primary' && site.role !== 'secondary') return `role: ${JSON.stringify(site.role)}`;
  if (typeof site.config !== 'object' || site.config === null || site.config.role !== site.role)
    return 'config: missing or of another role';
  if (typeof site.config.dataDir !== 'string') return 'config.dataDir: missing';
  if (site.role === 'secondary' && site.shape !== null && !isShape(site.shape)) return 'shape: malformed';
  return identityProblemOf(document as SiteFile);
}

/** The identity fields, when present, must be whole: a damaged identity is never replaced by a new one. */
function identityProblemOf(site: SiteFile): string | null {
  if (site.site !== undefined && !isId(site.site)) return 'site: not 32 hex digits';
  if (site.role === 'primary' && (site.site === undefined) !== (site.generations === undefined))
    return 'site and generations: one without the other';
  if (site.role === 'primary' && site.site !== undefined) {
    if (!Array.isArray(site.generations)) return 'generations: not a list';
    const problem = generationChainProblem(site.site, site.generations);
    if (problem) return `generations: ${problem}`;
  }
  if (
    site.role === 'secondary' &&
    site.binding !== undefined &&
    site.binding !== null &&
    !isBinding(site.binding)
  )
    return 'binding: malformed';
  return null;
}

function isShape(value: unknown): boolean {
  const shape = value as GroupShape;
  return (
    typeof shape === 'object' &&
    shape !== null &&
    typeof shape.group === 'string' &&
    Number.isSafeInteger(shape.blockBytes) &&
    shape.blockBytes > 0 &&
    Array.isArray(shape.volumes) &&
    shape.volumes.every(
      (volume) =>
        typeof volume?.name === 'string' && Number.isSafeInteger(volume.sizeBytes) && volume.sizeBytes > 0,
    )
  );
}

/** Written to a temporary name and renamed, so a crash leaves the old file or the new one. */
export function writeSiteFile(dataDir: string, site: SiteFile): void {
  mkdirSync(dataDir, { recursive: true });
  const path = siteFilePath(dataDir);
  writeFileSync(`${path}.tmp`, `${JSON.stringify(site, null, 2)}\n`);
  renameSync(`${path}.tmp`, path);
}
