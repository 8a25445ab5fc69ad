// Proves, with real processes, that a secondary follows one primary identity and generation only.
// Primary A replicates to secondary S under load; a second primary B of the same group (its own
// data dir, same volumes, its own load) is pointed at S and runs until its cycle numbers are far
// past S's stored number. S refuses B every time with an error naming both identities, B's log and
// status show it, A's session is never ended by B's attempts (A's link failures and recoveries do
// not move), S keeps following A, and after a restart of S the binding still holds: B refused, A
// accepted. In the end S's image equals A's byte for byte, never a mix of both primaries.
import assert from 'node:assert/strict';
import { readFileSync, writeFileSync } from 'node:fs';
import { after, test } from 'node:test';
import { freePort, type Site, status, Workspace, waitForStatus } from './harness.ts';

const workspace = new Workspace();
after(() => workspace.cleanup());

interface LinkStatus {
  name: string;
  link: string;
  stored: number;
  lagBytes: number;
  failures: number;
  recoveries: number;
  refusal: string | null;
}

function dr1Of(primaryStatus: Record<string, unknown>): LinkStatus {
  return (primaryStatus.secondaries as LinkStatus[])[0] as LinkStatus;
}

/** A second primary of the same group: A's config with its own data dir, status port and faster cycles. */
async function secondPrimaryConfig(first: string): Promise<{ path: string; httpPort: number }> {
  const httpPort = await freePort();
  const text = readFileSync(first, 'utf8')
    .replace(`dataDir: ${workspace.path('primary')}`, `dataDir: ${workspace.path('primary-b')}`)
    .replace(/http: \{ listen: 127\.0\.0\.1:\d+ \}/, `http: { listen: 127.0.0.1:${httpPort} }`)
    .replace(/cycle: .*/, 'cycle: { intervalMinMs: 10, queuedMax: 4 }');
  const path = workspace.path('primary-b.yaml');
  writeFileSync(path, text);
  return { path, httpPort };
}

async function waitForRefusals(site: Site, count: number): Promise<void> {
  await waitFor(() => site.events('link-refused').length >= count, `${count} link-refused events`);
}

async function waitFor(condition: () => boolean, what: string, timeoutMs = 30_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!condition()) {
    if (Date.now() > deadline) throw new Error(`no ${what} within ${timeoutMs} ms`);
    await new Promise((resolve) => setTimeout(resolve, 25));
  }
}

test('a second primary of the group is refused by a bound secondary, whatever its cycle numbers', {
  timeout: 240_000,
}, async () => {
  const secondary = await workspace.secondaryConfig('dr1');
  const first = await workspace.primaryConfig({
    secondaries: [{ name: 'dr1', port: secondary.port }],
    cycle: '{ intervalMinMs: 200, queuedMax: 4 }',
  });
  const second = await secondPrimaryConfig(first.path);
  let dr1 = workspace.startSecondary(secondary.path);
  await dr1.waitForEvent('secondary-started');
  const primaryA = workspace.startLoadPrimary(first.path);
  const startedA = await waitForStatus(first.httpPort, (s) => dr1Of(s).stored >= 5, 30_000);
  const siteA = startedA.site as string;
  const generationA = startedA.generation as string;

  const before = dr1Of(await status(first.httpPort));
  const primaryB = workspace.startLoadPrimary(second.path, { LOAD_SETTLE_MS: '0' });
  // B's cycle numbers overtake what dr1 stored from A: numbers cannot tell the two apart.
  const storedOfDr1 = (await status(secondary.httpPort)).stored as number;
  const startedB = await waitForStatus(
    second.httpPort,
    (s) => (s.closed as number) > storedOfDr1 + 20 && dr1Of(s).failures >= 4,
    60_000,
  );

  // A was never disturbed by B's attempts, and dr1 kept following it.
  const during = dr1Of(await status(first.httpPort));
  assert.equal(during.failures, before.failures, "B's attempts ended none of A's sessions");
  assert.equal(during.recoveries, before.recoveries);
  assert.equal(during.link, 'streaming');
  await waitForStatus(secondary.httpPort, (s) => (s.stored as number) > storedOfDr1 + 3);
  const dr1Status = await status(secondary.httpPort);
  // It follows A, and keeps A's generation chain (what a promotion of dr1 would extend).
  assert.deepEqual(dr1Status.primary, {
    primarySite: siteA,
    generation: generationA,
    history: [{ id: generationA, startedAt: 1, primarySite: siteA }],
  });

  // B was refused each time, its log and status naming both identities, and never fed dr1.
  await waitForRefusals(primaryB, 4);
  const siteB = startedB.site as string;
  assert.notEqual(siteA, siteB);
  const refusalB = dr1Of(await status(second.httpPort));
  assert.equal(refusalB.link, 'refused');
  for (const id of [siteA, generationA, siteB, startedB.generation as string])
    assert.ok(refusalB.refusal?.includes(id), `B's status names ${id}: ${refusalB.refusal}`);
  assert.match(String(primaryB.events('link-refused')[0]?.reason), /primary-mismatch/);
  assert.equal(refusalB.stored, 0, 'B never had anything stored');

  // The binding is in site.json: after a restart B is still refused and A accepted again.
  assert.equal(await dr1.stop(), 0);
  const refusalsBeforeRestart = primaryB.events('link-refused').length;
  dr1 = workspace.startSecondary(secondary.path);
  await dr1.waitForEvent('secondary-started');
  const storedAtRestart = (await status(secondary.httpPort)).stored as number;
  await waitForRefusals(primaryB, refusalsBeforeRestart + 2);
  await waitForStatus(secondary.httpPort, (s) => (s.stored as number) > storedAtRestart + 3);
  assert.equal(dr1.events('primary-bound').length, 0, 'not bound anew after the restart');
  assert.ok(dr1.events('primary-refused').some((event) => String(event.reason).includes(siteB)));

  // Settle: B goes, A's load pauses and dr1 catches up; its image is A's, byte for byte.
  primaryB.kill('SIGKILL');
  await primaryB.exited;
  primaryA.kill('SIGUSR2');
  await primaryA.waitForOutput('"paused"');
  await waitForStatus(first.httpPort, (s) => dr1Of(s).lagBytes === 0 && dr1Of(s).link === 'streaming');
  assert.equal(await primaryA.stop(), 0);
  assert.equal(await dr1.stop(), 0);
  workspace.assertReplica('dr1');
});
