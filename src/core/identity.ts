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
      `refused primary site ${offered.site} generation ${offeredGeneration} (another primary of the ` +
      'group, or one re-created with a new data directory): point that primary at its own secondary, ' +
      "or wipe this secondary's data directory to let it follow the new primary",
  );
}
