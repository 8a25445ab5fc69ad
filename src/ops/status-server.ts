/** The HTTP listener: GET /status answers the process's status as JSON. */
import { createServer, type Server } from 'node:http';
import type { Server as NetServer } from 'node:net';
import { parseAddress } from '../net/framed-socket.ts';

/** What idle or slow clients of the status listener may hold (config `http:`). */
export interface StatusServerBounds {
  /** Connections open at once; Node closes further ones until some end. */
  connectionsMax: number;
  /** Headers and body must arrive within this; idle keep-alive connections end sooner. */
  requestTimeoutMs: number;
}

export const statusServerDefaults: StatusServerBounds = { connectionsMax: 64, requestTimeoutMs: 5000 };

export async function startStatusServer(
  listen: string,
  status: () => unknown,
  bounds: StatusServerBounds = statusServerDefaults,
): Promise<Server> {
  const { requestTimeoutMs } = bounds;
  // Node checks the request deadlines only every connectionsCheckingInterval (30 s by default):
  // check often enough that a connection never outlives its deadline by much.
  const checkingMs = Math.max(50, Math.min(1000, Math.floor(requestTimeoutMs / 4)));
  const server = createServer({ connectionsCheckingInterval: checkingMs }, (request, response) => {
    if (request.method === 'GET' && request.url?.split('?')[0] === '/status') {
      const body = JSON.stringify(status());
      response.writeHead(200, {
        'content-type': 'application/json',
        'content-length': Buffer.byteLength(body),
      });
      response.end(body);
      return;
    }
    response.writeHead(404, { 'content-type': 'text/plain' });
    response.end('not found: try GET /status\n');
  });
  // A connection that sends nothing (or too little) is closed: headers and the whole request are
  // bounded, an idle keep-alive connection ends after at most requestTimeoutMs, and so does a socket
  // with no traffic at all.
  server.headersTimeout = requestTimeoutMs;
  server.requestTimeout = requestTimeoutMs;
  server.keepAliveTimeout = Math.min(5000, requestTimeoutMs);
  server.timeout = requestTimeoutMs;
  server.maxConnections = bounds.connectionsMax;
  await listenOn(server, listen);
  return server;
}

/** Listens on host:port or a Unix socket path; rejects with a message naming the address. */
export function listenOn(server: NetServer, address: string): Promise<void> {
  const target = parseAddress(address);
  return new Promise((resolve, reject) => {
    const onError = (error: Error): void =>
      reject(new Error(`cannot listen on ${address}: ${error.message}`));
    server.once('error', onError);
    const done = (): void => {
      server.off('error', onError);
      resolve();
    };
    if ('path' in target) server.listen(target.path, done);
    else server.listen(target.port, target.host, done);
  });
}
