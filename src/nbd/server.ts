/** The NBD listener: one NbdConnection per client socket, on 127.0.0.1:port or a Unix socket. */
import { BlockList, createServer, isIP, type Server, type Socket } from 'node:net';
import { createSecureContext, type SecureContextOptions, TLSSocket } from 'node:tls';
import { type Logger, rateLimited } from '../ops/logger.ts';
import { listenOn } from '../ops/status-server.ts';
import { RequestBudget } from './budget.ts';
import { NbdConnection } from './connection.ts';
import { defaultNbdLimits, type NbdExport, type NbdLimits } from './export.ts';
import type { NbdTlsMode } from './handshake.ts';
import { byteGranular } from './unaligned.ts';

/** The `nbd` config section: where to listen and the bounds on what clients may ask. */
export interface NbdServerOptions {
  listen: string;
  /** Clients in transmission at once; one more is refused when it picks an export. */
  connectionsMax?: number;
  /** Clients in the handshake at once, counted apart so idle sockets cannot crowd out served ones. */
  handshakesMax?: number;
  /** A client that has not finished its handshake by then is closed. */
  handshakeTimeoutMs?: number;
  requestsPerConnectionMax?: number;
  /** Requests in flight across every connection of this server. */
  requestsInFlightMax?: number;
  /** Bytes of payloads and replies held across every connection of this server. */
  requestBytesInFlightMax?: number;
  /** From an accepted WRITE header to the end of its payload. */
  requestPayloadTimeoutMs?: number;
  /** Unsent reply bytes beyond which one connection is not read. */
  replyBytesQueuedMax?: number;
  /** A connection whose unsent replies make no progress for this long is closed. */
  replyTimeoutMs?: number;
  requestBytesMax?: number;
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

export const nbdDefaults = {
  connectionsMax: 64,
  handshakesMax: 16,
  requestsInFlightMax: 256,
  requestBytesInFlightMax: 256 * 1024 * 1024,
} as const;

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
  /** Told of every reply (command, NBD error name or null), for the site's metrics. */
  observe?: (command: string, error: string | null) => void,
): Promise<NbdServer> {
  // One byte-granular wrapper per export, shared by every connection: its block-range lock is what
  // orders a read-modify-write against writes to the same blocks from other connections. A new
  // one when the export changed size or turned read-only (a fenced primary's).
  const granular = new Map<string, NbdExport>();
  const exportsNow = (): NbdExport[] =>
    exportsOf().map((found) => {
      let wrapped = granular.get(found.name);
      if (!wrapped || wrapped.sizeBytes !== found.sizeBytes || wrapped.readOnly !== found.readOnly) {
        wrapped = byteGranular(found);
        granular.set(found.name, wrapped);
      }
      return wrapped;
    });
  const limits: NbdLimits = {
    ...defaultNbdLimits,
    requestsInFlightMax: options.requestsPerConnectionMax ?? defaultNbdLimits.requestsInFlightMax,
    requestBytesMax: options.requestBytesMax ?? defaultNbdLimits.requestBytesMax,
    handshakeTimeoutMs: options.handshakeTimeoutMs ?? defaultNbdLimits.handshakeTimeoutMs,
    requestPayloadTimeoutMs: options.requestPayloadTimeoutMs ?? defaultNbdLimits.requestPayloadTimeoutMs,
    replyBytesQueuedMax: options.replyBytesQueuedMax ?? defaultNbdLimits.replyBytesQueuedMax,
    replyTimeoutMs: options.replyTimeoutMs ?? defaultNbdLimits.replyTimeoutMs,
  };
  const budget = new RequestBudget(
    options.requestsInFlightMax ?? nbdDefaults.requestsInFlightMax,
    options.requestBytesInFlightMax ?? nbdDefaults.requestBytesInFlightMax,
  );
  if (budget.bytesMax < Math.max(limits.requestBytesMax, limits.blockStatusBytesMax))
    throw new RangeError('nbd: requestBytesInFlightMax below requestBytesMax or the block status scan');
  const connectionsMax = options.connectionsMax ?? nbdDefaults.connectionsMax;
  const handshakesMax = options.handshakesMax ?? nbdDefaults.handshakesMax;
  // What clients can repeat at will is logged at a bounded rate.
  const flood = rateLimited(logger);
  const tlsMode = options.tls ?? 'off';
  let nextClient = 1;
  let handshaking = 0;
  let transmitting = 0;
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
      flood.warn('nbd-client-refused', {
        client,
        address: socket.remoteAddress,
        reason: 'not in nbd.allow',
      });
      socket.destroy();
      return;
    }
    if (handshaking >= handshakesMax) {
      flood.warn('nbd-connection-refused', {
        client,
        reason: `${handshakesMax} handshakes already in progress (nbd.handshakesMax)`,
      });
      socket.destroy();
      return;
    }
    handshaking++;
    let stage: 'handshake' | 'transmission' | 'closed' = 'handshake';
    // Once per client, whichever of the plain socket and its TLS session reports the close.
    const onClosed = (): void => {
      if (stage === 'handshake') handshaking--;
      else if (stage === 'transmission') transmitting--;
      stage = 'closed';
      connection.onTransportClosed();
    };
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
      new Map(exportsNow().map((found) => [found.name, found])),
      {
        send: (bytes, sent) => {
          // A destroyed socket emits 'close', and the connection gives back what it holds then.
          if (transport.destroyed) return;
          // Replies finished together (one journal batch acknowledges many writes) leave in one
          // writev instead of one system call each.
          if (!corked) {
            corked = true;
            transport.cork();
            process.nextTick(uncork);
          }
          transport.write(bytes, sent ? () => sent() : undefined);
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
          secure.on('close', onClosed);
          secure.on('secure', () => connection.onTlsReady());
          secure.on('data', (chunk: Buffer) => connection.onData(chunk));
          secure.on('error', (error) => {
            flood.warn('nbd-tls-failed', { client, reason: error.message });
            secure.destroy();
          });
        },
        close: (reason) => {
          // A close while stopping is logged once per client with what it was refused; other closes
          // are what a client can repeat at will, so they are rate-limited.
          if (connection.refusedWhileStopping > 0 || reason === 'server stopping')
            logger.info('nbd-client-closed', {
              client,
              reason,
              refusedWhileStopping: connection.refusedWhileStopping,
            });
          else flood.info('nbd-client-closed', { client, reason });
          forget(connection);
          transport.end();
          setTimeout(() => transport.destroy(), 1000).unref();
        },
        pause: (paused) => (paused ? transport.pause() : transport.resume()),
        log: (event, fields) => logger.info(event, { client, ...fields }),
        warn: (event, fields) => flood.warn(event, { client, ...fields }),
        ...(observe ? { observe } : {}),
        admit: () => {
          if (transmitting >= connectionsMax)
            return `${connectionsMax} clients already served (nbd.connectionsMax)`;
          handshaking--;
          transmitting++;
          stage = 'transmission';
          return null;
        },
      },
      limits,
      budget,
      tlsMode,
    );
    open.set(connection, () => transport);
    socket.once('close', () => forget(connection));
    socket.on('data', onPlainData);
    socket.on('error', (error) => flood.warn('nbd-client-error', { client, reason: error.message }));
    socket.on('close', onClosed);
  });
  // A last guard: the two kinds of connection together; each is bounded on its own above.
  server.maxConnections = connectionsMax + handshakesMax;
  server.on('drop', () =>
    flood.warn('nbd-connection-refused', { reason: `${server.maxConnections} connections already open` }),
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
    exports: exportsNow()
      .map((found) => found.name)
      .join(','),
  });
  return Object.assign(server, { shutdown });
}
