/**
 * What a running site serves besides its link: NBD (sources on the primary, readers on a secondary)
 * and the status endpoint (GET /status, /metrics), each only when the config asks for it. Stopping
 * comes in two steps: NBD first, so requests in flight finish while storage still runs; the status
 * endpoint last, so a monitor can still read a fault.
 */
import type { Server as HttpServer } from 'node:http';
import type { NbdExport } from '../../nbd/connection.ts';
import { type NbdServer, startNbdServer } from '../../nbd/server.ts';
import type { TlsMaterial } from '../../net/tls.ts';
import type { FileConfig } from '../../ops/config.ts';
import type { Logger } from '../../ops/logger.ts';
import type { SiteMetrics } from '../../ops/metrics.ts';
import { type AdminHandler, closeStatusServer, startStatusServer } from '../../ops/status-server.ts';

/** What the services ask of the site they serve; each is asked anew at every request. */
export interface ServedSite {
  nbdExports(): NbdExport[];
  status(): unknown;
  metrics: SiteMetrics;
  /** The certificate and key NBD's STARTTLS serves with, or null (asked at each upgrade: reloads apply). */
  nbdTlsContext(): TlsMaterial['context'] | null;
  /** `POST /admin/<verb>` on the status listener (loopback only), when the site takes any. */
  admin?: AdminHandler;
}

export class SiteServices {
  private constructor(
    private readonly nbd: NbdServer | null,
    private readonly http: HttpServer | null,
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
        )
      : null;
    return new SiteServices(nbd, http);
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
