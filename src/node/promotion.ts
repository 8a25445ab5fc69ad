/**
 * A secondary becomes the primary of a new generation (docs/failover.md): asked by the operator
 * (`cyclerep promote`, after its primary was lost) or by its own primary in a planned switchover.
 * The secondary stops (its NBD readers and its primary's sessions end), its stored cycles are
 * applied by an offline start like `cyclerep recover`, the data directory is converted
 * (storage/role-change.ts), and the primary starts on it with the same listeners.
 */
import { ConfigError } from '../core/errors.ts';
import type { Generation } from '../core/identity.ts';
import type { CycleNumber } from '../core/types.ts';
import type { PrimaryFileConfig, SecondaryFileConfig } from '../ops/config.ts';
import type { AdminAnswer } from '../ops/status-server.ts';
import { changeRole, planPromotion } from '../storage/role-change.ts';
import { type PromotionFacts, SecondaryNode } from './secondary-node.ts';
import type { RoleChangeHost, SiteNode } from './site-host.ts';
import { randomId } from './site-identity.ts';

/** An admin verb's answer, and the role change to run when it was accepted. */
export interface RoleChangeStart {
  answer: AdminAnswer;
  work: ((node: SiteNode) => Promise<void>) | null;
}

/** `cyclerep promote`: checks that a promotion may go ahead and, if so, hands back the work. */
export function promoteSecondary(host: RoleChangeHost, node: SecondaryNode, force: boolean): RoleChangeStart {
  const facts = node.promotionFacts();
  const refusal = promotionRefusal(facts, node.promotionBasis().volumes !== null, force);
  if (refusal) return { answer: { status: 409, body: { error: refusal, facts } }, work: null };
  let config: PrimaryFileConfig;
  try {
    config = primaryConfigOf(host, node);
  } catch (error) {
    if (!(error instanceof ConfigError)) throw error;
    return { answer: { status: 409, body: { error: error.message, facts } }, work: null };
  }
  const generation = randomId(host.environment.randomBytes);
  host.logger.warn('promotion-started', {
    generation,
    force,
    primaryConnected: facts.primaryConnected,
    lastContact: facts.lastContact ?? 'never',
    applicableThrough: facts.applicableThrough,
    newestCycleSeen: facts.newestCycleSeen,
  });
  return {
    answer: { status: 202, body: { promoting: true, generation, facts } },
    work: () => carryOutPromotion(host, node, config, generation, null),
  };
}

/**
 * A switchover asked by the primary: the session checked that everything up to `cycle` is stored
 * as a consistent image, and that this site's config is valid as a primary's (primaryConfigOf).
 */
export async function promoteOnRequest(
  host: RoleChangeHost,
  node: SiteNode,
  cycle: CycleNumber,
  generation: string,
): Promise<void> {
  if (!(node instanceof SecondaryNode)) throw new Error('a switchover asked of a site that is no secondary');
  host.logger.warn('promotion-started', {
    generation,
    reason: `switchover asked by the primary at cycle ${cycle}`,
  });
  await carryOutPromotion(host, node, primaryConfigOf(host, node), generation, cycle);
}

/** Why this secondary cannot take over in a switchover its primary asks for, or null. */
export function switchoverRefusal(host: RoleChangeHost, node: SecondaryNode): string | null {
  const facts = node.promotionFacts();
  if (!facts.history) return promotionRefusal(facts, true, true);
  try {
    primaryConfigOf(host, node);
  } catch (error) {
    if (!(error instanceof ConfigError)) throw error;
    return `this site's config cannot run a primary: ${error.message}`;
  }
  return null;
}

/** Why a secondary may not be promoted now, or null. */
export function promotionRefusal(facts: PromotionFacts, hasVolumes: boolean, force: boolean): string | null {
  if (!hasVolumes) return 'this site never replicated from a primary: there is nothing to promote';
  if (!facts.imageConsistent)
    return 'the image is not consistent (an in-place resync, or the resync of a rejoin, is under way): promoting it would expose a mix of two moments; refused even with --force';
  if (!facts.history)
    return facts.primary
      ? "the primary's generation chain is not recorded yet (a site.json older than promotion): let the primary connect once, or recreate the site"
      : 'this site never replicated from a primary: there is nothing to promote';
  if (facts.primaryConnected && !force)
    return `the primary is connected (last contact ${facts.lastContact}): promoting now leaves it writing to a site nobody replicates; stop it first, or use --force (it is then fenced when it dials this site)`;
  return null;
}

/** This site's config as a primary's, with the volumes it holds; a ConfigError says why not. */
export function primaryConfigOf(host: RoleChangeHost, node: SecondaryNode): PrimaryFileConfig {
  const volumes = node.status().volumes.map((volume) => ({ name: volume.name, size: volume.sizeBytes }));
  return host.configInRole('primary', volumes) as PrimaryFileConfig;
}

/** See the file comment; `expectedCycle`, for a switchover, is the cycle the image must be at. */
async function carryOutPromotion(
  host: RoleChangeHost,
  secondary: SecondaryNode,
  config: PrimaryFileConfig,
  generationId: string,
  expectedCycle: CycleNumber | null,
): Promise<void> {
  const secondaryConfig = host.config as SecondaryFileConfig;
  const { timeoutMs } = secondaryConfig.shutdown;
  await secondary.stop({ nbdDrainMs: timeoutMs / 2, statusLingerMs: 0 });
  // Applied with consistent staging whatever the config says: an in-place resync's stored cycles
  // would make the image no consistent cut, so the promotion stops at the last consistent cycle.
  const settleConfig: SecondaryFileConfig = { ...secondaryConfig, resync: { staging: 'consistent' } };
  const offline = await SecondaryNode.start(settleConfig, host.logger, host.onFatal, {
    offline: true,
    environment: host.environment,
  });
  await offline.settle();
  const { applied } = offline.status();
  const basis = offline.promotionBasis();
  const { consistent } = offline.imageState;
  await offline.stop();
  if (!consistent) {
    // An in-place resync cycle was applied between the verb's check and the stop: nothing was
    // converted, so the site goes on as the secondary it was.
    host.logger.error('promotion-abandoned', {
      generation: generationId,
      applied,
      reason:
        'an in-place resync cycle was applied before the stop: the image is no consistent cut, so it is not promoted; the site runs on as a secondary',
    });
    await host.startNode(secondaryConfig);
    return;
  }
  if (expectedCycle !== null && applied !== expectedCycle)
    throw new Error(
      `switchover at cycle ${expectedCycle}, but the image applied here is at cycle ${applied}: not promoted`,
    );
  const history = basis.history as Generation[];
  const plan = planPromotion({
    site: basis.site,
    applied,
    history,
    newGenerationId: generationId,
    volumes: basis.volumes ?? [],
    config,
  });
  await changeRole(host.environment.fs, config.dataDir, plan);
  host.logger.warn('promoted', {
    generation: generationId,
    startedAt: applied + 1,
    superseded: history.at(-1)?.id ?? '',
    applied,
  });
  await host.startNode(config);
}
