/**
 * `cyclerep rejoin` on an old primary that learnt it was superseded (it is fenced): it becomes the
 * secondary of the site that superseded it (docs/failover.md, "Failback"). The blocks it wrote
 * after the promotion cycle are stated to the new primary at each handshake; the new primary
 * resyncs them, with everything it wrote since, as one consistent unit: only blocks that differ
 * travel, and the image here stays this site's own last one until the unit is applied. The
 * writes undone are counted and logged; when the journal no longer tells which they were, every
 * block is copied (said before it starts).
 */
import { isAbsolute } from 'node:path';
import { ConfigError } from '../core/errors.ts';
import { agreesThrough, compareHistories, type PrimaryIdentity } from '../core/identity.ts';
import type { CycleNumber } from '../core/types.ts';
import type { SecondaryFileConfig } from '../ops/config.ts';
import type { BlockRun } from '../protocol/frames.ts';
import { followNewPrimary, secondaryConfigOf } from './demotion.ts';
import { type DiscardedManifest, saveDiscarded } from './discarded-save.ts';
import type { PrimaryNode } from './primary-node.ts';
import type { RoleChangeStart } from './promotion.ts';
import type { RoleChangeHost } from './site-host.ts';

/** What the operator asked of a rejoin besides the role change. */
export interface RejoinRequest {
  /** A split brain's resolution on the site that gives up its history (rejoin.ts: giveUpHistory). */
  discardMyData: boolean;
  /** An absolute path: the blocks of this site's writes to be undone are saved there first. */
  saveDiscardedTo: string | null;
}

export async function rejoin(
  host: RoleChangeHost,
  node: PrimaryNode,
  request: RejoinRequest,
): Promise<RoleChangeStart> {
  const fenced = node.status().fenced;
  if (request.saveDiscardedTo !== null && !isAbsolute(request.saveDiscardedTo))
    return refusal(400, `save-discarded: ${request.saveDiscardedTo} is not an absolute path`);
  if (request.discardMyData) return giveUpHistory(host, node, request.saveDiscardedTo);
  if (!fenced)
    return {
      answer: {
        status: 409,
        body: {
          error:
            'this site does not know it was superseded: it learns it (and is fenced) when it dials the promoted site as its secondary; rejoin then. In a split brain (both sites promoted), --discard-my-data on the site that gives up makes it follow the other (a delta when both histories forked at one cycle, else a copy of every block)',
        },
      },
      work: null,
    };
  let config: SecondaryFileConfig;
  try {
    config = secondaryConfigOf(host);
  } catch (error) {
    if (!(error instanceof ConfigError)) throw error;
    return { answer: { status: 409, body: { error: error.message } }, work: null };
  }
  const cycle = fenced.startedAt - 1;
  const written = node.writtenAfter(cycle);
  const divergence = written?.runs ?? everyBlock(node, host.config.blockSize);
  let saved: DiscardedManifest | null = null;
  if (request.saveDiscardedTo !== null) {
    const outcome = await saveFirst(host, node, request.saveDiscardedTo, written?.runs ?? null, {
      afterCycle: cycle,
      supersededBy: fenced.generation,
    });
    if ('answer' in outcome) return outcome;
    saved = outcome.manifest;
  }
  const report = {
    cycle,
    supersededBy: fenced.generation,
    discardedWrites: written?.writes ?? 'unknown',
    discardedBytes: written?.bytes ?? 'unknown',
    divergentRuns: divergence.length,
    fullCopy: written === null,
    ...savedReport(request.saveDiscardedTo, saved),
  };
  host.logger.warn('rejoin-started', {
    ...report,
    reason: written
      ? `the writes this site took after cycle ${cycle} are undone: the new primary resyncs their blocks`
      : `this site's journal no longer holds every cycle after ${cycle}: every block is copied from the new primary`,
  });
  return {
    answer: { status: 202, body: { rejoining: true, ...report } },
    work: () => followNewPrimary(host, node, config, { cycle, supersededBy: fenced.generation, divergence }),
  };
}

/**
 * A split brain's resolution on the site that gives up (docs/failover.md): it takes no more writes,
 * lists (and saves, if asked) those it took, and follows a primary of a diverged (or newer) history.
 * When the survivor dialled it since it started and both histories forked at one cycle C (both
 * promoted from one image), it follows from C and states the blocks it wrote since; only a primary
 * of that fork is then followed, and it resyncs them with what it wrote itself: a delta. Otherwise
 * it follows from cycle 0, any diverged primary, and every block is copied.
 */
async function giveUpHistory(
  host: RoleChangeHost,
  node: PrimaryNode,
  saveDiscardedTo: string | null,
): Promise<RoleChangeStart> {
  let config: SecondaryFileConfig;
  try {
    config = secondaryConfigOf(host);
  } catch (error) {
    if (!(error instanceof ConfigError)) throw error;
    return { answer: { status: 409, body: { error: error.message } }, work: null };
  }
  // Writes stop before they are listed: one acknowledged after the list would stay here, unsaved
  // and never resynced, in an image said to be the survivor's.
  node.stopWritesToGiveUp(true);
  const plan = givingUpPlan(node, host.config.blockSize);
  let saved: DiscardedManifest | null = null;
  if (saveDiscardedTo !== null) {
    const outcome = await saveFirst(host, node, saveDiscardedTo, plan.written?.runs ?? null, {
      afterCycle: plan.cycle,
      supersededBy: 'the primary that dials this site',
    });
    if ('answer' in outcome) {
      node.stopWritesToGiveUp(false);
      return outcome;
    }
    saved = outcome.manifest;
  }
  const report = {
    cycle: plan.cycle,
    supersededBy: null,
    discardedWrites: plan.written?.writes ?? 'unknown',
    discardedBytes: plan.written?.bytes ?? 'unknown',
    divergentRuns: plan.divergence.length,
    fullCopy: !plan.delta,
    ...savedReport(saveDiscardedTo, saved),
  };
  host.logger.warn('rejoin-started', {
    ...report,
    supersededBy: 'the primary that dials this site',
    reason: `split-brain resolution (--discard-my-data): this site gives up its own history and takes no more writes; ${plan.why}`,
  });
  const { cycle, divergence } = plan;
  return {
    answer: { status: 202, body: { rejoining: true, ...report } },
    work: () =>
      followNewPrimary(host, node, config, { cycle, supersededBy: null, divergence, acceptDiverged: true }),
  };
}

/** Where a split brain's loser follows from, what it states there, and why (giveUpHistory). */
function givingUpPlan(
  node: PrimaryNode,
  blockBytes: number,
): {
  cycle: CycleNumber;
  written: ReturnType<PrimaryNode['writtenAfter']>;
  divergence: BlockRun[];
  delta: boolean;
  why: string;
} {
  const seen = node.divergedPrimarySeen;
  const shared = sharedThrough(node.identity, seen);
  const written = shared > 0 ? node.writtenAfter(shared) : null;
  if (shared > 0 && written)
    return {
      cycle: shared,
      written,
      divergence: written.runs,
      delta: true,
      why: `it shares the history of the primary that dialled it through cycle ${shared}: the blocks either site wrote since are resynced`,
    };
  const why =
    shared > 0
      ? `its journal no longer holds every cycle after ${shared}`
      : seen
        ? 'the primary that dialled it forked from its history at another cycle'
        : 'no primary of a diverged history dialled it since it started, so where their histories forked is unknown';
  return {
    cycle: 0,
    written: node.writtenAfter(0),
    divergence: everyBlock(node, blockBytes),
    delta: false,
    why: `${why}: every block is copied`,
  };
}

/**
 * The cycle through which this site's history and the diverged one `seen` hold the same cycles:
 * both forks begin right after it (agreesThrough). 0 when nothing was seen or they forked apart.
 */
function sharedThrough(identity: PrimaryIdentity, seen: PrimaryIdentity | null): CycleNumber {
  if (!seen) return 0;
  const relation = compareHistories(seen.generations, identity.generations);
  if (relation.relation !== 'diverged') return 0;
  const cycle = relation.myFirst.startedAt - 1;
  return agreesThrough(seen.generations, identity.generations, cycle) ? cycle : 0;
}

/**
 * Saves the blocks of the writes to be undone (discarded-save.ts) before anything changes; a
 * refusal when the journal no longer tells which blocks they are, or when the save fails.
 */
async function saveFirst(
  host: RoleChangeHost,
  node: PrimaryNode,
  path: string,
  runs: BlockRun[] | null,
  facts: { afterCycle: number; supersededBy: string },
): Promise<RoleChangeStart | { manifest: DiscardedManifest }> {
  if (runs === null)
    return refusal(
      409,
      `save-discarded: this site's journal no longer tells which blocks it wrote after cycle ${facts.afterCycle}, so saving them means saving every volume: copy the volume files while the site is stopped, then rejoin without --save-discarded`,
    );
  try {
    const manifest = await saveDiscarded(host.environment.fs, path, node, node.volumeRecords, runs, {
      ...facts,
      group: host.config.group,
      site: node.identity.site,
      blockSize: host.config.blockSize,
    });
    host.logger.warn('discarded-writes-saved', {
      path,
      bytes: manifest.bytes,
      runs: manifest.runs.length,
      afterCycle: facts.afterCycle,
    });
    return { manifest };
  } catch (error) {
    return refusal(
      500,
      `save-discarded: ${(error as Error).message}; nothing was changed, the site is still fenced`,
    );
  }
}

function savedReport(path: string | null, saved: DiscardedManifest | null): Record<string, unknown> {
  return saved ? { savedTo: path, savedBytes: saved.bytes } : {};
}

function refusal(status: number, error: string): RoleChangeStart {
  return { answer: { status, body: { error } }, work: null };
}

/** Every block of every volume: a full copy. */
function everyBlock(node: PrimaryNode, blockBytes: number): BlockRun[] {
  return node.volumeRecords.map((volume) => ({
    volume: volume.id,
    block: 0,
    blockCount: volume.sizeBytes / blockBytes,
  }));
}
