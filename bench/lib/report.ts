/**
 * What a benchmark run produced: tables (for bench/results/latest.md) and named figures (for
 * latest.json), with the machine, the versions and the date, so a table is never read without them.
 */
import { spawnSync } from 'node:child_process';
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { cpus, release, totalmem } from 'node:os';
import { join } from 'node:path';
import { benchEnv } from './processes.ts';

export interface Table {
  title: string;
  columns: string[];
  rows: (string | number)[][];
  notes: string[];
}

export class Report {
  readonly tables: Table[] = [];
  readonly figures: Record<string, number> = {};
  readonly started = new Date();

  constructor(readonly mode: 'quick' | 'full') {}

  table(title: string, columns: string[], notes: string[] = []): Table {
    const table: Table = { title, columns, rows: [], notes };
    this.tables.push(table);
    return table;
  }

  figure(name: string, value: number): void {
    this.figures[name] = Number.isFinite(value) ? Number(value.toPrecision(4)) : value;
  }

  /** Prints a table as soon as it is complete, so a long run shows progress. */
  print(table: Table): void {
    process.stdout.write(`\n${markdownTable(table)}\n`);
  }

  write(directory: string): { json: string; markdown: string } {
    mkdirSync(directory, { recursive: true });
    const environment = describeEnvironment();
    const json = join(directory, 'latest.json');
    const markdown = join(directory, 'latest.md');
    writeFileSync(
      json,
      `${JSON.stringify({ mode: this.mode, date: this.started.toISOString(), ...environment, figures: this.figures, tables: this.tables }, null, 2)}\n`,
    );
    const header = [
      `# cyclerep benchmark (${this.mode} run)`,
      '',
      `- date: ${this.started.toISOString()}`,
      `- machine: ${environment.machine.cpus} x ${environment.machine.cpuModel}, ${environment.machine.memoryGiB} GiB, Linux ${environment.machine.kernel}`,
      `- versions: ${Object.entries(environment.versions)
        .map(([tool, version]) => `${tool} ${version}`)
        .join(', ')}`,
      `- command: npm run bench${this.mode === 'quick' ? ' -- --quick' : ''}`,
      '',
    ];
    writeFileSync(markdown, `${header.join('\n')}${this.tables.map(markdownTable).join('\n')}`);
    return { json, markdown };
  }
}

export function markdownTable(table: Table): string {
  const cell = (value: string | number) => (typeof value === 'number' ? formatNumber(value) : value);
  const lines = [
    `## ${table.title}`,
    '',
    `| ${table.columns.join(' | ')} |`,
    `| ${table.columns.map(() => '---').join(' | ')} |`,
    ...table.rows.map((row) => `| ${row.map(cell).join(' | ')} |`),
    '',
    ...table.notes.map((note) => `${note}\n`),
  ];
  return lines.join('\n');
}

export function formatNumber(value: number): string {
  if (!Number.isFinite(value)) return String(value);
  if (Math.abs(value) >= 100) return Math.round(value).toLocaleString('en-US');
  if (Math.abs(value) >= 10) return value.toFixed(1);
  return value.toFixed(2);
}

function version(command: string, args: string[], pattern: RegExp): string {
  const result = spawnSync(command, args, { encoding: 'utf8', env: benchEnv });
  return pattern.exec(`${result.stdout ?? ''}${result.stderr ?? ''}`)?.[1] ?? 'not found';
}

function describeEnvironment() {
  const packageJson = JSON.parse(readFileSync(new URL('../../package.json', import.meta.url), 'utf8')) as {
    version: string;
  };
  return {
    machine: {
      cpus: cpus().length,
      cpuModel: cpus()[0]?.model.trim() ?? 'unknown',
      memoryGiB: Math.round(totalmem() / 1024 ** 3),
      kernel: release(),
    },
    versions: {
      cyclerep: packageJson.version,
      node: process.versions.node,
      nbdkit: version('nbdkit', ['--version'], /nbdkit ([\d.]+)/),
      'qemu-nbd': version('qemu-nbd', ['--version'], /qemu-nbd ([\d.]+)/),
      fio: version('fio', ['--version'], /fio-([\d.]+)/),
      nbdcopy: version('nbdcopy', ['--version'], /nbdcopy ([\d.]+)/),
    },
  };
}

export function median(values: number[]): number {
  const sorted = [...values].sort((a, b) => a - b);
  if (sorted.length === 0) return Number.NaN;
  const middle = Math.floor(sorted.length / 2);
  return sorted.length % 2
    ? (sorted[middle] as number)
    : ((sorted[middle - 1] as number) + (sorted[middle] as number)) / 2;
}

export function percentile(values: number[], fraction: number): number {
  const sorted = [...values].sort((a, b) => a - b);
  if (sorted.length === 0) return Number.NaN;
  return sorted[Math.min(sorted.length - 1, Math.floor(fraction * sorted.length))] as number;
}
