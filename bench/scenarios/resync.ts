/**
 * Scenario 7, an away or new secondary (issue 12, docs/resync.md), with real processes:
 * 1. initial sync: a brand-new secondary joins a primary whose volume is written all over and whose
 *    journal was collected; beside it `nbdcopy` of the same export to a local file;
 * 2. resync of the same changed bytes (V/100 of 4 KiB random writes while the secondary is away and
 *    tracking) on a volume of V and of 16 V;
 * 3. the resync of 1 GiB changed, the same region, on a volume of 1 GiB and of 16 GiB (issue 12's
 *    figure; bench/scenarios/resync-1g.ts, also `--only resync-1g` alone);
 * 4. `link-failed` on both sites during the initial sync and each resync;
 * 5. the primary's resident memory while the secondary is away (bench/scenarios/resync-memory.ts,
 *    also `--only resync-memory` alone; goal: within its memory.dataBytesMax + 64 MiB), and the
 *    secondary's during the initial sync.
 */
import { spawnSync } from 'node:child_process';
import { rmSync } from 'node:fs';
import { join } from 'node:path';
import { largeVolumeBytes, resyncAfterAway, syncSecondary } from '../lib/catch-up.ts';
import { type BenchContext, gib, mib, sizeLabel } from '../lib/context.ts';
import { runFio, sequentialWrites } from '../lib/fio.ts';
import { benchEnv, loadAverage, runToolAsync, sleep } from '../lib/processes.ts';
import { median } from '../lib/report.ts';
import { type CyclerepOptions, CyclerepSites } from '../lib/servers.ts';
import { resyncOfOneGib } from './resync-1g.ts';
import { memoryWhileAway } from './resync-memory.ts';

export async function resync(context: BenchContext): Promise<void> {
  const volumeBytes = context.quick ? 8 * mib : gib;
  await timed('initial sync', () => initialSync(context, volumeBytes));
  await timed('resync by volume size', () =>
    resyncBySize(context, volumeBytes, largeVolumeBytes(context, volumeBytes)),
  );
  await timed('resync-1g', () => resyncOfOneGib(context));
  await timed('memory while away', () => memoryWhileAway(context));
  context.report.figure('resync.loadAverage1m', loadAverage());
}

async function initialSync(context: BenchContext, volumeBytes: number): Promise<void> {
  const table = context.report.table(
    `Initial sync: a brand-new secondary joins a primary with ${volumeBytes / mib} MiB written`,
    [
      'copy',
      'seconds',
      'MiB/s',
      'x nbdcopy',
      'seconds from link up',
      'of which applying',
      'data sent MiB',
      'link-failed primary / secondary',
      'secondary peak RSS MiB',
    ],
  );
  const options: CyclerepOptions = {
    label: 'initial sync',
    sizeBytes: volumeBytes,
    withSecondary: false,
    cycleMinMs: 200,
  };
  const sites = await CyclerepSites.start(context.dir, options);
  try {
    // Every block written (fio's buffers are not zeroes), then every cycle collected: nothing of it
    // is left in the journal for a secondary that joins later.
    await runFio({ uri: sites.url, ...sequentialWrites, sizeBytes: volumeBytes, seconds: 0, once: true });
    await sleep(1000);
    await sites.waitFor('the journal collected', (s) => s.closed > 0 && s.collected === s.closed);

    const baseline = await nbdcopySeconds(context, sites.url, volumeBytes);
    const baselineRate = baseline === null ? null : volumeBytes / mib / baseline;
    if (baseline === null)
      table.rows.push([
        'nbdcopy to a local file',
        'not measured: nbdcopy missing',
        '',
        '',
        '',
        '',
        '',
        '',
        '',
      ]);
    else
      table.rows.push(['nbdcopy to a local file', baseline, baselineRate as number, 1, '', '', '', '', '']);

    await sites.restartPrimaryWithSecondary({ ...options, withSecondary: true });
    const run = await syncSecondary(sites);
    const peak = (sites.secondary as NonNullable<typeof sites.secondary>).memory().peak;
    // The restarted primary counts from zero: all of it is the initial sync (zero runs not counted).
    const sent = (await sites.status()).secondaries[0]?.shippedBytes ?? 0;
    const rate = volumeBytes / mib / run.seconds;
    table.rows.push([
      'cyclerep initial sync (secondary start to streaming, all applied)',
      run.seconds,
      rate,
      baselineRate === null ? 'n/a' : rate / baselineRate,
      run.linkUpSeconds,
      run.applySeconds,
      sent / mib,
      `${run.failedPrimary} / ${run.failedSecondary}`,
      peak / mib,
    ]);
    table.notes.push(
      `Modes the primary showed for the new secondary: ${run.modes.join(' -> ')}; ${run.copiedBytes / mib} MiB ` +
        `copied; ${run.failedBeforeUp} dials failed before the secondary listened (not counted). The time ` +
        "includes starting the secondary process (about 1 s of Node) and the primary's reconnect delay; " +
        '"from link up" leaves both out; "applying" is the part after the primary showed mode streaming ' +
        '(every chunk stored), until the secondary applied the unit. nbdcopy (its defaults: 4 connections) reads the same primary ' +
        'export into a sparse local file.',
    );
    context.report.figure('resync.initialSync.mibPerSecond', rate);
    context.report.figure('resync.initialSync.secondaryPeakRssMiB', peak / mib);
    context.report.figure('resync.initialSync.linkFailed', run.failedPrimary + run.failedSecondary);
    if (baselineRate !== null) {
      context.report.figure('resync.initialSync.nbdcopyMibPerSecond', baselineRate);
      context.report.figure('resync.initialSync.ratioToNbdcopy', rate / baselineRate);
    }
  } finally {
    await sites.stop();
  }
  context.report.print(table);
}

/** Seconds nbdcopy takes to copy the export into a local file, or null without nbdcopy. */
async function nbdcopySeconds(
  context: BenchContext,
  url: string,
  volumeBytes: number,
): Promise<number | null> {
  if (spawnSync('nbdcopy', ['--version'], { env: benchEnv }).error) return null;
  const target = join(context.dir, 'nbdcopy-target.img');
  spawnSync('truncate', ['-s', String(volumeBytes), target]);
  try {
    return (await runToolAsync('nbdcopy', [url, target])).seconds;
  } finally {
    rmSync(target, { force: true });
  }
}

async function resyncBySize(context: BenchContext, volumeBytes: number, largeBytes: number): Promise<void> {
  const changedBytes = volumeBytes / 100;
  const table = context.report.table(
    `Resync of ${changedBytes / mib} MiB of 4 KiB random writes made while the secondary was away and tracking`,
    [
      'volume',
      'repetition',
      'bitmap MiB at return',
      'resync s',
      's from link up',
      'copied MiB',
      'data sent MiB',
      'link-failed primary / secondary',
    ],
  );
  // On a shared machine one run is noise: each size three times (once in the quick run), the order
  // alternating so that neither size always runs first.
  const repetitions = context.quick ? 1 : 3;
  const linkUpSeconds = new Map<number, number[]>([
    [volumeBytes, []],
    [largeBytes, []],
  ]);
  let failures = 0;
  for (let repetition = 1; repetition <= repetitions; repetition++) {
    const order = repetition % 2 ? [volumeBytes, largeBytes] : [largeBytes, volumeBytes];
    for (const size of order) {
      const label = sizeLabel(size);
      const result = await resyncAfterAway(context, size, {
        rw: 'randwrite',
        blockSize: '4k',
        iodepth: 16,
        sizeBytes: size,
        ioBytes: changedBytes,
      });
      const { run } = result;
      table.rows.push([
        label,
        String(repetition),
        result.bitmapBytes / mib,
        run.seconds,
        run.linkUpSeconds,
        run.copiedBytes / mib,
        result.sentBytes / mib,
        `${run.failedPrimary} / ${run.failedSecondary}`,
      ]);
      table.notes.push(
        `${label}, ${repetition}: modes ${run.modes.join(' -> ')}; ${run.failedBeforeUp} dials failed before the secondary listened (not counted).`,
      );
      linkUpSeconds.get(size)?.push(run.linkUpSeconds);
      failures += run.failedPrimary + run.failedSecondary;
    }
  }
  const small = median(linkUpSeconds.get(volumeBytes) ?? []);
  const large = median(linkUpSeconds.get(largeBytes) ?? []);
  context.report.figure(`resync.${volumeBytes / mib}MiB.linkUpSeconds`, small);
  context.report.figure(`resync.${largeBytes / mib}MiB.linkUpSeconds`, large);
  context.report.figure('resync.largeOverSmall', large / small);
  context.report.figure('resync.linkFailed', failures);
  table.notes.push(
    `Median resync time from link up: ${small.toFixed(2)} s on V, ${large.toFixed(2)} s on ${largeBytes / volumeBytes} V, ` +
      `ratio ${(large / small).toFixed(2)} (issue 12's goal: within 20%). ` +
      'Time runs from starting the secondary process (or from the first status poll, every 50 ms, that ' +
      'shows the link up) to mode streaming with everything applied; ' +
      'tracking.awaySecondsMax 1, granularity 64 KiB (default): the bitmap marks, and the copy reads, ' +
      'whole 64 KiB chunks; what reads as zeroes travels as zero runs, so the data sent is the changed blocks.',
  );
  context.report.print(table);
}

async function timed(part: string, run: () => Promise<void>): Promise<void> {
  const started = performance.now();
  await run();
  const seconds = (performance.now() - started) / 1000;
  process.stdout.write(`(${part}: ${seconds.toFixed(0)} s, load average ${loadAverage().toFixed(1)})\n`);
}
