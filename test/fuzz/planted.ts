/**
 * Deliberate defects, planted from the outside by replacing one method of the code under test for
 * the duration of a callback, so the fuzzers and property tests can be shown to catch them (as the
 * simulator's mutants, src/sim/mutants.ts, show its checkers can fail). Shipped code carries no flag
 * for them.
 */
import { ProtocolError } from '../../src/core/errors.ts';
import { limits } from '../../src/core/limits.ts';
import { SecondaryStore } from '../../src/core/secondary-store.ts';
import type { GroupShape } from '../../src/core/types.ts';
import { NbdConnection } from '../../src/nbd/connection.ts';
import { commands } from '../../src/nbd/protocol.ts';
import { ByteReader } from '../../src/protocol/bytes.ts';
import type { DataFrame } from '../../src/protocol/frames.ts';

type Method = (this: never, ...args: never[]) => unknown;

interface Defect {
  /** What the defect breaks, for messages. */
  description: string;
  target: { prototype: object };
  method: string;
  replacement: Method;
}

interface ReaderInternals {
  view: DataView;
  offset: number;
  what: string;
}

interface SecondaryStoreInternals {
  shape: GroupShape;
}

/** The method each planted defect replaced, so a replacement can call the original. */
const plantedOriginals = new Map<string, Method>();

export const plantedDefects = {
  /** ByteReader.need checks nothing: every field read may run past the end of its bytes. */
  'reader-bounds': {
    description: 'ByteReader.need without its bounds check',
    target: ByteReader,
    method: 'need',
    replacement: () => {},
  },
  /** ByteReader.u64 takes any 64-bit value, so numbers above 2^53-1 lose their low bits. */
  'reader-u64-range': {
    description: 'ByteReader.u64 without its 2^53-1 range check',
    target: ByteReader,
    method: 'u64',
    replacement: function (this: ReaderInternals, field: string): number {
      (this as unknown as { need(count: number, field: string): void }).need(8, field);
      const high = this.view.getUint32(this.offset);
      const low = this.view.getUint32(this.offset + 4);
      this.offset += 8;
      return high * 0x1_0000_0000 + low;
    },
  },
  /** The secondary's extent check forgets the block range: an extent may reach past its volume. */
  'secondary-extent-range': {
    description: "the secondary's extent validation without the block-range check",
    target: SecondaryStore,
    method: 'checkExtent',
    replacement: function (this: SecondaryStoreInternals, frame: DataFrame): void {
      const shape = this.shape;
      const payloadBytes = frame.zero ? 0 : frame.blockCount * shape.blockBytes;
      if (
        frame.volume >= shape.volumes.length ||
        frame.blockCount < 1 ||
        frame.payload.length !== payloadBytes ||
        frame.packetIndex >= limits.packetsPerCycleMax
      ) {
        throw new ProtocolError('packet-invalid', `packet ${frame.packetIndex} refused`);
      }
      // Missing here: frame.block + frame.blockCount <= the volume's blocks.
    },
  },
  /** The NBD server forgets to refuse requests past the end of the export. */
  'nbd-range': {
    description: "the NBD connection's request validation without the past-the-end check",
    target: NbdConnection,
    method: 'validate',
    replacement: function (
      this: unknown,
      agreement: { export: { sizeBytes: number } },
      request: { offset: number; length: number },
    ) {
      const original = plantedOriginals.get('nbd-range') as Method;
      // Validate as if the export were endless, so past-the-end requests reach the export.
      const endless = { ...agreement, export: { ...agreement.export, sizeBytes: Number.MAX_SAFE_INTEGER } };
      return (original as (this: unknown, ...args: unknown[]) => unknown).call(this, endless, request);
    },
  },
  /** The NBD connection loses the reply to a FLUSH: its client would wait forever. */
  'nbd-lost-reply': {
    description: 'the NBD connection sends no reply to a FLUSH',
    target: NbdConnection,
    method: 'finish',
    replacement: function (this: { forget(pending: unknown): void }, ...args: unknown[]): unknown {
      const pending = args[1] as { request: { type: number }; serving: boolean };
      if (pending.request.type !== commands.flush) {
        return (plantedOriginals.get('nbd-lost-reply') as (...args: unknown[]) => unknown).apply(this, args);
      }
      // Served and forgotten, but never answered.
      pending.serving = false;
      this.forget(pending);
      return undefined;
    },
  },
} satisfies Record<string, Defect>;

export type PlantedDefect = keyof typeof plantedDefects;

/** Runs `body` with the defect in place, and puts the original method back whatever happens. */
export async function withPlantedDefect<T>(name: PlantedDefect, body: () => T | Promise<T>): Promise<T> {
  const defect: Defect = plantedDefects[name];
  const prototype = defect.target.prototype as Record<string, Method>;
  const original = prototype[defect.method];
  if (typeof original !== 'function')
    throw new Error(`${defect.method} is not a method to plant a defect in`);
  plantedOriginals.set(name, original);
  prototype[defect.method] = defect.replacement as Method;
  try {
    return await body();
  } finally {
    prototype[defect.method] = original;
    plantedOriginals.delete(name);
  }
}
