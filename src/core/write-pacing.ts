/**
 * Write pacing (optional, config `pacing`): how long each new write waits before it is journaled,
 * from how far behind the connected secondaries are. SRDF/A's write pacing is the anchor: the
 * replica's lag (the RPO) is kept below a bound by slowing the writers gradually, each write by at
 * most a bounded delay, never by stalling them. Pure: the node samples the links and applies the delay.
 *
 * The lag pacing acts on looks ahead: the larger of the age of the oldest write a secondary has not
 * stored and the time its link needs to ship what it has not stored at the most it shipped lately.
 * The age alone reacts too late: by the time the oldest write is old, writers faster than the link
 * have queued many seconds of link time behind it, and the lag goes on growing while that drains
 * (measured: a 5 s bound passed by 9 s at a 100 Mbit/s link). The backlog over the link's rate
 * says at once what a write made now will wait.
 *
 * The delay grows linearly from 0, at `startFraction` of the bound, to `delayMsMax` at the bound.
 * Writers that issue their next write when the last one is answered then slow down until what they
 * write matches what the link ships: the lag settles between the start and the bound. The bound
 * holds while the needed delay (writes in flight / writes per second the link ships, minus the
 * write's own latency) is below `delayMsMax`; past it the delay stays at its maximum and the lag
 * grows (reported as saturated), because a longer wait would be a stall.
 */
import { assert } from './assert.ts';
import { ProgressRate } from './progress-rate.ts';

export interface PacingConfig {
  /** The lag, in seconds, that pacing keeps below. */
  lagSecondsMax: number;
  /** The longest a write is delayed. */
  delayMsMax: number;
  /** The fraction of lagSecondsMax where delays begin (0 < startFraction < 1). */
  startFraction: number;
}

/** A secondary as pacing sees it: only links that are connected and streaming are passed in. */
export interface PacedLink {
  name: string;
  /** Age of the oldest write it has not stored. */
  lagSeconds: number;
  /** Bytes written that it has not stored, the capture cycle's included. */
  lagBytes: number;
  /** The most its link shipped per second lately (LinkRate), or null while unknown. */
  bytesPerSecond: number | null;
}

export interface PacingDecision {
  /** How long a write arriving now waits before it is journaled, in whole ms. */
  delayMs: number;
  /** The secondary furthest behind (the one that sets the delay), or null with none connected. */
  pacedBy: string | null;
  /** Its lag as pacing sees it: the larger of its age and its backlog's shipping time. */
  lagSeconds: number;
  /** That lag reached the bound: writes wait the longest delay. */
  saturated: boolean;
}

export function checkPacingConfig(config: PacingConfig): void {
  assert(config.lagSecondsMax > 0, 'pacing.lagSecondsMax must be positive');
  assert(config.delayMsMax > 0, 'pacing.delayMsMax must be positive');
  assert(config.startFraction > 0 && config.startFraction < 1, 'pacing.startFraction must lie in (0, 1)');
}

/** A link's lag as pacing sees it (see the file's comment). */
export function lookAheadLagSeconds(link: PacedLink): number {
  const shipping = link.bytesPerSecond && link.bytesPerSecond > 0 ? link.lagBytes / link.bytesPerSecond : 0;
  return Math.max(link.lagSeconds, shipping);
}

/** The delay for a write arriving while `links` (the connected, streaming secondaries) lag as given. */
export function pacingDecision(config: PacingConfig, links: readonly PacedLink[]): PacingDecision {
  let pacedBy: string | null = null;
  let lagSeconds = 0;
  for (const link of links) {
    const lag = lookAheadLagSeconds(link);
    if (pacedBy === null || lag > lagSeconds) {
      pacedBy = link.name;
      lagSeconds = lag;
    }
  }
  const startSeconds = config.lagSecondsMax * config.startFraction;
  const share = Math.min(1, Math.max(0, (lagSeconds - startSeconds) / (config.lagSecondsMax - startSeconds)));
  return {
    // Whole ms: timers do not wait less than 1 ms, and the delay added is counted as waited.
    delayMs: Math.round(share * config.delayMsMax),
    pacedBy,
    lagSeconds,
    saturated: pacedBy !== null && lagSeconds >= config.lagSecondsMax,
  };
}

/** The shipping rate is measured over this window... */
const rateWindowMs = 1000;
/** ...and the highest such rate over this long is the link's rate for pacing. */
const peakMemoryMs = 60_000;

/**
 * The most a link shipped per second over any 1-s window of the last minute: what it can carry,
 * as far as the primary saw. The current rate alone would read a link that waits for writes as a
 * slow one; a link whose capacity dropped is overestimated for up to a minute, which makes pacing
 * look ahead less (it still acts on the age of the oldest write).
 */
export class LinkRate {
  private readonly rate = new ProgressRate({ windowMs: rateWindowMs, stepMs: 100, spanMsMin: rateWindowMs });
  /** One peak per window, oldest first: bounded to peakMemoryMs / rateWindowMs + 1 entries. */
  private peaks: { atMs: number; bytesPerSecond: number }[] = [];
  private started = false;

  /** The link had shipped `shippedBytes` in all at `nowMs` (a count that only grows). */
  record(nowMs: number, shippedBytes: number): void {
    if (!this.started) {
      this.rate.reset(nowMs, shippedBytes);
      this.started = true;
      return;
    }
    this.rate.record(nowMs, shippedBytes);
    const current = this.rate.bytesPerSecond(nowMs);
    if (current === null) return;
    const last = this.peaks.at(-1);
    if (last && nowMs - last.atMs < rateWindowMs)
      last.bytesPerSecond = Math.max(last.bytesPerSecond, current);
    else this.peaks.push({ atMs: nowMs, bytesPerSecond: current });
    while ((this.peaks[0]?.atMs ?? nowMs) < nowMs - peakMemoryMs) this.peaks.shift();
  }

  /** The highest rate of the last minute, or null while none was measured (or all were 0). */
  bytesPerSecond(): number | null {
    let peak = 0;
    for (const each of this.peaks) peak = Math.max(peak, each.bytesPerSecond);
    return peak > 0 ? peak : null;
  }
}
