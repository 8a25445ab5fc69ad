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

/** Replaces `path` with `content` (text as UTF-8) atomically and durably. */
export function writeFileAtomic(fs: FileSystem, path: string, content: string | Uint8Array): void {
  const directory = dirname(path);
  fs.mkdirSync(directory, dataDirectoryMode);
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
