/**
 * A site's creation, made safe to interrupt. A new site's images are made only after a marker,
 * `<dataDir>/site-creation.json`, durably names the shape they are made for, and the marker goes
 * only once site.json records them. A creation cut short (a full disk, a failed sync, a crash)
 * leaves the marker, and the next start finishes it: the marker proves that, when it was written,
 * the data directory held no image and no journal, so every image it names that is there now was
 * made by this creation and never held a byte of data (nothing writes an image before site.json
 * records it and the journal opens). Finishing never truncates, overwrites or removes a file: an
 * image of the named size is kept as it is, an empty one (made, not yet sized) is sized; anything
 * else is refused, naming the path.
 */
import { join } from 'node:path';
import { StorageError } from '../core/errors.ts';
import { blockBytesProblem, nameProblem, volumeSizeProblem } from '../core/shape.ts';
import type { GroupShape } from '../core/types.ts';
import { type FileSystem, syncDirectorySync } from '../io/file-system.ts';
import { writeFileAtomic } from './durable-file.ts';

export const creationMarkerName = 'site-creation.json';

export function creationMarkerPath(dataDir: string): string {
  return join(dataDir, creationMarkerName);
}

/** Names, durably, the shape a new site is about to create its images for. */
export function writeCreationMarker(fs: FileSystem, dataDir: string, shape: GroupShape): void {
  const document = {
    creating: {
      group: shape.group,
      blockBytes: shape.blockBytes,
      volumes: shape.volumes.map(({ name, sizeBytes }) => ({ name, sizeBytes })),
    },
  };
  writeFileAtomic(fs, creationMarkerPath(dataDir), `${JSON.stringify(document, null, 2)}\n`);
}

/** The shape an interrupted creation was making, or null when no creation was interrupted. */
export function readCreationMarker(fs: FileSystem, dataDir: string): GroupShape | null {
  const path = creationMarkerPath(dataDir);
  if (!fs.existsSync(path)) return null;
  const bytes = fs.readFileSync(path);
  let document: unknown;
  try {
    document = JSON.parse(Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength).toString('utf8'));
  } catch (cause) {
    throw markerDamaged(path, `unreadable: ${(cause as Error).message}`, { cause });
  }
  const shape = (document as { creating?: unknown } | null)?.creating as GroupShape | undefined;
  const problem = shapeProblem(shape);
  if (problem) throw markerDamaged(path, problem);
  return shape as GroupShape;
}

/** Removes the marker once site.json records the site (a stale one, after a crash, as well). */
export function removeCreationMarker(fs: FileSystem, dataDir: string): void {
  const path = creationMarkerPath(dataDir);
  if (!fs.existsSync(path)) return;
  fs.unlinkSync(path);
  syncDirectorySync(fs, dataDir);
}

function markerDamaged(path: string, problem: string, options?: { cause: unknown }): StorageError {
  return new StorageError(
    'site-file-corrupt',
    `${path}: ${problem}; it records a site creation that was cut short, and no site.json exists. Refusing to guess: move the data directory away (or remove ${path} and the images it names, if nothing else uses them) to start afresh`,
    options,
  );
}

/** The marker's shape is held to the rules of a configuration: its names become file names. */
function shapeProblem(shape: GroupShape | undefined): string | null {
  if (typeof shape !== 'object' || shape === null) return 'creating: missing';
  if (typeof shape.group !== 'string') return 'creating.group: missing';
  const group = nameProblem(shape.group);
  if (group) return `creating.group: ${group}`;
  const block = blockBytesProblem(shape.blockBytes);
  if (block) return `creating.blockBytes: ${block}`;
  if (!Array.isArray(shape.volumes) || shape.volumes.length === 0)
    return 'creating.volumes: expected a non-empty list';
  const names = new Set<string>();
  for (const [index, volume] of shape.volumes.entries()) {
    const name = typeof volume?.name === 'string' ? nameProblem(volume.name) : 'missing';
    if (name) return `creating.volumes.${index}.name: ${name}`;
    if (names.has(volume.name)) return `creating.volumes.${index}.name: "${volume.name}" twice`;
    names.add(volume.name);
    const size = volumeSizeProblem(volume.sizeBytes, shape.blockBytes);
    if (size) return `creating.volumes.${index}.sizeBytes: ${size}`;
  }
  return null;
}
