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
 * Past `startFraction` of the bound, writes are let in at a rate set from the link's: 1.5 x what it
 * ships at the start, what it ships halfway to the bound, half of it at the bound, a quarter
 * further beyond (admitShare). The
 * backlog then shrinks past the middle and grows below it, so the lag settles at the middle of the
 * band, without swinging: the rate follows the lag linearly. (A first version delayed each write
 * by a share of delayMsMax proportional to the lag: the rate of writers that wait for their
 * answers goes as 1 / (delay + latency), steepest at small delays, and the lag swung past the bound
 * in the benchmark.) Each write waits for its turn, at most `delayMsMax`, because a longer wait
 * would be a stall: writers with more in flight than delayMsMax lets through at that rate outrun
 * it, and the lag grows past the bound (reported as saturated). While the link's rate is unknown,
 * the delay is the share of delayMsMax that the lag has reached of the band.
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
  /**
   * Bytes per second let in while pacing acts (null: no limit, or the link's rate is unknown);
   * each write waits its turn at this rate, at most delayMsMax (AdmissionQueue).
   */
  admitBytesPerSecond: number | null;
  /** With no rate to admit at: how long each write waits, in whole ms (0: no delay). */
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
  let furthest: PacedLink | null = null;
  let lagSeconds = 0;
  for (const link of links) {
    const lag = lookAheadLagSeconds(link);
    if (furthest === null || lag > lagSeconds) {
      furthest = link;
      lagSeconds = lag;
    }
  }
  const startSeconds = config.lagSecondsMax * config.startFraction;
  const over = (lagSeconds - startSeconds) / (config.lagSecondsMax - startSeconds);
  const share = Math.min(1, Math.max(0, over));
  const rate = furthest?.bytesPerSecond ?? null;
  const pacing = furthest !== null && over > 0;
  return {
    admitBytesPerSecond: pacing && rate !== null && rate > 0 ? rate * admitShare(over) : null,
    // Whole ms: timers do not wait less than 1 ms, and the delay added is counted as waited.
    delayMs: pacing && (rate === null || rate <= 0) ? Math.round(share * config.delayMsMax) : 0,
    pacedBy: furthest?.name ?? null,
    lagSeconds,
    saturated: furthest !== null && lagSeconds >= config.lagSecondsMax,
  };
}

/**
 * The share of the link's rate writes are let in at, `over` the way from the start of the band to
 * the bound: 1.5 at the start, 1 halfway, 0.5 at the bound, and less beyond, down to a quarter,
 * so that a backlog past the bound drains faster than one inside it.
 */
function admitShare(over: number): number {
  return Math.max(0.25, 1.5 - over);
}

/**
 * Writes let in at a rate, each at its turn: a write waits until the bytes before it have had
 * their time at the rate, at most `delayMsMax` (beyond, the debt is forgotten: a wait is never a
 * stall). No credit builds up while writes are fewer than the rate allows.
 */
export class AdmissionQueue {
  /** When the next byte may go in, in ms. */
  private nextMs = Number.NEGATIVE_INFINITY;

  /** The wait of a write of `bytes` arriving at `nowMs`, in whole ms, and its place taken. */
  admit(nowMs: number, bytes: number, bytesPerSecond: number, delayMsMax: number): number {
    assert(bytesPerSecond > 0, 'an admission rate is positive');
    const startMs = Math.min(Math.max(this.nextMs, nowMs), nowMs + delayMsMax);
    this.nextMs = startMs + (bytes * 1000) / bytesPerSecond;
    return Math.round(startMs - nowMs);
  }

  /** The wait of a write arriving now, without taking a place. */
  waitMs(nowMs: number, delayMsMax: number): number {
    return Math.round(Math.min(Math.max(0, this.nextMs - nowMs), delayMsMax));
  }

  /** Pacing stopped: the next write goes in at once. */
  reset(): void {
    this.nextMs = Number.NEGATIVE_INFINITY;
  }
}

/**
 * The stored rate is measured over this window: several cycles, since it grows a cycle at a time.
 * (A first version measured the bytes handed to the link's sockets over 1 s: their buffers take
 * megabytes faster than the link carries them, the rate read about twice the link's, and the lag
 * settled near twice the bound in the benchmark.)
 */
const rateWindowMs = 5000;
/** ...and the highest such rate over this long is the link's rate for pacing. */
const peakMemoryMs = 60_000;

/**
 * The most a secondary stored per second over any 5-s window of the last minute, end to end: what
 * its link and site can carry, as far as the primary saw. The current rate alone would read a link
 * that waits for writes as a slow one; a link whose capacity dropped is overestimated for up to a
 * minute, which makes pacing look ahead less (it still acts on the age of the oldest write).
 */
export class LinkRate {
  private readonly rate = new ProgressRate({ windowMs: rateWindowMs, stepMs: 100, spanMsMin: rateWindowMs });
  /** One peak per window, oldest first: bounded to peakMemoryMs / rateWindowMs + 1 entries. */
  private peaks: { atMs: number; bytesPerSecond: number }[] = [];
  private started = false;
  private storedBytes = 0;

  /**
   * The secondary had stored `storedBytes` of the writes in all at `nowMs`. A count that went down
   * (a resync counted differently, a reconnect) is taken as no progress.
   */
  record(nowMs: number, storedBytes: number): void {
    if (!this.started) {
      this.rate.reset(nowMs, storedBytes);
      this.started = true;
      this.storedBytes = storedBytes;
      return;
    }
    this.storedBytes = Math.max(this.storedBytes, storedBytes);
    this.rate.record(nowMs, this.storedBytes);
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
