/** Real processes, real files, real sockets on 127.0.0.1: the pieces the integration tests share. */

import { type ChildProcess, spawn, spawnSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after } from 'node:test';
import { fileURLToPath } from 'node:url';
import { type CutCheck, checkCut, layoutRegions } from '../../src/workload/blocks.ts';

export const root = fileURLToPath(new URL('../..', import.meta.url));
const binary = join(root, 'bin/cyclerep.js');
const loadScript = join(root, 'test/integration/load-primary.ts');
export const blockBytes = 4096;
export const volumeSizes = [8 * 1024 * 1024, 4 * 1024 * 1024];
/** Must match load-primary.ts. */
export const regions = layoutRegions(
  4,
  volumeSizes.map((size) => size / blockBytes),
  256,
);

/**
 * A port to listen on, below Linux's ephemeral range (32768-60999): a port from listen(0) is in that
 * range, and between its release and the site's listen an outgoing connection of any process may
 * take it as its local port (EADDRINUSE). Each port is handed out once per test process.
 */
const portsHandedOut = new Set<number>();
const portRange = { first: 20000, count: 12000 };

export async function freePort(): Promise<number> {
  for (let attempt = 0; attempt < 200; attempt++) {
    const port = portRange.first + Math.floor(Math.random() * portRange.count);
    if (portsHandedOut.has(port)) continue;
    if (await canListen(port)) {
      portsHandedOut.add(port);
      return port;
    }
  }
  throw new Error(`no free port in ${portRange.first}..${portRange.first + portRange.count - 1}`);
}

function canListen(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const server = createServer();
    server.once('error', () => resolve(false));
    server.listen(port, '127.0.0.1', () => server.close(() => resolve(true)));
  });
}

/**
 * A Workspace maker for one test file: every workspace it makes is cleaned up (processes stopped,
 * files removed) after the file's tests, whatever they did.
 */
export function workspacesCleanedAfterTests(): () => Workspace {
  const made: Workspace[] = [];
  after(async () => {
    for (const workspace of made) await workspace.cleanup();
  });
  return () => {
    const workspace = new Workspace();
    made.push(workspace);
    return workspace;
  };
}

export class Workspace {
  readonly dir = mkdtempSync(join(tmpdir(), 'cyclerep-it-'));
  private readonly processes = new Set<Site>();

  path(...parts: string[]): string {
    return join(this.dir, ...parts);
  }

  async primaryConfig(options: {
    secondaries: { name: string; port: number; compression?: 'brotli' }[];
    group?: string;
    volumes?: number[];
    extra?: string;
    connections?: number;
    /** The `cycle` section, `{ intervalMinMs: 100, queuedMax: 4 }` unless given. */
    cycle?: string;
    /** More keys of the `http` section, e.g. `requestTimeoutMs: 500`. */
    http?: string;
    /** The `journal` section, `{ capacity: 256MiB, segmentSize: 8MiB }` unless given. */
    journal?: string;
  }): Promise<{ path: string; httpPort: number }> {
    const httpPort = await freePort();
    const sizes = options.volumes ?? volumeSizes;
    const path = this.path('primary.yaml');
    writeFileSync(
      path,
      [
        `group: ${options.group ?? 'it'}`,
        'role: primary',
        `dataDir: ${this.path('primary')}`,
        'blockSize: 4KiB',
        'volumes:',
        ...sizes.map((size, index) => `  - { name: vol${index}, size: ${size} }`),
        `cycle: ${options.cycle ?? '{ intervalMinMs: 100, queuedMax: 4 }'}`,
        `journal: ${options.journal ?? '{ capacity: 256MiB, segmentSize: 8MiB }'}`,
        'link: { heartbeatMs: 100, timeoutMs: 600, reconnectMinMs: 50, reconnectMaxMs: 400 }',
        `http: { listen: 127.0.0.1:${httpPort}${options.http ? `, ${options.http}` : ''} }`,
        'secondaries:',
        ...options.secondaries.map(
          (secondary) =>
            `  - { name: ${secondary.name}, address: 127.0.0.1:${secondary.port}, connections: ${options.connections ?? 2}${secondary.compression ? `, compression: ${secondary.compression}` : ''} }`,
        ),
        options.extra ?? '',
      ].join('\n'),
    );
    return { path, httpPort };
  }

  async secondaryConfig(
    name: string,
    options: { group?: string; volumes?: number[]; extra?: string } = {},
  ): Promise<{ path: string; port: number; httpPort: number }> {
    const port = await freePort();
    const httpPort = await freePort();
    const path = this.path(`${name}.yaml`);
    const volumes = options.volumes
      ? ['volumes:', ...options.volumes.map((size, index) => `  - { name: vol${index}, size: ${size} }`)]
      : [];
    writeFileSync(
      path,
      [
        `group: ${options.group ?? 'it'}`,
        'role: secondary',
        `name: ${name}`,
        `dataDir: ${this.path(name)}`,
        `listen: 127.0.0.1:${port}`,
        `http: { listen: 127.0.0.1:${httpPort} }`,
        'link: { heartbeatMs: 100, timeoutMs: 600, reconnectMinMs: 50, reconnectMaxMs: 400 }',
        ...volumes,
        options.extra ?? '',
      ].join('\n'),
    );
    return { path, port, httpPort };
  }

  startSecondary(config: string): Site {
    return this.track(new Site(process.execPath, [binary, 'secondary', '--config', config]));
  }

  /** dr1 started and listening, then a primary whose sources write under load and replicate to it. */
  async startLoadedPair() {
    const secondary = await this.secondaryConfig('dr1');
    const primary = await this.primaryConfig({ secondaries: [{ name: 'dr1', port: secondary.port }] });
    const dr1 = this.startSecondary(secondary.path);
    await dr1.waitForEvent('secondary-started');
    const load = this.startLoadPrimary(primary.path);
    return { secondary, primary, dr1, load };
  }

  startLoadPrimary(config: string, env: Record<string, string> = {}): Site {
    return this.track(new Site(process.execPath, ['--import', 'tsx', loadScript, config], env));
  }

  startPrimary(config: string): Site {
    return this.track(new Site(process.execPath, [binary, 'primary', '--config', config]));
  }

  private track(site: Site): Site {
    this.processes.add(site);
    site.exited.then(() => this.processes.delete(site));
    return site;
  }

  /** Reads a site's image files (the site must be stopped or idle). */
  image(site: string): Buffer[] {
    return volumeSizes.map((_, index) => readFileSync(this.path(site, 'volumes', `vol${index}.img`)));
  }

  checkCut(site: string): CutCheck {
    return checkCut(this.image(site), regions, blockBytes);
  }

  /** Throws unless the site's image files equal the primary's, byte for byte, and form a consistent cut. */
  assertReplica(site: string): void {
    const primary = this.image('primary');
    this.image(site).forEach((bytes, index) => {
      if (Buffer.compare(bytes, primary[index] as Buffer) !== 0)
        throw new Error(`${site} vol${index} differs from the primary`);
    });
    const cut = this.checkCut(site);
    if (!cut.consistent)
      throw new Error(`${site} is not a consistent cut:\n${cut.problems.slice(0, 5).join('\n')}`);
  }

  recover(site: string): { status: number | null; output: string } {
    const result = spawnSync(process.execPath, [binary, 'recover', '--data-dir', this.path(site)], {
      encoding: 'utf8',
      timeout: 60_000,
    });
    return { status: result.status, output: `${result.stdout}${result.stderr}` };
  }

  async cleanup(): Promise<void> {
    for (const site of this.processes) site.kill('SIGKILL');
    await Promise.all([...this.processes].map((site) => site.exited));
    // CYCLEREP_KEEP=1 leaves the files of a run behind for a post-mortem.
    if (process.env.CYCLEREP_KEEP !== '1') rmSync(this.dir, { recursive: true, force: true });
  }
}

export class Site {
  readonly process: ChildProcess;
  readonly exited: Promise<number | null>;
  stdout = '';
  stderr = '';

  constructor(command: string, args: string[], env: Record<string, string> = {}) {
    this.process = spawn(command, args, {
      cwd: root,
      stdio: ['ignore', 'pipe', 'pipe'],
      env: { ...process.env, ...env },
    });
    this.process.stdout?.on('data', (chunk: Buffer) => {
      this.stdout += chunk.toString();
    });
    this.process.stderr?.on('data', (chunk: Buffer) => {
      this.stderr += chunk.toString();
    });
    // 'close', not 'exit': only then has everything the process wrote to stderr been read.
    this.exited = new Promise((resolve) => this.process.once('close', (code) => resolve(code)));
  }

  kill(signal: NodeJS.Signals): void {
    if (this.process.exitCode === null && this.process.signalCode === null) this.process.kill(signal);
  }

  /** The process's peak resident memory so far in MiB (VmHWM), for the memory figures in test output. */
  peakResidentMib(): number {
    const status = readFileSync(`/proc/${this.process.pid}/status`, 'utf8');
    const kib = Number(/^VmHWM:\s+(\d+) kB$/m.exec(status)?.[1] ?? Number.NaN);
    return Math.round(kib / 1024);
  }

  async stop(): Promise<number | null> {
    this.kill('SIGTERM');
    return this.exited;
  }

  /** Log events (JSON lines on stderr) with the given name. */
  events(name: string): Record<string, unknown>[] {
    return this.stderr
      .split('\n')
      .filter((line) => line.startsWith('{'))
      .map((line) => JSON.parse(line) as Record<string, unknown>)
      .filter((entry) => entry.event === name);
  }

  async waitForEvent(name: string, timeoutMs = 15_000): Promise<Record<string, unknown>> {
    const [first] = await this.waitForEvents(name, 1, timeoutMs);
    return first as Record<string, unknown>;
  }

  /** Waits until `count` events of the name were logged (a log line may follow the frame it reports). */
  async waitForEvents(name: string, count: number, timeoutMs = 15_000): Promise<Record<string, unknown>[]> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const found = this.events(name);
      if (found.length >= count) return found;
      if (Date.now() > deadline)
        throw new Error(
          `${found.length} of ${count} ${name} events within ${timeoutMs} ms; stderr:\n${this.stderr.slice(-3000)}`,
        );
      await sleep(20);
    }
  }

  async waitForOutput(text: string, timeoutMs = 15_000): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    while (!this.stdout.includes(text)) {
      if (Date.now() > deadline)
        throw new Error(`no "${text}" within ${timeoutMs} ms; stderr:\n${this.stderr.slice(-3000)}`);
      await sleep(20);
    }
  }

  async waitForWrites(count: number, timeoutMs = 15_000): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const lines = this.stdout.split('\n').filter((line) => line.includes('"writes"'));
      const last = lines.at(-1);
      if (last && (JSON.parse(last) as { writes: number }).writes >= count) return;
      if (Date.now() > deadline)
        throw new Error(
          `fewer than ${count} writes within ${timeoutMs} ms; stderr:\n${this.stderr.slice(-3000)}`,
        );
      await sleep(20);
    }
  }
}

export async function status(httpPort: number): Promise<Record<string, unknown>> {
  const response = await fetch(`http://127.0.0.1:${httpPort}/status`);
  return (await response.json()) as Record<string, unknown>;
}

export async function waitForStatus(
  httpPort: number,
  condition: (status: Record<string, unknown>) => boolean,
  timeoutMs = 20_000,
): Promise<Record<string, unknown>> {
  const deadline = Date.now() + timeoutMs;
  let last: Record<string, unknown> = {};
  for (;;) {
    try {
      last = await status(httpPort);
      if (condition(last)) return last;
    } catch {
      // not listening yet
    }
    if (Date.now() > deadline)
      throw new Error(`status condition not met within ${timeoutMs} ms: ${JSON.stringify(last)}`);
    await sleep(25);
  }
}

export function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

export function ensureDir(path: string): void {
  mkdirSync(path, { recursive: true });
}

/** Runs a tool without blocking this process (the sites' output keeps being read meanwhile). */
/** `cyclerep ARGS` from the built binary, run without blocking this process (its children's logs keep flowing). */
export function runCyclerep(args: string[]): Promise<{ status: number | null; output: string }> {
  return runTool(process.execPath, [binary, ...args]);
}

export function runTool(command: string, args: string[]): Promise<{ status: number | null; output: string }> {
  return new Promise((resolve) => {
    const child = spawn(command, args, { stdio: ['ignore', 'pipe', 'pipe'] });
    let output = '';
    child.stdout.on('data', (chunk: Buffer) => {
      output += chunk.toString();
    });
    child.stderr.on('data', (chunk: Buffer) => {
      output += chunk.toString();
    });
    child.on('close', (status) => resolve({ status, output }));
  });
}

/**
 * fio through its nbd engine against the export vol0 on 127.0.0.1:`nbdPort`, each option given as
 * `--name=value`; fails the test with fio's output unless it exits 0.
 */
export async function fioOverNbd(nbdPort: number, options: Record<string, string | number>): Promise<void> {
  const args = Object.entries(options).map(([name, value]) => `--${name}=${value}`);
  const fio = await runTool('fio', ['--ioengine=nbd', `--uri=nbd://127.0.0.1:${nbdPort}/vol0`, ...args]);
  if (fio.status !== 0) throw new Error(`fio exited ${fio.status}: ${fio.output}`);
}
