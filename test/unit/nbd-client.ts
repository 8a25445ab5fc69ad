// A client for NbdConnection without sockets: raw bytes in, raw bytes out, and an in-memory export.
import assert from 'node:assert/strict';
import type { RequestBudget } from '../../src/nbd/budget.ts';
import { defaultNbdLimits, NbdConnection, type NbdExport, type NbdLimits } from '../../src/nbd/connection.ts';
import type { NbdTlsMode } from '../../src/nbd/handshake.ts';
import { optionMagic, options, replies, requestMagic } from '../../src/nbd/protocol.ts';

export const blockBytes = 4096;

export function memoryExport(
  name: string,
  sizeBytes: number,
  readOnly = false,
): NbdExport & { bytes: Uint8Array; flushes: number } {
  const bytes = new Uint8Array(sizeBytes);
  const target = {
    name,
    sizeBytes,
    blockBytes,
    readOnly,
    bytes,
    flushes: 0,
    read: async (offset: number, length: number) => bytes.slice(offset, offset + length),
    write: async (offset: number, data: Uint8Array) => {
      bytes.set(data, offset);
    },
    writeZeroes: async (offset: number, length: number) => {
      bytes.fill(0, offset, offset + length);
    },
    flush: async () => {
      target.flushes++;
    },
  };
  return target;
}

/** Timers on a virtual clock that only `elapse` moves. */
export class ManualTimers {
  private now = 0;
  private readonly pending = new Set<{ at: number; fire: () => void }>();

  start = (ms: number, fire: () => void): (() => void) => {
    const timer = { at: this.now + ms, fire };
    this.pending.add(timer);
    return () => this.pending.delete(timer);
  };

  elapse(ms: number): void {
    this.now += ms;
    for (const timer of [...this.pending].sort((a, b) => a.at - b.at)) {
      if (timer.at > this.now || !this.pending.has(timer)) continue;
      this.pending.delete(timer);
      timer.fire();
    }
  }

  get count(): number {
    return this.pending.size;
  }
}

export interface ClientOptions {
  limits?: NbdLimits;
  timers?: ManualTimers;
  admit?: () => string | null;
}

export class Client {
  received = new Uint8Array(0);
  closed: string | null = null;
  readonly connection: NbdConnection;
  readonly warnings: { event: string; reason: string }[] = [];

  paused = false;
  /** While true, sent bytes are not taken by the client: their send callbacks wait. */
  stalled = false;
  private readonly heldSends: (() => void)[] = [];

  constructor(
    exports: NbdExport[],
    budget?: RequestBudget,
    tlsMode: NbdTlsMode = 'off',
    startTls?: () => void,
    options: ClientOptions = {},
  ) {
    this.connection = new NbdConnection(
      new Map(exports.map((found) => [found.name, found])),
      {
        send: (bytes, sent) => {
          const joined = new Uint8Array(this.received.length + bytes.length);
          joined.set(this.received);
          joined.set(bytes, this.received.length);
          this.received = joined;
          if (!sent) return;
          // Like a socket: the callback comes later, once the bytes have left.
          if (this.stalled) this.heldSends.push(sent);
          else queueMicrotask(sent);
        },
        close: (reason) => {
          this.closed = reason;
        },
        pause: (paused) => {
          this.paused = paused;
        },
        log: () => {},
        warn: (event, fields) => {
          this.warnings.push({ event, reason: String(fields.reason) });
        },
        startTls,
        admit: options.admit,
        startTimer: options.timers?.start,
      },
      options.limits ?? defaultNbdLimits,
      budget,
      tlsMode,
    );
  }

  /** The client reads again: what was sent while it stalled has left. */
  unstall(): void {
    this.stalled = false;
    for (const sent of this.heldSends.splice(0)) sent();
  }

  take(count: number): DataView {
    assert.ok(this.received.length >= count, `expected ${count} bytes, have ${this.received.length}`);
    const taken = this.received.slice(0, count);
    this.received = this.received.slice(count);
    return new DataView(taken.buffer);
  }

  send(bytes: Uint8Array): void {
    this.connection.onData(bytes);
  }

  option(code: number, data: Uint8Array = new Uint8Array(0)): void {
    const bytes = new Uint8Array(16 + data.length);
    const view = new DataView(bytes.buffer);
    view.setBigUint64(0, optionMagic);
    view.setUint32(8, code);
    view.setUint32(12, data.length);
    bytes.set(data, 16);
    this.send(bytes);
  }

  /** Reads one option reply: [option, type, payload]. */
  reply(): [number, number, Uint8Array] {
    const header = this.take(20);
    const length = header.getUint32(16);
    const payload = this.received.slice(0, length);
    this.take(length);
    return [header.getUint32(8), header.getUint32(12), payload];
  }

  request(type: number, cookie: number, offset: number, length: number, data?: Uint8Array, flags = 0): void {
    const bytes = new Uint8Array(28 + (data?.length ?? 0));
    const view = new DataView(bytes.buffer);
    view.setUint32(0, requestMagic);
    view.setUint16(4, flags);
    view.setUint16(6, type);
    view.setBigUint64(8, BigInt(cookie));
    view.setBigUint64(16, BigInt(offset));
    view.setUint32(24, length);
    if (data) bytes.set(data, 28);
    this.send(bytes);
  }

  /** Reads one simple reply: [cookie, error, data]. */
  simpleReply(dataBytes = 0): [number, number, Uint8Array] {
    const header = this.take(16);
    const error = header.getUint32(4);
    const data = error === 0 ? this.received.slice(0, dataBytes) : new Uint8Array(0);
    if (error === 0) this.take(dataBytes);
    return [Number(header.getBigUint64(8)), error, data];
  }
}

export function nameData(name: string): Uint8Array {
  const encoded = new TextEncoder().encode(name);
  const data = new Uint8Array(4 + encoded.length + 2);
  new DataView(data.buffer).setUint32(0, encoded.length);
  data.set(encoded, 4);
  return data;
}

export const flush = () => new Promise((resolve) => setImmediate(resolve));

export async function connected(
  exports: NbdExport[],
  name: string,
  budget?: RequestBudget,
  clientOptions: ClientOptions = {},
): Promise<Client> {
  const client = new Client(exports, budget, 'off', undefined, clientOptions);
  client.take(18);
  client.send(Uint8Array.of(0, 0, 0, 3));
  client.option(options.go, nameData(name));
  for (;;) {
    const [, type] = client.reply();
    if (type === replies.ack) break;
  }
  await flush();
  return client;
}

/** Reads one structured chunk: [flags, type, cookie, payload]. */
export function chunk(client: Client): [number, number, number, Uint8Array] {
  const header = client.take(20);
  assert.equal(header.getUint32(0), 0x668e33ef, 'structured reply magic');
  const length = header.getUint32(16);
  const payload = client.received.slice(0, length);
  client.take(length);
  return [header.getUint16(4), header.getUint16(6), Number(header.getBigUint64(8)), payload];
}

/** META_CONTEXT option data: export name and queries. */
export function metaContextData(name: string, queries: string[]): Uint8Array {
  const encoder = new TextEncoder();
  const parts = [name, ...queries].map((text) => encoder.encode(text));
  const bytes = new Uint8Array(4 + parts.reduce((sum, part) => sum + 4 + part.length, 0));
  const view = new DataView(bytes.buffer);
  let at = 0;
  parts.forEach((part, index) => {
    view.setUint32(at, part.length);
    bytes.set(part, at + 4);
    at += 4 + part.length;
    // The count of queries follows the export name.
    if (index === 0) {
      view.setUint32(at, queries.length);
      at += 4;
    }
  });
  return bytes;
}
