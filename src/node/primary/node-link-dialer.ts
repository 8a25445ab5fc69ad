/**
 * The primary's link in production: node:net for a plain link, node:tls with the site's certificates
 * or its pre-shared key otherwise. The material is read at start and again on reload (SIGHUP, or a
 * changed file); connections made from then on use it, and a failed reload keeps the previous one.
 */
import { connect } from 'node:net';
import { type ConnectionOptions, connect as connectTls } from 'node:tls';
import type { DialledSocket } from '../../io/network.ts';
import { parseAddress } from '../../net/framed-socket.ts';
import { explainPskFailure, loadPsk, pskClientOptions } from '../../net/psk.ts';
import { clientOptions, loadTlsMaterial, type TlsMaterial } from '../../net/tls.ts';
import type { PrimaryFileConfig } from '../../ops/config.ts';
import type { Logger } from '../../ops/logger.ts';
import { logLinkSecurity, watchLinkSecurityFiles } from '../site/link-security.ts';
import type { LinkDialer } from './link-dialer.ts';

export class NodeLinkDialer implements LinkDialer {
  /** Certificate, key and CA of the site link, when it runs over TLS. */
  private tlsMaterial: TlsMaterial | null = null;
  /** How the site link's connections are secured (certificates or pre-shared key), or null: plain. */
  private linkOptions: ConnectionOptions | null = null;
  private stopWatching: () => void = () => {};

  /** Reads the link's certificates or key now: a start with unreadable ones is refused. */
  constructor(
    private readonly config: PrimaryFileConfig,
    private readonly logger: Logger,
  ) {
    this.load();
  }

  dial(address: string): DialledSocket {
    const target = parseAddress(address);
    const secureOptions = this.linkOptions;
    const socket = secureOptions
      ? connectTls({ ...('path' in target ? { path: target.path } : target), ...secureOptions })
      : 'path' in target
        ? connect(target.path)
        : connect(target.port, target.host);
    // Over TLS the link is up once the secondary's certificate and identity passed.
    return {
      socket,
      onReady: (listener) => {
        socket.once(secureOptions ? 'secureConnect' : 'connect', listener);
      },
    };
  }

  explainClose(reason: string, connection: { ready: boolean; bytesIn: number }): string {
    // In TLS 1.3 the secondary judges this site's certificate after the handshake looks done
    // here, so its refusal arrives as a bare hang-up; say what it most likely means.
    const refused = this.linkOptions && connection.ready && connection.bytesIn === 0;
    return refused
      ? `${reason}: the secondary ended the TLS session before any frame (did it refuse this site's certificate or key? its log says why)`
      : explainPskFailure(reason);
  }

  start(): void {
    logLinkSecurity(this.config, this.logger);
    this.stopWatching = watchLinkSecurityFiles(this.config, () => this.reload());
  }

  /** Reads the certificate, key and CA again (SIGHUP): new connections use them. */
  reload(): void {
    if (!this.config.tls && !this.config.psk) return;
    try {
      this.load();
      this.logger.info('tls-reloaded', { file: this.config.tls?.cert ?? this.config.psk?.keyFile ?? '' });
    } catch (error) {
      this.logger.error('tls-reload-failed', {
        reason: (error as Error).message,
        keeping: 'the previous certificate',
      });
    }
  }

  tlsContext(): TlsMaterial['context'] | null {
    return this.tlsMaterial?.context ?? null;
  }

  close(): void {
    this.stopWatching();
  }

  /** Reads the certificate files or the pre-shared key; on failure the previous ones stay. */
  private load(): void {
    const tls = this.config.tls ? loadTlsMaterial(this.config.tls) : null;
    const psk = this.config.psk ? loadPsk(this.config.psk) : null;
    this.tlsMaterial = tls;
    this.linkOptions = tls ? clientOptions(tls) : psk ? pskClientOptions(psk) : null;
  }
}
