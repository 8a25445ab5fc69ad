/**
 * The `cyclerep` command: one function per subcommand, each with its own usage text
 * (`cyclerep <command> --help`). Exit codes: one table, in exit-codes.ts.
 */
import { readFileSync } from 'node:fs';
import { availableParallelism } from 'node:os';
import { resolve } from 'node:path';
import { parseArgs } from 'node:util';
import { ensureCa, makeSiteCertificate } from '../ops/certs.ts';
import { runSimulationParallel } from '../sim/runner.ts';
import { runAcceptImage } from './accept-image.ts';
import { runPromote, runRejoin, runSwitchover } from './admin.ts';
import { runDaemon } from './daemon.ts';
import { runDemo } from './demo.ts';
import { exitCodes, exitCodesText } from './exit-codes.ts';
import { runRecover } from './recover.ts';
import { clientTlsArgs, clientTlsOf } from './site-client.ts';
import { runStatus } from './status.ts';

interface Command {
  synopsis: string;
  summary: string;
  run: (argv: string[]) => Promise<number> | number;
}

const commands: Record<string, Command> = {
  primary: {
    synopsis: 'primary --config FILE [--log json|pretty]',
    summary: 'run the primary site of a group until SIGTERM or SIGINT',
    run: (argv) => daemon('primary', argv),
  },
  secondary: {
    synopsis: 'secondary --config FILE [--log json|pretty]',
    summary: 'run a secondary site until SIGTERM or SIGINT',
    run: (argv) => daemon('secondary', argv),
  },
  status: {
    synopsis: 'status [--json] [--url URL] [--watch [SECONDS]] [--ca F --cert F --key F --peer NAME]',
    summary: 'ask a running site (default http://127.0.0.1:9180); --watch redraws every SECONDS (default 1)',
    run: (argv) => status(argv),
  },
  promote: {
    synopsis:
      'promote [--force] [--json] [--timeout-seconds N] [--ca F --cert F --key F --peer NAME] --url URL',
    summary:
      'make a running secondary the primary of a new generation (docs/failover.md); --force while its primary is connected',
    run: (argv) => promote(argv),
  },
  switchover: {
    synopsis:
      'switchover [--secondary NAME] [--json] [--timeout-seconds N] [--ca F --cert F --key F --peer NAME] --url URL',
    summary:
      'on a running primary: stop writes, hand over to its secondary with no loss, then follow it (docs/failover.md)',
    run: (argv) => switchover(argv),
  },
  rejoin: {
    synopsis:
      'rejoin [--discard-my-data] [--save-discarded FILE] [--json] [--timeout-seconds N] [--ca F --cert F --key F --peer NAME] --url URL',
    summary:
      'on a fenced old primary: follow the site that superseded it, its own later writes undone by a delta resync (docs/failover.md)',
    run: (argv) => rejoinCommand(argv),
  },
  recover: {
    synopsis: 'recover --data-dir DIR',
    summary: 'offline: finish stored cycles, drop incomplete ones, write the journal back to the volumes',
    run: (argv) => recover(argv),
  },
  'accept-image': {
    synopsis: 'accept-image --data-dir DIR --volume NAME | --all',
    summary:
      "offline, the site stopped: take a deliberately restored image as the site's own (docs/storage.md)",
    run: (argv) => acceptImage(argv),
  },
  demo: {
    synopsis: 'demo [--seconds N] [--dir DIR]',
    summary:
      'a primary and a secondary on localhost under ./var/demo with a built-in workload; Ctrl-C stops it',
    run: (argv) => demo(argv),
  },
  simulate: {
    synopsis: 'simulate [--seeds N]',
    summary: 'the replication core under the deterministic fault simulator (default 200 seeds)',
    run: (argv) => simulate(argv),
  },
  certs: {
    synopsis: 'certs --dir DIR --names a,b [--days N]',
    summary: 'a test CA (DIR/ca.crt) and a certificate per site (DIR/<name>.crt, .key); uses openssl',
    run: (argv) => certs(argv),
  },
};

const usage = `usage: cyclerep <command> [options]

commands:
${Object.values(commands)
  .map((command) => `  ${command.synopsis}\n      ${command.summary}`)
  .join('\n')}
  help, --help, -h      this text; cyclerep <command> --help for one command
  --version             the version

${exitCodesText}`;

function commandUsage(command: Command): string {
  return `usage: cyclerep ${command.synopsis}\n\n${command.summary}\n\n${exitCodesText}`;
}

function version(): string {
  // Two levels up from src/cli/ and from dist/cli/ alike.
  const manifest = JSON.parse(readFileSync(new URL('../../package.json', import.meta.url), 'utf8')) as {
    version: string;
  };
  return manifest.version;
}

export async function main(argv: string[]): Promise<number> {
  const [name, ...rest] = argv;
  if (name === undefined) {
    process.stderr.write(usage);
    return exitCodes.usage;
  }
  if (name === 'help' || name === '--help' || name === '-h') {
    process.stdout.write(usage);
    return exitCodes.ok;
  }
  if (name === '--version' || name === 'version') {
    process.stdout.write(`cyclerep ${version()}\n`);
    return exitCodes.ok;
  }
  const command = commands[name];
  if (!command) {
    process.stderr.write(`cyclerep: unknown command "${name}"\n\n${usage}`);
    return exitCodes.usage;
  }
  if (rest.includes('--help') || rest.includes('-h')) {
    process.stdout.write(commandUsage(command));
    return exitCodes.ok;
  }
  return command.run(rest);
}

async function demo(argv: string[]): Promise<number> {
  let values: { seconds?: string | undefined; dir: string };
  try {
    values = parseArgs({
      args: argv,
      options: { seconds: { type: 'string' }, dir: { type: 'string', default: './var/demo' } },
    }).values;
  } catch (error) {
    process.stderr.write(`cyclerep demo: ${(error as Error).message}\n`);
    return exitCodes.usage;
  }
  const seconds = values.seconds === undefined ? null : Number(values.seconds);
  if (seconds !== null && (!Number.isFinite(seconds) || seconds <= 0)) {
    process.stderr.write('cyclerep demo: --seconds must be a positive number\n');
    return exitCodes.usage;
  }
  return runDemo({ directory: values.dir, seconds, print: (line) => process.stdout.write(`${line}\n`) });
}

function certs(argv: string[]): number {
  try {
    const { values } = parseArgs({
      args: argv,
      options: {
        dir: { type: 'string' },
        names: { type: 'string' },
        days: { type: 'string', default: '825' },
      },
    });
    const days = Number(values.days);
    if (!values.dir || !values.names || !Number.isSafeInteger(days) || days < 1) {
      process.stderr.write(
        'cyclerep certs: --dir DIR and --names a,b are required; --days must be a positive integer\n',
      );
      return exitCodes.usage;
    }
    process.stdout.write(`CA: ${ensureCa(values.dir)}\n`);
    for (const name of values.names.split(',').filter((part) => part.length > 0)) {
      const made = makeSiteCertificate(values.dir, name, days);
      process.stdout.write(`${name}: cert ${made.cert}, key ${made.key}\n`);
    }
    return exitCodes.ok;
  } catch (error) {
    process.stderr.write(`cyclerep certs: ${(error as Error).message}\n`);
    return exitCodes.usage;
  }
}

async function simulate(argv: string[]): Promise<number> {
  let seeds: number;
  try {
    const { values } = parseArgs({ args: argv, options: { seeds: { type: 'string', default: '200' } } });
    seeds = Number(values.seeds);
  } catch (error) {
    process.stderr.write(`cyclerep simulate: ${(error as Error).message}\n`);
    return exitCodes.usage;
  }
  if (!Number.isSafeInteger(seeds) || seeds < 1) {
    process.stderr.write('cyclerep simulate: --seeds must be a positive integer\n');
    return exitCodes.usage;
  }
  const report = await runSimulationParallel({
    seeds,
    seedStart: 1,
    jobs: availableParallelism(),
    print: (line) => process.stdout.write(`${line}\n`),
  });
  return report.violations === 0 ? exitCodes.ok : exitCodes.internal;
}

function daemon(role: 'primary' | 'secondary', argv: string[]): Promise<number> {
  try {
    const { values } = parseArgs({
      args: argv,
      options: { config: { type: 'string' }, log: { type: 'string' } },
    });
    if (values.log !== undefined && values.log !== 'json' && values.log !== 'pretty') {
      process.stderr.write(`cyclerep ${role}: --log must be json or pretty\n`);
      return Promise.resolve(exitCodes.usage);
    }
    return runDaemon(role, values.config, values.log as 'json' | 'pretty' | undefined);
  } catch (error) {
    process.stderr.write(`cyclerep ${role}: ${(error as Error).message}\n`);
    return Promise.resolve(exitCodes.usage);
  }
}

function status(argv: string[]): Promise<number> {
  try {
    // --watch takes an optional number: a bare --watch is followed by another option or nothing.
    const watchAt = argv.indexOf('--watch');
    const next = watchAt >= 0 ? argv[watchAt + 1] : undefined;
    const watchValue = next !== undefined && !next.startsWith('--') ? next : undefined;
    const rest =
      watchAt >= 0 ? argv.filter((_, i) => i !== watchAt && !(watchValue && i === watchAt + 1)) : argv;
    const { values } = parseArgs({
      args: rest,
      options: {
        ...clientTlsArgs,
        json: { type: 'boolean', default: false },
        url: { type: 'string' },
      },
    });
    const watchSeconds = watchAt < 0 ? null : Number(watchValue ?? '1');
    if (watchSeconds !== null && (!Number.isFinite(watchSeconds) || watchSeconds < 0.1)) {
      process.stderr.write('cyclerep status: --watch takes a number of seconds, at least 0.1\n');
      return Promise.resolve(exitCodes.usage);
    }
    return runStatus({
      url: values.url ?? 'http://127.0.0.1:9180',
      tls: clientTlsOf(values),
      json: values.json,
      watchSeconds,
      colour: process.stdout.isTTY === true && !process.env.NO_COLOR,
    });
  } catch (error) {
    process.stderr.write(`cyclerep status: ${(error as Error).message}\n`);
    return Promise.resolve(exitCodes.usage);
  }
}

function promote(argv: string[]): Promise<number> {
  try {
    const { values } = parseArgs({
      args: argv,
      options: {
        ...clientTlsArgs,
        url: { type: 'string' },
        force: { type: 'boolean', default: false },
        json: { type: 'boolean', default: false },
        'timeout-seconds': { type: 'string', default: '120' },
      },
    });
    const timeoutSeconds = Number(values['timeout-seconds']);
    if (!values.url || !Number.isFinite(timeoutSeconds) || timeoutSeconds <= 0) {
      process.stderr.write(
        `cyclerep promote: --url URL is required; --timeout-seconds takes a positive number\n`,
      );
      return Promise.resolve(exitCodes.usage);
    }
    return runPromote({
      url: values.url,
      tls: clientTlsOf(values),
      force: values.force,
      json: values.json,
      timeoutSeconds,
    });
  } catch (error) {
    process.stderr.write(`cyclerep promote: ${(error as Error).message}\n`);
    return Promise.resolve(exitCodes.usage);
  }
}

function switchover(argv: string[]): Promise<number> {
  try {
    const { values } = parseArgs({
      args: argv,
      options: {
        ...clientTlsArgs,
        url: { type: 'string' },
        secondary: { type: 'string' },
        json: { type: 'boolean', default: false },
        'timeout-seconds': { type: 'string', default: '60' },
      },
    });
    const timeoutSeconds = Number(values['timeout-seconds']);
    if (!values.url || !Number.isFinite(timeoutSeconds) || timeoutSeconds <= 0) {
      process.stderr.write(
        'cyclerep switchover: --url URL is required; --timeout-seconds takes a positive number\n',
      );
      return Promise.resolve(exitCodes.usage);
    }
    return runSwitchover({
      url: values.url,
      tls: clientTlsOf(values),
      secondary: values.secondary,
      json: values.json,
      timeoutSeconds,
    });
  } catch (error) {
    process.stderr.write(`cyclerep switchover: ${(error as Error).message}\n`);
    return Promise.resolve(exitCodes.usage);
  }
}

function rejoinCommand(argv: string[]): Promise<number> {
  try {
    const { values } = parseArgs({
      args: argv,
      options: {
        ...clientTlsArgs,
        url: { type: 'string' },
        'discard-my-data': { type: 'boolean', default: false },
        'save-discarded': { type: 'string' },
        json: { type: 'boolean', default: false },
        'timeout-seconds': { type: 'string', default: '600' },
      },
    });
    const timeoutSeconds = Number(values['timeout-seconds']);
    if (!values.url || !Number.isFinite(timeoutSeconds) || timeoutSeconds <= 0) {
      process.stderr.write(
        'cyclerep rejoin: --url URL is required; --timeout-seconds takes a positive number\n',
      );
      return Promise.resolve(exitCodes.usage);
    }
    return runRejoin({
      url: values.url,
      tls: clientTlsOf(values),
      discardMyData: values['discard-my-data'],
      // The site writes the file: a path of this shell's directory, made absolute here.
      saveDiscarded: values['save-discarded'] === undefined ? null : resolve(values['save-discarded']),
      json: values.json,
      timeoutSeconds,
    });
  } catch (error) {
    process.stderr.write(`cyclerep rejoin: ${(error as Error).message}\n`);
    return Promise.resolve(exitCodes.usage);
  }
}

function recover(argv: string[]): Promise<number> {
  try {
    const { values } = parseArgs({ args: argv, options: { 'data-dir': { type: 'string' } } });
    return runRecover(values['data-dir']);
  } catch (error) {
    process.stderr.write(`cyclerep recover: ${(error as Error).message}\n`);
    return Promise.resolve(exitCodes.usage);
  }
}

function acceptImage(argv: string[]): Promise<number> {
  try {
    const { values } = parseArgs({
      args: argv,
      options: {
        'data-dir': { type: 'string' },
        volume: { type: 'string' },
        all: { type: 'boolean', default: false },
      },
    });
    return Promise.resolve(
      runAcceptImage({ dataDir: values['data-dir'], volume: values.volume, all: values.all }),
    );
  } catch (error) {
    process.stderr.write(`cyclerep accept-image: ${(error as Error).message}\n`);
    return Promise.resolve(exitCodes.usage);
  }
}
