/** The primary's `tracking` section as the core takes it (docs/resync.md). */
import { limits } from '../../core/limits.ts';
import type { TrackingConfig } from '../../core/link-tracking.ts';
import type { PrimaryFileConfig } from '../../ops/config.ts';

/** A bitmap with chunks cleared during a resync is saved again at most this often. */
const trackingSaveMsMin = 2000;

export function trackingConfigOf(config: PrimaryFileConfig, blockBytes: number): TrackingConfig {
  const chunkBlocks = config.tracking.granularity / blockBytes;
  return {
    journalBytesHigh: config.journal.capacity * config.tracking.journalFraction,
    awayMsMax: config.tracking.awaySecondsMax * 1000,
    chunkBlocks,
    copyReadBlocksMax: Math.max(chunkBlocks, Math.floor(limits.packetBytesMax / blockBytes)),
    copyWindowBytes: config.tracking.copyWindow,
    saveMsMin: trackingSaveMsMin,
  };
}
