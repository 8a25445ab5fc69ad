/** Structured logs: one JSON object per line on stderr, or a human-readable line with `pretty`. */
import type { LogEntry } from '../core/types.ts';

export type LogFormat = 'json' | 'pretty';

export interface Logger {
  log(entry: LogEntry): void;
  info(event: string, fields?: LogEntry['fields']): void;
  warn(event: string, fields?: LogEntry['fields']): void;
  error(event: string, fields?: LogEntry['fields']): void;
}

export function createLogger(options: {
  site: string;
  format: LogFormat;
  debug?: boolean;
  write?: (line: string) => void;
}): Logger {
  const write = options.write ?? ((line: string) => process.stderr.write(`${line}\n`));
  const log = (entry: LogEntry): void => {
    if (entry.level === 'debug' && !options.debug) return;
    const time = new Date().toISOString();
    if (options.format === 'json') {
      write(
        JSON.stringify({ time, level: entry.level, site: options.site, event: entry.event, ...entry.fields }),
      );
      return;
    }
    const fields = Object.entries(entry.fields)
      .map(
        ([key, value]) =>
          `${key}=${typeof value === 'string' && value.includes(' ') ? JSON.stringify(value) : value}`,
      )
      .join(' ');
    write(
      `${time} ${entry.level.toUpperCase().padEnd(5)} ${options.site} ${entry.event}${fields ? ` ${fields}` : ''}`,
    );
  };
  return {
    log,
    info: (event, fields = {}) => log({ level: 'info', event, fields }),
    warn: (event, fields = {}) => log({ level: 'warn', event, fields }),
    error: (event, fields = {}) => log({ level: 'error', event, fields }),
  };
}

/** Time for the rate limiter; tests pass their own. */
export interface LogClock {
  now(): number;
  /** Calls `fire` after `ms`; must not keep the process alive. */
  after(ms: number, fire: () => void): void;
}

const realClock: LogClock = {
  now: () => Date.now(),
  after: (ms, fire) => {
    setTimeout(fire, ms).unref();
  },
};

/**
 * A logger for events a peer can repeat at will (refused connections, protocol violations,
 * timeouts): at most one line per event name per interval. The lines held back are counted and
 * reported when the interval ends as one `log-suppressed` line naming the event (`similar`) and
 * the count (`suppressed`), so a flood costs two lines a second and the operator still sees its size.
 */
export function rateLimited(logger: Logger, options: { intervalMs?: number; clock?: LogClock } = {}): Logger {
  const intervalMs = options.intervalMs ?? 1000;
  const clock = options.clock ?? realClock;
  // Keyed by event name: a bounded set, whatever the peers send.
  const windows = new Map<string, { endsAt: number; suppressed: number }>();
  const log = (entry: LogEntry): void => {
    const now = clock.now();
    const window = windows.get(entry.event);
    if (!window || now >= window.endsAt) {
      windows.set(entry.event, { endsAt: now + intervalMs, suppressed: 0 });
      logger.log(entry);
      return;
    }
    window.suppressed++;
    if (window.suppressed > 1) return;
    clock.after(window.endsAt - now, () => {
      if (windows.get(entry.event) === window) windows.delete(entry.event);
      logger.log({
        level: entry.level,
        event: 'log-suppressed',
        fields: { similar: entry.event, suppressed: window.suppressed, intervalMs },
      });
    });
  };
  return {
    log,
    info: (event, fields = {}) => log({ level: 'info', event, fields }),
    warn: (event, fields = {}) => log({ level: 'warn', event, fields }),
    error: (event, fields = {}) => log({ level: 'error', event, fields }),
  };
}
