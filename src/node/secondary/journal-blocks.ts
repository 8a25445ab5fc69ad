/**
 * The secondary's block data lives in its receive journal, not in memory: the store's folds keep
 * references (append sequence, block index), and this reads the bytes back. It keeps where each
 * packet's record lies (from its append, or from replay), forgets the records of released cycles,
 * and reads pieces through SegmentJournal.readRecord, which checks every frame it reads (a damaged
 * one is journal damage with path and offset, never zeroes).
 */
import { assert } from '../../core/assert.ts';
import type { JournalPiece } from '../../core/fold.ts';
import type { SecondaryRecord } from '../../core/records.ts';
import type { CycleNumber } from '../../core/types.ts';
import type { JournalPosition, SegmentJournal } from '../../storage/segment-journal.ts';

interface PacketPlace {
  cycle: CycleNumber;
  /** Settles once the record is written (in the kernel's hands); replayed ones are there already. */
  position: Promise<JournalPosition>;
}

export class JournalBlocks {
  /** Where each packet record with data lies, by the store's append sequence. */
  private readonly places = new Map<number, PacketPlace>();

  constructor(
    private readonly journal: SegmentJournal<SecondaryRecord>,
    private readonly blockBytes: number,
  ) {}

  /** A packet record on its way to the journal as append `seq`. */
  onAppended(seq: number, record: SecondaryRecord, position: Promise<JournalPosition>): void {
    if (record.kind !== 'packet' || record.extent.data === null) return;
    this.places.set(seq, { cycle: record.cycle, position });
  }

  /** A packet record replay found at `position`, numbered `seq` as the store numbers it. */
  onReplayed(seq: number, cycle: CycleNumber, position: JournalPosition): void {
    this.places.set(seq, { cycle, position: Promise.resolve(position) });
  }

  /** Cycles up to `upTo` are applied durably: their records are never read again. */
  onReleased(upTo: CycleNumber): void {
    for (const [seq, place] of this.places) if (place.cycle <= upTo) this.places.delete(seq);
  }

  /** Records whose place is kept (for the tests of the bound). */
  get size(): number {
    return this.places.size;
  }

  /**
   * The bytes the pieces name, in order. Adjacent pieces of one record (the common case) read it
   * once; otherwise one record is held at a time, so the memory is the result plus one record.
   */
  async read(pieces: readonly JournalPiece[]): Promise<Uint8Array> {
    const blocks = pieces.reduce((sum, piece) => sum + piece.blockCount, 0);
    const data = new Uint8Array(blocks * this.blockBytes);
    let at = 0;
    let heldSeq = 0;
    let held: Uint8Array = new Uint8Array(0);
    for (const piece of pieces) {
      if (heldSeq !== piece.seq) {
        held = await this.recordData(piece.seq);
        heldSeq = piece.seq;
      }
      const from = piece.index * this.blockBytes;
      const length = piece.blockCount * this.blockBytes;
      assert(from + length <= held.length, 'a piece lies within its record');
      data.set(held.subarray(from, from + length), at);
      at += length;
    }
    return data;
  }

  private async recordData(seq: number): Promise<Uint8Array> {
    const place = this.places.get(seq);
    if (!place) throw new JournalBlockGone(seq);
    const record = await this.journal.readRecord(await place.position);
    assert(record.kind === 'packet' && record.extent.data !== null, 'a reference names a packet with data');
    return record.extent.data;
  }
}

/**
 * A reference to a record of a released cycle: a reader that took a cycle's overlay before the
 * cycle was applied and released meets it, and reads again (the volume holds the blocks now).
 */
export class JournalBlockGone extends Error {
  constructor(seq: number) {
    super(`append ${seq} belongs to a released cycle`);
    this.name = 'JournalBlockGone';
  }
}
