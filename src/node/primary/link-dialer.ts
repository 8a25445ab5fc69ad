/**
 * How the primary reaches its secondaries: over the environment's network when it has one (the
 * simulator's: plain bytes, nothing to secure or reload), else with node:net or node:tls as the
 * config says (node-link-dialer.ts).
 */
import type { DialledSocket, LinkNetwork } from '../../io/network.ts';
import type { TlsMaterial } from '../../net/tls.ts';

export interface LinkDialer {
  /** Dials the secondary at `address`; the socket may carry frames once `onReady` fires. */
  dial(address: string): DialledSocket;
  /** Why a connection ended, in the operator's words (a TLS refusal arrives as a bare hang-up). */
  explainClose(reason: string, connection: { ready: boolean; bytesIn: number }): string;
  /** What runs beside the connections while the site runs (production: the watch on the link's files). */
  start(): void;
  /** Reads the link's certificates or key again: connections made from now on use them. */
  reload(): void;
  /** The certificate and key NBD's STARTTLS serves with, or null. */
  tlsContext(): TlsMaterial['context'] | null;
  /** Ends what start() began. */
  close(): void;
}

/** Dials over the environment's network: its sockets as they come, its reasons as they are. */
export function networkDialer(network: LinkNetwork): LinkDialer {
  return {
    dial: (address) => network.dial(address),
    explainClose: (reason) => reason,
    start: () => {},
    reload: () => {},
    tlsContext: () => null,
    close: () => {},
  };
}
