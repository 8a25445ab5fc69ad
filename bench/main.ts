/**
 * `npm run bench [-- --quick] [--only name,...]`: every scenario runs cyclerep and its baseline in
 * the same run, prints its tables as it goes, and the run ends by writing bench/results/latest.json
 * and latest.md. `--only` also takes a part of a scenario that runs alone (front-door-disk, front-door-tmpfs, resync-memory, resync-1g, link-bound, link-bound-paced). The benchmark reports; it never fails on a figure (only when something breaks).
 * BENCH_SAMPLES_DIR=dir keeps the shaped-link rows' status samples there, one JSON line per 100 ms.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import type { BenchContext } from './lib/context.ts';
import { Report } from './lib/report.ts';
import { failover } from './scenarios/failover.ts';
import { folding } from './scenarios/folding.ts';
import { frontDoor, frontDoorOnDisk, frontDoorOnTmpfs } from './scenarios/front-door.ts';
import { memory } from './scenarios/memory.ts';
import { recovery } from './scenarios/recovery.ts';
import { linkBoundAlone, linkBoundPaced, replication } from './scenarios/replication.ts';
import { resync } from './scenarios/resync.ts';
import { resyncOfOneGib } from './scenarios/resync-1g.ts';
import { memoryWhileAway } from './scenarios/resync-memory.ts';
import { tlsLink } from './scenarios/tls-link.ts';

const scenarios: Record<string, (context: BenchContext) => Promise<void>> = {
  'front-door': frontDoor,
  replication,
  folding,
  recovery,
  memory,
  'tls-link': tlsLink,
  resync,
  failover,
};

/** Parts of a scenario that `--only` may pick alone; a run without `--only` runs them in their scenario. */
const parts: Record<string, (context: BenchContext) => Promise<void>> = {
  'front-door-disk': frontDoorOnDisk,
  'front-door-tmpfs': frontDoorOnTmpfs,
  'resync-memory': memoryWhileAway,
  'resync-1g': resyncOfOneGib,
  'link-bound': linkBoundAlone,
  'link-bound-paced': linkBoundPaced,
};
const runnable = { ...scenarios, ...parts };

const { values } = parseArgs({
  options: {
    quick: { type: 'boolean', default: false },
    only: { type: 'string' },
    dir: { type: 'string' },
  },
});
const chosen = values.only ? values.only.split(',') : Object.keys(scenarios);
for (const name of chosen) {
  if (!runnable[name]) {
    process.stderr.write(`unknown scenario "${name}"; scenarios: ${Object.keys(runnable).join(', ')}\n`);
    process.exit(2);
  }
}

const dir = mkdtempSync(join(values.dir ?? tmpdir(), 'cyclerep-bench-'));
const report = new Report(values.quick ? 'quick' : 'full');
const context: BenchContext = { quick: values.quick ?? false, dir, report };
const cleanup = () => rmSync(dir, { recursive: true, force: true });
process.once('SIGINT', () => {
  cleanup();
  process.exit(130);
});
try {
  for (const name of chosen) {
    const started = performance.now();
    process.stdout.write(`\n== ${name}\n`);
    await (runnable[name] as (context: BenchContext) => Promise<void>)(context);
    process.stdout.write(`== ${name}: ${((performance.now() - started) / 1000).toFixed(0)} s\n`);
  }
} finally {
  cleanup();
}
const written = report.write(fileURLToPath(new URL('./results', import.meta.url)));
process.stdout.write(`\nwrote ${written.json} and ${written.markdown}\n`);
