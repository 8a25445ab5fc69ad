/**
 * A site's identity and its group history as site.json keeps them: read at start, made once when
 * the site is created (or, for a data directory written before identities existed, the first time
 * it starts with this version), and never replaced afterwards. A damaged identity is refused by
 * readSiteFile; it is never silently made anew, since a new identity makes a new primary.
 */
import {
  type Binding,
  idBytes,
  newPrimaryIdentity,
  type PrimaryIdentity,
  type SiteId,
} from '../core/identity.ts';
import type { FileSystem } from '../io/file-system.ts';
import type { Logger } from '../ops/logger.ts';
import { type DemotedRecord, readSiteFile } from '../storage/site-file.ts';

/** 128 bits from the environment's random source (the system's, in production), as 32 hex digits. */
export function randomId(randomBytes: (count: number) => Uint8Array): string {
  return Buffer.from(randomBytes(idBytes)).toString('hex');
}

/** The primary's identity from site.json, or a new site with its first generation. */
export function loadPrimaryIdentity(
  fs: FileSystem,
  dataDir: string,
  logger: Logger,
  randomBytes: (count: number) => Uint8Array,
): PrimaryIdentity {
  const site = readSiteFile(fs, dataDir);
  if (site?.role === 'primary' && site.site !== undefined && site.generations !== undefined)
    return { site: site.site, generations: site.generations };
  const identity = newPrimaryIdentity(() => randomId(randomBytes));
  logger.info('site-identity-created', {
    site: identity.site,
    generation: identity.generations[0]?.id ?? '',
    reason: site ? `${dataDir}/site.json had no primary identity yet` : 'new data directory',
  });
  return identity;
}

/**
 * The secondary's own identity, the primary it follows and, for a site that was a primary, its own
 * chain and cycle (which primary it may follow), from site.json; a new identity if none.
 */
export function loadSecondaryIdentity(
  fs: FileSystem,
  dataDir: string,
  logger: Logger,
  randomBytes: (count: number) => Uint8Array,
): { site: SiteId; binding: Binding | null; demotedFrom: DemotedRecord | null } {
  const site = readSiteFile(fs, dataDir);
  if (site?.role === 'secondary' && site.site !== undefined)
    return { site: site.site, binding: site.binding ?? null, demotedFrom: site.demotedFrom ?? null };
  const identity = { site: randomId(randomBytes), binding: null, demotedFrom: null };
  logger.info('site-identity-created', {
    site: identity.site,
    reason: site ? `${dataDir}/site.json had no identity yet` : 'new data directory',
  });
  return identity;
}
