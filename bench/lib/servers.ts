/**
 * What the benchmarks serve NBD with: the baselines (nbdkit's file plugin, qemu-nbd) over a raw
 * image file, and cyclerep (a primary, with or without a secondary on the same machine, each a
 * process of its own as in production). Every server exports the volume as "vol0".
 */
import { spawnSync } from 'node:child_process';
import { closeSync, existsSync, mkdirSync, openSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { PrimaryNodeStatus } from '../../src/node/primary-node.ts';
import { ensureCa, makeSiteCertificate } from '../../src/ops/certs.ts';
import { Child, freePort, waitForPort, waitUntil } from './processes.ts';
import { Shaper } from './shaper.ts';

const binary = fileURLToPath(new URL('../../bin/cyclerep.js', import.meta.url));

export interface NbdTarget {
  label: string;
  url: string;
  /** The processes that do the serving (for CPU and memory). */
  processes: Child[];
  stop(): Promise<void>;
}

function sparseFile(path: string, sizeBytes: number): void {
  rmSync(path, { force: true });
  const fd = openSync(path, 'w');
  closeSync(fd);
  spawnSync('truncate', ['-s', String(sizeBytes), path]);
}

export async function startNbdkit(dir: string, sizeBytes: number): Promise<NbdTarget> {
  const image = join(dir, 'nbdkit.img');
  sparseFile(image, sizeBytes);
  const port = await freePort();
  const child = Child.spawn(
    'nbdkit',
    'nbdkit',
    ['--foreground', '--exit-with-parent', '--ipaddr', '127.0.0.1', '--port', String(port), 'file', image],
    join(dir, 'nbdkit.log'),
  );
  await waitForPort(port);
  return {
    label: 'nbdkit file',
    url: `nbd://127.0.0.1:${port}/vol0`,
    processes: [child],
    stop: async () => {
      await child.stop();
      rmSync(image, { force: true });
    },
  };
}

export async function startQemuNbd(dir: string, sizeBytes: number): Promise<NbdTarget> {
  const image = join(dir, 'qemu-nbd.img');
  sparseFile(image, sizeBytes);
  const port = await freePort();
  const child = Child.spawn(
    'qemu-nbd',
    'qemu-nbd',
    [
      '--format=raw',
      '--export-name=vol0',
      '--bind=127.0.0.1',
      `--port=${port}`,
      '--persistent',
      '--shared=16',
      image,
    ],
    join(dir, 'qemu-nbd.log'),
  );
  await waitForPort(port);
  return {
    label: 'qemu-nbd',
    url: `nbd://127.0.0.1:${port}/vol0`,
    processes: [child],
    stop: async () => {
      await child.stop();
      rmSync(image, { force: true });
    },
  };
}

export interface CyclerepOptions {
  label: string;
  sizeBytes: number;
  ack?: 'immediate' | 'cycle';
  cycleMinMs?: number;
  withSecondary: boolean;
  journalCapacity?: string;
  /** Shape the site link to this many bytes per second through a proxy. */
  linkBytesPerSecond?: number;
  connections?: number;
  /** Run the site link over TLS with certificates from this directory (made with cyclerep certs). */
  tlsDir?: string;
  /** The primary's `tracking` section as a YAML flow mapping, e.g. `{ awaySecondsMax: 1 }`. */
  tracking?: string;
  /** The primary's `pacing` section as a YAML flow mapping, e.g. `{ lagSecondsMax: 5 }`. */
  pacing?: string;
  /** The secondary link's `compression`. */
  compression?: 'brotli';
  /** With `withSecondary`, whether the secondary starts now (default) or waits for startSecondary(). */
  secondaryStartsNow?: boolean;
}

/** A primary (and maybe a secondary), as `cyclerep primary` / `cyclerep secondary` processes. */
export class CyclerepSites implements NbdTarget {
  readonly processes: Child[] = [];
  url = '';
  primary: Child | null = null;
  secondary: Child | null = null;
  shaper: Shaper | null = null;
  private primaryHttp = 0;
  private secondaryConfig = '';
  private primaryConfig = '';
  private nbdPort = 0;
  private linkPort = 0;

  private constructor(
    readonly label: string,
    private readonly dir: string,
  ) {}

  static async start(parent: string, options: CyclerepOptions): Promise<CyclerepSites> {
    const dir = join(parent, options.label.replace(/[^a-z0-9]+/gi, '-'));
    rmSync(dir, { recursive: true, force: true });
    mkdirSync(dir, { recursive: true });
    const sites = new CyclerepSites(options.label, dir);
    const [nbdPort, linkPort, secondaryHttp] = [await freePort(), await freePort(), await freePort()];
    sites.nbdPort = nbdPort;
    sites.linkPort = linkPort;
    sites.primaryHttp = await freePort();
    sites.secondaryConfig = join(dir, 'dr1.yaml');
    sites.primaryConfig = join(dir, 'primary.yaml');
    writeFileSync(
      sites.secondaryConfig,
      [
        'group: bench',
        'role: secondary',
        'name: dr1',
        `dataDir: ${join(dir, 'dr1')}`,
        `listen: 127.0.0.1:${linkPort}`,
        `http: { listen: 127.0.0.1:${secondaryHttp} }`,
        options.tlsDir ? tlsSection(options.tlsDir, 'dr1', 'primary') : '',
      ].join('\n'),
    );
    let secondaryAddress = `127.0.0.1:${linkPort}`;
    const secondaryStartsNow = options.withSecondary && (options.secondaryStartsNow ?? true);
    if (secondaryStartsNow) await sites.startSecondary();
    if (options.withSecondary && options.linkBytesPerSecond) {
      sites.shaper = await Shaper.start(linkPort, options.linkBytesPerSecond);
      secondaryAddress = `127.0.0.1:${sites.shaper.port}`;
    }
    sites.writePrimaryConfig(options, options.withSecondary ? secondaryAddress : null);
    await sites.startPrimary();
    if (secondaryStartsNow)
      await sites.waitFor('the link streams', (s) => s.secondaries[0]?.link === 'streaming');
    return sites;
  }

  private writePrimaryConfig(options: CyclerepOptions, secondaryAddress: string | null): void {
    writeFileSync(
      this.primaryConfig,
      [
        'group: bench',
        'role: primary',
        `dataDir: ${join(this.dir, 'primary')}`,
        'volumes:',
        `  - { name: vol0, size: ${options.sizeBytes} }`,
        `cycle: { intervalMinMs: ${options.cycleMinMs ?? 1000}, queuedMax: 4 }`,
        `ack: ${options.ack ?? 'immediate'}`,
        `journal: { capacity: ${options.journalCapacity ?? '4GiB'}, segmentSize: 64MiB }`,
        `nbd: { listen: 127.0.0.1:${this.nbdPort} }`,
        `http: { listen: 127.0.0.1:${this.primaryHttp} }`,
        options.tracking ? `tracking: ${options.tracking}` : '',
        options.pacing ? `pacing: ${options.pacing}` : '',
        ...(secondaryAddress
          ? [
              'secondaries:',
              `  - { name: dr1, address: ${secondaryAddress}, connections: ${options.connections ?? 2}${options.compression ? `, compression: ${options.compression}` : ''} }`,
            ]
          : []),
        options.tlsDir ? tlsSection(options.tlsDir, 'primary', 'dr1') : '',
      ].join('\n'),
    );
  }

  private async startPrimary(): Promise<void> {
    this.primary = Child.spawn(
      'cyclerep primary',
      process.execPath,
      [binary, 'primary', '--config', this.primaryConfig],
      join(this.dir, 'primary.log'),
    );
    this.processes.unshift(this.primary);
    await waitForPort(this.nbdPort);
    this.url = `nbd://127.0.0.1:${this.nbdPort}/vol0`;
  }

  /**
   * Stops the primary and starts it again on the same data with dr1 listed (not started): how a
   * secondary that never held anything joins a primary that already holds data.
   */
  async restartPrimaryWithSecondary(options: CyclerepOptions): Promise<void> {
    const primary = this.primary;
    if (primary) {
      await primary.stop();
      this.processes.splice(this.processes.indexOf(primary), 1);
    }
    this.writePrimaryConfig(options, `127.0.0.1:${this.linkPort}`);
    await this.startPrimary();
  }

  /** Each site's log so far (JSON logs, one object a line); lines that are not JSON are left out. */
  logs(): { primary: LogLine[]; secondary: LogLine[] } {
    const read = (file: string): LogLine[] => {
      const path = join(this.dir, file);
      if (!existsSync(path)) return [];
      return readFileSync(path, 'utf8')
        .split('\n')
        .filter((line) => line.startsWith('{'))
        .map((line) => JSON.parse(line) as LogLine);
    };
    return { primary: read('primary.log'), secondary: read('dr1.log') };
  }

  async startSecondary(): Promise<void> {
    this.secondary = Child.spawn(
      'cyclerep secondary',
      process.execPath,
      [binary, 'secondary', '--config', this.secondaryConfig],
      join(this.dir, 'dr1.log'),
    );
    this.processes.push(this.secondary);
  }

  async stopSecondary(): Promise<void> {
    const secondary = this.secondary;
    if (!secondary) return;
    await secondary.stop();
    this.processes.splice(this.processes.indexOf(secondary), 1);
    this.secondary = null;
  }

  async status(): Promise<PrimaryStatus> {
    const response = await fetch(`http://127.0.0.1:${this.primaryHttp}/status`);
    return (await response.json()) as PrimaryStatus;
  }

  async waitFor(
    what: string,
    condition: (status: PrimaryStatus) => boolean,
    timeoutMs = 120_000,
  ): Promise<void> {
    await waitUntil(
      what,
      async () => {
        try {
          return condition(await this.status());
        } catch {
          return false;
        }
      },
      timeoutMs,
    );
  }

  /** Until the secondary stored and applied everything the primary closed, and nothing is open. */
  async idle(timeoutMs = 600_000): Promise<void> {
    await this.waitFor(
      'the secondary caught up',
      (s) =>
        s.secondaries.every(
          (link) => link.lagBytes === 0 && link.applied === link.stored && link.stored === s.closed,
        ),
      timeoutMs,
    );
  }

  async stop(): Promise<void> {
    await this.shaper?.stop();
    for (const child of [...this.processes].reverse()) await child.stop();
    rmSync(this.dir, { recursive: true, force: true });
  }
}

function tlsSection(directory: string, site: string, peer: string): string {
  const { cert, key } = makeSiteCertificate(directory, site);
  return `tls: { cert: ${cert}, key: ${key}, ca: ${ensureCa(directory)}, peers: [${peer}] }`;
}

export interface LogLine {
  time: string;
  level: string;
  event: string;
  [field: string]: unknown;
}

/** What the bench reads from a primary's /status: the node's own status type. */
export type PrimaryStatus = PrimaryNodeStatus;
