/**
 * Option haggling of the fixed newstyle handshake, sans IO: each option in, its replies out through
 * `send`, and an outcome that says whether to keep haggling, start transmission, or close.
 * Supported: EXPORT_NAME, ABORT, LIST, INFO, GO, STRUCTURED_REPLY, LIST_META_CONTEXT and
 * SET_META_CONTEXT (base:allocation); everything else is NBD_REP_ERR_UNSUP.
 */
import type { NbdExport, NbdLimits } from './export.ts';
import { baseAllocation, infoTypes, optionReply, options, replies, transmissionFlags } from './protocol.ts';

/** NBD_OPT_STARTTLS: not offered, offered, or required before anything else is said. */
export type NbdTlsMode = 'off' | 'optional' | 'required';

/** What transmission needs to know from the handshake. */
export interface Agreement {
  export: NbdExport;
  structuredReplies: boolean;
  /** The context id of base:allocation when selected for this export, else null. */
  allocationContextId: number | null;
}

export type OptionOutcome =
  | { next: 'options' }
  /** ACK sent: the connection turns into TLS now, and haggling starts over inside it. */
  | { next: 'starttls' }
  | { next: 'transmission'; agreement: Agreement; reply: Uint8Array | null }
  | { next: 'close'; reason: string };

const allocationContextId = 1;
const keepHaggling: OptionOutcome = { next: 'options' };

export class Handshake {
  private structuredReplies = false;
  /** The export named by the last successful SET_META_CONTEXT that selected base:allocation. */
  private allocationExport: string | null = null;

  constructor(
    private readonly exports: ReadonlyMap<string, NbdExport>,
    private readonly send: (bytes: Uint8Array) => void,
    private readonly limits: NbdLimits,
    private readonly noZeroes: boolean,
    private readonly tls: { mode: NbdTlsMode; active: boolean } = { mode: 'off', active: false },
    /** Asked before transmission starts: null to go on, or why the server cannot take the client now. */
    private readonly admit: () => string | null = () => null,
  ) {}

  onOption(code: number, data: Uint8Array): OptionOutcome {
    if (code === options.startTls) return this.onStartTls(data);
    if (this.tls.mode === 'required' && !this.tls.active && code !== options.abort) {
      // NBD_OPT_EXPORT_NAME has no error reply: the server can only close.
      if (code === options.exportName)
        return { next: 'close', reason: 'EXPORT_NAME before STARTTLS on a TLS-only server' };
      return this.refuse(code, replies.errorTlsRequired, 'this server requires NBD_OPT_STARTTLS first');
    }
    switch (code) {
      case options.exportName:
        return this.onExportName(data);
      case options.abort:
        this.send(optionReply(code, replies.ack));
        return { next: 'close', reason: 'client aborted the handshake' };
      case options.list:
        return this.onList(data);
      case options.info:
      case options.go:
        return this.onInfoOrGo(code, data);
      case options.structuredReply:
        if (data.length !== 0)
          return this.refuse(code, replies.errorInvalid, 'STRUCTURED_REPLY takes no data');
        this.structuredReplies = true;
        this.send(optionReply(code, replies.ack));
        return keepHaggling;
      case options.listMetaContext:
      case options.setMetaContext:
        return this.onMetaContext(code, data);
      default:
        // Extended headers and anything newer are not offered; the client goes on without them.
        return this.refuse(code, replies.errorUnsupported, `option ${code} is not supported`);
    }
  }

  private onStartTls(data: Uint8Array): OptionOutcome {
    if (this.tls.mode === 'off')
      return this.refuse(options.startTls, replies.errorUnsupported, 'TLS is not configured');
    if (this.tls.active) return this.refuse(options.startTls, replies.errorInvalid, 'TLS is already on');
    if (data.length !== 0)
      return this.refuse(options.startTls, replies.errorInvalid, 'STARTTLS takes no data');
    this.send(optionReply(options.startTls, replies.ack));
    return { next: 'starttls' };
  }

  private onExportName(data: Uint8Array): OptionOutcome {
    const name = new TextDecoder().decode(data);
    const found = this.exports.get(name);
    // NBD_OPT_EXPORT_NAME has no error reply: the server can only close.
    if (!found) return { next: 'close', reason: `no export named "${name}"` };
    const refusal = this.admit();
    if (refusal) return { next: 'close', reason: refusal };
    const reply = new Uint8Array(this.noZeroes ? 10 : 134);
    const view = new DataView(reply.buffer);
    view.setBigUint64(0, BigInt(found.sizeBytes));
    view.setUint16(8, flagsOf(found));
    return { next: 'transmission', agreement: this.agreementFor(found), reply };
  }

  private onList(data: Uint8Array): OptionOutcome {
    if (data.length !== 0) return this.refuse(options.list, replies.errorInvalid, 'LIST takes no data');
    for (const name of this.exports.keys()) {
      const encoded = new TextEncoder().encode(name);
      const payload = new Uint8Array(4 + encoded.length);
      new DataView(payload.buffer).setUint32(0, encoded.length);
      payload.set(encoded, 4);
      this.send(optionReply(options.list, replies.server, payload));
    }
    this.send(optionReply(options.list, replies.ack));
    return keepHaggling;
  }

  private onInfoOrGo(code: number, data: Uint8Array): OptionOutcome {
    const request = parseInfoRequest(data);
    if (!request) return this.refuse(code, replies.errorInvalid, 'malformed INFO/GO request');
    const found = this.exports.get(request.name);
    if (!found) return this.refuse(code, replies.errorUnknown, `no export named "${request.name}"`);
    if (code === options.go) {
      const refusal = this.admit();
      if (refusal) return this.refuse(code, replies.errorPolicy, refusal);
    }
    const exportInfo = new Uint8Array(12);
    const exportView = new DataView(exportInfo.buffer);
    exportView.setUint16(0, infoTypes.export);
    exportView.setBigUint64(2, BigInt(found.sizeBytes));
    exportView.setUint16(10, flagsOf(found));
    this.send(optionReply(code, replies.info, exportInfo));
    // Any byte offset and length is served (unaligned.ts: read-modify-write of partial blocks), so
    // the minimum is 1 and clients that never ask (the spec's default) work unchanged; whole blocks
    // are preferred, since a partial one costs a read before its write.
    const blockInfo = new Uint8Array(14);
    const blockView = new DataView(blockInfo.buffer);
    blockView.setUint16(0, infoTypes.blockSize);
    blockView.setUint32(2, 1);
    blockView.setUint32(6, Math.max(found.blockBytes, 4096));
    blockView.setUint32(10, this.limits.requestBytesMax);
    this.send(optionReply(code, replies.info, blockInfo));
    this.send(optionReply(code, replies.ack));
    if (code === options.info) return keepHaggling;
    return { next: 'transmission', agreement: this.agreementFor(found), reply: null };
  }

  private onMetaContext(code: number, data: Uint8Array): OptionOutcome {
    const setting = code === options.setMetaContext;
    // A SET replaces the selection even when it fails.
    if (setting) this.allocationExport = null;
    if (setting && !this.structuredReplies)
      return this.refuse(code, replies.errorInvalid, 'SET_META_CONTEXT needs STRUCTURED_REPLY first');
    const request = parseMetaContextRequest(data);
    if (!request) return this.refuse(code, replies.errorInvalid, 'malformed meta context request');
    if (!this.exports.has(request.exportName))
      return this.refuse(code, replies.errorUnknown, `no export named "${request.exportName}"`);
    if (request.queries.some((query) => !query.includes(':')))
      return this.refuse(code, replies.errorInvalid, 'a query must start with a namespace and a colon');
    const matches = setting
      ? request.queries.includes(baseAllocation)
      : request.queries.length === 0 ||
        request.queries.some((query) => query === 'base:' || query === baseAllocation);
    if (matches) {
      const name = new TextEncoder().encode(baseAllocation);
      const payload = new Uint8Array(4 + name.length);
      // LIST replies carry id 0 (reserved); SET gives the id BLOCK_STATUS replies will carry.
      new DataView(payload.buffer).setUint32(0, setting ? allocationContextId : 0);
      payload.set(name, 4);
      this.send(optionReply(code, replies.metaContext, payload));
      if (setting) this.allocationExport = request.exportName;
    }
    this.send(optionReply(code, replies.ack));
    return keepHaggling;
  }

  private agreementFor(found: NbdExport): Agreement {
    return {
      export: found,
      structuredReplies: this.structuredReplies,
      allocationContextId:
        this.structuredReplies && this.allocationExport === found.name ? allocationContextId : null,
    };
  }

  private refuse(code: number, type: number, message: string): OptionOutcome {
    this.send(optionReply(code, type, new TextEncoder().encode(message)));
    return keepHaggling;
  }
}

export function flagsOf(found: NbdExport): number {
  const flags =
    transmissionFlags.hasFlags |
    transmissionFlags.sendFlush |
    transmissionFlags.sendFua |
    transmissionFlags.canMultiConn;
  if (found.readOnly) return flags | transmissionFlags.readOnly;
  return flags | transmissionFlags.sendTrim | transmissionFlags.sendWriteZeroes;
}

/** INFO/GO data: name length, name, count of info requests, the requests (16 bits each). */
function parseInfoRequest(data: Uint8Array): { name: string } | null {
  const reader = new OptionReader(data);
  const name = reader.string32();
  const count = reader.u16();
  if (name === null || count === null || !reader.skip(2 * count) || !reader.atEnd()) return null;
  return { name };
}

/** META_CONTEXT data: export name, count of queries, each query with its 32-bit length. */
function parseMetaContextRequest(data: Uint8Array): { exportName: string; queries: string[] } | null {
  const reader = new OptionReader(data);
  const exportName = reader.string32();
  const count = reader.u32();
  if (exportName === null || count === null) return null;
  const queries: string[] = [];
  for (let index = 0; index < count; index++) {
    const query = reader.string32();
    if (query === null) return null;
    queries.push(query);
  }
  return reader.atEnd() ? { exportName, queries } : null;
}

/** Bounds-checked reads over one option's data; null instead of reading past its end. */
class OptionReader {
  private at = 0;
  private readonly view: DataView;

  constructor(private readonly data: Uint8Array) {
    this.view = new DataView(data.buffer, data.byteOffset, data.length);
  }

  u16(): number | null {
    if (this.at + 2 > this.data.length) return null;
    this.at += 2;
    return this.view.getUint16(this.at - 2);
  }

  u32(): number | null {
    if (this.at + 4 > this.data.length) return null;
    this.at += 4;
    return this.view.getUint32(this.at - 4);
  }

  string32(): string | null {
    const length = this.u32();
    if (length === null || this.at + length > this.data.length) return null;
    this.at += length;
    return new TextDecoder().decode(this.data.subarray(this.at - length, this.at));
  }

  skip(count: number): boolean {
    if (this.at + count > this.data.length) return false;
    this.at += count;
    return true;
  }

  atEnd(): boolean {
    return this.at === this.data.length;
  }
}
