/** The HTTP listener: GET /status answers the process's status as JSON. */
import { createServer, type Server } from 'node:http';
import type { Server as NetServer } from 'node:net';
import { parseAddress } from '../net/framed-socket.ts';

export async function startStatusServer(listen: string, status: () => unknown): Promise<Server> {
  const server = createServer((request, response) => {
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
  server.requestTimeout = 10_000;
  server.maxConnections = 64;
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

/** Closes the status endpoint after `lingerMs` (so a monitor can still read a fault), keep-alives included. */
export async function closeStatusServer(http: Server | null, lingerMs: number): Promise<void> {
  if (!http) return;
  if (lingerMs > 0) await new Promise((resolve) => setTimeout(resolve, lingerMs));
  const closed = new Promise<void>((resolve) => http.close(() => resolve()));
  http.closeAllConnections();
  await closed;
}
