/**
 * The primary's connections to its secondaries: dialled when the group asks, their frames handed
 * to the group, and frames pumped out of the group one at a time while each socket takes them (the
 * socket's own backpressure, so at most one frame waits in this process beyond its high-water mark),
 * a bounded number of bytes per turn so a large cycle cannot hold the event loop: timers, heartbeats
 * and the secondary's frames get their turn between. DATA packets polled in a row leave in one
 * data-batch frame of up to packetBytesMax of data: scattered 4 KiB writes no longer cost a frame,
 * a CRC and a socket write each. On a link with `compression`, such a frame goes compressed when
 * that makes it smaller (protocol/compression.ts).
 */

import { limits, linkQueue } from '../../core/limits.ts';
import type { Clock } from '../../io/clock.ts';
import { FramedSocket } from '../../net/framed-socket.ts';
import type { Logger } from '../../ops/logger.ts';
import type { CompressionCodec } from '../../protocol/compression.ts';
import { compressedFrame, type DataFrame, type Frame } from '../../protocol/frames.ts';
import type { LinkDialer } from './link-dialer.ts';

/** What the connections tell the node, by connection id. */
export interface LinkEvents {
  /** Ready for frames (over TLS: the secondary's certificate and identity passed). */
  onConnected(connection: number): void;
  /** Bytes arrived, whole frames or not. */
  onBytes(connection: number): void;
  onFrame(connection: number, frame: Frame): void;
  onLost(connection: number, why: string): void;
  /** A pump polled frames: building them may have asked for work (packet reads from the journal). */
  onPumped(): void;
}

/** Where the frames to send come from: the group, per connection. */
export interface FrameSource {
  pollFrames(nowMs: number, connection: number, max: number): Frame[];
}

/** A link's compression so far: block-data frame payloads before and after it (equal for frames sent as they were). */
export interface CompressionFigures {
  codec: CompressionCodec;
  payloadBytes: number;
  sentBytes: number;
}

export class PrimaryLinks {
  private readonly sockets = new Map<number, FramedSocket>();
  /** Per connection, the figures of its link when the link compresses. */
  private readonly compressing = new Map<number, CompressionFigures>();
  /** Per secondary with compression, since the process started. */
  private readonly figures = new Map<string, CompressionFigures>();
  /** Connections ready for frames. */
  private readonly connected = new Set<number>();
  private pumpScheduled = false;

  constructor(
    private readonly secondaries: readonly {
      name: string;
      address: string;
      compression?: CompressionCodec | 'off';
    }[],
    private readonly dialer: LinkDialer,
    private readonly frames: FrameSource,
    private readonly clock: Clock,
    private readonly logger: Logger,
    private readonly events: LinkEvents,
  ) {
    for (const secondary of secondaries)
      if (secondary.compression && secondary.compression !== 'off')
        this.figures.set(secondary.name, { codec: secondary.compression, payloadBytes: 0, sentBytes: 0 });
  }

  /** Dials the secondary `link` as connection `id`. */
  connect(link: string, id: number): void {
    const secondary = this.secondaries.find((candidate) => candidate.name === link);
    if (!secondary) return;
    const dialled = this.dialer.dial(secondary.address);
    const figures = this.figures.get(link);
    if (figures) this.compressing.set(id, figures);
    const framed = new FramedSocket(dialled.socket, this.clock, {
      onBytes: () => this.events.onBytes(id),
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
        this.compressing.delete(id);
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

  /**
   * Hands frames to every connected socket while it can take them, one at a time, so the socket's
   * buffer never holds more than one frame past its high-water mark; at most linkQueue.turnBytesMax
   * per socket (counted before compression: the turn's work follows the bytes handled, not those
   * sent), then the rest waits for the next turn.
   */
  private pump(): void {
    const now = this.clock.now();
    for (const id of this.connected) {
      const socket = this.sockets.get(id);
      if (!socket) continue;
      let turnBytes = 0;
      while (socket.writable) {
        if (turnBytes >= linkQueue.turnBytesMax) {
          this.schedulePump();
          break;
        }
        const frames = this.nextFrames(now, id);
        if (frames.length === 0) break;
        for (const frame of frames) turnBytes += this.send(socket, id, frame);
      }
    }
    this.events.onPumped();
  }

  /** Sends `frame` on connection `id`, compressed if its link compresses block data and it pays; the bytes it handled. */
  private send(socket: FramedSocket, id: number, frame: Frame): number {
    const bytesBefore = socket.bytesOut;
    const figures = this.compressing.get(id);
    if (!figures || (frame.type !== 'data' && frame.type !== 'data-batch')) {
      socket.send(frame);
      return socket.bytesOut - bytesBefore;
    }
    const sent = compressedFrame(frame, figures.codec);
    figures.payloadBytes += sent.payloadBytes;
    figures.sentBytes += sent.sentBytes;
    socket.send(sent.frame);
    return Math.max(sent.payloadBytes, socket.bytesOut - bytesBefore);
  }

  /** Compression figures by secondary, for the status (only links that compress). */
  compressionFigures(name: string): CompressionFigures | null {
    return this.figures.get(name) ?? null;
  }

  /**
   * The next frame for connection `id`, DATA packets in a row gathered into one data-batch frame
   * (until packetBytesMax of data or dataBatchPacketsMax packets); a frame of another type polled
   * after them follows the batch. Empty when nothing waits.
   */
  private nextFrames(now: number, id: number): Frame[] {
    const [first] = this.frames.pollFrames(now, id, 1);
    if (!first) return [];
    if (first.type !== 'data') return [first];
    const packets: DataFrame[] = [first];
    let bytes = first.payload.length;
    while (bytes < limits.packetBytesMax && packets.length < limits.dataBatchPacketsMax) {
      const [next] = this.frames.pollFrames(now, id, 1);
      if (!next) break;
      if (next.type !== 'data') return [batchOf(packets), next];
      packets.push(next);
      bytes += next.payload.length;
    }
    return [batchOf(packets)];
  }
}

/** One packet goes as it is; several in one data-batch frame. */
function batchOf(packets: DataFrame[]): Frame {
  return packets.length === 1 ? (packets[0] as DataFrame) : { type: 'data-batch', packets };
}
