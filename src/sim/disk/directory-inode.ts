/**
 * One directory: its entries as the process sees them (name -> inode, visible at once) and as the
 * disk holds them (durable once the directory is synced). A file's data belongs to its inode, so a
 * rename keeps it and a descriptor on an unlinked file goes on working.
 */
import type { FileInode } from './file-inode.ts';

export type Inode = FileInode | DirectoryInode;

export class DirectoryInode {
  readonly kind = 'directory';
  readonly entries = new Map<string, Inode>();
  readonly durableEntries = new Map<string, Inode>();
  /**
   * Names whose entry differs from the durable one, with the version of the first change since it
   * last matched: a sync issued at or after that version covers it.
   */
  readonly dirty = new Map<string, number>();
  /** The highest sync point made durable. */
  private syncedThrough = 0;
  /** Descriptors and calls in flight holding it. */
  handles = 0;

  constructor(
    readonly number: number,
    readonly mode: number,
  ) {}

  /** Binds `name` to `inode` (or removes it) in the current view. */
  set(name: string, inode: Inode | undefined, version: number): void {
    if (inode) this.entries.set(name, inode);
    else this.entries.delete(name);
    if (this.entries.get(name) === this.durableEntries.get(name)) this.dirty.delete(name);
    else if (!this.dirty.has(name)) this.dirty.set(name, version);
  }

  /**
   * A sync issued at `version` completed: every name changed before it is made durable as it is
   * now (a later change to the same name may ride along, as it could on a real disk).
   */
  completeSync(version: number): void {
    if (version <= this.syncedThrough) return;
    this.syncedThrough = version;
    for (const [name, first] of this.dirty) {
      if (first > version) continue;
      this.persist(name);
    }
  }

  /** The current entry of `name` reached the disk. */
  persist(name: string): void {
    const current = this.entries.get(name);
    if (current) this.durableEntries.set(name, current);
    else this.durableEntries.delete(name);
    this.dirty.delete(name);
  }

  /** The durable entry of `name` is back, the change lost. */
  revert(name: string): void {
    const durable = this.durableEntries.get(name);
    if (durable) this.entries.set(name, durable);
    else this.entries.delete(name);
    this.dirty.delete(name);
  }
}
