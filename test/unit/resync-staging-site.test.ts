// Proves the room a secondary needs to stage a resync, with real sites (PrimaryNode, SecondaryNode,
// real files and TCP on 127.0.0.1) and a journal disk made small by its free-space answer alone
// (statfs says the minimum kept free plus 3 MiB, less what the journal holds; nothing real fills up):
// - consistent staging (the default): a new secondary's resync of 12 MiB stops staging at about
//   3 MiB, refuses the primary with the numbers (its log, its status, the primary's refusal), keeps
//   showing its consistent image, and once room is given finishes the resync byte for byte;
// - in-place staging on the same small disk: nothing is refused, the image is said inconsistent
//   while the resync is applied (log, status) and consistent again at its end, converged.
import assert from 'node:assert/strict';
import { mkdtempSync, readdirSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, test } from 'node:test';
import { limits } from '../../src/core/limits.ts';
import { nodeEnvironment, type SiteEnvironment } from '../../src/io/environment.ts';
import type { FileSystem } from '../../src/io/file-system.ts';
import { nodeFileSystem } from '../../src/io/node-file-system.ts';
import { PrimaryNode } from '../../src/node/primary-node.ts';
import { SecondaryNode } from '../../src/node/secondary-node.ts';
import { type PrimaryFileConfig, type SecondaryFileConfig, validateConfig } from '../../src/ops/config.ts';
import { createLogger, type Logger } from '../../src/ops/logger.ts';
import { freePort } from '../integration/harness.ts';

const directory = mkdtempSync(join(tmpdir(), 'cyclerep-staging-'));
after(() => rmSync(directory, { recursive: true, force: true }));
const mib = 1024 * 1024;
const writtenBytes = 12 * mib;

/** A logger that keeps every entry as an object. */
function recordingLogger(site: string): { logger: Logger; entries: Record<string, unknown>[] } {
  const entries: Record<string, unknown>[] = [];
  const logger = createLogger({ site, format: 'json', write: (line) => entries.push(JSON.parse(line)) });
  return { logger, entries };
}

/** Bytes of the files in `path` (0 when it does not exist yet). */
function directoryBytes(path: string): number {
  let bytes = 0;
  try {
    for (const name of readdirSync(path)) bytes += statSync(join(path, name)).size;
  } catch {
    return 0;
  }
  return bytes;
}

/** The real file system, whose statfs reports `room()` free: a small disk that holds the journal. */
function smallDisk(room: () => number): FileSystem {
  return { ...nodeFileSystem, statfsSync: () => ({ freeBytes: room(), totalBytes: 1024 * mib }) };
}

async function waitFor(condition: () => boolean, what: string, timeoutMs = 30_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!condition()) {
    assert.ok(Date.now() < deadline, `not reached within ${timeoutMs} ms: ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 10));
  }
}

const link = { heartbeatMs: 100, timeoutMs: 2000, reconnectMinMs: 50, reconnectMaxMs: 300 };

/**
 * A primary holding 12 MiB its secondary never saw, switched to tracking at once (the secondary is
 * away), so that the secondary's first contact is a resync of that many bytes in 1 MiB cycles.
 */
async function primaryWithData(name: string, port: number): Promise<PrimaryNode> {
  const config = {
    ...(validateConfig({
      group: 'staging',
      role: 'primary',
      dataDir: join(directory, name, 'primary'),
      volumes: [{ name: 'data', size: '16MiB' }],
      cycle: { intervalMinMs: 20, queuedMax: 64 },
      tracking: { awaySecondsMax: 0, copyWindow: '1MiB' },
      link,
      secondaries: [{ name: 'dr1', address: `127.0.0.1:${port}` }],
    }) as PrimaryFileConfig),
    nbd: null,
    http: null,
  } as unknown as PrimaryFileConfig;
  const primary = await PrimaryNode.start(config, recordingLogger('primary').logger, (error) => {
    throw error;
  });
  for (let offset = 0; offset < writtenBytes; offset += mib) {
    const data = new Uint8Array(mib).map((_, index) => ((offset / mib) * 31 + index * 7 + 1) & 0xff);
    await primary.write(0, offset, data);
  }
  await primary.flush();
  await waitFor(() => primary.status().secondaries[0]?.mode === 'tracking', 'the away secondary is tracked');
  return primary;
}

function secondaryConfig(
  name: string,
  port: number,
  staging: 'consistent' | 'in-place',
): SecondaryFileConfig {
  return {
    ...(validateConfig({
      group: 'staging',
      role: 'secondary',
      name: 'dr1',
      dataDir: join(directory, name, 'dr1'),
      listen: `127.0.0.1:${port}`,
      link,
      resync: { staging },
    }) as SecondaryFileConfig),
    nbd: null,
    http: null,
  } as unknown as SecondaryFileConfig;
}

async function assertConverged(primary: PrimaryNode, secondary: SecondaryNode): Promise<void> {
  await waitFor(() => primary.status().secondaries[0]?.mode === 'streaming', 'the resync ended');
  await waitFor(() => primary.status().secondaries[0]?.lagBytes === 0, 'the secondary stored everything');
  await secondary.settle();
  const expected = Buffer.from(await primary.read(0, 0, 16 * mib));
  assert.ok(expected.equals(await secondary.read(0, 0, 16 * mib)), 'converged byte for byte');
}

test('a resync the disk cannot stage is refused with the numbers, the image kept consistent, and resumes once room is given', {
  timeout: 120_000,
}, async (t) => {
  const port = await freePort();
  const primary = await primaryWithData('consistent', port);
  t.after(() => primary.stop());
  const config = secondaryConfig('consistent', port, 'consistent');
  const journalDirectory = join(config.dataDir, 'journal');
  let roomBytes = 3 * mib;
  const fs = smallDisk(() => limits.stagingFreeBytesMin + roomBytes - directoryBytes(journalDirectory));
  const environment: SiteEnvironment = { ...nodeEnvironment, fs };
  const { logger, entries } = recordingLogger('dr1');
  const secondary = await SecondaryNode.start(config, logger, (error) => assert.fail(error), { environment });
  t.after(() => secondary.stop());

  await waitFor(() => secondary.status().staging.shortage !== null, 'the secondary refuses to stage more');
  const refused = entries.find((entry) => entry.event === 'staging-space-short');
  console.log(JSON.stringify(refused), JSON.stringify(primary.status().secondaries[0]));
  assert.equal(refused?.level, 'error');
  assert.equal(refused?.volumeBytes, 16 * mib, 'the most the resync may need: the volumes');
  assert.ok((refused?.stagedBytes as number) >= mib, 'what it staged');
  assert.ok((refused?.freeBytes as number) < limits.stagingFreeBytesMin + limits.packetBytesMax + 4096);
  assert.match(
    String(refused?.reason),
    /no room to stage the resync: .* staged .* free on the secondary's journal disk/,
  );
  const status = secondary.status();
  assert.equal(status.applied, 0, 'nothing of the resync is applied');
  assert.equal(status.consistent, true);
  assert.equal(status.staging.mode, 'consistent');
  await waitFor(
    () => /staging-space-short: no room to stage/.test(primary.status().secondaries[0]?.lastFailure ?? ''),
    'the primary heard why',
  );
  // Held back well before the disk fills: some 3 MiB staged, never the 12 MiB of the resync.
  await new Promise((resolve) => setTimeout(resolve, 1000));
  assert.ok(
    directoryBytes(journalDirectory) < 3 * mib + limits.packetBytesMax * 2,
    'the journal stopped growing',
  );
  assert.equal(secondary.status().applied, 0);

  roomBytes = 64 * mib;
  await assertConverged(primary, secondary);
  assert.equal(secondary.status().staging.shortage, null);
  assert.ok(!entries.some((entry) => entry.event === 'image-inconsistent'));
});

test('in-place staging needs no room: the resync is applied as it comes, the image said inconsistent until it ends', {
  timeout: 120_000,
}, async (t) => {
  const port = await freePort();
  const primary = await primaryWithData('in-place', port);
  t.after(() => primary.stop());
  const config = secondaryConfig('in-place', port, 'in-place');
  const journalDirectory = join(config.dataDir, 'journal');
  const fs = smallDisk(() => limits.stagingFreeBytesMin + 3 * mib - directoryBytes(journalDirectory));
  const { logger, entries } = recordingLogger('dr1');
  const secondary = await SecondaryNode.start(config, logger, (error) => assert.fail(error), {
    environment: { ...nodeEnvironment, fs },
  });
  t.after(() => secondary.stop());
  const seen = new Set<string>();
  const watching = setInterval(() => {
    const status = secondary.status();
    if (!status.consistent)
      seen.add(`inconsistent since ${status.inconsistentSince === null ? 'null' : 'a time'}`);
  }, 5);
  t.after(() => clearInterval(watching));

  await assertConverged(primary, secondary);
  clearInterval(watching);
  const inconsistent = entries.find((entry) => entry.event === 'image-inconsistent');
  assert.equal(inconsistent?.level, 'warn');
  assert.ok(entries.some((entry) => entry.event === 'image-consistent'));
  assert.ok(!entries.some((entry) => entry.event === 'staging-space-short'), 'never refused for room');
  assert.deepEqual([...seen], ['inconsistent since a time'], 'the status said so meanwhile');
  const status = secondary.status();
  assert.equal(status.consistent, true);
  assert.equal(status.inconsistentSince, null);
});
