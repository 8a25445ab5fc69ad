/**
 * Scenario 5, memory: resident memory of the primary process with 0, 1 and 4 GiB of unsynchronized
 * data in its journal (the secondary stopped while 256 KiB writes fill distinct blocks).
 */
import { type BenchContext, gib, mib } from '../lib/context.ts';
import { runFio, sequentialWrites } from '../lib/fio.ts';
import { sleep } from '../lib/processes.ts';
import { CyclerepSites } from '../lib/servers.ts';

export async function memory(context: BenchContext): Promise<void> {
  const points = context.quick ? [0, 256 * mib] : [0, gib, 4 * gib];
  const volumeBytes = Math.max(gib, points[points.length - 1] as number);
  const table = context.report.table('Primary memory with unsynchronized data in the journal', [
    'unsynchronized',
    'RSS MiB',
    'peak RSS MiB',
    'journal on disk MiB',
  ]);
  const sites = await CyclerepSites.start(context.dir, {
    label: 'memory',
    sizeBytes: volumeBytes,
    withSecondary: true,
    cycleMinMs: 200,
    journalCapacity: `${Math.ceil(volumeBytes / gib) + 2}GiB`,
  });
  try {
    await sites.stopSecondary();
    let written = 0;
    for (const point of points) {
      if (point > written) {
        await runFio({
          uri: sites.url,
          ...sequentialWrites,
          sizeBytes: point - written,
          offsetBytes: written,
          seconds: 0,
          once: true,
        });
        written = point;
      }
      // Let write-backs, cycle switches and garbage collection settle before reading memory.
      await sleep(2000);
      const status = await sites.status();
      const usage = (sites.primary as NonNullable<typeof sites.primary>).memory();
      table.rows.push([
        `${point / mib} MiB`,
        usage.rss / mib,
        usage.peak / mib,
        status.journalDiskBytes / mib,
      ]);
      context.report.figure(`memory.${point / mib}MiB.rssMiB`, usage.rss / mib);
    }
  } finally {
    await sites.stop();
  }
  context.report.print(table);
}
