/**
 * Big-endian field readers and writers for the wire format. The reader checks every length
 * against what is left and against the named bound before it allocates anything.
 */
import { ProtocolError } from '../core/errors.ts';

const textEncoder = new TextEncoder();
const textDecoder = new TextDecoder('utf-8', { fatal: true, ignoreBOM: true });

/** Largest integer a u64 field may carry: sequence numbers and sizes are JavaScript safe integers. */
const u64HighMax = 0x1fffff;

export class ByteWriter {
  private readonly bytes: Uint8Array;
  private readonly view: DataView;
  private offset: number;

  /** `size` bytes in all, the first `headroom` of them left for the caller (a frame's header). */
  constructor(size: number, headroom = 0) {
    this.bytes = new Uint8Array(size);
    this.view = new DataView(this.bytes.buffer);
    this.offset = headroom;
  }

  u8(value: number): this {
    this.view.setUint8(this.offset, value);
    this.offset += 1;
    return this;
  }

  u16(value: number): this {
    this.view.setUint16(this.offset, value);
    this.offset += 2;
    return this;
  }

  u32(value: number): this {
    this.view.setUint32(this.offset, value);
    this.offset += 4;
    return this;
  }

  u64(value: number): this {
    this.view.setUint32(this.offset, Math.floor(value / 0x1_0000_0000));
    this.view.setUint32(this.offset + 4, value >>> 0);
    this.offset += 8;
    return this;
  }

  raw(value: Uint8Array): this {
    this.bytes.set(value, this.offset);
    this.offset += value.length;
    return this;
  }

  /** A u16 byte length, then UTF-8. */
  string(encoded: Uint8Array): this {
    return this.u16(encoded.length).raw(encoded);
  }

  finish(): Uint8Array {
    if (this.offset !== this.bytes.length) {
      throw new Error(`ByteWriter sized ${this.bytes.length} but wrote ${this.offset}`);
    }
    return this.bytes;
  }
}

/** UTF-8 of a name; a name over its bound is refused (configuration validation should have caught it). */
export function encodeString(value: string, field: string, bytesMax: number): Uint8Array {
  const encoded = textEncoder.encode(value);
  if (encoded.length > bytesMax) {
    throw new ProtocolError(
      'frame-bad-field',
      `${field} "${value}" is ${encoded.length} bytes, at most ${bytesMax}`,
    );
  }
  return encoded;
}

/** UTF-8 of a message for people, cut to `bytesMax` at a character boundary. */
export function encodeTruncated(value: string, bytesMax: number): Uint8Array {
  const encoded = textEncoder.encode(value);
  if (encoded.length <= bytesMax) return encoded;
  let end = bytesMax;
  // Back up over continuation bytes (10xxxxxx) so the cut never splits a character.
  while (end > 0 && ((encoded[end] as number) & 0xc0) === 0x80) end--;
  return encoded.subarray(0, end);
}

export class ByteReader {
  private readonly view: DataView;
  private offset = 0;

  constructor(
    private readonly bytes: Uint8Array,
    private readonly what: string,
  ) {
    this.view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  }

  get remaining(): number {
    return this.bytes.length - this.offset;
  }

  private need(count: number, field: string): void {
    if (count > this.remaining) {
      throw new ProtocolError(
        'frame-truncated',
        `${this.what}: field ${field} needs ${count} bytes, ${this.remaining} left`,
      );
    }
  }

  u8(field: string): number {
    this.need(1, field);
    const value = this.view.getUint8(this.offset);
    this.offset += 1;
    return value;
  }

  u16(field: string): number {
    this.need(2, field);
    const value = this.view.getUint16(this.offset);
    this.offset += 2;
    return value;
  }

  u32(field: string): number {
    this.need(4, field);
    const value = this.view.getUint32(this.offset);
    this.offset += 4;
    return value;
  }

  u64(field: string): number {
    this.need(8, field);
    const high = this.view.getUint32(this.offset);
    const low = this.view.getUint32(this.offset + 4);
    if (high > u64HighMax) {
      throw new ProtocolError('frame-bad-field', `${this.what}: field ${field} exceeds 2^53-1`);
    }
    this.offset += 8;
    return high * 0x1_0000_0000 + low;
  }

  raw(count: number, field: string): Uint8Array {
    this.need(count, field);
    const value = this.bytes.subarray(this.offset, this.offset + count);
    this.offset += count;
    return value;
  }

  string(field: string, bytesMax: number): string {
    const length = this.u16(`${field}.length`);
    if (length > bytesMax) {
      throw new ProtocolError(
        'frame-bad-field',
        `${this.what}: ${field} is ${length} bytes, at most ${bytesMax}`,
      );
    }
    const encoded = this.raw(length, field);
    try {
      return textDecoder.decode(encoded);
    } catch (cause) {
      throw new ProtocolError('frame-bad-field', `${this.what}: ${field} is not UTF-8`, { cause });
    }
  }

  end(): void {
    if (this.remaining !== 0) {
      throw new ProtocolError(
        'frame-trailing-bytes',
        `${this.what}: ${this.remaining} bytes after the last field`,
      );
    }
  }
}

/**
 * `length` bytes not zeroed first (Buffer.allocUnsafe), as a plain Uint8Array: for a buffer every
 * byte of which is written before it is read. Zeroing a large read buffer cost as much as filling it.
 */
export function uninitialized(length: number): Uint8Array {
  const buffer = Buffer.allocUnsafe(length);
  return new Uint8Array(buffer.buffer, buffer.byteOffset, length);
}
