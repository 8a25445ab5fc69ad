/**
 * Scenario 3, write folding: a hot-spot workload (90% of the writes to 10% of the blocks, fio's
 * zoned distribution) beside uniform random writes, at half the front door's rate, with 1 s and
 * 5 s cycles: bytes shipped to the secondary / bytes written. Within a cycle only the newest
 * version of a block travels, so the ratio falls as cycles get longer or the hot set smaller.
 */
import { type BenchContext, mib } from '../lib/context.ts';
import { runFio } from '../lib/fio.ts';
import { CyclerepSites } from '../lib/servers.ts';

export async function folding(context: BenchContext): Promise<void> {
  const seconds = context.quick ? 3 : 20;
  const sizeBytes = 256 * mib;
  const rate = (context.frontDoorIops ?? 8000) / 2;
  const table = context.report.table(
    `Write folding: 4 KiB random writes over ${sizeBytes / mib} MiB at ${Math.round(rate)} IOPS for ${seconds} s`,
    ['distribution', 'cycle.intervalMinMs', 'written MiB', 'shipped MiB', 'shipped / written'],
  );
  const cases = [
    { name: 'hot spot (90% of writes to 10% of blocks)', distribution: 'zoned:90/10:10/90' },
    { name: 'uniform', distribution: 'random' },
  ];
  for (const cycleMinMs of context.quick ? [1000] : [1000, 5000]) {
    for (const { name, distribution } of cases) {
      const sites = await CyclerepSites.start(context.dir, {
        label: `folding ${cycleMinMs} ${distribution}`,
        sizeBytes,
        withSecondary: true,
        cycleMinMs,
      });
      try {
        const before = await sites.status();
        await runFio({
          uri: sites.url,
          rw: 'randwrite',
          blockSize: '4k',
          iodepth: 16,
          sizeBytes,
          seconds,
          rateIops: rate,
          distribution,
        });
        await sites.idle();
        const after = await sites.status();
        const written = after.writtenBytes - before.writtenBytes;
        const shipped =
          (after.secondaries[0]?.shippedBytes ?? 0) - (before.secondaries[0]?.shippedBytes ?? 0);
        table.rows.push([name, cycleMinMs, written / mib, shipped / mib, shipped / written]);
        context.report.figure(
          `folding.${distribution === 'random' ? 'uniform' : 'hotSpot'}.${cycleMinMs}ms`,
          shipped / written,
        );
      } finally {
        await sites.stop();
      }
    }
  }
  context.report.print(table);
}
