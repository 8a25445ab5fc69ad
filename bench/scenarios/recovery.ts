/**
 * Scenario 4, recovery scales with what changed: the secondary is stopped (the link is cut), X MiB
 * of distinct blocks are written, the secondary comes back, and the clock runs until it has applied
 * the recovery cycle. The same for a small and a large (sparse) volume; beside it the time a full
 * copy of the whole export takes (nbdcopy --no-extents to null:), the cost the journal saves.
 */
import { type BenchContext, gib, mib } from '../lib/context.ts';
import { runFio, sequentialWrites } from '../lib/fio.ts';
import { runToolAsync, sleep } from '../lib/processes.ts';
import { CyclerepSites } from '../lib/servers.ts';

export async function recovery(context: BenchContext): Promise<void> {
  const volumeSizes = context.quick ? [gib, 4 * gib] : [gib, 16 * gib];
  const changed = context.quick ? [16, 64] : [16, 64, 256];
  const table = context.report.table(
    'Recovery after a link cut: X MiB changed while the secondary was away',
    ['volume', 'X MiB', 'recovery s', 'shipped MiB', 'full copy of the volume s'],
  );
  for (const volumeBytes of volumeSizes) {
    const sites = await CyclerepSites.start(context.dir, {
      label: `recovery ${volumeBytes}`,
      sizeBytes: volumeBytes,
      withSecondary: true,
      cycleMinMs: 200,
      journalCapacity: '2GiB',
    });
    try {
      const fullCopy = await runToolAsync('nbdcopy', ['--no-extents', sites.url, 'null:']);
      let offset = 0;
      for (const x of changed) {
        await sites.idle();
        await sites.stopSecondary();
        await sites.waitFor('the primary saw the link go', (s) => s.secondaries[0]?.link !== 'streaming');
        await runFio({
          uri: sites.url,
          ...sequentialWrites,
          sizeBytes: x * mib,
          offsetBytes: offset,
          seconds: 0,
          once: true,
        });
        offset += x * mib;
        // Let the last writes close into a cycle (cycles switch every 200 ms here).
        await sleep(1000);
        const before = await sites.status();
        if ((before.secondaries[0]?.lagBytes ?? 0) < x * mib)
          throw new Error(
            `only ${before.secondaries[0]?.lagBytes} bytes unsynchronized after writing ${x} MiB`,
          );
        const started = performance.now();
        await sites.startSecondary();
        await sites.idle();
        const seconds = (performance.now() - started) / 1000;
        const after = await sites.status();
        const shipped =
          (after.secondaries[0]?.shippedBytes ?? 0) - (before.secondaries[0]?.shippedBytes ?? 0);
        table.rows.push([`${volumeBytes / gib} GiB`, x, seconds, shipped / mib, fullCopy.seconds]);
        context.report.figure(`recovery.${volumeBytes / gib}GiB.${x}MiB.seconds`, seconds);
      }
      context.report.figure(`recovery.${volumeBytes / gib}GiB.fullCopySeconds`, fullCopy.seconds);
    } finally {
      await sites.stop();
    }
  }
  table.notes.push(
    'Recovery time runs from starting the secondary process (about 1 s of it is Node and tsx starting) ' +
      'until it applied everything; the full copy reads every byte of the export through NBD.',
  );
  context.report.print(table);
}
