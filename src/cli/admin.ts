/**
 * The admin verbs (docs/failover.md): `cyclerep promote [--force] --url URL` asks a running
 * secondary to take over, prints what the site knew (the loss window) and waits until the site
 * answers as a primary in the new generation; `cyclerep switchover --url URL` asks a running
 * primary to hand over to its secondary and waits until it follows the new primary. Exit 0 only
 * once the new roles are in force.
 */
import { exitCodes } from './exit-codes.ts';
import { type ClientTls, siteRequest } from './site-client.ts';

export interface PromoteOptions {
  url: string;
  /** HTTPS files for a site whose status listener serves https (config http.tls). */
  tls: ClientTls;
  force: boolean;
  /** How long to wait for the new role; the site's own stop and start run within it. */
  timeoutSeconds: number;
  json: boolean;
}

const requestTimeoutMs = 10_000;
const pollMs = 200;

interface PromoteAnswer {
  error?: string;
  promoting?: boolean;
  generation?: string;
  facts?: Record<string, unknown>;
}

/** POST /admin/<verb>: the HTTP status and the site's answer, or null when unreachable (said on stderr). */
async function postAdmin<Answer>(
  verb: string,
  base: string,
  query: URLSearchParams,
  tls: ClientTls,
  timeoutMs = requestTimeoutMs,
): Promise<{ status: number; answer: Answer } | null> {
  try {
    const { status, body } = await siteRequest('POST', `${base}/admin/${verb}?${query}`, tls, timeoutMs);
    return { status, answer: (body ?? {}) as Answer };
  } catch (error) {
    process.stderr.write(`cyclerep ${verb}: cannot reach ${base}: ${(error as Error).message}\n`);
    return null;
  }
}

export async function runPromote(options: PromoteOptions): Promise<number> {
  const base = options.url.replace(/\/$/, '');
  const posted = await postAdmin<PromoteAnswer>(
    'promote',
    base,
    new URLSearchParams(options.force ? { force: 'true' } : {}),
    options.tls,
  );
  if (!posted) return exitCodes.start;
  const { status, answer } = posted;
  if (answer.facts) process.stderr.write(describeFacts(answer.facts));
  if (status !== 202 || !answer.generation) {
    process.stderr.write(
      `cyclerep promote: refused (HTTP ${status}): ${answer.error ?? 'no reason given'}\n`,
    );
    return exitCodes.refused;
  }
  process.stderr.write(`cyclerep promote: promoting into generation ${answer.generation}\n`);
  const reached = await waitForGeneration(
    base,
    options.tls,
    answer.generation,
    options.timeoutSeconds * 1000,
  );
  if (!reached) {
    process.stderr.write(
      `cyclerep promote: ${base} did not answer as the primary of generation ${answer.generation} within ${options.timeoutSeconds} s; see its log\n`,
    );
    return exitCodes.refused;
  }
  if (options.json) process.stdout.write(`${JSON.stringify(reached, null, 2)}\n`);
  else
    process.stdout.write(
      `promoted: primary of generation ${answer.generation}, capture cycle ${String(reached.capture)}\n`,
    );
  return exitCodes.ok;
}

/** Polls /status until the site is the primary of `generation`; the listener restarts meanwhile. */
function waitForGeneration(
  base: string,
  tls: ClientTls,
  generation: string,
  timeoutMs: number,
): Promise<SiteStatus | null> {
  return waitForStatus(
    base,
    tls,
    timeoutMs,
    (body) => body.role === 'primary' && body.generation === generation,
  );
}

/** Polls /status until `reached` holds; null at a fault or the deadline. */
async function waitForStatus(
  base: string,
  tls: ClientTls,
  timeoutMs: number,
  reached: (body: SiteStatus) => boolean,
): Promise<SiteStatus | null> {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    try {
      const body = (await siteRequest('GET', `${base}/status`, tls, requestTimeoutMs))
        .body as SiteStatus | null;
      if (body && reached(body)) return body;
      if (body?.fault) return null;
    } catch {
      // the listener is down while the site changes role
    }
    await new Promise((resolve) => setTimeout(resolve, pollMs));
  }
  return null;
}

type SiteStatus = Record<string, unknown>;

export interface SwitchoverOptions {
  url: string;
  tls: ClientTls;
  /** The secondary to hand over to; the only one when absent. */
  secondary: string | undefined;
  timeoutSeconds: number;
  json: boolean;
}

interface SwitchoverAnswer {
  error?: string;
  generation?: string;
  secondary?: string;
}

export async function runSwitchover(options: SwitchoverOptions): Promise<number> {
  const base = options.url.replace(/\/$/, '');
  const query = new URLSearchParams({ 'timeout-seconds': String(options.timeoutSeconds) });
  if (options.secondary) query.set('secondary', options.secondary);
  const posted = await postAdmin<SwitchoverAnswer>('switchover', base, query, options.tls);
  if (!posted) return exitCodes.start;
  const { status, answer } = posted;
  if (status !== 202 || !answer.generation) {
    process.stderr.write(
      `cyclerep switchover: refused (HTTP ${status}): ${answer.error ?? 'no reason given'}\n`,
    );
    return exitCodes.refused;
  }
  const generation = answer.generation;
  process.stderr.write(
    `cyclerep switchover: writes stopped; handing over to ${answer.secondary} as the primary of generation ${generation}\n`,
  );
  // In force once this site follows the new primary and streams from it.
  const reached = await waitForStatus(base, options.tls, options.timeoutSeconds * 2000, (body) => {
    const primary = body.primary as { generation?: string } | null | undefined;
    return body.role === 'secondary' && primary?.generation === generation && body.link === 'streaming';
  });
  if (!reached) {
    process.stderr.write(
      `cyclerep switchover: ${base} did not follow the primary of generation ${generation} in time; see both sites' logs (switchover-refused, switchover-stalled, promoted)\n`,
    );
    return exitCodes.refused;
  }
  if (options.json) process.stdout.write(`${JSON.stringify(reached, null, 2)}\n`);
  else
    process.stdout.write(
      `switched over: ${answer.secondary} is the primary of generation ${generation}; this site follows it from cycle ${String(reached.applied)}\n`,
    );
  return exitCodes.ok;
}

function describeFacts(facts: Record<string, unknown>): string {
  const since = facts.secondsSinceContact;
  return [
    `  primary connected:      ${String(facts.primaryConnected)}`,
    `  last contact:           ${facts.lastContact ?? 'never'}${typeof since === 'number' ? ` (${since.toFixed(1)} s ago)` : ''}`,
    `  applied / stored:       ${String(facts.applied)} / ${String(facts.stored)}`,
    `  promotes at cycle:      ${String(facts.applicableThrough)}`,
    `  newest cycle seen:      ${String(facts.newestCycleSeen)} (${String(facts.cyclesSeenBeyondApplicable)} closed cycle(s) beyond it are lost, and whatever the primary wrote since)`,
    '',
  ].join('\n');
}

export interface RejoinOptions {
  url: string;
  tls: ClientTls;
  /** A split brain's resolution on the site that gives up its history (a delta when both forked at one cycle). */
  discardMyData: boolean;
  /** An absolute path where the site saves the blocks of the writes it undoes, before it rejoins. */
  saveDiscarded: string | null;
  timeoutSeconds: number;
  json: boolean;
}

interface RejoinAnswer {
  error?: string;
  rejoining?: boolean;
  cycle?: number;
  supersededBy?: string | null;
  discardedWrites?: number | string;
  discardedBytes?: number | string;
  divergentRuns?: number;
  fullCopy?: boolean;
  savedTo?: string;
  savedBytes?: number;
}

/**
 * `cyclerep rejoin --url URL` on a fenced old primary: it follows the primary that superseded it;
 * exit 0 once its image is that primary's again (the rejoin's resync applied) and it streams.
 */
export async function runRejoin(options: RejoinOptions): Promise<number> {
  const base = options.url.replace(/\/$/, '');
  const query = new URLSearchParams(options.discardMyData ? { 'discard-my-data': 'true' } : {});
  if (options.saveDiscarded) query.set('save-discarded', options.saveDiscarded);
  // The site answers once the save (if any) is durable: that may take a while.
  const posted = await postAdmin<RejoinAnswer>(
    'rejoin',
    base,
    query,
    options.tls,
    options.timeoutSeconds * 1000,
  );
  if (!posted) return exitCodes.start;
  const { status, answer } = posted;
  if (status !== 202 || !answer.rejoining) {
    process.stderr.write(`cyclerep rejoin: refused (HTTP ${status}): ${answer.error ?? 'no reason given'}\n`);
    return exitCodes.refused;
  }
  const supersededBy = answer.supersededBy ?? null;
  if (answer.savedTo)
    process.stderr.write(
      `cyclerep rejoin: the blocks of the writes undone are saved in ${answer.savedTo} (${answer.savedBytes} bytes; docs/failover.md)\n`,
    );
  process.stderr.write(
    `cyclerep rejoin: following ${supersededBy ? `generation ${supersededBy} from cycle ${answer.cycle}` : `the primary that dials this site (split-brain resolution) from cycle ${answer.cycle}`}; ${answer.fullCopy ? `every block is copied; ${answer.discardedWrites} write(s) of this site's own are undone` : `${answer.discardedWrites} write(s) (${answer.discardedBytes} bytes) taken here after that cycle are undone: ${answer.divergentRuns} run(s) of blocks resynced`}\n`,
  );
  const reached = await waitForStatus(base, options.tls, options.timeoutSeconds * 1000, (body) => {
    const primary = body.primary as { generation?: string } | null | undefined;
    return (
      body.role === 'secondary' &&
      primary?.generation !== undefined &&
      (supersededBy === null || primary.generation === supersededBy) &&
      body.consistent === true &&
      body.link === 'streaming'
    );
  });
  if (!reached) {
    process.stderr.write(
      `cyclerep rejoin: ${base} did not hold the new primary's image within ${options.timeoutSeconds} s; the resync may still be running (cyclerep status on both sites)\n`,
    );
    return exitCodes.refused;
  }
  if (options.json) process.stdout.write(`${JSON.stringify(reached, null, 2)}\n`);
  else
    process.stdout.write(
      `rejoined: this site follows generation ${supersededBy}, applied ${String(reached.applied)}\n`,
    );
  return exitCodes.ok;
}
