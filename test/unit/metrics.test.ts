// Proves the Prometheus figures of a site: read from the status at scrape time (gauges and running
// totals agree with /status), one gauge per link state, histograms observed as events happen, and
// a text exposition that a strict parser of the format accepts.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { type MetricsStatus, SiteMetrics } from '../../src/ops/metrics.ts';
import { parseExposition } from '../support/prometheus-text.ts';

function primaryStatus(written: number): MetricsStatus {
  return {
    role: 'primary',
    capture: 9,
    closed: 8,
    collected: 5,
    writtenBytes: written,
    journalBytes: 4096,
    journalDiskBytes: 8192,
    journalCapacityBytes: 1 << 30,
    fault: null,
    secondaries: [
      {
        name: 'dr1',
        link: 'streaming',
        stored: 7,
        applied: 6,
        lagCycles: 1,
        lagBytes: 65536,
        lagSeconds: 1.5,
        shippedBytes: 1000,
        failures: 2,
        recoveries: 1,
      },
      {
        name: 'dr2',
        link: 'connecting',
        stored: 5,
        applied: 5,
        lagCycles: 3,
        lagBytes: 131072,
        lagSeconds: 4,
        shippedBytes: 0,
        failures: 0,
        recoveries: 0,
      },
    ],
  };
}

test('a primary exposes its cycles, journal and every secondary link as read from its status', async () => {
  let written = 100;
  const metrics = new SiteMetrics('primary', () => primaryStatus(written));
  const first = parseExposition((await metrics.exposition()).body);
  assert.equal(first.value('cyclerep_up'), 1);
  assert.equal(first.value('cyclerep_capture_cycle'), 9);
  assert.equal(first.value('cyclerep_collected_cycle'), 5);
  assert.equal(first.value('cyclerep_journal_capacity_bytes'), 1 << 30);
  assert.equal(first.value('cyclerep_secondary_lag_seconds', { secondary: 'dr1' }), 1.5);
  assert.equal(first.value('cyclerep_secondary_lag_bytes', { secondary: 'dr2' }), 131072);
  assert.equal(first.value('cyclerep_secondary_link_failures_total', { secondary: 'dr1' }), 2);
  assert.equal(first.value('cyclerep_secondary_link_state', { secondary: 'dr1', state: 'streaming' }), 1);
  assert.equal(first.value('cyclerep_secondary_link_state', { secondary: 'dr1', state: 'idle' }), 0);
  assert.equal(first.value('cyclerep_secondary_link_state', { secondary: 'dr2', state: 'connecting' }), 1);
  assert.equal(first.types.get('cyclerep_written_bytes_total'), 'counter');
  assert.equal(first.value('cyclerep_written_bytes_total'), 100);
  assert.ok(first.value('cyclerep_process_resident_memory_bytes') > 0, 'process figures are included');
  assert.throws(() => first.value('cyclerep_stored_cycle'), /0 samples/, 'secondary-only figures are absent');
  written = 5000;
  await new Promise((resolve) => setTimeout(resolve, 150));
  const second = parseExposition((await metrics.exposition()).body);
  assert.equal(second.value('cyclerep_written_bytes_total'), 5000, 'a running total follows the status');
});

test('a primary exposes pacing: the delay now, writes delayed, delay added (0 without pacing)', async () => {
  const without = parseExposition(
    (await new SiteMetrics('primary', () => primaryStatus(0)).exposition()).body,
  );
  assert.equal(without.value('cyclerep_pacing_delay_seconds'), 0);
  assert.equal(without.value('cyclerep_pacing_delayed_writes_total'), 0);
  const paced = new SiteMetrics('primary', () => ({
    ...primaryStatus(0),
    pacing: { delayMs: 25, saturated: true, writesDelayed: 300, delaySeconds: 4.5 },
  }));
  const figures = parseExposition((await paced.exposition()).body);
  assert.equal(figures.value('cyclerep_pacing_delay_seconds'), 0.025);
  assert.equal(figures.value('cyclerep_pacing_saturated'), 1);
  assert.equal(figures.value('cyclerep_pacing_delayed_writes_total'), 300);
  assert.equal(figures.types.get('cyclerep_pacing_added_seconds_total'), 'counter');
  assert.equal(figures.value('cyclerep_pacing_added_seconds_total'), 4.5);
});

test('a secondary exposes stored, applied, whether its image is consistent and its link state; a fault turns cyclerep_up to 0', async () => {
  const metrics = new SiteMetrics('secondary', () => ({
    role: 'secondary',
    link: 'idle',
    stored: 12,
    applied: 11,
    journalBytes: 0,
    consistent: false,
    fault: { kind: 'disk-full' },
  }));
  const scraped = parseExposition((await metrics.exposition()).body);
  assert.equal(scraped.value('cyclerep_stored_cycle'), 12);
  assert.equal(scraped.value('cyclerep_applied_cycle'), 11);
  assert.equal(scraped.value('cyclerep_image_consistent'), 0, 'an in-place resync under way');
  assert.equal(scraped.value('cyclerep_link_state', { state: 'idle' }), 1);
  assert.equal(scraped.value('cyclerep_link_state', { state: 'streaming' }), 0);
  assert.equal(scraped.value('cyclerep_up'), 0);
  assert.throws(() => scraped.value('cyclerep_capture_cycle'), /0 samples/);
});

test('latencies, cycle sizes and NBD requests are histograms and counters of what was observed', async () => {
  const metrics = new SiteMetrics('primary', () => primaryStatus(0));
  metrics.observeWrite(0.0003);
  metrics.observeWrite(0.02);
  metrics.observeFlush(0.004);
  metrics.observeCycleClosed(3 << 20);
  metrics.observeNbdRequest('write', null);
  metrics.observeNbdRequest('write', 'ENOSPC');
  metrics.observeNbdRequest('read', null);
  const scraped = parseExposition((await metrics.exposition()).body);
  assert.equal(scraped.value('cyclerep_write_seconds_count'), 2);
  assert.equal(scraped.value('cyclerep_write_seconds_bucket', { le: '0.0005' }), 1);
  assert.equal(scraped.value('cyclerep_write_seconds_bucket', { le: '+Inf' }), 2);
  assert.equal(scraped.value('cyclerep_flush_seconds_count'), 1);
  assert.equal(scraped.value('cyclerep_cycle_written_bytes_bucket', { le: '4194304' }), 1);
  assert.equal(scraped.value('cyclerep_nbd_requests_total', { command: 'write' }), 2);
  assert.equal(scraped.value('cyclerep_nbd_errors_total', { command: 'write', code: 'ENOSPC' }), 1);
  assert.equal(scraped.types.get('cyclerep_write_seconds'), 'histogram');
});

test('two sites in one process keep their figures apart', async () => {
  const one = new SiteMetrics('primary', () => primaryStatus(1));
  const two = new SiteMetrics('primary', () => primaryStatus(2));
  one.observeWrite(0.001);
  assert.equal(parseExposition((await one.exposition()).body).value('cyclerep_written_bytes_total'), 1);
  const scrapedTwo = parseExposition((await two.exposition()).body);
  assert.equal(scrapedTwo.value('cyclerep_written_bytes_total'), 2);
  assert.equal(scrapedTwo.value('cyclerep_write_seconds_count'), 0);
});
