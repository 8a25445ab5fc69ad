/**
 * What a promoted primary's link listener answers a primary that dials it as its secondary
 * (docs/failover.md, "Fencing"): that is an old primary still running, or a site of another history.
 * Pure: the listener sends the frame, closes the connection and logs the relation.
 */
import type { ErrorFrame, HelloFrame, SupersededFrame } from '../protocol/frames.ts';
import {
  compareHistories,
  currentGeneration,
  type Generation,
  generationChainProblem,
  type HistoryRelation,
  type PrimaryIdentity,
} from './identity.ts';
import { limits } from './limits.ts';

/** Stable codes of the refusals; the messages are for people. */
export type SupersedeRefusalCode =
  /** The hello's chain ends at another primary, or is malformed (its primary cannot be told anything). */
  | 'hello-invalid'
  /** Both chains were promoted from one history: a split brain, nobody replicates to anybody. */
  | 'split-brain'
  /** No common generation: another group's site, or one whose data directory was wiped. */
  | 'unrelated-site'
  /**
   * The dialler is primary of this site's own current generation, which has one primary: this site
   * dialled itself, or a copy of its data directory runs elsewhere.
   */
  | 'same-generation'
  /** The dialler's chain extends this site's: this site was superseded too, it must not lead. */
  | 'superseded-here';

export interface HelloReply {
  /** A superseded frame when the dialler was superseded by this site's history, else an error frame. */
  frame: SupersededFrame | ErrorFrame;
  /** How this site's chain stands to the hello's; null when the hello's chain is unusable. */
  relation: HistoryRelation | null;
}

/** The reply to a hello received by a primary's link listener, from this site's identity. */
export function replyToPrimaryHello(identity: PrimaryIdentity, hello: HelloFrame): HelloReply {
  const problem = generationChainProblem(hello.primarySite, hello.generations);
  if (problem)
    return {
      frame: refusal('hello-invalid', `hello: primary site ${hello.primarySite}: ${problem}`),
      relation: null,
    };
  const relation = compareHistories(identity.generations, hello.generations);
  const mine = describe(identity.site, currentGeneration(identity));
  const theirs = describe(hello.primarySite, hello.generations.at(-1) as Generation);
  switch (relation.relation) {
    case 'ahead':
      return {
        frame: {
          type: 'superseded',
          site: identity.site,
          // The newest generations, as a hello carries them: the receiver finds its own among them.
          generations: identity.generations.slice(-limits.generationsInHelloMax),
        },
        relation,
      };
    case 'diverged':
      return {
        frame: refusal(
          'split-brain',
          `split brain: this site is ${mine}, the dialling one ${theirs}; both branched from generation ${relation.lastCommon.id} (this one at cycle ${relation.myFirst.startedAt} with generation ${relation.myFirst.id}, that one at cycle ${relation.theirFirst.startedAt} with generation ${relation.theirFirst.id}); neither replicates to the other until an operator keeps one (docs/failover.md, "Split brain")`,
        ),
        relation,
      };
    case 'unrelated':
      return {
        frame: refusal(
          'unrelated-site',
          `no common generation: this site is ${mine}, the dialling one ${theirs} (another group's site, or one whose data directory was made anew)`,
        ),
        relation,
      };
    case 'same':
      return {
        frame: refusal(
          'same-generation',
          `the dialling site is ${theirs}, this site is ${mine}: one generation has one primary, so this is this site dialling itself (a secondaries address pointing back at its own listen address) or a copy of its data directory running elsewhere`,
        ),
        relation,
      };
    case 'behind':
      return {
        frame: refusal(
          'superseded-here',
          `the dialling site is ${theirs}, whose history supersedes this site's (${mine}) from cycle ${relation.supersededAt} on: this site does not lead any more`,
        ),
        relation,
      };
  }
}

function describe(site: string, generation: Generation): string {
  return `site ${site}, primary of generation ${generation.id} started at cycle ${generation.startedAt}`;
}

function refusal(code: SupersedeRefusalCode, message: string): ErrorFrame {
  return { type: 'error', code, message };
}
