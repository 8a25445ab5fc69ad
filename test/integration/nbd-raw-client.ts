// A raw NBD client over a real socket on 127.0.0.1, for tests that must misbehave in ways real
// clients never do: stay idle, stall mid-payload, stop reading replies, send flags nobody offered.
import { connect, type Socket } from 'node:net';
import { optionMagic, options, replies, requestMagic } from '../../src/nbd/protocol.ts';

export class RawNbdClient {
  private buffer = Buffer.alloc(0);
  private wake: (() => void) | null = null;
  /** Resolves when the socket has closed, whoever closed it. */
  readonly closed: Promise<void>;
  isClosed = false;

  private constructor(readonly socket: Socket) {
    socket.on('data', (chunk: Buffer) => {
      this.buffer = Buffer.concat([this.buffer, chunk]);
      this.wake?.();
    });
    socket.on('error', () => {});
    this.closed = new Promise((resolve) =>
      socket.on('close', () => {
        this.isClosed = true;
        this.wake?.();
        resolve();
      }),
    );
  }

  static open(port: number): Promise<RawNbdClient> {
    return new Promise((resolve, reject) => {
      const socket = connect(port, '127.0.0.1');
      socket.once('connect', () => resolve(new RawNbdClient(socket)));
      socket.once('error', reject);
    });
  }

  /** Resolves with exactly `count` bytes, or rejects when the socket closes or time runs out. */
  async read(count: number, timeoutMs = 15_000): Promise<Buffer> {
    const deadline = Date.now() + timeoutMs;
    while (this.buffer.length < count) {
      if (this.isClosed) throw new Error(`closed after ${this.buffer.length} of ${count} bytes`);
      const left = deadline - Date.now();
      if (left <= 0) throw new Error(`no ${count} bytes within ${timeoutMs} ms`);
      await new Promise<void>((resolve) => {
        const timer = setTimeout(resolve, left);
        this.wake = () => {
          clearTimeout(timer);
          resolve();
        };
      });
      this.wake = null;
    }
    const taken = this.buffer.subarray(0, count);
    this.buffer = this.buffer.subarray(count);
    return taken;
  }

  write(bytes: Uint8Array): void {
    this.socket.write(bytes);
  }

  /** Reads the greeting and answers with these client flags. */
  async greet(clientFlags = 3): Promise<void> {
    await this.read(18);
    const flags = Buffer.alloc(4);
    flags.writeUInt32BE(clientFlags >>> 0);
    this.write(flags);
  }

  /** The whole handshake: greeting, NBD_OPT_GO for `name`, replies up to the ACK. */
  async handshake(name: string): Promise<void> {
    await this.greet();
    const final = await this.go(name);
    if (final.type !== replies.ack)
      throw new Error(`GO refused with reply type ${final.type}: ${final.message}`);
  }

  /** Sends NBD_OPT_GO for `name` and reads its replies up to the final one (ACK or an error). */
  async go(name: string): Promise<{ type: number; message: string }> {
    const encoded = Buffer.from(name);
    const option = Buffer.alloc(16 + 4 + encoded.length + 2);
    option.writeBigUInt64BE(optionMagic, 0);
    option.writeUInt32BE(options.go, 8);
    option.writeUInt32BE(4 + encoded.length + 2, 12);
    option.writeUInt32BE(encoded.length, 16);
    encoded.copy(option, 20);
    this.write(option);
    for (;;) {
      const header = await this.read(20);
      const type = header.readUInt32BE(12);
      const payload = await this.read(header.readUInt32BE(16));
      if (type === replies.ack || type >= 2 ** 31) return { type, message: payload.toString() };
    }
  }

  request(type: number, cookie: number, offset: number, length: number, flags = 0): void {
    this.write(requestHeader(type, cookie, offset, length, flags));
  }

  /** One simple reply: [cookie, error], with `dataBytes` of data read when there is no error. */
  async simpleReply(dataBytes = 0): Promise<[number, number]> {
    const header = await this.read(16);
    const error = header.readUInt32BE(4);
    if (error === 0 && dataBytes > 0) await this.read(dataBytes);
    return [Number(header.readBigUInt64BE(8)), error];
  }

  /** True once the server has closed the socket, false if it is still open after `timeoutMs`. */
  async closedWithin(timeoutMs: number): Promise<boolean> {
    let timer: NodeJS.Timeout | undefined;
    const expired = new Promise<boolean>((resolve) => {
      timer = setTimeout(() => resolve(false), timeoutMs);
    });
    const result = await Promise.race([this.closed.then(() => true), expired]);
    clearTimeout(timer);
    return result;
  }

  destroy(): void {
    this.socket.destroy();
  }
}

export function requestHeader(
  type: number,
  cookie: number,
  offset: number,
  length: number,
  flags = 0,
): Buffer {
  const header = Buffer.alloc(28);
  header.writeUInt32BE(requestMagic, 0);
  header.writeUInt16BE(flags, 4);
  header.writeUInt16BE(type, 6);
  header.writeBigUInt64BE(BigInt(cookie), 8);
  header.writeBigUInt64BE(BigInt(offset), 16);
  header.writeUInt32BE(length, 24);
  return header;
}
