/**
 * What a role change costs (issue 15, docs/failover.md), on two sites A and B whose configs carry
 * both roles, each a `cyclerep` process as in production, one volume of 16 GiB (256 MiB in a quick
 * run):
 *
 * 1. Switchover under load: fio writes 4 KiB blocks at random at depth 16 to A; after 3 s
 *    `cyclerep switchover` on A. Seconds from the command to its exit 0 (B leads, A follows it),
 *    and the resyncs B started for A afterwards (none: the roles swap at one cycle).
 * 2. Failover: A stopped, B (the primary now) takes 1% of the volume that A never stores, then is
 *    killed -9; A starts and `cyclerep promote --force` makes it the primary: seconds from the
 *    command to its exit 0 (A takes writes).
 * 3. Failback: A takes another 1% (elsewhere); B comes back, is fenced, and `cyclerep rejoin`
 *    makes it A's secondary: seconds from the command to its exit 0 (B's image consistent and
 *    streaming), and the bytes the resync copied, against the baseline of a full copy (the volume)
 *    and the 2% that changed on the two sides.
 */
import { closeSync, mkdirSync, openSync, readFileSync, readSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { type BenchContext, gib, mib, sizeLabel } from '../lib/context.ts';
import { runFio, sequentialWrites } from '../lib/fio.ts';
import {
  Child,
  freePort,
  loadAverage,
  runToolAsync,
  sleep,
  waitForPort,
  waitUntil,
} from '../lib/processes.ts';

const binary = fileURLToPath(new URL('../../bin/cyclerep.js', import.meta.url));
const roleChangeTimeoutSeconds = 600;

interface Site {
  name: 'a' | 'b';
  /** The role its config names: the command it runs with, whatever role its data directory holds. */
  role: 'primary' | 'secondary';
  config: string;
  http: number;
  nbd: number;
  log: string;
  child: Child | null;
}

export async function failover(context: BenchContext): Promise<void> {
  const volumeBytes = context.quick ? 256 * mib : 16 * gib;
  const onePercent = Math.floor(volumeBytes / 100 / mib) * mib;
  const dir = join(context.dir, 'failover');
  mkdirSync(dir, { recursive: true });
  const [a, b] = await twoSites(dir, volumeBytes);
  try {
    const table = context.report.table(
      `Role changes on a volume of ${sizeLabel(volumeBytes)}, two sites on this machine (docs/failover.md)`,
      ['step', 'seconds (command to exit 0)', 'copied MiB', 'baseline: full copy MiB', 'changed MiB'],
    );
    start(a);
    start(b);
    await waitForStatus(a, 'A leads and B streams', (s) => linkOf(s)?.link === 'streaming');

    const switchover = await switchoverUnderLoad(a, b, context.quick ? 6 : 10);
    const resyncsAfter = events(b, 'resync-started').length;
    table.rows.push(['switchover under 4 KiB random writes (depth 16)', switchover, 0, volumeBytes / mib, 0]);
    context.report.figure('failover.switchoverSeconds', switchover);

    // B leads. A goes away; B takes 1% that A never stores; B is lost.
    await stop(a);
    await writeRegion(b, 0, onePercent);
    b.child?.process.kill('SIGKILL');
    await sleep(200);
    b.child = null;
    start(a);
    await waitForStatus(a, 'A back as a secondary', (s) => s.role === 'secondary');
    const promoted = await admin(a, ['promote', '--force']);
    table.rows.push(['failover: promote --force, B killed -9', promoted, 0, 0, 0]);
    context.report.figure('failover.promoteSeconds', promoted);

    // A leads in a new generation and takes another 1%; B comes back, is fenced, rejoins.
    await writeRegion(a, volumeBytes / 2, onePercent);
    start(b);
    await waitForStatus(b, 'B fenced by A', (s) => s.fenced != null, 120_000);
    const resyncsBefore = events(a, 'resync-complete').length;
    const rejoined = await admin(b, ['rejoin']);
    // B says its image is consistent once it applied the unit; A logs the end of the resync then.
    await waitUntil(
      'A logs the end of the resync',
      async () => events(a, 'resync-complete').length > resyncsBefore,
      60_000,
    );
    const copied = events(a, 'resync-complete')
      .slice(resyncsBefore)
      .reduce((sum, event) => sum + Number(event.copiedBytes), 0);
    table.rows.push([
      'failback: rejoin with a delta (1% changed on each side)',
      rejoined,
      copied / mib,
      volumeBytes / mib,
      (2 * onePercent) / mib,
    ]);
    context.report.figure('failover.rejoinSeconds', rejoined);
    context.report.figure('failover.rejoinCopiedOverVolume', copied / volumeBytes);
    context.report.figure('failover.rejoinCopiedOverChanged', copied / (2 * onePercent));
    table.notes.push(
      `Switchover: B started ${resyncsAfter} resync(s) for A afterwards (0: no resync). Seconds include ` +
        'the command starting (a Node.js process, about 0.3 s). Rejoin copied ' +
        `${((100 * copied) / volumeBytes).toFixed(2)}% of the volume (a full copy is the baseline: ` +
        `${(copied / volumeBytes).toFixed(4)} of it), ${(copied / (2 * onePercent)).toFixed(2)} x the bytes changed on ` +
        "the two sides: B's own 1% (its divergence, whole 64 KiB tracking chunks) is copied, while A's " +
        '1% written after the promotion travels as the ordinary cycles A still holds in its journal. ' +
        `Load average (1 min) at the end: ${loadAverage().toFixed(1)}.`,
    );
    // A's own 1% reaches B as ordinary cycles after the rejoin's unit: compare once B has them all.
    await waitForStatus(a, 'B caught up with A', caughtUp, 600_000);
    await stop(a);
    await stop(b);
    table.notes.push(`After the rejoin the two images are ${sameImages(dir) ? 'identical' : 'DIFFERENT'}.`);
    context.report.print(table);
  } finally {
    for (const site of [a, b]) await stop(site);
  }
}

/** A and B, each with a config of both roles: A starts as the primary, B as its secondary. */
async function twoSites(dir: string, volumeBytes: number): Promise<[Site, Site]> {
  const [linkA, linkB] = [await freePort(), await freePort()];
  const site = async (
    name: 'a' | 'b',
    role: 'primary' | 'secondary',
    listen: number,
    peer: string,
    peerPort: number,
  ) => {
    const [http, nbd] = [await freePort(), await freePort()];
    const config = join(dir, `${name}.yaml`);
    writeFileSync(
      config,
      [
        'group: bench-failover',
        `role: ${role}`,
        `name: ${name}`,
        `dataDir: ${join(dir, name)}`,
        // A secondary takes its volumes from its primary; promoted, it keeps them.
        ...(role === 'primary' ? ['volumes:', `  - { name: vol0, size: ${volumeBytes} }`] : []),
        `listen: 127.0.0.1:${listen}`,
        'secondaries:',
        `  - { name: ${peer}, address: 127.0.0.1:${peerPort}, connections: 2 }`,
        'cycle: { intervalMinMs: 200, queuedMax: 4 }',
        'journal: { capacity: 4GiB, segmentSize: 64MiB }',
        `nbd: { listen: 127.0.0.1:${nbd} }`,
        `http: { listen: 127.0.0.1:${http} }`,
      ].join('\n'),
    );
    return { name, role, config, http, nbd, log: join(dir, `${name}.log`), child: null } satisfies Site;
  };
  return [await site('a', 'primary', linkA, 'b', linkB), await site('b', 'secondary', linkB, 'a', linkA)];
}

function start(site: Site): void {
  site.child = Child.spawn(
    `cyclerep ${site.name}`,
    process.execPath,
    [binary, site.role, '--config', site.config],
    site.log,
  );
}

async function stop(site: Site): Promise<void> {
  await site.child?.stop();
  site.child = null;
}

/** fio writes at random to A; the switchover starts 3 s in; fio's writes are refused from then on. */
async function switchoverUnderLoad(a: Site, b: Site, seconds: number): Promise<number> {
  await waitForPort(a.nbd);
  const load = runFio({
    uri: `nbd://127.0.0.1:${a.nbd}/vol0`,
    rw: 'randwrite',
    blockSize: '4k',
    iodepth: 16,
    seconds,
    sizeBytes: 256 * mib,
  }).catch(() => null);
  await sleep(3000);
  const taken = await admin(a, ['switchover']);
  await load;
  await waitForStatus(b, 'B leads', (s) => s.role === 'primary');
  return taken;
}

async function writeRegion(site: Site, offsetBytes: number, sizeBytes: number): Promise<void> {
  await waitForPort(site.nbd);
  await runFio({
    uri: `nbd://127.0.0.1:${site.nbd}/vol0`,
    ...sequentialWrites,
    seconds: 0,
    once: true,
    offsetBytes,
    sizeBytes,
  });
}

/** Runs `cyclerep VERB ... --url` on the site; the seconds until it exited 0. */
async function admin(site: Site, args: string[]): Promise<number> {
  const [verb, ...flags] = args;
  const { seconds } = await runToolAsync(process.execPath, [
    binary,
    verb as string,
    ...flags,
    '--timeout-seconds',
    String(roleChangeTimeoutSeconds),
    '--url',
    `http://127.0.0.1:${site.http}`,
  ]);
  return seconds;
}

type Status = Record<string, unknown>;

/** The primary's secondary stored and applied every cycle the primary closed. */
function caughtUp(status: Status): boolean {
  const link = (
    status.secondaries as { lagBytes: number; stored: number; applied: number }[] | undefined
  )?.[0];
  return (
    link !== undefined && link.lagBytes === 0 && link.applied === link.stored && link.stored === status.closed
  );
}

function linkOf(status: Status): { link?: string } | undefined {
  return (status.secondaries as { link?: string }[] | undefined)?.[0];
}

async function waitForStatus(
  site: Site,
  what: string,
  condition: (status: Status) => boolean,
  timeoutMs = 60_000,
): Promise<void> {
  await waitUntil(
    what,
    async () => {
      try {
        const response = await fetch(`http://127.0.0.1:${site.http}/status`);
        return condition((await response.json()) as Status);
      } catch {
        return false;
      }
    },
    timeoutMs,
  );
}

/** Whether A's and B's volume files hold the same bytes (read in 64 MiB pieces). */
function sameImages(dir: string): boolean {
  const [fa, fb] = ['a', 'b'].map((name) => openSync(join(dir, name, 'volumes', 'vol0.img'), 'r')) as [
    number,
    number,
  ];
  try {
    const [ba, bb] = [Buffer.alloc(64 * mib), Buffer.alloc(64 * mib)];
    for (let position = 0; ; position += ba.length) {
      const [ra, rb] = [readSync(fa, ba, 0, ba.length, position), readSync(fb, bb, 0, bb.length, position)];
      if (ra !== rb || Buffer.compare(ba.subarray(0, ra), bb.subarray(0, rb)) !== 0) return false;
      if (ra === 0) return true;
    }
  } finally {
    closeSync(fa);
    closeSync(fb);
  }
}

function events(site: Site, event: string): Record<string, unknown>[] {
  return readFileSync(site.log, 'utf8')
    .split('\n')
    .filter((line) => line.startsWith('{'))
    .map((line) => JSON.parse(line) as Record<string, unknown>)
    .filter((entry) => entry.event === event);
}
