/** What every scenario gets: the run's mode, a scratch directory, the report, and shared figures. */

import { randomBytes } from 'node:crypto';
import { once } from 'node:events';
import { createWriteStream, statfsSync } from 'node:fs';
import { join } from 'node:path';
import type { Report } from './report.ts';

export interface BenchContext {
  quick: boolean;
  dir: string;
  report: Report;
  /** 4 KiB random-write IOPS at depth 16 of cyclerep replicating to a local secondary (scenario 1). */
  frontDoorIops?: number;
}

export const mib = 1024 * 1024;
export const gib = 1024 * mib;

/** A size for a table: whole GiB from 1 GiB up, else MiB. */
export function sizeLabel(bytes: number): string {
  return bytes >= gib ? `${bytes / gib} GiB` : `${bytes / mib} MiB`;
}

/** What the disk under `directory` still holds for this user. */
export function freeBytes(directory: string): number {
  const { bavail, bsize } = statfsSync(directory);
  return bavail * bsize;
}

/** A file of random (incompressible, non-zero) bytes, made once per run. */
export async function randomImage(context: BenchContext, bytes: number): Promise<string> {
  const path = join(context.dir, `random-${bytes}.img`);
  const stream = createWriteStream(path);
  for (let written = 0; written < bytes; written += 4 * mib) {
    if (!stream.write(randomBytes(Math.min(4 * mib, bytes - written)))) await once(stream, 'drain');
  }
  stream.end();
  await once(stream, 'finish');
  return path;
}
