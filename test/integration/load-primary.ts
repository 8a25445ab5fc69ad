/**
 * A primary process with a built-in load, for the integration tests: runs PrimaryNode from a config
 * file and the self-describing workload against it, resuming the sources' counters from what its
 * volumes hold. With LOAD_ACK_FILE set, every acknowledgement is appended to that file as it happens
 * ("source counter" lines, written synchronously before the source sees its write acknowledged), so
 * a test that kill -9s the process knows every write it acknowledged, the last one included. Prints
 * one JSON line per 20 ms with progress figures. SIGTERM stops the load, waits until every
 * secondary caught up (up to 20 s), stops the primary and exits 0.
 */
import { closeSync, openSync, writeSync } from 'node:fs';
import { PrimaryNode } from '../../src/node/primary-node.ts';
import { loadConfig, type PrimaryFileConfig } from '../../src/ops/config.ts';
import { createLogger } from '../../src/ops/logger.ts';
import { checkCut, readStamp } from '../../src/workload/blocks.ts';
import { Workload } from '../../src/workload/sources.ts';

export const loadShape = { sources: 4, blocksPerSource: 256 };

const config = loadConfig(process.argv[2] as string) as PrimaryFileConfig;
const logger = createLogger({ site: `${config.group}/primary`, format: 'json' });
const node = await PrimaryNode.start(config, logger, () => process.exit(3));
const blockBytes = config.blockSize;
const ackFile = process.env.LOAD_ACK_FILE ? openSync(process.env.LOAD_ACK_FILE, 'a') : null;
process.once('exit', () => {
  if (ackFile !== null) closeSync(ackFile);
});

/** Appends the acknowledged write's source and counter, read from its own stamp, before anyone sees the ack. */
function recordAcknowledged(data: Uint8Array): void {
  if (ackFile === null) return;
  const stamp = readStamp(data);
  if (stamp === null || stamp === 'damaged') throw new Error('the load wrote a block without a stamp');
  writeSync(ackFile, `${stamp.source} ${stamp.counter}\n`);
}
const workload = new Workload({
  sources: loadShape.sources,
  volumeBlocks: config.volumes.map((volume) => volume.size / blockBytes),
  blocksPerSource: loadShape.blocksPerSource,
  blockBytes,
  thinkMs: Number(process.env.LOAD_THINK_MS ?? 1),
  write: async (volume, offset, data) => {
    await node.write(volume, offset, data);
    recordAcknowledged(data);
  },
});
const images = await Promise.all(config.volumes.map((volume, index) => node.read(index, 0, volume.size)));
const start = checkCut(images, workload.regions, blockBytes);
if (!start.consistent) {
  process.stdout.write(`${JSON.stringify({ inconsistentAtStart: start.problems.slice(0, 5) })}\n`);
  process.exit(5);
}
workload.resumeFrom(start.newest);
process.stdout.write(`${JSON.stringify({ started: start.newest })}\n`);
if (process.env.LOAD_OFF !== '1') workload.start();
const reporter = setInterval(() => {
  process.stdout.write(
    `${JSON.stringify({ acknowledged: workload.acknowledged, writes: workload.writes })}\n`,
  );
}, 20);
// SIGUSR2 pauses the load (the primary keeps running), so a test can watch the group settle.
process.on('SIGUSR2', () => {
  void workload
    .stop()
    .then(() =>
      process.stdout.write(`${JSON.stringify({ paused: true, acknowledged: workload.acknowledged })}\n`),
    );
});
process.once('SIGTERM', async () => {
  clearInterval(reporter);
  await workload.stop();
  process.stdout.write(
    `${JSON.stringify({ acknowledged: workload.acknowledged, writes: workload.writes, stopped: true })}\n`,
  );
  const deadline = Date.now() + Number(process.env.LOAD_SETTLE_MS ?? 20_000);
  while (node.status().secondaries.some((link) => link.lagBytes > 0) && Date.now() < deadline) {
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
  await node.stop();
  process.exit(0);
});
