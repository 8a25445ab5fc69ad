/**
 * A site's block data lives in its journal, not in memory: the core's folds keep references
 * (append sequence, block index), and this reads the bytes back. It keeps where each record with
 * block data lies (from its append, or from replay), forgets the records of released cycles, and
 * reads pieces through SegmentJournal.readRecord, which checks every frame it reads (a damaged one
 * is journal damage with path and offset, never zeroes). The primary's writes and the secondary's
 * packets both live this way.
 */
import { assert } from '../../core/assert.ts';
import type { JournalPiece } from '../../core/fold.ts';
import type { CycleNumber, Extent } from '../../core/types.ts';
import { uninitialized } from '../../protocol/bytes.ts';
import type { JournalPosition, SegmentJournal } from '../../storage/segment-journal.ts';

/**
 * Where a record lies. One per journaled record, so kept small: the position's fields inline once
 * the record is written (a pending promise and a position object each would cost as much again).
 */
interface RecordPlace {
  cycle: CycleNumber;
  segment: number;
  offset: number;
  sequence: number;
  bytes: number;
  /** Settles once the record is written (in the kernel's hands); null from then on. */
  written: Promise<void> | null;
}

/** A record that carries block data: the cycle it belongs to and its extent. */
export type BlocksOf<R> = (record: R) => { cycle: CycleNumber; extent: Extent } | null;

export class JournalBlocks<R> {
  /** Where each record with block data lies, by the core's append sequence. */
  private readonly places = new Map<number, RecordPlace>();
  /** Reads under way: a release waits for them (see readsSettled). */
  private readonly reading = new Set<Promise<unknown>>();

  constructor(
    private readonly journal: SegmentJournal<R>,
    private readonly blockBytes: number,
    private readonly blocksOf: BlocksOf<R>,
    /**
     * The records' cycles never go down in append order (the primary's writes): a release stops
     * at the first record above it instead of visiting every record kept.
     */
    private readonly cyclesInAppendOrder: boolean,
  ) {}

  /** A record on its way to the journal as append `seq`. */
  onAppended(seq: number, record: R, position: Promise<JournalPosition>): void {
    const blocks = this.blocksOf(record);
    if (blocks === null || blocks.extent.data === null) return;
    const place: RecordPlace = {
      cycle: blocks.cycle,
      segment: 0,
      offset: 0,
      sequence: 0,
      bytes: 0,
      written: null,
    };
    place.written = position.then((at) => {
      place.segment = at.segment;
      place.offset = at.offset;
      place.sequence = at.sequence;
      place.bytes = at.bytes;
      place.written = null;
    });
    // A failed append fails the site (its owner hears of it); a read waiting for it fails with it.
    place.written.catch(() => {});
    this.places.set(seq, place);
  }

  /** A record with block data replay found at `position`, numbered `seq` as the core numbers it. */
  onReplayed(seq: number, cycle: CycleNumber, position: JournalPosition): void {
    this.places.set(seq, { cycle, ...position, written: null });
  }

  /** Cycles up to `upTo` are done with (applied, or collected): their records are never read again. */
  onReleased(upTo: CycleNumber): void {
    for (const [seq, place] of this.places) {
      if (place.cycle <= upTo) this.places.delete(seq);
      else if (this.cyclesInAppendOrder) return;
    }
  }

  /** Records whose place is kept (for the tests of the bound). */
  get size(): number {
    return this.places.size;
  }

  /**
   * The bytes the pieces name, in order. Each record is read once however its pieces interleave
   * with other records' (a fold merging cycles interleaves a large write with the small overwrites
   * inside it), records lying close together in one read (SegmentJournal.readRecords), so the
   * memory is the result plus one such read.
   */
  read(pieces: readonly JournalPiece[]): Promise<Uint8Array> {
    const reading = this.readPieces(pieces);
    this.reading.add(reading);
    const forget = () => this.reading.delete(reading);
    reading.then(forget, forget);
    return reading;
  }

  /**
   * Settles once every read under way now has finished. A core lets go of a cycle's references
   * before its records may go: reads that start later never name them, and those under way finish
   * before the records are released (and their segments deleted), so they never meet a gap.
   */
  async readsSettled(): Promise<void> {
    await Promise.allSettled([...this.reading]);
  }

  private async readPieces(pieces: readonly JournalPiece[]): Promise<Uint8Array> {
    const blocks = pieces.reduce((sum, piece) => sum + piece.blockCount, 0);
    // Not zeroed: the pieces cover every block of it (asserted as each is placed).
    const data = uninitialized(blocks * this.blockBytes);
    // Where each piece goes in the result, by the record it is in (records in order of first use).
    const byRecord = new Map<number, { piece: JournalPiece; at: number }[]>();
    let at = 0;
    for (const piece of pieces) {
      const placed = byRecord.get(piece.seq) ?? [];
      placed.push({ piece, at });
      byRecord.set(piece.seq, placed);
      at += piece.blockCount * this.blockBytes;
    }
    const records = [...byRecord];
    const positions: JournalPosition[] = [];
    for (const [seq] of records) positions.push(await this.positionOf(seq));
    await this.journal.readRecords(positions, (index, record) => {
      const held = this.blocksOf(record)?.extent.data;
      assert(held, 'a reference names a record with block data');
      for (const { piece, at } of (records[index] as (typeof records)[number])[1]) {
        const from = piece.index * this.blockBytes;
        const length = piece.blockCount * this.blockBytes;
        assert(from + length <= held.length, 'a piece lies within its record');
        data.set(held.subarray(from, from + length), at);
      }
    });
    return data;
  }

  /** Where record `seq` lies, once it is written. */
  private async positionOf(seq: number): Promise<JournalPosition> {
    const place = this.places.get(seq);
    if (!place) throw new JournalBlockGone(seq);
    if (place.written) await place.written;
    const { segment, offset, sequence, bytes } = place;
    return { segment, offset, sequence, bytes };
  }
}

/**
 * A reference to a record of a released cycle: a reader that took a cycle's overlay before the
 * cycle was applied (or collected) and released meets it, and reads again (the volume holds the
 * blocks now).
 */
export class JournalBlockGone extends Error {
  constructor(seq: number) {
    super(`append ${seq} belongs to a released cycle`);
    this.name = 'JournalBlockGone';
  }
}
