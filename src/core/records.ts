/**
 * What the state machines ask storage to keep. The adapters decide the byte layout (the daemons'
 * segment files, the simulator's disks); replay hands the surviving records back in order.
 */
import type { CycleNumber, Extent } from './types.ts';

/** Primary journal. */
export type PrimaryRecord =
  /** A write tagged with the cycle it joined. */
  | { kind: 'write'; cycle: CycleNumber; extent: Extent }
  /** Every cycle up to `closed` is closed: its writes are final and may be sent. */
  | { kind: 'switch'; closed: CycleNumber }
  /** Every secondary stored every cycle up to `upTo`; their entries are gone. */
  | { kind: 'collect'; upTo: CycleNumber };

/** Secondary receive journal. */
export type SecondaryRecord =
  /** One received packet of a cycle that is not stored yet. */
  | { kind: 'packet'; cycle: CycleNumber; packetIndex: number; extent: Extent }
  /**
   * Cycle `cycle`, covering coversFrom..cycle, is complete: after a crash it is applied, never
   * dropped. When not `consistent` (a resync), it is applied only with the next consistent cycle.
   */
  | { kind: 'stored'; cycle: CycleNumber; coversFrom: CycleNumber; consistent: boolean }
  /** A failure: packets of every cycle above `stored` are void. */
  | { kind: 'discard'; stored: CycleNumber }
  /**
   * The volumes durably hold the image of `cycle`. Not `consistent` when the cycle was a resync's,
   * applied on its own (`resync.staging: in-place`): the image is then no consistent cut.
   */
  | { kind: 'applied'; cycle: CycleNumber; consistent: boolean };

/**
 * A primary record as replay hands it back: a write's data stays in the journal, since the group's
 * folds keep references to it, not bytes (PrimaryGroup.recover).
 */
export type ReplayedPrimaryRecord =
  | Exclude<PrimaryRecord, { kind: 'write' }>
  | { kind: 'write'; cycle: CycleNumber; extent: Extent | ExtentInJournal };

/** A packet's extent without its bytes: replay may leave them in the journal (they are read back). */
export interface ExtentInJournal {
  volume: number;
  block: number;
  blockCount: number;
  zero: boolean;
}

/** An extent as a fold of references keeps it: where its data is, not the data. */
export function extentInJournal(extent: Extent | ExtentInJournal): ExtentInJournal {
  const { volume, block, blockCount } = extent;
  return { volume, block, blockCount, zero: 'zero' in extent ? extent.zero : extent.data === null };
}

/**
 * A secondary record as replay hands it back: a packet's data may stay in the journal, since the
 * store keeps references to it, not bytes (SecondaryStore.replay).
 */
export type ReplayedSecondaryRecord =
  | Exclude<SecondaryRecord, { kind: 'packet' }>
  | { kind: 'packet'; cycle: CycleNumber; packetIndex: number; extent: Extent | ExtentInJournal };
