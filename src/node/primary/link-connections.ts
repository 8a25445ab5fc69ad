/**
 * The primary's connections to its secondaries: dialled when the group asks, their frames handed
 * to the group, and frames pumped out of the group while each socket takes them (the socket's own
 * backpressure), a bounded number per turn so one busy link cannot hold the event loop.
 */

import type { Clock } from '../../io/clock.ts';
import { FramedSocket } from '../../net/framed-socket.ts';
import type { Logger } from '../../ops/logger.ts';
import type { Frame } from '../../protocol/frames.ts';
import type { LinkDialer } from './link-dialer.ts';

/** Frames written to one socket per pump before yielding to other work. */
const framesPerPump = 256;

/** What the connections tell the node, by connection id. */
export interface LinkEvents {
  /** Ready for frames (over TLS: the secondary's certificate and identity passed). */
  onConnected(connection: number): void;
  onFrame(connection: number, frame: Frame): void;
  onLost(connection: number, why: string): void;
}

/** Where the frames to send come from: the group, per connection. */
export interface FrameSource {
  pollFrames(nowMs: number, connection: number, max: number): Frame[];
}

export class PrimaryLinks {
  private readonly sockets = new Map<number, FramedSocket>();
  /** Connections ready for frames. */
  private readonly connected = new Set<number>();
  private pumpScheduled = false;

  constructor(
    private readonly secondaries: readonly { name: string; address: string }[],
    private readonly dialer: LinkDialer,
    private readonly frames: FrameSource,
    private readonly clock: Clock,
    private readonly logger: Logger,
    private readonly events: LinkEvents,
  ) {}

  /** Dials the secondary `link` as connection `id`. */
  connect(link: string, id: number): void {
    const secondary = this.secondaries.find((candidate) => candidate.name === link);
    if (!secondary) return;
    const dialled = this.dialer.dial(secondary.address);
    const framed = new FramedSocket(dialled.socket, this.clock, {
      onFrame: (frame) => this.events.onFrame(id, frame),
      onProtocolError: (error) => {
        this.logger.warn('bad-bytes-from-secondary', {
          link,
          connection: id,
          code: error.code,
          reason: error.message,
        });
      },
      onClose: (reason) => {
        const ready = this.connected.has(id);
        this.sockets.delete(id);
        this.connected.delete(id);
        this.events.onLost(id, this.dialer.explainClose(reason, { ready, bytesIn: framed.bytesIn }));
      },
      onDrain: () => this.schedulePump(),
    });
    this.sockets.set(id, framed);
    dialled.onReady(() => {
      this.connected.add(id);
      this.events.onConnected(id);
    });
  }

  disconnect(id: number, reason: string): void {
    this.sockets.get(id)?.close(reason);
  }

  closeAll(reason: string): void {
    for (const socket of this.sockets.values()) socket.close(reason);
  }

  /** Pumps once the work in hand is done: many actions in a row make one pump. */
  schedulePump(): void {
    if (this.pumpScheduled) return;
    this.pumpScheduled = true;
    this.clock.soon(() => {
      this.pumpScheduled = false;
      this.pump();
    });
  }

  /** Hands frames to every connected socket while it can take them. */
  private pump(): void {
    const now = this.clock.now();
    for (const id of this.connected) {
      const socket = this.sockets.get(id);
      if (!socket) continue;
      for (let sent = 0; sent < framesPerPump && socket.writable; ) {
        const frames = this.frames.pollFrames(now, id, 16);
        if (frames.length === 0) break;
        for (const frame of frames) socket.send(frame);
        sent += frames.length;
        if (sent >= framesPerPump) this.schedulePump();
      }
    }
  }
}
