/**
 * The writers of the whole-site simulator: independent sources, each writing only the blocks it
 * owns, one request at a time, through the primary's source API. What they saw acknowledged is
 * what the oracle holds the sites to:
 *
 * - every write depends on the source's previous one and, by chance, on the latest acknowledged
 *   write of another source (it was acknowledged before this one was issued);
 * - a FLUSH that completes makes every write acknowledged before it was issued survive any crash;
 * - when the primary dies as a process, the write in flight is of unknown fate and is issued
 *   again; after a machine crash, every write acknowledged since the last completed FLUSH may be
 *   lost too: the oracle reads what the restarted primary kept (it must be a consistent cut with
 *   at least every durable write) and the history forgets the rest.
 */
import type { Random } from '../random.ts';
import { type Dependency, type History, type HistoryWrite, writeContent } from './history.ts';

/** What the sources need of a primary: the library API of PrimaryNode. */
export interface SourceTarget {
  write(volume: number, offset: number, data: Uint8Array): Promise<unknown>;
  writeZeroes(volume: number, offset: number, length: number): Promise<unknown>;
  flush(): Promise<void>;
}

export interface SourceOptions {
  /** `ack: cycle`: a write is acknowledged only once its cycle is durable (README, Ack modes). */
  ack: 'immediate' | 'cycle';
  crossDependencyChance: number;
  thinkMsMax: number;
  flushChance: number;
  zeroChance: number;
}

export interface SourceStats {
  writes: number;
  zeroRuns: number;
  flushes: number;
  reissued: number;
  /** Acknowledged (or in-flight) writes a machine crash of the primary took back. */
  lostInCrash: number;
  /** Writes after the cut a promoted secondary held (a failover's window of loss). */
  lostInFailover: number;
  refused: number;
}

/** What a healthy primary may refuse a write with: the journal full, stopping, handing over. */
const refusalsExpected = ['journal-full', 'stopping', 'switching-over'];

export class Sources {
  /** Per source: writes acknowledged (a prefix of its sequence). */
  readonly acknowledged: number[];
  /** Per source: writes that survive any crash (acknowledged before a completed FLUSH). */
  readonly durable: number[];
  /** Per source: the next write of its sequence to issue (re-issues go back below `issued`). */
  private readonly next: number[];
  private readonly busy: boolean[];
  /** Bumped when the primary dies: completions of an older epoch are dropped. */
  private epoch = 0;
  private target: SourceTarget | null = null;
  stopped = false;
  /** The primary's disk was made to fail: refusals and failed FLUSHes are what it should answer. */
  expectFailures = false;
  readonly stats: SourceStats = {
    writes: 0,
    zeroRuns: 0,
    flushes: 0,
    reissued: 0,
    lostInCrash: 0,
    lostInFailover: 0,
    refused: 0,
  };

  constructor(
    private readonly history: History,
    private readonly random: Random,
    private readonly options: SourceOptions,
    /** Runs a callback after simulated ms (the world's schedule, owned by no process). */
    private readonly after: (ms: number, run: () => void) => void,
    /** Reports something the oracle holds to be wrong. */
    private readonly violation: (text: string) => void,
    /** Notes each write sent and acknowledged (for --trace). */
    private readonly note: (line: string) => void = () => {},
  ) {
    const count = history.sources.length;
    this.acknowledged = Array.from({ length: count }, () => 0);
    this.durable = Array.from({ length: count }, () => 0);
    this.next = Array.from({ length: count }, () => 0);
    this.busy = Array.from({ length: count }, () => false);
  }

  /** Whether the sources write to a primary now (none after a crash, until its survey). */
  get attached(): boolean {
    return this.target !== null;
  }

  /** The primary is up (again): every source goes on. */
  attach(target: SourceTarget): void {
    this.target = target;
    for (let source = 0; source < this.busy.length; source++) this.schedule(source, 0);
  }

  /**
   * The primary died. Its write in flight is of unknown fate: after a process crash (the kernel
   * keeps what it was given) it is issued again; it is its source's latest, so the history stays a
   * sequence. After a machine crash, every write acknowledged since the last completed FLUSH is of
   * unknown fate too, and issuing those again would put old bytes over newer ones that survived:
   * the sources wait until `survived` says what the restarted primary holds.
   */
  detach(machine: boolean): void {
    this.target = null;
    this.epoch++;
    this.awaitingSurvey = machine || this.awaitingSurvey;
    for (let source = 0; source < this.next.length; source++) {
      this.busy[source] = false;
      if (machine) continue;
      this.stats.reissued += (this.next[source] as number) - (this.acknowledged[source] as number);
      this.next[source] = this.acknowledged[source] as number;
    }
  }

  /** True after a machine crash of the primary, until `survived` is told what it kept. */
  awaitingSurvey = false;

  /**
   * What the primary kept after a machine crash, per source (a prefix at least `durable`, found in
   * its image by the oracle), or what a promoted secondary held (`failover`): the rest is
   * forgotten, and the sources go on from there.
   */
  survived(prefix: readonly number[], cause: 'crash' | 'failover' = 'crash'): void {
    this.awaitingSurvey = false;
    prefix.forEach((length, source) => {
      const issued = (this.history.sources[source] as HistoryWrite[]).length;
      if (cause === 'crash') this.stats.lostInCrash += issued - length;
      else this.stats.lostInFailover += issued - length;
      this.history.truncate(source, length);
      this.acknowledged[source] = length;
      this.next[source] = length;
      this.durable[source] = Math.min(this.durable[source] as number, length);
    });
  }

  private schedule(source: number, delayMs: number): void {
    if (this.busy[source]) return;
    this.busy[source] = true;
    const epoch = this.epoch;
    this.after(delayMs, () => {
      this.busy[source] = false;
      if (epoch === this.epoch) this.issue(source);
    });
  }

  private issue(source: number): void {
    const target = this.target;
    if (!target || this.busy[source]) return;
    const writes = this.history.sources[source] as HistoryWrite[];
    const seq = this.next[source] as number;
    if (seq < writes.length) {
      this.reissue(source, writes[seq] as HistoryWrite, target);
      return;
    }
    if (this.stopped || this.history.blocksOf(source).length === 0) return;
    if (this.random.chance(this.options.flushChance)) {
      this.flush(source, target);
      return;
    }
    const write = this.draw(source);
    this.send(source, write, target);
  }

  /** A write of unknown fate goes again once what it depends on is acknowledged again. */
  private reissue(source: number, write: HistoryWrite, target: SourceTarget): void {
    const waiting = write.dependencies.some(
      (dependency) => (this.acknowledged[dependency.source] as number) <= dependency.seq,
    );
    if (waiting) {
      this.schedule(source, 5);
      return;
    }
    this.send(source, write, target);
  }

  private draw(source: number): HistoryWrite {
    const owned = this.history.blocksOf(source);
    const start = this.random.pick(owned);
    const zero = this.random.chance(this.options.zeroChance);
    let blockCount = 1;
    const longest = zero ? 8 : 4;
    while (
      blockCount < longest &&
      this.history.ownerOf(start.volume, start.block + blockCount) === source &&
      this.random.chance(0.6)
    )
      blockCount++;
    const dependencies: Dependency[] = [];
    if (this.random.chance(this.options.crossDependencyChance)) {
      const other = this.random.int(this.acknowledged.length);
      const acknowledged = this.acknowledged[other] as number;
      if (other !== source && acknowledged > 0) dependencies.push({ source: other, seq: acknowledged - 1 });
    }
    return this.history.add({
      source,
      volume: start.volume,
      block: start.block,
      blockCount,
      zero,
      dependencies,
    });
  }

  private send(source: number, write: HistoryWrite, target: SourceTarget): void {
    this.busy[source] = true;
    this.next[source] = write.seq + 1;
    const epoch = this.epoch;
    const blockBytes = this.history.blockBytes;
    this.note(
      `source ${source} sends write ${write.seq} (id ${write.id}, ${write.zero ? 'zeroes' : 'data'} at ${write.volume}:${write.block}+${write.blockCount})`,
    );
    const sent = write.zero
      ? target.writeZeroes(write.volume, write.block * blockBytes, write.blockCount * blockBytes)
      : target.write(write.volume, write.block * blockBytes, writeContent(write, blockBytes));
    sent.then(
      () => {
        if (epoch !== this.epoch) return;
        if (this.acknowledged[source] !== write.seq)
          this.violation(`source ${source}: write ${write.seq} acknowledged out of order`);
        this.acknowledged[source] = write.seq + 1;
        // In cycle mode the acknowledgement itself promises durability: no crash may take it back.
        if (this.options.ack === 'cycle')
          this.durable[source] = Math.max(this.durable[source] as number, write.seq + 1);
        this.note(`source ${source} write ${write.seq} acknowledged`);
        if (write.zero) this.stats.zeroRuns++;
        else this.stats.writes++;
        this.busy[source] = false;
        this.schedule(source, this.random.int(this.options.thinkMsMax + 1));
      },
      (error: Error & { code?: string }) => {
        if (epoch !== this.epoch) return;
        this.note(`source ${source} write ${write.seq} refused: ${error.message}`);
        // Only a full journal, a stopping site or a switchover may refuse a write here (no disk fault
        // is injected).
        if (!this.expectFailures && !refusalsExpected.includes(error.code ?? ''))
          this.violation(`source ${source}: write ${write.seq} refused: ${error.message}`);
        // Refused (journal full, stopping, a storage failure): the write is of unknown fate; again later.
        this.stats.refused++;
        this.next[source] = write.seq;
        this.busy[source] = false;
        this.schedule(source, 20);
      },
    );
  }

  private flush(source: number, target: SourceTarget): void {
    this.busy[source] = true;
    const epoch = this.epoch;
    const covered = [...this.acknowledged];
    target.flush().then(
      () => {
        if (epoch !== this.epoch) return;
        this.stats.flushes++;
        covered.forEach((count, other) => {
          this.durable[other] = Math.max(this.durable[other] as number, count);
        });
        this.busy[source] = false;
        this.schedule(source, this.random.int(this.options.thinkMsMax + 1));
      },
      (error: Error & { code?: string }) => {
        if (epoch !== this.epoch) return;
        if (!this.expectFailures && error.code !== 'stopping' && error.code !== 'switching-over')
          this.violation(`source ${source}: FLUSH failed: ${error.message}`);
        this.busy[source] = false;
        this.schedule(source, 20);
      },
    );
  }

  /** True when no source has a write in flight or waiting to be issued again. */
  get quiet(): boolean {
    return (
      this.busy.every((busy) => !busy) &&
      this.next.every((next, source) => next === this.history.sources[source]?.length)
    );
  }

  /** Writes in each source's sequence. */
  get issued(): number[] {
    return this.history.sources.map((writes) => writes.length);
  }
}
