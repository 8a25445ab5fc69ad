/**
 * The secondary's link listener in production: plain TCP (or a Unix socket), TLS 1.3 requiring a
 * client certificate from the CA and an allowed identity, or TLS 1.3 with the pre-shared key and an
 * allowed identity. A refused primary is logged with the reason and gets nothing read. The material
 * is read again on reload (SIGHUP, or a changed file); a failed reload keeps the previous one.
 */
import { createServer, type Server, type Socket } from 'node:net';
import { createServer as createTlsServer, Server as TlsServer } from 'node:tls';
import type { LinkSocket } from '../../io/network.ts';
import { explainPskFailure, loadPsk, type PskMaterial, pskServerOptions } from '../../net/psk.ts';
import { loadTlsMaterial, refusalOfClient, serverOptions, type TlsMaterial } from '../../net/tls.ts';
import type { FileConfig } from '../../ops/config.ts';
import type { Logger } from '../../ops/logger.ts';
import { listenOn } from '../../ops/status-server.ts';
import { logLinkSecurity, watchLinkSecurityFiles } from '../site/link-security.ts';
import { connectionsMax, type SecondaryLinkListener } from './link-listener.ts';

export class NodeLinkListener implements SecondaryLinkListener {
  private server: Server | null = null;
  private tlsMaterial: TlsMaterial | null = null;
  private pskMaterial: PskMaterial | null = null;
  private stopWatching: () => void = () => {};

  private constructor(
    private readonly config: FileConfig,
    private readonly logger: Logger,
    private readonly onSocket: (socket: LinkSocket) => void,
  ) {}

  /**
   * Reads the link's certificates or key, listens on `listen` (a secondary's config.listen, or a
   * primary's: old-primary-listener.ts), and watches the files.
   */
  static async start(
    config: FileConfig,
    listen: string,
    logger: Logger,
    onSocket: (socket: LinkSocket) => void,
  ): Promise<NodeLinkListener> {
    const listener = new NodeLinkListener(config, logger, onSocket);
    const server = listener.createServer();
    listener.server = server;
    server.maxConnections = connectionsMax;
    await listenOn(server, listen);
    logLinkSecurity(config, logger);
    listener.stopWatching = watchLinkSecurityFiles(config, () => listener.reload());
    return listener;
  }

  tlsContext(): TlsMaterial['context'] | null {
    return this.tlsMaterial?.context ?? null;
  }

  /** Plain TCP, or TLS 1.3 requiring a client certificate from the CA and an allowed identity. */
  private createServer(): Server {
    if (this.config.psk) return this.createPskServer(this.config.psk);
    if (!this.config.tls) return createServer({ pauseOnConnect: false }, (socket) => this.accept(socket));
    this.tlsMaterial = loadTlsMaterial(this.config.tls);
    const server = createTlsServer(serverOptions(this.tlsMaterial), (socket) => {
      const refusal = refusalOfClient(socket, (this.tlsMaterial as TlsMaterial).peers);
      if (refusal) {
        this.logger.warn('primary-refused', {
          code: socket.authorized ? 'peer-identity' : 'peer-untrusted',
          reason: refusal,
          from: socket.remoteAddress ?? '',
        });
        socket.destroy();
        return;
      }
      this.accept(socket);
    });
    server.on('tlsClientError', (error, socket) => {
      this.logger.warn('primary-refused', {
        code: 'tls',
        reason: error.message,
        from: socket.remoteAddress ?? '',
      });
    });
    return server;
  }

  /** TLS 1.3 with the pre-shared key; the primary's identity must be among psk.peers. */
  private createPskServer(config: NonNullable<FileConfig['psk']>): Server {
    this.pskMaterial = loadPsk(config);
    const server = createTlsServer(
      pskServerOptions(
        () => this.pskMaterial as PskMaterial,
        (identity) =>
          this.logger.warn('primary-refused', {
            code: 'peer-identity',
            reason: `identity ${identity} is not among the allowed peers (${(this.pskMaterial as PskMaterial).peers.join(', ')})`,
          }),
      ),
      (socket) => this.accept(socket),
    );
    server.on('tlsClientError', (error, socket) => {
      this.logger.warn('primary-refused', {
        code: 'tls',
        reason: explainPskFailure(error.message),
        from: socket.remoteAddress ?? '',
      });
    });
    return server;
  }

  private accept(socket: Socket): void {
    this.onSocket(socket);
  }

  /** Reads the certificate, key and CA (or the pre-shared key) again: new connections use them. */
  reload(): void {
    if (this.config.psk) {
      try {
        this.pskMaterial = loadPsk(this.config.psk);
        this.logger.info('tls-reloaded', { file: this.config.psk.keyFile });
      } catch (error) {
        this.logger.error('tls-reload-failed', {
          reason: (error as Error).message,
          keeping: 'the previous key',
        });
      }
      return;
    }
    if (!this.config.tls || !(this.server instanceof TlsServer)) return;
    try {
      const material = loadTlsMaterial(this.config.tls);
      this.server.setSecureContext(serverOptions(material));
      this.tlsMaterial = material;
      this.logger.info('tls-reloaded', { cert: this.config.tls.cert });
    } catch (error) {
      this.logger.error('tls-reload-failed', {
        reason: (error as Error).message,
        keeping: 'the previous certificate',
      });
    }
  }

  close(): Promise<void> {
    this.stopWatching();
    return new Promise<void>((resolve) => (this.server ? this.server.close(() => resolve()) : resolve()));
  }
}
