/**
 * The HTTP listener of a site: `GET /status` (JSON), `GET /metrics` (Prometheus text format) and
 * `GET /` (a dashboard page that charts /status; its files are served from src/ops/dashboard and
 * uPlot from node_modules, with nothing built at run time). With `http.tls` it serves HTTPS with
 * the site's certificate and takes admin verbs from a client certificate too (see adminRefusal).
 */
import { readFileSync } from 'node:fs';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import { createServer as createHttpsServer } from 'node:https';
import { createRequire } from 'node:module';
import type { Server as NetServer, Socket } from 'node:net';
import { type SecureContextOptions, TLSSocket } from 'node:tls';
import { fileURLToPath } from 'node:url';
import { parseAddress } from '../net/framed-socket.ts';
import { identitiesOf } from '../net/tls.ts';
import type { SiteMetrics } from './metrics.ts';

/** What idle or slow clients of the status listener may hold (config `http:`). */
export interface StatusServerBounds {
  /** Connections open at once; Node closes further ones until some end. */
  connectionsMax: number;
  /** Headers and body must arrive within this; idle keep-alive connections end sooner. */
  requestTimeoutMs: number;
}

export const statusServerDefaults: StatusServerBounds = { connectionsMax: 64, requestTimeoutMs: 5000 };

interface Asset {
  path: string;
  contentType: string;
}

const dashboardFile = (name: string): string =>
  fileURLToPath(new URL(`./dashboard/${name}`, import.meta.url));
const resolveModule = createRequire(import.meta.url).resolve;

/** What the server hands out besides the JSON: fixed paths only, never a path from the request. */
const assets: Record<string, Asset> = {
  '/': { path: dashboardFile('index.html'), contentType: 'text/html; charset=utf-8' },
  '/assets/dashboard.js': {
    path: dashboardFile('dashboard.js'),
    contentType: 'text/javascript; charset=utf-8',
  },
  '/assets/dashboard.css': { path: dashboardFile('dashboard.css'), contentType: 'text/css; charset=utf-8' },
  '/assets/uPlot.iife.min.js': {
    path: resolveModule('uplot/dist/uPlot.iife.min.js'),
    contentType: 'text/javascript; charset=utf-8',
  },
  '/assets/uPlot.min.css': {
    path: resolveModule('uplot/dist/uPlot.min.css'),
    contentType: 'text/css; charset=utf-8',
  },
};

/** Each file is read once, on its first request: the event loop does not read a disk per request. */
const assetCache = new Map<string, Buffer>();
function assetBytes(asset: Asset): Buffer {
  let bytes = assetCache.get(asset.path);
  if (!bytes) {
    bytes = readFileSync(asset.path);
    assetCache.set(asset.path, bytes);
  }
  return bytes;
}

function send(response: ServerResponse, status: number, contentType: string, body: string | Buffer): void {
  response.writeHead(status, {
    'content-type': contentType,
    'content-length': Buffer.byteLength(body),
    'cache-control': 'no-store',
  });
  response.end(body);
}

/** What an admin verb answers: an HTTP status and a JSON body. */
export interface AdminAnswer {
  status: number;
  body: unknown;
}

/** Carries out `POST /admin/<verb>` (docs/failover.md); `params` are the query's. */
export type AdminHandler = (verb: string, params: URLSearchParams) => Promise<AdminAnswer>;

/**
 * HTTPS for the status listener (config `http.tls`): the site's certificate, key and CA, and the
 * client certificate identities (DNS names or CN) that may send admin verbs from another machine.
 */
export interface StatusTls {
  context: SecureContextOptions;
  admins: readonly string[];
}

/** Who sent a request, as far as admin verbs care. */
export interface AdminPeer {
  remoteAddress: string | undefined;
  /**
   * The identities of a client certificate that chains to the site's CA; null when none was
   * presented (or plain HTTP), with `certificateProblem` saying why when one did not verify.
   */
  identities: string[] | null;
  certificateProblem?: string;
}

/** What a request's socket tells of its sender: its address and, over TLS, its verified certificate. */
export function adminPeerOf(socket: Socket): AdminPeer {
  const remoteAddress = socket.remoteAddress;
  if (!(socket instanceof TLSSocket)) return { remoteAddress, identities: null };
  if (!socket.authorized) {
    const problem = socket.authorizationError;
    return {
      remoteAddress,
      identities: null,
      ...(problem ? { certificateProblem: String(problem) } : {}),
    };
  }
  return { remoteAddress, identities: identitiesOf(socket.getPeerCertificate()) };
}

/**
 * Null when `peer` may send admin verbs, else why not. Admin verbs change a site's role: they are
 * taken from this machine (loopback, a Unix socket), and with `http.tls` from a client certificate
 * that chains to the site's CA and names one of `admins` (null: plain HTTP, loopback only).
 */
export function adminRefusal(
  peer: AdminPeer,
  listener: { unixSocket: boolean },
  admins: readonly string[] | null,
): string | null {
  if (isLoopbackPeer(peer.remoteAddress, listener)) return null;
  const who = peer.remoteAddress ?? 'a peer whose address cannot be told';
  if (admins === null)
    return `admin verbs are taken over loopback only (or over https with a client certificate named in http.tls.admins); ${who} refused`;
  if (peer.identities === null)
    return `admin verbs from another machine need a client certificate that chains to this site's CA; ${who} presented ${peer.certificateProblem ? `one that does not (${peer.certificateProblem})` : 'none'}`;
  if (peer.identities.some((name) => admins.includes(name))) return null;
  return `admin verbs: ${who}'s certificate names ${peer.identities.join(', ') || 'no identity'}, not one of http.tls.admins (${admins.join(', ')})`;
}

/**
 * Whether a request came over loopback or a Unix socket: admin verbs change a site's role, so a
 * plain-HTTP listener takes them only from this machine. No remote address means a Unix socket
 * peer only on a Unix socket listener: on TCP, Node reports none once the client reset the
 * connection, which any host can do right after sending its request.
 */
export function isLoopbackPeer(
  remoteAddress: string | undefined,
  listener: { unixSocket: boolean },
): boolean {
  if (remoteAddress === undefined) return listener.unixSocket;
  const address = remoteAddress.replace(/^::ffff:/, '');
  return address === '::1' || /^127\.\d+\.\d+\.\d+$/.test(address);
}

function serveAdmin(
  request: IncomingMessage,
  response: ServerResponse,
  admin: AdminHandler | undefined,
  listener: { unixSocket: boolean },
  admins: readonly string[] | null,
): void {
  const url = new URL(request.url ?? '/', 'http://site');
  if (!admin) {
    send(response, 404, 'application/json', `${JSON.stringify({ error: 'no admin verbs on this site' })}\n`);
    return;
  }
  const refusal = adminRefusal(adminPeerOf(request.socket), listener, admins);
  if (refusal) {
    send(response, 403, 'application/json', `${JSON.stringify({ error: refusal })}\n`);
    return;
  }
  // The body is not read: parameters travel in the query. Drain it so the connection stays usable.
  request.resume();
  admin(url.pathname.slice('/admin/'.length), url.searchParams).then(
    (answer) => send(response, answer.status, 'application/json', `${JSON.stringify(answer.body)}\n`),
    (error: Error) =>
      send(response, 500, 'application/json', `${JSON.stringify({ error: error.message })}\n`),
  );
}

export async function startStatusServer(
  listen: string,
  status: () => unknown,
  bounds: StatusServerBounds = statusServerDefaults,
  metrics?: SiteMetrics,
  admin?: AdminHandler,
  tls?: StatusTls,
): Promise<Server> {
  const { requestTimeoutMs } = bounds;
  // Node checks the request deadlines only every connectionsCheckingInterval (30 s by default):
  // check often enough that a connection never outlives its deadline by much.
  const checkingMs = Math.max(50, Math.min(1000, Math.floor(requestTimeoutMs / 4)));
  const listener = { unixSocket: 'path' in parseAddress(listen) };
  const admins = tls ? tls.admins : null;
  const handler = (request: IncomingMessage, response: ServerResponse): void => {
    const path = request.url?.split('?')[0] ?? '/';
    if (request.method === 'POST' && path.startsWith('/admin/')) {
      serveAdmin(request, response, admin, listener, admins);
      return;
    }
    if (request.method !== 'GET') {
      send(response, 405, 'text/plain', 'only GET is served (and POST /admin/<verb>)\n');
      return;
    }
    if (path === '/status') {
      send(response, 200, 'application/json', JSON.stringify(status()));
      return;
    }
    if (path === '/metrics' && metrics) {
      metrics.exposition().then(
        ({ body, contentType }) => send(response, 200, contentType, body),
        (error: Error) => send(response, 500, 'text/plain', `metrics failed: ${error.message}\n`),
      );
      return;
    }
    const asset = Object.hasOwn(assets, path) ? assets[path] : undefined;
    if (asset) {
      send(response, 200, asset.contentType, assetBytes(asset));
      return;
    }
    send(response, 404, 'text/plain', 'not found: try GET /, /status or /metrics\n');
  };
  // Over TLS a client certificate is asked for but not required: /status and the dashboard stay
  // open to readers without one; only admin verbs from another machine need it (adminRefusal).
  const server: Server = tls
    ? createHttpsServer(
        {
          ...tls.context,
          requestCert: true,
          rejectUnauthorized: false,
          connectionsCheckingInterval: checkingMs,
        },
        handler,
      )
    : createServer({ connectionsCheckingInterval: checkingMs }, handler);
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

/** Closes the status endpoint after `lingerMs` (so a monitor can still read a fault), keep-alives included. */
export async function closeStatusServer(http: Server | null, lingerMs: number): Promise<void> {
  if (!http) return;
  if (lingerMs > 0) await new Promise((resolve) => setTimeout(resolve, lingerMs));
  const closed = new Promise<void>((resolve) => http.close(() => resolve()));
  http.closeAllConnections();
  await closed;
}
