/**
 * The connections the primary made to this secondary, by id: their frames handed to the node,
 * frames sent and connections closed as the state machine says, and new ones cut at once after the
 * site began to stop.
 */
import type { ProtocolError } from '../../core/errors.ts';
import type { Clock } from '../../io/clock.ts';
import type { LinkSocket } from '../../io/network.ts';
import { FramedSocket } from '../../net/framed-socket.ts';
import type { Logger } from '../../ops/logger.ts';
import type { Frame } from '../../protocol/frames.ts';

/** What the connections tell the node, by connection id. */
export interface ConnectionEvents {
  onOpened(connection: number): void;
  /** Bytes arrived, whole frames or not. */
  onBytes(connection: number): void;
  onFrame(connection: number, frame: Frame): void;
  /** Bytes that are no frame: the connection is cut after this. */
  onProtocolError(connection: number, error: ProtocolError): void;
  onLost(connection: number, reason: string): void;
}

export class SecondaryConnections {
  private readonly sockets = new Map<number, FramedSocket>();
  private nextConnection = 1;
  private accepting = true;
  /** Reading is held: the journal has more packet bytes waiting than the memory budget allows. */
  private readingHeld = false;

  constructor(
    private readonly clock: Clock,
    private readonly logger: Logger,
    private readonly events: ConnectionEvents,
  ) {}

  accept(socket: LinkSocket): void {
    if (!this.accepting) {
      socket.destroy();
      return;
    }
    const id = this.nextConnection++;
    const framed = new FramedSocket(
      socket,
      this.clock,
      {
        onBytes: () => this.events.onBytes(id),
        onFrame: (frame) => this.events.onFrame(id, frame),
        onProtocolError: (error) => {
          this.logger.warn('bad-bytes-from-primary', {
            connection: id,
            code: error.code,
            reason: error.message,
          });
          this.events.onProtocolError(id, error);
        },
        onClose: (reason) => {
          this.sockets.delete(id);
          this.events.onLost(id, reason);
        },
      },
      // The primary's block data may come compressed (its secondaries[].compression).
      { acceptCompressed: true },
    );
    this.sockets.set(id, framed);
    if (this.readingHeld) framed.hold(true);
    this.events.onOpened(id);
  }

  /** The connections open now. */
  ids(): Iterable<number> {
    return this.sockets.keys();
  }

  send(connection: number, frame: Frame): void {
    this.sockets.get(connection)?.send(frame);
  }

  /** Ends the connection after what was sent. */
  close(connection: number, reason: string): void {
    this.sockets.get(connection)?.close(reason);
  }

  /** Cuts the connection at once. */
  destroy(connection: number, reason: string): void {
    this.sockets.get(connection)?.destroy(reason);
  }

  /**
   * Holds (or lets go) reading on every connection: what the primary sends meanwhile waits in the
   * kernel and, once its buffers are full, at the primary. Heartbeats still go out.
   */
  holdReading(held: boolean): void {
    if (held === this.readingHeld) return;
    this.readingHeld = held;
    for (const framed of this.sockets.values()) framed.hold(held);
  }

  /** The site is stopping: connections from now on are cut as they come. */
  refuseNew(): void {
    this.accepting = false;
  }

  closeAll(reason: string): void {
    for (const socket of this.sockets.values()) socket.close(reason);
  }
}
