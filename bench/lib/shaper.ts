/**
 * A TCP proxy on 127.0.0.1 that shapes the primary-to-secondary direction to a byte rate (one
 * token bucket shared by every connection, as one site link would be), for when the link and not
 * the machine is meant to be the bottleneck. The other direction (acknowledgements) passes as is.
 */
import { connect, createServer, type Server, type Socket } from 'node:net';

export class Shaper {
  private nextFreeMs = 0;
  /** Bytes delivered to the secondary through the shaped direction. */
  forwardedBytes = 0;
  private readonly sockets = new Set<Socket>();

  private constructor(
    private readonly server: Server,
    readonly port: number,
  ) {}

  static async start(targetPort: number, bytesPerSecond: number): Promise<Shaper> {
    let shaper: Shaper | null = null;
    const server = createServer((client) => shaper?.pipe(client, targetPort, bytesPerSecond));
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    const address = server.address();
    shaper = new Shaper(server, typeof address === 'object' && address ? address.port : 0);
    return shaper;
  }

  private pipe(client: Socket, targetPort: number, bytesPerSecond: number): void {
    const upstream = connect(targetPort, '127.0.0.1');
    client.setNoDelay(true);
    upstream.setNoDelay(true);
    for (const socket of [client, upstream]) {
      this.sockets.add(socket);
      socket.once('close', () => {
        this.sockets.delete(socket);
        client.destroy();
        upstream.destroy();
      });
      socket.on('error', () => {});
    }
    upstream.on('data', (chunk: Buffer) => client.write(chunk));
    client.on('data', (chunk: Buffer) => {
      // Each chunk occupies the link for length / rate; the sender waits its turn.
      const now = performance.now();
      this.nextFreeMs = Math.max(this.nextFreeMs, now) + (chunk.length / bytesPerSecond) * 1000;
      const delayMs = this.nextFreeMs - now;
      client.pause();
      setTimeout(() => {
        this.forwardedBytes += chunk.length;
        const drained = upstream.write(chunk);
        if (drained) client.resume();
        else upstream.once('drain', () => client.resume());
      }, delayMs);
    });
  }

  async stop(): Promise<void> {
    for (const socket of this.sockets) socket.destroy();
    await new Promise<void>((resolve) => this.server.close(() => resolve()));
  }
}
