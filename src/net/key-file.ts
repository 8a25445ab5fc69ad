/**
 * A private key (a TLS key or a pre-shared key) must be readable by its owner only: a key that
 * group or others can read is refused, naming the file and its mode, rather than used.
 */
import { statSync } from 'node:fs';

/** Throws unless `path` is readable by its owner only (no group or other permission bits). */
export function assertPrivateKeyFile(path: string): void {
  const mode = statSync(path).mode;
  if ((mode & 0o077) !== 0)
    throw new Error(`${path} is readable by others (mode ${(mode & 0o777).toString(8)}); chmod 600 it`);
}
