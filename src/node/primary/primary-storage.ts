/**
 * A primary site's storage at start: its identity, its volumes and its journal, opened and checked
 * (site.json brought up to date only once every check passed), and the redo that repairs whatever
 * a crash left half written on the volumes.
 */

import type { TrackingState } from '../../core/changed-blocks.ts';
import { FoldIndex } from '../../core/fold.ts';
import type { PrimaryIdentity } from '../../core/identity.ts';
import type { PrimaryRecord } from '../../core/records.ts';
import { type GroupShape, volumeBlocks } from '../../core/types.ts';
import type { SiteEnvironment } from '../../io/environment.ts';
import type { PrimaryFileConfig } from '../../ops/config.ts';
import type { Logger } from '../../ops/logger.ts';
import { primaryRecordCodec } from '../../storage/record-codec.ts';
import type { JournalOpenReport, SegmentJournal } from '../../storage/segment-journal.ts';
import { writeSiteFileIfChanged } from '../../storage/site-file.ts';
import { readTrackingStates } from '../../storage/tracking-file.ts';
import type { VolumeFile } from '../../storage/volume-file.ts';
import { openSiteJournal } from '../site/site-journal.ts';
import { volumeWritesInFlight, WriteQueue } from '../site/write-queue.ts';
import { loadPrimaryIdentity } from '../site-identity.ts';
import { openPrimarySite } from '../site-storage.ts';

/** Largest single volume write of the redo (runs of adjacent blocks are merged up to this). */
const redoRunBytesMax = 1024 * 1024;

export interface PrimaryStorage {
  identity: PrimaryIdentity;
  shape: GroupShape;
  /** In id order (site.json's), not the configuration's. */
  volumes: VolumeFile[];
  journal: SegmentJournal<PrimaryRecord>;
  /** What the journal replayed: the group recovers from it, the redo writes it again. */
  records: PrimaryRecord[];
  report: JournalOpenReport;
  /** The changed-block bitmaps of secondaries in tracking mode (docs/resync.md). */
  trackings: Map<string, TrackingState>;
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
  const shape = site.volumes.shape;
  const trackings = readTrackingStates(
    environment.fs,
    config.dataDir,
    config.secondaries.map((secondary) => secondary.name),
    shape.volumes.map((_, volume) => volumeBlocks(shape, volume)),
  );
  return { identity, shape, volumes: site.volumes.files, ...opened, trackings };
}

/**
 * Writes every journaled write to the volumes again, then flushes them. Every record still in the
 * journal is redone, collected cycles included: the core appends its collect record before the node
 * has written those cycles back, so the record does not prove they are on the volumes; only the
 * deletion of a segment (after a volume flush) does. The records are folded first (the newest
 * content of each block, in journal order) and written as runs a few at a time: one write per
 * record, one after the other, kept a restart waiting minutes on slow disks.
 */
export async function redoJournaledWrites(
  volumes: readonly VolumeFile[],
  records: readonly PrimaryRecord[],
  blockBytes: number,
  logger: Logger,
): Promise<void> {
  const fold = new FoldIndex(blockBytes);
  let count = 0;
  for (const record of records) {
    if (record.kind !== 'write') continue;
    fold.add(record.extent);
    count++;
  }
  const writes = new WriteQueue(volumeWritesInFlight);
  for (const run of fold.runs(redoRunBytesMax))
    writes.push(() => (volumes[run.volume] as VolumeFile).writeExtent(fold.extentOf(run)));
  await writes.drained();
  await Promise.all(volumes.map((volume) => volume.flush()));
  if (count > 0) logger.info('volumes-redone', { writes: count, blocks: fold.blockCount });
}
