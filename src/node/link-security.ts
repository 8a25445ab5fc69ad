/** One line at start saying how the site link is protected, a warning when it is not. */
import type { FileConfig } from '../ops/config.ts';
import type { Logger } from '../ops/logger.ts';

export function logLinkSecurity(config: FileConfig, logger: Logger): void {
  if (config.psk) {
    logger.info('link-tls', { version: 'TLSv1.3', mode: 'pre-shared key', keyFile: config.psk.keyFile });
  } else if (config.tls) {
    logger.info('link-tls', { version: 'TLSv1.3', cert: config.tls.cert, peers: config.tls.peers.join(',') });
  } else if (config.insecure) {
    logger.warn('link-insecure', {
      reason: 'insecure: true: the site link is plain TCP, readable and forgeable by anyone on the path',
    });
  } else {
    logger.info('link-plain', { reason: 'no tls section: the site link is plain TCP, on this machine only' });
  }
}
