/**
 * A minimal NBD client over a real TCP socket, for tests that need to see each reply's error code
 * and keep a connection open while a server stops: fixed newstyle, NBD_OPT_GO, WRITE and FLUSH
 * with simple replies only (no READ: its reply would carry data this client does not parse).
 */
import { connect, type Socket } from 'node:net';
import {
  commands,
  handshakeFlags,
  infoTypes,
  optionMagic,
  optionReplyMagic,
  options,
  replies,
  requestMagic,
  simpleReplyMagic,
  transmissionFlags,
} from '../../src/nbd/protocol.ts';

interface Pending {
  resolve: (error: number) => void;
  reject: (error: Error) => void;
}

export class NbdSocketClient {
  private buffered = Buffer.alloc(0);
  private readonly pending = new Map<bigint, Pending>();
  private nextCookie = 1n;
  private waitForBytes: (() => void) | null = null;
  /** Why the connection ended, once it has. */
  ended: string | null = null;
  /** Whether the server said the export is read-only (NBD_FLAG_READ_ONLY in NBD_INFO_EXPORT). */
  readOnly = false;
  /** Settles when the server (or we) closed the connection. */
  readonly closed: Promise<void>;

  private constructor(private readonly socket: Socket) {
    this.closed = new Promise((resolve) => {
      socket.once('close', () => {
        this.ended ??= 'closed';
        for (const waiter of this.pending.values()) waiter.reject(new Error('connection closed'));
        this.pending.clear();
        this.waitForBytes?.();
        resolve();
      });
    });
    socket.on('error', (error) => {
      this.ended = error.message;
    });
    socket.on('data', (chunk: Buffer) => {
      this.buffered = Buffer.concat([this.buffered, chunk]);
      if (this.waitForBytes) this.waitForBytes();
      else this.readReplies();
    });
  }

  /** Connects and negotiates `exportName` with NBD_OPT_GO; throws on an option error. */
  static async open(port: number, exportName: string): Promise<NbdSocketClient> {
    const socket = connect(port, '127.0.0.1');
    await new Promise<void>((resolve, reject) => {
      socket.once('connect', resolve);
      socket.once('error', reject);
    });
    const client = new NbdSocketClient(socket);
    await client.handshake(exportName);
    return client;
  }

  private async take(count: number): Promise<Buffer> {
    while (this.buffered.length < count) {
      if (this.ended) throw new Error(`connection ended during the handshake: ${this.ended}`);
      await new Promise<void>((resolve) => {
        this.waitForBytes = resolve;
      });
      this.waitForBytes = null;
    }
    const taken = this.buffered.subarray(0, count);
    this.buffered = this.buffered.subarray(count);
    return taken;
  }

  private async handshake(exportName: string): Promise<void> {
    await this.take(18);
    const flags = Buffer.alloc(4);
    flags.writeUInt32BE(handshakeFlags.fixedNewstyle | handshakeFlags.noZeroes);
    const name = Buffer.from(exportName);
    const option = Buffer.alloc(16 + 4 + name.length + 2);
    option.writeBigUInt64BE(optionMagic, 0);
    option.writeUInt32BE(options.go, 8);
    option.writeUInt32BE(4 + name.length + 2, 12);
    option.writeUInt32BE(name.length, 16);
    name.copy(option, 20);
    this.socket.write(Buffer.concat([flags, option]));
    for (;;) {
      const header = await this.take(20);
      if (header.readBigUInt64BE(0) !== optionReplyMagic) throw new Error('bad option reply magic');
      const type = header.readUInt32BE(12);
      const payload = await this.take(header.readUInt32BE(16));
      if (type === replies.info && payload.length >= 12 && payload.readUInt16BE(0) === infoTypes.export)
        this.readOnly = (payload.readUInt16BE(10) & transmissionFlags.readOnly) !== 0;
      if (type === replies.ack) return;
      if (type >= 2 ** 31) throw new Error(`NBD_OPT_GO refused with reply type ${type}`);
    }
  }

  private readReplies(): void {
    while (this.buffered.length >= 16) {
      if (this.buffered.readUInt32BE(0) !== simpleReplyMagic) throw new Error('bad simple reply magic');
      const error = this.buffered.readUInt32BE(4);
      const cookie = this.buffered.readBigUInt64BE(8);
      this.buffered = this.buffered.subarray(16);
      const waiter = this.pending.get(cookie);
      this.pending.delete(cookie);
      waiter?.resolve(error);
    }
  }

  private request(type: number, offset: number, data: Uint8Array | null): Buffer {
    const header = Buffer.alloc(28);
    header.writeUInt32BE(requestMagic, 0);
    header.writeUInt16BE(0, 4);
    header.writeUInt16BE(type, 6);
    header.writeBigUInt64BE(this.nextCookie++, 8);
    header.writeBigUInt64BE(BigInt(offset), 16);
    header.writeUInt32BE(data ? data.length : 0, 24);
    return data ? Buffer.concat([header, data]) : header;
  }

  private replyTo(request: Buffer): Promise<number> {
    const cookie = request.readBigUInt64BE(8);
    return new Promise((resolve, reject) => this.pending.set(cookie, { resolve, reject }));
  }

  /**
   * Sends the requests in one socket write (the server reads them together) and resolves with
   * each one's NBD error (0: success); rejects if the connection ends before a reply.
   */
  send(requests: Buffer[]): Promise<number[]> {
    return Promise.all(this.sendEach(requests));
  }

  /** Like send, with one promise per request, so replies that came before a close still count. */
  sendEach(requests: Buffer[]): Promise<number>[] {
    const replies = requests.map((request) => this.replyTo(request));
    this.socket.write(Buffer.concat(requests));
    return replies;
  }

  writeRequest(offset: number, data: Uint8Array): Buffer {
    return this.request(commands.write, offset, data);
  }

  flushRequest(): Buffer {
    return this.request(commands.flush, 0, null);
  }

  destroy(): void {
    this.socket.destroy();
  }
}
