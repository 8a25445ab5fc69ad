/**
 * Site identities and generations (DESIGN.md "Identity"). Every site gets 128 random bits at
 * creation; a group's history is a chain of generations, one started when a primary is created
 * (and, later, at every promotion), after DRBD's data-generation UUIDs. A secondary binds to the
 * primary site and generation it first replicates from and refuses any other: two primaries of one
 * group feeding one replica would make it a mix of both, which no cycle number can detect.
 */
import { HandshakeError } from './errors.ts';
import type { CycleNumber } from './types.ts';

/** 128 random bits as 32 lowercase hex digits; a site's identity and a generation's id look alike. */
export type SiteId = string;
export const idBytes = 16;
const idPattern = /^[0-9a-f]{32}$/;

export function isId(value: unknown): value is string {
  return typeof value === 'string' && idPattern.test(value);
}

/** One stretch of a group's history with one primary. */
export interface Generation {
  /** Random, never reused: a re-created primary starts another generation even on the same site. */
  id: string;
  /** The first capture cycle of the generation. */
  startedAt: CycleNumber;
  /** The site that was primary during it. */
  primarySite: SiteId;
}

/** What a primary is: its site and its generation chain, oldest first, the last one current. */
export interface PrimaryIdentity {
  site: SiteId;
  generations: Generation[];
}

/**
 * Who superseded a fenced primary: the site primary of the generation that followed this primary's
 * own, that generation, and the cycle it started at (this primary's writes from there on are not
 * the group's).
 */
export interface FencedBy {
  site: SiteId;
  generation: string;
  startedAt: CycleNumber;
}

export function isFencedBy(value: unknown): value is FencedBy {
  const fencedBy = value as FencedBy;
  return (
    typeof fencedBy === 'object' &&
    fencedBy !== null &&
    isId(fencedBy.site) &&
    isId(fencedBy.generation) &&
    Number.isSafeInteger(fencedBy.startedAt) &&
    fencedBy.startedAt >= 1
  );
}

/** The primary site and generation a secondary follows, fixed at the first hello it accepts. */
export interface Binding {
  primarySite: SiteId;
  generation: string;
  /**
   * The followed primary's generation chain as its hello stated it, the bound generation last: what
   * a promotion extends (docs/failover.md). Absent in a site.json written before it was kept; the
   * next accepted hello records it.
   */
  history?: Generation[];
}

export function isGeneration(value: unknown): value is Generation {
  const generation = value as Generation;
  return (
    typeof generation === 'object' &&
    generation !== null &&
    isId(generation.id) &&
    isId(generation.primarySite) &&
    Number.isSafeInteger(generation.startedAt) &&
    generation.startedAt >= 1
  );
}

export function isBinding(value: unknown): value is Binding {
  const binding = value as Binding;
  return (
    typeof binding === 'object' &&
    binding !== null &&
    isId(binding.primarySite) &&
    isId(binding.generation) &&
    (binding.history === undefined ||
      (Array.isArray(binding.history) &&
        binding.history.every(isGeneration) &&
        binding.history.at(-1)?.id === binding.generation))
  );
}

/** What makes a generation chain unusable, or null: empty, malformed, or not ending at its primary. */
export function generationChainProblem(site: SiteId, generations: readonly unknown[]): string | null {
  if (generations.length === 0) return 'no generation';
  const bad = generations.findIndex((generation) => !isGeneration(generation));
  if (bad >= 0) return `generation ${bad} is malformed`;
  const current = generations.at(-1) as Generation;
  if (current.primarySite !== site)
    return `current generation ${current.id} belongs to site ${current.primarySite}, not ${site}`;
  return null;
}

/** Two records of one generation: ids are never reused, so a differing field means a forged or damaged chain. */
export function sameGeneration(a: Generation, b: Generation): boolean {
  return a.id === b.id && a.startedAt === b.startedAt && a.primarySite === b.primarySite;
}

/**
 * How one generation chain stands to another (docs/failover.md, "Generations decide"), from the
 * first chain's side. `supersededAt` is the cycle the leading side's generation right after the
 * other's current one started at: the other side's writes from that cycle on are not the group's.
 */
export type HistoryRelation =
  /** Both end at the same generation, and agree on all they both hold. */
  | { relation: 'same'; current: Generation }
  /** Mine strictly extends theirs: `superseding` is my generation right after their current one. */
  | { relation: 'ahead'; supersededAt: CycleNumber; superseding: Generation }
  /** Theirs strictly extends mine: `superseding` is their generation right after my current one. */
  | { relation: 'behind'; supersededAt: CycleNumber; superseding: Generation }
  /** A common prefix, then each side's own generations (two promotions: a split brain). */
  | { relation: 'diverged'; lastCommon: Generation; myFirst: Generation; theirFirst: Generation }
  /** Nothing in common: another group's site, a wiped data directory, or an empty chain. */
  | { relation: 'unrelated' };

/**
 * Compares two chains, each oldest first. Either may be the newest generationsInHelloMax of a longer
 * chain (a hello or superseded frame leaves older ones out), so the chains are aligned first: where
 * the oldest generation of one appears in the other, both are read in step from there; their own
 * older generations, which the other chain no longer shows, take no part. Chains that share no
 * generation inside what both show compare `unrelated`, even when their left-out parts were common:
 * that takes more promotions between them than a hello carries, and nothing ties them then.
 *
 * Generations match when all their fields do (sameGeneration), so equal current ids over histories
 * that disagree earlier compare `diverged`, not `same`: one of them is forged or damaged.
 */
export function compareHistories(
  mine: readonly Generation[],
  theirs: readonly Generation[],
): HistoryRelation {
  const start = alignment(mine, theirs);
  if (!start) return { relation: 'unrelated' };
  let { my, their } = start;
  while (
    my < mine.length &&
    their < theirs.length &&
    sameGeneration(mine[my] as Generation, theirs[their] as Generation)
  ) {
    my++;
    their++;
  }
  const myNext = mine[my];
  const theirNext = theirs[their];
  if (!myNext && !theirNext) return { relation: 'same', current: mine.at(-1) as Generation };
  if (!theirNext) {
    const superseding = myNext as Generation;
    return { relation: 'ahead', supersededAt: superseding.startedAt, superseding };
  }
  if (!myNext) return { relation: 'behind', supersededAt: theirNext.startedAt, superseding: theirNext };
  // The alignment point matched, so at least one generation is common before the first difference.
  return {
    relation: 'diverged',
    lastCommon: mine[my - 1] as Generation,
    myFirst: myNext,
    theirFirst: theirNext,
  };
}

/**
 * Whether the chain `offered` holds the same cycles as `mine` up to `cycle` and none of mine after
 * it: its first generation that is not mine begins at cycle + 1, and so does my first that is not
 * its (if I have one: a chain that `offered` extends has none).
 */
export function agreesThrough(
  offered: readonly Generation[],
  mine: readonly Generation[],
  cycle: CycleNumber,
): boolean {
  const relation = compareHistories(offered, mine);
  if (relation.relation === 'ahead') return relation.supersededAt === cycle + 1;
  if (relation.relation !== 'diverged') return false;
  return relation.myFirst.startedAt === cycle + 1 && relation.theirFirst.startedAt === cycle + 1;
}

/** Where two chains line up: the oldest generation of one found in the other; null when neither is. */
function alignment(
  mine: readonly Generation[],
  theirs: readonly Generation[],
): { my: number; their: number } | null {
  const myOldest = mine[0];
  const theirOldest = theirs[0];
  if (!myOldest || !theirOldest) return null;
  const their = theirs.findIndex((generation) => sameGeneration(generation, myOldest));
  if (their >= 0) return { my: 0, their };
  const my = mine.findIndex((generation) => sameGeneration(generation, theirOldest));
  if (my >= 0) return { my, their: 0 };
  return null;
}

/** A new primary's identity: a new site, and its first generation beginning at cycle 1. */
export function newPrimaryIdentity(randomId: () => string): PrimaryIdentity {
  const site = randomId();
  return { site, generations: [{ id: randomId(), startedAt: 1, primarySite: site }] };
}

export function currentGeneration(identity: PrimaryIdentity): Generation {
  return identity.generations.at(-1) as Generation;
}

/** The binding a secondary records when it accepts this primary first. */
export function bindingOf(identity: PrimaryIdentity): Binding {
  return {
    primarySite: identity.site,
    generation: currentGeneration(identity).id,
    history: identity.generations.map((generation) => ({ ...generation })),
  };
}

/**
 * The rule for now: only the bound primary site in the bound generation is followed. A later
 * promotion will also accept a newer generation whose chain contains the bound one (the chain is
 * on the wire for that); anything else is a split brain or a re-created primary.
 */
export function checkBoundPrimary(bound: Binding, offered: PrimaryIdentity): void {
  const offeredGeneration = currentGeneration(offered).id;
  if (bound.primarySite === offered.site && bound.generation === offeredGeneration) return;
  throw new HandshakeError(
    'primary-mismatch',
    `this secondary follows primary site ${bound.primarySite} generation ${bound.generation}; ` +
      `refused primary site ${offered.site} generation ${offeredGeneration} (${whoElse(bound, offered)}): point that primary at its own secondary, ` +
      "or wipe this secondary's data directory to let it follow the new primary",
  );
}

/** What another primary offering itself to a bound secondary is, as far as the chains tell. */
function whoElse(bound: Binding, offered: PrimaryIdentity): string {
  const relation = bound.history ? compareHistories(offered.generations, bound.history) : null;
  if (relation?.relation === 'diverged')
    return `a split brain: both histories share generation ${relation.lastCommon.id}, then generation ${relation.theirFirst.id} from cycle ${relation.theirFirst.startedAt} here and ${relation.myFirst.id} from cycle ${relation.myFirst.startedAt} there; docs/failover.md says how to pick the survivor`;
  if (relation?.relation === 'ahead')
    return `promoted from this secondary's history at cycle ${relation.supersededAt}: a secondary follows a promoted site only after being re-pointed (docs/failover.md, Limits)`;
  return 'another primary of the group, or one re-created with a new data directory';
}
