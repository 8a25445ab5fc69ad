/**
 * How long recovering X MiB of unsynchronized data takes: a primary (in this process) and a
 * secondary (a child process) on 127.0.0.1; the secondary is stopped, X MiB of distinct 4 KiB
 * blocks are written, the secondary is started again, and the clock runs until it has applied the
 * recovery cycle. Also prints the journal's batching under that load (writes per write() call and
 * per fdatasync). Usage: npm run bench:recovery -- [--mib 100]
 */
import { type ChildProcess, spawn } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { PrimaryNode } from '../src/node/primary-node.ts';
import { loadConfig, type PrimaryFileConfig } from '../src/ops/config.ts';
import { createLogger } from '../src/ops/logger.ts';

const { values } = parseArgs({ options: { mib: { type: 'string', default: '100' } } });
const mib = Number(values.mib);
const binary = fileURLToPath(new URL('../bin/cyclerep.js', import.meta.url));
const dir = mkdtempSync(join(tmpdir(), 'cyclerep-bench-'));

async function freePort(): Promise<number> {
  return new Promise((resolve) => {
    const server = createServer();
    server.listen(0, '127.0.0.1', () => {
      const address = server.address();
      server.close(() => resolve(typeof address === 'object' && address ? address.port : 0));
    });
  });
}

function startSecondary(config: string): ChildProcess {
  return spawn(process.execPath, [binary, 'secondary', '--config', config], { stdio: 'ignore' });
}

async function stopChild(child: ChildProcess): Promise<void> {
  await new Promise((resolve) => {
    child.once('exit', resolve);
    child.kill('SIGTERM');
  });
}

const port = await freePort();
writeFileSync(
  join(dir, 'dr1.yaml'),
  `group: bench\nrole: secondary\nname: dr1\ndataDir: ${join(dir, 'dr1')}\nlisten: 127.0.0.1:${port}\n`,
);
writeFileSync(
  join(dir, 'primary.yaml'),
  `group: bench\nrole: primary\ndataDir: ${join(dir, 'primary')}\nvolumes:\n  - { name: data, size: ${Math.max(256, mib * 2)}MiB }\n` +
    `cycle: { minMs: 200 }\njournal: { capacity: 8GiB, segmentSize: 64MiB }\nsecondaries:\n  - { name: dr1, address: 127.0.0.1:${port}, connections: 2 }\n`,
);
const config = loadConfig(join(dir, 'primary.yaml')) as PrimaryFileConfig;
let child = startSecondary(join(dir, 'dr1.yaml'));
const primary = await PrimaryNode.start(
  config,
  createLogger({ site: 'bench', format: 'json', write: () => {} }),
  (error) => {
    throw error;
  },
);
const waitCaughtUp = async (): Promise<void> => {
  while (
    primary.status().secondaries[0]?.lagBytes !== 0 ||
    primary.status().secondaries[0]?.link !== 'streaming'
  ) {
    await new Promise((resolve) => setTimeout(resolve, 5));
  }
};
await primary.write(0, 0, new Uint8Array(4096).fill(1));
await waitCaughtUp();
await stopChild(child);

const blocks = (mib * 1024 * 1024) / 4096;
const before = primary.status();
const writeStart = performance.now();
const data = new Uint8Array(4096);
for (let block = 0; block < blocks; block += 64) {
  const batch: Promise<unknown>[] = [];
  for (let i = block; i < Math.min(blocks, block + 64); i++) {
    data.fill(i & 0xff);
    batch.push(primary.write(0, i * 4096, data));
  }
  await Promise.all(batch);
}
const writeSeconds = (performance.now() - writeStart) / 1000;
const during = primary.status();
child = startSecondary(join(dir, 'dr1.yaml'));
const recoveryStart = performance.now();
await waitCaughtUp();
const recoverySeconds = (performance.now() - recoveryStart) / 1000;
const appends = during.journalAppends - before.journalAppends;
process.stdout.write(
  `wrote ${mib} MiB (${blocks} writes of 4 KiB, 64 in flight) in ${writeSeconds.toFixed(2)} s: ` +
    `${(blocks / writeSeconds).toFixed(0)} writes/s; journal: ${(appends / (during.journalWrites - before.journalWrites)).toFixed(1)} records per write(), ` +
    `${(appends / Math.max(1, during.journalSyncs - before.journalSyncs)).toFixed(0)} per fdatasync\n` +
    `recovery of ${mib} MiB unsynchronized (one recovery cycle, secondary restart included): ${recoverySeconds.toFixed(2)} s, ` +
    `${(mib / recoverySeconds).toFixed(1)} MiB/s\n`,
);
await primary.stop();
await stopChild(child);
rmSync(dir, { recursive: true, force: true });
