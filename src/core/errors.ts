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

export type ConfigErrorCode = 'config-invalid';

/** A configuration value is wrong; the message names the key. */
export class ConfigError extends CyclerepError {
  declare readonly code: ConfigErrorCode;
  constructor(message: string) {
    super('config-invalid', message);
  }
}

export type WriteErrorCode = 'write-out-of-range' | 'write-misaligned' | 'write-unknown-volume';

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
]);

/** The environment failed us: a damaged journal, a volume file of the wrong size, an I/O error. */
export class StorageError extends CyclerepError {
  declare readonly code: StorageErrorCode;
  constructor(code: StorageErrorCode, message: string, options?: { cause?: unknown }) {
    super(code, message, options);
  }
}
