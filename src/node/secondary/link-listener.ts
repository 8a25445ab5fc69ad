/**
 * How a secondary takes its primary's connections: production listens with node:net or node:tls as
 * the config says (node-link-listener.ts). Each accepted connection goes to the node as a LinkSocket.
 */
import type { TlsMaterial } from '../../net/tls.ts';

export interface SecondaryLinkListener {
  /** Reads the link's certificates or key again: connections accepted from now on use them. */
  reload(): void;
  /** The certificate and key NBD's STARTTLS serves with, or null. */
  tlsContext(): TlsMaterial['context'] | null;
  /** Stops accepting (and watching the link's files); resolves once the accepted connections ended. */
  close(): Promise<void>;
}
