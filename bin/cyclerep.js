#!/usr/bin/env node
// Entry point of `npx cyclerep`: loads the TypeScript sources through tsx, so the checkout runs
// without a build step.
import { register } from 'tsx/esm/api';

register();
const { main } = await import('../src/cli/main.ts');
process.exitCode = await main(process.argv.slice(2));
