/**
 * `cyclerep rejoin` on an old primary that learnt it was superseded (it is fenced): it becomes the
 * secondary of the site that superseded it (docs/failover.md, "Failback"). The blocks it wrote
 * after the promotion cycle are stated to the new primary at each handshake; the new primary
 * resyncs them, with everything it wrote since, as one consistent unit: only blocks that differ
 * travel, and the image here stays this site's own last one until the unit is applied. The
 * writes undone are counted and logged; when the journal no longer tells which they were, every
 * block is copied (said before it starts).
 */
import { ConfigError } from '../core/errors.ts';
import type { SecondaryFileConfig } from '../ops/config.ts';
import type { BlockRun } from '../protocol/frames.ts';
import { followNewPrimary, secondaryConfigOf } from './demotion.ts';
import type { PrimaryNode } from './primary-node.ts';
import type { RoleChangeStart } from './promotion.ts';
import type { RoleChangeHost } from './site-host.ts';

export function rejoin(host: RoleChangeHost, node: PrimaryNode, discardMyData: boolean): RoleChangeStart {
  const fenced = node.status().fenced;
  if (discardMyData) return giveUpHistory(host, node);
  if (!fenced)
    return {
      answer: {
        status: 409,
        body: {
          error:
            'this site does not know it was superseded: it learns it (and is fenced) when it dials the promoted site as its secondary; rejoin then. In a split brain (both sites promoted), --discard-my-data on the site that gives up makes it follow the other with a full copy',
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
  const report = {
    cycle,
    supersededBy: fenced.generation,
    discardedWrites: written?.writes ?? 'unknown',
    discardedBytes: written?.bytes ?? 'unknown',
    divergentRuns: divergence.length,
    fullCopy: written === null,
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
 * A split brain's resolution on the site that gives up (docs/failover.md): it follows whichever
 * primary of a diverged (or newer) history dials it, and every block is copied from it: the two
 * histories share no cycle numbering after the fork, so no delta can be proven.
 */
function giveUpHistory(host: RoleChangeHost, node: PrimaryNode): RoleChangeStart {
  let config: SecondaryFileConfig;
  try {
    config = secondaryConfigOf(host);
  } catch (error) {
    if (!(error instanceof ConfigError)) throw error;
    return { answer: { status: 409, body: { error: error.message } }, work: null };
  }
  const written = node.writtenAfter(0);
  const report = {
    cycle: 0,
    supersededBy: null,
    discardedWrites: written?.writes ?? 'unknown',
    discardedBytes: written?.bytes ?? 'unknown',
    divergentRuns: node.volumeRecords.length,
    fullCopy: true,
  };
  host.logger.warn('rejoin-started', {
    ...report,
    supersededBy: 'the primary that dials this site',
    reason:
      'split-brain resolution (--discard-my-data): this site gives up its own history; every block is copied',
  });
  const divergence = everyBlock(node, host.config.blockSize);
  return {
    answer: { status: 202, body: { rejoining: true, ...report } },
    work: () =>
      followNewPrimary(host, node, config, {
        cycle: 0,
        supersededBy: null,
        divergence,
        acceptDiverged: true,
      }),
  };
}

/** Every block of every volume: a full copy. */
function everyBlock(node: PrimaryNode, blockBytes: number): BlockRun[] {
  return node.volumeRecords.map((volume) => ({
    volume: volume.id,
    block: 0,
    blockCount: volume.sizeBytes / blockBytes,
  }));
}
