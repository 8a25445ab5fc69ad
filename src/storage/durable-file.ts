/**
 * How data files are made: private to the owner (0600), and small state files replaced atomically
 * (a temporary file written and fsynced, renamed over the old one, the directory fsynced), so a
 * crash leaves the old content or the new, never a mix, and a reader never sees half a file.
 */
import { dirname } from 'node:path';
import { type FileSystem, syncDirectorySync } from '../io/file-system.ts';

/** Images, journal segments, site.json: readable and writable by the owner only. */
export const dataFileMode = 0o600;
/** Directories cyclerep creates for its data. */
export const dataDirectoryMode = 0o700;

/**
 * Creates `directory` and any missing parent, durably: each one created has its entry fsynced in its
 * parent, since a machine crash may otherwise take a new directory away, with all that was synced
 * inside it. One that exists is left as it is.
 */
export function makeDirectoryDurable(fs: FileSystem, directory: string): void {
  const missing: string[] = [];
  for (let path = directory; !fs.existsSync(path); path = dirname(path)) missing.unshift(path);
  if (missing.length === 0) return;
  fs.mkdirSync(directory, dataDirectoryMode);
  for (const created of missing) syncDirectorySync(fs, dirname(created));
}

/** Replaces `path` with `content` (text as UTF-8) atomically and durably. */
export function writeFileAtomic(fs: FileSystem, path: string, content: string | Uint8Array): void {
  const directory = dirname(path);
  makeDirectoryDurable(fs, directory);
  const temporary = `${path}.tmp`;
  // A leftover of an interrupted write may carry another mode: start from a new file.
  fs.removeIfPresentSync(temporary);
  const fd = fs.openSync(temporary, 'w', dataFileMode);
  try {
    const bytes = typeof content === 'string' ? Buffer.from(content, 'utf8') : content;
    for (let written = 0; written < bytes.length; )
      written += fs.writeSync(fd, bytes, written, bytes.length - written, null);
    fs.fsyncSync(fd);
  } finally {
    fs.closeSync(fd);
  }
  fs.renameSync(temporary, path);
  syncDirectorySync(fs, directory);
}
