// Proves that a planned switchover survives a restart of the old primary (PrimaryNode over real
// files, its link over TCP on 127.0.0.1, against a stand-in secondary that welcomes it, stores every
// cycle and keeps the switchover frames it gets). Once the primary asked its secondary to take over,
// only the secondary can say whether it leads now; a primary killed then (before its data directory
// became a secondary's) and started again must not take writes on its own: the secondary may be
// the new primary already, and every write it acknowledged would be undone at the rejoin.
// - the ask is recorded in site.json (`handover`) before the frame goes out;
// - restarted, the primary refuses writes (switching-over) and asks the secondary again, for the
//   same cycle and generation, once it streams again;
// - the secondary's refusal ends it: writes are taken again and the record is gone, so a later
//   restart takes writes from the start.
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, test } from 'node:test';
import { WriteError } from '../../src/core/errors.ts';
import { PrimaryNode } from '../../src/node/primary-node.ts';
import type { PrimaryFileConfig } from '../../src/ops/config.ts';
import { createLogger } from '../../src/ops/logger.ts';
import { StandInSecondary, standInPrimaryConfig } from './stand-in-secondary.ts';

const directory = mkdtempSync(join(tmpdir(), 'cyclerep-switchover-restart-'));
after(() => rmSync(directory, { recursive: true, force: true }));
const blockBytes = 4096;
const quiet = createLogger({ site: 'switchover', format: 'json', write: () => {} });

async function waitFor(condition: () => boolean, what: string, timeoutMs = 10_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!condition()) {
    assert.ok(Date.now() < deadline, `not reached within ${timeoutMs} ms: ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 10));
  }
}

function primaryConfig(port: number): PrimaryFileConfig {
  return standInPrimaryConfig('switchover', join(directory, 'primary'), port);
}

function block(fill: number): Uint8Array {
  return new Uint8Array(blockBytes).fill(fill);
}

async function refusalOf(write: Promise<unknown>): Promise<string> {
  try {
    await write;
  } catch (error) {
    assert.ok(error instanceof WriteError, `a WriteError, got ${String(error)}`);
    return error.code;
  }
  return 'taken';
}

function siteJson(config: PrimaryFileConfig): Record<string, unknown> {
  return JSON.parse(readFileSync(join(config.dataDir, 'site.json'), 'utf8'));
}

test('a primary restarted after it asked its secondary to take over takes no writes until the secondary answers', {
  timeout: 60_000,
}, async (t) => {
  const secondary = new StandInSecondary();
  const config = primaryConfig(await secondary.listen());
  t.after(() => secondary.close());
  const failures: Error[] = [];
  const onFatal = (error: Error): void => {
    failures.push(error);
  };
  const nodes: PrimaryNode[] = [];
  t.after(() => Promise.all(nodes.map((node) => node.stop().catch(() => {}))));
  const start = async (): Promise<PrimaryNode> => {
    const node = await PrimaryNode.start(config, quiet, onFatal);
    nodes.push(node);
    return node;
  };

  const primary = await start();
  await primary.write(0, 0, block(0x11));
  await waitFor(
    () => primary.status().secondaries[0]?.link === 'streaming' && secondary.stored >= 1,
    'the secondary streams and stored a cycle',
  );
  const generation = '9'.repeat(32);
  assert.equal(primary.beginSwitchover('dr1', generation), null);
  await waitFor(() => secondary.switchovers.length === 1, 'the secondary was asked to take over');
  const [asked] = secondary.switchovers;
  assert.equal(asked?.generation, generation);
  assert.equal(asked?.cycle, secondary.stored, 'asked once it stored every closed cycle');
  assert.deepEqual(
    siteJson(config).handover,
    { secondary: 'dr1', generation, cycle: asked?.cycle },
    'the ask is recorded before the frame goes',
  );

  // The process ends here (a kill, a failed conversion) and starts again: the secondary may be
  // promoting right now, so a write acknowledged here could be undone.
  await primary.stop();
  const restarted = await start();
  assert.equal(await refusalOf(restarted.write(0, blockBytes, block(0x22))), 'switching-over');
  assert.deepEqual(restarted.status().switchover, { secondary: 'dr1', generation, cycle: null });
  await waitFor(() => secondary.switchovers.length === 2, 'asked again once it streams');
  assert.deepEqual(secondary.switchovers[1], asked, 'the same cycle and generation');
  assert.equal(await refusalOf(restarted.write(0, blockBytes, block(0x33))), 'switching-over');

  // The secondary will not lead: the primary leads on, and forgets the switchover.
  secondary.refuseLast();
  await waitFor(() => restarted.status().switchover === null, 'the refusal ended the switchover');
  assert.equal(await refusalOf(restarted.write(0, blockBytes, block(0x44))), 'taken');
  assert.equal(siteJson(config).handover, undefined, 'the record is gone');
  await restarted.stop();
  const again = await start();
  assert.equal(await refusalOf(again.write(0, 2 * blockBytes, block(0x55))), 'taken');
  assert.deepEqual(await again.read(0, blockBytes, blockBytes), block(0x44));
  assert.equal(failures.length, 0, failures.map(String).join('; '));
});
