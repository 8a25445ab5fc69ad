/**
 * Deliberate defects for the whole-site simulator, planted from outside: each is a one-line change
 * to a copy of the sources (the way a real change goes wrong), never a switch in shipped code. The
 * simulator runs on the copy; `test/sim/mutants.test.ts` asserts each is caught within its seed
 * budget. A mutant whose line is no longer in the code is refused loudly, so the list cannot rot
 * into checks that test nothing.
 */
import { spawn } from 'node:child_process';
import { cpSync, mkdtempSync, readFileSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';

export interface Mutant {
  name: string;
  /** Path under the repository root. */
  file: string;
  /** The exact text replaced: it must occur exactly once in the file. */
  find: string;
  replace: string;
  /** What goes wrong, in the words of the audit that found such defects surviving. */
  defect: string;
  /** Which simulator must catch it: whole sites, or the protocol core alone (--core). */
  simulator: 'sites' | 'core';
}

export const mutants: readonly Mutant[] = [
  {
    name: 'collect-before-write-back',
    file: 'src/node/primary-node.ts',
    find: `    this.writeBack
      .landed()
      .then(() => Promise.all(this.storage.volumes.map((volume) => volume.flush())))`,
    replace: `    Promise.resolve()
      .then(() => Promise.all(this.storage.volumes.map((volume) => volume.flush())))`,
    simulator: 'sites',
    defect: 'the primary deletes journal segments before its volume write-back has landed',
  },
  {
    name: 'volume-sync-before-drain',
    file: 'src/node/secondary-node.ts',
    find: `        this.volumeWrites
          .drained()
          .then(() => Promise.all(this.volumes.map((volume) => volume.flush())))`,
    replace: `        Promise.resolve()
          .then(() => Promise.all(this.volumes.map((volume) => volume.flush())))`,
    simulator: 'sites',
    defect:
      'a secondary syncs its volumes (and writes its applied marker) before its queued volume writes drained',
  },
  {
    name: 'zero-run-short',
    file: 'src/storage/volume-file.ts',
    find: 'Math.min(zeroes.length, length - done)',
    replace: 'Math.min(zeroes.length, length - done - this.blockBytes)',
    simulator: 'sites',
    defect: 'a zero run is written one block short',
  },
  {
    name: 'overlay-last-block',
    file: 'src/storage/block-overlay.ts',
    find: 'block * blockBytes < offset + length; block++',
    replace: '(block + 1) * blockBytes < offset + length; block++',
    simulator: 'sites',
    defect: 'the read overlay misses the last block of a read',
  },
  {
    name: 'segment-deletion-boundary',
    file: 'src/storage/segment-journal.ts',
    find: 'if (segment === current || segment.cycleMax > cycle) break;',
    replace: 'if (segment === current || segment.cycleMax > cycle + 1) break;',
    simulator: 'sites',
    defect: 'segment deletion is off by one at the boundary cycle',
  },
  {
    name: 'release-unapplied',
    file: 'src/core/secondary-store.ts',
    find: `    this.applied = next.cycle;
`,
    replace: `    this.applied = next.cycle;
    this.out.push({ type: 'journal-release', upTo: next.cycle });
`,
    simulator: 'sites',
    defect: 'a secondary releases stored but not yet applied cycles from its journal',
  },
];

const root = fileURLToPath(new URL('../..', import.meta.url));

/** A copy of the sources with the mutant planted; the caller removes the directory. */
export function plantMutant(mutant: Mutant): string {
  const copy = mkdtempSync(join(tmpdir(), `cyclerep-mutant-${mutant.name}-`));
  cpSync(join(root, 'src'), join(copy, 'src'), { recursive: true });
  cpSync(join(root, 'package.json'), join(copy, 'package.json'));
  cpSync(join(root, 'tsconfig.json'), join(copy, 'tsconfig.json'));
  symlinkSync(join(root, 'node_modules'), join(copy, 'node_modules'), 'dir');
  const path = join(copy, mutant.file);
  const text = readFileSync(path, 'utf8');
  const occurrences = text.split(mutant.find).length - 1;
  if (occurrences !== 1) {
    rmSync(copy, { recursive: true, force: true });
    throw new Error(
      `mutant ${mutant.name}: the line to change occurs ${occurrences} times in ${mutant.file}, not once; update src/sim/mutants.ts`,
    );
  }
  writeFileSync(path, text.replace(mutant.find, mutant.replace));
  return copy;
}

/** Runs the simulator on a copy of the sources with `mutant` planted; resolves with its exit code. */
export function runMutant(
  mutant: Mutant,
  simArguments: string[],
  onOutput: (text: string) => void,
): Promise<number> {
  const copy = plantMutant(mutant);
  return new Promise((resolve, reject) => {
    const child = spawn(
      process.execPath,
      ['--import', 'tsx', join(copy, 'src/sim/main.ts'), ...simArguments],
      {
        cwd: copy,
        stdio: ['ignore', 'pipe', 'pipe'],
      },
    );
    child.stdout.on('data', (chunk: Buffer) => onOutput(chunk.toString()));
    child.stderr.on('data', (chunk: Buffer) => onOutput(chunk.toString()));
    child.once('error', reject);
    child.once('close', (code) => {
      rmSync(copy, { recursive: true, force: true });
      resolve(code ?? 1);
    });
  });
}
