/** What every fuzz target shares: the failure check, byte mutations, and socket-like chunking. */
import type { Random } from '../../src/sim/random.ts';

/** A broken oracle; anything else thrown by a target is a defect of the code under test. */
export class FuzzFailure extends Error {}

export function check(condition: boolean, message: string): asserts condition {
  if (!condition) throw new FuzzFailure(message);
}
/** A few structural mutations of `bytes`. */
export function mutate(random: Random, bytes: Uint8Array): Uint8Array {
  let out: Uint8Array = bytes.slice();
  const count = 1 + random.int(4);
  for (let i = 0; i < count; i++) {
    const at = out.length === 0 ? 0 : random.int(out.length);
    switch (random.int(6)) {
      case 0:
        if (out.length > 0) out[at] = (out[at] as number) ^ (1 << random.int(8));
        break;
      case 1:
        if (out.length > 0) out[at] = random.int(256);
        break;
      case 2: {
        const inserted = Uint8Array.from({ length: 1 + random.int(16) }, () => random.int(256));
        out = concat([out.subarray(0, at), inserted, out.subarray(at)]);
        break;
      }
      case 3:
        out = concat([out.subarray(0, at), out.subarray(Math.min(out.length, at + 1 + random.int(16)))]);
        break;
      case 4:
        out = out.subarray(0, at);
        break;
      default: {
        // Interesting integers where lengths and counts live.
        if (out.length >= at + 4) {
          const values = [0, 1, 0x7fffffff, 0xffffffff, 0x80000000, 4096, 65535, 65536];
          new DataView(out.buffer, out.byteOffset).setUint32(at, values[random.int(values.length)] as number);
        }
      }
    }
  }
  return out;
}

export function concat(parts: Uint8Array[]): Uint8Array {
  const out = new Uint8Array(parts.reduce((sum, part) => sum + part.length, 0));
  let at = 0;
  for (const part of parts) {
    out.set(part, at);
    at += part.length;
  }
  return out;
}

/** Splits bytes into random chunks, as a socket would deliver them. */
export function chunks(random: Random, bytes: Uint8Array): Uint8Array[] {
  const out: Uint8Array[] = [];
  for (let at = 0; at < bytes.length; ) {
    const size = 1 + random.int(Math.min(bytes.length - at, 300));
    out.push(bytes.subarray(at, at + size));
    at += size;
  }
  return out;
}

/** Shuffles in place, from the case's generator. */
export function shuffle<T>(random: Random, items: T[]): void {
  for (let index = items.length - 1; index > 0; index--) {
    const other = random.int(index + 1);
    [items[index], items[other]] = [items[other] as T, items[index] as T];
  }
}

export function equalBytes(a: Uint8Array, b: Uint8Array): boolean {
  return Buffer.compare(a, b) === 0;
}
