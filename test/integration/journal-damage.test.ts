// Proves, with real processes and real files, that a site refuses to start on a damaged journal
// instead of cutting acknowledged records as if they were a torn tail (issue 10, cases 2, 3, 6):
// after acknowledged writes and a clean stop, a byte flipped in the middle of the primary's last
// segment, a segment deleted from the middle of the primary's journal, and a byte flipped in the
// secondary's journal each make the next start exit with code 5, with a message naming the file and
// the offset, and leave every file of the data directory as it was. A genuine torn tail (garbage
// past the last durable frame after kill -9) is still cut, and the site starts.
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { appendFileSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { join, relative } from 'node:path';
import { test } from 'node:test';
import { type Site, sleep, type Workspace, workspacesCleanedAfterTests } from './harness.ts';

const fresh = workspacesCleanedAfterTests();

const damagedExitCode = 5;

/** Every file under `directory` with the SHA-256 of its bytes. */
function hashes(directory: string): Map<string, string> {
  const result = new Map<string, string>();
  const walk = (path: string): void => {
    for (const entry of readdirSync(path, { withFileTypes: true })) {
      const full = join(path, entry.name);
      if (entry.isDirectory()) walk(full);
      else
        result.set(relative(directory, full), createHash('sha256').update(readFileSync(full)).digest('hex'));
    }
  };
  walk(directory);
  return result;
}

function segments(journal: string): string[] {
  return readdirSync(journal)
    .filter((name) => name.endsWith('.seg'))
    .sort()
    .map((name) => join(journal, name));
}

function flipByte(path: string, offset: number): void {
  const bytes = readFileSync(path);
  bytes[offset] = (bytes[offset] as number) ^ 0x01;
  writeFileSync(path, bytes);
}

async function exitOf(site: Site): Promise<number | null> {
  const timeout = sleep(30_000).then(() => 'timeout' as const);
  const code = await Promise.race([site.exited, timeout]);
  assert.notEqual(code, 'timeout', `the site did not exit within 30 s:\n${site.stderr.slice(-2000)}`);
  return code as number | null;
}

/** The start is refused with exit 5, naming the file and an offset, and changes no file. */
async function assertRefused(start: () => Site, dataDir: string, path: string): Promise<string> {
  const before = hashes(dataDir);
  const site = start();
  assert.equal(await exitOf(site), damagedExitCode, site.stderr.slice(-2000));
  const [refusal] = site.events('start-failed');
  const reason = String(refusal?.reason);
  assert.ok(reason.includes(path), `the message names ${path}: ${reason}`);
  assert.match(reason, /at offset \d+: /);
  assert.deepEqual(hashes(dataDir), before, 'the refused start changed nothing on disk');
  return reason;
}

/** A primary and a secondary with acknowledged writes, both stopped cleanly. */
async function replicatedAndStopped(workspace: Workspace) {
  const { secondary, primary, dr1, load } = await workspace.startLoadedPair();
  await load.waitForWrites(300);
  assert.equal(await load.stop(), 0, load.stderr.slice(-2000));
  assert.equal(await dr1.stop(), 0, dr1.stderr.slice(-2000));
  return { primary, secondary };
}

test('case 2: a byte flipped mid-segment in the primary journal after a clean stop is refused (exit 5)', {
  timeout: 120_000,
}, async () => {
  const workspace = fresh();
  const { primary } = await replicatedAndStopped(workspace);
  const last = segments(workspace.path('primary', 'journal')).at(-1) as string;
  flipByte(last, Math.floor(statSync(last).size / 2));
  const reason = await assertRefused(
    () => workspace.startPrimary(primary.path),
    workspace.path('primary'),
    last,
  );
  assert.match(reason, /had been made durable/);
});

test('case 3: a segment deleted from the middle of the primary journal is refused (exit 5)', {
  timeout: 120_000,
}, async () => {
  const workspace = fresh();
  const secondary = await workspace.secondaryConfig('dr1');
  const primary = await workspace.primaryConfig({ secondaries: [{ name: 'dr1', port: secondary.port }] });
  // The secondary stays away, so nothing is collected: every run leaves its own segment.
  for (let run = 0; run < 3; run++) {
    const load = workspace.startLoadPrimary(primary.path, { LOAD_SETTLE_MS: '0' });
    await load.waitForWrites(30);
    assert.equal(await load.stop(), 0, load.stderr.slice(-2000));
  }
  const paths = segments(workspace.path('primary', 'journal'));
  assert.ok(paths.length >= 3, `three segments (${paths.length})`);
  const middle = paths[1] as string;
  rmSync(middle);
  const reason = await assertRefused(
    () => workspace.startPrimary(primary.path),
    workspace.path('primary'),
    middle,
  );
  assert.match(reason, /missing/);
  // The offline recover refuses the same way, changing nothing.
  const before = hashes(workspace.path('primary'));
  const recovered = workspace.recover('primary');
  assert.equal(recovered.status, damagedExitCode, recovered.output);
  assert.ok(recovered.output.includes(middle), recovered.output);
  assert.deepEqual(hashes(workspace.path('primary')), before);
});

test("case 6: a byte flipped in the secondary's journal after a clean stop is refused (exit 5)", {
  timeout: 120_000,
}, async () => {
  const workspace = fresh();
  const { secondary } = await replicatedAndStopped(workspace);
  const last = segments(workspace.path('dr1', 'journal')).at(-1) as string;
  flipByte(last, Math.floor(statSync(last).size / 2));
  await assertRefused(() => workspace.startSecondary(secondary.path), workspace.path('dr1'), last);
});

test('a torn tail after kill -9 (garbage past the last durable frame) is cut and the primary starts', {
  timeout: 120_000,
}, async () => {
  const workspace = fresh();
  const secondary = await workspace.secondaryConfig('dr1');
  const primary = await workspace.primaryConfig({ secondaries: [{ name: 'dr1', port: secondary.port }] });
  const load = workspace.startLoadPrimary(primary.path);
  await load.waitForWrites(100);
  load.kill('SIGKILL');
  await load.exited;
  const last = segments(workspace.path('primary', 'journal')).at(-1) as string;
  const size = statSync(last).size;
  appendFileSync(last, Buffer.alloc(100, 0xa5));
  const restarted = workspace.startPrimary(primary.path);
  await restarted.waitForEvent('primary-started');
  const [cut] = restarted.events('journal-tail-cut');
  assert.equal(cut?.path, last);
  // At the garbage, or earlier when the kill tore the last write() itself.
  assert.ok(Number(cut?.offset) <= size, `cut at ${cut?.offset}, the garbage starts at ${size}`);
  assert.equal(await restarted.stop(), 0, restarted.stderr.slice(-2000));
});
