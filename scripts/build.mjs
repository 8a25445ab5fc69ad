// Compiles src/ to dist/ (JavaScript, declarations, source maps) and copies the dashboard's files. tsc rewrites the sources' relative
// `.ts` imports to `.js` in the JavaScript but not in the declarations, so those are rewritten here:
// a library user's TypeScript then resolves every declaration file it is handed.
import { spawnSync } from 'node:child_process';
import { cpSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = fileURLToPath(new URL('..', import.meta.url));
const dist = join(root, 'dist');
rmSync(dist, { recursive: true, force: true });
const tsc = join(root, 'node_modules/typescript/bin/tsc');
const result = spawnSync(process.execPath, [tsc, '-p', join(root, 'tsconfig.build.json')], {
  stdio: 'inherit',
});
if (result.status !== 0) process.exit(result.status ?? 1);

const relativeTsImport = /((?:from|import)\s*\(?\s*['"])(\.{1,2}\/[^'"]+)\.ts(['"])/g;
for (const entry of readdirSync(dist, { recursive: true, encoding: 'utf8' })) {
  if (!entry.endsWith('.d.ts')) continue;
  const path = join(dist, entry);
  const text = readFileSync(path, 'utf8');
  const rewritten = text.replace(relativeTsImport, '$1$2.js$3');
  if (rewritten !== text) writeFileSync(path, rewritten);
}

// The dashboard's page, script and style are served as files, not compiled.
cpSync(join(root, 'src/ops/dashboard'), join(dist, 'ops/dashboard'), { recursive: true });
