/** What the NBD server serves and the bounds it serves it within. */

/** One export; the primary and the secondary implement it per volume. */
export interface NbdExport {
  name: string;
  sizeBytes: number;
  blockBytes: number;
  readOnly: boolean;
  read(offset: number, length: number): Promise<Uint8Array>;
  /** `data` is the request's own: the server never touches it again, so the export may keep it. */
  write(offset: number, data: Uint8Array, fua: boolean): Promise<void>;
  writeZeroes(offset: number, length: number, fua: boolean): Promise<void>;
  flush(): Promise<void>;
}

export interface NbdLimits {
  /** Largest option payload read during the handshake. */
  optionBytesMax: number;
  /** Largest read or write request (also advertised as the maximum block size). */
  requestBytesMax: number;
  /** Requests of one connection being served at once; reading that connection pauses beyond. */
  requestsInFlightMax: number;
  /** Bytes one BLOCK_STATUS request looks at; the reply covers less when asked for more. */
  blockStatusBytesMax: number;
  /** From the greeting to the start of transmission (TLS included); a slower client is closed. */
  handshakeTimeoutMs: number;
  /** Unsent option replies beyond which a client in the handshake is not read (it should wait for each reply). */
  handshakeBytesQueuedMax: number;
  /** From an accepted WRITE header to the last byte of its payload; a client that stalls is closed. */
  requestPayloadTimeoutMs: number;
  /** Reply bytes not yet taken by the client beyond which its requests are not read. */
  replyBytesQueuedMax: number;
  /** A client with unsent replies none of which leaves for this long is closed. */
  replyTimeoutMs: number;
}

export const defaultNbdLimits: NbdLimits = {
  optionBytesMax: 4096,
  requestBytesMax: 32 * 1024 * 1024,
  requestsInFlightMax: 64,
  blockStatusBytesMax: 8 * 1024 * 1024,
  handshakeTimeoutMs: 10_000,
  handshakeBytesQueuedMax: 64 * 1024,
  requestPayloadTimeoutMs: 30_000,
  replyBytesQueuedMax: 64 * 1024 * 1024,
  replyTimeoutMs: 30_000,
};
