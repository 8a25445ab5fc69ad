/**
 * A primary becomes the secondary of the site that superseded it (docs/failover.md): after a
 * switchover (nothing of its own beyond the handover cycle) or a rejoin (its writes after the
 * promotion cycle, stated as a divergence, are replaced by the new primary's resync).
 */
import { ConfigError } from '../core/errors.ts';
import type { CycleNumber } from '../core/types.ts';
import type { PrimaryFileConfig, SecondaryFileConfig } from '../ops/config.ts';
import type { BlockRun } from '../protocol/frames.ts';
import { changeRole } from '../storage/role-change.ts';
import { PrimaryNode } from './primary-node.ts';
import type { RoleChangeHost, SiteNode } from './site-host.ts';

/**
 * This site's config as a secondary's: it needs its own `name` and a `listen` where the new
 * primary dials it (its secondaries list this site there); a ConfigError says what is missing.
 */
export function secondaryConfigOf(host: RoleChangeHost): SecondaryFileConfig {
  const document = host.loaded.document as Record<string, unknown>;
  if (document.listen === undefined)
    throw new ConfigError(
      `${host.loaded.source}: listen: missing (where the new primary dials this site once it follows it; its secondaries must list this site there)`,
    );
  return host.configInRole('secondary', []) as SecondaryFileConfig;
}

/**
 * This site becomes the new primary's secondary at `cycle`: it stops, an offline start writes back
 * every journaled write, the data directory is converted and the secondary starts; the new primary
 * dials it and streams from the next cycle (a switchover), or first resyncs the blocks this site
 * wrote after the cycle, `divergence` (a rejoin: docs/failover.md).
 */
export async function followNewPrimary(
  host: RoleChangeHost,
  node: SiteNode,
  config: SecondaryFileConfig,
  change: {
    cycle: CycleNumber;
    supersededBy: string | null;
    divergence: BlockRun[] | null;
    /** A split brain's loser: it follows a primary whose chain diverged from its own. */
    acceptDiverged?: boolean;
  },
): Promise<void> {
  const { cycle, supersededBy, divergence } = change;
  const primaryConfig = host.config as PrimaryFileConfig;
  const { timeoutMs } = primaryConfig.shutdown;
  await node.stop({ nbdDrainMs: timeoutMs / 2, statusLingerMs: 0 });
  const offline = await PrimaryNode.start(primaryConfig, host.logger, host.onFatal, {
    offline: true,
    environment: host.environment,
  });
  const { closed } = offline.status();
  const { identity, volumeRecords } = offline;
  await offline.stop();
  if (divergence === null && closed !== cycle)
    throw new Error(
      `following the new primary from cycle ${cycle}, but the journal closed cycle ${closed}: not converted`,
    );
  await changeRole(host.environment.fs, config.dataDir, {
    to: 'secondary',
    site: identity.site,
    fromCycle: cycle,
    generations: identity.generations,
    supersededBy,
    divergence,
    ...(change.acceptDiverged ? { acceptDiverged: true } : {}),
    volumes: volumeRecords,
    config,
  });
  host.logger.warn('demoted', {
    cycle,
    supersededBy,
    divergentRuns: divergence?.length ?? 0,
    reason: 'this site follows the new primary',
  });
  await host.startNode(config);
}
