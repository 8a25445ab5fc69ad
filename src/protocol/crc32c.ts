// biome-ignore-all lint/style/noNonNullAssertion: the hot loop indexes typed arrays inside their bounds; a check per byte would halve the speed
/**
 * CRC32C (Castagnoli, reflected polynomial 0x82F63B78), the checksum of iSCSI, ext4 metadata and
 * most storage wire formats. Long inputs go to @node-rs/crc32 (SSE4.2/ARMv8 instructions, about
 * 6 GB/s here) when its prebuilt binary loads; short ones, and every input on a platform without
 * that binary, to slice-by-8 tables in JavaScript (about 1 GB/s), which also serve as the
 * reference the tests compare the two with.
 */
import { createRequire } from 'node:module';

type NativeCrc32c = (input: Buffer, initial?: number) => number;

/** Below this many bytes the call into native code costs more than the JavaScript loop. */
const nativeBytesMin = 256;

function loadNative(): NativeCrc32c | null {
  if (process.env.CYCLEREP_CRC32C === 'js') return null;
  try {
    return (createRequire(import.meta.url)('@node-rs/crc32') as { crc32c: NativeCrc32c }).crc32c;
  } catch {
    return null;
  }
}

const native = loadNative();

/** Which implementation serves long inputs: for the logs and the benchmarks. */
export const crc32cImplementation = native ? 'native' : 'javascript';
const polynomial = 0x82f63b78;
const tables: Uint32Array[] = buildTables();

function buildTables(): Uint32Array[] {
  const result: Uint32Array[] = [];
  const first = new Uint32Array(256);
  for (let n = 0; n < 256; n++) {
    let c = n;
    for (let k = 0; k < 8; k++) c = c & 1 ? (c >>> 1) ^ polynomial : c >>> 1;
    first[n] = c >>> 0;
  }
  result.push(first);
  for (let t = 1; t < 8; t++) {
    const previous = result[t - 1] as Uint32Array;
    const table = new Uint32Array(256);
    for (let n = 0; n < 256; n++) {
      const p = previous[n] as number;
      table[n] = ((p >>> 8) ^ (first[p & 0xff] as number)) >>> 0;
    }
    result.push(table);
  }
  return result;
}

/** Continues a CRC32C over `bytes`; pass the previous result as `crc` to checksum pieces in turn. */
export function crc32c(bytes: Uint8Array, crc = 0): number {
  if (native && bytes.length >= nativeBytesMin) {
    return native(Buffer.from(bytes.buffer, bytes.byteOffset, bytes.length), crc);
  }
  return crc32cJs(bytes, crc);
}

/** The table-driven CRC32C in JavaScript. */
export function crc32cJs(bytes: Uint8Array, crc = 0): number {
  const [t0, t1, t2, t3, t4, t5, t6, t7] = tables as [
    Uint32Array,
    Uint32Array,
    Uint32Array,
    Uint32Array,
    Uint32Array,
    Uint32Array,
    Uint32Array,
    Uint32Array,
  ];
  let c = ~crc >>> 0;
  let i = 0;
  const length = bytes.length;
  const aligned = length - (length % 8);
  while (i < aligned) {
    const lo = (c ^ (bytes[i]! | (bytes[i + 1]! << 8) | (bytes[i + 2]! << 16) | (bytes[i + 3]! << 24))) >>> 0;
    c =
      t7[lo & 0xff]! ^
      t6[(lo >>> 8) & 0xff]! ^
      t5[(lo >>> 16) & 0xff]! ^
      t4[lo >>> 24]! ^
      t3[bytes[i + 4]!]! ^
      t2[bytes[i + 5]!]! ^
      t1[bytes[i + 6]!]! ^
      t0[bytes[i + 7]!]!;
    i += 8;
  }
  while (i < length) {
    c = t0[(c ^ bytes[i]!) & 0xff]! ^ (c >>> 8);
    i++;
  }
  return ~c >>> 0;
}
