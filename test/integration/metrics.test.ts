// Proves the status server's other faces with real processes: GET /metrics on a primary and a
// secondary that replicate is Prometheus' text format (read by a strict parser) and agrees with
// /status; GET / serves the dashboard page and the chart library it loads; anything else is 404.
import assert from 'node:assert/strict';
import { after, test } from 'node:test';
import { parseExposition } from '../support/prometheus-text.ts';
import { status, Workspace, waitForStatus } from './harness.ts';

const workspace = new Workspace();
after(() => workspace.cleanup());

async function scrape(httpPort: number) {
  const response = await fetch(`http://127.0.0.1:${httpPort}/metrics`);
  assert.equal(response.status, 200);
  assert.match(response.headers.get('content-type') ?? '', /^text\/plain; version=0\.0\.4/);
  return parseExposition(await response.text());
}

test('both sites expose metrics that agree with their status, and serve the dashboard', {
  timeout: 90_000,
}, async () => {
  const { secondary, primary, dr1, load } = await workspace.startLoadedPair();
  await waitForStatus(
    primary.httpPort,
    (s) => {
      const links = s.secondaries as { stored: number; link: string }[];
      return links[0]?.link === 'streaming' && (links[0]?.stored ?? 0) >= 2;
    },
    60_000,
  );

  const fromPrimary = await scrape(primary.httpPort);
  const primaryStatus = await status(primary.httpPort);
  assert.equal(fromPrimary.value('cyclerep_up'), 1);
  assert.equal(
    fromPrimary.value('cyclerep_secondary_link_state', { secondary: 'dr1', state: 'streaming' }),
    1,
  );
  assert.ok(fromPrimary.value('cyclerep_secondary_stored_cycle', { secondary: 'dr1' }) >= 2);
  assert.ok(fromPrimary.value('cyclerep_written_bytes_total') > 0);
  assert.ok(
    fromPrimary.value('cyclerep_closed_cycle') <= (primaryStatus.closed as number),
    'the scrape came before this status read',
  );
  assert.equal(fromPrimary.types.get('cyclerep_secondary_lag_seconds'), 'gauge');
  assert.ok(fromPrimary.value('cyclerep_write_seconds_count') > 0, 'write latencies observed');
  assert.ok(fromPrimary.value('cyclerep_cycle_written_bytes_count') >= 2, 'closed cycles observed');

  await waitForStatus(secondary.httpPort, (s) => s.link === 'streaming' && (s.stored as number) >= 2, 60_000);
  const fromSecondary = await scrape(secondary.httpPort);
  assert.equal(fromSecondary.value('cyclerep_link_state', { state: 'streaming' }), 1);
  assert.ok(fromSecondary.value('cyclerep_stored_cycle') >= 2);
  assert.ok(fromSecondary.value('cyclerep_applied_cycle') <= fromSecondary.value('cyclerep_stored_cycle'));

  const page = await fetch(`http://127.0.0.1:${primary.httpPort}/`);
  assert.equal(page.status, 200);
  const html = await page.text();
  assert.match(html, /<script src="assets\/uPlot\.iife\.min\.js"><\/script>/);
  for (const asset of ['uPlot.iife.min.js', 'uPlot.min.css', 'dashboard.js', 'dashboard.css']) {
    const response = await fetch(`http://127.0.0.1:${primary.httpPort}/assets/${asset}`);
    assert.equal(response.status, 200, asset);
    assert.ok((await response.arrayBuffer()).byteLength > 100, `${asset} has content`);
  }
  const missing = await fetch(`http://127.0.0.1:${primary.httpPort}/assets/../package.json`);
  assert.equal(missing.status, 404);

  assert.equal(await load.stop(), 0);
  assert.equal(await dr1.stop(), 0);
});
