/**
 * The session side of a secondary: what it checks of a primary's hello before it follows it.
 */

import type { HelloFrame } from '../protocol/frames.ts';
import { HandshakeError } from './errors.ts';
import { generationChainProblem, type PrimaryIdentity } from './identity.ts';
import { checkSameShape, checkShapeRules } from './shape.ts';
import type { GroupShape } from './types.ts';

/** The identity a hello states. */
export function identityOfHello(hello: HelloFrame): PrimaryIdentity {
  return { site: hello.primarySite, generations: hello.generations };
}

/**
 * Throws HandshakeError unless a hello is of `group`, well-formed by the config's rules (names,
 * block size, sizes, a generation chain ending at its primary) and, when this site already holds
 * volumes, describes exactly `held`. A fresh secondary (held null) checks the same before it
 * creates any file from what the hello says.
 */
export function checkHello(hello: HelloFrame, group: string, held: GroupShape | null): void {
  if (hello.group !== group) {
    throw new HandshakeError(
      'group-mismatch',
      `group "${hello.group}" offered, this site is of group "${group}"`,
    );
  }
  const offered = { group: hello.group, blockBytes: hello.blockBytes, volumes: hello.volumes };
  checkShapeRules(offered);
  const chain = generationChainProblem(hello.primarySite, hello.generations);
  if (chain) throw new HandshakeError('hello-invalid', `hello: primary site ${hello.primarySite}: ${chain}`);
  if (held) checkSameShape(offered, held);
}
