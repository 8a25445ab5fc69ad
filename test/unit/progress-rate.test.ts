// Proves the resync's rate and ETA (src/core/progress-rate.ts): the rate is the progress over the
// last window, unknown until enough time was seen, falls to 0 when progress stops, and keeps a
// bounded number of samples however often progress is recorded; the ETA follows the rate.
// (test/unit/resync.test.ts shows the primary's status carrying both during a resync.)
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { ProgressRate } from '../../src/core/progress-rate.ts';

const config = { windowMs: 10_000, stepMs: 500, spanMsMin: 1000 };

test('the rate is the progress over the window; unknown before spanMsMin; the ETA is bytes left over it', () => {
  const rate = new ProgressRate(config);
  rate.reset(0);
  rate.record(200, 1000);
  assert.equal(rate.bytesPerSecond(500), null, 'half a second says nothing yet');
  assert.equal(rate.etaSeconds(500, 5000), null);
  for (let ms = 1000; ms <= 4000; ms += 100) rate.record(ms, ms * 2);
  assert.equal(rate.bytesPerSecond(4000), 2000, '8000 bytes in 4 s');
  assert.equal(rate.etaSeconds(4000, 10_000), 5);
});

test('an old fast phase leaves the window: the rate is that of the last 10 s', () => {
  const rate = new ProgressRate(config);
  rate.reset(0);
  // 10 MB/s for 10 s, then 1 MB/s for 20 s.
  for (let ms = 100; ms <= 10_000; ms += 100) rate.record(ms, ms * 10_000);
  for (let ms = 10_100; ms <= 30_000; ms += 100) rate.record(ms, 100_000_000 + (ms - 10_000) * 1000);
  const measured = rate.bytesPerSecond(30_000) ?? 0;
  assert.ok(Math.abs(measured - 1_000_000) < 60_000, `about 1 MB/s, measured ${measured}`);
});

test('a stall shows as a falling rate, 0 once the window saw no progress, and no ETA', () => {
  const rate = new ProgressRate(config);
  rate.reset(0);
  for (let ms = 100; ms <= 5000; ms += 100) rate.record(ms, ms * 1000);
  const moving = rate.bytesPerSecond(5000) ?? 0;
  const slowing = rate.bytesPerSecond(8000) ?? 0;
  assert.ok(slowing < moving, `${slowing} < ${moving}`);
  assert.equal(rate.bytesPerSecond(20_000), 0);
  assert.equal(rate.etaSeconds(20_000, 1000), null);
});

test('samples stay bounded however often progress is recorded', () => {
  const rate = new ProgressRate(config);
  rate.reset(0);
  for (let ms = 1; ms <= 60_000; ms++) rate.record(ms, ms);
  const samples = (rate as unknown as { samples: unknown[] }).samples.length;
  assert.ok(samples <= config.windowMs / config.stepMs + 2, `${samples} samples`);
  assert.equal(rate.bytesPerSecond(60_000), 1000);
});

test('a reset starts the measure over (a new session)', () => {
  const rate = new ProgressRate(config);
  rate.reset(0);
  for (let ms = 100; ms <= 5000; ms += 100) rate.record(ms, ms * 1000);
  rate.reset(6000);
  assert.equal(rate.bytesPerSecond(6500), null);
  rate.record(7000, 500);
  assert.equal(rate.bytesPerSecond(8000), 250);
});
