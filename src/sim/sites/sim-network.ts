/**
 * Simulated site links for whole sites: sockets whose bytes arrive after a latency, in order, split
 * at random points, and which the simulator can cut, stall, corrupt or partition. A socket end
 * belongs to a process; when the process dies its ends close, and the peer hears it after a latency.
 */
import { EventEmitter } from 'node:events';
import type { DialledSocket, LinkListener, LinkNetwork, LinkSocket } from '../../io/network.ts';
import type { Random } from '../random.ts';
import type { SimProcess, World } from './world.ts';

/** Bytes queued on a socket beyond which writers are asked to wait for 'drain'. */
const highWaterBytes = 256 * 1024;
/** How long a dial into a partition waits before it fails. */
const dialTimeoutMs = 1000;

/** One end of a simulated connection. */
class SimSocket extends EventEmitter implements LinkSocket {
  peer: SimSocket | null = null;
  closed = false;
  /** Bytes written and not yet delivered to the peer. */
  private queuedBytes = 0;
  private waitingForDrain = false;
  /** When the last byte written will have arrived: deliveries keep their order. */
  private lastArrivalMs = 0;

  constructor(
    private readonly network: SimNetwork,
    readonly connection: SimConnection,
    readonly owner: SimProcess,
  ) {
    super();
  }

  get writableNeedDrain(): boolean {
    return this.queuedBytes >= highWaterBytes;
  }

  setNoDelay(): void {}

  write(bytes: Uint8Array): boolean {
    if (this.closed) return false;
    const copy = new Uint8Array(bytes);
    this.queuedBytes += copy.length;
    for (const piece of this.network.split(copy)) {
      const arrival = Math.max(this.lastArrivalMs, this.network.arrivalMs(this.connection));
      this.lastArrivalMs = arrival;
      this.network.world.schedule(null, arrival - this.network.world.now, () => this.arrive(piece));
    }
    if (this.writableNeedDrain) this.waitingForDrain = true;
    return !this.writableNeedDrain;
  }

  private arrive(piece: Uint8Array): void {
    this.queuedBytes -= piece.length;
    if (this.waitingForDrain && !this.writableNeedDrain && !this.closed) {
      this.waitingForDrain = false;
      this.network.world.schedule(this.owner, 0, () => this.emit('drain'));
    }
    const peer = this.peer;
    if (!peer || peer.closed || !peer.owner.alive) return;
    const delivered = this.connection.corruptNext ? this.network.corrupt(piece) : piece;
    this.connection.corruptNext = false;
    peer.emit('data', delivered);
  }

  end(): void {
    if (this.closed) return;
    // After what was written has arrived, both ends close.
    const at = Math.max(this.lastArrivalMs, this.network.world.now);
    this.network.world.schedule(null, at - this.network.world.now, () => this.destroy());
  }

  destroy(): void {
    if (this.closed) return;
    this.closeHere();
    const peer = this.peer;
    if (peer)
      this.network.world.schedule(null, this.network.latencyOf(this.connection), () => peer.closeHere());
  }

  /** This end is gone: it hears 'close' once, soon. */
  closeHere(error?: Error): void {
    if (this.closed) return;
    this.closed = true;
    this.connection.open = false;
    this.network.world.schedule(this.owner, 0, () => {
      if (error) this.emit('error', error);
      this.emit('close');
    });
  }
}

/** A connection between a primary and one secondary's listener. */
export interface SimConnection {
  link: string;
  open: boolean;
  /** Bytes are held until then (a stall). */
  stalledUntilMs: number;
  /** The next piece delivered gets one bit flipped. */
  corruptNext: boolean;
  ends: SimSocket[];
}

interface Listening {
  owner: SimProcess;
  link: string;
  onSocket: (socket: LinkSocket, peer: string) => void;
}

export class SimNetwork {
  private readonly listeners = new Map<string, Listening>();
  readonly connections: SimConnection[] = [];
  /** Links cut off until the given time: dials fail, bytes wait. */
  private readonly partitionedUntil = new Map<string, number>();

  constructor(
    readonly world: World,
    private readonly random: Random,
    /** Latency of each link (named by the secondary's listen address), in ms. */
    private readonly latencyMs: Map<string, number>,
  ) {}

  /** The LinkNetwork a process uses: its sockets die with it. */
  forProcess(owner: SimProcess): LinkNetwork {
    return {
      dial: (address) => this.dial(owner, address),
      listen: (address, onSocket) => this.listen(owner, address, onSocket),
    };
  }

  latencyOf(connection: SimConnection): number {
    return this.latencyMs.get(connection.link) ?? 1;
  }

  /** When bytes sent now on `connection` arrive: latency plus jitter, after any stall or partition. */
  arrivalMs(connection: SimConnection): number {
    const now = this.world.now;
    const held = Math.max(connection.stalledUntilMs, this.partitionedUntil.get(connection.link) ?? 0);
    return Math.max(now, held) + this.latencyOf(connection) + this.random.int(3);
  }

  /** A write as it may come out of TCP: in one piece or several. */
  split(bytes: Uint8Array): Uint8Array[] {
    if (bytes.length < 2 || this.random.chance(0.7)) return [bytes];
    const at = 1 + this.random.int(bytes.length - 1);
    return [bytes.subarray(0, at), bytes.subarray(at)];
  }

  corrupt(piece: Uint8Array): Uint8Array {
    const copy = new Uint8Array(piece);
    const at = this.random.int(copy.length);
    copy[at] = (copy[at] as number) ^ (1 << this.random.int(8));
    return copy;
  }

  private listen(
    owner: SimProcess,
    address: string,
    onSocket: (socket: LinkSocket, peer: string) => void,
  ): Promise<LinkListener> {
    const existing = this.listeners.get(address);
    if (existing?.owner.alive) {
      const error = Object.assign(new Error(`listen EADDRINUSE: address already in use ${address}`), {
        code: 'EADDRINUSE',
      });
      return Promise.reject(error);
    }
    const listening: Listening = { owner, link: address, onSocket };
    this.listeners.set(address, listening);
    return Promise.resolve({
      close: async () => {
        if (this.listeners.get(address) === listening) this.listeners.delete(address);
      },
    });
  }

  private dial(owner: SimProcess, address: string): DialledSocket {
    const connection: SimConnection = {
      link: address,
      open: true,
      stalledUntilMs: 0,
      corruptNext: false,
      ends: [],
    };
    const client = new SimSocket(this, connection, owner);
    connection.ends.push(client);
    const readyListeners: (() => void)[] = [];
    const latency = this.latencyMs.get(address) ?? 1;
    const partitioned = (this.partitionedUntil.get(address) ?? 0) > this.world.now;
    this.world.schedule(null, partitioned ? dialTimeoutMs : latency, () => {
      const listening = this.listeners.get(address);
      if (client.closed) return;
      if (partitioned || !listening || !listening.owner.alive) {
        const code = partitioned ? 'ETIMEDOUT' : 'ECONNREFUSED';
        client.closeHere(Object.assign(new Error(`connect ${code} ${address}`), { code }));
        return;
      }
      const server = new SimSocket(this, connection, listening.owner);
      server.peer = client;
      client.peer = server;
      connection.ends.push(server);
      this.connections.push(connection);
      this.world.schedule(listening.owner, 0, () => listening.onSocket(server, `sim:${owner.name}`));
      this.world.schedule(owner, latency, () => {
        if (!client.closed) for (const listener of readyListeners) listener();
      });
    });
    return { socket: client, onReady: (listener) => readyListeners.push(listener) };
  }

  // ---- faults ----

  /** Connections that are open now on `link` (both ends alive). */
  openConnections(link: string): SimConnection[] {
    return this.connections.filter((connection) => connection.open && connection.link === link);
  }

  /** Cuts a connection: both ends hear 'close' (a reset). */
  reset(connection: SimConnection): void {
    for (const end of connection.ends) end.closeHere(new Error('read ECONNRESET'));
  }

  stall(connection: SimConnection, durationMs: number): void {
    connection.stalledUntilMs = Math.max(connection.stalledUntilMs, this.world.now + durationMs);
  }

  corruptNextPiece(connection: SimConnection): void {
    connection.corruptNext = true;
  }

  partition(link: string, durationMs: number): void {
    this.partitionedUntil.set(
      link,
      Math.max(this.partitionedUntil.get(link) ?? 0, this.world.now + durationMs),
    );
  }

  /** The process died: its ends close at once, peers hear it after the latency. */
  processDied(owner: SimProcess): void {
    for (const [address, listening] of this.listeners)
      if (listening.owner === owner) this.listeners.delete(address);
    for (const connection of this.connections) {
      if (!connection.open) continue;
      for (const end of connection.ends) if (end.owner === owner) end.destroy();
    }
    // Forget closed connections, so the list stays short over a long run.
    for (let i = this.connections.length - 1; i >= 0; i--)
      if (!(this.connections[i] as SimConnection).open) this.connections.splice(i, 1);
  }
}
