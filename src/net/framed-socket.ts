/**
 * A link socket (TCP, TLS or Unix in production, a simulated one in the simulator) carrying
 * site-to-site frames: incoming bytes go through a FrameDecoder, outgoing frames are encoded and
 * written with the socket's own backpressure (`writable`). A data-batch frame is unpacked here: the
 * sites above only ever see its DATA packets. Compressed frames (taken only where the owner says)
 * expand at most a budget per turn of the event loop (FrameDecoder): the rest waits for the next
 * turn, and not at all while reading is held.
 */
import type { ProtocolError } from '../core/errors.ts';
import type { Clock } from '../io/clock.ts';
import type { LinkSocket } from '../io/network.ts';
import { encodeFrame, type Frame, FrameDecoder, type FrameDecoderOptions } from '../protocol/frames.ts';

/** How long close() waits for the peer to end its side before the socket is cut. */
const closeMsTimeout = 2000;

export interface FramedSocketHandlers {
  /** Bytes arrived, before they are decoded: the peer is alive even while a large frame is on its way. */
  onBytes?(byteCount: number): void;
  onFrame(frame: Frame): void;
  onProtocolError(error: ProtocolError): void;
  /** Called once, when the socket is gone for whatever reason. */
  onClose(reason: string): void;
  /** The socket can take more bytes again. */
  onDrain?(): void;
}

export class FramedSocket {
  private readonly decoder: FrameDecoder;
  private closed = false;
  /** Reading held by the owner (hold): the socket is paused and buffered frames wait too. */
  private held = false;
  /** Whole frames wait in the decoder (its last push spent its budget); a drain is due or scheduled. */
  private framesWaiting = false;
  private drainScheduled = false;
  private closeReason = 'closed by peer';
  bytesIn = 0;
  bytesOut = 0;

  constructor(
    readonly socket: LinkSocket,
    /** Times the close: a peer that does not end its side in time is cut. */
    private readonly clock: Clock,
    private readonly handlers: FramedSocketHandlers,
    decoding: FrameDecoderOptions = {},
  ) {
    this.decoder = new FrameDecoder(decoding);
    socket.setNoDelay(true);
    socket.on('data', (chunk) => this.onData(chunk));
    socket.on('drain', () => this.handlers.onDrain?.());
    socket.on('error', (error) => {
      this.closeReason = error.message;
    });
    socket.on('close', () => this.finish());
  }

  /**
   * Holds (or lets go) reading: the socket pauses, so what the peer sends waits in the kernel, and
   * frames already buffered wait here; let go, they are handed on from the next turn.
   */
  hold(held: boolean): void {
    this.held = held;
    if (held) this.socket.pause?.();
    else {
      this.socket.resume?.();
      this.scheduleDrain();
    }
  }

  private scheduleDrain(): void {
    if (!this.framesWaiting || this.drainScheduled || this.held || this.closed) return;
    this.drainScheduled = true;
    this.clock.soon(() => {
      this.drainScheduled = false;
      if (!this.held) this.decode(new Uint8Array(0));
    });
  }

  private onData(chunk: Uint8Array): void {
    if (this.closed) return;
    this.bytesIn += chunk.length;
    this.handlers.onBytes?.(chunk.length);
    this.decode(chunk);
  }

  private decode(chunk: Uint8Array): void {
    if (this.closed) return;
    const result = this.decoder.push(chunk);
    this.framesWaiting = result.more;
    for (const frame of result.frames) {
      if (frame.type !== 'data-batch') {
        if (this.closed) return;
        this.handlers.onFrame(frame);
        continue;
      }
      // A batch's packets are taken one by one, as if each had come in a frame of its own.
      for (const packet of frame.packets) {
        if (this.closed) return;
        this.handlers.onFrame(packet);
      }
    }
    if (result.error && !this.closed) {
      this.handlers.onProtocolError(result.error);
      this.destroy(result.error.message);
    }
    this.scheduleDrain();
  }

  /** True while the socket's buffer is below its high-water mark. */
  get writable(): boolean {
    return !this.closed && !this.socket.writableNeedDrain;
  }

  send(frame: Frame): void {
    if (this.closed) return;
    const bytes = encodeFrame(frame);
    this.bytesOut += bytes.length;
    this.socket.write(bytes);
  }

  /** Ends the socket after what was written; destroys it if the peer does not close in time. */
  close(reason: string): void {
    if (this.closed) return;
    this.closeReason = reason;
    this.socket.end();
    this.clock.after(closeMsTimeout, () => this.socket.destroy(), { background: true });
  }

  destroy(reason: string): void {
    this.closeReason = reason;
    this.socket.destroy();
    this.finish();
  }

  private finish(): void {
    if (this.closed) return;
    this.closed = true;
    this.handlers.onClose(this.closeReason);
  }
}

/** Splits "host:port" (or "[v6]:port"); a string with a "/" is a Unix socket path. */
export function parseAddress(address: string): { host: string; port: number } | { path: string } {
  if (address.includes('/')) return { path: address };
  const at = address.lastIndexOf(':');
  const host = address.slice(0, at).replace(/^\[(.*)\]$/, '$1');
  return { host, port: Number(address.slice(at + 1)) };
}
