/**
 * A fault-injecting TCP proxy for the site link, on 127.0.0.1, driven by a seeded schedule: it
 * drops connections, stalls them, flips a bit in a chunk, or slows them down. Every fault is
 * counted by kind so a test can show the faults really happened.
 */
import { connect, createServer, type Server, type Socket } from 'node:net';
import { Random } from '../../src/sim/random.ts';

export type ProxyFault = 'drop' | 'stall' | 'corrupt' | 'slow';

interface Pair {
  client: Socket;
  upstream: Socket;
  stalledUntil: number;
  slowUntil: number;
  corruptNext: boolean;
}

export class FaultProxy {
  private server: Server | null = null;
  private readonly pairs = new Set<Pair>();
  private timer: NodeJS.Timeout | null = null;
  private readonly random: Random;
  readonly injected: Record<ProxyFault, number> = { drop: 0, stall: 0, corrupt: 0, slow: 0 };

  constructor(
    private readonly targetPort: number,
    seed: number,
  ) {
    this.random = new Random(seed);
  }

  async listen(port: number): Promise<void> {
    this.server = createServer((client) => this.accept(client));
    await new Promise<void>((resolve) => this.server?.listen(port, '127.0.0.1', () => resolve()));
  }

  private accept(client: Socket): void {
    const upstream = connect(this.targetPort, '127.0.0.1');
    const pair: Pair = { client, upstream, stalledUntil: 0, slowUntil: 0, corruptNext: false };
    this.pairs.add(pair);
    const close = (): void => {
      client.destroy();
      upstream.destroy();
      this.pairs.delete(pair);
    };
    client.on('error', close).on('close', close);
    upstream.on('error', close).on('close', close);
    this.pipe(pair, client, upstream);
    this.pipe(pair, upstream, client);
  }

  /** Forwards chunks in order; a stall or a slow period delays them, never reorders them. */
  private pipe(pair: Pair, from: Socket, to: Socket): void {
    let chain = Promise.resolve();
    from.on('data', (chunk: Buffer) => {
      let bytes = chunk;
      if (pair.corruptNext) {
        pair.corruptNext = false;
        bytes = Buffer.from(chunk);
        const at = this.random.int(bytes.length);
        bytes[at] = (bytes[at] as number) ^ (1 << this.random.int(8));
      }
      chain = chain.then(async () => {
        const now = Date.now();
        const wait = Math.max(pair.stalledUntil - now, pair.slowUntil > now ? 5 : 0);
        if (wait > 0) await new Promise((resolve) => setTimeout(resolve, wait));
        if (!to.destroyed) to.write(bytes);
      });
    });
  }

  /** Starts injecting a fault every 150 to 600 ms into a random live connection. */
  startFaults(): void {
    const next = (): void => {
      this.timer = setTimeout(
        () => {
          this.inject();
          next();
        },
        this.random.between(150, 600),
      );
    };
    next();
  }

  stopFaults(): void {
    if (this.timer) clearTimeout(this.timer);
    this.timer = null;
    for (const pair of this.pairs) {
      pair.stalledUntil = 0;
      pair.slowUntil = 0;
      pair.corruptNext = false;
    }
  }

  private inject(): void {
    const live = [...this.pairs];
    if (live.length === 0) return;
    const pair = this.random.pick(live);
    const fault = this.random.pick<ProxyFault>(['drop', 'stall', 'corrupt', 'slow']);
    this.injected[fault]++;
    const now = Date.now();
    if (fault === 'drop') {
      pair.client.destroy();
      pair.upstream.destroy();
    } else if (fault === 'stall') {
      pair.stalledUntil = now + this.random.between(100, 1200);
    } else if (fault === 'corrupt') {
      pair.corruptNext = true;
    } else {
      pair.slowUntil = now + this.random.between(200, 1000);
    }
  }

  async close(): Promise<void> {
    this.stopFaults();
    for (const pair of this.pairs) {
      pair.client.destroy();
      pair.upstream.destroy();
    }
    await new Promise<void>((resolve) => (this.server ? this.server.close(() => resolve()) : resolve()));
  }
}
