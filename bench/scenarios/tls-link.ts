/**
 * What TLS costs on the site link: the same 256 KiB sequential writes replicated to a local
 * secondary over plain TCP and over TLS 1.3 (mutual authentication, AES-GCM as negotiated), with
 * the CPU seconds each side spent per GiB replicated and the time until the secondary caught up.
 */
import { join } from 'node:path';
import { type BenchContext, gib, mib } from '../lib/context.ts';
import { runFio, sequentialWrites } from '../lib/fio.ts';
import { CyclerepSites } from '../lib/servers.ts';

export async function tlsLink(context: BenchContext): Promise<void> {
  const seconds = context.quick ? 3 : 15;
  const sizeBytes = context.quick ? 256 * mib : gib;
  const repetitions = context.quick ? 1 : 2;
  const table = context.report.table(
    `Site link over plain TCP and over TLS 1.3: 256 KiB sequential writes at depth 8 for ${seconds} s, then until caught up`,
    [
      'link',
      'written MiB/s',
      'replicated MiB/s (until caught up)',
      'CPU s/GiB primary',
      'CPU s/GiB secondary',
    ],
    [`Median of ${repetitions}; both sites on this machine, so the disk (four writes per byte) limits both.`],
  );
  const results = new Map<string, number[][]>();
  for (let repetition = 0; repetition < repetitions; repetition++) {
    for (const mode of repetition % 2 === 0 ? ['plain TCP', 'TLS 1.3'] : ['TLS 1.3', 'plain TCP']) {
      const sites = await CyclerepSites.start(context.dir, {
        label: `link ${mode}`,
        sizeBytes,
        withSecondary: true,
        tlsDir: mode === 'TLS 1.3' ? join(context.dir, 'pki') : undefined,
      });
      try {
        const before = await sites.status();
        const cpu = sites.processes.map((child) => child.cpuSeconds());
        const started = performance.now();
        const fio = await runFio({
          uri: sites.url,
          ...sequentialWrites,
          sizeBytes,
          seconds,
        });
        await sites.idle();
        const elapsed = (performance.now() - started) / 1000;
        const after = await sites.status();
        const shipped =
          (after.secondaries[0]?.shippedBytes ?? 0) - (before.secondaries[0]?.shippedBytes ?? 0);
        const spent = sites.processes.map((child, index) => child.cpuSeconds() - (cpu[index] as number));
        const row = [
          fio.mibPerSecond,
          shipped / mib / elapsed,
          (spent[0] ?? 0) / (shipped / gib),
          (spent[1] ?? 0) / (shipped / gib),
        ];
        results.set(mode, [...(results.get(mode) ?? []), row]);
      } finally {
        await sites.stop();
      }
    }
  }
  for (const [mode, rows] of results) {
    const medians = [0, 1, 2, 3].map((column) => {
      const values = rows.map((row) => row[column] as number).sort((a, b) => a - b);
      return values[Math.floor(values.length / 2)] as number;
    });
    table.rows.push([mode, ...medians]);
    context.report.figure(
      `tlsLink.${mode === 'TLS 1.3' ? 'tls' : 'plain'}.replicatedMiBps`,
      medians[1] as number,
    );
  }
  context.report.print(table);
}
