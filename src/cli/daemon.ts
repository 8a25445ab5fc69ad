/**
 * `cyclerep primary|secondary --config F`: load and check the config, run the site until a signal
 * (exit 0) or a storage failure (exit 3). Either way the site stops through one path, bounded by
 * shutdown.timeoutMs: NBD clients get NBD_ESHUTDOWN for new requests, requests in flight finish,
 * connections, listeners and files are closed; whatever still holds the process then is cut.
 */
import { ConfigError, storageFaultOf } from '../core/errors.ts';
import { SiteHost } from '../node/site-host.ts';
import { type FileConfig, type LoadedConfig, loadConfigFile } from '../ops/config.ts';
import { createLogger, type LogFormat, type Logger } from '../ops/logger.ts';
import { exitCodes, startFailureCode } from './exit-codes.ts';

/** After a stop that finished, handles still open (a client's half-closed socket) get this long. */
const exitGraceMs = 2000;

export async function runDaemon(
  role: 'primary' | 'secondary',
  configPath: string | undefined,
  logFormat?: LogFormat,
): Promise<number> {
  if (!configPath) {
    process.stderr.write(`cyclerep ${role}: --config FILE is required\n`);
    return exitCodes.usage;
  }
  let loaded: LoadedConfig;
  try {
    loaded = loadConfigFile(configPath);
  } catch (error) {
    if (!(error instanceof ConfigError)) throw error;
    process.stderr.write(`cyclerep ${role}: ${error.message}\n`);
    return exitCodes.usage;
  }
  const config = loaded.config;
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
  let host: SiteHost | null = null;
  let storageFailed = false;
  let stopRequested = false;
  let resolveStarted: () => void = () => {};
  const started = new Promise<void>((resolve) => {
    resolveStarted = resolve;
  });
  let resolveExit: (code: number) => void = () => {};
  const exited = new Promise<number>((resolve) => {
    resolveExit = resolve;
  });
  // One way out, whatever asks first (a signal, a storage failure); asking again changes nothing
  // but the exit code, which a storage failure during the stop makes 3.
  const stop = (why: Record<string, string>): void => {
    if (stopRequested) return;
    stopRequested = true;
    void started
      .then(() => stopWithin(host as SiteHost, config, logger, why))
      .then((stopFailed) => resolveExit(storageFailed || stopFailed ? exitCodes.storage : exitCodes.ok));
  };
  const onFatal = (error: Error): void => {
    storageFailed = true;
    const fault = storageFaultOf(error, new Date());
    stop({ cause: 'storage-failure', kind: fault.kind, reason: fault.message });
  };
  // Taken from before the start: a signal while the site starts stops it once it is up (without a
  // handler, the signal would kill the process mid-start, with no clean stop and no exit code).
  process.once('SIGTERM', () => stop({ signal: 'SIGTERM' }));
  process.once('SIGINT', () => stop({ signal: 'SIGINT' }));
  try {
    host = await SiteHost.start(loaded, logger, onFatal);
  } catch (error) {
    logger.error('start-failed', { reason: (error as Error).message });
    return startFailureCode(error);
  }
  resolveStarted();
  const running = host;
  // Renewed certificates are read again without a restart; connections made from now on use them.
  process.on('SIGHUP', () => running.reloadTls());
  // Everything of ours is closed by then; a handle that still keeps the event loop alive (a peer's
  // half-closed socket) is not worth waiting for.
  void exited.then((code) => setTimeout(() => process.exit(code), exitGraceMs).unref());
  return exited;
}

/**
 * Stops the site, bounded by shutdown.timeoutMs (plus the fault's status time): NBD requests in
 * flight get half of it. Resolves with whether the stop itself failed or had to be cut short.
 */
async function stopWithin(
  host: SiteHost,
  config: FileConfig,
  logger: Logger,
  why: Record<string, string>,
): Promise<boolean> {
  const { timeoutMs, faultStatusMs } = config.shutdown;
  if (why.cause === 'storage-failure') logger.error('stopping-on-storage-failure', why);
  else logger.info('stopping', why);
  let timer: NodeJS.Timeout | undefined;
  const deadline = new Promise<'timeout'>((resolve) => {
    timer = setTimeout(() => resolve('timeout'), timeoutMs + faultStatusMs);
  });
  const stopped = host.stop({ nbdDrainMs: timeoutMs / 2, statusLingerMs: faultStatusMs }).then(
    () => 'stopped' as const,
    (error: unknown) => {
      logger.error('stop-failed', { reason: (error as Error).message });
      return 'failed' as const;
    },
  );
  const outcome = await Promise.race([stopped, deadline]);
  clearTimeout(timer);
  if (outcome === 'timeout')
    logger.error('stop-timed-out', {
      timeoutMs,
      reason: 'storage or clients did not finish; exiting anyway',
    });
  return outcome !== 'stopped';
}
