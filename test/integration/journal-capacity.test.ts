// Proves the journal's capacity bound with real files and sockets: with no secondary reachable,
// writes past journal.capacity wait (none is lost or refused) and the status says so; once a
// secondary stores the journaled cycles, segments are deleted and the waiting writes complete.
import assert from 'node:assert/strict';
import { writeFileSync } from 'node:fs';
import { after, test } from 'node:test';
import { PrimaryNode } from '../../src/node/primary-node.ts';
import { SecondaryNode } from '../../src/node/secondary-node.ts';
import { loadConfig, type PrimaryFileConfig, type SecondaryFileConfig } from '../../src/ops/config.ts';
import { createLogger } from '../../src/ops/logger.ts';
import { freePort, sleep, Workspace } from './harness.ts';

const workspace = new Workspace();
after(() => workspace.cleanup());
const quiet = createLogger({ site: 'test', format: 'json', write: () => {} });

/** Polls `read` until `condition` holds; fails naming `what` only if it never comes (30 s). */
async function waitFor<T>(read: () => T, condition: (value: T) => boolean, what: string): Promise<T> {
  const deadline = Date.now() + 30_000;
  for (;;) {
    const value = read();
    if (condition(value)) return value;
    assert.ok(Date.now() < deadline, `not reached within 30 s: ${what}; last ${JSON.stringify(value)}`);
    await sleep(20);
  }
}

test('writes wait at journal.capacity and complete once a secondary stored the journal', {
  timeout: 60_000,
}, async (t) => {
  const port = await freePort();
  writeFileSync(
    workspace.path('primary.yaml'),
    `group: cap\nrole: primary\ndataDir: ${workspace.path('primary')}\nvolumes:\n  - { name: data, size: 64MiB }\n` +
      // Tracking off: this is the bound itself, reached when nothing may free the journal.
      'cycle: { intervalMinMs: 50 }\njournal: { capacity: 16MiB, segmentSize: 8MiB }\ntracking: { enabled: false }\n' +
      'link: { heartbeatMs: 100, timeoutMs: 400, reconnectMinMs: 50, reconnectMaxMs: 200 }\n' +
      `secondaries:\n  - { name: dr1, address: 127.0.0.1:${port} }\n`,
  );
  writeFileSync(
    workspace.path('dr1.yaml'),
    `group: cap\nrole: secondary\nname: dr1\ndataDir: ${workspace.path('dr1')}\nlisten: 127.0.0.1:${port}\n` +
      'link: { heartbeatMs: 100, timeoutMs: 400, reconnectMinMs: 50, reconnectMaxMs: 200 }\n',
  );
  const primary = await PrimaryNode.start(
    loadConfig(workspace.path('primary.yaml')) as PrimaryFileConfig,
    quiet,
    () => {},
  );
  // Stopped whatever happens: a node left running would keep the test process alive.
  t.after(() => primary.stop());
  const blocks = 6000;
  let acknowledged = 0;
  const writes: Promise<unknown>[] = [];
  for (let block = 0; block < blocks; block++) {
    writes.push(
      primary.write(0, block * 4096, new Uint8Array(4096).fill(block & 0xff)).then(() => acknowledged++),
    );
    if (block % 256 === 255) await sleep(5);
  }
  // 6000 blocks are 24 MiB against a 16 MiB journal: it fills, and writes wait, however slow the disk.
  const full = await waitFor(
    () => primary.status(),
    (status) => status.journalFull && status.writesWaiting > 0,
    'the journal full with writes waiting',
  );
  assert.ok(acknowledged < blocks, 'some writes are held back, not refused');
  assert.ok(full.journalDiskBytes >= 16 * 1024 * 1024);
  const secondary = await SecondaryNode.start(
    loadConfig(workspace.path('dr1.yaml')) as SecondaryFileConfig,
    quiet,
    () => {},
  );
  t.after(() => secondary.stop());
  await Promise.all(writes);
  assert.equal(acknowledged, blocks);
  const after = await waitFor(
    () => primary.status(),
    (status) => status.secondaries[0]?.lagBytes === 0,
    'dr1 caught up',
  );
  assert.equal(after.secondaries[0]?.lagBytes, 0, JSON.stringify(after.secondaries[0]));
  assert.equal(after.journalFull, false);
  assert.equal(after.writesWaiting, 0);
  await secondary.settle();
  const replica = await secondary.read(0, 0, blocks * 4096);
  const original = await primary.read(0, 0, blocks * 4096);
  const firstDifference = replica.findIndex((byte, index) => byte !== original[index]);
  assert.equal(
    firstDifference,
    -1,
    `replica differs from byte ${firstDifference} (block ${Math.floor(firstDifference / 4096)}); ${JSON.stringify(secondary.status())} ${JSON.stringify(after.secondaries[0])}`,
  );
});

test('past writesWaitingMax waiting writes, more are refused with journal-full; stop fails the waiting ones', {
  timeout: 60_000,
}, async () => {
  const { writesWaitingMax, PrimaryNodeError } = await import('../../src/node/primary-node.ts');
  const port = await freePort();
  writeFileSync(
    workspace.path('bound.yaml'),
    `group: cap\nrole: primary\ndataDir: ${workspace.path('bound')}\nvolumes:\n  - { name: data, size: 64MiB }\n` +
      `cycle: { intervalMinMs: 50 }\njournal: { capacity: 8MiB, segmentSize: 8MiB }\ntracking: { enabled: false }\nsecondaries:\n  - { name: dr1, address: 127.0.0.1:${port} }\n`,
  );
  const primary = await PrimaryNode.start(
    loadConfig(workspace.path('bound.yaml')) as PrimaryFileConfig,
    quiet,
    () => {},
  );
  const outcomes: Promise<string>[] = [];
  let refused = 0;
  const issue = (block: number): void => {
    outcomes.push(
      primary.write(0, (block % 16384) * 4096, new Uint8Array(4096)).then(
        () => 'written',
        (error: unknown) => {
          const code = error instanceof PrimaryNodeError ? error.code : String(error);
          if (code === 'journal-full') refused++;
          return code;
        },
      ),
    );
  };
  let block = 0;
  while (!primary.status().journalFull && block < 4000) {
    issue(block++);
    if (block % 128 === 0) await sleep(2);
  }
  // 4000 blocks are twice the 8 MiB journal: it fills once the appends land.
  await waitFor(
    () => primary.status().journalFull,
    (journalFull) => journalFull,
    'the journal full',
  );
  const issuedBeforeExtra = outcomes.length;
  const extra = writesWaitingMax + 3;
  for (let i = 0; i < extra; i++) issue(block++);
  // The waiting list was full or nearly: at least 3 of the extra writes are refused.
  await waitFor(
    () => refused,
    (count) => count >= 3,
    'three writes refused with journal-full',
  );
  assert.ok(primary.status().writesWaiting <= writesWaitingMax);
  assert.ok(outcomes.length > issuedBeforeExtra);
  await primary.stop();
  const counts = new Map<string, number>();
  for (const outcome of await Promise.all(outcomes)) counts.set(outcome, (counts.get(outcome) ?? 0) + 1);
  assert.ok((counts.get('journal-full') ?? 0) >= 3, JSON.stringify([...counts]));
  assert.ok((counts.get('stopping') ?? 0) > 0, JSON.stringify([...counts]));
  assert.equal(
    (counts.get('written') ?? 0) + (counts.get('journal-full') ?? 0) + (counts.get('stopping') ?? 0),
    outcomes.length,
  );
});
