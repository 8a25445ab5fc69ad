/**
 * What a running site serves besides its link: NBD (sources on the primary, readers on a secondary)
 * and the status endpoint (GET /status, /metrics), each only when the config asks for it. Stopping
 * comes in two steps: NBD first, so requests in flight finish while storage still runs; the status
 * endpoint last, so a monitor can still read a fault.
 */
import type { Server as HttpServer } from 'node:http';
import type { Server as HttpsServer } from 'node:https';
import type { NbdExport } from '../../nbd/connection.ts';
import { type NbdServer, startNbdServer } from '../../nbd/server.ts';
import { loadTlsMaterial, type TlsMaterial } from '../../net/tls.ts';
import type { FileConfig } from '../../ops/config.ts';
import type { Logger } from '../../ops/logger.ts';
import type { SiteMetrics } from '../../ops/metrics.ts';
import {
  type AdminHandler,
  closeStatusServer,
  type StatusTls,
  startStatusServer,
} from '../../ops/status-server.ts';

/** What the services ask of the site they serve; each is asked anew at every request. */
export interface ServedSite {
  nbdExports(): NbdExport[];
  status(): unknown;
  metrics: SiteMetrics;
  /** The certificate and key NBD's STARTTLS serves with, or null (asked at each upgrade: reloads apply). */
  nbdTlsContext(): TlsMaterial['context'] | null;
  /** `POST /admin/<verb>` on the status listener (loopback, or a client certificate), when the site takes any. */
  admin?: AdminHandler;
}

/** HTTPS for the status listener when the config asks for it (config.ts checked the tls section). */
function statusTlsOf(config: FileConfig): StatusTls | undefined {
  if (!config.http?.tls || !config.tls) return undefined;
  return { context: loadTlsMaterial(config.tls).context, admins: config.http.tls.admins };
}

export class SiteServices {
  private constructor(
    private readonly nbd: NbdServer | null,
    private readonly http: HttpServer | null,
    private readonly config: FileConfig,
    private readonly logger: Logger,
  ) {}

  static async start(config: FileConfig, site: ServedSite, logger: Logger): Promise<SiteServices> {
    const nbd = config.nbd
      ? await startNbdServer(
          config.nbd,
          () => site.nbdExports(),
          logger,
          () => site.nbdTlsContext(),
          (command, error) => site.metrics.observeNbdRequest(command, error),
        )
      : null;
    const http = config.http
      ? await startStatusServer(
          config.http.listen,
          () => site.status(),
          config.http,
          site.metrics,
          site.admin,
          statusTlsOf(config),
        )
      : null;
    return new SiteServices(nbd, http, config, logger);
  }

  /**
   * The certificate and key read again for an HTTPS status listener (SIGHUP): new connections use
   * them. A file that does not load is logged and the old ones stay.
   */
  reloadTls(): void {
    if (!this.http || !this.config.http?.tls || !this.config.tls) return;
    try {
      (this.http as unknown as HttpsServer).setSecureContext(loadTlsMaterial(this.config.tls).context);
    } catch (error) {
      this.logger.error('status-tls-reload-failed', {
        reason: `${(error as Error).message}; the status listener keeps its certificate`,
      });
    }
  }

  /** NBD clients get NBD_ESHUTDOWN for new requests; those in flight get `drainMs` to finish. */
  async stopNbd(drainMs: number): Promise<void> {
    await this.nbd?.shutdown(drainMs);
  }

  /** Closes the status endpoint after `lingerMs` (so a monitor can still read a fault). */
  closeStatus(lingerMs: number): Promise<void> {
    return closeStatusServer(this.http, lingerMs);
  }
}
