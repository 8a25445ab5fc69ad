/** The NBD listener: one NbdConnection per client socket, on 127.0.0.1:port or a Unix socket. */
import { createServer, type Server, type Socket } from 'node:net';
import type { Logger } from '../ops/logger.ts';
import { listenOn } from '../ops/status-server.ts';
import { RequestBudget } from './budget.ts';
import { NbdConnection } from './connection.ts';
import { defaultNbdLimits, type NbdExport, type NbdLimits } from './export.ts';

/** The `nbd` config section: where to listen and the bounds on what clients may ask. */
export interface NbdServerOptions {
  listen: string;
  /** Client connections served at once; more are accepted and closed at once by Node. */
  connectionsMax?: number;
  requestsInFlightPerConnection?: number;
  /** Requests in flight across every connection of this server. */
  requestsInFlightTotal?: number;
  requestSizeMax?: number;
}

export const nbdDefaults = { connectionsMax: 64, requestsInFlightTotal: 256 } as const;

export async function startNbdServer(
  options: NbdServerOptions,
  /** Asked at every new connection, so exports that appear later (adopted volumes) are served. */
  exportsOf: () => NbdExport[],
  logger: Logger,
): Promise<Server> {
  const limits: NbdLimits = {
    ...defaultNbdLimits,
    requestsInFlightMax: options.requestsInFlightPerConnection ?? defaultNbdLimits.requestsInFlightMax,
    requestBytesMax: options.requestSizeMax ?? defaultNbdLimits.requestBytesMax,
  };
  const budget = new RequestBudget(options.requestsInFlightTotal ?? nbdDefaults.requestsInFlightTotal);
  let nextClient = 1;
  const server = createServer((socket: Socket) => {
    const client = nextClient++;
    socket.setNoDelay(true);
    let corked = false;
    const connection = new NbdConnection(
      new Map(exportsOf().map((found) => [found.name, found])),
      {
        send: (bytes) => {
          if (socket.destroyed) return;
          // Replies finished together (one journal batch acknowledges many writes) leave in one
          // writev instead of one system call each.
          if (!corked) {
            corked = true;
            socket.cork();
            process.nextTick(() => {
              corked = false;
              socket.uncork();
            });
          }
          socket.write(bytes);
        },
        close: (reason) => {
          logger.info('nbd-client-closed', { client, reason });
          socket.end();
          setTimeout(() => socket.destroy(), 1000).unref();
        },
        pause: (paused) => (paused ? socket.pause() : socket.resume()),
        log: (event, fields) => logger.info(event, { client, ...fields }),
      },
      limits,
      budget,
    );
    socket.on('data', (chunk: Buffer) => connection.onData(chunk));
    socket.on('error', (error) => logger.warn('nbd-client-error', { client, reason: error.message }));
  });
  server.maxConnections = options.connectionsMax ?? nbdDefaults.connectionsMax;
  server.on('drop', () =>
    logger.warn('nbd-connection-refused', { reason: `${server.maxConnections} connections already served` }),
  );
  await listenOn(server, options.listen);
  logger.info('nbd-listening', {
    listen: options.listen,
    exports: exportsOf()
      .map((found) => found.name)
      .join(','),
  });
  return server;
}
