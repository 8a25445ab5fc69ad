/**
 * The `cyclerep` command. Exit codes: 0 success, 2 bad usage, 1 a failure at run time (for the
 * simulator: an invariant was violated).
 */
import { availableParallelism } from 'node:os';
import { parseArgs } from 'node:util';
import { noBugs } from '../core/types.ts';
import { ensureCa, makeSiteCertificate } from '../ops/certs.ts';
import { runSimulationParallel } from '../sim/runner.ts';
import { runDaemon } from './daemon.ts';
import { runDemo } from './demo.ts';
import { runRecover } from './recover.ts';
import { runStatus } from './status.ts';

const usage = `usage: cyclerep <command> [options]

commands:
  primary --config FILE [--log json|pretty]     run the primary site of a group
  secondary --config FILE [--log json|pretty]   run a secondary site
  status [--json] [--url URL]                   ask a running site (default http://127.0.0.1:9180)
  recover --data-dir DIR                        offline: finish stored cycles, drop incomplete ones,
                                                write the journal back to the volumes; exit 0
  demo [--seconds N] [--dir DIR]                a primary and a secondary on localhost under ./var/demo
                                                with a built-in workload; Ctrl-C stops it
  simulate [--seeds N]                          the replication core under the deterministic fault
                                                simulator (default 200 seeds); see npm run sim
  certs --dir DIR --names a,b [--days N]        a test CA (DIR/ca.crt) and a certificate per site
                                                (DIR/<name>.crt, .key) for the tls section; uses openssl
  help                                          show this text

exit codes: 0 success, 2 bad usage or configuration, 3 storage failure, 4 could not start
`;

export async function main(argv: string[]): Promise<number> {
  const [command, ...rest] = argv;
  switch (command) {
    case 'demo':
      return demo(rest);
    case 'simulate':
      return simulate(rest);
    case 'primary':
    case 'secondary':
      return daemon(command, rest);
    case 'status':
      return status(rest);
    case 'recover':
      return recover(rest);
    case 'certs':
      return certs(rest);
    case undefined:
    case 'help':
    case '--help':
    case '-h':
      process.stdout.write(usage);
      return command === undefined ? 2 : 0;
    default:
      process.stderr.write(`cyclerep: unknown command "${command}"\n\n${usage}`);
      return 2;
  }
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
    return 2;
  }
  const seconds = values.seconds === undefined ? null : Number(values.seconds);
  if (seconds !== null && (!Number.isFinite(seconds) || seconds <= 0)) {
    process.stderr.write('cyclerep demo: --seconds must be a positive number\n');
    return 2;
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
      return 2;
    }
    process.stdout.write(`CA: ${ensureCa(values.dir)}\n`);
    for (const name of values.names.split(',').filter((part) => part.length > 0)) {
      const made = makeSiteCertificate(values.dir, name, days);
      process.stdout.write(`${name}: cert ${made.cert}, key ${made.key}\n`);
    }
    return 0;
  } catch (error) {
    process.stderr.write(`cyclerep certs: ${(error as Error).message}\n`);
    return 2;
  }
}

async function simulate(argv: string[]): Promise<number> {
  let seeds: number;
  try {
    const { values } = parseArgs({ args: argv, options: { seeds: { type: 'string', default: '200' } } });
    seeds = Number(values.seeds);
  } catch (error) {
    process.stderr.write(`cyclerep simulate: ${(error as Error).message}\n`);
    return 2;
  }
  if (!Number.isSafeInteger(seeds) || seeds < 1) {
    process.stderr.write('cyclerep simulate: --seeds must be a positive integer\n');
    return 2;
  }
  const report = await runSimulationParallel({
    seeds,
    seedStart: 1,
    bugs: noBugs,
    jobs: availableParallelism(),
    print: (line) => process.stdout.write(`${line}\n`),
  });
  return report.violations === 0 ? 0 : 1;
}

function daemon(role: 'primary' | 'secondary', argv: string[]): Promise<number> {
  try {
    const { values } = parseArgs({
      args: argv,
      options: { config: { type: 'string' }, log: { type: 'string' } },
    });
    if (values.log !== undefined && values.log !== 'json' && values.log !== 'pretty') {
      process.stderr.write(`cyclerep ${role}: --log must be json or pretty\n`);
      return Promise.resolve(2);
    }
    return runDaemon(role, values.config, values.log as 'json' | 'pretty' | undefined);
  } catch (error) {
    process.stderr.write(`cyclerep ${role}: ${(error as Error).message}\n`);
    return Promise.resolve(2);
  }
}

function status(argv: string[]): Promise<number> {
  try {
    const { values } = parseArgs({
      args: argv,
      options: { json: { type: 'boolean', default: false }, url: { type: 'string' } },
    });
    return runStatus(values.url ?? 'http://127.0.0.1:9180', values.json);
  } catch (error) {
    process.stderr.write(`cyclerep status: ${(error as Error).message}\n`);
    return Promise.resolve(2);
  }
}

function recover(argv: string[]): Promise<number> {
  try {
    const { values } = parseArgs({ args: argv, options: { 'data-dir': { type: 'string' } } });
    return runRecover(values['data-dir']);
  } catch (error) {
    process.stderr.write(`cyclerep recover: ${(error as Error).message}\n`);
    return Promise.resolve(2);
  }
}
