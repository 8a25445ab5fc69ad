/** How the site link is protected: one line at start saying so, and its files watched for renewal. */

import { watchTlsFiles } from '../../net/tls.ts';
import type { FileConfig } from '../../ops/config.ts';
import type { Logger } from '../../ops/logger.ts';

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

/** Watches the certificate files or the pre-shared key; returns the function that stops it. */
export function watchLinkSecurityFiles(config: FileConfig, reload: () => void): () => void {
  if (config.tls) return watchTlsFiles([config.tls.cert, config.tls.key, config.tls.ca], reload);
  if (config.psk) return watchTlsFiles([config.psk.keyFile], reload);
  return () => {};
}
