#!/usr/bin/env node
// Entry point of `cyclerep`: runs the compiled JavaScript in dist/ (built by `npm ci` through the
// prepare script, or `npm run build`), so no TypeScript runtime is loaded in production.
import { existsSync } from 'node:fs';

const entry = new URL('../dist/cli/main.js', import.meta.url);
if (!existsSync(entry)) {
  process.stderr.write('cyclerep: dist/ is missing; build it with `npm run build` (npm ci does it too)\n');
  process.exit(1);
}
const { main } = await import(entry.href);
process.exitCode = await main(process.argv.slice(2));
