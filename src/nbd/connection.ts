/**
 * One NBD client connection: the fixed newstyle handshake, then transmission. Bytes come in
 * through `onData`; replies leave through `send`. Requests run concurrently (bounded) and replies
 * may leave out of order, each carrying its request's cookie. Out-of-range or misaligned requests
 * fail alone with NBD_EINVAL (NBD_ENOSPC for a write past the end); a protocol violation ends this
 * connection only; a rejected write's payload is still read, so the stream stays in step.
 */
import {
  commandFlags,
  commandNames,
  commands,
  decodeRequest,
  handshakeFlags,
  infoTypes,
  type NbdRequest,
  nbdErrors,
  nbdMagic,
  optionHeaderBytes,
  optionMagic,
  optionReply,
  options,
  replies,
  requestHeaderBytes,
  simpleReply,
  transmissionFlags,
} from './protocol.ts';

/** What an export offers; the primary and the secondary implement it per volume. */
export interface NbdExport {
  name: string;
  sizeBytes: number;
  blockBytes: number;
  readOnly: boolean;
  read(offset: number, length: number): Promise<Uint8Array>;
  write(offset: number, data: Uint8Array, fua: boolean): Promise<void>;
  writeZeroes(offset: number, length: number, fua: boolean): Promise<void>;
  flush(): Promise<void>;
}

export interface NbdLimits {
  /** Largest option payload read during the handshake. */
  optionBytesMax: number;
  /** Largest read or write request. */
  requestBytesMax: number;
  /** Requests of one connection being served at once; reading pauses beyond. */
  requestsInFlightMax: number;
}

export const defaultNbdLimits: NbdLimits = {
  optionBytesMax: 4096,
  requestBytesMax: 32 * 1024 * 1024,
  requestsInFlightMax: 64,
};

export interface NbdConnectionIo {
  send(bytes: Uint8Array): void;
  close(reason: string): void;
  pause(paused: boolean): void;
  log(event: string, fields: Record<string, string | number | boolean>): void;
}

type Phase = 'client-flags' | 'option-header' | 'option-data' | 'request-header' | 'write-data' | 'closed';

export class NbdConnection {
  private phase: Phase = 'client-flags';
  private chunks: Uint8Array[] = [];
  private buffered = 0;
  private noZeroes = false;
  private option = { code: 0, length: 0 };
  private request: NbdRequest | null = null;
  private export: NbdExport | null = null;
  private inFlight = 0;

  constructor(
    private readonly exports: ReadonlyMap<string, NbdExport>,
    private readonly io: NbdConnectionIo,
    private readonly limits: NbdLimits = defaultNbdLimits,
  ) {
    const greeting = new Uint8Array(18);
    const view = new DataView(greeting.buffer);
    view.setBigUint64(0, nbdMagic);
    view.setBigUint64(8, optionMagic);
    view.setUint16(16, handshakeFlags.fixedNewstyle | handshakeFlags.noZeroes);
    io.send(greeting);
  }

  onData(chunk: Uint8Array): void {
    if (this.phase === 'closed') return;
    this.chunks.push(chunk);
    this.buffered += chunk.length;
    this.drain();
  }

  /** Consumes one header or payload if enough bytes are buffered; false when waiting for more. */
  private step(): boolean {
    switch (this.phase) {
      case 'client-flags': {
        const bytes = this.take(4);
        if (!bytes) return false;
        const flags = new DataView(bytes.buffer, bytes.byteOffset).getUint32(0);
        if (!(flags & handshakeFlags.fixedNewstyle))
          return this.violation('client does not speak fixed newstyle');
        this.noZeroes = (flags & handshakeFlags.noZeroes) !== 0;
        this.phase = 'option-header';
        return true;
      }
      case 'option-header': {
        const bytes = this.take(optionHeaderBytes);
        if (!bytes) return false;
        const view = new DataView(bytes.buffer, bytes.byteOffset);
        if (view.getBigUint64(0) !== optionMagic) return this.violation('bad option magic');
        this.option = { code: view.getUint32(8), length: view.getUint32(12) };
        if (this.option.length > this.limits.optionBytesMax) {
          return this.violation(
            `option ${this.option.code} of ${this.option.length} bytes, at most ${this.limits.optionBytesMax}`,
          );
        }
        this.phase = 'option-data';
        return true;
      }
      case 'option-data': {
        const data = this.take(this.option.length);
        if (!data) return false;
        this.phase = 'option-header';
        this.onOption(this.option.code, data);
        return true;
      }
      case 'request-header': {
        if (this.inFlight >= this.limits.requestsInFlightMax) {
          this.io.pause(true);
          return false;
        }
        const bytes = this.take(requestHeaderBytes);
        if (!bytes) return false;
        const request = decodeRequest(bytes);
        if (!request) return this.violation('bad request magic');
        if (request.type === commands.write) {
          if (request.length > this.limits.requestBytesMax)
            return this.violation(`write of ${request.length} bytes`);
          this.request = request;
          this.phase = 'write-data';
          return true;
        }
        this.onRequest(request, null);
        return true;
      }
      case 'write-data': {
        const request = this.request as NbdRequest;
        const data = this.take(request.length);
        if (!data) return false;
        this.phase = 'request-header';
        this.request = null;
        this.onRequest(request, data);
        return true;
      }
      case 'closed':
        return false;
    }
  }

  // ---- handshake -----------------------------------------------------------------------------

  private onOption(code: number, data: Uint8Array): void {
    switch (code) {
      case options.exportName:
        this.onExportName(data);
        return;
      case options.abort:
        this.io.send(optionReply(code, replies.ack));
        this.close('client aborted the handshake');
        return;
      case options.list:
        if (data.length !== 0) {
          this.io.send(optionReply(code, replies.errorInvalid));
          return;
        }
        for (const name of this.exports.keys()) {
          const encoded = new TextEncoder().encode(name);
          const payload = new Uint8Array(4 + encoded.length);
          new DataView(payload.buffer).setUint32(0, encoded.length);
          payload.set(encoded, 4);
          this.io.send(optionReply(code, replies.server, payload));
        }
        this.io.send(optionReply(code, replies.ack));
        return;
      case options.info:
      case options.go:
        this.onInfoOrGo(code, data);
        return;
      default:
        // STARTTLS, structured replies and metadata contexts are not offered (yet): the client
        // falls back to simple replies.
        this.io.send(optionReply(code, replies.errorUnsupported));
    }
  }

  private onExportName(data: Uint8Array): void {
    const found = this.exports.get(new TextDecoder().decode(data));
    if (!found) {
      // NBD_OPT_EXPORT_NAME has no error reply: the server can only close.
      this.close(`no export named "${new TextDecoder().decode(data)}"`);
      return;
    }
    const reply = new Uint8Array(this.noZeroes ? 10 : 134);
    const view = new DataView(reply.buffer);
    view.setBigUint64(0, BigInt(found.sizeBytes));
    view.setUint16(8, this.flagsOf(found));
    this.io.send(reply);
    this.startTransmission(found);
  }

  private onInfoOrGo(code: number, data: Uint8Array): void {
    if (data.length < 6) {
      this.io.send(optionReply(code, replies.errorInvalid));
      return;
    }
    const view = new DataView(data.buffer, data.byteOffset, data.length);
    const nameLength = view.getUint32(0);
    if (4 + nameLength + 2 > data.length) {
      this.io.send(optionReply(code, replies.errorInvalid));
      return;
    }
    const name = new TextDecoder().decode(data.subarray(4, 4 + nameLength));
    const found = this.exports.get(name);
    if (!found) {
      this.io.send(
        optionReply(code, replies.errorUnknown, new TextEncoder().encode(`no export named "${name}"`)),
      );
      return;
    }
    const exportInfo = new Uint8Array(12);
    const exportView = new DataView(exportInfo.buffer);
    exportView.setUint16(0, infoTypes.export);
    exportView.setBigUint64(2, BigInt(found.sizeBytes));
    exportView.setUint16(10, this.flagsOf(found));
    this.io.send(optionReply(code, replies.info, exportInfo));
    // Whole blocks only: the minimum is the block size, so clients align (qemu honours it).
    const blockInfo = new Uint8Array(14);
    const blockView = new DataView(blockInfo.buffer);
    blockView.setUint16(0, infoTypes.blockSize);
    blockView.setUint32(2, found.blockBytes);
    blockView.setUint32(6, Math.max(found.blockBytes, 4096));
    blockView.setUint32(10, this.limits.requestBytesMax);
    this.io.send(optionReply(code, replies.info, blockInfo));
    this.io.send(optionReply(code, replies.ack));
    if (code === options.go) this.startTransmission(found);
  }

  private flagsOf(found: NbdExport): number {
    const flags =
      transmissionFlags.hasFlags |
      transmissionFlags.sendFlush |
      transmissionFlags.sendFua |
      transmissionFlags.canMultiConn;
    if (found.readOnly) return flags | transmissionFlags.readOnly;
    return flags | transmissionFlags.sendTrim | transmissionFlags.sendWriteZeroes;
  }

  private startTransmission(found: NbdExport): void {
    this.export = found;
    this.phase = 'request-header';
    this.io.log('nbd-transmission', { export: found.name, readOnly: found.readOnly });
  }

  // ---- transmission --------------------------------------------------------------------------

  private onRequest(request: NbdRequest, data: Uint8Array | null): void {
    const found = this.export as NbdExport;
    if (request.type === commands.disconnect) {
      this.close('client disconnected');
      return;
    }
    const error = this.validate(found, request);
    if (error !== 0) {
      this.io.send(simpleReply(request.cookie, error));
      return;
    }
    this.inFlight++;
    this.handle(found, request, data).then(
      (reply) => this.finish(request, 0, reply),
      (failure: unknown) => {
        this.io.log('nbd-request-failed', {
          command: commandNames[request.type] ?? String(request.type),
          offset: request.offset,
          length: request.length,
          reason: (failure as Error).message,
        });
        this.finish(request, nbdErrors.EIO, undefined);
      },
    );
  }

  /** NBD_EINVAL for what no export could do; NBD_ENOSPC for a write past the end; 0 when fine. */
  private validate(found: NbdExport, request: NbdRequest): number {
    const { type, offset, length } = request;
    const known = [
      commands.read,
      commands.write,
      commands.flush,
      commands.trim,
      commands.writeZeroes,
    ] as number[];
    if (!known.includes(type)) return nbdErrors.EINVAL;
    if (type === commands.flush) return 0;
    const writes = type !== commands.read;
    if (writes && found.readOnly) return nbdErrors.EPERM;
    if (offset + length > found.sizeBytes) return writes ? nbdErrors.ENOSPC : nbdErrors.EINVAL;
    if (offset % found.blockBytes !== 0 || length % found.blockBytes !== 0) return nbdErrors.EINVAL;
    if ((type === commands.read || type === commands.write) && length > this.limits.requestBytesMax)
      return nbdErrors.EINVAL;
    return 0;
  }

  private async handle(
    found: NbdExport,
    request: NbdRequest,
    data: Uint8Array | null,
  ): Promise<Uint8Array | undefined> {
    const fua = (request.flags & commandFlags.fua) !== 0;
    switch (request.type) {
      case commands.read:
        return request.length === 0 ? new Uint8Array(0) : found.read(request.offset, request.length);
      case commands.write:
        if (request.length > 0) await found.write(request.offset, data as Uint8Array, fua);
        return undefined;
      case commands.trim:
      case commands.writeZeroes:
        // A trimmed block reads back as zeroes; NO_HOLE is honoured since nothing is punched.
        if (request.length > 0) await found.writeZeroes(request.offset, request.length, fua);
        return undefined;
      default:
        await found.flush();
        return undefined;
    }
  }

  private finish(request: NbdRequest, error: number, data: Uint8Array | undefined): void {
    this.inFlight--;
    if (this.phase === 'closed') return;
    this.io.send(simpleReply(request.cookie, error, error === 0 ? data : undefined));
    // Reading may have paused at the in-flight bound: go on with what is buffered.
    this.io.pause(false);
    this.drain();
  }

  // ---- helpers -------------------------------------------------------------------------------

  /** Consumes input while whole units are buffered. */
  private drain(): void {
    while ((this.phase as Phase) !== 'closed' && this.step()) {
      // each step consumed one header or payload
    }
  }

  private take(count: number): Uint8Array | null {
    if (this.buffered < count) return null;
    if (count === 0) return new Uint8Array(0);
    const first = this.chunks[0] as Uint8Array;
    let taken: Uint8Array;
    if (first.length >= count) {
      taken = first.subarray(0, count);
      if (first.length === count) this.chunks.shift();
      else this.chunks[0] = first.subarray(count);
    } else {
      const joined = new Uint8Array(this.buffered);
      let at = 0;
      for (const chunk of this.chunks) {
        joined.set(chunk, at);
        at += chunk.length;
      }
      taken = joined.subarray(0, count);
      this.chunks = joined.length > count ? [joined.subarray(count)] : [];
    }
    this.buffered -= count;
    return taken;
  }

  private violation(reason: string): boolean {
    this.io.log('nbd-protocol-violation', { reason });
    this.close(reason);
    return false;
  }

  private close(reason: string): void {
    if (this.phase === 'closed') return;
    this.phase = 'closed';
    this.chunks = [];
    this.buffered = 0;
    this.io.close(reason);
  }
}
