/**
 * Which volumes a starting site opens, shared by both roles: an existing site (site.json present)
 * opens the images it created, matched by name against the configuration, and refuses any that is
 * missing, emptied, resized or replaced; a site whose creation was cut short finishes it
 * (site-creation.ts); a new site creates them. Nothing here writes site.json:
 * the node writes it when the site is created and, for an existing one, once every check of the
 * start passed, with its identity (site-identity.ts) beside the volume records.
 */
import { ConfigError } from '../core/errors.ts';
import type { GroupShape } from '../core/types.ts';
import type { FileSystem } from '../io/file-system.ts';
import type { PrimaryFileConfig, SecondaryFileConfig } from '../ops/config.ts';
import { readCreationMarker } from '../storage/site-creation.ts';
import {
  type ConfiguredShape,
  checkConfigAgainstSite,
  readSiteFile,
  recordedShape,
  type SiteFile,
  siteFilePath,
} from '../storage/site-file.ts';
import {
  createSiteVolumes,
  finishSiteVolumes,
  openSiteVolumes,
  type SiteVolumes,
} from '../storage/site-volumes.ts';

/** A site's open volumes; `created` when this start made them (site.json must be written at once). */
export interface OpenedSite {
  volumes: SiteVolumes;
  created: boolean;
}

function configuredShapeOf(config: PrimaryFileConfig | SecondaryFileConfig): ConfiguredShape {
  return {
    group: config.group,
    blockBytes: config.blockSize,
    volumes: config.volumes?.map(({ name, size }) => ({ name, sizeBytes: size })),
  };
}

/** The site.json of the data directory, which must be of this role. */
function existingSite(fs: FileSystem, config: PrimaryFileConfig | SecondaryFileConfig): SiteFile | null {
  const site = readSiteFile(fs, config.dataDir);
  if (site && site.role !== config.role)
    throw new ConfigError(
      `dataDir: ${config.dataDir} holds a ${site.role} site (${siteFilePath(config.dataDir)}), not a ${config.role}`,
    );
  return site;
}

/**
 * A site whose creation was cut short (no site.json, the creation marker there), finished as the
 * marker records it; the configuration must ask for that shape, if it names volumes at all.
 */
function finishedSite(
  fs: FileSystem,
  config: PrimaryFileConfig | SecondaryFileConfig,
  configured: ConfiguredShape,
): OpenedSite | null {
  const creating = readCreationMarker(fs, config.dataDir);
  if (!creating) return null;
  const recorded = { ...creating, volumes: creating.volumes.map((volume) => ({ ...volume, inode: null })) };
  checkConfigAgainstSite(recorded, configured, config.dataDir);
  return { volumes: finishSiteVolumes(fs, config.dataDir, creating), created: true };
}

export function openPrimarySite(fs: FileSystem, config: PrimaryFileConfig): OpenedSite {
  const configured = configuredShapeOf(config);
  const site = existingSite(fs, config);
  const recorded = site ? recordedShape(site) : null;
  if (recorded) return { volumes: openSiteVolumes(fs, config.dataDir, recorded, configured), created: false };
  const finished = finishedSite(fs, config, configured);
  if (finished) return finished;
  return {
    volumes: createSiteVolumes(fs, config.dataDir, {
      group: configured.group,
      blockBytes: configured.blockBytes,
      volumes: configured.volumes ?? [],
    }),
    created: true,
  };
}

/** Null when the secondary has no volumes yet: it takes them from its primary's first hello. */
export function openSecondarySite(fs: FileSystem, config: SecondaryFileConfig): OpenedSite | null {
  const configured = configuredShapeOf(config);
  const site = existingSite(fs, config);
  const recorded = site ? recordedShape(site) : null;
  if (recorded) return { volumes: openSiteVolumes(fs, config.dataDir, recorded, configured), created: false };
  const finished = finishedSite(fs, config, configured);
  if (finished) return finished;
  if (!configured.volumes) return null;
  return createSecondarySite(fs, config, {
    group: configured.group,
    blockBytes: configured.blockBytes,
    volumes: configured.volumes,
  });
}

/** A secondary's site created from its configuration or from its primary's hello. */
export function createSecondarySite(
  fs: FileSystem,
  config: SecondaryFileConfig,
  shape: GroupShape,
): OpenedSite {
  return { volumes: createSiteVolumes(fs, config.dataDir, shape), created: true };
}
