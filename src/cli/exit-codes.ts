/**
 * The exit codes of every `cyclerep` command: one table, used by the code, the usage text and the
 * docs (README "Operations"), so that a service manager or a script can act on them.
 */
import { ConfigError, damagedDataCodes, StorageError } from '../core/errors.ts';

export const exitCodes = {
  /** The command did what it was asked; a site stopped cleanly. */
  ok: 0,
  /** A broken internal assumption (an assertion), or a check failed (simulator, demo's replica). */
  internal: 1,
  /** Bad usage or configuration: nothing was touched. */
  usage: 2,
  /** A storage failure at run time (disk full, I/O error): nothing acknowledged is lost; fix, restart. */
  storage: 3,
  /** The site could not start (an address in use, a file unreadable), or `status` reached no site. */
  start: 4,
  /** Damaged, missing or foreign data found on disk at start: refused, nothing changed; look first. */
  damaged: 5,
  /** An admin verb (promote) was refused by the site, or did not complete in time: the message says which. */
  refused: 6,
} as const;

export type ExitCode = (typeof exitCodes)[keyof typeof exitCodes];

/** The table as the usage text prints it. */
export const exitCodesText = `exit codes:
  0  success; a site stopped cleanly
  1  internal error (an assertion), or a check failed (simulator violation, demo replica)
  2  bad usage or configuration; nothing was touched
  3  storage failure at run time (disk full, I/O error); nothing acknowledged is lost
  4  the site could not start (address in use, unreadable certificate), or status reached no site
  5  damaged, missing or foreign data on disk at start; refused, nothing changed
  6  an admin verb (promote) was refused by the site, or its new role was not in force in time
`;

/**
 * Damaged data found at start (exit 5); a configuration at odds with the site's data (a volume
 * added, removed or resized against site.json) is bad configuration (exit 2); any other failure to
 * start is exit 4.
 */
export function startFailureCode(error: unknown): ExitCode {
  if (error instanceof ConfigError) return exitCodes.usage;
  return error instanceof StorageError && damagedDataCodes.has(error.code)
    ? exitCodes.damaged
    : exitCodes.start;
}
