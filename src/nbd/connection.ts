/**
 * One NBD client connection: the fixed newstyle handshake (see handshake.ts), then transmission.
 * Bytes come in through `onData`; replies leave through `send`. Requests run concurrently, bounded
 * per connection and across the server (RequestBudget), and replies may leave out of order, each
 * carrying its request's cookie. Out-of-range or misaligned requests fail alone with NBD_EINVAL
 * (NBD_ENOSPC for a write past the end); a protocol violation ends this connection only; a refused
 * write's payload is still read, so the stream stays in step. A failed request is answered with the
 * NBD errno of its cause (NBD_ENOSPC for a full disk, NBD_ESHUTDOWN while the site stops, NBD_EIO
 * otherwise). `shutdown()` answers new requests with NBD_ESHUTDOWN, lets those in flight finish, then
 * closes; the refused requests are counted, not logged one by one.
 */
import { codesOf, isDiskFull } from '../core/errors.ts';
import { coarsen, zeroRuns } from './allocation.ts';
import { RequestBudget } from './budget.ts';
import { defaultNbdLimits, type NbdExport, type NbdLimits } from './export.ts';
import { type Agreement, Handshake, type NbdTlsMode } from './handshake.ts';
import {
  allocationStates,
  blockStatusChunk,
  chunkTypes,
  commandFlags,
  commandNames,
  commands,
  decodeRequest,
  errorChunk,
  handshakeFlags,
  type NbdRequest,
  nbdErrors,
  nbdMagic,
  offsetDataHeader,
  offsetHoleChunk,
  optionHeaderBytes,
  optionMagic,
  requestHeaderBytes,
  type StatusExtent,
  simpleReply,
  structuredChunk,
} from './protocol.ts';

export { defaultNbdLimits, type NbdExport, type NbdLimits } from './export.ts';

export interface NbdConnectionIo {
  send(bytes: Uint8Array): void;
  /** NBD_OPT_STARTTLS was acknowledged: wrap the socket in TLS and call onTlsReady once secure. */
  startTls?(): void;
  close(reason: string): void;
  pause(paused: boolean): void;
  log(event: string, fields: Record<string, string | number | boolean>): void;
}

type Phase =
  | 'client-flags'
  | 'option-header'
  | 'option-data'
  | 'tls-handshake'
  | 'request-header'
  | 'write-data'
  | 'closed';

/** What a served request answers with, before it is put on the wire. */
type Outcome =
  | { kind: 'done' }
  | { kind: 'data'; data: Uint8Array }
  | { kind: 'status'; extents: StatusExtent[] }
  | { kind: 'error'; error: number; message: string };

const done: Outcome = { kind: 'done' };

/** The NBD errno for a failed request: the real cause is logged, the client gets one of NBD's few. */
export function nbdErrorOf(failure: unknown): number {
  if (isDiskFull(failure)) return nbdErrors.ENOSPC;
  if (codesOf(failure).includes('stopping')) return nbdErrors.ESHUTDOWN;
  return nbdErrors.EIO;
}

/** Zero runs at least this long leave a structured READ reply as holes instead of bytes. */
const holeBytesMin = 64 * 1024;

export class NbdConnection {
  private phase: Phase = 'client-flags';
  private chunks: Uint8Array[] = [];
  private buffered = 0;
  private handshake: Handshake | null = null;
  private option = { code: 0, length: 0 };
  private request: NbdRequest | null = null;
  private agreement: Agreement | null = null;
  private inFlight = 0;
  private noZeroes = false;
  private tlsActive = false;
  /** Set by shutdown(): new requests are refused, the connection closes once none is in flight. */
  private stopping = false;
  /** Requests answered NBD_ESHUTDOWN because the site was stopping; reported once, at close. */
  refusedWhileStopping = 0;
  private readonly wake = (): void => {
    this.io.pause(false);
    this.drain();
  };

  constructor(
    private readonly exports: ReadonlyMap<string, NbdExport>,
    private readonly io: NbdConnectionIo,
    private readonly limits: NbdLimits = defaultNbdLimits,
    private readonly budget: RequestBudget = new RequestBudget(limits.requestsInFlightMax),
    private readonly tlsMode: NbdTlsMode = 'off',
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
      case 'client-flags':
        return this.readClientFlags();
      case 'option-header':
        return this.readOptionHeader();
      case 'option-data':
        return this.readOptionData();
      case 'request-header':
        return this.readRequestHeader();
      case 'write-data':
        return this.readWriteData();
      case 'tls-handshake':
      case 'closed':
        return false;
    }
  }

  // ---- handshake -----------------------------------------------------------------------------

  private readClientFlags(): boolean {
    const bytes = this.take(4);
    if (!bytes) return false;
    const flags = new DataView(bytes.buffer, bytes.byteOffset).getUint32(0);
    if (!(flags & handshakeFlags.fixedNewstyle))
      return this.violation('client does not speak fixed newstyle');
    this.noZeroes = (flags & handshakeFlags.noZeroes) !== 0;
    this.startHaggling();
    return true;
  }

  private startHaggling(): void {
    this.handshake = new Handshake(this.exports, (reply) => this.io.send(reply), this.limits, this.noZeroes, {
      mode: this.tlsMode,
      active: this.tlsActive,
    });
    this.phase = 'option-header';
  }

  /** The TLS session asked for with STARTTLS is up: haggling starts over inside it. */
  onTlsReady(): void {
    if (this.phase !== 'tls-handshake') return;
    this.tlsActive = true;
    this.io.log('nbd-tls', { version: 'TLSv1.3' });
    this.startHaggling();
    this.drain();
  }

  private readOptionHeader(): boolean {
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

  private readOptionData(): boolean {
    const data = this.take(this.option.length);
    if (!data) return false;
    this.phase = 'option-header';
    const outcome = (this.handshake as Handshake).onOption(this.option.code, data);
    if (outcome.next === 'close') {
      this.close(outcome.reason);
    } else if (outcome.next === 'starttls') {
      // The client waits for the ACK before its TLS hello: plain bytes beyond it are a violation.
      if (this.buffered > 0) return this.violation('plain bytes after NBD_OPT_STARTTLS');
      if (!this.io.startTls) return this.violation('STARTTLS acknowledged without a TLS transport');
      this.phase = 'tls-handshake';
      this.io.startTls();
      return false;
    } else if (outcome.next === 'transmission') {
      if (outcome.reply) this.io.send(outcome.reply);
      this.agreement = outcome.agreement;
      this.handshake = null;
      this.phase = 'request-header';
      this.io.log('nbd-transmission', {
        export: outcome.agreement.export.name,
        readOnly: outcome.agreement.export.readOnly,
        structuredReplies: outcome.agreement.structuredReplies,
        blockStatus: outcome.agreement.allocationContextId !== null,
      });
    }
    return true;
  }

  // ---- transmission --------------------------------------------------------------------------

  private readRequestHeader(): boolean {
    if (this.inFlight >= this.limits.requestsInFlightMax) {
      this.io.pause(true);
      return false;
    }
    if (this.buffered < requestHeaderBytes) return false;
    // The slot is taken before the header is read, so a full server stops reading new work.
    if (!this.budget.tryTake(this.wake)) {
      this.io.pause(true);
      return false;
    }
    const request = decodeRequest(this.take(requestHeaderBytes) as Uint8Array);
    if (!request) {
      this.budget.release();
      return this.violation('bad request magic');
    }
    if (request.type === commands.write) {
      if (request.length > this.limits.requestBytesMax) {
        this.budget.release();
        return this.violation(`write of ${request.length} bytes, at most ${this.limits.requestBytesMax}`);
      }
      this.request = request;
      this.phase = 'write-data';
      return true;
    }
    this.onRequest(request, null);
    return true;
  }

  private readWriteData(): boolean {
    const request = this.request as NbdRequest;
    const data = this.take(request.length);
    if (!data) return false;
    this.phase = 'request-header';
    this.request = null;
    this.onRequest(request, data);
    return true;
  }

  /**
   * The site is stopping: new requests get NBD_ESHUTDOWN (the client should disconnect), those in
   * flight finish, then the connection closes. A connection still haggling closes at once.
   */
  shutdown(): void {
    if (this.phase === 'closed') return;
    this.stopping = true;
    if (this.agreement === null || this.inFlight === 0) this.close('server stopping');
  }

  /** Serves one request that holds a budget slot; the slot is given back when it is answered. */
  private onRequest(request: NbdRequest, data: Uint8Array | null): void {
    const agreement = this.agreement as Agreement;
    if (request.type === commands.disconnect) {
      this.budget.release();
      this.close('client disconnected');
      return;
    }
    if (this.stopping) {
      this.budget.release();
      this.refusedWhileStopping++;
      this.reply(agreement, request, {
        kind: 'error',
        error: nbdErrors.ESHUTDOWN,
        message: 'server stopping',
      });
      return;
    }
    const refusal = this.validate(agreement, request);
    if (refusal) {
      this.budget.release();
      this.reply(agreement, request, refusal);
      return;
    }
    this.inFlight++;
    this.handle(agreement, request, data).then(
      (outcome) => this.finish(agreement, request, outcome),
      (failure: unknown) => {
        const reason = (failure as Error).message;
        const error = nbdErrorOf(failure);
        if (error === nbdErrors.ESHUTDOWN) this.refusedWhileStopping++;
        else
          this.io.log('nbd-request-failed', {
            command: commandNames[request.type] ?? String(request.type),
            offset: request.offset,
            length: request.length,
            error,
            reason,
          });
        this.finish(agreement, request, { kind: 'error', error, message: reason });
      },
    );
  }

  /** An error outcome for what no export could do (NBD_ENOSPC for a write past the end), else null. */
  private validate({ export: found, allocationContextId }: Agreement, request: NbdRequest): Outcome | null {
    const { type, offset, length } = request;
    const name = commandNames[type] ?? `command ${type}`;
    const refuse = (error: number, message: string): Outcome => ({ kind: 'error', error, message });
    const known = [
      commands.read,
      commands.write,
      commands.flush,
      commands.trim,
      commands.writeZeroes,
      commands.blockStatus,
    ] as number[];
    if (!known.includes(type)) return refuse(nbdErrors.EINVAL, `${name} is not supported`);
    if (type === commands.flush) return null;
    const writes = type !== commands.read && type !== commands.blockStatus;
    if (writes && found.readOnly) return refuse(nbdErrors.EPERM, `${found.name} is read-only`);
    if (offset + length > found.sizeBytes) {
      const message = `${name} of ${length} bytes at ${offset} is past the end of ${found.name} (${found.sizeBytes} bytes)`;
      return refuse(writes ? nbdErrors.ENOSPC : nbdErrors.EINVAL, message);
    }
    if (offset % found.blockBytes !== 0 || length % found.blockBytes !== 0)
      return refuse(nbdErrors.EINVAL, `${name} not aligned to the block size ${found.blockBytes}`);
    if ((type === commands.read || type === commands.write) && length > this.limits.requestBytesMax)
      return refuse(nbdErrors.EINVAL, `${name} of ${length} bytes, at most ${this.limits.requestBytesMax}`);
    if (type === commands.blockStatus) {
      if (allocationContextId === null) return refuse(nbdErrors.EINVAL, 'no metadata context was negotiated');
      if (length === 0) return refuse(nbdErrors.EINVAL, 'block status of zero bytes');
    }
    return null;
  }

  private async handle(agreement: Agreement, request: NbdRequest, data: Uint8Array | null): Promise<Outcome> {
    const found = agreement.export;
    const fua = (request.flags & commandFlags.fua) !== 0;
    switch (request.type) {
      case commands.read:
        if (request.length === 0) return { kind: 'data', data: new Uint8Array(0) };
        return { kind: 'data', data: await found.read(request.offset, request.length) };
      case commands.write:
        if (request.length > 0) await found.write(request.offset, data as Uint8Array, fua);
        return done;
      case commands.trim:
      case commands.writeZeroes:
        // A trimmed block reads back as zeroes; NO_HOLE is honoured since nothing is punched.
        if (request.length > 0) await found.writeZeroes(request.offset, request.length, fua);
        return done;
      case commands.blockStatus:
        return { kind: 'status', extents: await this.allocation(found, request) };
      default:
        await found.flush();
        return done;
    }
  }

  /** base:allocation of (at most blockStatusBytesMax of) the range, read from the content. */
  private async allocation(found: NbdExport, request: NbdRequest): Promise<StatusExtent[]> {
    const scanMax = Math.max(
      found.blockBytes,
      this.limits.blockStatusBytesMax - (this.limits.blockStatusBytesMax % found.blockBytes),
    );
    const length = Math.min(request.length, scanMax);
    const data = await found.read(request.offset, length);
    const extents = zeroRuns(data, request.offset, found.blockBytes).map((run) => ({
      length: run.length,
      flags: run.zero ? allocationStates.zero : 0,
    }));
    return (request.flags & commandFlags.requestOne) !== 0 ? extents.slice(0, 1) : extents;
  }

  private finish(agreement: Agreement, request: NbdRequest, outcome: Outcome): void {
    this.inFlight--;
    this.budget.release();
    if (this.phase === 'closed') return;
    this.reply(agreement, request, outcome);
    if (this.stopping && this.inFlight === 0) {
      this.close('server stopping');
      return;
    }
    // Reading may have paused at the in-flight bound: go on with what is buffered.
    this.wake();
  }

  /** Structured replies for READ and BLOCK_STATUS once negotiated, simple replies otherwise. */
  private reply(
    { structuredReplies, allocationContextId }: Agreement,
    request: NbdRequest,
    outcome: Outcome,
  ): void {
    const { cookie } = request;
    const structured =
      structuredReplies && (request.type === commands.read || request.type === commands.blockStatus);
    switch (outcome.kind) {
      case 'error':
        this.io.send(
          structured
            ? errorChunk(cookie, outcome.error, outcome.message)
            : simpleReply(cookie, outcome.error),
        );
        return;
      case 'status':
        this.io.send(blockStatusChunk(cookie, true, allocationContextId as number, outcome.extents));
        return;
      case 'data':
        if (structured) this.sendReadChunks(request, outcome.data);
        else this.io.send(simpleReply(cookie, 0, outcome.data));
        return;
      case 'done':
        this.io.send(simpleReply(cookie, 0));
    }
  }

  /** A READ as structured chunks: long zero runs as holes, the rest as data, the last one DONE. */
  private sendReadChunks(request: NbdRequest, data: Uint8Array): void {
    if (data.length === 0) {
      this.io.send(structuredChunk(request.cookie, chunkTypes.none, true));
      return;
    }
    const blockBytes = (this.agreement as Agreement).export.blockBytes;
    const runs = coarsen(zeroRuns(data, request.offset, blockBytes), holeBytesMin);
    runs.forEach((run, index) => {
      const last = index === runs.length - 1;
      if (run.zero) {
        this.io.send(offsetHoleChunk(request.cookie, last, run.offset, run.length));
        return;
      }
      this.io.send(offsetDataHeader(request.cookie, last, run.offset, run.length));
      const at = run.offset - request.offset;
      this.io.send(data.subarray(at, at + run.length));
    });
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
    this.budget.forget(this.wake);
    this.chunks = [];
    this.buffered = 0;
    this.io.close(reason);
  }
}
