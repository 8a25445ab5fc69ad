/**
 * A secondary's catch-up, timed from starting its process: to mode streaming with everything the
 * primary closed stored and applied, with the modes the primary showed on the way and the
 * `link-failed` lines of both sites once the session began (scenario 7, issue 12); and the resync
 * of a secondary that was away and tracking while given writes landed.
 */
import { type BenchContext, freeBytes, gib } from './context.ts';
import { type FioJob, runFio } from './fio.ts';
import { type Child, sleep } from './processes.ts';
import { CyclerepSites, type LogLine, type PrimaryStatus } from './servers.ts';

/** Generous: a resync or an initial sync on a loaded 2-core machine. */
export const syncTimeoutMs = 1_800_000;

/** What one initial sync or resync took, from starting the secondary process. */
export interface SyncRun {
  /** To mode streaming with everything applied. */
  seconds: number;
  /** The same from the first poll that saw the link up (the primary's reconnect delay left out). */
  linkUpSeconds: number;
  /** Of those, the part after the primary showed mode streaming (the copy sent): the secondary applying. */
  applySeconds: number;
  /** Modes the primary showed, in order, once each. */
  modes: string[];
  copiedBytes: number;
  /** `link-failed` once the link was up (the primary's session began; the secondary's started). */
  failedPrimary: number;
  failedSecondary: number;
  /** Dials of the primary that failed before the secondary listened: not catch-up failures. */
  failedBeforeUp: number;
}

/** The primary's events that say a session with the secondary began. */
const sessionEvents = new Set(['initial-sync', 'resync-started', 'resync-full', 'recovery-cycle']);

export async function syncSecondary(sites: CyclerepSites): Promise<SyncRun> {
  const logsBefore = sites.logs();
  const modes: string[] = [];
  let copiedBytes = 0;
  let linkUpAt: number | null = null;
  let streamingAt: number | null = null;
  const seen = (status: PrimaryStatus) => {
    const link = status.secondaries[0];
    if (!link) return;
    if (modes[modes.length - 1] !== link.mode) modes.push(link.mode);
    copiedBytes = Math.max(copiedBytes, link.resyncBytesCopied);
    if (link.link === 'streaming') linkUpAt ??= performance.now();
    if (link.mode === 'streaming') streamingAt ??= performance.now();
  };
  let watching = true;
  const started = performance.now();
  await sites.startSecondary();
  const poll = (async () => {
    while (watching) {
      try {
        seen(await sites.status());
      } catch {
        // a poll that failed is simply missing
      }
      await sleep(50);
    }
  })();
  try {
    await sites.waitFor(
      'the secondary streams',
      (s) => s.secondaries[0]?.mode === 'streaming',
      syncTimeoutMs,
    );
    await sites.idle(syncTimeoutMs);
  } finally {
    watching = false;
    await poll;
  }
  const ended = performance.now();
  seen(await sites.status());
  const logs = sites.logs();
  const primary = logs.primary.slice(logsBefore.primary.length);
  const secondary = logs.secondary.slice(logsBefore.secondary.length);
  const primaryUp = primary.findIndex((line) => sessionEvents.has(line.event));
  const secondaryUp = secondary.findIndex((line) => line.event === 'session-started');
  const failed = (lines: LogLine[], from: number) =>
    from < 0 ? 0 : lines.slice(from).filter((line) => line.event === 'link-failed').length;
  return {
    seconds: (ended - started) / 1000,
    linkUpSeconds: (ended - (linkUpAt ?? started)) / 1000,
    applySeconds: (ended - (streamingAt ?? ended)) / 1000,
    modes,
    copiedBytes,
    failedPrimary: failed(primary, primaryUp),
    failedSecondary: failed(secondary, secondaryUp),
    failedBeforeUp: failed(primary, 0) - failed(primary, primaryUp),
  };
}

/** A secondary away this long switches to tracking, so the resync runs from the bitmap. */
const trackingSoon = '{ awaySecondsMax: 1 }';

/** 16 V, sparse; scaled down (and said so) only when the disk could not hold what is written. */
export function largeVolumeBytes(context: BenchContext, volumeBytes: number): number {
  const free = freeBytes(context.dir);
  // Sparse volumes: only the changed blocks, the journal and the secondary's staging take space,
  // a few V at most.
  if (free > 4 * volumeBytes + 4 * gib) return 16 * volumeBytes;
  process.stdout.write(`only ${(free / gib).toFixed(1)} GiB free: the large volume is 4 V, not 16 V\n`);
  return 4 * volumeBytes;
}

/** What one resync after an absence took, and what it was resyncing. */
export interface AwayResync {
  run: SyncRun;
  /** What the bitmap marked when the secondary returned (the primary's resyncBytesLeft). */
  bitmapBytes: number;
  /** Data the primary shipped during the resync (zero runs not counted). */
  sentBytes: number;
  /** VmHWM of each site once the secondary streams: the secondary's is the resync's own. */
  secondaryPeakBytes: number;
  primaryPeakBytes: number;
}

/**
 * A fresh pair on a volume of `sizeBytes`; the secondary away while `changes` (one fio job) land,
 * until the primary tracks it and its journal is collected; then the secondary returns.
 */
export async function resyncAfterAway(
  context: BenchContext,
  sizeBytes: number,
  changes: Omit<FioJob, 'uri' | 'seconds' | 'once'>,
): Promise<AwayResync> {
  const sites = await CyclerepSites.start(context.dir, {
    label: `resync ${sizeBytes}`,
    sizeBytes,
    withSecondary: true,
    cycleMinMs: 200,
    tracking: trackingSoon,
  });
  try {
    await sites.idle();
    await sites.stopSecondary();
    await sites.waitFor('the primary saw the link go', (s) => s.secondaries[0]?.link !== 'streaming');
    await runFio({ uri: sites.url, ...changes, seconds: 0, once: true });
    // The last writes close into a cycle; tracking folds it into the bitmap and frees the journal.
    await sleep(1000);
    await sites.waitFor(
      'the secondary is tracking and the journal passed it',
      (s) => s.secondaries[0]?.mode === 'tracking' && s.collected === s.closed,
    );
    const before = (await sites.status()).secondaries[0];
    const run = await syncSecondary(sites);
    const after = (await sites.status()).secondaries[0];
    return {
      run,
      bitmapBytes: before?.resyncBytesLeft ?? 0,
      sentBytes: (after?.shippedBytes ?? 0) - (before?.shippedBytes ?? 0),
      secondaryPeakBytes: (sites.secondary as Child).memory().peak,
      primaryPeakBytes: (sites.primary as Child).memory().peak,
    };
  } finally {
    await sites.stop();
  }
}
