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
