/**
 * A data directory changing role (docs/failover.md): a secondary's made a primary's (promotion),
 * a primary's made a secondary's (a switchover's old primary, later a rejoin). The conversion is
 * crash-safe through `role-change.json`, written atomically first with everything it needs: a start
 * that finds it finishes the conversion before anything else, and every step after it can run again.
 * The volumes are not touched: they hold the image at the cycle the change happens at.
 *
 * Steps: role-change.json; the journal's files removed (a secondary's cycles are all applied or were
 * never a consistent image; a primary's are all written back, and none is above the cycle); a new
 * journal of the new role that restates the cycle: a primary's switch(C) and collect(C), so capture
 * starts at C+1 and nothing at or below C is ever sent; a secondary's applied(C); on a secondary the
 * primary's changed-block bitmaps removed; site.json of the new role; role-change.json removed.
 */
import { join } from 'node:path';
import { StorageError } from '../core/errors.ts';
import { type Generation, generationChainProblem, isId, type SiteId } from '../core/identity.ts';
import type { PrimaryRecord, SecondaryRecord } from '../core/records.ts';
import type { CycleNumber } from '../core/types.ts';
import { type FileSystem, syncDirectorySync } from '../io/file-system.ts';
import type { PrimaryFileConfig, SecondaryFileConfig } from '../ops/config.ts';
import type { BlockRun } from '../protocol/frames.ts';
import { makeDirectoryDurable, writeFileAtomic } from './durable-file.ts';
import { primaryRecordCodec, type RecordCodec, secondaryRecordCodec } from './record-codec.ts';
import { SegmentJournal } from './segment-journal.ts';
import { isRunList, type VolumeRecord, writeSiteFile } from './site-file.ts';
import { trackingDirectory } from './tracking-file.ts';

interface PlanCommon {
  site: SiteId;
  /** The cycle whose image the volumes hold: the new role's numbering goes on from it. */
  fromCycle: CycleNumber;
  volumes: VolumeRecord[];
}

/** What a role change makes of a data directory, as role-change.json records it. */
export type RoleChangePlan =
  | (PlanCommon & {
      to: 'primary';
      /** The followed primary's chain extended by this site's new generation, the new one last. */
      generations: Generation[];
      config: PrimaryFileConfig;
    })
  | (PlanCommon & {
      to: 'secondary';
      /** This site's own chain as a primary: the primary it follows next must extend it at fromCycle+1. */
      generations: Generation[];
      /** The generation that supersedes it, when known (a switchover names it); null otherwise. */
      supersededBy: string | null;
      /**
       * The blocks it wrote after fromCycle, which the new primary never had (a rejoin), or null
       * (a switchover: none). With any, its image is not the group's until a resync made it so.
       */
      divergence: BlockRun[] | null;
      /** A split brain's loser gives up its history: it follows a diverged primary too. */
      acceptDiverged?: boolean;
      config: SecondaryFileConfig;
    });

export function roleChangeFilePath(dataDir: string): string {
  return join(dataDir, 'role-change.json');
}

/** A promotion: a new generation of this site that starts at the cycle after the applied one. */
export function planPromotion(options: {
  site: SiteId;
  applied: CycleNumber;
  history: readonly Generation[];
  newGenerationId: string;
  volumes: VolumeRecord[];
  config: PrimaryFileConfig;
}): RoleChangePlan {
  const generation = {
    id: options.newGenerationId,
    startedAt: options.applied + 1,
    primarySite: options.site,
  };
  return {
    to: 'primary',
    site: options.site,
    fromCycle: options.applied,
    generations: [...options.history.map((old) => ({ ...old })), generation],
    volumes: options.volumes,
    config: options.config,
  };
}

/** role-change.json, or null when no change is under way; a damaged one is refused, never guessed. */
export function readRoleChangeFile(fs: FileSystem, dataDir: string): RoleChangePlan | null {
  const path = roleChangeFilePath(dataDir);
  if (!fs.existsSync(path)) return null;
  let plan: RoleChangePlan;
  try {
    plan = JSON.parse(Buffer.from(fs.readFileSync(path)).toString('utf8')) as RoleChangePlan;
  } catch (cause) {
    throw new StorageError('site-file-corrupt', `${path}: unreadable: ${(cause as Error).message}`, {
      cause,
    });
  }
  const problem = planProblem(plan);
  if (problem) throw new StorageError('site-file-corrupt', `${path}: ${problem}; refusing to guess`);
  return plan;
}

function planProblem(plan: RoleChangePlan): string | null {
  if (plan === null || typeof plan !== 'object') return 'not an object';
  const to: unknown = plan.to;
  if (to !== 'primary' && to !== 'secondary') return `to: ${JSON.stringify(to)}`;
  if (!isId(plan.site)) return 'site: not 32 hex digits';
  if (!Number.isSafeInteger(plan.fromCycle) || plan.fromCycle < 0) return 'fromCycle: malformed';
  if (!Array.isArray(plan.volumes) || plan.volumes.length === 0) return 'volumes: expected a non-empty list';
  if (plan.config?.role !== plan.to) return `config: not a ${plan.to}'s configuration`;
  if (!Array.isArray(plan.generations)) return 'generations: not a list';
  if (plan.to === 'secondary') {
    if (plan.supersededBy !== null && !isId(plan.supersededBy)) return 'supersededBy: malformed';
    if (plan.divergence !== null && !isRunList(plan.divergence)) return 'divergence: malformed';
    return chainProblem(plan.site, plan.generations);
  }
  if (plan.generations.length < 2) return 'generations: fewer than two';
  if (plan.generations.at(-1)?.startedAt !== plan.fromCycle + 1)
    return 'generations: the new generation does not start after fromCycle';
  return chainProblem(plan.site, plan.generations);
}

function chainProblem(site: SiteId, generations: Generation[]): string | null {
  const problem = generationChainProblem(site, generations);
  return problem ? `generations: ${problem}` : null;
}

/** Records the plan durably, then carries it out (see the file comment). */
export async function changeRole(fs: FileSystem, dataDir: string, plan: RoleChangePlan): Promise<void> {
  writeFileAtomic(fs, roleChangeFilePath(dataDir), `${JSON.stringify(plan, null, 2)}\n`);
  await finishRoleChange(fs, dataDir, plan);
}

/** Carries out a recorded plan; safe to run again after a crash at any point of it. */
export async function finishRoleChange(fs: FileSystem, dataDir: string, plan: RoleChangePlan): Promise<void> {
  removeFilesIn(fs, join(dataDir, 'journal'));
  if (plan.to === 'primary') {
    await createJournal<PrimaryRecord>(fs, dataDir, plan.config.journal.segmentSize, primaryRecordCodec, [
      { kind: 'switch', closed: plan.fromCycle },
      { kind: 'collect', upTo: plan.fromCycle },
    ]);
    writeSiteFile(fs, dataDir, {
      role: 'primary',
      config: plan.config,
      site: plan.site,
      generations: plan.generations,
      volumes: plan.volumes,
      promotedFrom: { cycle: plan.fromCycle, generation: (plan.generations.at(-2) as Generation).id },
    });
  } else {
    // The bitmaps of the links this site fed as a primary mean nothing to a secondary.
    removeFilesIn(fs, trackingDirectory(dataDir));
    // Holding blocks of its own after the cycle, the image is no cut of the group's history.
    const consistent = (plan.divergence?.length ?? 0) === 0;
    await createJournal<SecondaryRecord>(fs, dataDir, plan.config.journal.segmentSize, secondaryRecordCodec, [
      { kind: 'applied', cycle: plan.fromCycle, consistent },
    ]);
    writeSiteFile(fs, dataDir, {
      role: 'secondary',
      config: plan.config,
      shape: {
        group: plan.config.group,
        blockBytes: plan.config.blockSize,
        volumes: plan.volumes.map(({ name, sizeBytes }) => ({ name, sizeBytes })),
      },
      site: plan.site,
      binding: null,
      volumes: plan.volumes,
      demotedFrom: {
        cycle: plan.fromCycle,
        generations: plan.generations,
        supersededBy: plan.supersededBy,
        ...(plan.divergence && !consistent ? { divergence: plan.divergence } : {}),
        ...(plan.acceptDiverged ? { acceptDiverged: true } : {}),
      },
    });
  }
  fs.unlinkSync(roleChangeFilePath(dataDir));
  syncDirectorySync(fs, dataDir);
}

function removeFilesIn(fs: FileSystem, directory: string): void {
  makeDirectoryDurable(fs, directory);
  for (const name of fs.readdirSync(directory)) fs.unlinkSync(join(directory, name));
  syncDirectorySync(fs, directory);
}

/** A new journal whose first segment begins with `restated` (its checkpoint), then syncs and closes. */
async function createJournal<R>(
  fs: FileSystem,
  dataDir: string,
  segmentBytesMax: number,
  codec: RecordCodec<R>,
  restated: R[],
): Promise<void> {
  const { journal } = SegmentJournal.open<R>({
    fs,
    directory: join(dataDir, 'journal'),
    segmentBytesMax,
    codec,
    checkpoint: () => restated,
  });
  // The first append opens the first segment, which begins with the checkpoint.
  await journal.append(restated.at(-1) as R);
  await journal.close();
}
