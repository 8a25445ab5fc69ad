/**
 * `cyclerep status [--json] [--url URL] [--watch [SECONDS]]`: the status of a running site, read from
 * its HTTP endpoint, as a table in the manner of `drbdadm status` (a line for the site, an indented
 * line per link), coloured only on a terminal; `--json` prints the endpoint's document unchanged;
 * `--watch` redraws it until Ctrl-C, with a catch-up bar for each secondary that is behind. Each
 * secondary's mode is shown, and during a resync the bytes copied, the bytes left, a bar, the rate and
 * an ETA.
 */
import { exitCodes } from './exit-codes.ts';
import { type ClientTls, siteRequest } from './site-client.ts';

interface LinkStatus {
  name: string;
  link: string;
  stored: number;
  applied: number;
  lagCycles: number;
  lagBytes: number;
  lagSeconds: number;
  failures?: number;
  recoveries?: number;
  lastFailure?: string | null;
  /** How the primary keeps what this secondary lacks (docs/resync.md); absent from older sites. */
  mode?: 'streaming' | 'journal' | 'tracking' | 'resync';
  resyncBytesLeft?: number;
  resyncBytesCopied?: number;
  /** The copy's rate over about the last 10 s, and the seconds left at it (null: unknown). */
  resyncBytesPerSecond?: number;
  resyncEtaSeconds?: number | null;
  /** Link compression (config secondaries[].compression): block-data bytes before and after; null without. */
  compression?: { codec: string; payloadBytes: number; sentBytes: number; ratio: number } | null;
}

export interface SiteStatus {
  group: string;
  role: 'primary' | 'secondary';
  name?: string;
  capture?: number;
  closed?: number;
  journalBytes?: number;
  journalDiskBytes?: number;
  journalCapacityBytes?: number;
  journalFull?: boolean;
  link?: string;
  stored?: number;
  applied?: number;
  /** A primary that learnt it was superseded (docs/failover.md, "Fencing"); null or absent while it leads. */
  fenced?: { site: string; generation: string; startedAt: number; at: string } | null;
  /** A storage failure the site is stopping on (exit 3); null while healthy. */
  fault?: { kind: string; message: string; at?: string } | null;
  secondaries?: LinkStatus[];
  /** A primary's write pacing (docs/pacing.md); null or absent without it. */
  pacing?: {
    lagSecondsMax: number;
    delayMsMax: number;
    delayMs: number;
    pacedBy: string | null;
    lagSeconds: number;
    saturated: boolean;
    writesDelayed: number;
    delaySeconds: number;
    writesUndelayed?: number;
  } | null;
  /** A secondary's exposed image is a consistent cut (false during an in-place resync). */
  consistent?: boolean;
  inconsistentSince?: string | null;
  /** A secondary's resync staging, and its last refusal to stage for want of room. */
  staging?: {
    mode: string;
    stagedBytes: number;
    shortage: { stagedBytes: number; freeBytes: number; freeBytesMin: number; volumeBytes: number } | null;
  };
}

export interface StatusOptions {
  url: string;
  /** HTTPS files for a site whose status listener serves https (config http.tls). */
  tls: ClientTls;
  json: boolean;
  /** Seconds between redraws, or null for one reading. */
  watchSeconds: number | null;
  colour: boolean;
}

const requestTimeoutMs = 5000;

async function readStatus(target: string, tls: ClientTls): Promise<SiteStatus> {
  const { status, body } = await siteRequest('GET', target, tls, requestTimeoutMs);
  if (status !== 200 || body === null) throw new Error(`HTTP ${status}`);
  return body as SiteStatus;
}

export async function runStatus(options: StatusOptions): Promise<number> {
  const target = `${options.url.replace(/\/$/, '')}/status`;
  if (options.watchSeconds === null) {
    let body: SiteStatus;
    try {
      body = await readStatus(target, options.tls);
    } catch (error) {
      process.stderr.write(`cyclerep status: cannot read ${target}: ${(error as Error).message}\n`);
      return exitCodes.start;
    }
    process.stdout.write(options.json ? `${JSON.stringify(body, null, 2)}\n` : describe(body, options));
    return exitCodes.ok;
  }
  return watch(target, options, options.watchSeconds);
}

async function watch(target: string, options: StatusOptions, seconds: number): Promise<number> {
  const peaks = new Map<string, number>();
  let stopped = false;
  process.once('SIGINT', () => {
    stopped = true;
  });
  while (!stopped) {
    let text: string;
    try {
      const body = await readStatus(target, options.tls);
      text = options.json ? `${JSON.stringify(body)}\n` : describe(body, options, peaks);
    } catch (error) {
      text = `cannot read ${target}: ${(error as Error).message}\n`;
    }
    // Home and clear on a terminal; plain successive readings when piped.
    process.stdout.write(options.colour ? `\x1b[H\x1b[2J${new Date().toISOString()}\n${text}` : text);
    await new Promise((resolve) => setTimeout(resolve, seconds * 1000));
  }
  return exitCodes.ok;
}

const colours = { green: 32, yellow: 33, red: 31, bold: 1, dim: 2 } as const;

function paint(options: { colour: boolean }, colour: keyof typeof colours, text: string): string {
  return options.colour ? `\x1b[${colours[colour]}m${text}\x1b[0m` : text;
}

function linkColour(state: string): keyof typeof colours {
  if (state === 'streaming') return 'green';
  if (state === 'refused') return 'red';
  return 'yellow';
}

export function bytes(count: number): string {
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
  let value = count;
  let unit = 0;
  while (value >= 1024 && unit < units.length - 1) {
    value /= 1024;
    unit++;
  }
  return unit === 0 ? `${value} B` : `${value.toFixed(1)} ${units[unit]}`;
}

/** A bar of `width` cells, `done` of 0..1 filled. */
export function bar(done: number, width = 20): string {
  const fraction = Math.min(1, Math.max(0, done));
  const filled = Math.round(fraction * width);
  return `[${'#'.repeat(filled)}${'.'.repeat(width - filled)}] ${Math.floor(fraction * 100)}%`;
}

/**
 * The readable view. `peaks` (kept by --watch) holds the largest lag seen per secondary, so that a
 * secondary catching up shows how much of it is done.
 */
export function describe(
  status: SiteStatus,
  options: { colour: boolean } = { colour: false },
  peaks?: Map<string, number>,
): string {
  const lines: string[] = [];
  const fault = status.fault
    ? `  ${paint(options, 'red', `FAULT ${status.fault.kind}${status.fault.at ? ` at ${status.fault.at}` : ''}: ${status.fault.message}`)}`
    : '';
  // What the operator does about a fault, under the site's lines.
  const advice = status.fault
    ? '  the site is stopping (exit code 3); nothing acknowledged is lost: free space or fix the disk, then restart it\n'
    : '';
  if (status.role === 'secondary') {
    lines.push(
      `${paint(options, 'bold', `${status.group}/${status.name}`)} role:secondary stored:${status.stored} applied:${status.applied} journal:${bytes(status.journalBytes ?? 0)}${fault}`,
      `  primary link:${paint(options, linkColour(status.link ?? ''), status.link ?? 'unknown')}`,
      ...describeStaging(status, options),
    );
    return `${lines.join('\n')}\n${advice}`;
  }
  const capacity = status.journalCapacityBytes
    ? `/${bytes(status.journalCapacityBytes)} (${Math.round(((status.journalDiskBytes ?? 0) / status.journalCapacityBytes) * 100)}%)`
    : '';
  lines.push(
    `${paint(options, 'bold', status.group)} role:primary capture:${status.capture} closed:${status.closed} journal:${bytes(status.journalDiskBytes ?? status.journalBytes ?? 0)}${capacity}${status.journalFull ? paint(options, 'red', ' FULL: writes wait') : ''}${fault}`,
  );
  if (status.fenced)
    lines.push(
      `  ${paint(options, 'red', `FENCED since ${status.fenced.at}`)}: superseded by site ${status.fenced.site}, generation ${status.fenced.generation}, from cycle ${status.fenced.startedAt} on; writes are refused (NBD: EPERM)`,
    );
  if (status.pacing) lines.push(describePacing(status.pacing, options));
  for (const link of status.secondaries ?? []) lines.push(...describeLink(link, options, peaks));
  return `${lines.join('\n')}\n${advice}`;
}

/** Pacing's delay now (coloured once it delays writes), and what it added so far. */
function describePacing(pacing: NonNullable<SiteStatus['pacing']>, options: { colour: boolean }): string {
  const now =
    pacing.delayMs > 0
      ? paint(
          options,
          pacing.saturated ? 'red' : 'yellow',
          `delaying writes ${pacing.delayMs} ms (${pacing.pacedBy} lags ${pacing.lagSeconds.toFixed(1)} s of ${pacing.lagSecondsMax} s${pacing.saturated ? ', AT THE BOUND: every write waits the longest delay' : ''})`,
        )
      : paint(options, 'green', 'not delaying');
  const undelayed = pacing.writesUndelayed
    ? `, ${pacing.writesUndelayed} let through undelayed (too many waiting)`
    : '';
  return `  pacing: ${now}; ${pacing.writesDelayed} writes delayed, ${pacing.delaySeconds.toFixed(1)} s added in all (delay at most ${pacing.delayMsMax} ms)${undelayed}`;
}

/** A secondary's image when it is not consistent, and a resync it has no room to stage. */
function describeStaging(status: SiteStatus, options: { colour: boolean }): string[] {
  const lines: string[] = [];
  if (status.consistent === false)
    lines.push(
      `  ${paint(options, 'red', `IMAGE NOT CONSISTENT${status.inconsistentSince ? ` since ${status.inconsistentSince}` : ''}`)}: an in-place resync (resync.staging: in-place) is under way; a consistent cut again once it ends`,
    );
  const shortage = status.staging?.shortage;
  if (shortage)
    lines.push(
      `  ${paint(options, 'red', 'RESYNC REFUSED: no room to stage')} ${bytes(shortage.stagedBytes)} staged, ${bytes(Math.max(0, shortage.freeBytes))} free (${bytes(shortage.freeBytesMin)} kept free), up to ${bytes(shortage.volumeBytes)} may be needed: free room, or resync.staging: in-place`,
    );
  return lines;
}

function describeLink(link: LinkStatus, options: { colour: boolean }, peaks?: Map<string, number>): string[] {
  const lines = [
    `  ${link.name} link:${paint(options, linkColour(link.link), link.link)}${link.mode ? ` mode:${paint(options, link.mode === 'streaming' ? 'green' : 'yellow', link.mode)}` : ''} stored:${link.stored} applied:${link.applied} lag:${link.lagCycles} cycles, ${bytes(link.lagBytes)}, ${link.lagSeconds.toFixed(1)} s` +
      (link.failures ? ` failures:${link.failures}` : '') +
      (link.recoveries ? ` recoveries:${link.recoveries}` : '') +
      (link.compression
        ? ` compression:${link.compression.codec} ${link.compression.ratio.toFixed(2)}x (${bytes(link.compression.payloadBytes)} as ${bytes(link.compression.sentBytes)})`
        : ''),
  ];
  if (link.link !== 'streaming' && link.lastFailure)
    lines.push(`    ${paint(options, 'dim', `last failure: ${link.lastFailure}`)}`);
  if (link.mode === 'resync') lines.push(`    ${describeResync(link)}`);
  if (peaks) {
    const peak = Math.max(peaks.get(link.name) ?? 0, link.lagBytes);
    peaks.set(link.name, peak);
    // Worth a bar once the lag is more than a cycle's worth of small writes.
    if (link.lagCycles > 1 && peak > 0) lines.push(`    catch-up ${bar(1 - link.lagBytes / peak)}`);
  }
  return lines;
}

/** The copy's progress: a resync's size is known from its start, so its bar needs no --watch. */
function describeResync(link: LinkStatus): string {
  const copied = link.resyncBytesCopied ?? 0;
  const left = link.resyncBytesLeft ?? 0;
  const total = copied + left;
  const rate = link.resyncBytesPerSecond ? `, ${bytes(link.resyncBytesPerSecond)}/s` : '';
  const eta =
    link.resyncEtaSeconds === undefined
      ? ''
      : `, ETA ${link.resyncEtaSeconds === null ? '?' : duration(link.resyncEtaSeconds)}`;
  return `resync ${bar(total === 0 ? 1 : copied / total)} copied ${bytes(copied)}, left ${bytes(left)}${rate}${eta}`;
}

/** Seconds as `45 s`, `12 min 5 s` or `3 h 20 min`, precise enough for an estimate. */
export function duration(seconds: number): string {
  const whole = Math.ceil(seconds);
  if (whole < 60) return `${whole} s`;
  if (whole < 3600) return `${Math.floor(whole / 60)} min ${whole % 60} s`;
  return `${Math.floor(whole / 3600)} h ${Math.floor((whole % 3600) / 60)} min`;
}
