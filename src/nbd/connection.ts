/**
 * One NBD client connection: the fixed newstyle handshake (see handshake.ts), then transmission.
 * Bytes come in through `onData`; replies leave through `send`. Requests run concurrently, bounded
 * per connection and across the server (RequestBudget, in requests and bytes), and replies may
 * leave out of order, each carrying its request's cookie. A request holds its budget from its
 * header until its reply has left the socket; a client that stalls in the handshake, in a payload
 * or in reading its replies is closed after a timeout. Out-of-range requests and
 * flags not allowed fail alone with NBD_EINVAL (NBD_ENOSPC for a write past the end); a protocol
 * violation ends this connection only; a refused write's payload is still read (and dropped), so
 * the stream stays in step. A failed request is answered with the NBD errno of its cause
 * (NBD_ENOSPC for a full disk, NBD_ESHUTDOWN while the site stops, NBD_EPERM for a write to a
 * fenced primary, NBD_EIO otherwise).
 * `shutdown()` answers new requests with NBD_ESHUTDOWN, lets those in flight finish, then closes;
 * the refused requests are counted, not logged one by one.
 */
import { assert } from '../core/assert.ts';
import { codesOf, isDiskFull } from '../core/errors.ts';
import { coarsen, zeroRuns } from './allocation.ts';
import { type BudgetHold, RequestBudget } from './budget.ts';
import { defaultNbdLimits, type NbdExport, type NbdLimits } from './export.ts';
import { type Agreement, Handshake, type NbdTlsMode } from './handshake.ts';
import {
  allocationStates,
  blockStatusChunk,
  chunkTypes,
  clientFlags,
  commandFlagNames,
  commandFlags,
  commandNames,
  commands,
  decodeRequest,
  errorChunk,
  handshakeFlags,
  type NbdRequest,
  nbdErrorNames,
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
  /** Puts bytes on the wire in order; `sent` is called once they have left for the network. */
  send(bytes: Uint8Array, sent?: () => void): void;
  /** NBD_OPT_STARTTLS was acknowledged: wrap the socket in TLS and call onTlsReady once secure. */
  startTls?(): void;
  close(reason: string): void;
  pause(paused: boolean): void;
  log(event: string, fields: Record<string, string | number | boolean>): void;
  /** What a client can make happen again and again: the server logs it at a bounded rate. */
  warn(event: string, fields: Record<string, string | number | boolean>): void;
  /** Asked when the client picks an export: null to serve it, or why it cannot be served now. */
  admit?(): string | null;
  /** Told of every reply: the command and, for an error, the NBD error's name (for the metrics). */
  observe?(command: string, error: string | null): void;
  /** Calls `fire` after `ms` unless the returned function cancels it first. */
  startTimer?(ms: number, fire: () => void): () => void;
}

type Phase =
  | 'client-flags'
  | 'option-header'
  | 'option-data'
  | 'tls-handshake'
  /** Waiting for the next request header. */
  | 'request-header'
  /** A header was read; its request waits in line for the server's budget. */
  | 'budget-wait'
  /** An accepted WRITE's payload is read into its buffer. */
  | 'write-data'
  /** A refused WRITE's payload is read and dropped, so the stream stays in step. */
  | 'discard-data'
  | 'closed';

/** What a served request answers with, before it is put on the wire. */
type Outcome =
  | { kind: 'done' }
  | { kind: 'data'; data: Uint8Array }
  | { kind: 'status'; extents: StatusExtent[] }
  | { kind: 'error'; error: number; message: string };

/** One request, from its header until its reply has left. */
interface Pending {
  request: NbdRequest;
  /** Its reservation in the server's budget; null while it waits in line. */
  hold: BudgetHold | null;
  /** The error it is answered with, decided from its header; null when it is served. */
  refusal: Outcome | null;
  /** Storage works on it: its data is in use until that ends, even after the connection closed. */
  serving: boolean;
}

const done: Outcome = { kind: 'done' };

/** The NBD errno for a failed request: the real cause is logged, the client gets one of NBD's few. */
export function nbdErrorOf(failure: unknown): number {
  if (isDiskFull(failure)) return nbdErrors.ENOSPC;
  // A switchover (or a split brain's loser giving up) stops the primary's writes for good, in
  // order: as a stopping server's.
  const codes = codesOf(failure);
  if (codes.includes('stopping') || codes.includes('switching-over') || codes.includes('giving-up-history'))
    return nbdErrors.ESHUTDOWN;
  // A superseded primary's exports are read-only from then on (docs/failover.md, "Fencing").
  if (codesOf(failure).includes('fenced')) return nbdErrors.EPERM;
  return nbdErrors.EIO;
}

/** Zero runs at least this long leave a structured READ reply as holes instead of bytes. */
const holeBytesMin = 64 * 1024;

/** Production timers; unreferenced, as the socket itself keeps the process alive. */
function startRealTimer(ms: number, fire: () => void): () => void {
  const timer = setTimeout(fire, ms);
  timer.unref();
  return () => clearTimeout(timer);
}

export class NbdConnection {
  private phase: Phase = 'client-flags';
  private chunks: Uint8Array[] = [];
  private buffered = 0;
  private handshake: Handshake | null = null;
  private option = { code: 0, length: 0 };
  private agreement: Agreement | null = null;
  private noZeroes = false;
  private tlsActive = false;
  /** Every request from its header until its reply has left (the per-connection bound counts these). */
  private readonly requests = new Set<Pending>();
  /** The request whose grant or payload is awaited. */
  private pending: Pending | null = null;
  private payload: Uint8Array | null = null;
  private payloadFilled = 0;
  private discardRemaining = 0;
  /** Bytes handed to `send` that have not left yet, and how many sends have completed. */
  private unsentBytes = 0;
  private sentCount = 0;
  private readingPaused = false;
  private draining = false;
  private drainAgain = false;
  private readonly startTimer: (ms: number, fire: () => void) => () => void;
  private cancelHandshakeTimer: (() => void) | null = null;
  private cancelPayloadTimer: (() => void) | null = null;
  private cancelReplyTimer: (() => void) | null = null;
  /** Set by shutdown(): new requests are refused, the connection closes once none is in flight. */
  private stopping = false;
  /** Requests answered NBD_ESHUTDOWN because the site was stopping; reported once, at close. */
  refusedWhileStopping = 0;

  constructor(
    private readonly exports: ReadonlyMap<string, NbdExport>,
    private readonly io: NbdConnectionIo,
    private readonly limits: NbdLimits = defaultNbdLimits,
    private readonly budget: RequestBudget = new RequestBudget(limits.requestsInFlightMax),
    private readonly tlsMode: NbdTlsMode = 'off',
  ) {
    this.startTimer = io.startTimer ?? startRealTimer;
    this.cancelHandshakeTimer = this.startTimer(limits.handshakeTimeoutMs, () =>
      this.timeOut(`handshake not finished within ${limits.handshakeTimeoutMs} ms`),
    );
    const greeting = new Uint8Array(18);
    const view = new DataView(greeting.buffer);
    view.setBigUint64(0, nbdMagic);
    view.setBigUint64(8, optionMagic);
    view.setUint16(16, handshakeFlags.fixedNewstyle | handshakeFlags.noZeroes);
    this.send(greeting);
  }

  onData(chunk: Uint8Array): void {
    if (this.phase === 'closed') return;
    this.chunks.push(chunk);
    this.buffered += chunk.length;
    this.drain();
  }

  /** The transport is gone (the client left, or the server closed it): give back what is held. */
  onTransportClosed(): void {
    if (this.phase === 'closed') return;
    this.shutDown();
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
      case 'discard-data':
        return this.discardWriteData();
      case 'tls-handshake':
      case 'budget-wait':
      case 'closed':
        return false;
    }
  }

  // ---- handshake -----------------------------------------------------------------------------

  private readClientFlags(): boolean {
    const bytes = this.take(4);
    if (!bytes) return false;
    const flags = new DataView(bytes.buffer, bytes.byteOffset).getUint32(0);
    // The spec: the server MUST drop the connection on a flag it does not know or did not offer.
    const unknown = (flags & ~(clientFlags.fixedNewstyle | clientFlags.noZeroes)) >>> 0;
    if (unknown !== 0) return this.violation(`unknown client flags 0x${unknown.toString(16)}`);
    if (!(flags & clientFlags.fixedNewstyle)) return this.violation('client does not speak fixed newstyle');
    this.noZeroes = (flags & clientFlags.noZeroes) !== 0;
    this.startHaggling();
    return true;
  }

  private startHaggling(): void {
    this.handshake = new Handshake(
      this.exports,
      (reply) => this.send(reply),
      this.limits,
      this.noZeroes,
      { mode: this.tlsMode, active: this.tlsActive },
      () => this.io.admit?.() ?? null,
    );
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
    // A client should wait for each option's replies; one that does not is not read meanwhile.
    if (this.unsentBytes >= this.limits.handshakeBytesQueuedMax) return false;
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
      if (outcome.reply) this.send(outcome.reply);
      this.agreement = outcome.agreement;
      this.handshake = null;
      this.phase = 'request-header';
      this.cancelHandshakeTimer?.();
      this.cancelHandshakeTimer = null;
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

  /** Reads one header, decides from it alone whether the request is refused, and reserves its budget. */
  private readRequestHeader(): boolean {
    if (this.repliesHoldReading()) return false;
    const header = this.take(requestHeaderBytes);
    if (!header) return false;
    const request = decodeRequest(header);
    if (!request) return this.violation('bad request magic');
    if (request.type === commands.disconnect) {
      this.close('client disconnected');
      return false;
    }
    if (request.type === commands.write && request.length > this.limits.requestBytesMax)
      return this.violation(`write of ${request.length} bytes, at most ${this.limits.requestBytesMax}`);
    const agreement = this.agreement as Agreement;
    const refusal = this.validate(agreement, request);
    if (refusal?.kind === 'error') {
      this.io.warn('nbd-request-refused', {
        command: commandNames[request.type] ?? String(request.type),
        flags: request.flags,
        offset: request.offset,
        length: request.length,
        reason: refusal.message,
      });
    }
    const pending: Pending = { request, hold: null, refusal, serving: false };
    this.requests.add(pending);
    this.pending = pending;
    // Reserved before the payload is read or the request served: a full server stops reading.
    const hold = this.budget.reserve(this.bytesHeldBy(agreement, pending), this.granted);
    if (!hold) {
      this.phase = 'budget-wait';
      return false;
    }
    this.start(hold);
    return true;
  }

  /** Per connection: at most requestsInFlightMax requests, and unsent replies below their bound. */
  private repliesHoldReading(): boolean {
    return (
      this.requests.size >= this.limits.requestsInFlightMax ||
      this.unsentBytes >= this.limits.replyBytesQueuedMax
    );
  }

  /** The data a request keeps in memory: a WRITE's payload, a READ's reply, a BLOCK_STATUS scan. */
  private bytesHeldBy({ export: found }: Agreement, { request, refusal }: Pending): number {
    if (refusal) return 0;
    if (request.type === commands.read || request.type === commands.write) return request.length;
    if (request.type === commands.blockStatus) return this.scanBytes(found, request.length);
    return 0;
  }

  /** The budget let the request waiting in line in. */
  private readonly granted = (hold: BudgetHold): void => {
    assert(this.phase === 'budget-wait', () => `budget granted in phase ${this.phase}`);
    this.start(hold);
    this.drain();
  };

  /** With its budget reserved: read the payload of a WRITE, serve anything else. */
  private start(hold: BudgetHold): void {
    const pending = this.pending as Pending;
    pending.hold = hold;
    const { length } = pending.request;
    if (pending.request.type !== commands.write || length === 0) {
      this.awaitNextRequest();
      this.serve(pending, pending.request.type === commands.write ? new Uint8Array(0) : null);
      return;
    }
    if (!pending.refusal && this.buffered >= length) {
      // The whole payload is here already (small writes, usually): no copy, no timer.
      const data = this.take(length) as Uint8Array;
      this.awaitNextRequest();
      this.serve(pending, data);
      return;
    }
    if (pending.refusal) {
      this.phase = 'discard-data';
      this.discardRemaining = length;
    } else {
      this.phase = 'write-data';
      // Allocated once and filled as bytes arrive, so socket chunks are let go as they are read.
      this.payload = Buffer.allocUnsafeSlow(length);
      this.payloadFilled = 0;
    }
    const timeoutMs = this.limits.requestPayloadTimeoutMs;
    this.cancelPayloadTimer = this.startTimer(timeoutMs, () => {
      const received = this.payload ? this.payloadFilled : length - this.discardRemaining;
      this.timeOut(
        `write payload of ${length} bytes not received within ${timeoutMs} ms (${received} received)`,
      );
    });
  }

  private readWriteData(): boolean {
    const payload = this.payload as Uint8Array;
    this.payloadFilled += this.takeInto(payload, this.payloadFilled);
    if (this.payloadFilled < payload.length) return false;
    const pending = this.pending as Pending;
    this.awaitNextRequest();
    this.serve(pending, payload);
    return true;
  }

  private discardWriteData(): boolean {
    this.discardRemaining -= this.skip(this.discardRemaining);
    if (this.discardRemaining > 0) return false;
    const pending = this.pending as Pending;
    this.awaitNextRequest();
    this.serve(pending, null);
    return true;
  }

  private awaitNextRequest(): void {
    this.cancelPayloadTimer?.();
    this.cancelPayloadTimer = null;
    this.payload = null;
    this.payloadFilled = 0;
    this.discardRemaining = 0;
    this.pending = null;
    this.phase = 'request-header';
  }

  /**
   * The site is stopping: new requests get NBD_ESHUTDOWN (the client should disconnect), those in
   * flight finish, then the connection closes. A connection still haggling closes at once.
   */
  shutdown(): void {
    if (this.phase === 'closed') return;
    this.stopping = true;
    if (this.agreement === null || this.requests.size === 0) this.close('server stopping');
  }

  /** Answers a refused request, or serves it; the budget is held until the reply has left. */
  private serve(pending: Pending, data: Uint8Array | null): void {
    const agreement = this.agreement as Agreement;
    const { request } = pending;
    if (pending.refusal) {
      this.reply(agreement, pending, pending.refusal);
      return;
    }
    if (this.stopping) {
      this.refusedWhileStopping++;
      this.reply(agreement, pending, {
        kind: 'error',
        error: nbdErrors.ESHUTDOWN,
        message: 'server stopping',
      });
      return;
    }
    pending.serving = true;
    this.handle(agreement, request, data).then(
      (outcome) => this.finish(agreement, pending, outcome),
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
        this.finish(agreement, pending, { kind: 'error', error, message: reason });
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
    const badFlag = flagRefusal(request);
    if (badFlag) return refuse(nbdErrors.EINVAL, `${name}: ${badFlag}`);
    if (type === commands.flush) return null;
    const writes = type !== commands.read && type !== commands.blockStatus;
    if (writes && found.readOnly) return refuse(nbdErrors.EPERM, `${found.name} is read-only`);
    if (offset + length > found.sizeBytes) {
      const message = `${name} of ${length} bytes at ${offset} is past the end of ${found.name} (${found.sizeBytes} bytes)`;
      return refuse(writes ? nbdErrors.ENOSPC : nbdErrors.EINVAL, message);
    }
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
    const data = await found.read(request.offset, this.scanBytes(found, request.length));
    const extents = zeroRuns(data, request.offset, found.blockBytes).map((run) => ({
      length: run.length,
      flags: run.zero ? allocationStates.zero : 0,
    }));
    return (request.flags & commandFlags.requestOne) !== 0 ? extents.slice(0, 1) : extents;
  }

  /** Bytes a BLOCK_STATUS request reads: whole blocks, at most blockStatusBytesMax. */
  private scanBytes(found: NbdExport, length: number): number {
    const scanMax = Math.max(
      found.blockBytes,
      this.limits.blockStatusBytesMax - (this.limits.blockStatusBytesMax % found.blockBytes),
    );
    return Math.min(length, scanMax);
  }

  private finish(agreement: Agreement, pending: Pending, outcome: Outcome): void {
    pending.serving = false;
    if (this.phase === 'closed') {
      this.forget(pending);
      return;
    }
    // Only a READ's data stays in memory until its reply has left; a stored write's payload is done.
    if (outcome.kind !== 'data' && pending.hold) this.budget.releaseBytes(pending.hold);
    this.reply(agreement, pending, outcome);
  }

  /**
   * Structured replies for READ and BLOCK_STATUS once negotiated, simple replies otherwise. The
   * request keeps its budget until the last piece has left the socket: unsent replies are memory.
   */
  private reply(
    { structuredReplies, allocationContextId }: Agreement,
    pending: Pending,
    outcome: Outcome,
  ): void {
    const { request } = pending;
    const { cookie } = request;
    this.io.observe?.(
      commandNames[request.type] ?? String(request.type),
      outcome.kind === 'error' ? (nbdErrorNames[outcome.error] ?? String(outcome.error)) : null,
    );
    const structured =
      structuredReplies && (request.type === commands.read || request.type === commands.blockStatus);
    const pieces: Uint8Array[] = [];
    switch (outcome.kind) {
      case 'error':
        pieces.push(
          structured
            ? errorChunk(cookie, outcome.error, outcome.message)
            : simpleReply(cookie, outcome.error),
        );
        break;
      case 'status':
        pieces.push(blockStatusChunk(cookie, true, allocationContextId as number, outcome.extents));
        break;
      case 'data':
        if (structured) pieces.push(...this.readChunks(request, outcome.data));
        // The data follows the simple reply's header unchanged: no copy of it is made.
        else pieces.push(simpleReply(cookie, 0), outcome.data);
        break;
      case 'done':
        pieces.push(simpleReply(cookie, 0));
    }
    const last = pieces.length - 1;
    pieces.forEach((piece, index) => {
      this.send(piece, index === last ? () => this.forget(pending) : undefined);
    });
    // Past the bound on unsent replies, stop reading now rather than at the next chunk.
    this.updateReading();
  }

  /** A READ as structured chunks: long zero runs as holes, the rest as data, the last one DONE. */
  private readChunks(request: NbdRequest, data: Uint8Array): Uint8Array[] {
    if (data.length === 0) return [structuredChunk(request.cookie, chunkTypes.none, true)];
    const blockBytes = (this.agreement as Agreement).export.blockBytes;
    const runs = coarsen(zeroRuns(data, request.offset, blockBytes), holeBytesMin);
    return runs.flatMap((run, index) => {
      const last = index === runs.length - 1;
      if (run.zero) return [offsetHoleChunk(request.cookie, last, run.offset, run.length)];
      const at = run.offset - request.offset;
      return [
        offsetDataHeader(request.cookie, last, run.offset, run.length),
        data.subarray(at, at + run.length),
      ];
    });
  }

  /** The request is over: it leaves the connection's count and gives its budget back. */
  private forget(pending: Pending): void {
    this.requests.delete(pending);
    if (pending.hold) this.budget.release(pending.hold);
    if (this.stopping && this.requests.size === 0 && this.phase !== 'closed') this.close('server stopping');
  }

  // ---- sending and timeouts ------------------------------------------------------------------

  /** Every byte to the client goes here, so the bytes not yet taken by it are known. */
  private send(bytes: Uint8Array, sent?: () => void): void {
    this.unsentBytes += bytes.length;
    if (!this.cancelReplyTimer) this.watchReplies(this.sentCount);
    this.io.send(bytes, () => {
      this.unsentBytes -= bytes.length;
      this.sentCount++;
      sent?.();
      // Reading may have paused at a bound on unsent replies or requests: go on with what is buffered.
      if (this.readingPaused) this.drain();
    });
  }

  /**
   * Closes a client that leaves its replies unread: checked every replyTimeoutMs while bytes are
   * unsent, so one that stops reading is closed between one and two timeouts after its last progress.
   */
  private watchReplies(sentCountAtStart: number): void {
    const timeoutMs = this.limits.replyTimeoutMs;
    this.cancelReplyTimer = this.startTimer(timeoutMs, () => {
      this.cancelReplyTimer = null;
      if (this.phase === 'closed' || this.unsentBytes === 0) return;
      if (this.sentCount !== sentCountAtStart) {
        this.watchReplies(this.sentCount);
        return;
      }
      this.timeOut(`${this.unsentBytes} bytes of replies not read by the client within ${timeoutMs} ms`);
    });
  }

  private timeOut(reason: string): void {
    if (this.phase === 'closed') return;
    this.io.warn('nbd-client-timeout', { reason });
    this.close(reason);
  }

  // ---- helpers -------------------------------------------------------------------------------

  /** Consumes input while whole units are buffered, then pauses or resumes reading to match. */
  private drain(): void {
    // A reply that leaves while a step runs must not start a second loop over the same input.
    if (this.draining) {
      this.drainAgain = true;
      return;
    }
    this.draining = true;
    try {
      do {
        this.drainAgain = false;
        while ((this.phase as Phase) !== 'closed' && this.step()) {
          // each step consumed one header or payload
        }
      } while (this.drainAgain && (this.phase as Phase) !== 'closed');
    } finally {
      this.draining = false;
    }
    this.updateReading();
  }

  /** Reading stops while the connection waits for the budget or its replies are held up. */
  private updateReading(): void {
    if (this.phase === 'closed') return;
    const paused = this.readingHeld();
    if (paused === this.readingPaused) return;
    this.readingPaused = paused;
    this.io.pause(paused);
  }

  private readingHeld(): boolean {
    switch (this.phase) {
      case 'client-flags':
      case 'option-header':
      case 'option-data':
        return this.unsentBytes >= this.limits.handshakeBytesQueuedMax;
      case 'request-header':
        return this.repliesHoldReading();
      case 'budget-wait':
        return true;
      case 'tls-handshake':
      case 'write-data':
      case 'discard-data':
      case 'closed':
        return false;
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
      taken = new Uint8Array(count);
      this.takeInto(taken, 0);
      return taken;
    }
    this.buffered -= count;
    return taken;
  }

  /** Moves buffered bytes into `target` from `at` until it is full; returns how many moved. */
  private takeInto(target: Uint8Array, at: number): number {
    let moved = 0;
    while (this.chunks.length > 0 && at + moved < target.length) {
      const chunk = this.chunks[0] as Uint8Array;
      const count = Math.min(chunk.length, target.length - at - moved);
      target.set(chunk.subarray(0, count), at + moved);
      moved += count;
      if (count === chunk.length) this.chunks.shift();
      else this.chunks[0] = chunk.subarray(count);
    }
    this.buffered -= moved;
    return moved;
  }

  /** Drops up to `count` buffered bytes; returns how many. */
  private skip(count: number): number {
    let skipped = 0;
    while (this.chunks.length > 0 && skipped < count) {
      const chunk = this.chunks[0] as Uint8Array;
      const part = Math.min(chunk.length, count - skipped);
      skipped += part;
      if (part === chunk.length) this.chunks.shift();
      else this.chunks[0] = chunk.subarray(part);
    }
    this.buffered -= skipped;
    return skipped;
  }

  private violation(reason: string): boolean {
    this.io.warn('nbd-protocol-violation', { reason });
    this.close(reason);
    return false;
  }

  private close(reason: string): void {
    if (this.phase === 'closed') return;
    this.shutDown();
    this.io.close(reason);
  }

  /** Stops timers, leaves the budget's line, and gives back what no running request still uses. */
  private shutDown(): void {
    this.phase = 'closed';
    for (const cancel of [this.cancelHandshakeTimer, this.cancelPayloadTimer, this.cancelReplyTimer])
      cancel?.();
    this.cancelHandshakeTimer = null;
    this.cancelPayloadTimer = null;
    this.cancelReplyTimer = null;
    this.budget.leave(this.granted);
    // A request storage still works on gives its budget back when it finishes (finish()).
    for (const pending of this.requests) if (!pending.serving) this.forget(pending);
    this.pending = null;
    this.payload = null;
    this.chunks = [];
    this.buffered = 0;
  }
}

/**
 * The command flags a request may carry, as the spec and the flags offered allow: FUA on any
 * command (SEND_FUA is offered), NO_HOLE on WRITE_ZEROES, REQ_ONE on BLOCK_STATUS. DF and
 * FAST_ZERO are never offered, PAYLOAD_LEN needs extended headers (not offered). Returns why the
 * first other flag is refused, or null.
 */
export function flagRefusal({ type, flags }: NbdRequest): string | null {
  let allowed: number = commandFlags.fua;
  if (type === commands.writeZeroes) allowed |= commandFlags.noHole;
  if (type === commands.blockStatus) allowed |= commandFlags.requestOne;
  const refused = flags & ~allowed;
  if (refused === 0) return null;
  const bit = refused & -refused;
  const name = commandFlagNames[bit];
  if (bit === commandFlags.noHole) return 'NO_HOLE is only for WRITE_ZEROES';
  if (bit === commandFlags.requestOne) return 'REQ_ONE is only for BLOCK_STATUS';
  if (name) return `flag ${name} was not offered by this server`;
  return `unknown flag 0x${bit.toString(16)}`;
}
