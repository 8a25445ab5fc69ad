// Proves the dashboard in a real browser (Debian's headless Chromium driven by playwright-core):
// the page of a replicating primary and of its secondary loads, reads /status every second, draws
// its charts with data in them and a row per link, and a screenshot of each is written to
// var/test-artifacts/ for a person to look at.
import assert from 'node:assert/strict';
import { mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { after, test } from 'node:test';
import { type Browser, chromium } from 'playwright-core';
import { root, Workspace, waitForStatus } from '../integration/harness.ts';

const workspace = new Workspace();
let browser: Browser | null = null;
after(async () => {
  await browser?.close();
  await workspace.cleanup();
});

const artifacts = join(root, 'var', 'test-artifacts');

async function openDashboard(httpPort: number, chartsMin: number, screenshot: string) {
  assert.ok(browser);
  const page = await browser.newPage({ viewport: { width: 1280, height: 900 } });
  const errors: string[] = [];
  page.on('pageerror', (error) => errors.push(error.message));
  await page.goto(`http://127.0.0.1:${httpPort}/`);
  // Three samples make two rates: every chart then has points to draw.
  await page.waitForFunction(
    (min) => {
      // Runs in the page, where globalThis is the window.
      const state = (globalThis as unknown as { cyclerepDashboard?: { samples: number; charts: number } })
        .cyclerepDashboard;
      return !!state && state.samples >= 3 && state.charts >= min;
    },
    chartsMin,
    { timeout: 30_000 },
  );
  const canvases = await page.locator('#charts canvas').count();
  const rows = await page.locator('#links tbody tr').count();
  const heading = await page.locator('#site').textContent();
  mkdirSync(artifacts, { recursive: true });
  await page.screenshot({ path: join(artifacts, screenshot), fullPage: true });
  await page.close();
  return { canvases, rows, heading, errors };
}

test('the dashboard of a primary and of its secondary draws live charts in Chromium', {
  timeout: 120_000,
}, async () => {
  const { secondary, primary, dr1, load } = await workspace.startLoadedPair();
  await waitForStatus(primary.httpPort, (s) => (s.closed as number) >= 2, 60_000);
  browser = await chromium.launch({
    executablePath: '/usr/bin/chromium',
    args: [
      '--no-sandbox',
      '--disable-gpu',
      '--disable-quic',
      '--no-first-run',
      '--disable-background-networking',
      '--disable-component-update',
      '--disable-sync',
    ],
  });

  const ofPrimary = await openDashboard(primary.httpPort, 4, 'dashboard-primary.png');
  assert.deepEqual(ofPrimary.errors, [], 'no script error on the page');
  assert.ok(ofPrimary.canvases >= 4, `four charts drawn, found ${ofPrimary.canvases} canvases`);
  assert.equal(ofPrimary.rows, 1, 'one row per secondary');
  assert.match(ofPrimary.heading ?? '', /\/ primary$/);

  const ofSecondary = await openDashboard(secondary.httpPort, 2, 'dashboard-secondary.png');
  assert.deepEqual(ofSecondary.errors, []);
  assert.ok(ofSecondary.canvases >= 2);
  assert.match(ofSecondary.heading ?? '', /\/ dr1$/);

  assert.equal(await load.stop(), 0);
  assert.equal(await dr1.stop(), 0);
});
