/**
 * What a site's journal directory holds, for tests that claim "nothing was journaled". The
 * directory must exist (the site opened its storage): an error reading it fails the test instead of
 * passing for an empty journal.
 */
import { readdirSync } from 'node:fs';
import type { Site, Workspace } from './harness.ts';
import { sleep } from './harness.ts';

/** The segment files in `<site>/journal`; throws (ENOENT included) if the directory cannot be read. */
export function journalSegments(workspace: Workspace, site: string): string[] {
  return readdirSync(workspace.path(site, 'journal'));
}

/**
 * Waits until the site logged `count` events named `event` (matching `pattern` in their reason):
 * a peer refused again has had its earlier attempt fully handled, so whatever that attempt would
 * have journaled is on disk by then.
 */
export async function waitForEvents(
  site: Site,
  event: string,
  count: number,
  pattern: RegExp = /./,
  timeoutMs = 30_000,
): Promise<Record<string, unknown>[]> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const found = site.events(event).filter((entry) => pattern.test(String(entry.reason)));
    if (found.length >= count) return found;
    if (Date.now() > deadline)
      throw new Error(
        `${found.length} of ${count} ${event} events matching ${pattern}: ${site.stderr.slice(-3000)}`,
      );
    await sleep(50);
  }
}
