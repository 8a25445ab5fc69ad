/**
 * The directory tree of a simulated disk: path lookup in the current view (what the process sees)
 * or the durable one (what the disk holds), entry changes with link counts, and what a machine
 * crash does to entries that were never synced.
 */
import { assert } from '../../core/assert.ts';
import type { Random } from '../random.ts';
import { DirectoryInode, type Inode } from './directory-inode.ts';
import { FileInode } from './file-inode.ts';
import { fsError, type Syscall } from './fs-error.ts';

export type View = 'current' | 'durable';

/** The components of an absolute path; `.` and empty components dropped, `..` taken back. */
export function splitPath(path: string): string[] {
  assert(path.startsWith('/'), `a simulated path is absolute: ${path}`);
  const components: string[] = [];
  for (const component of path.split('/')) {
    if (component === '' || component === '.') continue;
    if (component === '..') components.pop();
    else components.push(component);
  }
  return components;
}

/** One side of a rename: the two names of a rename keep or lose the change together at a crash. */
interface NameRef {
  directory: DirectoryInode;
  name: string;
}

export interface EntryCrashOutcome {
  keptEntries: number;
  revertedEntries: number;
}

export class Namespace {
  /** Inode numbers start where ext4's first ordinary inode does; the root is 2 as there. */
  readonly root = new DirectoryInode(2, 0o755);
  private nextInode = 11;
  /** Directories with names whose change is not durable yet. */
  private readonly dirtyDirectories = new Set<DirectoryInode>();
  /** Renames since their names were last synced. */
  private renames: { from: NameRef; to: NameRef }[] = [];

  newFile(mode: number): FileInode {
    return new FileInode(this.nextInode++, mode & 0o777);
  }

  newDirectory(mode: number): DirectoryInode {
    return new DirectoryInode(this.nextInode++, mode & 0o777);
  }

  /** The inode at `path` in `view`, or undefined when anything on the way is missing. */
  find(path: string, view: View = 'current'): Inode | undefined {
    let inode: Inode = this.root;
    for (const component of splitPath(path)) {
      if (inode.kind !== 'directory') return undefined;
      const next: Inode | undefined = (view === 'current' ? inode.entries : inode.durableEntries).get(
        component,
      );
      if (!next) return undefined;
      inode = next;
    }
    return inode;
  }

  /** The inode at `path`; throws ENOENT or ENOTDIR as the system call would. */
  resolve(path: string, syscall: Syscall): Inode {
    const { directory, name } = this.parentOf(path, syscall);
    if (name === null) return directory;
    const inode = directory.entries.get(name);
    if (!inode) throw fsError('ENOENT', syscall, path);
    return inode;
  }

  /** The directory holding `path` and its last name (null for the root); throws ENOENT or ENOTDIR. */
  parentOf(path: string, syscall: Syscall): { directory: DirectoryInode; name: string | null } {
    const components = splitPath(path);
    const name = components.pop() ?? null;
    let directory: Inode = this.root;
    for (const component of components) {
      const next: Inode | undefined = directory.entries.get(component);
      if (!next) throw fsError('ENOENT', syscall, path);
      if (next.kind !== 'directory') throw fsError('ENOTDIR', syscall, path);
      directory = next;
    }
    return { directory, name };
  }

  /** Binds `name` in `directory` (or removes it); returns the file it replaced, if any. */
  set(directory: DirectoryInode, name: string, inode: Inode | undefined, version: number): FileInode | null {
    const replaced = directory.entries.get(name);
    if (replaced === inode) return null;
    if (replaced?.kind === 'file') replaced.links--;
    if (inode?.kind === 'file') inode.links++;
    directory.set(name, inode, version);
    if (directory.dirty.size > 0) this.dirtyDirectories.add(directory);
    return replaced?.kind === 'file' ? replaced : null;
  }

  noteRename(from: NameRef, to: NameRef): void {
    this.renames.push({ from, to });
  }

  /** A directory sync completed: forget what it made durable. */
  onDirectorySynced(directory: DirectoryInode): void {
    if (directory.dirty.size === 0) this.dirtyDirectories.delete(directory);
    const pending = (ref: NameRef) => ref.directory.dirty.has(ref.name);
    this.renames = this.renames.filter((rename) => pending(rename.from) || pending(rename.to));
  }

  /**
   * A machine crash: each unsynced entry change independently reached the disk or not, except that
   * the two names of a rename share one fate (real file systems journal a rename as one change, so
   * a file is never left under both names or neither). A file whose creation is lost is gone; so is
   * everything under a directory whose creation is lost. Afterwards both views are the same.
   */
  crash(random: Random, entryKept: number): EntryCrashOutcome {
    const outcome: EntryCrashOutcome = { keptEntries: 0, revertedEntries: 0 };
    const group = this.renameGroups();
    const fates = new Map<string, boolean>();
    for (const directory of this.dirtyDirectories) {
      for (const name of [...directory.dirty.keys()]) {
        const key = group(`${directory.number}/${name}`);
        let kept = fates.get(key);
        if (kept === undefined) {
          kept = random.chance(entryKept);
          fates.set(key, kept);
        }
        if (kept) {
          directory.persist(name);
          outcome.keptEntries++;
        } else {
          directory.revert(name);
          outcome.revertedEntries++;
        }
      }
    }
    this.dirtyDirectories.clear();
    this.renames = [];
    this.relink();
    return outcome;
  }

  /** Union-find over the names renames joined: returns the representative of a name's group. */
  private renameGroups(): (key: string) => string {
    const parent = new Map<string, string>();
    const find = (key: string): string => {
      let root = key;
      for (let up = parent.get(root); up !== undefined && up !== root; up = parent.get(root)) root = up;
      return root;
    };
    for (const { from, to } of this.renames) {
      const a = find(`${from.directory.number}/${from.name}`);
      const b = find(`${to.directory.number}/${to.name}`);
      if (a !== b) parent.set(a, b);
    }
    return find;
  }

  /** Recounts every file's names after a crash changed the tree. */
  private relink(): void {
    const counts = new Map<FileInode, number>();
    this.walk('current', (_path, inode) => {
      if (inode.kind === 'file') counts.set(inode, (counts.get(inode) ?? 0) + 1);
    });
    for (const [file, links] of counts) file.links = links;
  }

  /** Visits every inode below the root in `view`, depth first, names in sorted order. */
  walk(view: View, visit: (path: string, inode: Inode) => void): void {
    const descend = (directory: DirectoryInode, prefix: string): void => {
      const entries = view === 'current' ? directory.entries : directory.durableEntries;
      for (const name of [...entries.keys()].sort()) {
        const inode = entries.get(name) as Inode;
        const path = `${prefix}/${name}`;
        visit(path, inode);
        if (inode.kind === 'directory') descend(inode, path);
      }
    };
    descend(this.root, '');
  }
}
