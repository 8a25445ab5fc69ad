/** The NBD listener: one NbdConnection per client socket, on 127.0.0.1:port or a Unix socket. */
import { createServer, type Server, type Socket } from 'node:net';
import type { Logger } from '../ops/logger.ts';
import { listenOn } from '../ops/status-server.ts';
import { defaultNbdLimits, NbdConnection, type NbdExport, type NbdLimits } from './connection.ts';

/** Client connections served at once; more are refused by the kernel backlog. */
export const nbdConnectionsMax = 64;

export async function startNbdServer(
  listen: string,
  /** Asked at every new connection, so exports that appear later (adopted volumes) are served. */
  exportsOf: () => NbdExport[],
  logger: Logger,
  limits: NbdLimits = defaultNbdLimits,
): Promise<Server> {
  let nextClient = 1;
  const server = createServer((socket: Socket) => {
    const client = nextClient++;
    socket.setNoDelay(true);
    const connection = new NbdConnection(
      new Map(exportsOf().map((found) => [found.name, found])),
      {
        send: (bytes) => {
          if (!socket.destroyed) socket.write(bytes);
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
    );
    socket.on('data', (chunk: Buffer) => connection.onData(chunk));
    socket.on('error', (error) => logger.warn('nbd-client-error', { client, reason: error.message }));
  });
  server.maxConnections = nbdConnectionsMax;
  await listenOn(server, listen);
  logger.info('nbd-listening', {
    listen,
    exports: exportsOf()
      .map((found) => found.name)
      .join(','),
  });
  return server;
}
