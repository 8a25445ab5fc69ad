/**
 * Which volumes a starting site opens, shared by both roles: an existing site (site.json present)
 * opens the images it created, matched by name against the configuration, and refuses any that is
 * missing, emptied, resized or replaced; a new site creates them. site.json is written only when
 * the site is created and, for an existing one, once every check of the start passed.
 */
import { readFileSync } from 'node:fs';
import { ConfigError } from '../core/errors.ts';
import type { GroupShape } from '../core/types.ts';
import type { PrimaryFileConfig, SecondaryFileConfig } from '../ops/config.ts';
import {
  type ConfiguredShape,
  readSiteFile,
  recordedShape,
  type SiteFile,
  siteFilePath,
  writeSiteFile,
} from '../storage/site-file.ts';
import { createSiteVolumes, openSiteVolumes, type SiteVolumes } from '../storage/site-volumes.ts';

/** A site's open volumes, and the call that records them (and the configuration) in site.json. */
export interface OpenedSite {
  volumes: SiteVolumes;
  record: () => void;
}

function configuredShapeOf(config: PrimaryFileConfig | SecondaryFileConfig): ConfiguredShape {
  return {
    group: config.group,
    blockBytes: config.blockSize,
    volumes: config.volumes?.map(({ name, size }) => ({ name, sizeBytes: size })),
  };
}

/** The site.json of the data directory, which must be of this role. */
function existingSite(config: PrimaryFileConfig | SecondaryFileConfig): SiteFile | null {
  const site = readSiteFile(config.dataDir);
  if (site && site.role !== config.role)
    throw new ConfigError(
      `dataDir: ${config.dataDir} holds a ${site.role} site (${siteFilePath(config.dataDir)}), not a ${config.role}`,
    );
  return site;
}

export function openPrimarySite(config: PrimaryFileConfig): OpenedSite {
  const configured = configuredShapeOf(config);
  const recorded = (() => {
    const site = existingSite(config);
    return site ? recordedShape(site) : null;
  })();
  const volumes = recorded
    ? openSiteVolumes(config.dataDir, recorded, configured)
    : createSiteVolumes(config.dataDir, {
        group: configured.group,
        blockBytes: configured.blockBytes,
        volumes: configured.volumes ?? [],
      });
  const record = (): void =>
    writeIfChanged(config.dataDir, { role: 'primary', config, volumes: volumes.records });
  if (!recorded) record();
  return { volumes, record };
}

/** Null when the secondary has no volumes yet: it takes them from its primary's first hello. */
export function openSecondarySite(config: SecondaryFileConfig): OpenedSite | null {
  const configured = configuredShapeOf(config);
  const site = existingSite(config);
  const recorded = site ? recordedShape(site) : null;
  if (recorded) {
    const volumes = openSiteVolumes(config.dataDir, recorded, configured);
    return { volumes, record: secondaryRecorder(config, volumes) };
  }
  if (!configured.volumes) return null;
  return createSecondarySite(config, {
    group: configured.group,
    blockBytes: configured.blockBytes,
    volumes: configured.volumes,
  });
}

/** A secondary's site created from its configuration or from its primary's hello. */
export function createSecondarySite(config: SecondaryFileConfig, shape: GroupShape): OpenedSite {
  const volumes = createSiteVolumes(config.dataDir, shape);
  const record = secondaryRecorder(config, volumes);
  record();
  return { volumes, record };
}

function secondaryRecorder(config: SecondaryFileConfig, volumes: SiteVolumes): () => void {
  return () =>
    writeIfChanged(config.dataDir, {
      role: 'secondary',
      config,
      shape: volumes.shape,
      volumes: volumes.records,
    });
}

/** site.json is replaced only when its content changes (a new configuration, new records). */
function writeIfChanged(dataDir: string, site: SiteFile): void {
  let current: string | null = null;
  try {
    current = readFileSync(siteFilePath(dataDir), 'utf8');
  } catch {
    current = null;
  }
  if (current === `${JSON.stringify(site, null, 2)}\n`) return;
  writeSiteFile(dataDir, site);
}
