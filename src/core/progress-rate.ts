/**
 * The rate of a growing byte count over a sliding window, for a resync's bytes per second and its
 * ETA. Sans IO: every call takes the time. Samples are kept at most one per `stepMs`, so memory is
 * bounded (windowMs / stepMs + 2 samples) however often progress is recorded.
 */
import { assert } from './assert.ts';

interface Sample {
  atMs: number;
  bytes: number;
}

export interface ProgressRateConfig {
  /** The rate is the progress over (about) the last windowMs. */
  windowMs: number;
  /** A new baseline sample at most this often. */
  stepMs: number;
  /** Below this much observed time the rate is unknown (a first read says nothing). */
  spanMsMin: number;
}

export const resyncRateConfig: ProgressRateConfig = { windowMs: 10_000, stepMs: 500, spanMsMin: 1000 };

export class ProgressRate {
  private samples: Sample[] = [];
  private currentBytes = 0;

  constructor(private readonly config: ProgressRateConfig = resyncRateConfig) {
    assert(config.stepMs > 0 && config.windowMs >= config.stepMs, 'a window of at least one step');
  }

  /** Starts over at `bytes` (a new session counts from there). */
  reset(nowMs: number, bytes = 0): void {
    this.samples = [{ atMs: nowMs, bytes }];
    this.currentBytes = bytes;
  }

  /** The count is `bytes` at `nowMs`; counts only grow. */
  record(nowMs: number, bytes: number): void {
    assert(bytes >= this.currentBytes, 'progress only grows');
    this.currentBytes = bytes;
    const last = this.samples.at(-1);
    if (!last || nowMs - last.atMs >= this.config.stepMs) this.samples.push({ atMs: nowMs, bytes });
    this.dropBefore(nowMs - this.config.windowMs);
  }

  /**
   * Bytes per second from the oldest sample in the window to now, or null while too little time
   * was observed. A stall shows as a falling rate, down to 0 once the whole window saw no progress.
   */
  bytesPerSecond(nowMs: number): number | null {
    this.dropBefore(nowMs - this.config.windowMs);
    const baseline = this.samples[0];
    if (!baseline) return null;
    const spanMs = nowMs - baseline.atMs;
    if (spanMs < this.config.spanMsMin) return null;
    return ((this.currentBytes - baseline.bytes) * 1000) / spanMs;
  }

  /** Seconds until `bytesLeft` more at the current rate; null while the rate is unknown or 0. */
  etaSeconds(nowMs: number, bytesLeft: number): number | null {
    const rate = this.bytesPerSecond(nowMs);
    if (rate === null || rate <= 0) return null;
    return bytesLeft / rate;
  }

  /** Keeps one sample at or before `limitMs` as the window's baseline, and every sample after. */
  private dropBefore(limitMs: number): void {
    let drop = 0;
    while (drop + 1 < this.samples.length && (this.samples[drop + 1] as Sample).atMs <= limitMs) drop++;
    if (drop > 0) this.samples.splice(0, drop);
  }
}
