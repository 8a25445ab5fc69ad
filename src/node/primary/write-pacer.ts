/**
 * Applies write pacing (core/write-pacing.ts) on the primary: each new source write waits the
 * delay the secondaries' lag calls for before it is journaled. Only secondaries connected and
 * streaming count: waiting for one that is away, or resyncing, could not bring its lag down and
 * would only stall production (DESIGN.md, invariant 8).
 *
 * The lag is sampled at most every sampleMs, on the write path itself: no timer, no cost between
 * writes. Writes waiting out their delay are refused with the others (rejectAll) when the primary
 * stops, fails or stops taking writes; past writesDelayedMax of them a write goes through at once,
 * because pacing slows writers and never refuses or holds unbounded memory.
 */
import type { SecondaryStatus } from '../../core/primary-group.ts';
import {
  AdmissionQueue,
  checkPacingConfig,
  LinkRate,
  type PacingConfig,
  type PacingDecision,
  pacingDecision,
} from '../../core/write-pacing.ts';
import type { Clock, Timer } from '../../io/clock.ts';
import type { Logger } from '../../ops/logger.ts';

/** How often the links are read again at most. */
export const pacingSampleMs = 100;

/** Writes waiting out a pacing delay at most; beyond, a write is not delayed. */
export const writesDelayedMax = 4096;

/**
 * The bytes a link shipped stand in for its rate after this much busy time: early, since fast
 * writers queue seconds of link time each second pacing knows no rate.
 */
const shippedSpanMsMin = 300;

/** An episode of pacing ends (and is logged as ended) after the lag stayed below the band this long. */
export const pacingQuietMs = 5000;

export interface PacingStatus extends PacingConfig {
  /** The delay a write arriving now waits, in ms. */
  delayMs: number;
  /** The rate writes are let in at while pacing acts (null: no limit, or the link's rate is unknown). */
  admitBytesPerSecond: number | null;
  pacedBy: string | null;
  /** The lag pacing acts on: the larger of the oldest unstored write's age and the backlog's shipping time. */
  lagSeconds: number;
  saturated: boolean;
  /** Writes delayed so far, writes waiting now, and the delay added in all, in seconds. */
  writesDelayed: number;
  writesWaiting: number;
  delaySeconds: number;
  /** Writes let through undelayed because writesDelayedMax were waiting already. */
  writesUndelayed: number;
}

interface DelayedWrite {
  timer: Timer;
  reject: (error: Error) => void;
}

type LinkView = Pick<
  SecondaryStatus,
  'name' | 'link' | 'mode' | 'stored' | 'lagSeconds' | 'lagBytes' | 'shippedBytes'
>;

/** The group as pacing reads it: bytes the sources wrote in all, and each secondary. */
export interface PacedGroup {
  writtenBytes: number;
  /** The newest closed cycle: a secondary that has not stored it keeps its link busy. */
  closed: number;
  secondaries: readonly LinkView[];
}

/** What is logged once per episode (from the lag's first time in the band until pacingQuietMs below it). */
interface Episode {
  saturatedLogged: boolean;
  undelayedLogged: boolean;
  quietSinceMs: number | null;
}

export class WritePacer {
  private decision: PacingDecision = {
    admitBytesPerSecond: null,
    delayMs: 0,
    pacedBy: null,
    lagSeconds: 0,
    saturated: false,
  };
  private readonly queue = new AdmissionQueue();
  private sampledAtMs = Number.NEGATIVE_INFINITY;
  private readonly delayed = new Set<DelayedWrite>();
  private readonly rates = new Map<string, { stored: LinkRate; shipped: LinkRate }>();
  private episode: Episode | null = null;
  private writesDelayed = 0;
  private writesUndelayed = 0;
  private delayMsTotal = 0;

  constructor(
    private readonly config: PacingConfig,
    private readonly clock: Clock,
    /** The secondaries as the group sees them now. */
    private readonly group: () => PacedGroup,
    private readonly logger: Logger,
  ) {
    checkPacingConfig(config);
  }

  /**
   * Null when a write of `bytes` may go on at once; else a promise that resolves after its delay
   * (or rejects when the waiting writes are refused). Called once per source write.
   */
  beforeWrite(bytes: number): Promise<void> | null {
    const decision = this.sample();
    if (!acting(decision)) {
      this.queue.reset();
      return null;
    }
    if (this.delayed.size >= writesDelayedMax) {
      this.writesUndelayed++;
      if (this.episode && !this.episode.undelayedLogged) {
        this.episode.undelayedLogged = true;
        this.logger.warn('pacing-writes-waiting-max', { writesDelayedMax });
      }
      return null;
    }
    const delayMs = this.delayOf(decision, bytes);
    if (delayMs < 1) return null;
    return new Promise<void>((resolve, reject) => {
      const write: DelayedWrite = {
        timer: this.clock.after(delayMs, () => {
          this.delayed.delete(write);
          this.writesDelayed++;
          this.delayMsTotal += delayMs;
          resolve();
        }),
        reject,
      };
      this.delayed.add(write);
    });
  }

  /** Writes still waiting out their delay were never journaled: each fails with `error`. */
  rejectAll(error: Error): void {
    const delayed = [...this.delayed];
    this.delayed.clear();
    for (const write of delayed) {
      write.timer.cancel();
      write.reject(error);
    }
  }

  status(): PacingStatus {
    const decision = this.sample();
    const delayMs =
      decision.admitBytesPerSecond === null
        ? decision.delayMs
        : this.queue.waitMs(this.clock.now(), this.config.delayMsMax);
    return {
      ...this.config,
      ...decision,
      delayMs,
      writesDelayed: this.writesDelayed,
      writesWaiting: this.delayed.size,
      delaySeconds: this.delayMsTotal / 1000,
      writesUndelayed: this.writesUndelayed,
    };
  }

  private sample(): PacingDecision {
    const nowMs = this.clock.now();
    if (nowMs - this.sampledAtMs < pacingSampleMs) return this.decision;
    this.sampledAtMs = nowMs;
    const paced = [];
    const { writtenBytes, closed, secondaries } = this.group();
    for (const link of secondaries) {
      const rates = this.ratesOf(link.name);
      // Busy: streaming with closed cycles it has not stored. Away or resyncing, its stored count
      // does not move with its link's rate: that time must not be counted as the link's.
      const streaming = link.link === 'streaming' && link.mode === 'streaming';
      const busy = streaming && link.stored < closed;
      // What it stored of the writes, end to end: not the bytes handed to a socket, which its
      // buffers take faster than the link carries them. Those only stand in while no stored
      // rate is known: a cold start of fast writers would otherwise queue many seconds of link
      // time before pacing knew any rate (measured: 330 MiB, 28 s, at 100 Mbit/s).
      rates.stored.record(nowMs, writtenBytes - link.lagBytes, busy);
      rates.shipped.record(nowMs, link.shippedBytes, busy);
      if (!streaming) continue;
      paced.push({
        ...link,
        bytesPerSecond: rates.stored.bytesPerSecond() ?? rates.shipped.bytesPerSecond(),
      });
    }
    this.decision = pacingDecision(this.config, paced, this.episode !== null);
    this.logEpisode(nowMs, this.decision);
    return this.decision;
  }

  /** A write's wait: its turn at the admission rate, or the fixed delay while the link's rate is unknown. */
  private delayOf(decision: PacingDecision, bytes: number): number {
    if (decision.admitBytesPerSecond === null) return decision.delayMs;
    return this.queue.admit(this.clock.now(), bytes, decision.admitBytesPerSecond, this.config.delayMsMax);
  }

  private ratesOf(name: string): { stored: LinkRate; shipped: LinkRate } {
    let rates = this.rates.get(name);
    if (!rates) {
      rates = { stored: new LinkRate(), shipped: new LinkRate(shippedSpanMsMin) };
      this.rates.set(name, rates);
    }
    return rates;
  }

  /**
   * Logs an episode's start, its first time at the bound, and its end once the lag stayed below
   * the band for pacingQuietMs: a lag that crosses the start of pacing with every stored cycle (a
   * saw-tooth of one cycle's height) logs one episode, not two lines a cycle.
   */
  private logEpisode(nowMs: number, decision: PacingDecision): void {
    const fields = () => ({
      secondary: decision.pacedBy,
      lagSeconds: Number(decision.lagSeconds.toFixed(3)),
      admitBytesPerSecond:
        decision.admitBytesPerSecond === null ? null : Math.round(decision.admitBytesPerSecond),
      lagSecondsMax: this.config.lagSecondsMax,
    });
    // The episode lasts while the lag is in the band, and pacingQuietMs after: not while writes
    // are merely let in at a rate below it (that rate is the episode's own, and it would never end).
    const inBand = decision.lagSeconds > this.config.lagSecondsMax * this.config.startFraction;
    if (inBand && !this.episode) {
      this.episode = { saturatedLogged: false, undelayedLogged: false, quietSinceMs: null };
      this.logger.info('pacing-started', fields());
    }
    const episode = this.episode;
    if (!episode) return;
    if (decision.saturated && !episode.saturatedLogged) {
      episode.saturatedLogged = true;
      this.logger.warn('pacing-saturated', fields());
    }
    if (inBand) {
      episode.quietSinceMs = null;
      return;
    }
    episode.quietSinceMs ??= nowMs;
    if (nowMs - episode.quietSinceMs < pacingQuietMs) return;
    this.episode = null;
    this.logger.info('pacing-ended', {
      ...fields(),
      writesDelayed: this.writesDelayed,
      delaySeconds: Number((this.delayMsTotal / 1000).toFixed(3)),
    });
  }
}

/** Pacing acts: writes are let in at a rate, or delayed by a fixed share while the rate is unknown. */
function acting(decision: PacingDecision): boolean {
  return decision.admitBytesPerSecond !== null || decision.delayMs > 0;
}
