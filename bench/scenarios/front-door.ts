/**
 * Scenario 1, front-door overhead: the same fio workloads and the same nbdcopy against nbdkit's
 * file plugin, qemu-nbd, and cyclerep (alone; replicating to a local secondary with ack immediate;
 * with ack cycle and 100 ms cycles). Servers are started fresh for each repetition, in an order
 * that rotates, and the median of the repetitions is reported with its ratio to nbdkit.
 *
 * It runs twice: with the servers' files on the run's disk, and on tmpfs (/dev/shm), where no disk
 * hides the software's own cost. For every fio run it also reports, per serving process, the CPU
 * spent per write and (on disk) the bytes it sent to the storage layer per byte the client wrote.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { type BenchContext, freeBytes, gib, mib, randomImage } from '../lib/context.ts';
import { type FioJob, runFio, sequentialWrites } from '../lib/fio.ts';
import type { Child } from '../lib/processes.ts';
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

/** What one serving process spent on one fio run: CPU per write, storage bytes per client byte. */
interface Cost {
  cpuUsPerWrite: number;
  storageBytesPerByte: number;
}

/** Where the servers keep their files: the run's directory (a disk) or tmpfs. */
interface Place {
  name: 'disk' | 'tmpfs';
  dir: string;
}

const tmpfs = '/dev/shm';

/** Both places: the disk, then tmpfs when it has room (else said, and skipped). */
export async function frontDoor(context: BenchContext): Promise<void> {
  await frontDoorOnDisk(context);
  await frontDoorOnTmpfs(context);
}

/** The scenario with every file on the disk (`--only front-door-disk`). */
export async function frontDoorOnDisk(context: BenchContext): Promise<void> {
  await frontDoorAt(context, { name: 'disk', dir: context.dir });
}

/** The scenario with every file on tmpfs (`--only front-door-tmpfs`). */
export async function frontDoorOnTmpfs(context: BenchContext): Promise<void> {
  // The largest server keeps a volume and a journal; the random image for nbdcopy stays on disk.
  const needed = (context.quick ? 256 * mib : gib) * 6;
  let room = 0;
  try {
    room = freeBytes(tmpfs);
  } catch {
    // no tmpfs there: room stays 0
  }
  if (room < needed) {
    process.stdout.write(
      `  front door on tmpfs skipped: ${tmpfs} has ${Math.floor(room / mib)} MiB free, ${needed / mib} MiB needed\n`,
    );
    return;
  }
  const dir = mkdtempSync(join(tmpfs, 'cyclerep-bench-'));
  try {
    await frontDoorAt(context, { name: 'tmpfs', dir });
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

async function frontDoorAt(context: BenchContext, place: Place): Promise<void> {
  const sizeBytes = context.quick ? 256 * mib : gib;
  const seconds = context.quick ? 2 : 8;
  const repetitions = context.quick ? 1 : 3;
  const copyBytes = context.quick ? 128 * mib : gib;
  const image = await randomImage(context, copyBytes);
  const samples = new Map<string, Sample[]>();
  const costs = new Map<string, Cost[][]>();
  const copies = new Map<string, number[]>();
  const key = (target: string, workload: string) => `${target}\u0000${workload}`;
  for (let repetition = 0; repetition < repetitions; repetition++) {
    // Rotate the order so that no server always runs first (cold caches) or last.
    const order = targets.map((_, index) => targets[(index + repetition) % targets.length] as Starter);
    for (const starter of order) {
      const target = await starter.start({ ...context, dir: place.dir }, sizeBytes);
      try {
        for (const workload of workloads) {
          const before = target.processes.map(readCounters);
          const result = await runFio({ ...workload.job, uri: target.url, sizeBytes, seconds });
          const writes = result.bytes / blockBytesOf(workload.job.blockSize);
          const spent = target.processes.map((child, index) =>
            costOf(readCounters(child), before[index] as Counters, writes, result.bytes),
          );
          const name = key(starter.label, workload.name);
          samples.set(name, [...(samples.get(name) ?? []), result]);
          costs.set(name, [...(costs.get(name) ?? []), spent]);
          process.stdout.write(
            `  ${place.name}: ${starter.label}, ${workload.name}: ${Math.round(result.iops)} IOPS, ${result.mibPerSecond.toFixed(1)} MiB/s, CPU µs per write ${spent.map((cost) => cost.cpuUsPerWrite.toFixed(0)).join(' + ')}\n`,
          );
        }
        const copy = await runToolAsync('nbdcopy', [image, target.url]);
        copies.set(starter.label, [...(copies.get(starter.label) ?? []), copy.seconds]);
        process.stdout.write(
          `  ${place.name}: ${starter.label}, nbdcopy ${copyBytes / mib} MiB: ${copy.seconds.toFixed(2)} s\n`,
        );
      } finally {
        await target.stop();
      }
    }
  }
  const baseline = 'nbdkit file';
  for (const workload of workloads) {
    const table = context.report.table(
      `Front door on ${place.name}: ${workload.name} (fio nbd engine, ${seconds} s, median of ${repetitions})`,
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
      const slug = `${place.name === 'disk' ? '' : `${place.name}.`}${slugOf(starter.label)}.${slugOf(workload.name)}`;
      context.report.figure(`frontDoor.${slug}.iops`, figures.iops);
      context.report.figure(`frontDoor.${slug}.ratioToNbdkit`, figures.iops / base.iops);
    }
    context.report.print(table);
  }
  printCosts(context, place, costs, key);
  const copyTable = context.report.table(
    `Front door on ${place.name}: nbdcopy of a ${copyBytes / mib} MiB random image into the export (median of ${repetitions})`,
    ['server', 'seconds', 'MiB/s', 'time / nbdkit'],
  );
  const baseCopy = median(copies.get(baseline) ?? []);
  for (const starter of targets) {
    const time = median(copies.get(starter.label) ?? []);
    copyTable.rows.push([starter.label, time, copyBytes / mib / time, time / baseCopy]);
    context.report.figure(
      `frontDoor.${place.name === 'disk' ? '' : `${place.name}.`}${slugOf(starter.label)}.nbdcopy.timeRatioToNbdkit`,
      time / baseCopy,
    );
  }
  context.report.print(copyTable);
  if (place.name === 'disk')
    context.frontDoorIops = summarize(
      samples.get(key('cyclerep + secondary (ack immediate)', '4 KiB random write, depth 16')) ?? [],
    ).iops;
}

/**
 * One table per place: for each server and workload, each serving process's CPU per write and
 * storage bytes per byte the client wrote (medians over the repetitions). The targets of issue 13
 * are ≤ 40 µs per replicated 4 KiB write on the primary, ≤ 25 µs on the secondary.
 */
function printCosts(
  context: BenchContext,
  place: Place,
  costs: Map<string, Cost[][]>,
  key: (target: string, workload: string) => string,
): void {
  const table = context.report.table(
    `Front door on ${place.name}: what each serving process spent (median)`,
    ['server', 'workload', 'process', 'CPU µs / write', 'storage bytes / byte written'],
  );
  for (const starter of targets)
    for (const workload of workloads) {
      const runs = costs.get(key(starter.label, workload.name)) ?? [];
      (runs[0] ?? []).forEach((_, index) => {
        const of = (pick: (cost: Cost) => number) => median(runs.map((run) => pick(run[index] as Cost)));
        const cpu = of((cost) => cost.cpuUsPerWrite);
        const bytes = of((cost) => cost.storageBytesPerByte);
        const process = index === 0 ? 'primary / server' : 'secondary';
        table.rows.push([starter.label, workload.name, process, cpu, place.name === 'tmpfs' ? 'n/a' : bytes]);
        const slug = `${place.name}.${slugOf(starter.label)}.${slugOf(workload.name)}.${index === 0 ? 'server' : 'secondary'}`;
        context.report.figure(`frontDoor.cost.${slug}.cpuUsPerWrite`, cpu);
        if (place.name === 'disk') context.report.figure(`frontDoor.cost.${slug}.storageBytesPerByte`, bytes);
      });
    }
  context.report.print(table);
}

interface Counters {
  cpuSeconds: number;
  storageBytes: number;
}

function readCounters(child: Child): Counters {
  return { cpuSeconds: child.cpuSeconds(), storageBytes: child.storageWriteBytes() };
}

function costOf(after: Counters, before: Counters, writes: number, bytes: number): Cost {
  return {
    cpuUsPerWrite: ((after.cpuSeconds - before.cpuSeconds) * 1e6) / Math.max(1, writes),
    storageBytesPerByte: (after.storageBytes - before.storageBytes) / Math.max(1, bytes),
  };
}

/** fio's block size ("4k", "256k") in bytes. */
function blockBytesOf(blockSize: string): number {
  const match = /^(\d+)([kKmM]?)$/.exec(blockSize);
  if (!match) throw new Error(`fio block size ${blockSize} not understood`);
  const unit = { '': 1, k: 1024, m: mib }[(match[2] ?? '').toLowerCase()] ?? 1;
  return Number(match[1]) * unit;
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
