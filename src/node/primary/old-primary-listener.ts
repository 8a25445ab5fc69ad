/**
 * A primary's link listener, at its config's `listen` (a promoted site keeps the address it had
 * as a secondary). Who dials a primary as its secondary is an old primary still running, or a site
 * of another history (docs/failover.md, "Fencing"): each connection gets one answer to its hello
 * (core/supersede.ts: `superseded` with this site's chain, or a refusal naming both generations)
 * and is closed. A connection that sends anything else, or nothing within the link timeout, is cut.
 * The chain of a primary of a diverged history is handed to `onDiverged`: a split brain's
 * resolution on this site needs to know where that history forked from its own.
 */

import type { PrimaryIdentity } from '../../core/identity.ts';
import { replyToPrimaryHello } from '../../core/supersede.ts';
import type { Clock } from '../../io/clock.ts';
import type { SiteEnvironment } from '../../io/environment.ts';
import type { LinkSocket } from '../../io/network.ts';
import { FramedSocket } from '../../net/framed-socket.ts';
import type { PrimaryFileConfig } from '../../ops/config.ts';
import type { Logger } from '../../ops/logger.ts';
import { listenOnNetwork, type SecondaryLinkListener } from '../secondary/link-listener.ts';
import { NodeLinkListener } from '../secondary/node-link-listener.ts';

export class OldPrimaryListener {
  private constructor(private readonly listener: SecondaryLinkListener) {}

  /** Listens at `listen` when the config has one; null otherwise. */
  static async start(
    config: PrimaryFileConfig,
    identity: () => PrimaryIdentity,
    environment: SiteEnvironment,
    logger: Logger,
    onDiverged: (offered: PrimaryIdentity) => void,
  ): Promise<OldPrimaryListener | null> {
    const listen = config.listen;
    if (!listen) return null;
    const answer = (socket: LinkSocket): void =>
      answerOneHello(socket, identity(), environment.clock, config.link.timeoutMs, logger, onDiverged);
    const listener = environment.network
      ? await listenOnNetwork(environment.network, listen, answer)
      : await NodeLinkListener.start(config, listen, logger, answer);
    logger.info('primary-listening', {
      listen,
      reason: "old primaries that dial this site are told where the group's history stands",
    });
    return new OldPrimaryListener(listener);
  }

  reload(): void {
    this.listener.reload();
  }

  close(): Promise<void> {
    return this.listener.close();
  }
}

function answerOneHello(
  socket: LinkSocket,
  identity: PrimaryIdentity,
  clock: Clock,
  timeoutMs: number,
  logger: Logger,
  onDiverged: (offered: PrimaryIdentity) => void,
): void {
  const silence = clock.after(timeoutMs, () => framed.destroy('no hello in time'), { background: true });
  const framed: FramedSocket = new FramedSocket(socket, clock, {
    onFrame: (frame) => {
      silence.cancel();
      if (frame.type !== 'hello') {
        framed.destroy(`${frame.type} where a hello was expected`);
        return;
      }
      const { frame: reply, relation } = replyToPrimaryHello(identity, frame);
      if (relation?.relation === 'diverged')
        onDiverged({ site: frame.primarySite, generations: frame.generations });
      logger.warn(reply.type === 'superseded' ? 'old-primary-told' : 'primary-refused', {
        primarySite: frame.primarySite,
        generation: frame.generations.at(-1)?.id ?? '',
        relation: relation?.relation ?? 'unusable',
        ...(reply.type === 'error' ? { code: reply.code, reason: reply.message } : {}),
      });
      framed.send(reply);
      framed.close(reply.type === 'superseded' ? 'told it was superseded' : reply.code);
    },
    onProtocolError: () => silence.cancel(),
    onClose: () => silence.cancel(),
  });
}
