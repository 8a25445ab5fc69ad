/** `cyclerep primary|secondary --config F`: load and check the config, run the site until a signal. */
import { ConfigError } from '../core/errors.ts';
import { PrimaryNode } from '../node/primary-node.ts';
import { SecondaryNode } from '../node/secondary-node.ts';
import { type FileConfig, loadConfig } from '../ops/config.ts';
import { createLogger, type LogFormat } from '../ops/logger.ts';
import { exitCodes, startFailureCode } from './exit-codes.ts';

export async function runDaemon(
  role: 'primary' | 'secondary',
  configPath: string | undefined,
  logFormat?: LogFormat,
): Promise<number> {
  if (!configPath) {
    process.stderr.write(`cyclerep ${role}: --config FILE is required\n`);
    return exitCodes.usage;
  }
  let config: FileConfig;
  try {
    config = loadConfig(configPath);
  } catch (error) {
    if (!(error instanceof ConfigError)) throw error;
    process.stderr.write(`cyclerep ${role}: ${error.message}\n`);
    return exitCodes.usage;
  }
  if (config.role !== role) {
    process.stderr.write(`cyclerep ${role}: ${configPath}: role: the file configures a ${config.role}\n`);
    return exitCodes.usage;
  }
  const site = config.role === 'primary' ? `${config.group}/primary` : `${config.group}/${config.name}`;
  const logger = createLogger({
    site,
    format: logFormat ?? config.log?.format ?? 'json',
    debug: !!process.env.CYCLEREP_DEBUG,
  });
  let resolveExit: (code: number) => void = () => {};
  const exited = new Promise<number>((resolve) => {
    resolveExit = resolve;
  });
  const onFatal = (error: Error): void => {
    logger.error('stopping-on-storage-failure', { reason: error.message });
    resolveExit(exitCodes.storage);
  };
  let node: PrimaryNode | SecondaryNode;
  try {
    node =
      config.role === 'primary'
        ? await PrimaryNode.start(config, logger, onFatal)
        : await SecondaryNode.start(config, logger, onFatal);
  } catch (error) {
    logger.error('start-failed', { reason: (error as Error).message });
    return startFailureCode(error);
  }
  const stop = (signal: string): void => {
    logger.info('stopping', { signal });
    node.stop().then(
      () => resolveExit(exitCodes.ok),
      (error) => {
        logger.error('stop-failed', { reason: (error as Error).message });
        resolveExit(exitCodes.storage);
      },
    );
  };
  process.once('SIGTERM', () => stop('SIGTERM'));
  // Renewed certificates are read again without a restart; connections made from now on use them.
  const reload = (): void => node.reloadTls();
  process.on('SIGHUP', reload);
  process.once('SIGINT', () => stop('SIGINT'));
  return exited;
}
