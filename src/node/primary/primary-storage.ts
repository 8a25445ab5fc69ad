/**
 * A primary site's storage at start: its identity, its volumes and its journal, opened and checked
 * (site.json brought up to date only once every check passed), and the redo that repairs whatever
 * a crash left half written on the volumes.
 */
import type { PrimaryIdentity } from '../../core/identity.ts';
import type { PrimaryRecord } from '../../core/records.ts';
import type { GroupShape } from '../../core/types.ts';
import type { SiteEnvironment } from '../../io/environment.ts';
import type { PrimaryFileConfig } from '../../ops/config.ts';
import type { Logger } from '../../ops/logger.ts';
import { primaryRecordCodec } from '../../storage/record-codec.ts';
import type { JournalOpenReport, SegmentJournal } from '../../storage/segment-journal.ts';
import { writeSiteFileIfChanged } from '../../storage/site-file.ts';
import type { VolumeFile } from '../../storage/volume-file.ts';
import { openSiteJournal } from '../site/site-journal.ts';
import { loadPrimaryIdentity } from '../site-identity.ts';
import { openPrimarySite } from '../site-storage.ts';

export interface PrimaryStorage {
  identity: PrimaryIdentity;
  shape: GroupShape;
  /** In id order (site.json's), not the configuration's. */
  volumes: VolumeFile[];
  journal: SegmentJournal<PrimaryRecord>;
  /** What the journal replayed: the group recovers from it, the redo writes it again. */
  records: PrimaryRecord[];
  report: JournalOpenReport;
}

/** `checkpoint`: the records that restate the group's state, first in every new segment. */
export function openPrimaryStorage(
  config: PrimaryFileConfig,
  environment: SiteEnvironment,
  logger: Logger,
  checkpoint: () => PrimaryRecord[],
): PrimaryStorage {
  const identity = loadPrimaryIdentity(environment.fs, config.dataDir, logger, environment.randomBytes);
  const site = openPrimarySite(environment.fs, config);
  const opened = openSiteJournal<PrimaryRecord>({
    fs: environment.fs,
    site,
    dataDir: config.dataDir,
    segmentBytesMax: config.journal.segmentSize,
    codec: primaryRecordCodec,
    checkpoint,
    recordSite: () =>
      writeSiteFileIfChanged(environment.fs, config.dataDir, {
        role: 'primary',
        config,
        site: identity.site,
        generations: identity.generations,
        volumes: site.volumes.records,
      }),
    logger,
  });
  return { identity, shape: site.volumes.shape, volumes: site.volumes.files, ...opened };
}

/**
 * Writes every journaled write to the volumes again, in journal order, then flushes them. Every
 * record still in the journal is redone, collected cycles included: the core appends its collect
 * record before the node has written those cycles back, so the record does not prove they are on
 * the volumes; only the deletion of a segment (after a volume flush) does.
 */
export async function redoJournaledWrites(
  volumes: readonly VolumeFile[],
  records: readonly PrimaryRecord[],
  logger: Logger,
): Promise<void> {
  let count = 0;
  for (const record of records) {
    if (record.kind !== 'write') continue;
    await (volumes[record.extent.volume] as VolumeFile).writeExtent(record.extent);
    count++;
  }
  await Promise.all(volumes.map((volume) => volume.flush()));
  if (count > 0) logger.info('volumes-redone', { writes: count });
}
