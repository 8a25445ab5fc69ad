/**
 * A primary site's storage at start: its identity, its volumes and its journal, opened and checked
 * (site.json brought up to date only once every check passed), and the redo that repairs whatever
 * a crash left half written on the volumes.
 */

import type { TrackingState } from '../../core/changed-blocks.ts';
import { ConfigError } from '../../core/errors.ts';
import { FoldIndex, type JournalPiece } from '../../core/fold.ts';
import type { PrimaryIdentity } from '../../core/identity.ts';
import { extentInJournal, type PrimaryRecord, type ReplayedPrimaryRecord } from '../../core/records.ts';
import { type CycleNumber, type Extent, type GroupShape, volumeBlocks } from '../../core/types.ts';
import type { SiteEnvironment } from '../../io/environment.ts';
import type { FileSystem } from '../../io/file-system.ts';
import type { PrimaryFileConfig } from '../../ops/config.ts';
import type { Logger } from '../../ops/logger.ts';
import { primaryRecordCodec } from '../../storage/record-codec.ts';
import type { JournalOpenReport, JournalPosition, SegmentJournal } from '../../storage/segment-journal.ts';
import {
  type FencedRecord,
  type HandoverRecord,
  readSiteFile,
  type SiteFile,
  type VolumeRecord,
  writeSiteFile,
  writeSiteFileIfChanged,
} from '../../storage/site-file.ts';
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
  /**
   * What the journal replayed, numbered 1, 2, 3... in order, writes without their data: the group
   * recovers from it, the redo writes it again, reading the data back from `places`.
   */
  records: ReplayedPrimaryRecord[];
  /** Where each replayed write with data lies, by its number. */
  places: { seq: number; cycle: CycleNumber; position: JournalPosition }[];
  report: JournalOpenReport;
  /** The changed-block bitmaps of secondaries in tracking mode (docs/resync.md). */
  trackings: Map<string, TrackingState>;
  /** Set when this primary learnt it was superseded before this start (site.json `fencedBy`). */
  fencedBy: FencedRecord | null;
  /** Records in site.json, atomically and durably, that this primary was superseded; throws on failure. */
  recordFence(record: FencedRecord): void;
  /** Set when a switchover asked of the secondary was unanswered before this start (site.json `handover`). */
  handover: HandoverRecord | null;
  /** Records in site.json, atomically and durably, the switchover asked (or, null, that it ended); throws on failure. */
  recordHandover(record: HandoverRecord | null): void;
  /** Set when this site became the primary by promotion (site.json `promotedFrom`). */
  promotedFrom: { cycle: number; generation: string } | null;
  /** The volumes as site.json records them (ids, sizes, inodes). */
  volumeRecords: VolumeRecord[];
}

/** `checkpoint`: the records that restate the group's state, first in every new segment. */
export function openPrimaryStorage(
  config: PrimaryFileConfig,
  environment: SiteEnvironment,
  logger: Logger,
  checkpoint: () => PrimaryRecord[],
): PrimaryStorage {
  const identity = loadPrimaryIdentity(environment.fs, config.dataDir, logger, environment.randomBytes);
  // How this site became a primary, if by promotion: kept in every rewrite of site.json.
  const promotedFrom = promotedFromOf(readSiteFile(environment.fs, config.dataDir));
  const fencedBy = loadFencedBy(environment.fs, config.dataDir);
  const handover = loadHandover(environment.fs, config);
  const site = openPrimarySite(environment.fs, config);
  // Everything site.json holds for this primary; `fencedBy` only once fenced and `handover` only
  // while a switchover is asked, so that the file of a primary never fenced stays as it was.
  const recorded = { fencedBy, handover };
  const siteFile = (): SiteFile => ({
    role: 'primary',
    config,
    site: identity.site,
    generations: identity.generations,
    volumes: site.volumes.records,
    ...(promotedFrom ? { promotedFrom } : {}),
    ...(recorded.fencedBy ? { fencedBy: recorded.fencedBy } : {}),
    ...(recorded.handover ? { handover: recorded.handover } : {}),
  });
  // Replay keeps where each write's data lies, not the data: a journal of gigabytes replays in the
  // memory of one segment.
  const records: ReplayedPrimaryRecord[] = [];
  const places: PrimaryStorage['places'] = [];
  const opened = openSiteJournal<PrimaryRecord>({
    onReplayed: (record, position) => {
      const seq = records.length + 1;
      if (record.kind !== 'write') {
        records.push(record);
        return;
      }
      records.push({ ...record, extent: extentInJournal(record.extent) });
      if (record.extent.data !== null) places.push({ seq, cycle: record.cycle, position });
    },
    fs: environment.fs,
    site,
    dataDir: config.dataDir,
    segmentBytesMax: config.journal.segmentSize,
    codec: primaryRecordCodec,
    checkpoint,
    recordSite: () => writeSiteFileIfChanged(environment.fs, config.dataDir, siteFile()),
    logger,
  });
  const shape = site.volumes.shape;
  const trackings = readTrackingStates(
    environment.fs,
    config.dataDir,
    config.secondaries.map((secondary) => secondary.name),
    shape.volumes.map((_, volume) => volumeBlocks(shape, volume)),
  );
  return {
    identity,
    shape,
    volumes: site.volumes.files,
    journal: opened.journal,
    report: opened.report,
    records,
    places,
    trackings,
    fencedBy,
    recordFence: (record) => {
      recorded.fencedBy = record;
      writeSiteFile(environment.fs, config.dataDir, siteFile());
    },
    handover,
    recordHandover: (record) => {
      recorded.handover = record;
      writeSiteFile(environment.fs, config.dataDir, siteFile());
    },
    promotedFrom: promotedFrom ?? null,
    volumeRecords: site.volumes.records,
  };
}

/** The record of a fence a primary's site.json holds (readSiteFile checked it), or null. */
function loadFencedBy(fs: FileSystem, dataDir: string): FencedRecord | null {
  const site = readSiteFile(fs, dataDir);
  return site?.role === 'primary' ? (site.fencedBy ?? null) : null;
}

/**
 * The switchover a primary's site.json records as asked, or null. Its secondary must still be
 * configured: only that site can say whether it took over.
 */
function loadHandover(fs: FileSystem, config: PrimaryFileConfig): HandoverRecord | null {
  const site = readSiteFile(fs, config.dataDir);
  const handover = site?.role === 'primary' ? (site.handover ?? null) : null;
  if (handover && !config.secondaries.some((secondary) => secondary.name === handover.secondary))
    throw new ConfigError(
      `${config.dataDir}/site.json: a switchover was asked of secondary "${handover.secondary}" at cycle ${handover.cycle}, and the config lists no such secondary: only that site can say whether it leads now (docs/failover.md); list it again`,
    );
  return handover;
}

/**
 * Writes every journaled write to the volumes again, then flushes them. Every record still in the
 * journal is redone, collected cycles included: the core appends its collect record before the node
 * has written those cycles back, so the record does not prove they are on the volumes; only the
 * deletion of a segment (after a volume flush) does. The records are folded first (where the
 * newest content of each block lies, in journal order) and written as runs a few at a time, their
 * bytes read back from the journal as each run's turn comes: one write per record, one after the
 * other, kept a restart waiting minutes on slow disks, and holding the data kept it in memory.
 */
export async function redoJournaledWrites(
  volumes: readonly VolumeFile[],
  records: readonly ReplayedPrimaryRecord[],
  readJournaled: (pieces: JournalPiece[]) => Promise<Uint8Array>,
  blockBytes: number,
  logger: Logger,
): Promise<void> {
  const fold = new FoldIndex(blockBytes);
  let count = 0;
  records.forEach((record, index) => {
    if (record.kind !== 'write') return;
    fold.addJournaled(extentInJournal(record.extent), index + 1);
    count++;
  });
  const writes = new WriteQueue(volumeWritesInFlight);
  for (const run of fold.runs(redoRunBytesMax)) {
    writes.push(async () => {
      const { volume, block, blockCount } = run;
      const data = run.zero ? null : await readJournaled(fold.journaledPieces(run));
      const extent: Extent = { volume, block, blockCount, data };
      await (volumes[volume] as VolumeFile).writeExtent(extent);
    });
  }
  await writes.drained();
  await Promise.all(volumes.map((volume) => volume.flush()));
  if (count > 0) logger.info('volumes-redone', { writes: count, blocks: fold.blockCount });
}

function promotedFromOf(site: SiteFile | null): { cycle: number; generation: string } | undefined {
  return site?.role === 'primary' ? site.promotedFrom : undefined;
}
