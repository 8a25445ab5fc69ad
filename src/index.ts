/**
 * The library API for embedding cyclerep: open a site from a validated configuration, write and
 * read through the primary, run a secondary, and the typed errors callers may meet.
 *
 *   const config = loadConfig('primary.yaml');
 *   const primary = await PrimaryNode.start(config, createLogger({ site: 'app', format: 'json' }), onFatal);
 *   await primary.write(0, 0, block);   // resolves at acknowledgement (ack mode of the config)
 *   await primary.flush();              // every acknowledged write durable
 *   await primary.stop();
 */
export {
  ConfigError,
  CyclerepError,
  HandshakeError,
  ProtocolError,
  StorageError,
  WriteError,
} from './core/errors.ts';
export { PrimaryNode, PrimaryNodeError, type PrimaryNodeStatus } from './node/primary-node.ts';
export { SecondaryNode, type SecondaryStatusReport } from './node/secondary-node.ts';
export {
  type FileConfig,
  loadConfig,
  type PrimaryFileConfig,
  type SecondaryFileConfig,
  validateConfig,
} from './ops/config.ts';
export { createLogger, type Logger } from './ops/logger.ts';
