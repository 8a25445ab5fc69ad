// Proves the `cyclerep` command as a user meets it: the demo runs and reports, bad usage exits 2
// with a message, and help names only commands that exist.
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { test } from 'node:test';
import { fileURLToPath } from 'node:url';

const root = fileURLToPath(new URL('../..', import.meta.url));

function cyclerep(...args: string[]) {
  return spawnSync('node', ['bin/cyclerep.js', ...args], { cwd: root, encoding: 'utf8', timeout: 120_000 });
}

test('cyclerep demo runs the simulator and ends with a clean report', () => {
  const result = cyclerep('demo', '--seeds', '3');
  assert.equal(result.status, 0, result.stderr);
  assert.match(result.stdout, /^cyclerep demo: 3 simulated groups/);
  assert.match(result.stdout.trim().split('\n').at(-1) ?? '', /^sim: 3 seeds, 0 violations$/);
});

test('an unknown command exits 2 and says which', () => {
  const result = cyclerep('replicate-everything');
  assert.equal(result.status, 2);
  assert.match(result.stderr, /unknown command "replicate-everything"/);
});

test('a bad option value exits 2 naming the option', () => {
  const result = cyclerep('demo', '--seeds', 'many');
  assert.equal(result.status, 2);
  assert.match(result.stderr, /--seeds must be a positive integer/);
});

test('help lists the commands that exist', () => {
  const result = cyclerep('help');
  assert.equal(result.status, 0);
  assert.match(result.stdout, /demo \[--seeds N\]/);
});
