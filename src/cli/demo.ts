/**
 * `cyclerep demo`: a primary (in this process) and a secondary (a child process) on localhost
 * under ./var/demo, several sources writing dependent, self-describing blocks through the library
 * API, and one status line per second. Ctrl-C (or --seconds) stops it: the sources stop, the
 * secondary catches up, both sites stop cleanly and the replica is compared with the primary.
 */
import { type ChildProcess, spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { createWriteStream, existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { PrimaryNode } from '../node/primary-node.ts';
import { ensureCa, makeSiteCertificate, type SiteCertificate } from '../ops/certs.ts';
import { loadConfig, type PrimaryFileConfig } from '../ops/config.ts';
import { createLogger } from '../ops/logger.ts';
import { checkCut } from '../workload/blocks.ts';
import { Workload } from '../workload/sources.ts';
import { exitCodes } from './exit-codes.ts';

export interface DemoOptions {
  directory: string;
  seconds: number | null;
  print: (line: string) => void;
}

const mib = 1024 * 1024;
const binary = fileURLToPath(new URL('../../bin/cyclerep.js', import.meta.url));

/**
 * The demo's site link runs over TLS with a CA and certificates of its own under <dir>/pki (made
 * once with openssl). Without openssl (a fresh machine may lack it) it uses TLS 1.3 with a
 * pre-shared key instead, which needs nothing but Node: the link is encrypted either way.
 */
function demoTls(directory: string, print: (line: string) => void): { primary: string; secondary: string } {
  const pki = join(directory, 'pki');
  try {
    const ca = ensureCa(pki, 'cyclerep demo CA');
    const sites = ['primary', 'dr1'].map((name) =>
      existsSync(join(pki, `${name}.crt`))
        ? { cert: join(pki, `${name}.crt`), key: join(pki, `${name}.key`) }
        : makeSiteCertificate(pki, name),
    );
    const section = (site: { cert: string; key: string }, peer: string) =>
      `tls: { cert: ${site.cert}, key: ${site.key}, ca: ${ca}, peers: [${peer}] }`;
    return {
      primary: section(sites[0] as SiteCertificate, 'dr1'),
      secondary: section(sites[1] as SiteCertificate, 'primary'),
    };
  } catch (error) {
    print(
      `  (no certificates for the demo's site link: ${(error as Error).message}; TLS 1.3 with a pre-shared key)`,
    );
    const keyFile = demoPskFile(pki);
    return {
      primary: `psk: { keyFile: ${keyFile}, identity: primary }`,
      secondary: `psk: { keyFile: ${keyFile}, peers: [primary] }`,
    };
  }
}

/** A random link key, private to its owner, made once. */
function demoPskFile(pki: string): string {
  const keyFile = join(pki, 'link.psk');
  if (!existsSync(keyFile)) {
    mkdirSync(pki, { recursive: true, mode: 0o700 });
    writeFileSync(keyFile, `${randomBytes(32).toString('hex')}\n`, { mode: 0o600 });
  }
  return keyFile;
}

function writeConfigs(
  directory: string,
  print: (line: string) => void,
): { primary: string; secondary: string } {
  mkdirSync(directory, { recursive: true });
  const tls = demoTls(directory, print);
  const primary = join(directory, 'primary.yaml');
  const secondary = join(directory, 'dr1.yaml');
  writeFileSync(
    primary,
    `# written by cyclerep demo
group: demo
role: primary
dataDir: ${join(directory, 'primary')}
blockSize: 4KiB
volumes:
  - { name: data, size: 256MiB }
  - { name: log, size: 64MiB }
cycle: { intervalMinMs: 500, queuedMax: 4 }
ack: immediate
journal: { capacity: 1GiB, segmentSize: 16MiB }
nbd: { listen: 127.0.0.1:10809 }
http: { listen: 127.0.0.1:9180 }
secondaries:
  - { name: dr1, address: 127.0.0.1:7400, connections: 2 }
${tls.primary}
`,
  );
  writeFileSync(
    secondary,
    `# written by cyclerep demo
group: demo
role: secondary
name: dr1
dataDir: ${join(directory, 'dr1')}
listen: 127.0.0.1:7400
nbd: { listen: 127.0.0.1:10810 }
http: { listen: 127.0.0.1:9181 }
log: { format: pretty }
${tls.secondary}
`,
  );
  return { primary, secondary };
}

export async function runDemo(options: DemoOptions): Promise<number> {
  const directory = resolve(options.directory);
  const paths = writeConfigs(directory, options.print);
  const config = loadConfig(paths.primary) as PrimaryFileConfig;
  const secondaryLog = createWriteStream(join(directory, 'dr1.log'), { flags: 'a' });
  // Its own process group: Ctrl-C in the terminal reaches the demo only, which stops the secondary
  // after it caught up; the exit handler makes sure it never outlives the demo.
  const child = spawn(process.execPath, [binary, 'secondary', '--config', paths.secondary], {
    stdio: ['ignore', 'ignore', 'pipe'],
    detached: true,
  });
  const killChild = (): void => {
    if (child.exitCode === null) child.kill('SIGKILL');
  };
  process.once('exit', killChild);
  child.stderr?.pipe(secondaryLog);
  const primaryLog = createWriteStream(join(directory, 'primary.log'), { flags: 'a' });
  const logger = createLogger({
    site: 'demo/primary',
    format: 'pretty',
    write: (line) => primaryLog.write(`${line}\n`),
  });
  let fatal: Error | null = null;
  const primary = await PrimaryNode.start(config, logger, (error) => {
    fatal = error;
  });
  const blockBytes = config.blockSize;
  const workload = new Workload({
    sources: 6,
    volumeBlocks: config.volumes.map((volume) => volume.size / blockBytes),
    blocksPerSource: 4096,
    blockBytes,
    thinkMs: 1,
    write: (volume, offset, data) => primary.write(volume, offset, data),
  });
  options.print(
    `cyclerep demo: primary (this process) and secondary dr1 (pid ${child.pid}) under ${directory}\n` +
      `  6 sources write dependent, self-describing 4 KiB blocks through the library API (PrimaryNode.write).\n` +
      `  dashboard: http://127.0.0.1:9180/ (primary), http://127.0.0.1:9181/ (dr1); metrics: /metrics on both\n` +
      `  status: cyclerep status --url http://127.0.0.1:9180   logs: ${directory}/primary.log, dr1.log\n` +
      '  attach real clients: qemu-io -f raw nbd://127.0.0.1:10809/data -c "write -P 0x55 128M 1M"  (primary, read-write;\n' +
      '                      the sources use the first 48 MiB of data and log)\n' +
      '                      nbdcopy nbd://127.0.0.1:10810/data copy.img   (secondary, read-only, applied image)\n' +
      '                      fio --name=w --ioengine=nbd --uri=nbd://127.0.0.1:10809/data --rw=randwrite --bs=4k --offset=64m --size=64m\n' +
      `  ${options.seconds === null ? 'Ctrl-C stops it.' : `stopping after ${options.seconds} s.`}`,
  );
  workload.start();
  const started = Date.now();
  let previous = { at: started, written: 0, replicated: 0 };
  const ticker = setInterval(() => {
    const status = primary.status();
    const link = status.secondaries[0];
    const now = Date.now();
    const replicated = workload.bytes - (link?.lagBytes ?? 0);
    const seconds = (now - previous.at) / 1000;
    options.print(
      `t=${((now - started) / 1000).toFixed(0).padStart(3)}s capture ${status.capture} | dr1 ${link?.link}: stored ${link?.stored} applied ${link?.applied}, ` +
        `lag ${link?.lagCycles} cycles ${((link?.lagBytes ?? 0) / mib).toFixed(1)} MiB ${(link?.lagSeconds ?? 0).toFixed(1)} s | ` +
        `written ${((workload.bytes - previous.written) / mib / seconds).toFixed(1)} MiB/s, replicated ${((replicated - previous.replicated) / mib / seconds).toFixed(1)} MiB/s`,
    );
    previous = { at: now, written: workload.bytes, replicated };
  }, 1000);
  const stopRequested = new Promise<void>((resolveStop) => {
    process.once('SIGINT', () => resolveStop());
    process.once('SIGTERM', () => resolveStop());
    if (options.seconds !== null) setTimeout(resolveStop, options.seconds * 1000).unref();
    child.once('exit', () => resolveStop());
  });
  await stopRequested;
  clearInterval(ticker);
  options.print('stopping: sources stop, the secondary catches up, both sites stop');
  await workload.stop();
  const caughtUp = await waitFor(() => primary.status().secondaries[0]?.lagBytes === 0, 15_000);
  const journal = primary.status();
  options.print(
    `journal: ${journal.journalAppends} records in ${journal.journalWrites} write() calls ` +
      `(${(journal.journalAppends / Math.max(1, journal.journalWrites)).toFixed(1)} per call) and ${journal.journalSyncs} fdatasyncs ` +
      `(${(journal.journalAppends / Math.max(1, journal.journalSyncs)).toFixed(0)} records per fdatasync)`,
  );
  await primary.stop();
  const childExit = await stopChild(child);
  primaryLog.end();
  return report({ options, directory, config, workload, caughtUp, childExit, fatal });
}

async function waitFor(condition: () => boolean, timeoutMs: number): Promise<boolean> {
  const deadline = Date.now() + timeoutMs;
  while (!condition()) {
    if (Date.now() > deadline) return false;
    await new Promise((resolveWait) => setTimeout(resolveWait, 50));
  }
  return true;
}

function stopChild(child: ChildProcess): Promise<number | null> {
  if (child.exitCode !== null) return Promise.resolve(child.exitCode);
  return new Promise((resolveExit) => {
    child.once('exit', (code) => resolveExit(code));
    child.kill('SIGTERM');
  });
}

function report(context: {
  options: DemoOptions;
  directory: string;
  config: PrimaryFileConfig;
  workload: Workload;
  caughtUp: boolean;
  childExit: number | null;
  fatal: Error | null;
}): number {
  const { options, directory, config, workload } = context;
  const read = (site: string) =>
    config.volumes.map((volume) => readFileSync(join(directory, site, 'volumes', `${volume.name}.img`)));
  const primaryImage = read('primary');
  const replica = read('dr1');
  const identical = primaryImage.every(
    (bytes, index) => Buffer.compare(bytes, replica[index] as Buffer) === 0,
  );
  const cut = checkCut(replica, workload.regions, config.blockSize);
  options.print(
    `${workload.writes} writes (${(workload.bytes / mib).toFixed(1)} MiB) by 6 sources, ${workload.errors} refused; ` +
      `secondary ${context.caughtUp ? 'caught up' : 'DID NOT catch up'}, exited ${context.childExit}`,
  );
  options.print(
    `dr1's image files ${identical ? 'equal' : 'DIFFER FROM'} the primary's, byte for byte; ` +
      `as a cut of the sources' writes it is ${cut.consistent ? 'consistent' : `INCONSISTENT: ${cut.problems.slice(0, 3).join('; ')}`}`,
  );
  const ok = identical && cut.consistent && context.caughtUp && context.childExit === 0 && !context.fatal;
  return ok ? exitCodes.ok : exitCodes.internal;
}
