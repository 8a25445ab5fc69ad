/**
 * A site's journal opened beside its volumes, and closed with them. Around the opening, site.json
 * is brought up to date: a new site is recorded at once (its images exist from now on), an existing
 * one only once the journal opened and replayed, so a refused start changes nothing. The creation
 * marker (storage/site-creation.ts) goes once site.json is written.
 */

import { join } from 'node:path';
import type { FileSystem } from '../../io/file-system.ts';
import type { Logger } from '../../ops/logger.ts';
import type { RecordCodec } from '../../storage/record-codec.ts';
import {
  type JournalOpenReport,
  type JournalPosition,
  SegmentJournal,
} from '../../storage/segment-journal.ts';
import { removeCreationMarker } from '../../storage/site-creation.ts';
import type { VolumeFile } from '../../storage/volume-file.ts';
import type { OpenedSite } from '../site-storage.ts';
import type { StopAttempt } from './site-runtime.ts';

export interface SiteJournalOptions<R> {
  site: OpenedSite;
  dataDir: string;
  segmentBytesMax: number;
  codec: RecordCodec<R>;
  /** Records that restate the node's state; written first in every new segment. */
  checkpoint: () => R[];
  /** The site's file system (the environment's). */
  fs: FileSystem;
  /** Writes site.json with the node's identity and the site's volume records. */
  recordSite: () => void;
  logger: Logger;
  /** Replay hands each record to it with its position and keeps none (SegmentJournalOptions). */
  onReplayed?: (record: R, position: JournalPosition) => void;
}

export interface OpenedJournal<R> {
  journal: SegmentJournal<R>;
  records: R[];
  report: JournalOpenReport;
}

export function openSiteJournal<R>(options: SiteJournalOptions<R>): OpenedJournal<R> {
  // A new site is recorded at once: its images exist from now on.
  if (options.site.created) options.recordSite();
  const opened = SegmentJournal.open<R>({
    fs: options.fs,
    directory: join(options.dataDir, 'journal'),
    segmentBytesMax: options.segmentBytesMax,
    codec: options.codec,
    checkpoint: options.checkpoint,
    ...(options.onReplayed ? { onReplayed: options.onReplayed } : {}),
  });
  if (opened.report.cut) options.logger.warn('journal-tail-cut', { ...opened.report.cut });
  // Every check passed: only now is site.json brought up to date (a refused start changes nothing).
  options.recordSite();
  // site.json records the site: a creation marker left (this creation's, or a crash's) is done with.
  removeCreationMarker(options.fs, options.dataDir);
  return opened;
}

/** The last steps of a stop: the volumes made durable, then the journal and the files closed. */
export async function closeSiteStorage(
  attempt: StopAttempt,
  volumes: readonly VolumeFile[],
  journal: { close(): Promise<void> } | null,
): Promise<void> {
  await attempt(() => Promise.all(volumes.map((volume) => volume.flush())));
  await attempt(() => journal?.close());
  for (const volume of volumes) volume.close();
}
