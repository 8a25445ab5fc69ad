/**
 * Journaled writes on their way to the volume files. A write goes to the volumes only once the
 * journal records carrying it are durable, so after any crash the volumes hold nothing the journal
 * lacks. Durable writes go in batches, one batch after the other, so an older write never lands
 * after a newer one; until a batch has landed, reads find its data here (the core forgets a
 * collected cycle before its write-back lands). A batch in which some block is written twice is
 * folded first (written once, newest wins); any other batch is written as its writes came.
 */
import { FoldIndex } from '../../core/fold.ts';
import type { Extent } from '../../core/types.ts';
import type { VolumeFile } from '../../storage/volume-file.ts';
import { volumeWritesInFlight, WriteQueue } from '../site/write-queue.ts';

/** Largest single volume write of a write-back batch (runs are merged up to this). */
const writeBackRunBytesMax = 1024 * 1024;
/** Journaled writes per write-back batch: folding one batch holds the event loop about a millisecond. */
const writeBackBatchWritesMax = 256;

/** Durable writes on their way to the volume files; folded once their turn comes. */
interface WriteBackBatch {
  extents: Extent[];
  fold: FoldIndex | null;
  /** Bytes of block data its writes hold. */
  bytes: number;
}

/** The newest content of a block in one batch: from its fold once made, else its writes newest first. */
function newestInBatch(
  batch: WriteBackBatch,
  volume: number,
  block: number,
  blockBytes: number,
): Uint8Array | null | undefined {
  if (batch.fold) return batch.fold.get(volume, block);
  for (let i = batch.extents.length - 1; i >= 0; i--) {
    const extent = batch.extents[i] as Extent;
    if (extent.volume !== volume || block < extent.block || block >= extent.block + extent.blockCount)
      continue;
    if (!extent.data) return null;
    const start = (block - extent.block) * blockBytes;
    return extent.data.subarray(start, start + blockBytes);
  }
  return undefined;
}

/** Whether two of the extents share a block: only then must a batch be folded (the newer wins). */
function overlapping(extents: readonly Extent[]): boolean {
  const sorted = [...extents].sort((a, b) => a.volume - b.volume || a.block - b.block);
  for (let i = 1; i < sorted.length; i++) {
    const before = sorted[i - 1] as Extent;
    const next = sorted[i] as Extent;
    if (next.volume === before.volume && next.block < before.block + before.blockCount) return true;
  }
  return false;
}

/**
 * Extents that share no block, in runs of data extents that lie end to end on one volume (at most
 * `bytesMax` a run, unless one extent alone is larger); a zero run stands alone. Sorted by place:
 * nothing overlaps, so the order they land in does not matter.
 */
export function adjacentRuns(extents: readonly Extent[], bytesMax: number): Extent[][] {
  const sorted = [...extents].sort((a, b) => a.volume - b.volume || a.block - b.block);
  const runs: Extent[][] = [];
  let run: Extent[] = [];
  let runBytes = 0;
  for (const extent of sorted) {
    const last = run.at(-1);
    const joins =
      last !== undefined &&
      last.data !== null &&
      extent.data !== null &&
      extent.volume === last.volume &&
      extent.block === last.block + last.blockCount &&
      runBytes + extent.data.length <= bytesMax;
    if (!joins && run.length > 0) {
      runs.push(run);
      run = [];
      runBytes = 0;
    }
    run.push(extent);
    runBytes += extent.data?.length ?? 0;
  }
  if (run.length > 0) runs.push(run);
  return runs;
}

export class WriteBack {
  /** Journaled writes not yet durable: written to the volumes once they are. */
  private journaled: { seq: number; extent: Extent }[] = [];
  /** Batches being written to the volume files, oldest first, each folded (newest wins) when its turn comes. */
  private readonly batches: WriteBackBatch[] = [];
  /** Settles when every write-back issued so far has landed (or failed, which is fatal). */
  private tail: Promise<void> = Promise.resolve();
  /** Bytes of block data held here: writes not yet durable, and batches not yet landed. */
  heldBytes = 0;
  /** The most heldBytes was in this run. */
  heldBytesPeak = 0;

  constructor(
    private readonly volumes: readonly VolumeFile[],
    private readonly blockBytes: number,
    /** A failed write-back is fatal: its records must stay in the journal for the redo. */
    private readonly onFailure: (error: unknown) => void,
    /** A batch landed: heldBytes went down (writes waiting for memory may go on). */
    private readonly onLanded: () => void,
  ) {}

  /** A write was appended to the journal as record `seq`. */
  onJournaled(seq: number, extent: Extent): void {
    this.journaled.push({ seq, extent });
    this.heldBytes += extent.data?.length ?? 0;
    this.heldBytesPeak = Math.max(this.heldBytesPeak, this.heldBytes);
  }

  /**
   * Journal records up to `upTo` are durable: their data may now go to the volume files, in batches
   * of at most writeBackBatchWritesMax writes, each after the previous one. A batch is folded by
   * block when its turn comes (a block written twice is written once, runs are merged; folding a
   * whole second of writes at once would stall the event loop), then its runs are written
   * concurrently, since within a batch nothing overlaps.
   */
  onDurable(upTo: number): void {
    let count = 0;
    while (count < this.journaled.length && (this.journaled[count] as { seq: number }).seq <= upTo) count++;
    const durable = this.journaled.splice(0, count);
    for (let at = 0; at < durable.length; at += writeBackBatchWritesMax) {
      const extents = durable.slice(at, at + writeBackBatchWritesMax).map(({ extent }) => extent);
      const bytes = extents.reduce((sum, extent) => sum + (extent.data?.length ?? 0), 0);
      const batch: WriteBackBatch = { extents, fold: null, bytes };
      this.batches.push(batch);
      const landed = this.tail.then(() => this.writeBatch(batch));
      this.tail = landed.then(
        () => {
          this.batches.shift();
          this.heldBytes -= batch.bytes;
          this.onLanded();
        },
        (error) => this.onFailure(error),
      );
    }
  }

  private async writeBatch(batch: WriteBackBatch): Promise<void> {
    const writes = new WriteQueue(volumeWritesInFlight);
    if (!overlapping(batch.extents)) {
      // No block written twice: each write goes as it came, its bytes neither folded nor copied
      // (most batches of scattered or sequential writes); writes that lie end to end go in one
      // gathered write (a sequential writer's 256 KiB writes: one call per MiB, not four).
      for (const run of adjacentRuns(batch.extents, writeBackRunBytesMax)) {
        const volume = this.volumes[(run[0] as Extent).volume] as VolumeFile;
        if (run.length === 1) writes.push(() => volume.writeExtent(run[0] as Extent));
        else
          writes.push(() =>
            volume.writePieces(
              (run[0] as Extent).block,
              run.map((extent) => extent.data as Uint8Array),
            ),
          );
      }
      await writes.drained();
      return;
    }
    const fold = new FoldIndex(this.blockBytes);
    for (const extent of batch.extents) fold.add(extent);
    batch.fold = fold;
    for (const run of fold.runs(writeBackRunBytesMax)) {
      writes.push(() => (this.volumes[run.volume] as VolumeFile).writeExtent(fold.extentOf(run)));
    }
    await writes.drained();
  }

  /** The newest content of a block in a write-back not yet landed, or undefined. */
  newestBlock(volume: number, block: number): Uint8Array | null | undefined {
    for (let i = this.batches.length - 1; i >= 0; i--) {
      const content = newestInBatch(this.batches[i] as WriteBackBatch, volume, block, this.blockBytes);
      if (content !== undefined) return content;
    }
    return undefined;
  }

  /** Settles once every write-back issued so far has landed; a failure went to onFailure. */
  landed(): Promise<void> {
    return this.tail;
  }
}
