/**
 * A secondary's data directory made a primary's (docs/failover.md, "Unplanned failover"). The
 * conversion is crash-safe through `promotion.json`, written atomically first with everything the
 * conversion needs: a start that finds it finishes the conversion before anything else, and every
 * step after it can run again. The volumes are not touched: they hold the applied image the new
 * generation starts from.
 *
 * Steps: promotion.json; the receive journal's files removed (every cycle in it is applied or was
 * never a consistent image); a primary journal whose first records restate switch(C) and
 * collect(C), so capture starts at C+1 and no cycle at or below C is ever sent; site.json of a
 * primary with the extended chain; promotion.json removed.
 */
import { join } from 'node:path';
import { StorageError } from '../core/errors.ts';
import { type Generation, generationChainProblem, isId, type SiteId } from '../core/identity.ts';
import type { PrimaryRecord } from '../core/records.ts';
import type { CycleNumber } from '../core/types.ts';
import { type FileSystem, syncDirectorySync } from '../io/file-system.ts';
import type { PrimaryFileConfig } from '../ops/config.ts';
import { makeDirectoryDurable, writeFileAtomic } from './durable-file.ts';
import { primaryRecordCodec } from './record-codec.ts';
import { SegmentJournal } from './segment-journal.ts';
import { type VolumeRecord, writeSiteFile } from './site-file.ts';

/** What a promotion makes of a data directory, as promotion.json records it. */
export interface PromotionPlan {
  site: SiteId;
  /** The applied cycle the new generation follows: its image is what the volumes hold. */
  fromCycle: CycleNumber;
  /** The followed primary's chain extended by the new generation (this site's), the new one last. */
  generations: Generation[];
  volumes: VolumeRecord[];
  /** The site's configuration as a primary (configInRole). */
  config: PrimaryFileConfig;
}

export function promotionFilePath(dataDir: string): string {
  return join(dataDir, 'promotion.json');
}

/**
 * The plan of a promotion from the followed primary's chain: a new generation of this site that
 * starts at the cycle after the applied one.
 */
export function planPromotion(options: {
  site: SiteId;
  applied: CycleNumber;
  history: readonly Generation[];
  newGenerationId: string;
  volumes: VolumeRecord[];
  config: PrimaryFileConfig;
}): PromotionPlan {
  const generation = {
    id: options.newGenerationId,
    startedAt: options.applied + 1,
    primarySite: options.site,
  };
  return {
    site: options.site,
    fromCycle: options.applied,
    generations: [...options.history.map((old) => ({ ...old })), generation],
    volumes: options.volumes,
    config: options.config,
  };
}

/** promotion.json, or null when no promotion is under way; a damaged one is refused, never guessed. */
export function readPromotionFile(fs: FileSystem, dataDir: string): PromotionPlan | null {
  const path = promotionFilePath(dataDir);
  if (!fs.existsSync(path)) return null;
  let plan: PromotionPlan;
  try {
    plan = JSON.parse(Buffer.from(fs.readFileSync(path)).toString('utf8')) as PromotionPlan;
  } catch (cause) {
    throw new StorageError('site-file-corrupt', `${path}: unreadable: ${(cause as Error).message}`, {
      cause,
    });
  }
  const problem = planProblem(plan);
  if (problem) throw new StorageError('site-file-corrupt', `${path}: ${problem}; refusing to guess`);
  return plan;
}

function planProblem(plan: PromotionPlan): string | null {
  if (plan === null || typeof plan !== 'object') return 'not an object';
  if (!isId(plan.site)) return 'site: not 32 hex digits';
  if (!Number.isSafeInteger(plan.fromCycle) || plan.fromCycle < 0) return 'fromCycle: malformed';
  if (!Array.isArray(plan.generations) || plan.generations.length < 2) return 'generations: fewer than two';
  const chainProblem = generationChainProblem(plan.site, plan.generations);
  if (chainProblem) return `generations: ${chainProblem}`;
  if (plan.generations.at(-1)?.startedAt !== plan.fromCycle + 1)
    return 'generations: the new generation does not start after fromCycle';
  if (!Array.isArray(plan.volumes) || plan.volumes.length === 0) return 'volumes: expected a non-empty list';
  if (plan.config?.role !== 'primary') return 'config: not a primary configuration';
  return null;
}

/** Records the plan durably, then carries it out (see the file comment). */
export async function promoteDataDir(fs: FileSystem, dataDir: string, plan: PromotionPlan): Promise<void> {
  writeFileAtomic(fs, promotionFilePath(dataDir), `${JSON.stringify(plan, null, 2)}\n`);
  await finishPromotion(fs, dataDir, plan);
}

/** Carries out a recorded plan; safe to run again after a crash at any point of it. */
export async function finishPromotion(fs: FileSystem, dataDir: string, plan: PromotionPlan): Promise<void> {
  const journalDirectory = join(dataDir, 'journal');
  makeDirectoryDurable(fs, journalDirectory);
  for (const name of fs.readdirSync(journalDirectory)) fs.unlinkSync(join(journalDirectory, name));
  syncDirectorySync(fs, journalDirectory);
  await createPrimaryJournal(fs, journalDirectory, plan);
  writeSiteFile(fs, dataDir, {
    role: 'primary',
    config: plan.config,
    site: plan.site,
    generations: plan.generations,
    volumes: plan.volumes,
    promotedFrom: {
      cycle: plan.fromCycle,
      generation: (plan.generations.at(-2) as Generation).id,
    },
  });
  fs.unlinkSync(promotionFilePath(dataDir));
  syncDirectorySync(fs, dataDir);
}

/** A primary journal that starts after fromCycle: nothing at or below it is captured or sent again. */
async function createPrimaryJournal(fs: FileSystem, directory: string, plan: PromotionPlan): Promise<void> {
  const restated: PrimaryRecord[] = [
    { kind: 'switch', closed: plan.fromCycle },
    { kind: 'collect', upTo: plan.fromCycle },
  ];
  const { journal } = SegmentJournal.open<PrimaryRecord>({
    fs,
    directory,
    segmentBytesMax: plan.config.journal.segmentSize,
    codec: primaryRecordCodec,
    checkpoint: () => restated,
  });
  // The first append opens the first segment, which begins with the checkpoint above.
  await journal.append({ kind: 'switch', closed: plan.fromCycle });
  await journal.close();
}
