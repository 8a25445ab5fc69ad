/** The primary's `tracking` section as the core takes it (docs/resync.md). */
import { limits } from '../../core/limits.ts';
import { type TrackingConfig, trackingNever } from '../../core/link-tracking.ts';
import { resyncRateConfig } from '../../core/progress-rate.ts';
import type { PrimaryFileConfig } from '../../ops/config.ts';

/** A bitmap with chunks cleared during a resync is saved again at most this often. */
const trackingSaveMsMin = 2000;

/**
 * The core counts the journal's live payload; the files also hold the dead head of the oldest
 * segment (collection deletes whole segments), the unused rest of the newest and record headers.
 * Tracking therefore starts at least two segments before the files could reach the capacity.
 */
export function trackingConfigOf(config: PrimaryFileConfig, blockBytes: number): TrackingConfig {
  const chunkBlocks = config.tracking.granularity / blockBytes;
  const { capacity, segmentSize } = config.journal;
  if (!config.tracking.enabled)
    return { ...trackingNever, chunkBlocks, copyWindowBytes: config.tracking.copyWindow };
  return {
    journalBytesHigh: Math.max(
      0,
      Math.min(capacity * config.tracking.journalFraction, capacity - 2 * segmentSize),
    ),
    awayMsMax: config.tracking.awaySecondsMax * 1000,
    chunkBlocks,
    copyReadBlocksMax: Math.max(chunkBlocks, Math.floor(limits.packetBytesMax / blockBytes)),
    copyWindowBytes: config.tracking.copyWindow,
    saveMsMin: trackingSaveMsMin,
    copyRate: resyncRateConfig,
  };
}
