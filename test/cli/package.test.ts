// Proves cyclerep as a package: `npm pack` holds the compiled JavaScript, its declarations and the
// command, and nothing of the sources, tests or benchmarks; the packed tarball, unpacked where a
// user's node_modules would hold it, is imported from a plain .mjs file by Node and type-checked
// from a TypeScript file by tsc, with no TypeScript runtime loaded.
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, test } from 'node:test';
import { fileURLToPath } from 'node:url';

const root = fileURLToPath(new URL('../..', import.meta.url));
// Under the checkout, so that the unpacked package finds its dependencies in the checkout's
// node_modules the way an installed one finds them in the user's.
mkdirSync(join(root, 'var'), { recursive: true });
const scratch = mkdtempSync(join(root, 'var', 'package-test-'));
const installed = join(scratch, 'node_modules', 'cyclerep');
let packedFiles: string[] = [];

function run(command: string, args: string[], cwd: string) {
  const result = spawnSync(command, args, { cwd, encoding: 'utf8', timeout: 180_000 });
  assert.equal(result.status, 0, `${command} ${args.join(' ')}:\n${result.stdout}\n${result.stderr}`);
  return result.stdout;
}

before(() => {
  const report = JSON.parse(run('npm', ['pack', '--json', '--pack-destination', scratch], root)) as {
    filename: string;
    files: { path: string }[];
  }[];
  const packed = report[0];
  assert.ok(packed, 'npm pack reported a tarball');
  packedFiles = packed.files.map((file) => file.path);
  mkdirSync(installed, { recursive: true });
  run('tar', ['-xzf', join(scratch, packed.filename), '-C', installed, '--strip-components=1'], root);
});
after(() => rmSync(scratch, { recursive: true, force: true }));

test('the tarball holds the compiled library, its declarations and the command, and no sources', () => {
  for (const path of [
    'package.json',
    'bin/cyclerep.js',
    'dist/index.js',
    'dist/index.d.ts',
    'dist/cli/main.js',
  ]) {
    assert.ok(packedFiles.includes(path), `${path} is packed`);
  }
  const strays = packedFiles.filter(
    (path) => /^(src|test|bench|scripts|node_modules|var)\//.test(path) || /(?<!\.d)\.ts$/.test(path),
  );
  assert.deepEqual(strays, [], 'no sources, tests, benchmarks or TypeScript files beside the declarations');
  const declarationsNamingTs = readdirSync(join(installed, 'dist'), { recursive: true, encoding: 'utf8' })
    .filter((path) => path.endsWith('.d.ts'))
    .filter((path) => /from '\.{1,2}\/[^']+\.ts'/.test(run('cat', [join(installed, 'dist', path)], root)));
  assert.deepEqual(declarationsNamingTs, [], 'declarations import .js files that exist in the package');
});

test('a plain .mjs file imports the library and uses it', () => {
  const script = join(scratch, 'use.mjs');
  writeFileSync(
    script,
    `import { validateConfig, ConfigError } from 'cyclerep';
const config = validateConfig({ group: 'g', role: 'secondary', name: 'dr1', dataDir: '/tmp/x' });
let refused = '';
try { validateConfig({ role: 'primary' }); } catch (error) { refused = error instanceof ConfigError ? error.code : 'other'; }
console.log(JSON.stringify({ name: config.name, refused }));
`,
  );
  const output = JSON.parse(run(process.execPath, [script], scratch)) as { name: string; refused: string };
  assert.equal(output.name, 'dr1');
  assert.equal(output.refused, 'config-invalid');
});

test('the package command runs from the tarball without a TypeScript runtime', () => {
  const output = run(process.execPath, [join(installed, 'bin', 'cyclerep.js'), '--version'], scratch);
  assert.match(output.trim(), /^cyclerep \d+\.\d+\.\d+$/);
  const manifest = JSON.parse(run('cat', [join(installed, 'package.json')], root)) as {
    dependencies: Record<string, string>;
  };
  for (const runtime of ['tsx', 'typescript', 'ts-node']) {
    assert.equal(manifest.dependencies[runtime], undefined, `${runtime} is not a production dependency`);
  }
});

test('TypeScript code type-checks against the packed declarations', () => {
  writeFileSync(
    join(scratch, 'use.ts'),
    `import { validateConfig, type PrimaryFileConfig, PrimaryNode } from 'cyclerep';
const config = validateConfig({ role: 'primary' }) as PrimaryFileConfig;
const group: string = config.group;
const start: typeof PrimaryNode.start = PrimaryNode.start;
// @ts-expect-error a number is not a group name
const wrong: number = config.group;
export { group, start, wrong };
`,
  );
  writeFileSync(
    join(scratch, 'tsconfig.json'),
    JSON.stringify({
      compilerOptions: {
        strict: true,
        module: 'NodeNext',
        moduleResolution: 'NodeNext',
        target: 'ES2022',
        noEmit: true,
        types: ['node'],
        typeRoots: [join(root, 'node_modules', '@types')],
        // Our declarations still count: a broken import in them would make the types `any`, and the
        // expected error above would then be missing and fail the check.
        skipLibCheck: true,
      },
      files: ['use.ts'],
    }),
  );
  run(process.execPath, [join(root, 'node_modules/typescript/bin/tsc'), '-p', scratch], scratch);
});
