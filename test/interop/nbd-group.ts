/**
 * For the interop tests: a primary and a secondary, each with an NBD listener, as real processes on
 * 127.0.0.1, and runners for Debian's NBD tools.
 */
import { spawn, spawnSync } from 'node:child_process';
import { readFileSync, writeFileSync } from 'node:fs';
import { freePort, type Site, Workspace, waitForStatus } from '../integration/harness.ts';

// nbdsh is a Python script: run it with Debian's python3, which has the nbd module; e2fsck and
// mke2fs live in /usr/sbin.
const env = { ...process.env, PATH: `/usr/bin:/bin:/usr/sbin:/sbin:${process.env.PATH ?? ''}` };

function notInstalled(command: string, error: Error): Error {
  return new Error(`${command} could not run (is it installed? .ci/run installs it): ${error.message}`);
}

export function run(
  command: string,
  args: string[],
): { status: number | null; stdout: string; stderr: string } {
  const result = spawnSync(command, args, {
    encoding: 'utf8',
    env,
    timeout: 180_000,
    maxBuffer: 64 * 1024 * 1024,
  });
  if (result.error) throw notInstalled(command, result.error);
  return { status: result.status, stdout: result.stdout, stderr: result.stderr };
}

/** Like run, without blocking the event loop, so other connections go on meanwhile. */
export function runCapture(
  command: string,
  args: string[],
): Promise<{ status: number | null; output: string }> {
  return new Promise((resolve, reject) => {
    const child = spawn(command, args, { env, stdio: ['ignore', 'pipe', 'pipe'] });
    let output = '';
    child.stdout.on('data', (chunk: Buffer) => {
      output += chunk.toString();
    });
    child.stderr.on('data', (chunk: Buffer) => {
      output += chunk.toString();
    });
    child.once('error', (error) => reject(notInstalled(command, error)));
    child.once('exit', (status) => resolve({ status, output }));
  });
}

export class NbdGroup {
  readonly workspace = new Workspace();
  primaryUrl = '';
  secondaryUrl = '';
  primaryHttp = 0;
  private readonly sites: Site[] = [];

  /**
   * Starts dr1 and the primary with one volume of `sizeBytes`, exported as vol0 on both; the
   * primary's export on TCP, or on a Unix socket in the workspace when `unixSocket` is set.
   */
  static async start(
    sizeBytes: number,
    options: { ack?: 'cycle'; cycle?: string; unixSocket?: boolean } = {},
  ): Promise<NbdGroup> {
    const group = new NbdGroup();
    try {
      await group.startSites(sizeBytes, options);
    } catch (error) {
      // A site that did start must not outlive a group that failed to.
      await group.stop();
      throw error;
    }
    return group;
  }

  private async startSites(
    sizeBytes: number,
    options: { ack?: 'cycle'; cycle?: string; unixSocket?: boolean },
  ): Promise<void> {
    const socketPath = this.workspace.path('primary-nbd.sock');
    const nbdPrimary = await freePort();
    const nbdSecondary = await freePort();
    const secondary = await this.workspace.secondaryConfig('dr1');
    writeFileSync(
      secondary.path,
      `${readFileSync(secondary.path, 'utf8')}\nnbd: { listen: 127.0.0.1:${nbdSecondary} }\n`,
    );
    const primary = await this.workspace.primaryConfig({
      secondaries: [{ name: 'dr1', port: secondary.port }],
      volumes: [sizeBytes],
      cycle: options.cycle,
      extra: [
        `nbd: { listen: "${options.unixSocket ? socketPath : `127.0.0.1:${nbdPrimary}`}" }`,
        options.ack ? `ack: ${options.ack}` : '',
      ].join('\n'),
    });
    this.primaryHttp = primary.httpPort;
    this.sites.push(this.workspace.startSecondary(secondary.path));
    await this.secondary.waitForEvent('secondary-started');
    this.sites.push(this.workspace.startPrimary(primary.path));
    await this.sites[1]?.waitForEvent('nbd-listening');
    this.primaryUrl = options.unixSocket
      ? `nbd+unix:///vol0?socket=${socketPath}`
      : `nbd://127.0.0.1:${nbdPrimary}/vol0`;
    this.secondaryUrl = `nbd://127.0.0.1:${nbdSecondary}/vol0`;
    await waitForStatus(
      this.primaryHttp,
      (s) => (s.secondaries as { link: string }[])[0]?.link === 'streaming',
    );
  }

  get secondary(): Site {
    return this.sites[0] as Site;
  }

  /** Resolves once the secondary stored and applied everything the primary acknowledged. */
  async idle(): Promise<void> {
    await waitForStatus(
      this.primaryHttp,
      (s) =>
        (s.secondaries as { lagBytes: number; applied: number; stored: number }[]).every(
          (link) => link.lagBytes === 0 && link.applied === link.stored,
        ),
      60_000,
    );
  }

  async stop(): Promise<void> {
    for (const site of this.sites) await site.stop();
    await this.workspace.cleanup();
  }
}
