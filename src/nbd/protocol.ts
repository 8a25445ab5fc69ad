/**
 * The NBD wire protocol (fixed newstyle handshake, simple replies), as the NetworkBlockDevice
 * project's proto.md defines it. Constants and the few fixed layouts; one table of names for logs.
 */

export const nbdMagic = 0x4e42444d41474943n; // "NBDMAGIC"
export const optionMagic = 0x49484156454f5054n; // "IHAVEOPT"
export const optionReplyMagic = 0x3e889045565a9n;
export const requestMagic = 0x25609513;
export const simpleReplyMagic = 0x67446698;

export const handshakeFlags = { fixedNewstyle: 1, noZeroes: 2 } as const;

export const options = {
  exportName: 1,
  abort: 2,
  list: 3,
  startTls: 5,
  info: 6,
  go: 7,
  structuredReply: 8,
  listMetaContext: 9,
  setMetaContext: 10,
} as const;

export const replies = {
  ack: 1,
  server: 2,
  info: 3,
  errorUnsupported: 2 ** 31 + 1,
  errorPolicy: 2 ** 31 + 2,
  errorInvalid: 2 ** 31 + 3,
  errorUnknown: 2 ** 31 + 6,
  errorTooBig: 2 ** 31 + 9,
} as const;

export const infoTypes = { export: 0, name: 1, description: 2, blockSize: 3 } as const;

export const transmissionFlags = {
  hasFlags: 1,
  readOnly: 2,
  sendFlush: 4,
  sendFua: 8,
  sendTrim: 32,
  sendWriteZeroes: 64,
  canMultiConn: 256,
} as const;

export const commands = {
  read: 0,
  write: 1,
  disconnect: 2,
  flush: 3,
  trim: 4,
  cache: 5,
  writeZeroes: 6,
  blockStatus: 7,
} as const;
export const commandNames: Record<number, string> = Object.fromEntries(
  Object.entries(commands).map(([name, code]) => [code, name]),
);
export const commandFlags = { fua: 1, noHole: 2 } as const;

/** The errno values NBD carries; internal failures are mapped onto these at the edge. */
export const nbdErrors = {
  EPERM: 1,
  EIO: 5,
  ENOMEM: 12,
  EINVAL: 22,
  ENOSPC: 28,
  EOVERFLOW: 75,
  ENOTSUP: 95,
  ESHUTDOWN: 108,
} as const;

export const requestHeaderBytes = 28;
export const optionHeaderBytes = 16;

export function optionReply(
  option: number,
  type: number,
  payload: Uint8Array = new Uint8Array(0),
): Uint8Array {
  const bytes = new Uint8Array(20 + payload.length);
  const view = new DataView(bytes.buffer);
  view.setBigUint64(0, optionReplyMagic);
  view.setUint32(8, option);
  view.setUint32(12, type);
  view.setUint32(16, payload.length);
  bytes.set(payload, 20);
  return bytes;
}

export function simpleReply(cookie: bigint, error: number, data?: Uint8Array): Uint8Array {
  const bytes = new Uint8Array(16 + (data?.length ?? 0));
  const view = new DataView(bytes.buffer);
  view.setUint32(0, simpleReplyMagic);
  view.setUint32(4, error);
  view.setBigUint64(8, cookie);
  if (data) bytes.set(data, 16);
  return bytes;
}

export interface NbdRequest {
  flags: number;
  type: number;
  cookie: bigint;
  offset: number;
  length: number;
}

/** Reads a request header; null when the magic is wrong (a protocol violation: the connection ends). */
export function decodeRequest(header: Uint8Array): NbdRequest | null {
  const view = new DataView(header.buffer, header.byteOffset, requestHeaderBytes);
  if (view.getUint32(0) !== requestMagic) return null;
  const offset = view.getBigUint64(16);
  return {
    flags: view.getUint16(4),
    type: view.getUint16(6),
    cookie: view.getBigUint64(8),
    // Offsets beyond 2^53 cannot be inside any volume; they are refused as out of range.
    offset: offset > BigInt(Number.MAX_SAFE_INTEGER) ? Number.MAX_SAFE_INTEGER : Number(offset),
    length: view.getUint32(24),
  };
}
