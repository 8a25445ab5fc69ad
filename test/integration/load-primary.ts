/**
 * A primary process with a built-in load, for the integration tests: runs PrimaryNode from a config
 * file and the self-describing workload against it, resuming the sources' counters from what its
 * volumes hold. Prints one JSON line per 20 ms with the counters acknowledged so far, so that a test
 * which kill -9s it knows what was acknowledged. SIGTERM stops the load, waits until every secondary
 * caught up (up to 20 s), stops the primary and exits 0.
 */
import { PrimaryNode } from '../../src/node/primary-node.ts';
import { loadConfig, type PrimaryFileConfig } from '../../src/ops/config.ts';
import { createLogger } from '../../src/ops/logger.ts';
import { checkCut } from '../../src/workload/blocks.ts';
import { Workload } from '../../src/workload/sources.ts';

export const loadShape = { sources: 4, blocksPerSource: 256 };

const config = loadConfig(process.argv[2] as string) as PrimaryFileConfig;
const logger = createLogger({ site: `${config.group}/primary`, format: 'json' });
const node = await PrimaryNode.start(config, logger, () => process.exit(3));
const blockBytes = config.blockSize;
const workload = new Workload({
  sources: loadShape.sources,
  volumeBlocks: config.volumes.map((volume) => volume.size / blockBytes),
  blocksPerSource: loadShape.blocksPerSource,
  blockBytes,
  thinkMs: Number(process.env.LOAD_THINK_MS ?? 1),
  write: (volume, offset, data) => node.write(volume, offset, data),
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
