/**
 * Typed errors. Everything a peer or a user can cause is one of these, with a stable `code`;
 * a broken internal assumption is an assertion instead (see assert.ts).
 */
export class CyclerepError extends Error {
  readonly code: string;
  constructor(code: string, message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.code = code;
    this.name = new.target.name;
  }
}

export type ProtocolErrorCode =
  | 'frame-bad-magic'
  | 'frame-header-crc'
  | 'frame-payload-crc'
  | 'frame-too-large'
  | 'frame-unknown-type'
  | 'frame-bad-field'
  | 'frame-trailing-bytes'
  | 'frame-truncated'
  | 'unexpected-frame'
  | 'cycle-out-of-order'
  | 'packet-invalid'
  | 'cycle-digest-mismatch'
  /** A hello of another protocol version: its layout cannot be read, so it is refused by its version. */
  | 'version-unsupported';

/** The peer sent bytes or frames that break the site-to-site protocol. The link fails. */
export class ProtocolError extends CyclerepError {
  declare readonly code: ProtocolErrorCode;
  constructor(code: ProtocolErrorCode, message: string, options?: { cause?: unknown }) {
    super(code, message, options);
  }
}

export type HandshakeErrorCode =
  | 'version-unsupported'
  | 'group-mismatch'
  | 'block-size-mismatch'
  | 'volumes-mismatch'
  | 'journal-gap'
  /** A name, size or identity in the hello breaks the rules a config must follow. */
  | 'hello-invalid'
  /** The hello comes from a primary site or generation other than the one this secondary follows. */
  | 'primary-mismatch';

/** The peers are not of one group, or cannot continue from where they are. Retrying will not help. */
export class HandshakeError extends CyclerepError {
  declare readonly code: HandshakeErrorCode;
  constructor(code: HandshakeErrorCode, message: string) {
    super(code, message);
  }
}

/**
 * The numbers of a resync the secondary has no room to stage: what it holds staged, what its disk
 * has free, and what the whole resync may come to.
 */
export interface StagingShortage {
  /** The image the read path shows (consistent: a resync is staged, not applied). */
  applied: number;
  stored: number;
  /** Block data of stored cycles not applied yet and of cycles arriving, in the journal. */
  stagedBytes: number;
  /** Free on the journal's file system, less what was appended since it was measured. */
  freeBytes: number;
  /** What staging leaves free at least (room for markers, site.json and the like). */
  freeBytesMin: number;
  /** The volumes' size: the most a resync's copy may bring, before the cycles written meanwhile. */
  volumeBytes: number;
}

/**
 * The secondary refuses to stage more of a resync: its disk would fill first. The primary hears it
 * as an ERROR frame (code `staging-space-short`, the numbers in the message) and retries rarely.
 */
export class StagingSpaceError extends CyclerepError {
  declare readonly code: 'staging-space-short';
  constructor(
    readonly shortage: StagingShortage,
    message: string,
  ) {
    super('staging-space-short', message);
  }
}

export type ConfigErrorCode = 'config-invalid';

/** A configuration value is wrong; the message names the key. */
export class ConfigError extends CyclerepError {
  declare readonly code: ConfigErrorCode;
  constructor(message: string) {
    super('config-invalid', message);
  }
}

export type WriteErrorCode =
  | 'write-out-of-range'
  | 'write-misaligned'
  | 'write-unknown-volume'
  /** The primary learnt it was superseded by a promoted site: it takes no writes (docs/failover.md). */
  | 'fenced'
  /** A planned switchover is under way: the primary takes no more writes (docs/failover.md). */
  | 'switching-over'
  /** A split brain's resolution gives this site's history up: it takes no more writes (docs/failover.md). */
  | 'giving-up-history';

/** A source asked for a write the group cannot take. Only that write fails. */
export class WriteError extends CyclerepError {
  declare readonly code: WriteErrorCode;
  constructor(code: WriteErrorCode, message: string) {
    super(code, message);
  }
}

export type StorageErrorCode =
  | 'journal-corrupt'
  | 'site-file-corrupt'
  | 'volume-missing'
  | 'volume-size-mismatch'
  | 'volume-foreign'
  | 'tracking-file-corrupt'
  | 'storage-io';

/**
 * Codes of data on disk found damaged, missing or foreign at start: the site refuses to start with
 * exit code 5 and changes nothing; an operator must look.
 */
export const damagedDataCodes: ReadonlySet<string> = new Set<StorageErrorCode>([
  'journal-corrupt',
  'site-file-corrupt',
  'volume-missing',
  'volume-size-mismatch',
  'volume-foreign',
  'tracking-file-corrupt',
]);

/** The environment failed us: a damaged journal, a volume file of the wrong size, an I/O error. */
export class StorageError extends CyclerepError {
  declare readonly code: StorageErrorCode;
  constructor(code: StorageErrorCode, message: string, options?: { cause?: unknown }) {
    super(code, message, options);
  }
}

/** errno codes that mean the disk (or the user's quota on it) is full. */
const diskFullCodes = new Set(['ENOSPC', 'EDQUOT']);

/** The `code` of an error and of every error in its `cause` chain, outermost first. */
export function codesOf(error: unknown): string[] {
  const codes: string[] = [];
  for (let at = error, depth = 0; at instanceof Error && depth < 8; depth++) {
    const code = (at as { code?: unknown }).code;
    if (typeof code === 'string') codes.push(code);
    at = at.cause;
  }
  return codes;
}

/** Whether a failure comes from a full disk (ENOSPC, EDQUOT), however deeply it was wrapped. */
export function isDiskFull(error: unknown): boolean {
  return codesOf(error).some((code) => diskFullCodes.has(code));
}

/**
 * Why a site stopped at run time: its storage failed. Shown in status as `fault` and logged; the
 * process then exits with the storage exit code (3). Nothing acknowledged is lost: free space (or
 * replace the disk) and restart.
 */
export interface StorageFault {
  kind: 'disk-full' | 'io-error';
  message: string;
  /** When it happened, ISO 8601. */
  at: string;
}

export function storageFaultOf(error: unknown, at: Date): StorageFault {
  const message = error instanceof Error ? error.message : String(error);
  return { kind: isDiskFull(error) ? 'disk-full' : 'io-error', message, at: at.toISOString() };
}
