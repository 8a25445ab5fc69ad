/**
 * How data files are made: private to the owner (0600), and small state files replaced atomically
 * (a temporary file written and fsynced, renamed over the old one, the directory fsynced), so a
 * crash leaves the old content or the new, never a mix, and a reader never sees half a file.
 */
import { closeSync, fsyncSync, mkdirSync, openSync, renameSync, rmSync, writeSync } from 'node:fs';
import { dirname } from 'node:path';

/** Images, journal segments, site.json: readable and writable by the owner only. */
export const dataFileMode = 0o600;
/** Directories cyclerep creates for its data. */
export const dataDirectoryMode = 0o700;

/** Replaces `path` with `text` atomically and durably. */
export function writeFileAtomic(path: string, text: string): void {
  const directory = dirname(path);
  mkdirSync(directory, { recursive: true, mode: dataDirectoryMode });
  const temporary = `${path}.tmp`;
  // A leftover of an interrupted write may carry another mode: start from a new file.
  rmSync(temporary, { force: true });
  const fd = openSync(temporary, 'w', dataFileMode);
  try {
    const bytes = Buffer.from(text, 'utf8');
    for (let written = 0; written < bytes.length; )
      written += writeSync(fd, bytes, written, bytes.length - written);
    fsyncSync(fd);
  } finally {
    closeSync(fd);
  }
  renameSync(temporary, path);
  syncDirectory(directory);
}

/** Makes a rename or a creation in `directory` durable. */
export function syncDirectory(directory: string): void {
  const fd = openSync(directory, 'r');
  try {
    fsyncSync(fd);
  } finally {
    closeSync(fd);
  }
}
