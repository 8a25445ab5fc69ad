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

/**
 * How unsynced entry changes survive a machine crash. 'posix': each independently (POSIX promises
 * nothing until the directory is synced), a rename's two names together. 'ordered': as a file
 * system with a metadata journal (ext4, xfs) keeps them, a prefix of the changes in the order they
 * were made; a directory sync makes every change before it durable, in any directory.
 */
export type MetadataOrder = 'posix' | 'ordered';

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

/** An entry change, in the order made ('ordered' metadata only); a rename's two share a version. */
interface EntryChange extends NameRef {
  inode: Inode | undefined;
  version: number;
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
  /** Entry changes not yet durable, oldest first ('ordered' metadata only). */
  private changes: EntryChange[] = [];

  constructor(readonly metadata: MetadataOrder = 'posix') {}

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
    if (this.metadata === 'ordered') this.changes.push({ directory, name, inode, version });
    return replaced?.kind === 'file' ? replaced : null;
  }

  noteRename(from: NameRef, to: NameRef): void {
    this.renames.push({ from, to });
  }

  /** A sync of `directory` issued at `version` completed. */
  syncDirectory(directory: DirectoryInode, version: number): void {
    if (this.metadata === 'ordered') {
      // The metadata journal commits everything logged before the sync, whichever directory.
      this.commitChanges(version);
    } else {
      directory.completeSync(version);
    }
    if (directory.dirty.size === 0) this.dirtyDirectories.delete(directory);
    const pending = (ref: NameRef) => ref.directory.dirty.has(ref.name);
    this.renames = this.renames.filter((rename) => pending(rename.from) || pending(rename.to));
  }

  /** Makes the logged changes up to `version` durable, in order; returns how many. */
  private commitChanges(version: number): number {
    let count = 0;
    while (count < this.changes.length && (this.changes[count] as EntryChange).version <= version) {
      const change = this.changes[count] as EntryChange;
      const { directory, name } = change;
      if (change.inode) directory.durableEntries.set(name, change.inode);
      else directory.durableEntries.delete(name);
      if (directory.entries.get(name) === directory.durableEntries.get(name)) {
        directory.dirty.delete(name);
      } else if (!directory.dirty.has(name)) {
        // A name created and removed again: durable now, gone in the current view.
        directory.dirty.set(name, change.version);
        this.dirtyDirectories.add(directory);
      }
      count++;
    }
    this.changes.splice(0, count);
    return count;
  }

  /**
   * A machine crash: each unsynced entry change independently reached the disk or not, except that
   * the two names of a rename share one fate (real file systems journal a rename as one change, so
   * a file is never left under both names or neither). A file whose creation is lost is gone; so is
   * everything under a directory whose creation is lost. Afterwards both views are the same.
   */
  crash(random: Random, entryKept: number): EntryCrashOutcome {
    const outcome =
      this.metadata === 'ordered' ? this.crashOrdered(random) : this.crashIndependent(random, entryKept);
    this.dirtyDirectories.clear();
    this.renames = [];
    this.changes = [];
    this.relink();
    return outcome;
  }

  private crashIndependent(random: Random, entryKept: number): EntryCrashOutcome {
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
    return outcome;
  }

  /** A prefix of the logged changes reached the disk, cut between two versions (never inside a rename). */
  private crashOrdered(random: Random): EntryCrashOutcome {
    const versions = [...new Set(this.changes.map((change) => change.version))];
    const cut = random.int(versions.length + 1);
    const keptEntries = cut === 0 ? 0 : this.commitChanges(versions[cut - 1] as number);
    const revertedEntries = this.changes.length;
    for (const directory of this.dirtyDirectories) {
      for (const name of [...directory.dirty.keys()]) directory.revert(name);
    }
    return { keptEntries, revertedEntries };
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
