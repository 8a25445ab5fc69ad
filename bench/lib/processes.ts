/**
 * Child processes for the benchmarks: baselines (nbdkit, qemu-nbd) and cyclerep sites, each with
 * its log in the run's directory, stopped with SIGTERM (SIGKILL after 10 s), and per-process CPU
 * and memory read from /proc.
 */
import { type ChildProcess, spawn, spawnSync } from 'node:child_process';
import { openSync, readFileSync } from 'node:fs';
import { connect, createServer } from 'node:net';
import { loadavg } from 'node:os';

export class Child {
  private exited: Promise<number | null>;

  constructor(
    readonly name: string,
    readonly process: ChildProcess,
  ) {
    this.exited = new Promise((resolve) => process.once('exit', (code) => resolve(code)));
  }

  get pid(): number {
    return this.process.pid as number;
  }

  static spawn(name: string, command: string, args: string[], logPath: string): Child {
    const log = openSync(logPath, 'a');
    const child = spawn(command, args, { stdio: ['ignore', log, log], env: benchEnv });
    child.once('error', (error) => {
      throw new Error(`${command} could not start (is it installed? .ci/run installs it): ${error.message}`);
    });
    return new Child(name, child);
  }

  async stop(): Promise<void> {
    if (this.process.exitCode !== null || this.process.signalCode !== null) return;
    this.process.kill('SIGTERM');
    const killer = setTimeout(() => this.process.kill('SIGKILL'), 10_000);
    await this.exited;
    clearTimeout(killer);
  }

  /** User + system CPU seconds so far (Linux /proc). */
  cpuSeconds(): number {
    const stat = readFileSync(`/proc/${this.pid}/stat`, 'utf8');
    const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    return (Number(fields[11]) + Number(fields[12])) / clockTicks;
  }

  /**
   * Bytes this process caused to be sent to the storage layer so far (/proc/PID/io write_bytes:
   * page-cache pages it dirtied, counted when dirtied). Zero on tmpfs, which has no storage layer.
   */
  storageWriteBytes(): number {
    const io = readFileSync(`/proc/${this.pid}/io`, 'utf8');
    return Number(/^write_bytes:\s+(\d+)$/m.exec(io)?.[1] ?? Number.NaN);
  }

  /** Resident and peak resident memory in bytes. */
  memory(): { rss: number; peak: number } {
    const status = readFileSync(`/proc/${this.pid}/status`, 'utf8');
    const kib = (key: string) => Number(new RegExp(`${key}:\\s+(\\d+) kB`).exec(status)?.[1] ?? 0) * 1024;
    return { rss: kib('VmRSS'), peak: kib('VmHWM') };
  }
}

const clockTicks = Number(spawnSync('getconf', ['CLK_TCK'], { encoding: 'utf8' }).stdout.trim()) || 100;

/** Debian's tools first on PATH (nbdsh needs Debian's python3; mke2fs lives in /usr/sbin). */
export const benchEnv = { ...process.env, PATH: `/usr/bin:/bin:/usr/sbin:/sbin:${process.env.PATH ?? ''}` };

export function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = createServer();
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const address = server.address();
      server.close(() => resolve(typeof address === 'object' && address ? address.port : 0));
    });
  });
}

export function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

/** Resolves once something accepts connections on the port. */
export async function waitForPort(port: number, timeoutMs = 30_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const open = await new Promise<boolean>((resolve) => {
      const socket = connect(port, '127.0.0.1', () => {
        socket.destroy();
        resolve(true);
      });
      socket.once('error', () => resolve(false));
    });
    if (open) return;
    if (Date.now() > deadline) throw new Error(`nothing listens on 127.0.0.1:${port} after ${timeoutMs} ms`);
    await sleep(50);
  }
}

export async function waitUntil(
  what: string,
  condition: () => Promise<boolean>,
  timeoutMs: number,
): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await condition())) {
    if (Date.now() > deadline) throw new Error(`${what}: not within ${timeoutMs} ms`);
    await sleep(50);
  }
}

/** Runs a command to completion; throws with its output when it fails. */
export function runTool(command: string, args: string[], timeoutMs = 600_000): string {
  const result = spawnSync(command, args, {
    encoding: 'utf8',
    env: benchEnv,
    timeout: timeoutMs,
    maxBuffer: 64 * 1024 * 1024,
  });
  if (result.error) throw new Error(`${command} could not run (is it installed?): ${result.error.message}`);
  if (result.status !== 0)
    throw new Error(`${command} ${args.join(' ')} failed:\n${result.stderr}${result.stdout}`);
  return result.stdout;
}

/** The same command, timed, without blocking this process's event loop (status polls go on). */
export function runToolAsync(
  command: string,
  args: string[],
  options: { signal?: AbortSignal } = {},
): Promise<{ seconds: number; output: string }> {
  const started = process.hrtime.bigint();
  return new Promise((resolve, reject) => {
    const child = spawn(command, args, {
      env: benchEnv,
      stdio: ['ignore', 'pipe', 'pipe'],
      signal: options.signal,
    });
    let output = '';
    child.stdout.on('data', (chunk: Buffer) => {
      output += chunk.toString();
    });
    child.stderr.on('data', (chunk: Buffer) => {
      output += chunk.toString();
    });
    child.once('error', (error) => {
      if (error.name === 'AbortError') reject(new Error(`${command} stopped: aborted`, { cause: error }));
      else reject(new Error(`${command} could not run (is it installed?): ${error.message}`));
    });
    child.once('exit', (code, signal) => {
      const seconds = Number(process.hrtime.bigint() - started) / 1e9;
      if (code === 0) resolve({ seconds, output });
      else
        reject(new Error(`${command} ${args.join(' ')} exited ${code ?? signal}:\n${output.slice(-4000)}`));
    });
  });
}

/** The machine's load average over the last minute: the figures move with it on a shared machine. */
export function loadAverage(): number {
  return loadavg()[0] as number;
}
