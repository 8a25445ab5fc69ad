/** The NBD listener: one NbdConnection per client socket, on 127.0.0.1:port or a Unix socket. */
import { BlockList, createServer, isIP, type Server, type Socket } from 'node:net';
import { createSecureContext, type SecureContextOptions, TLSSocket } from 'node:tls';
import type { Logger } from '../ops/logger.ts';
import { listenOn } from '../ops/status-server.ts';
import { RequestBudget } from './budget.ts';
import { NbdConnection } from './connection.ts';
import { defaultNbdLimits, type NbdExport, type NbdLimits } from './export.ts';
import type { NbdTlsMode } from './handshake.ts';

/** The `nbd` config section: where to listen and the bounds on what clients may ask. */
export interface NbdServerOptions {
  listen: string;
  /** Client connections served at once; more are accepted and closed at once by Node. */
  connectionsMax?: number;
  requestsInFlightPerConnection?: number;
  /** Requests in flight across every connection of this server. */
  requestsInFlightTotal?: number;
  requestSizeMax?: number;
  /** NBD_OPT_STARTTLS: off, offered, or required; with the site's certificate and key. */
  tls?: NbdTlsMode;
  /** Client addresses or subnets allowed to connect; absent: any that reach the listener. */
  allow?: string[];
}

/** The allow-list as Node's BlockList (used here as a list of what may pass). */
export function allowListOf(entries: string[]): BlockList {
  const list = new BlockList();
  for (const entry of entries) {
    const [address, prefix] = entry.split('/') as [string, string | undefined];
    const family = isIP(address) === 6 ? 'ipv6' : 'ipv4';
    if (prefix === undefined) list.addAddress(address, family);
    else list.addSubnet(address, Number(prefix), family);
  }
  return list;
}

/** Whether a peer address is on the list; IPv4 peers seen through an IPv6 socket are unwrapped. */
export function allowed(list: BlockList, address: string | undefined): boolean {
  if (!address) return false;
  const plain = address.startsWith('::ffff:') && isIP(address.slice(7)) === 4 ? address.slice(7) : address;
  return list.check(plain, isIP(plain) === 6 ? 'ipv6' : 'ipv4');
}

export const nbdDefaults = { connectionsMax: 64, requestsInFlightTotal: 256 } as const;

/** The listener, and the way to end it with its clients whatever they do. */
export interface NbdServer extends Server {
  /**
   * Stops accepting, asks every connection to shut down (NBD_ESHUTDOWN for new requests, those in
   * flight finish) and resolves once all are closed; connections still open after `timeoutMs` are
   * cut. Resolves with the number of connections cut.
   */
  shutdown(timeoutMs: number): Promise<number>;
}

export async function startNbdServer(
  options: NbdServerOptions,
  /** Asked at every new connection, so exports that appear later (adopted volumes) are served. */
  exportsOf: () => NbdExport[],
  logger: Logger,
  /** The certificate and key STARTTLS serves with; asked at each upgrade, so a reload applies. */
  tlsContext: () => SecureContextOptions | null = () => null,
): Promise<NbdServer> {
  const limits: NbdLimits = {
    ...defaultNbdLimits,
    requestsInFlightMax: options.requestsInFlightPerConnection ?? defaultNbdLimits.requestsInFlightMax,
    requestBytesMax: options.requestSizeMax ?? defaultNbdLimits.requestBytesMax,
  };
  const budget = new RequestBudget(options.requestsInFlightTotal ?? nbdDefaults.requestsInFlightTotal);
  const tlsMode = options.tls ?? 'off';
  let nextClient = 1;
  const allowList = options.allow ? allowListOf(options.allow) : null;
  /** Open connections and the socket each replies on, for shutdown. */
  const open = new Map<NbdConnection, () => Socket>();
  let onAllClosed: (() => void) | null = null;
  const forget = (connection: NbdConnection): void => {
    open.delete(connection);
    if (open.size === 0) onAllClosed?.();
  };
  const server = createServer((socket: Socket) => {
    const client = nextClient++;
    // Unix sockets have no address: their file permissions are the access control.
    if (allowList && socket.remoteAddress !== undefined && !allowed(allowList, socket.remoteAddress)) {
      logger.warn('nbd-client-refused', {
        client,
        address: socket.remoteAddress,
        reason: 'not in nbd.allow',
      });
      socket.destroy();
      return;
    }
    socket.setNoDelay(true);
    // The socket replies go to: the plain one, or the TLS session STARTTLS made of it.
    let transport: Socket = socket;
    let corked = false;
    const uncork = (): void => {
      if (!corked) return;
      corked = false;
      transport.uncork();
    };
    const onPlainData = (chunk: Buffer): void => connection.onData(chunk);
    const connection: NbdConnection = new NbdConnection(
      new Map(exportsOf().map((found) => [found.name, found])),
      {
        send: (bytes) => {
          if (transport.destroyed) return;
          // Replies finished together (one journal batch acknowledges many writes) leave in one
          // writev instead of one system call each.
          if (!corked) {
            corked = true;
            transport.cork();
            process.nextTick(uncork);
          }
          transport.write(bytes);
        },
        startTls: () => {
          const context = tlsContext();
          if (!context) {
            socket.destroy();
            return;
          }
          // The STARTTLS acknowledgement leaves in the clear, before the TLS session takes the socket.
          uncork();
          socket.off('data', onPlainData);
          const secure = new TLSSocket(socket, {
            isServer: true,
            secureContext: createSecureContext(context),
          });
          transport = secure;
          secure.on('secure', () => connection.onTlsReady());
          secure.on('data', (chunk: Buffer) => connection.onData(chunk));
          secure.on('error', (error) => {
            logger.warn('nbd-tls-failed', { client, reason: error.message });
            secure.destroy();
          });
        },
        close: (reason) => {
          logger.info('nbd-client-closed', {
            client,
            reason,
            ...(connection.refusedWhileStopping > 0 || reason === 'server stopping'
              ? { refusedWhileStopping: connection.refusedWhileStopping }
              : {}),
          });
          forget(connection);
          transport.end();
          setTimeout(() => transport.destroy(), 1000).unref();
        },
        pause: (paused) => (paused ? transport.pause() : transport.resume()),
        log: (event, fields) => logger.info(event, { client, ...fields }),
      },
      limits,
      budget,
      tlsMode,
    );
    open.set(connection, () => transport);
    socket.once('close', () => forget(connection));
    socket.on('data', onPlainData);
    socket.on('error', (error) => logger.warn('nbd-client-error', { client, reason: error.message }));
  });
  server.maxConnections = options.connectionsMax ?? nbdDefaults.connectionsMax;
  server.on('drop', () =>
    logger.warn('nbd-connection-refused', { reason: `${server.maxConnections} connections already served` }),
  );
  const shutdown = async (timeoutMs: number): Promise<number> => {
    server.close();
    const allClosed = new Promise<void>((resolve) => {
      onAllClosed = resolve;
    });
    for (const connection of [...open.keys()]) connection.shutdown();
    if (open.size > 0) {
      let timer: NodeJS.Timeout | undefined;
      await Promise.race([allClosed, new Promise((resolve) => (timer = setTimeout(resolve, timeoutMs)))]);
      clearTimeout(timer);
    }
    const cut = open.size;
    if (cut > 0)
      logger.warn('nbd-clients-cut', {
        clients: cut,
        reason: `requests still in flight after ${timeoutMs} ms`,
      });
    for (const transport of [...open.values()]) transport().destroy();
    return cut;
  };
  await listenOn(server, options.listen);
  logger.info('nbd-listening', {
    listen: options.listen,
    tls: tlsMode,
    exports: exportsOf()
      .map((found) => found.name)
      .join(','),
  });
  return Object.assign(server, { shutdown });
}
