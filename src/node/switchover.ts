/**
 * A planned switchover on the primary (docs/failover.md): this site stops taking writes, its last
 * cycle reaches its secondary, which becomes the primary of a new generation from the next cycle;
 * this site then follows it as its secondary, from that cycle, with no resync. Every acknowledged
 * write is on both sites.
 */
import { ConfigError } from '../core/errors.ts';
import type { CycleNumber } from '../core/types.ts';
import type { Clock } from '../io/clock.ts';
import { configInRole, type PrimaryFileConfig, type SecondaryFileConfig } from '../ops/config.ts';
import { changeRole } from '../storage/role-change.ts';
import { PrimaryNode } from './primary-node.ts';
import type { RoleChangeStart } from './promotion.ts';
import type { RoleChangeHost, SiteNode } from './site-host.ts';
import { randomId } from './site-identity.ts';

/** How long the secondary gets to store the last cycle when the request names no time. */
const switchoverTimeoutMsDefault = 60_000;
const pollMs = 20;

/** `cyclerep switchover`: checks that a switchover may start and, if so, starts it. */
export function switchOver(
  host: RoleChangeHost,
  node: PrimaryNode,
  secondaryParam: string | null,
  timeoutParam: string | null,
): RoleChangeStart {
  const refused = (status: number, error: string): RoleChangeStart => ({
    answer: { status, body: { error } },
    work: null,
  });
  const links = node.status().secondaries;
  const secondary = secondaryParam ?? (links.length === 1 ? (links[0]?.name ?? null) : null);
  if (!secondary)
    return refused(
      400,
      `name the secondary to hand over to (secondary=NAME); this primary has ${links.length}`,
    );
  const timeoutMs = timeoutParam === null ? switchoverTimeoutMsDefault : Number(timeoutParam) * 1000;
  if (!Number.isFinite(timeoutMs) || timeoutMs <= 0) return refused(400, `timeout-seconds: ${timeoutParam}`);
  let config: SecondaryFileConfig;
  try {
    config = secondaryConfigOf(host);
  } catch (error) {
    if (!(error instanceof ConfigError)) throw error;
    return refused(409, error.message);
  }
  const generation = randomId(host.environment.randomBytes);
  const refusal = node.beginSwitchover(secondary, generation);
  if (refusal) return refused(409, refusal);
  return {
    answer: { status: 202, body: { switchingOver: true, secondary, generation } },
    work: () => carryOutSwitchover(host, node, config, generation, timeoutMs),
  };
}

/**
 * This site's config as a secondary's: it needs its own `name` and a `listen` where the new
 * primary dials it (its secondaries list this site there); a ConfigError says what is missing.
 */
function secondaryConfigOf(host: RoleChangeHost): SecondaryFileConfig {
  const document = host.loaded.document as Record<string, unknown>;
  if (document.listen === undefined)
    throw new ConfigError(
      `${host.loaded.source}: listen: missing (where the new primary dials this site once it follows it; its secondaries must list this site there)`,
    );
  return configInRole(host.loaded, 'secondary', []) as SecondaryFileConfig;
}

async function carryOutSwitchover(
  host: RoleChangeHost,
  node: PrimaryNode,
  config: SecondaryFileConfig,
  generation: string,
  timeoutMs: number,
): Promise<void> {
  const clock = host.environment.clock;
  const cycle = await untilAsked(node, clock, clock.now() + timeoutMs);
  if (cycle === null) return;
  if (!(await untilTakenOver(host, node, clock, clock.now() + timeoutMs))) return;
  await followNewPrimary(host, node, config, cycle, generation);
}

/**
 * Waits until the secondary stored every closed cycle and was asked to take over; null when the
 * switchover was given up (timed out before it was asked: writes are taken again).
 */
async function untilAsked(node: PrimaryNode, clock: Clock, deadlineMs: number): Promise<CycleNumber | null> {
  for (;;) {
    const switchover = node.status().switchover;
    if (!switchover) return null;
    if (switchover.cycle !== null) return switchover.cycle;
    if (clock.now() > deadlineMs && node.abortSwitchover()) return null;
    await sleep(clock, pollMs);
  }
}

/**
 * Waits until the secondary took over (its promotion ends the session) or refused (the group takes
 * writes again: false). Past the deadline it keeps waiting: once asked, only the secondary can say
 * whether it leads now, and taking writes again while it might would fork the history.
 */
async function untilTakenOver(
  host: RoleChangeHost,
  node: PrimaryNode,
  clock: Clock,
  deadlineMs: number,
): Promise<boolean> {
  let stallLogged = false;
  for (;;) {
    if (!node.status().switchover) return false;
    if (!node.switchoverLink()?.streaming) return true;
    if (clock.now() > deadlineMs && !stallLogged) {
      stallLogged = true;
      host.logger.error('switchover-stalled', {
        reason:
          'the secondary was asked to take over and neither did nor refused; this site takes no writes until it does (or is restarted)',
      });
    }
    await sleep(clock, pollMs);
  }
}

/**
 * This site becomes the new primary's secondary at `cycle`: it stops, an offline start writes back
 * every journaled write (there is none above the cycle), the data directory is converted and the
 * secondary starts; the new primary dials it and streams from the next cycle.
 */
async function followNewPrimary(
  host: RoleChangeHost,
  node: SiteNode,
  config: SecondaryFileConfig,
  cycle: CycleNumber,
  generation: string,
): Promise<void> {
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
  if (closed !== cycle)
    throw new Error(`switchover at cycle ${cycle}, but the journal closed cycle ${closed}: not converted`);
  await changeRole(host.environment.fs, config.dataDir, {
    to: 'secondary',
    site: identity.site,
    fromCycle: cycle,
    generations: identity.generations,
    supersededBy: generation,
    volumes: volumeRecords,
    config,
  });
  host.logger.warn('demoted', {
    cycle,
    supersededBy: generation,
    reason: 'switchover: this site follows the new primary',
  });
  await host.startNode(config);
}

function sleep(clock: Clock, ms: number): Promise<void> {
  return new Promise((resolve) => clock.after(ms, resolve));
}
