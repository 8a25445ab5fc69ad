/**
 * Deliberate defects for the simulators, planted from outside: each is a one-line change to a copy
 * of the sources (the way a real change goes wrong), never a switch in shipped code. The simulator
 * runs on the copy; the tests assert each is caught within its seed budget (the whole-site mutants
 * in `test/sim/sites.test.ts`, the core ones in `test/sim/simulator.test.ts`). A mutant whose line
 * is no longer in the code is refused loudly, so the list cannot rot into checks that test nothing.
 */
import { spawn } from 'node:child_process';
import { cpSync, mkdtempSync, readFileSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';

/** One text change to a copy of the sources. */
export interface MutantChange {
  /** Path under the repository root. */
  file: string;
  /** The exact text replaced: it must occur exactly once in the file. */
  find: string;
  replace: string;
}

export interface Mutant extends MutantChange {
  name: string;
  /** The simulator asserted to catch it: `sites` (the default) or `core` (`npm run sim -- --core`). */
  simulator: 'sites' | 'core';
  /**
   * Further changes the same defect needs, made after the first one, each under the same
   * exactly-once rule: a defect spread over several places, or the simulator's scenario drawing
   * what the defect lets through.
   */
  also?: readonly MutantChange[];
  /** What goes wrong, in the words of the audit that found such defects surviving. */
  defect: string;
  /**
   * Seeds the whole-site test gives it, when more than the default 1,000: a defect whose window
   * few seeds open. Each use says which seed first caught it, and is a scenario to sharpen.
   */
  seedsToCatch?: number;
}

export const mutants: readonly Mutant[] = [
  {
    name: 'collect-before-write-back',
    simulator: 'sites',
    file: 'src/node/primary-node.ts',
    find: `    const collection = this.writeBack
      .landed()
      .then(() => Promise.all(this.storage.volumes.map((volume) => volume.flush())))`,
    replace: `    const collection = Promise.resolve()
      .then(() => Promise.all(this.storage.volumes.map((volume) => volume.flush())))`,
    defect: 'the primary deletes journal segments before its volume write-back has landed',
  },
  {
    name: 'volume-sync-before-drain',
    simulator: 'sites',
    file: 'src/node/secondary-node.ts',
    find: `        const synced = this.volumeWrites
          .drained()
          .then(() => Promise.all(this.volumes.map((volume) => volume.flush())))`,
    replace: `        const synced = Promise.resolve()
          .then(() => Promise.all(this.volumes.map((volume) => volume.flush())))`,
    defect:
      'a secondary syncs its volumes (and writes its applied marker) before its queued volume writes drained',
  },
  {
    name: 'zero-run-short',
    simulator: 'sites',
    file: 'src/storage/volume-file.ts',
    find: 'Math.min(zeroes.length, length - done)',
    replace: 'Math.min(zeroes.length, length - done - this.blockBytes)',
    defect: 'a zero run is written one block short',
  },
  {
    name: 'overlay-last-block',
    simulator: 'sites',
    file: 'src/storage/block-overlay.ts',
    find: 'block * blockBytes < offset + length; block++',
    replace: '(block + 1) * blockBytes < offset + length; block++',
    defect: 'the read overlay misses the last block of a read',
  },
  {
    name: 'segment-deletion-boundary',
    simulator: 'sites',
    file: 'src/storage/segment-journal.ts',
    find: 'if (segment === current || segment.cycleMax > cycle) break;',
    replace: 'if (segment === current || segment.cycleMax > cycle + 1) break;',
    defect: 'segment deletion is off by one at the boundary cycle',
  },
  {
    name: 'release-unapplied',
    simulator: 'sites',
    file: 'src/core/secondary-store.ts',
    find: `    this.applied = next.cycle;
`,
    replace: `    this.applied = next.cycle;
    this.out.push({ type: 'journal-release', upTo: next.cycle });
`,
    defect: 'a secondary releases stored but not yet applied cycles from its journal',
  },
  {
    name: 'secondary-read-zeroes',
    simulator: 'sites',
    file: 'src/node/secondary-node.ts',
    find: 'if (core.applied === applied) return image;',
    replace: 'if (core.applied === applied) return new Uint8Array(image.length);',
    defect: "a secondary's read path shows zeroes instead of its applied image",
  },
  {
    name: 'cycle-ack-before-durable',
    simulator: 'sites',
    file: 'src/core/primary-group.ts',
    find: `        if (pending.seq > this.durableSeq) {
          this.requestSync(pending.seq);
          break;
        }
`,
    replace: '',
    defect: 'with ack: cycle, writes are acknowledged before their cycle is durable',
  },
  {
    name: 'journal-sync-skipped',
    simulator: 'sites',
    file: 'src/storage/segment-journal.ts',
    find: `          await this.fs.fdatasync(fd);
          if (this.failure) throw this.failure;
        } catch (cause) {`,
    replace: `          if (this.failure) throw this.failure;
        } catch (cause) {`,
    defect: "the journal's group-commit fdatasync is skipped: syncs resolve, nothing is made durable",
  },
  {
    name: 'volume-sync-skipped',
    simulator: 'sites',
    file: 'src/storage/volume-file.ts',
    find: '    await this.fs.fdatasync(this.fd);',
    replace: '',
    defect: "a volume image's flush is skipped: write-back and apply are never made durable",
  },
  {
    name: 'copy-read-during-switch',
    simulator: 'sites',
    file: 'src/core/primary-group.ts',
    find: '    this.copyReadsPaused = due && this.links.some((link) => link.tracking.reading);\n',
    replace: '    this.copyReadsPaused = false;\n',
    defect:
      'a cycle switch starts while a resync copy read is out: the copied bytes may hold writes of the next cycle and travel before it',
  },
  {
    name: 'bitmap-misses-newest-cycle',
    simulator: 'sites',
    file: 'src/core/link-tracking.ts',
    find: 'cycle <= closed; cycle++) {',
    replace: 'cycle < closed; cycle++) {',
    defect: 'tracking folds every closed cycle the secondary has not stored but the newest into its bitmap',
  },
  {
    name: 'stale-block-reference',
    simulator: 'sites',
    file: 'src/node/site/journal-blocks.ts',
    find: '    const place = this.places.get(seq);\n',
    replace: '    const place = this.places.get(seq - 1) ?? this.places.get(seq);\n',
    defect:
      "a reference into the journal is read from the record appended before it: packets, reads and applies carry an older write's bytes",
  },
  {
    name: 'records-released-under-reads',
    simulator: 'sites',
    file: 'src/node/primary-node.ts',
    find: '      .then(() => this.journalBlocks.readsSettled())\n',
    replace: '',
    defect:
      "the primary releases a collected cycle's records and deletes their segments while reads that named them are still under way",
  },
  {
    name: 'resync-applied-in-parts',
    simulator: 'sites',
    file: 'src/core/secondary-store.ts',
    find: '      if (this.endsUnit(cycle)) break;\n',
    replace: '      break;\n',
    defect:
      'a secondary applies the cycles of a resync one by one instead of as one unit up to a consistent cycle',
  },
  {
    name: 'in-place-said-consistent',
    simulator: 'sites',
    file: 'src/core/secondary-store.ts',
    find: '    this.imageConsistent = unit.consistent;\n',
    replace: '    this.imageConsistent = true;\n',
    defect:
      'a secondary with resync.staging: in-place says its image is consistent while it applies a resync cycle by cycle',
  },
  {
    name: 'rejoin-keeps-writes-after-c',
    simulator: 'sites',
    file: 'src/node/rejoin.ts',
    find: '  const cycle = fenced.startedAt - 1;\n  const written = node.writtenAfter(cycle);\n  const divergence = written?.runs ?? everyBlock(node, host.config.blockSize);\n',
    replace:
      '  const cycle = fenced.startedAt - 1;\n  const written = node.writtenAfter(cycle);\n  const divergence = written ? [] : everyBlock(node, host.config.blockSize);\n',
    defect:
      'a rejoining old primary states none of the blocks it wrote after the promotion cycle: its own writes after C stay in its image',
  },
  {
    name: 'give-up-writes-unstopped',
    simulator: 'sites',
    file: 'src/node/rejoin.ts',
    find: '  node.stopWritesToGiveUp(true);\n',
    replace: '',
    defect:
      "a split brain's loser lists the writes it undoes while it still takes writes: one acknowledged after the list stays in an image said to be the survivor's",
    // First caught by seed 331 until the apply's writes went four at a time again (4fe7c80), by
    // seed 1452 since (ack: cycle; also 3640): the loser's racing writer stops at its first
    // refused write, so few seeds have a write acknowledged between the list and the stop.
    seedsToCatch: 2000,
  },
  {
    name: 'split-brain-delta-any-fork',
    simulator: 'sites',
    file: 'src/node/rejoin.ts',
    find: '  return agreesThrough(seen.generations, identity.generations, cycle) ? cycle : 0;\n',
    replace: '  return cycle;\n',
    also: [
      {
        file: 'src/core/secondary-session.ts',
        find: '  if (agreesThrough(offered.generations, demoted.generations, demoted.cycle))\n',
        replace: '  if (offered.generations.length > 0)\n',
      },
      {
        file: 'src/core/secondary-session.ts',
        find: '  if (demoted.acceptDiverged && related && demoted.cycle === 0) return;\n',
        replace: '  if (demoted.acceptDiverged && related) return;\n',
      },
    ],
    defect:
      "a split brain's loser takes a delta from a survivor whose history forked at another cycle (every check of the fork gone: the rejoin's, the binding's, the handshake's): it is sent cycles of another history over its own image",
  },
  {
    name: 'promotion-half-applied',
    simulator: 'sites',
    file: 'src/node/promotion.ts',
    find: '  await offline.settle();\n  const { applied } = offline.status();\n',
    replace: '  const { applied } = secondary.status();\n',
    defect:
      'a promotion converts the site at the applied cycle it had when it stopped, without finishing the apply the stop interrupted: the new primary may expose a half-applied cycle',
  },
  {
    name: 'keep-incomplete',
    simulator: 'core',
    file: 'src/core/secondary-store.ts',
    find: `  onSessionFailed(): void {
`,
    replace: `  onSessionFailed(): void {
    return;
`,
    also: [
      // After a restart too: the discard records are ignored and unstored packets come back.
      { file: 'src/core/secondary-store.ts', find: `          buffers.clear();\n`, replace: '' },
      {
        file: 'src/core/secondary-store.ts',
        find: `    // A restart is a failure: packets of cycles that were not stored (left in buffers) are void.
`,
        replace: `    for (const [cycle, extents] of buffers) {
      const packets = new Map<number, ReceivedPacket>();
      for (const { packetIndex, seq, extent } of extents) packets.set(packetIndex, { ...extent, packetIndex, seq });
      this.receiving.set(cycle, { packets, end: null, digest: 0, session: -1 });
    }
`,
      },
    ],
    defect: 'a secondary keeps the packets of incomplete cycles past a failure, of its session or a restart',
  },
  {
    name: 'recovery-higher-number',
    simulator: 'core',
    file: 'src/core/primary-link.ts',
    find: `    const number = newestClosed;
`,
    replace: `    const number = newestClosed + 1;
`,
    defect: 'the recovery cycle is numbered above the cycles still unsent, like the capture cycle',
  },
  {
    name: 'apply-partial',
    simulator: 'core',
    file: 'src/core/secondary-store.ts',
    find: `      if (cycle.packets.size < end.packetCount) return;
      if (cycle.digest !== end.digest) {`,
    replace: `      if (false) {`,
    defect: 'a secondary stores and applies a cycle before it holds all of its packets',
  },
  {
    name: 'early-journal-delete',
    simulator: 'core',
    file: 'src/core/primary-group.ts',
    find: 'Math.min(...storedNumbers)',
    replace: 'Math.max(...storedNumbers)',
    defect: 'the primary deletes journal entries once one secondary, not every one, stored them',
  },
  {
    name: 'ack-immediate-multinode',
    simulator: 'core',
    file: 'src/core/primary-group.ts',
    find: `config.nodes > 1 && config.ack === 'immediate'`,
    replace: 'false',
    also: [
      // The scenarios draw what the configuration now lets through.
      {
        file: 'src/sim/scenario.ts',
        find: `if (nodes > 1) return 'cycle';`,
        replace: `if (nodes > 1) return 'immediate';`,
      },
    ],
    defect: 'immediate acknowledgement is allowed with several sequencer nodes',
  },
  {
    name: 'flush-early',
    simulator: 'core',
    file: 'src/core/primary-group.ts',
    find: 'if (this.durableSeq >= this.appendSeq) {',
    replace: 'if (this.appendSeq >= this.durableSeq) {',
    defect: 'the primary answers FLUSH before the journal is durable',
  },
  {
    name: 'skip-redo',
    simulator: 'core',
    file: 'src/core/secondary-store.ts',
    find: `  resumeApply(): void {
    this.tryApply();
`,
    replace: `  resumeApply(): void {
`,
    defect: 'a restarted secondary does not finish the apply a crash interrupted',
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
  for (const change of [mutant, ...(mutant.also ?? [])]) {
    const path = join(copy, change.file);
    const text = readFileSync(path, 'utf8');
    const occurrences = text.split(change.find).length - 1;
    if (occurrences !== 1) {
      rmSync(copy, { recursive: true, force: true });
      throw new Error(
        `mutant ${mutant.name}: the line to change occurs ${occurrences} times in ${change.file}, not once; update src/sim/mutants.ts`,
      );
    }
    // A function, so that `$&` and the like in the replacement stay literal.
    writeFileSync(
      path,
      text.replace(change.find, () => change.replace),
    );
  }
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
