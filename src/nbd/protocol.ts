/**
 * The NBD wire protocol (fixed newstyle handshake, simple and structured replies, metadata
 * contexts), as the NetworkBlockDevice project's proto.md defines it. Constants and the few fixed
 * layouts; one table of names for logs.
 */

export const nbdMagic = 0x4e42444d41474943n; // "NBDMAGIC"
export const optionMagic = 0x49484156454f5054n; // "IHAVEOPT"
export const optionReplyMagic = 0x3e889045565a9n;
export const requestMagic = 0x25609513;
export const simpleReplyMagic = 0x67446698;
export const structuredReplyMagic = 0x668e33ef;

export const handshakeFlags = { fixedNewstyle: 1, noZeroes: 2 } as const;
/** NBD_FLAG_C_*: the client's answer; any other bit, or one the server did not offer, ends the connection. */
export const clientFlags = { fixedNewstyle: 1, noZeroes: 2 } as const;

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
  metaContext: 4,
  errorUnsupported: 2 ** 31 + 1,
  errorPolicy: 2 ** 31 + 2,
  errorInvalid: 2 ** 31 + 3,
  errorTlsRequired: 2 ** 31 + 5,
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
export const commandFlags = {
  fua: 1,
  noHole: 2,
  dontFragment: 4,
  requestOne: 8,
  fastZero: 16,
  /** Only with extended headers, which are not offered. */
  payloadLength: 32,
} as const;
export const commandFlagNames: Record<number, string> = {
  [commandFlags.fua]: 'FUA',
  [commandFlags.noHole]: 'NO_HOLE',
  [commandFlags.dontFragment]: 'DF',
  [commandFlags.requestOne]: 'REQ_ONE',
  [commandFlags.fastZero]: 'FAST_ZERO',
  [commandFlags.payloadLength]: 'PAYLOAD_LEN',
};

/** Structured reply chunk types (NBD_REPLY_TYPE_*) and the one flag a chunk carries. */
export const chunkTypes = {
  none: 0,
  offsetData: 1,
  offsetHole: 2,
  blockStatus: 5,
  error: 2 ** 15 + 1,
} as const;
export const replyFlagDone = 1;

/** The one metadata context served, and the two flags it defines. */
export const baseAllocation = 'base:allocation';
export const allocationStates = { hole: 1, zero: 2 } as const;

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

/** One structured reply chunk: header (magic, flags, type, cookie, length), then the payload. */
export function structuredChunk(
  cookie: bigint,
  type: number,
  done: boolean,
  payload: Uint8Array = new Uint8Array(0),
): Uint8Array {
  const bytes = new Uint8Array(structuredHeaderBytes + payload.length);
  writeChunkHeader(bytes, cookie, type, done, payload.length);
  bytes.set(payload, structuredHeaderBytes);
  return bytes;
}

export const structuredHeaderBytes = 20;

function writeChunkHeader(
  bytes: Uint8Array,
  cookie: bigint,
  type: number,
  done: boolean,
  length: number,
): void {
  const view = new DataView(bytes.buffer, bytes.byteOffset, structuredHeaderBytes);
  view.setUint32(0, structuredReplyMagic);
  view.setUint16(4, done ? replyFlagDone : 0);
  view.setUint16(6, type);
  view.setBigUint64(8, cookie);
  view.setUint32(16, length);
}

/** An OFFSET_DATA chunk header with its offset; the data follows it on the wire unchanged. */
export function offsetDataHeader(
  cookie: bigint,
  done: boolean,
  offset: number,
  dataBytes: number,
): Uint8Array {
  const bytes = new Uint8Array(structuredHeaderBytes + 8);
  writeChunkHeader(bytes, cookie, chunkTypes.offsetData, done, 8 + dataBytes);
  new DataView(bytes.buffer).setBigUint64(structuredHeaderBytes, BigInt(offset));
  return bytes;
}

export function offsetHoleChunk(cookie: bigint, done: boolean, offset: number, length: number): Uint8Array {
  const payload = new Uint8Array(12);
  const view = new DataView(payload.buffer);
  view.setBigUint64(0, BigInt(offset));
  view.setUint32(8, length);
  return structuredChunk(cookie, chunkTypes.offsetHole, done, payload);
}

/** NBD_REPLY_TYPE_ERROR: the errno and a message for a human, always the last chunk here. */
export function errorChunk(cookie: bigint, error: number, message: string): Uint8Array {
  const text = new TextEncoder().encode(message).subarray(0, 1024);
  const payload = new Uint8Array(6 + text.length);
  const view = new DataView(payload.buffer);
  view.setUint32(0, error);
  view.setUint16(4, text.length);
  payload.set(text, 6);
  return structuredChunk(cookie, chunkTypes.error, true, payload);
}

export interface StatusExtent {
  length: number;
  flags: number;
}

export function blockStatusChunk(
  cookie: bigint,
  done: boolean,
  contextId: number,
  extents: readonly StatusExtent[],
): Uint8Array {
  const payload = new Uint8Array(4 + 8 * extents.length);
  const view = new DataView(payload.buffer);
  view.setUint32(0, contextId);
  extents.forEach((extent, index) => {
    view.setUint32(4 + 8 * index, extent.length);
    view.setUint32(8 + 8 * index, extent.flags);
  });
  return structuredChunk(cookie, chunkTypes.blockStatus, done, payload);
}
