/**
 * `<dataDir>/site.json`: what a data directory holds (role, the validated configuration, for a
 * secondary the volumes it took from the primary, and for every site the volumes it created), so
 * that offline tools such as `cyclerep recover --data-dir D` need nothing else.
 *
 * The volume records are the site's fixed list: a volume's id is its position in that list,
 * assigned once when the site is created, and it is the index journal records and wire frames
 * carry. The configuration's list is matched against it by name, so reordering it changes nothing;
 * adding, removing or resizing a volume is refused. Each record keeps the image's size and inode,
 * so a missing, emptied, resized or replaced image is recognised at start (docs/storage.md).
 */
import { join } from 'node:path';
import { ConfigError, StorageError } from '../core/errors.ts';
import {
  type Binding,
  type FencedBy,
  type Generation,
  generationChainProblem,
  isBinding,
  isFencedBy,
  isGeneration,
  isId,
  type SiteId,
} from '../core/identity.ts';
import type { GroupShape } from '../core/types.ts';
import type { FileSystem } from '../io/file-system.ts';
import type { PrimaryFileConfig, SecondaryFileConfig } from '../ops/config.ts';
import type { BlockRun } from '../protocol/frames.ts';
import { writeFileAtomic } from './durable-file.ts';

/** One volume as its site created it. */
export interface VolumeRecord {
  /** Its position in the site's list: the volume index of journal records and frames. */
  id: number;
  name: string;
  sizeBytes: number;
  /** The image's st_ino as a decimal string, to recognise a file put in its place. */
  inode: string;
}

/** A primary's record that it was superseded (docs/failover.md, "Fencing"), and when it learnt it. */
export interface FencedRecord extends FencedBy {
  /** When this primary learnt it, ISO 8601. */
  at: string;
}

/**
 * A planned switchover this primary asked its secondary to take (docs/failover.md): recorded before
 * the frame goes, so that a restart before the data directory became a secondary's takes no writes
 * (the secondary may lead already) and asks again.
 */
export interface HandoverRecord {
  secondary: string;
  /** The generation the secondary was asked to lead. */
  generation: string;
  /** The cycle it was asked to take over after. */
  cycle: number;
}

/**
 * `site` is the site's identity, made at creation; a primary keeps its generation chain, a
 * secondary the primary and generation it follows (null until its first accepted hello). Files
 * written before identities existed lack them; the node then makes them and writes them back.
 */
export type SiteFile =
  | {
      role: 'primary';
      config: PrimaryFileConfig;
      site?: SiteId;
      generations?: Generation[];
      volumes?: VolumeRecord[];
      /**
       * Set when this site became a primary by promotion (docs/failover.md): the applied cycle its
       * generation follows and the generation it superseded. It lets a config of the secondary
       * role start this site as the primary it now is.
       */
      promotedFrom?: { cycle: number; generation: string };
      /** Present once this primary learnt it was superseded: it starts fenced (takes no writes). */
      fencedBy?: FencedRecord;
      /** Present while a switchover asked of its secondary is unanswered: it takes no writes. */
      handover?: HandoverRecord;
    }
  | {
      role: 'secondary';
      config: SecondaryFileConfig;
      shape: GroupShape | null;
      site?: SiteId;
      binding?: Binding | null;
      /** Absent until the volumes exist (a secondary may wait for its primary's first hello). */
      volumes?: VolumeRecord[];
      /**
       * Set when this site was a primary and became a secondary (docs/failover.md): the cycle its
       * volumes hold, its own chain as a primary (the primary it follows next must extend it right
       * after that cycle) and, when known, the generation that superseded it.
       */
      demotedFrom?: DemotedRecord;
    };

/** How a site that was a primary became a secondary: see SiteFile's demotedFrom. */
export interface DemotedRecord {
  cycle: number;
  generations: Generation[];
  supersededBy: string | null;
  /** The blocks it wrote after the cycle (a rejoin): stated to the primary until a resync undid them. */
  divergence?: BlockRun[];
  /** A split brain's loser: it follows a primary whose chain diverged from its own too. */
  acceptDiverged?: boolean;
}

/** A list of block runs as site.json and role-change.json keep them. */
export function isRunList(value: unknown): value is BlockRun[] {
  return (
    Array.isArray(value) &&
    value.every(
      (run: BlockRun) =>
        typeof run === 'object' &&
        run !== null &&
        Number.isSafeInteger(run.volume) &&
        run.volume >= 0 &&
        Number.isSafeInteger(run.block) &&
        run.block >= 0 &&
        Number.isSafeInteger(run.blockCount) &&
        run.blockCount >= 1,
    )
  );
}

/** A site's volumes in id order, as recorded; `inode` null for a site.json older than the records. */
export interface RecordedShape {
  group: string;
  blockBytes: number;
  volumes: { name: string; sizeBytes: number; inode: string | null }[];
}

/** The shape a configuration asks for; `volumes` absent when a secondary takes them from its primary. */
export interface ConfiguredShape {
  group: string;
  blockBytes: number;
  volumes?: { name: string; sizeBytes: number }[] | undefined;
}

export function siteFilePath(dataDir: string): string {
  return join(dataDir, 'site.json');
}

export function imagePath(dataDir: string, volume: string): string {
  return join(dataDir, 'volumes', `${volume}.img`);
}

/** A file's bytes as UTF-8 text, decoded as node:fs decodes `readFileSync(path, 'utf8')`. */
function readText(fs: FileSystem, path: string): string {
  const bytes = fs.readFileSync(path);
  return Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength).toString('utf8');
}

export function readSiteFile(fs: FileSystem, dataDir: string): SiteFile | null {
  const path = siteFilePath(dataDir);
  if (!fs.existsSync(path)) return null;
  let document: unknown;
  try {
    document = JSON.parse(readText(fs, path));
  } catch (cause) {
    throw new StorageError('site-file-corrupt', `${path}: unreadable: ${(cause as Error).message}`, {
      cause,
    });
  }
  const problem = problemOf(document);
  if (problem) throw new StorageError('site-file-corrupt', `${path}: ${problem}; refusing to guess`);
  return document as SiteFile;
}

/** What makes a parsed site.json unusable, or null; never used silently when damaged. */
export function problemOf(document: unknown): string | null {
  const site = document as {
    role?: unknown;
    config?: { role?: unknown; dataDir?: unknown };
    shape?: unknown;
    volumes?: unknown;
  };
  if (site === null || typeof site !== 'object') return 'not an object';
  if (site.role !== 'primary' && site.role !== 'secondary') return `role: ${JSON.stringify(site.role)}`;
  if (typeof site.config !== 'object' || site.config === null || site.config.role !== site.role)
    return 'config: missing or of another role';
  if (typeof site.config.dataDir !== 'string') return 'config.dataDir: missing';
  if (site.role === 'secondary' && site.shape !== null && !isShape(site.shape)) return 'shape: malformed';
  return identityProblemOf(document as SiteFile) ?? volumesProblemOf(document as SiteFile);
}

/** Volume records, when present, must be whole and, on a secondary, agree with its shape. */
function volumesProblemOf(site: SiteFile): string | null {
  if (site.volumes === undefined) return null;
  const volumesProblem = volumeRecordsProblem(site.volumes);
  if (volumesProblem) return volumesProblem;
  if (site.role === 'secondary') {
    const shape = site.shape;
    const records = site.volumes;
    const agree =
      shape !== null &&
      shape.volumes.length === records.length &&
      shape.volumes.every(
        (volume, id) => volume.name === records[id]?.name && volume.sizeBytes === records[id]?.sizeBytes,
      );
    if (!agree) return 'volumes: do not agree with shape.volumes';
  }
  return null;
}

function volumeRecordsProblem(value: unknown): string | null {
  if (!Array.isArray(value) || value.length === 0) return 'volumes: expected a non-empty list';
  const names = new Set<string>();
  for (const [index, record] of (value as Partial<VolumeRecord>[]).entries()) {
    const where = `volumes.${index}`;
    if (record === null || typeof record !== 'object') return `${where}: not an object`;
    if (record.id !== index) return `${where}.id: ${JSON.stringify(record.id)}, expected ${index}`;
    if (typeof record.name !== 'string' || record.name.length === 0) return `${where}.name: malformed`;
    if (names.has(record.name)) return `${where}.name: "${record.name}" twice`;
    names.add(record.name);
    if (!Number.isSafeInteger(record.sizeBytes) || (record.sizeBytes as number) <= 0)
      return `${where}.sizeBytes: ${JSON.stringify(record.sizeBytes)}`;
    if (typeof record.inode !== 'string' || !/^\d+$/.test(record.inode))
      return `${where}.inode: ${JSON.stringify(record.inode)}`;
  }
  return null;
}

/** The identity fields, when present, must be whole: a damaged identity is never replaced by a new one. */
function identityProblemOf(site: SiteFile): string | null {
  if (site.site !== undefined && !isId(site.site)) return 'site: not 32 hex digits';
  if (site.role === 'primary' && (site.site === undefined) !== (site.generations === undefined))
    return 'site and generations: one without the other';
  if (site.role === 'primary' && site.site !== undefined) {
    if (!Array.isArray(site.generations)) return 'generations: not a list';
    const problem = generationChainProblem(site.site, site.generations);
    if (problem) return `generations: ${problem}`;
  }
  const roleChange = roleChangeProblemOf(site);
  if (roleChange) return roleChange;
  if (site.role === 'primary' && site.fencedBy !== undefined) {
    // Never read past: a fenced primary that forgot it would take writes the group has lost.
    if (!isFencedBy(site.fencedBy) || !isTimestamp(site.fencedBy.at))
      return `fencedBy: malformed (expected site, generation, startedAt and at): ${JSON.stringify(site.fencedBy)}`;
    if (site.site === undefined) return 'fencedBy: without the site and generations it fences';
  }
  if (site.role === 'primary' && site.handover !== undefined && !isHandover(site.handover))
    // Never read past either: a primary that forgot it asked would take writes the new one lacks.
    return `handover: malformed (expected secondary, generation and cycle): ${JSON.stringify(site.handover)}`;
  if (
    site.role === 'secondary' &&
    site.binding !== undefined &&
    site.binding !== null &&
    !isBinding(site.binding)
  )
    return 'binding: malformed';
  return null;
}

function isHandover(value: unknown): boolean {
  const handover = value as HandoverRecord;
  return (
    typeof handover === 'object' &&
    handover !== null &&
    typeof handover.secondary === 'string' &&
    handover.secondary.length > 0 &&
    isId(handover.generation) &&
    Number.isSafeInteger(handover.cycle) &&
    handover.cycle >= 0
  );
}

function isTimestamp(value: unknown): boolean {
  return typeof value === 'string' && !Number.isNaN(Date.parse(value));
}

/** How a site changed role (docs/failover.md), when recorded, must agree with its chain. */
function roleChangeProblemOf(site: SiteFile): string | null {
  if (site.role === 'primary' && site.promotedFrom !== undefined) {
    const promoted = site.promotedFrom;
    const current = site.generations?.at(-1);
    if (
      promoted === null ||
      typeof promoted !== 'object' ||
      !Number.isSafeInteger(promoted.cycle) ||
      !isId(promoted.generation) ||
      current?.startedAt !== promoted.cycle + 1 ||
      site.generations?.at(-2)?.id !== promoted.generation
    )
      return 'promotedFrom: malformed or at odds with generations';
  }
  if (site.role === 'secondary' && site.demotedFrom !== undefined) {
    const demoted = site.demotedFrom;
    if (
      demoted === null ||
      typeof demoted !== 'object' ||
      !Number.isSafeInteger(demoted.cycle) ||
      !Array.isArray(demoted.generations) ||
      demoted.generations.length === 0 ||
      !demoted.generations.every(isGeneration) ||
      (demoted.supersededBy !== null && !isId(demoted.supersededBy)) ||
      (demoted.divergence !== undefined && !isRunList(demoted.divergence)) ||
      (demoted.acceptDiverged !== undefined && typeof demoted.acceptDiverged !== 'boolean')
    )
      return 'demotedFrom: malformed';
  }
  return null;
}

function isShape(value: unknown): boolean {
  const shape = value as GroupShape;
  return (
    typeof shape === 'object' &&
    shape !== null &&
    typeof shape.group === 'string' &&
    Number.isSafeInteger(shape.blockBytes) &&
    shape.blockBytes > 0 &&
    Array.isArray(shape.volumes) &&
    shape.volumes.every(
      (volume) =>
        typeof volume?.name === 'string' && Number.isSafeInteger(volume.sizeBytes) && volume.sizeBytes > 0,
    )
  );
}

/**
 * The volumes a site holds, in id order, or null when it has none yet (a secondary waiting for its
 * primary). A site.json written before volume records existed gives its list in the order the
 * journal used (the primary's configuration then, the secondary's adopted shape), inode unknown.
 */
export function recordedShape(site: SiteFile): RecordedShape | null {
  if (site.role === 'secondary' && site.shape === null) return null;
  const group = site.role === 'secondary' && site.shape ? site.shape.group : site.config.group;
  const blockBytes = site.role === 'secondary' && site.shape ? site.shape.blockBytes : site.config.blockSize;
  if (site.volumes)
    return {
      group,
      blockBytes,
      volumes: site.volumes.map(({ name, sizeBytes, inode }) => ({ name, sizeBytes, inode })),
    };
  const legacy =
    site.role === 'secondary' && site.shape
      ? site.shape.volumes
      : (site.config.volumes ?? []).map(({ name, size }) => ({ name, sizeBytes: size }));
  return { group, blockBytes, volumes: legacy.map((volume) => ({ ...volume, inode: null })) };
}

/**
 * Checks a configuration against the site it opens: same group and block size, and the same
 * volumes by name and size (order does not matter). Throws a ConfigError naming every difference.
 */
export function checkConfigAgainstSite(
  recorded: RecordedShape,
  configured: ConfiguredShape,
  dataDir: string,
): void {
  const site = siteFilePath(dataDir);
  const problems: string[] = [];
  if (configured.group !== recorded.group)
    problems.push(
      `group: the configuration says "${configured.group}", this site belongs to "${recorded.group}"`,
    );
  if (configured.blockBytes !== recorded.blockBytes)
    problems.push(
      `blockSize: the configuration says ${configured.blockBytes}, this site was created with ${recorded.blockBytes}`,
    );
  if (configured.volumes) {
    const held = new Map(recorded.volumes.map((volume) => [volume.name, volume.sizeBytes]));
    const asked = new Set(configured.volumes.map((volume) => volume.name));
    for (const volume of configured.volumes) {
      const sizeBytes = held.get(volume.name);
      if (sizeBytes === undefined)
        problems.push(
          `volumes: "${volume.name}" is not a volume of this site (it holds ${[...held.keys()].join(', ')}); a volume cannot be added to an existing site`,
        );
      else if (sizeBytes !== volume.sizeBytes)
        problems.push(
          `volumes: "${volume.name}" is ${volume.sizeBytes} bytes in the configuration, this site created it with ${sizeBytes}; a volume cannot be resized`,
        );
    }
    for (const name of held.keys())
      if (!asked.has(name))
        problems.push(
          `volumes: "${name}" is missing from the configuration, but this site holds it (${imagePath(dataDir, name)}); a volume cannot be removed from an existing site`,
        );
  }
  if (problems.length > 0)
    throw new ConfigError(problems.map((problem) => `${problem} (recorded in ${site})`).join('\n'));
}

/**
 * Replaces site.json atomically and durably (temporary file, fsync, rename, directory fsync),
 * 0600. Callers write it only once every check of a start passed: a refused start changes nothing.
 */
export function writeSiteFile(fs: FileSystem, dataDir: string, site: SiteFile): void {
  writeFileAtomic(fs, siteFilePath(dataDir), `${JSON.stringify(site, null, 2)}\n`);
}

/** writeSiteFile, skipped when site.json already holds exactly this (a start that changed nothing). */
export function writeSiteFileIfChanged(fs: FileSystem, dataDir: string, site: SiteFile): void {
  const text = `${JSON.stringify(site, null, 2)}\n`;
  try {
    if (readText(fs, siteFilePath(dataDir)) === text) return;
  } catch {
    // absent or unreadable: written below
  }
  writeFileAtomic(fs, siteFilePath(dataDir), text);
}
