/**
 * Scenario 2, replication throughput and lag: 4 KiB random writes throttled to 25%, 50% and 90% of
 * the rate the front door reached with a local secondary, then 256 KiB writes as fast as they go
 * through a site link shaped to 1 Gbit/s (and to 100 Mbit/s, where the link surely is the
 * bottleneck). Lag is sampled from /status every 100 ms.
 */
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { type BenchContext, gib, mib } from '../lib/context.ts';
import { runFio, sequentialWrites } from '../lib/fio.ts';
import { percentile } from '../lib/report.ts';
import { type StatusSample, sampleStatus } from '../lib/sampler.ts';
import { CyclerepSites } from '../lib/servers.ts';

export async function replication(context: BenchContext): Promise<void> {
  const seconds = context.quick ? 3 : 20;
  const sizeBytes = context.quick ? 256 * mib : gib;
  const rate = context.frontDoorIops ?? (await measureFrontDoor(context, sizeBytes));
  const table = context.report.table(
    `Replication under load: 4 KiB random writes at depth 16, ${seconds} s, cycle.intervalMinMs 1000`,
    [
      'load',
      'written MiB/s',
      'shipped MiB/s',
      'lag cycles p50',
      'lag cycles p99',
      'lag s p50',
      'lag s p99',
      'cycles/s',
      'mean cycle MiB',
      'fsyncs/s (primary)',
      'CPU s/GiB primary',
      'CPU s/GiB secondary',
    ],
    [
      `Load is a fraction of ${Math.round(rate)} IOPS, what the front door reached replicating to a local secondary.`,
    ],
  );
  for (const load of [0.25, 0.5, 0.9]) {
    const sites = await CyclerepSites.start(context.dir, {
      label: `replication ${load}`,
      sizeBytes,
      withSecondary: true,
    });
    try {
      const before = await sites.status();
      const cpu = sites.processes.map((child) => child.cpuSeconds());
      const sampler = sampleStatus(sites);
      const started = performance.now();
      const fio = await runFio({
        uri: sites.url,
        rw: 'randwrite',
        blockSize: '4k',
        iodepth: 16,
        sizeBytes,
        seconds,
        rateIops: rate * load,
      });
      const elapsed = (performance.now() - started) / 1000;
      const samples = await sampler.stop();
      const after = await sites.status();
      const [primaryCpu, secondaryCpu] = sites.processes.map(
        (child, index) => child.cpuSeconds() - (cpu[index] as number),
      );
      const shipped = (after.secondaries[0]?.shippedBytes ?? 0) - (before.secondaries[0]?.shippedBytes ?? 0);
      const lagCycles = samples.map((sample) => sample.status.secondaries[0]?.lagCycles ?? 0);
      const lagSeconds = samples.map((sample) => sample.status.secondaries[0]?.lagSeconds ?? 0);
      const closed = after.closed - before.closed;
      const written = after.writtenBytes - before.writtenBytes;
      table.rows.push([
        `${load * 100}%`,
        fio.mibPerSecond,
        shipped / mib / elapsed,
        percentile(lagCycles, 0.5),
        percentile(lagCycles, 0.99),
        percentile(lagSeconds, 0.5),
        percentile(lagSeconds, 0.99),
        closed / elapsed,
        closed > 0 ? written / closed / mib : 0,
        (after.journalSyncs - before.journalSyncs) / elapsed,
        (primaryCpu ?? 0) / (shipped / gib),
        (secondaryCpu ?? 0) / (shipped / gib),
      ]);
      context.report.figure(`replication.load${load * 100}.lagCyclesP99`, percentile(lagCycles, 0.99));
      context.report.figure(`replication.load${load * 100}.lagSecondsP99`, percentile(lagSeconds, 0.99));
    } finally {
      await sites.stop();
    }
  }
  context.report.print(table);
  await linkBound(context, seconds, sizeBytes);
}

/** The bound the paced row keeps, and its longest delay: 8 writes of 256 KiB at 12.5 MB/s need about 160 ms each. */
const pacedLagSecondsMax = 5;
const pacedDelayMsMax = 500;

/** The shaped-link rows alone (`--only link-bound`), paced and not. */
export async function linkBoundAlone(context: BenchContext): Promise<void> {
  await linkBound(context, context.quick ? 3 : 20, context.quick ? 256 * mib : gib);
}

/** The paced row alone (`--only link-bound-paced`): pacing's figures in a minute. */
export async function linkBoundPaced(context: BenchContext): Promise<void> {
  const paced = linkBoundRows.filter((row) => row.pacing);
  await linkBound(context, context.quick ? 3 : 20, context.quick ? 256 * mib : gib, paced);
}

/** A row of the shaped-link table: the link, and what the primary does on it. */
interface LinkBoundRow {
  label: string;
  bitsPerSecond: number;
  /** The primary's `pacing` section, as a YAML flow mapping. */
  pacing?: string;
  compression?: 'brotli';
  /** fio's buffer_compress_percentage (default: random data). */
  compressPercentage?: number;
  /** Runs this long in a full run, rather than the table's duration. */
  seconds?: number;
}

const linkBoundRows: LinkBoundRow[] = [
  { label: '1 Gbit/s', bitsPerSecond: 1e9 },
  { label: '100 Mbit/s', bitsPerSecond: 1e8 },
  {
    label: '100 Mbit/s, paced, 90 s',
    bitsPerSecond: 1e8,
    // Twice as long: its second half is past the cold start, where the link's rate is not known yet.
    seconds: 90,
    pacing: `{ lagSecondsMax: ${pacedLagSecondsMax}, delayMsMax: ${pacedDelayMsMax} }`,
  },
  {
    label: '100 Mbit/s, 50% compressible data',
    bitsPerSecond: 1e8,
    compressPercentage: 50,
  },
  {
    label: '100 Mbit/s, 50% compressible, compression: brotli',
    bitsPerSecond: 1e8,
    compression: 'brotli',
    compressPercentage: 50,
  },
];

async function linkBound(
  context: BenchContext,
  seconds: number,
  sizeBytes: number,
  rows: LinkBoundRow[] = linkBoundRows,
): Promise<void> {
  const table = context.report.table(
    `Link as the bottleneck: 256 KiB sequential writes at depth 8 for ${seconds} s through a shaped link`,
    [
      'link',
      'written MiB/s',
      'on the wire MiB/s',
      'wire / capacity',
      'block data replicated MiB/s',
      'lag s p50',
      'lag s max',
      'lag s max, 2nd half',
      'lag s at the end',
      'drain after s',
      'pacing: writes delayed',
      'pacing: mean delay ms',
    ],
    [
      'Shaped by a token-bucket TCP proxy on 127.0.0.1 (primary to secondary direction), 2 connections. ' +
        '"on the wire" counts the bytes the proxy delivered while the writes ran (frames, compressed or not); ' +
        '"block data replicated" the block data the primary sent meanwhile (its shippedBytes, before compression); ' +
        '"drain after" is the time from the end of the writes until the secondary applied everything. ' +
        `With pacing (\`pacing: ${linkBoundRows[2]?.pacing}\`) the primary lets writes in at a rate set from the link's once ` +
        "the lag, looking ahead at the backlog, passes half the bound; the run starts cold, so the link's rate " +
        "is unknown for its first second of shipping (docs/pacing.md). Compressible data is fio's " +
        'buffer_compress_percentage=50; `compression: brotli` on the secondary link (docs/wire.md).',
    ],
  );
  for (const row of rows) {
    const rowSeconds = context.quick ? seconds : (row.seconds ?? seconds);
    table.rows.push(await linkBoundRow(context, row, rowSeconds, sizeBytes));
  }
  context.report.print(table);
}

async function linkBoundRow(
  context: BenchContext,
  row: LinkBoundRow,
  seconds: number,
  sizeBytes: number,
): Promise<(string | number)[]> {
  const capacity = row.bitsPerSecond / 8;
  const sites = await CyclerepSites.start(context.dir, {
    label: `link ${row.label}`,
    sizeBytes,
    withSecondary: true,
    linkBytesPerSecond: capacity,
    ...(row.pacing ? { pacing: row.pacing } : {}),
    ...(row.compression ? { compression: row.compression } : {}),
  });
  try {
    const shaper = sites.shaper as NonNullable<typeof sites.shaper>;
    const forwarded = shaper.forwardedBytes;
    const before = await sites.status();
    const sampler = sampleStatus(sites);
    const started = performance.now();
    const fio = await runFio({
      uri: sites.url,
      ...sequentialWrites,
      sizeBytes,
      seconds,
      ...(row.compressPercentage !== undefined ? { compressPercentage: row.compressPercentage } : {}),
    });
    const elapsed = (performance.now() - started) / 1000;
    const samples = await sampler.stop();
    const after = await sites.status();
    const onWire = shaper.forwardedBytes - forwarded;
    const blockData = (after.secondaries[0]?.shippedBytes ?? 0) - (before.secondaries[0]?.shippedBytes ?? 0);
    const lagSeconds = samples.map((sample) => sample.status.secondaries[0]?.lagSeconds ?? 0);
    // The second half of the run: past a cold start (a link whose rate is not known yet).
    const halfway = started + (elapsed * 1000) / 2;
    const lateLagSeconds = samples
      .filter((sample) => sample.atMs >= halfway)
      .map((sample) => sample.status.secondaries[0]?.lagSeconds ?? 0);
    const paced = after.pacing;
    const drainStarted = performance.now();
    await sites.idle();
    const drain = (performance.now() - drainStarted) / 1000;
    const key = `linkBound.${row.bitsPerSecond}${row.pacing ? '.paced' : ''}${row.compressPercentage !== undefined ? `.compressible${row.compression ? '.compressed' : ''}` : ''}`;
    writeLagSamples(key, samples, started);
    context.report.figure(`${key}.fractionOfCapacity`, onWire / elapsed / capacity);
    context.report.figure(`${key}.blockDataMiBPerSecond`, blockData / mib / elapsed);
    context.report.figure(`${key}.lagSecondsMax`, Math.max(0, ...lagSeconds));
    return [
      row.label,
      fio.mibPerSecond,
      onWire / mib / elapsed,
      onWire / elapsed / capacity,
      blockData / mib / elapsed,
      percentile(lagSeconds, 0.5),
      Math.max(0, ...lagSeconds),
      Math.max(0, ...lateLagSeconds),
      after.secondaries[0]?.lagSeconds ?? 0,
      drain,
      paced ? paced.writesDelayed : '-',
      paced && paced.writesDelayed > 0 ? (paced.delaySeconds * 1000) / paced.writesDelayed : '-',
    ];
  } finally {
    await sites.stop();
  }
}

/**
 * With BENCH_SAMPLES_DIR set, a row's status samples (every 100 ms) go to `<dir>/<key>.jsonl`:
 * the lag, the backlog and what pacing decided, to see how a control behaves over a run.
 */
function writeLagSamples(key: string, samples: readonly StatusSample[], startedMs: number): void {
  const dir = process.env.BENCH_SAMPLES_DIR;
  if (!dir) return;
  const lines = samples.map(({ atMs, status }) => {
    const secondary = status.secondaries[0];
    return JSON.stringify({
      ms: Math.round(atMs - startedMs),
      writtenMiB: status.writtenBytes / mib,
      closed: status.closed,
      stored: secondary?.stored,
      lagSeconds: secondary?.lagSeconds,
      lagMiB: (secondary?.lagBytes ?? 0) / mib,
      pacingLagSeconds: status.pacing?.lagSeconds,
      admitMiBPerSecond: status.pacing?.admitBytesPerSecond ? status.pacing.admitBytesPerSecond / mib : null,
      delayMs: status.pacing?.delayMs,
    });
  });
  mkdirSync(dir, { recursive: true });
  writeFileSync(join(dir, `${key}.jsonl`), `${lines.join('\n')}\n`);
}

async function measureFrontDoor(context: BenchContext, sizeBytes: number): Promise<number> {
  const sites = await CyclerepSites.start(context.dir, {
    label: 'front door rate',
    sizeBytes,
    withSecondary: true,
  });
  try {
    const result = await runFio({
      uri: sites.url,
      rw: 'randwrite',
      blockSize: '4k',
      iodepth: 16,
      sizeBytes,
      seconds: 3,
    });
    return result.iops;
  } finally {
    await sites.stop();
  }
}
