/**
 * How a secondary takes its primary's connections: over the environment's network when it has one
 * (the simulator's: plain bytes), else with node:net or node:tls as the config says
 * (node-link-listener.ts). Each accepted connection goes to the node as a LinkSocket.
 */
import { limits } from '../../core/limits.ts';
import type { LinkNetwork, LinkSocket } from '../../io/network.ts';
import type { TlsMaterial } from '../../net/tls.ts';

/** Incoming connections accepted at once; more are refused before any byte is read. */
export const connectionsMax = limits.connectionsPerLinkMax * 2;

export interface SecondaryLinkListener {
  /** Reads the link's certificates or key again: connections accepted from now on use them. */
  reload(): void;
  /** The certificate and key NBD's STARTTLS serves with, or null. */
  tlsContext(): TlsMaterial['context'] | null;
  /** Stops accepting (and watching the link's files); resolves once the accepted connections ended. */
  close(): Promise<void>;
}

/** Listens at `address` on the environment's network, at most connectionsMax connections at once. */
export async function listenOnNetwork(
  network: LinkNetwork,
  address: string,
  onSocket: (socket: LinkSocket) => void,
): Promise<SecondaryLinkListener> {
  let open = 0;
  const listener = await network.listen(address, (socket) => {
    if (open >= connectionsMax) {
      socket.destroy();
      return;
    }
    open++;
    socket.on('close', () => {
      open--;
    });
    onSocket(socket);
  });
  return { reload: () => {}, tlsContext: () => null, close: () => listener.close() };
}
