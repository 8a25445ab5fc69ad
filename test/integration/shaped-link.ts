/**
 * A TCP proxy for the site link, on 127.0.0.1, that holds the primary-to-secondary direction to a
 * bandwidth (one token bucket shared by every connection of the link), so that a resync of a few
 * MiB lasts long enough for a test to act in its middle. Backpressure, not buffering: a connection
 * whose queue holds more than `queuedBytesMax` is paused, so the link's own flow control and
 * liveness see a slow link rather than a proxy swallowing megabytes. The other direction (stored
 * numbers, heartbeats) passes at once.
 */
import { connect, createServer, type Server, type Socket } from 'node:net';

const tickMs = 10;
const queuedBytesMax = 64 * 1024;

interface Shaped {
  from: Socket;
  to: Socket;
  queue: Buffer[];
  queuedBytes: number;
}

export class ShapedLink {
  private server: Server | null = null;
  private readonly sockets = new Set<Socket>();
  private readonly shaped = new Set<Shaped>();
  private timer: NodeJS.Timeout | null = null;
  /** Bytes forwarded towards the secondary, for a test to show the link carried the copy. */
  forwardedBytes = 0;

  constructor(
    private readonly targetPort: number,
    /** May be changed at any time: a test slows the link only when the part it watches begins. */
    public bytesPerSecond: number,
  ) {}

  async listen(port: number): Promise<void> {
    this.server = createServer((client) => this.accept(client));
    await new Promise<void>((resolve) => this.server?.listen(port, '127.0.0.1', () => resolve()));
    this.timer = setInterval(() => this.forward(), tickMs);
  }

  private accept(client: Socket): void {
    const upstream = connect(this.targetPort, '127.0.0.1');
    const shaped: Shaped = { from: client, to: upstream, queue: [], queuedBytes: 0 };
    this.sockets.add(client).add(upstream);
    this.shaped.add(shaped);
    const close = (): void => {
      client.destroy();
      upstream.destroy();
      this.sockets.delete(client);
      this.sockets.delete(upstream);
      this.shaped.delete(shaped);
    };
    client.on('error', close).on('close', close);
    upstream.on('error', close).on('close', close);
    client.on('data', (chunk: Buffer) => {
      shaped.queue.push(chunk);
      shaped.queuedBytes += chunk.length;
      if (shaped.queuedBytes > queuedBytesMax) client.pause();
    });
    upstream.on('data', (chunk: Buffer) => {
      if (!client.destroyed) client.write(chunk);
    });
  }

  /**
   * Each tick, the bucket's share goes out in turns of a few KiB per connection, so that no
   * connection starves behind another (each would time out on its own), each in its own order.
   */
  private forward(): void {
    let budget = Math.ceil((this.bytesPerSecond * tickMs) / 1000);
    const turnBytes = 4096;
    let moved = true;
    while (budget > 0 && moved) {
      moved = false;
      for (const shaped of this.shaped) {
        const sent = this.send(shaped, Math.min(budget, turnBytes));
        budget -= sent;
        moved ||= sent > 0;
      }
    }
    for (const shaped of this.shaped) {
      if (shaped.queuedBytes <= queuedBytesMax && shaped.from.isPaused()) shaped.from.resume();
    }
  }

  private send(shaped: Shaped, bytesMax: number): number {
    let sent = 0;
    while (sent < bytesMax && shaped.queue.length > 0) {
      const head = shaped.queue[0] as Buffer;
      const room = bytesMax - sent;
      const part = head.length <= room ? head : head.subarray(0, room);
      if (part === head) shaped.queue.shift();
      else shaped.queue[0] = head.subarray(room);
      sent += part.length;
      if (!shaped.to.destroyed) shaped.to.write(part);
    }
    shaped.queuedBytes -= sent;
    this.forwardedBytes += sent;
    return sent;
  }

  async close(): Promise<void> {
    if (this.timer) clearInterval(this.timer);
    for (const socket of this.sockets) socket.destroy();
    await new Promise<void>((resolve) => (this.server ? this.server.close(() => resolve()) : resolve()));
  }
}
