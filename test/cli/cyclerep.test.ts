// Proves the `cyclerep` command as a user meets it: the demo runs a primary and a secondary and
// ends with a matching, consistent replica; the simulator command reports; bad usage and bad
// configuration exit 2 with a message naming the problem, before any file is touched.
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, test } from 'node:test';
import { fileURLToPath } from 'node:url';

const root = fileURLToPath(new URL('../..', import.meta.url));
const scratch = mkdtempSync(join(tmpdir(), 'cyclerep-cli-'));
after(() => rmSync(scratch, { recursive: true, force: true }));

function cyclerep(...args: string[]) {
  return spawnSync('node', ['bin/cyclerep.js', ...args], { cwd: root, encoding: 'utf8', timeout: 120_000 });
}

test('cyclerep demo runs a primary and a secondary and ends with an equal, consistent replica', () => {
  const result = cyclerep('demo', '--seconds', '3', '--dir', join(scratch, 'demo'));
  assert.equal(result.status, 0, `${result.stdout}\n${result.stderr}`);
  assert.match(result.stdout, /^cyclerep demo: primary \(this process\) and secondary dr1/);
  assert.match(result.stdout, /dashboard: http:\/\/127\.0\.0\.1:9180\/ \(primary\)/);
  // Progress lines, whatever state the link is in when they are printed (a cold machine may still
  // be connecting at t=1s); that replication happened is shown by "caught up" and the equal images.
  assert.match(result.stdout, /t= +\d+s capture \d+ \| dr1 \w+: stored \d+ applied \d+/);
  assert.match(result.stdout, /by 6 sources, 0 refused; secondary caught up, exited 0/);
  assert.match(
    result.stdout,
    /dr1's image files equal the primary's, byte for byte; as a cut of the sources' writes it is consistent/,
  );
});

test('cyclerep simulate runs the simulator and ends with a clean report', () => {
  const result = cyclerep('simulate', '--seeds', '3');
  assert.equal(result.status, 0, result.stderr);
  assert.match(result.stdout.trim().split('\n').at(-1) ?? '', /^sim: 3 seeds, 0 violations$/);
});

test('an unknown command exits 2 and says which', () => {
  const result = cyclerep('replicate-everything');
  assert.equal(result.status, 2);
  assert.match(result.stderr, /unknown command "replicate-everything"/);
});

test('a bad option value exits 2 naming the option', () => {
  const result = cyclerep('demo', '--seconds', 'many');
  assert.equal(result.status, 2);
  assert.match(result.stderr, /--seconds must be a positive number/);
});

test('a config with a wrong type, an unknown key or a missing size exits 2 naming the key, touching nothing', () => {
  const dataDir = join(scratch, 'never-created');
  const base = `group: g\nrole: primary\ndataDir: ${dataDir}\nvolumes:\n  - { name: data, size: 1MiB }\nsecondaries:\n  - { name: dr1, address: 127.0.0.1:7400 }\n`;
  const cases: [string, RegExp][] = [
    [base.replace('size: 1MiB', 'size: big'), /volumes\.0\.size: expected a size/],
    [`${base}cycle: { intervalMinMs: soon }\n`, /cycle\.intervalMinMs: expected number, got "soon"/],
    [`${base}replicas: 3\n`, /unknown key "replicas"/],
    [base.replace('{ name: data, size: 1MiB }', '{ name: data }'), /volumes\.0\.size: missing/],
  ];
  for (const [text, message] of cases) {
    const path = join(scratch, 'bad.yaml');
    writeFileSync(path, text);
    const result = cyclerep('primary', '--config', path);
    assert.equal(result.status, 2, result.stderr);
    assert.match(result.stderr, message);
    assert.ok(result.stderr.includes(path), 'the message names the file');
    assert.equal(existsSync(dataDir), false, 'nothing was created');
  }
});

test('a config for the other role is refused', () => {
  const path = join(scratch, 'secondary.yaml');
  writeFileSync(path, `group: g\nrole: secondary\nname: dr1\ndataDir: ${join(scratch, 'x')}\n`);
  const result = cyclerep('primary', '--config', path);
  assert.equal(result.status, 2);
  assert.match(result.stderr, /the file configures a secondary/);
});

test('help lists the commands', () => {
  const result = cyclerep('help');
  assert.equal(result.status, 0);
  for (const command of [
    'primary --config',
    'secondary --config',
    'status',
    'recover --data-dir',
    'demo',
    'simulate',
  ]) {
    assert.ok(result.stdout.includes(command), command);
  }
});

test('every command answers --help with its own usage and the exit codes, and --version names the version', () => {
  for (const command of ['primary', 'secondary', 'status', 'recover', 'demo', 'simulate', 'certs']) {
    const result = cyclerep(command, '--help');
    assert.equal(result.status, 0, `${command} --help: ${result.stderr}`);
    assert.match(result.stdout, new RegExp(`^usage: cyclerep ${command}\\b`), command);
    assert.match(
      result.stdout,
      /5 {2}damaged, missing or foreign data on disk/,
      `${command} lists the exit codes`,
    );
  }
  const version = cyclerep('--version');
  assert.equal(version.status, 0);
  assert.match(version.stdout, /^cyclerep \d+\.\d+\.\d+\n$/);
});
