/**
 * Scenario 1, front-door overhead: the same fio workloads and the same nbdcopy against nbdkit's
 * file plugin, qemu-nbd, and cyclerep (alone; replicating to a local secondary with ack immediate;
 * with ack cycle and 100 ms cycles). Servers are started fresh for each repetition, in an order
 * that rotates, and the median of the repetitions is reported with its ratio to nbdkit.
 */
import { type BenchContext, gib, mib, randomImage } from '../lib/context.ts';
import { type FioJob, runFio, sequentialWrites } from '../lib/fio.ts';
import { runToolAsync } from '../lib/processes.ts';
import { median } from '../lib/report.ts';
import { CyclerepSites, type NbdTarget, startNbdkit, startQemuNbd } from '../lib/servers.ts';

interface Workload {
  name: string;
  job: Omit<FioJob, 'uri' | 'sizeBytes' | 'seconds'>;
}

const workloads: Workload[] = [
  { name: '4 KiB random write, depth 1', job: { rw: 'randwrite', blockSize: '4k', iodepth: 1 } },
  { name: '4 KiB random write, depth 16', job: { rw: 'randwrite', blockSize: '4k', iodepth: 16 } },
  { name: '256 KiB sequential write, depth 8', job: sequentialWrites },
];

type Starter = { label: string; start: (context: BenchContext, sizeBytes: number) => Promise<NbdTarget> };

const targets: Starter[] = [
  { label: 'nbdkit file', start: (context, size) => startNbdkit(context.dir, size) },
  { label: 'qemu-nbd', start: (context, size) => startQemuNbd(context.dir, size) },
  {
    label: 'cyclerep alone',
    start: (context, size) =>
      CyclerepSites.start(context.dir, { label: 'cyclerep alone', sizeBytes: size, withSecondary: false }),
  },
  {
    label: 'cyclerep + secondary (ack immediate)',
    start: (context, size) =>
      CyclerepSites.start(context.dir, { label: 'cyclerep immediate', sizeBytes: size, withSecondary: true }),
  },
  {
    label: 'cyclerep + secondary (ack cycle, 100 ms)',
    start: (context, size) =>
      CyclerepSites.start(context.dir, {
        label: 'cyclerep cycle',
        sizeBytes: size,
        withSecondary: true,
        ack: 'cycle',
        cycleMinMs: 100,
      }),
  },
];

interface Sample {
  iops: number;
  mibPerSecond: number;
  p50Us: number;
  p99Us: number;
}

export async function frontDoor(context: BenchContext): Promise<void> {
  const sizeBytes = context.quick ? 256 * mib : gib;
  const seconds = context.quick ? 2 : 8;
  const repetitions = context.quick ? 1 : 3;
  const copyBytes = context.quick ? 128 * mib : gib;
  const image = await randomImage(context, copyBytes);
  const samples = new Map<string, Sample[]>();
  const copies = new Map<string, number[]>();
  const key = (target: string, workload: string) => `${target}\u0000${workload}`;
  for (let repetition = 0; repetition < repetitions; repetition++) {
    // Rotate the order so that no server always runs first (cold caches) or last.
    const order = targets.map((_, index) => targets[(index + repetition) % targets.length] as Starter);
    for (const starter of order) {
      const target = await starter.start(context, sizeBytes);
      try {
        for (const workload of workloads) {
          const result = await runFio({ ...workload.job, uri: target.url, sizeBytes, seconds });
          const list = samples.get(key(starter.label, workload.name)) ?? [];
          list.push(result);
          samples.set(key(starter.label, workload.name), list);
          process.stdout.write(
            `  ${starter.label}, ${workload.name}: ${Math.round(result.iops)} IOPS, ${result.mibPerSecond.toFixed(1)} MiB/s\n`,
          );
        }
        const copy = await runToolAsync('nbdcopy', [image, target.url]);
        copies.set(starter.label, [...(copies.get(starter.label) ?? []), copy.seconds]);
        process.stdout.write(
          `  ${starter.label}, nbdcopy ${copyBytes / mib} MiB: ${copy.seconds.toFixed(2)} s\n`,
        );
      } finally {
        await target.stop();
      }
    }
  }
  const baseline = 'nbdkit file';
  for (const workload of workloads) {
    const table = context.report.table(
      `Front door: ${workload.name} (fio nbd engine, ${seconds} s, median of ${repetitions})`,
      ['server', 'IOPS', 'MiB/s', 'p50 µs', 'p99 µs', 'IOPS / nbdkit', 'MiB/s / nbdkit'],
    );
    const base = summarize(samples.get(key(baseline, workload.name)) ?? []);
    for (const starter of targets) {
      const figures = summarize(samples.get(key(starter.label, workload.name)) ?? []);
      table.rows.push([
        starter.label,
        figures.iops,
        figures.mibPerSecond,
        figures.p50Us,
        figures.p99Us,
        figures.iops / base.iops,
        figures.mibPerSecond / base.mibPerSecond,
      ]);
      const slug = `${slugOf(starter.label)}.${slugOf(workload.name)}`;
      context.report.figure(`frontDoor.${slug}.iops`, figures.iops);
      context.report.figure(`frontDoor.${slug}.ratioToNbdkit`, figures.iops / base.iops);
    }
    context.report.print(table);
  }
  const copyTable = context.report.table(
    `Front door: nbdcopy of a ${copyBytes / mib} MiB random image into the export (median of ${repetitions})`,
    ['server', 'seconds', 'MiB/s', 'time / nbdkit'],
  );
  const baseCopy = median(copies.get(baseline) ?? []);
  for (const starter of targets) {
    const time = median(copies.get(starter.label) ?? []);
    copyTable.rows.push([starter.label, time, copyBytes / mib / time, time / baseCopy]);
    context.report.figure(`frontDoor.${slugOf(starter.label)}.nbdcopy.timeRatioToNbdkit`, time / baseCopy);
  }
  context.report.print(copyTable);
  context.frontDoorIops = summarize(
    samples.get(key('cyclerep + secondary (ack immediate)', '4 KiB random write, depth 16')) ?? [],
  ).iops;
}

function summarize(list: Sample[]): Sample {
  return {
    iops: median(list.map((sample) => sample.iops)),
    mibPerSecond: median(list.map((sample) => sample.mibPerSecond)),
    p50Us: median(list.map((sample) => sample.p50Us)),
    p99Us: median(list.map((sample) => sample.p99Us)),
  };
}

export function slugOf(text: string): string {
  return text
    .toLowerCase()
    .replace(/[^a-z0-9]+/g, '-')
    .replace(/^-|-$/g, '');
}
