/**
 * Write pacing (optional, config `pacing`): how long each new write waits before it is journaled,
 * from how far behind the connected secondaries are. SRDF/A's write pacing is the anchor: the
 * replica's lag (the RPO) is kept below a bound by slowing the writers gradually, each write by at
 * most a bounded delay, never by stalling them. Pure: the node samples the links and applies the delay.
 *
 * The lag pacing acts on looks ahead: the larger of the age of the oldest write a secondary has not
 * stored and the time it needs to store what it has not stored at the rate it stores (LinkRate).
 * The age alone reacts too late: by the time the oldest write is old, writers faster than the link
 * have queued many seconds of link time behind it, and the lag goes on growing while that drains
 * (measured: a 5 s bound passed by 9 s at a 100 Mbit/s link). The backlog over the link's rate
 * says at once what a write made now will wait.
 *
 * Past `startFraction` of the bound, writes are let in at a rate set from the secondary's: 1.5 x
 * what it stores at the start, what it stores halfway to the bound, half of it at the bound, a
 * quarter further beyond, and more than 1.5 x below the band while an episode lasts (admitShare).
 * The backlog then shrinks past the middle and grows below it, so the lag settles at the middle of
 * the band, without swinging: the rate follows the lag linearly. (A first version delayed each write
 * by a share of delayMsMax proportional to the lag: the rate of writers that wait for their
 * answers goes as 1 / (delay + latency), steepest at small delays, and the lag swung past the bound
 * in the benchmark.) Each write waits for its turn, at most `delayMsMax`, because a longer wait
 * would be a stall: writers with more in flight than delayMsMax lets through at that rate outrun
 * it, and the lag grows past the bound (reported as saturated). While the link's rate is unknown,
 * the delay is the share of delayMsMax that the lag has reached of the band.
 */
import { assert } from './assert.ts';

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
  /** What it stores per second of busy time (LinkRate), or null while unknown. */
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
export function pacingDecision(
  config: PacingConfig,
  links: readonly PacedLink[],
  /** Pacing acted moments ago (an episode goes on): below the band writes are still let in at a rate. */
  episode = false,
): PacingDecision {
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
  const admitting = furthest !== null && (over > 0 || episode) && rate !== null && rate > 0;
  return {
    admitBytesPerSecond: admitting ? rate * admitShare(over) : null,
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
 * so that a backlog past the bound drains faster than one inside it. Below the band while an
 * episode goes on, more: 2.5 x with no lag at all (with startFraction 0.5). Letting writes in
 * without a limit there made the lag swing past the bound in the benchmark: each time the
 * saw-tooth of stored cycles dipped below the band, writers at 80 MiB/s put seconds of link time
 * into one cycle.
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
 * The stored rate is measured over this much time during which the link was busy: many cycles,
 * since stored bytes grow a whole cycle at a time (a window of W seconds is off by at most one
 * cycle's bytes / W). Earlier versions, measured in the benchmark: the bytes handed to the link's
 * sockets over 1 s read about twice the link's rate (their buffers take megabytes faster than the
 * link carries them); the highest stored rate of any 5-s window of the last minute read up to
 * twice too, because a window that begins just after a cycle was stored and ends just after
 * another counts a cycle more than its time carried; either way the lag settled near twice the
 * bound.
 */
export const rateBusyWindowMs = 15_000;
/** Before that much busy time was seen, the rate is measured over what there is, from this much on. */
export const rateBusySpanMsMin = 1000;
const sampleSpacingMs = 100;

/**
 * What a secondary stored per second while its link was busy (it had closed cycles it had not
 * stored), over the last rateBusyWindowMs of such time, end to end: what its link and site carry.
 * Time the link waits for writes is not counted, so a link that waits is not read as a slow one.
 */
export class LinkRate {
  /** Busy time and stored bytes at each sample, oldest first; the first one anchors the window. */
  private samples: { busyMs: number; storedBytes: number }[] = [];
  private busyMs = 0;
  private last: { atMs: number; busy: boolean; storedBytes: number } | null = null;

  /** `spanMsMin`: how much busy time must be seen before a rate is given. */
  constructor(private readonly spanMsMin = rateBusySpanMsMin) {
    assert(spanMsMin > 0, 'a rate is measured over some time');
  }

  /**
   * At `nowMs` the secondary had stored `storedBytes` of the writes in all, and had closed cycles
   * not stored (`busy`) or not. The time since the previous sample counts when the link was busy
   * at its start, with what was stored in it: a busy spell ends with the store of its last cycle,
   * which counts. A count that went down (a resync counted differently, a reconnect) is taken as
   * no progress; what was stored in a time not counted is not counted either.
   */
  record(nowMs: number, storedBytes: number, busy: boolean): void {
    const last = this.last;
    const stored = Math.max(last?.storedBytes ?? storedBytes, storedBytes);
    this.last = { atMs: nowMs, busy, storedBytes: stored };
    if (!last?.busy) {
      // Progress while idle moves the window's bytes with it, without its time.
      const moved = stored - (last?.storedBytes ?? stored);
      for (const sample of this.samples) sample.storedBytes += moved;
      return;
    }
    this.busyMs += nowMs - last.atMs;
    const newest = this.samples.at(-1);
    if (!newest)
      this.samples.push({ busyMs: this.busyMs - (nowMs - last.atMs), storedBytes: last.storedBytes });
    // Samples closer than sampleSpacingMs share one: the window holds a bounded number.
    if (
      newest &&
      this.samples.length > 1 &&
      this.busyMs - (this.samples.at(-2)?.busyMs ?? 0) < sampleSpacingMs
    ) {
      newest.busyMs = this.busyMs;
      newest.storedBytes = stored;
    } else this.samples.push({ busyMs: this.busyMs, storedBytes: stored });
    while ((this.samples[1]?.busyMs ?? Number.NEGATIVE_INFINITY) <= this.busyMs - rateBusyWindowMs)
      this.samples.shift();
  }

  /** Bytes per second over the window, or null before spanMsMin of busy time (or nothing stored). */
  bytesPerSecond(): number | null {
    const first = this.samples[0];
    const newest = this.samples.at(-1);
    if (!first || !newest) return null;
    const spanMs = newest.busyMs - first.busyMs;
    const bytes = newest.storedBytes - first.storedBytes;
    if (spanMs < this.spanMsMin || bytes <= 0) return null;
    return (bytes * 1000) / spanMs;
  }
}
