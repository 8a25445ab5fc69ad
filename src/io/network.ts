/**
 * The site link's sockets as the sites see them: the part of a net.Socket that FramedSocket uses.
 * Production dials and listens with node:net and node:tls (the nodes' link adapters); the simulator
 * hands over sockets of its own whose bytes it delays, splits, corrupts or drops.
 */

/** A connected byte stream: what FramedSocket needs of a socket. */
export interface LinkSocket {
  /** Queues bytes; false once the queue is past its high-water mark (then wait for 'drain'). */
  write(bytes: Uint8Array): boolean;
  /** True while writes should wait for 'drain'. */
  readonly writableNeedDrain: boolean;
  /** Ends the stream after what was written. */
  end(): void;
  /** Cuts the stream at once. */
  destroy(): void;
  setNoDelay(noDelay: boolean): void;
  /**
   * Stops and restarts 'data' events (bytes wait in the kernel, and TCP slows the sender): how a
   * site holds a peer to its memory budget. Optional: a socket without them is never held.
   */
  pause?(): void;
  resume?(): void;
  on(event: 'data', listener: (chunk: Uint8Array) => void): this;
  on(event: 'drain', listener: () => void): this;
  on(event: 'error', listener: (error: Error) => void): this;
  on(event: 'close', listener: () => void): this;
}

/** A socket being dialled: `ready` fires once it may carry frames (connected, TLS peer verified). */
export interface DialledSocket {
  socket: LinkSocket;
  onReady(listener: () => void): void;
}

/** A listener for a site's incoming link connections. */
export interface LinkListener {
  close(): Promise<void>;
}

/**
 * How a site reaches its peers. Production leaves it out of the environment and the nodes use
 * node:net or node:tls as their config says (with TLS reload and refusal messages); the simulator
 * passes its own, plain bytes over simulated links.
 */
export interface LinkNetwork {
  /** Dials a secondary at `address` ("host:port" or a Unix socket path). */
  dial(address: string): DialledSocket;
  /** Listens at `address`; each accepted connection goes to `onSocket` with the peer's address. */
  listen(address: string, onSocket: (socket: LinkSocket, peer: string) => void): Promise<LinkListener>;
}
