/**
 * A secondary's catch-up, timed from starting its process: to mode streaming with everything the
 * primary closed stored and applied, with the modes the primary showed on the way and the
 * `link-failed` lines of both sites once the session began (scenario 7, issue 12).
 */
import { sleep } from './processes.ts';
import type { CyclerepSites, LogLine, PrimaryStatus } from './servers.ts';

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
