/**
 * Errors shaped as node:fs throws them (code, errno, syscall, path, and the same message), so the
 * storage code classifies a simulated failure exactly as it would a real one.
 */

/** Linux errno numbers (negative, as libuv reports them) and libuv's descriptions. */
const errnos = {
  ENOENT: { errno: -2, description: 'no such file or directory' },
  EIO: { errno: -5, description: 'i/o error' },
  EBADF: { errno: -9, description: 'bad file descriptor' },
  EEXIST: { errno: -17, description: 'file already exists' },
  ENOTDIR: { errno: -20, description: 'not a directory' },
  EISDIR: { errno: -21, description: 'illegal operation on a directory' },
  EINVAL: { errno: -22, description: 'invalid argument' },
  ENOSPC: { errno: -28, description: 'no space left on device' },
  ENOTEMPTY: { errno: -39, description: 'directory not empty' },
} as const;

export type FsErrorCode = keyof typeof errnos;

/** The system call a failure names, as node:fs names it. */
export type Syscall =
  | 'open'
  | 'close'
  | 'read'
  | 'write'
  | 'fsync'
  | 'fdatasync'
  | 'ftruncate'
  | 'fstat'
  | 'stat'
  | 'scandir'
  | 'mkdir'
  | 'rename'
  | 'unlink'
  | 'statfs';

export interface SimFsError extends Error {
  code: FsErrorCode;
  errno: number;
  syscall: Syscall;
  path?: string;
  dest?: string;
}

/** `ENOENT: no such file or directory, open '/a'`, or `..., rename '/a' -> '/b'`, or `..., write`. */
export function fsError(code: FsErrorCode, syscall: Syscall, path?: string, dest?: string): SimFsError {
  const { errno, description } = errnos[code];
  let message = `${code}: ${description}, ${syscall}`;
  if (path !== undefined) message += ` '${path}'`;
  if (dest !== undefined) message += ` -> '${dest}'`;
  const error = new Error(message) as SimFsError;
  error.errno = errno;
  error.code = code;
  error.syscall = syscall;
  if (path !== undefined) error.path = path;
  if (dest !== undefined) error.dest = dest;
  return error;
}
