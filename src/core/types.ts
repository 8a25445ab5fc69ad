/** The words of DESIGN.md as types. */

/** A group's cycle counter: a safe integer that only grows. Cycle 0 is the empty image before any write. */
export type CycleNumber = number;

export interface VolumeShape {
  name: string;
  sizeBytes: number;
}

/** What both sites of a group must agree on. */
export interface GroupShape {
  group: string;
  blockBytes: number;
  volumes: VolumeShape[];
}

/**
 * A run of whole blocks of one volume. `data` holds blockCount * blockBytes bytes, or is null for
 * a zero run (trim or write-zeroes), which travels and is journaled without payload.
 */
export interface Extent {
  volume: number;
  block: number;
  blockCount: number;
  data: Uint8Array | null;
}

export const ackModes = ['immediate', 'cycle'] as const;
/**
 * immediate: a write is acknowledged once journaled; correct with one sequencer only.
 * cycle: the writes of cycle N are acknowledged when the number becomes N+1 (the seed's way).
 */
export type AckMode = (typeof ackModes)[number];

export const resyncStagings = ['consistent', 'in-place'] as const;
/**
 * How a secondary takes a resync (docs/resync.md). consistent: its cycles are staged in the journal
 * and applied as one unit, so the image moves from one consistent cut straight to the next (the
 * journal's disk must hold the whole resync). in-place: each cycle is applied as it is stored, so no
 * room is needed, and the image is NOT a consistent cut until the resync's consistent cycle is.
 */
export type ResyncStaging = (typeof resyncStagings)[number];

export function volumeBlocks(shape: GroupShape, volume: number): number {
  const found = shape.volumes[volume];
  return found ? Math.floor(found.sizeBytes / shape.blockBytes) : 0;
}

/** A structured log line: an event name and the numbers involved. Adapters render it. */
export interface LogEntry {
  level: 'debug' | 'info' | 'warn' | 'error';
  event: string;
  fields: Record<string, string | number | boolean | null>;
}

/**
 * Where a part of a state machine (a PrimaryLink, the secondary's session or store) puts its
 * actions: the list of the machine it belongs to, so the actions of one event keep one order. The
 * machine's handler returns that list (docs/core.md, "How a machine hands back its actions").
 */
export interface ActionSink<Action> {
  push(action: Action): void;
}
