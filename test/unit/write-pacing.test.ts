// Write pacing (config `pacing`, docs/pacing.md): past startFraction of the bound, new writes are
// let in at a rate set from what the connected, streaming secondary furthest behind stores (or
// wait a delay that grows with its lag while that rate is unknown), each at most delayMsMax. The
// lag looks ahead (the backlog at the secondary's rate over busy time, or the oldest unstored
// write's age if larger); an away or resyncing secondary is not
// waited for; waiting writes are refused with the others; past writesDelayedMax waiting writes a
// write goes through undelayed, counted; an episode is logged once, however the lag saw-tooths.
// The last tests run a real PrimaryNode against a stand-in secondary that keeps its link up and
// stores nothing.
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, test } from 'node:test';
import { ConfigError, CyclerepError } from '../../src/core/errors.ts';
import {
  AdmissionQueue,
  LinkRate,
  lookAheadLagSeconds,
  type PacingConfig,
  pacingDecision,
  rateBusySpanMsMin,
  rateBusyWindowMs,
} from '../../src/core/write-pacing.ts';
import type { Clock, Timer } from '../../src/io/clock.ts';
import {
  pacingQuietMs,
  pacingSampleMs,
  WritePacer,
  writesDelayedMax,
} from '../../src/node/primary/write-pacer.ts';
import { PrimaryNode } from '../../src/node/primary-node.ts';
import { type PrimaryFileConfig, validateConfig } from '../../src/ops/config.ts';
import { createLogger } from '../../src/ops/logger.ts';
import { StandInSecondary, standInPrimaryConfig } from './stand-in-secondary.ts';

const config: PacingConfig = { lagSecondsMax: 10, delayMsMax: 100, startFraction: 0.5 };
const quiet = createLogger({ site: 'pacing', format: 'json', write: () => {} });
const mib = 1024 * 1024;

/** A link known only by the age of its oldest unstored write. */
const aged = (name: string, lagSeconds: number) => ({ name, lagSeconds, lagBytes: 0, bytesPerSecond: null });

test('the delay is 0 up to startFraction of the bound, grows linearly, and stays at delayMsMax from the bound on', () => {
  const delayAt = (lagSeconds: number) => pacingDecision(config, [aged('dr1', lagSeconds)]).delayMs;
  assert.equal(pacingDecision(config, []).delayMs, 0, 'no streaming secondary: no delay');
  assert.equal(delayAt(0), 0);
  assert.equal(delayAt(5), 0, 'at the start: still none');
  assert.equal(delayAt(6), 20);
  assert.equal(delayAt(7.5), 50);
  assert.equal(delayAt(10), 100);
  assert.equal(delayAt(3600), 100, 'never more than delayMsMax, however far behind');
  assert.equal(delayAt(5.05), 1, 'whole milliseconds, rounded');
  assert.equal(delayAt(5.02), 0, 'under half a millisecond is no delay');
  assert.equal(pacingDecision(config, [aged('dr1', 9.99)]).saturated, false);
  assert.equal(pacingDecision(config, [aged('dr1', 10)]).saturated, true);
});

test('the secondary furthest behind sets the delay', () => {
  const decision = pacingDecision(config, [aged('near', 6), aged('far', 8.5), aged('caught-up', 0)]);
  assert.equal(decision.pacedBy, 'far');
  assert.equal(decision.lagSeconds, 8.5);
  assert.equal(decision.delayMs, 70);
});

test('the lag looks ahead: what a secondary has not stored, at the most its link shipped lately, is lag', () => {
  // A young backlog: its oldest write is 1 s old, but 90 MiB at 12 MiB/s is 7.5 s of link time.
  const backlogged = { name: 'dr1', lagSeconds: 1, lagBytes: 90 * mib, bytesPerSecond: 12 * mib };
  assert.equal(lookAheadLagSeconds(backlogged), 7.5);
  assert.equal(
    pacingDecision(config, [backlogged]).admitBytesPerSecond,
    12 * mib,
    'halfway: what the link ships',
  );
  assert.equal(lookAheadLagSeconds({ ...backlogged, lagSeconds: 9 }), 9, 'an older write counts if older');
  assert.equal(
    lookAheadLagSeconds({ ...backlogged, bytesPerSecond: null }),
    1,
    'rate unknown: the age alone',
  );
});

test("a link's rate is what it stored per second of busy time over the last 15 s of it: a link waiting for writes is not a slow one", () => {
  const rate = new LinkRate();
  let stored = 0;
  let atMs = 0;
  /** Samples every 100 ms for `ms`, the link busy or not, storing `bytesPerSample` each time. */
  const run = (ms: number, busy: boolean, bytesPerSample: number) => {
    for (const end = atMs + ms; atMs < end; ) {
      atMs += 100;
      stored += bytesPerSample;
      rate.record(atMs, stored, busy);
    }
  };
  const near = (actual: number | null, expected: number, why: string) =>
    assert.ok(Math.abs((actual ?? 0) - expected) < 0.01 * mib, `${why}: ${(actual ?? 0) / mib} MiB/s`);
  rate.record(0, 0, true);
  assert.equal(rate.bytesPerSecond(), null, 'one sample says nothing');
  run(500, true, 1.2 * mib);
  assert.equal(rate.bytesPerSecond(), null, `under ${rateBusySpanMsMin} ms busy: unknown`);
  run(10_000, true, 1.2 * mib);
  near(rate.bytesPerSecond(), 12 * mib, 'a busy link storing 12 MiB/s');
  // A minute of few writes (the link waits, stores a little now and then): not counted.
  run(60_000, false, 0.01 * mib);
  // (The one sample at which it went idle counts: it was busy at its start.)
  const afterIdle = rate.bytesPerSecond() ?? 0;
  assert.ok(
    Math.abs(afterIdle - 12 * mib) < 0.15 * mib,
    `idle time is not counted, nor what was stored in it: ${afterIdle / mib}`,
  );
  // Busy again at 6 MiB/s: after a full window, that is the rate; halfway, a mix.
  run(rateBusyWindowMs / 2, true, 0.6 * mib);
  const mixed = rate.bytesPerSecond() ?? 0;
  assert.ok(mixed > 6 * mib && mixed < 12 * mib, `half a window after the change: ${mixed / mib}`);
  run(rateBusyWindowMs, true, 0.6 * mib);
  near(rate.bytesPerSecond(), 6 * mib, 'a full window later: the new rate');
  // Whole cycles stored at once (12 MiB every second, nothing between): a window of 15 s is off
  // by at most one cycle over 15 s wherever it starts.
  for (let second = 0; second < 30; second++) {
    run(900, true, 0);
    run(100, true, 12 * mib);
    const measured = rate.bytesPerSecond() ?? 0;
    if (second >= 15)
      assert.ok(
        Math.abs(measured - 12 * mib) <= (12 * mib) / 14,
        `cycle-sized steps: ${measured / mib} MiB/s`,
      );
  }
});

test('a link that keeps up, busy only until each cycle is stored, is measured over those spells: the store that ends one counts', () => {
  const rate = new LinkRate();
  let stored = 0;
  // Each second: a cycle of 3.6 MiB closes, the link carries it for 300 ms, it is stored as the
  // link goes idle, 700 ms of waiting for writes follow. Samples every 100 ms.
  for (let second = 0; second < 20; second++) {
    const at = second * 1000;
    rate.record(at, stored, false);
    rate.record(at + 100, stored, true);
    rate.record(at + 200, stored, true);
    rate.record(at + 300, stored, true);
    stored += 3.6 * mib;
    rate.record(at + 400, stored, false);
    for (let ms = 500; ms < 1000; ms += 100) rate.record(at + ms, stored, false);
  }
  const measured = rate.bytesPerSecond() ?? 0;
  assert.ok(Math.abs(measured - 12 * mib) < 0.01 * mib, `3.6 MiB per 300 ms busy: ${measured / mib} MiB/s`);
});

test('a count that goes down is no progress, and the window holds a bounded number of samples', () => {
  const rate = new LinkRate();
  rate.record(0, 100 * mib, true);
  rate.record(1000, 50 * mib, true);
  assert.equal(rate.bytesPerSecond(), null, 'nothing stored');
  rate.record(2000, 112 * mib, true);
  assert.ok(Math.abs((rate.bytesPerSecond() ?? 0) - 6 * mib) < 1, 'from the highest count seen');
  for (let ms = 2001; ms < 100_000; ms++) rate.record(ms, 112 * mib + ms, true);
  const samples = (rate as unknown as { samples: unknown[] }).samples.length;
  assert.ok(samples <= rateBusyWindowMs / 100 + 3, `${samples} samples`);
});

/** Time that moves only when the test says so. */
class ManualClock implements Clock {
  nowMs = 1_000_000;
  readonly timers: { atMs: number; callback: () => void; cancelled: boolean }[] = [];

  now(): number {
    return this.nowMs;
  }

  after(ms: number, callback: () => void): Timer {
    const timer = { atMs: this.nowMs + ms, callback, cancelled: false };
    this.timers.push(timer);
    return { cancel: () => (timer.cancelled = true) };
  }

  every(): Timer {
    throw new Error('pacing needs no periodic timer');
  }

  soon(callback: () => void): void {
    queueMicrotask(callback);
  }

  /** Moves time on by `ms`, running the timers due on the way. */
  advance(ms: number): void {
    this.nowMs += ms;
    for (const timer of this.timers.filter((each) => each.atMs <= this.nowMs && !each.cancelled)) {
      timer.cancelled = true;
      timer.callback();
    }
  }

  get pending(): number {
    return this.timers.filter((timer) => !timer.cancelled).length;
  }
}

interface Link {
  name: string;
  link: 'streaming' | 'idle' | 'connecting' | 'refused';
  mode: 'streaming' | 'journal' | 'tracking' | 'resync';
  stored: number;
  lagSeconds: number;
  lagBytes: number;
  shippedBytes: number;
}

/** A link that holds no backlog: only the age of its oldest write counts. */
function link(name: string, lagSeconds: number, state: Partial<Pick<Link, 'link' | 'mode'>> = {}): Link {
  return {
    name,
    link: state.link ?? 'streaming',
    mode: state.mode ?? 'streaming',
    stored: 0,
    lagSeconds,
    lagBytes: 0,
    shippedBytes: 0,
  };
}

function pacerWith(links: Link[], clock = new ManualClock()) {
  const logged: { level: string; event: string }[] = [];
  const logger = createLogger({
    site: 'pacing',
    format: 'json',
    write: (line) => logged.push(JSON.parse(line)),
  });
  const group = { writtenBytes: 0, closed: 0, secondaries: links };
  return { pacer: new WritePacer(config, clock, () => group, logger), clock, links, group, logged };
}

test('a write waits out the delay before it goes on, and the status counts it', async () => {
  const { pacer, clock } = pacerWith([link('dr1', 7.5)]);
  const gate = pacer.beforeWrite(4096);
  assert.ok(gate, 'a lagging secondary delays the write');
  let through = false;
  void gate.then(() => (through = true));
  clock.advance(49);
  await Promise.resolve();
  assert.equal(through, false, 'not before its 50 ms');
  assert.equal(pacer.status().writesWaiting, 1);
  clock.advance(1);
  await gate;
  assert.equal(through, true);
  const status = pacer.status();
  assert.equal(status.writesDelayed, 1);
  assert.equal(status.writesWaiting, 0);
  assert.equal(status.delaySeconds, 0.05);
  assert.equal(status.pacedBy, 'dr1');
});

test('secondaries that are away, connecting or resyncing are not waited for', () => {
  const far = 3600;
  const { pacer } = pacerWith([
    link('away', far, { link: 'idle', mode: 'journal' }),
    link('dialing', far, { link: 'connecting', mode: 'tracking' }),
    link('copying', far, { mode: 'resync' }),
    link('keeping-up', 1),
  ]);
  assert.equal(pacer.beforeWrite(4096), null);
  assert.equal(pacer.status().pacedBy, 'keeping-up');
});

test("with the link's rate known, writes are let in at 1.5 x it at the start of the band, 1 x halfway, 0.5 x at the bound, less beyond", () => {
  const rateAt = (lagSeconds: number) =>
    pacingDecision(config, [{ name: 'dr1', lagSeconds, lagBytes: 0, bytesPerSecond: 10 * mib }]);
  assert.equal(rateAt(5).admitBytesPerSecond, null, 'at the start: no limit yet');
  assert.ok(Math.abs((rateAt(5.001).admitBytesPerSecond ?? 0) - 15 * mib) < 0.01 * mib);
  assert.equal(rateAt(7.5).admitBytesPerSecond, 10 * mib);
  assert.equal(rateAt(10).admitBytesPerSecond, 5 * mib, 'at the bound: half');
  assert.ok(
    Math.abs((rateAt(11).admitBytesPerSecond ?? 0) - 3 * mib) < 1,
    'beyond: less, so that the backlog drains faster',
  );
  assert.equal(
    rateAt(60).admitBytesPerSecond,
    2.5 * mib,
    'never below a quarter (each wait at most delayMsMax)',
  );
  assert.equal(rateAt(7.5).delayMs, 0, 'no fixed delay while the rate is known');
});

test('below the band writes go in without a limit, unless an episode goes on: then at more than 1.5 x the rate, 2.5 x with no lag', () => {
  const at = (lagSeconds: number, episode: boolean) =>
    pacingDecision(config, [{ name: 'dr1', lagSeconds, lagBytes: 0, bytesPerSecond: 10 * mib }], episode)
      .admitBytesPerSecond;
  assert.equal(at(2.5, false), null);
  assert.equal(at(2.5, true), 20 * mib);
  assert.equal(at(0, true), 25 * mib);
  assert.equal(at(7.5, true), 10 * mib, 'in the band as without');
  assert.equal(
    pacingDecision(config, [aged('dr1', 2.5)], true).admitBytesPerSecond,
    null,
    'no rate known: nothing to admit at',
  );
});

test('until the secondary stored anything, the bytes its link shipped while busy stand in for its rate; then what it stored', () => {
  const streaming = { ...link('dr1', 0), lagBytes: 0 };
  const { pacer, clock, group } = pacerWith([streaming]);
  const sample = () => {
    clock.advance(pacingSampleMs);
    return pacer.status();
  };
  sample();
  group.closed = 1; // a cycle closed that dr1 has not stored: its link is busy
  for (let step = 1; step <= 20; step++) {
    group.writtenBytes += 2 * mib;
    streaming.lagBytes += 2 * mib;
    streaming.lagSeconds = 0.5;
    streaming.shippedBytes += 2.4 * mib; // the sockets' buffers take more than the link carries
  }
  let status = sample();
  for (let step = 0; step < 20; step++) {
    streaming.shippedBytes += 2.4 * mib;
    streaming.lagBytes += 0;
    status = sample();
  }
  // 48 MiB shipped in 2 s of busy time: 24 MiB/s; 40 MiB not stored at that rate: 1.67 s.
  assert.ok(
    Math.abs(status.lagSeconds - 40 / 24) < 0.1,
    `look-ahead from the shipped rate: ${status.lagSeconds}`,
  );
  // Then it stores 1.2 MiB every 100 ms: 24 MiB stored in 4 s of busy time (the 2 s before its
  // first store count too: on the side of slower writes) is 6 MiB/s, and 16 MiB left take 2.67 s.
  for (let step = 0; step < 20; step++) {
    streaming.lagBytes -= 1.2 * mib;
    streaming.shippedBytes += 1.2 * mib;
    status = sample();
  }
  assert.ok(
    Math.abs(status.lagSeconds - 16 / 6) < 0.1,
    `look-ahead from the stored rate: ${status.lagSeconds}`,
  );
});

test('writes wait their turn at the admission rate, each at most delayMsMax; no credit builds up', () => {
  const queue = new AdmissionQueue();
  const rate = mib; // 1 MiB/s: 256 KiB take 250 ms
  assert.equal(queue.admit(0, 256 * 1024, rate, 1000), 0, 'the first goes at once');
  assert.equal(queue.admit(0, 256 * 1024, rate, 1000), 250);
  assert.equal(queue.admit(100, 256 * 1024, rate, 1000), 400);
  assert.equal(queue.waitMs(100, 1000), 650);
  for (let index = 0; index < 10; index++) queue.admit(100, 256 * 1024, rate, 1000);
  assert.equal(queue.admit(100, 256 * 1024, rate, 1000), 1000, 'at most delayMsMax, however many are ahead');
  assert.equal(queue.waitMs(100, 1000), 1000);
  // Idle for a while: the next write goes at once, and the one after waits its own turn only.
  assert.equal(queue.admit(60_000, 256 * 1024, rate, 1000), 0);
  assert.equal(queue.admit(60_000, 256 * 1024, rate, 1000), 250);
  queue.reset();
  assert.equal(queue.admit(60_000, 256 * 1024, rate, 1000), 0, 'reset: at once');
});

test('the pacer measures what each secondary stores, end to end, and lets writes in at that rate', () => {
  const busy = link('dr1', 0.5);
  const { pacer, clock, group } = pacerWith([busy]);
  group.closed = 1; // a closed cycle it has not stored: its link is busy throughout
  // 6 s in which the secondary stores 12 MiB/s and keeps 6 MiB behind: no delay.
  for (let ms = 0; ms < 6000; ms += pacingSampleMs) {
    group.writtenBytes += 1.2 * mib;
    busy.lagBytes = 6 * mib;
    assert.equal(pacer.beforeWrite(256 * 1024), null);
    clock.advance(pacingSampleMs);
  }
  // Writers outrun the link: 90 MiB not stored is 7.5 s of link time, though the oldest write is young.
  group.writtenBytes += 84 * mib + 1.2 * mib;
  busy.lagBytes = 90 * mib;
  assert.equal(pacer.beforeWrite(1.2 * mib), null, 'the first write of the episode goes at once');
  const status = pacer.status();
  // (Worn down by the away time it read 4 MiB/s, 22 s; forgotten, the age alone, 0.5 s.)
  assert.ok(Math.abs(status.lagSeconds - 7.5) < 0.2, String(status.lagSeconds));
  assert.ok(
    Math.abs((status.admitBytesPerSecond ?? 0) - 12 * mib) < 0.05 * mib,
    String(status.admitBytesPerSecond),
  );
  assert.ok(Math.abs(status.delayMs - 100) <= 1, `the next waits 1.2 MiB at 12 MiB/s: ${status.delayMs} ms`);
  assert.ok(pacer.beforeWrite(4096), 'and is delayed');
});

test('the lag is read again at most every pacingSampleMs, on the write path', () => {
  const { pacer, clock, links } = pacerWith([link('dr1', 0)]);
  assert.equal(pacer.beforeWrite(4096), null);
  (links[0] as Link).lagSeconds = 10;
  clock.advance(pacingSampleMs - 1);
  assert.equal(pacer.beforeWrite(4096), null, 'the sample taken 99 ms ago still holds');
  clock.advance(1);
  assert.ok(pacer.beforeWrite(4096), 'read again after 100 ms');
});

test('waiting writes are refused by rejectAll and never go on; their timers are cancelled', async () => {
  const { pacer, clock } = pacerWith([link('dr1', 10)]);
  const gates = [pacer.beforeWrite(4096), pacer.beforeWrite(4096)];
  const refusal = new Error('stopping');
  pacer.rejectAll(refusal);
  for (const gate of gates) await assert.rejects(gate as Promise<void>, refusal);
  assert.equal(clock.pending, 0);
  clock.advance(1000);
  assert.equal(pacer.status().writesDelayed, 0, 'a refused write is not counted as delayed');
});

/** A pacer over one streaming secondary whose link stored 1.2 MiB every 100 ms while busy, for 6 s. */
function pacerWithKnownRate() {
  const dr1 = link('dr1', 0.5);
  const made = pacerWith([dr1]);
  made.group.closed = 1;
  dr1.lagBytes = 6 * mib;
  for (let ms = 0; ms < 6000; ms += pacingSampleMs) {
    made.group.writtenBytes += 1.2 * mib;
    made.clock.advance(pacingSampleMs);
    made.pacer.status();
  }
  assert.ok(Math.abs((made.pacer.status().admitBytesPerSecond ?? 0) - 0) < 1, 'below the band: no limit yet');
  return { ...made, dr1 };
}

test('with the rate known, an episode ends once the lag stayed below the band for the quiet spell: no limit after it', () => {
  const { pacer, clock, dr1, logged } = pacerWithKnownRate();
  dr1.lagSeconds = 7.5; // halfway through the band
  clock.advance(pacingSampleMs);
  assert.equal(pacer.beforeWrite(4 * mib), null, 'the first write of the episode goes at once');
  assert.ok(pacer.beforeWrite(4096), 'the next waits its turn');
  // Halfway: what the link stores, 59 x 1.2 MiB over 6 s of busy time (the last 100 ms stored nothing).
  assert.ok(Math.abs((pacer.status().admitBytesPerSecond ?? 0) - 11.8 * mib) < 0.01 * mib);
  dr1.lagSeconds = 0.5;
  clock.advance(pacingSampleMs);
  assert.ok(
    (pacer.status().admitBytesPerSecond ?? 0) > 12 * mib,
    "just below the band, during the episode: let in at a rate above the link's",
  );
  for (let ms = 0; ms <= pacingQuietMs; ms += pacingSampleMs) {
    clock.advance(pacingSampleMs);
    pacer.beforeWrite(4096);
  }
  assert.equal(pacer.status().admitBytesPerSecond, null, 'after the quiet spell: no limit at all');
  assert.equal(pacer.beforeWrite(64 * mib), null);
  assert.deepEqual(
    logged.map((entry) => entry.event),
    ['pacing-started', 'pacing-ended'],
  );
});

test("a secondary away or resyncing is not busy: its link's rate is remembered, not worn down, until it streams again", () => {
  const { pacer, clock, dr1, group } = pacerWithKnownRate();
  // Away for 30 s: stored lags closed all the while, nothing is stored. (Counted as busy, the
  // rate read 4 MiB/s and the look-ahead 22 s; forgotten, the age alone, 0.5 s.)
  dr1.link = 'connecting';
  dr1.mode = 'journal';
  for (let ms = 0; ms < 30_000; ms += pacingSampleMs) {
    group.writtenBytes += 0.1 * mib;
    group.closed++;
    dr1.lagBytes += 0.1 * mib;
    clock.advance(pacingSampleMs);
    pacer.status();
  }
  // Back, streaming, with 90 MiB to store: at the remembered 11.8 MiB/s that is 7.6 s.
  dr1.link = 'streaming';
  dr1.mode = 'streaming';
  dr1.lagBytes = 90 * mib;
  clock.advance(pacingSampleMs);
  const status = pacer.status();
  assert.ok(
    Math.abs(status.lagSeconds - 90 / 11.8) < 0.05,
    `look-ahead at the remembered rate: ${status.lagSeconds}`,
  );
});

test(`past ${writesDelayedMax} waiting writes a write goes through undelayed, counted: pacing never refuses`, () => {
  const { pacer, clock, logged } = pacerWith([link('dr1', 10)]);
  for (let index = 0; index < writesDelayedMax; index++) assert.ok(pacer.beforeWrite(4096));
  assert.equal(pacer.beforeWrite(4096), null);
  assert.equal(pacer.beforeWrite(4096), null);
  assert.equal(pacer.status().writesWaiting, writesDelayedMax);
  assert.equal(pacer.status().writesUndelayed, 2, 'status says pacing was bypassed');
  assert.equal(
    logged.filter((entry) => entry.event === 'pacing-writes-waiting-max').length,
    1,
    'logged once',
  );
  clock.advance(100);
  assert.ok(pacer.beforeWrite(4096), 'delayed again once the waiting ones went on');
});

test('pacing logs an episode once, however the lag saw-tooths across its start; it ends after a quiet spell', () => {
  const { pacer, clock, links, logged } = pacerWith([link('dr1', 6)]);
  const lagThen = (lagSeconds: number, ms: number) => {
    (links[0] as Link).lagSeconds = lagSeconds;
    clock.advance(ms);
    pacer.beforeWrite(4096);
  };
  pacer.beforeWrite(4096);
  lagThen(12, pacingSampleMs);
  lagThen(12, pacingSampleMs);
  // A cycle stored, then the lag grows again, ten times.
  for (let cycle = 0; cycle < 10; cycle++) {
    lagThen(1, 500);
    lagThen(6, 500);
  }
  assert.deepEqual(
    logged.map((entry) => entry.event),
    ['pacing-started', 'pacing-saturated'],
  );
  assert.equal(logged[1]?.level, 'warn');
  lagThen(1, pacingSampleMs);
  lagThen(1, pacingQuietMs - pacingSampleMs);
  assert.equal(
    logged.at(-1)?.event,
    'pacing-saturated',
    `not ended before ${pacingQuietMs} ms without a delay`,
  );
  lagThen(1, pacingSampleMs);
  assert.equal(logged.at(-1)?.event, 'pacing-ended');
  lagThen(6, pacingSampleMs);
  assert.equal(logged.at(-1)?.event, 'pacing-started', 'a new episode');
});

test('a pacing bound whose delays begin below two cycle intervals, or ramp over less than one, is refused with figures that work', () => {
  const base = {
    group: 'g',
    role: 'primary',
    dataDir: '/tmp/unused',
    volumes: [{ name: 'data', size: 1024 * 1024 }],
  };
  const refusal = (pacing: object, cycle?: object) => {
    try {
      validateConfig({ ...base, pacing, ...(cycle ? { cycle } : {}) });
    } catch (error) {
      assert.ok(error instanceof ConfigError, String(error));
      return error.message;
    }
    return null;
  };
  assert.match(
    refusal({ lagSecondsMax: 3 }) ?? '',
    /pacing\.lagSecondsMax: 3 s with startFraction 0\.5 delays writes from a lag of 1\.5 s, below two cycle intervals .*: raise it to at least 4 s/,
  );
  const accepted = validateConfig({ ...base, pacing: { lagSecondsMax: 4 } }) as PrimaryFileConfig;
  assert.deepEqual(accepted.pacing, { lagSecondsMax: 4, delayMsMax: 100, startFraction: 0.5 });
  assert.equal((validateConfig(base) as PrimaryFileConfig).pacing, undefined, 'off unless configured');
  // The figure a message suggests is accepted when used.
  const interval = { intervalMinMs: 1500, queuedMax: 4 };
  const short = refusal({ lagSecondsMax: 4, startFraction: 0.7 }, interval) ?? '';
  const suggested = Number(/raise it to at least ([\d.]+) s/.exec(short)?.[1]);
  assert.equal(suggested, 5, 'two intervals from 0.7 of it (4.286 s), and a ramp of one (5 s)');
  assert.equal(refusal({ lagSecondsMax: suggested, startFraction: 0.7 }, interval), null);
  // Delays from 2.7 s to 3 s: a ramp shorter than the 1 s interval.
  const steep = refusal({ lagSecondsMax: 3, startFraction: 0.9 }) ?? '';
  assert.match(steep, /ramps up over 0\.3 s, less than one cycle interval .*: raise it to at least 10 s/);
  assert.equal(refusal({ lagSecondsMax: 10, startFraction: 0.9 }), null);
  assert.ok(refusal({ lagSecondsMax: 4, delayMsMax: 20_000 }), 'delayMsMax at most 10000');
  assert.ok(refusal({ lagSecondsMax: 4, startFraction: 1 }), 'startFraction below 1');
});

const directory = mkdtempSync(join(tmpdir(), 'cyclerep-pacing-'));
after(() => rmSync(directory, { recursive: true, force: true }));
const blockBytes = 4096;

async function waitFor(condition: () => boolean, what: string, timeoutMs = 15_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!condition()) {
    assert.ok(Date.now() < deadline, `not reached within ${timeoutMs} ms: ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 10));
  }
}

test('a primary whose secondary stores nothing delays its writes, copies them in the call, and refuses the waiting ones at stop', {
  timeout: 60_000,
}, async (t) => {
  const secondary = new StandInSecondary();
  secondary.storing = false;
  const port = await secondary.listen();
  t.after(() => secondary.close());
  const primaryConfig = standInPrimaryConfig('pacing', join(directory, 'primary'), port, {
    volumes: [{ name: 'data', size: 4 * 1024 * 1024 }],
    pacing: { lagSecondsMax: 0.4, delayMsMax: 3000 },
  });
  const primary = await PrimaryNode.start(primaryConfig, quiet, (error) => assert.fail(error));
  let stopped = false;
  t.after(() => (stopped ? undefined : primary.stop()));
  await primary.write(0, 0, new Uint8Array(blockBytes).fill(1));
  await waitFor(() => primary.status().secondaries[0]?.link === 'streaming', 'the link streams');
  await waitFor(() => (primary.status().pacing?.delayMs ?? 0) > 0, 'the lag grows past the start of pacing');

  // Delayed now: the bytes are the caller's again as soon as write() returns.
  const buffer = new Uint8Array(blockBytes).fill(0x21);
  const delayed = primary.write(0, blockBytes, buffer);
  buffer.fill(0x99);
  await waitFor(() => (primary.status().pacing?.writesWaiting ?? 0) === 1, 'the write waits out its delay');
  await delayed;
  assert.deepEqual(await primary.read(0, blockBytes, blockBytes), new Uint8Array(blockBytes).fill(0x21));
  const status = primary.status().pacing;
  assert.ok(status && status.writesDelayed >= 1 && status.delaySeconds > 0, JSON.stringify(status));

  await waitFor(
    () => (primary.status().pacing?.delayMs ?? 0) > 1000,
    'the delay is long enough to refuse writes during it',
  );
  const codeOf = (write: Promise<unknown>) =>
    write.then(
      () => 'taken',
      (error: unknown) => (error instanceof CyclerepError ? error.code : String(error)),
    );
  const waitingWrite = async (fill: number, length: number) => {
    const before = primary.status().pacing?.writesWaiting ?? 0;
    // Two journal records' worth when length > packetBytesMax: both parts wait on one delay.
    const code = codeOf(primary.write(0, 4 * blockBytes, new Uint8Array(length).fill(fill)));
    await waitFor(() => (primary.status().pacing?.writesWaiting ?? 0) === before + 1, 'the write waits');
    // Wrapped: an async function returning the promise itself would wait for it.
    return { code };
  };

  // A split-brain resolution stops writes: a write waiting out its delay is refused, never journaled.
  const givenUp = await waitingWrite(0x31, blockBytes);
  primary.stopWritesToGiveUp(true);
  assert.equal(primary.status().pacing?.writesWaiting, 0, 'refused at once, not when its delay is over');
  assert.equal(await givenUp.code, 'giving-up-history');
  primary.stopWritesToGiveUp(false);
  assert.deepEqual(await primary.read(0, 4 * blockBytes, blockBytes), new Uint8Array(blockBytes));

  // A write larger than one journal record, still waiting when the primary stops, fails whole.
  const split = await waitingWrite(0x42, 2 * 1024 * 1024);
  stopped = true;
  await primary.stop();
  assert.equal(await split.code, 'stopping');
});
