/**
 * A planned switchover on the primary (docs/failover.md): this site stops taking writes, its last
 * cycle reaches its secondary, which becomes the primary of a new generation from the next cycle;
 * this site then follows it as its secondary, from that cycle, with no resync. Every acknowledged
 * write is on both sites.
 */
import { ConfigError } from '../core/errors.ts';
import type { CycleNumber } from '../core/types.ts';
import type { Clock } from '../io/clock.ts';
import type { SecondaryFileConfig } from '../ops/config.ts';
import { followNewPrimary, secondaryConfigOf } from './demotion.ts';
import type { PrimaryNode } from './primary-node.ts';
import type { RoleChangeStart } from './promotion.ts';
import type { RoleChangeHost } from './site-host.ts';
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
  await followNewPrimary(host, node, config, { cycle, supersededBy: generation, divergence: null });
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
          'the secondary was asked to take over and neither did nor refused; this site takes no writes until it does (a restart asks it again)',
      });
    }
    await sleep(clock, pollMs);
  }
}

function sleep(clock: Clock, ms: number): Promise<void> {
  return new Promise((resolve) => clock.after(ms, resolve));
}
