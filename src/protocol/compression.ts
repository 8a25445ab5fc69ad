/**
 * Link compression (wire v6, per-secondary `compression` on the primary): the payload of a DATA or
 * data-batch frame, compressed with Brotli at quality 1 from node:zlib (measured against Deflate
 * level 1 and LZ4 in docs/wire.md: Brotli 1 compresses 4 KiB blocks half random half zero at about
 * 330 MiB/s a core to half their size, and text to a sixth; no dependency). The frame's CRC covers
 * the compressed bytes; the packets inside keep their digests, checked once decompressed.
 *
 * Bounds: the receiver decompresses at most the length the frame declares (itself at most
 * compressedInnerBytesMax), refuses a result of another length and bytes after the end of the
 * compressed stream (one encoding per frame), so a small frame cannot expand into unbounded memory
 * or carry bytes nobody reads. FrameDecoder bounds what one read may expand to in all.
 */
import { type BrotliOptions, brotliCompressSync, brotliDecompressSync, constants } from 'node:zlib';
import { ProtocolError } from '../core/errors.ts';
import { limits } from '../core/limits.ts';

export const compressionCodecs = ['brotli'] as const;
export type CompressionCodec = (typeof compressionCodecs)[number];

/** Wire codes of the codecs. */
export const compressionCodecCodes: Record<CompressionCodec, number> = { brotli: 1 };

/** Payloads shorter than this go as they are: a zero extent or a lone small packet never gains enough. */
export const compressionBytesMin = 512;

export function codecOfCode(code: number): CompressionCodec {
  const codec = compressionCodecs.find((each) => compressionCodecCodes[each] === code);
  if (!codec) throw new ProtocolError('frame-bad-field', `compressed: unknown codec ${code}`);
  return codec;
}

/** `payload` compressed with `codec`. */
export function compress(codec: CompressionCodec, payload: Uint8Array): Uint8Array {
  switch (codec) {
    case 'brotli':
      return brotliCompressSync(payload, {
        params: {
          [constants.BROTLI_PARAM_QUALITY]: 1,
          [constants.BROTLI_PARAM_SIZE_HINT]: payload.length,
        },
      });
  }
}

/** Checks a declared inner length before anything is decompressed for it. */
export function checkDeclaredBytes(payloadBytes: number): void {
  if (payloadBytes < 1 || payloadBytes > limits.compressedInnerBytesMax)
    throw new ProtocolError(
      'frame-bad-field',
      `compressed: ${payloadBytes} bytes declared, 1 to ${limits.compressedInnerBytesMax}`,
    );
}

/** The `payloadBytes` bytes that all of `bytes` decompress to, or a ProtocolError: never more. */
export function decompress(codec: CompressionCodec, bytes: Uint8Array, payloadBytes: number): Uint8Array {
  checkDeclaredBytes(payloadBytes);
  let result: { buffer: Buffer; engine: { bytesWritten: number } };
  try {
    switch (codec) {
      case 'brotli':
        // One chunk of the declared size: no join of 16 KiB pieces, no slack held by a small payload.
        // `info` (node:zlib documents it for the Sync calls; @types/node leaves it out) adds the
        // engine, whose bytesWritten is the input it consumed: bytes after the stream show there.
        result = brotliDecompressSync(bytes, {
          maxOutputLength: payloadBytes,
          chunkSize: Math.max(64, payloadBytes),
          info: true,
        } as BrotliOptions) as unknown as { buffer: Buffer; engine: { bytesWritten: number } };
    }
  } catch (error) {
    throw refusalOf(error, codec, bytes.length, payloadBytes);
  }
  const { buffer, engine } = result;
  if (buffer.length !== payloadBytes)
    throw new ProtocolError(
      'frame-bad-field',
      `compressed: decompressed to ${buffer.length} bytes, the frame declares ${payloadBytes}`,
    );
  if (engine.bytesWritten !== bytes.length)
    throw new ProtocolError(
      'frame-bad-field',
      `compressed: ${bytes.length - engine.bytesWritten} bytes after the end of the ${codec} stream`,
    );
  // A plain view, as every other frame's payload is: the decoder's callers get one kind of array.
  return new Uint8Array(buffer.buffer, buffer.byteOffset, buffer.byteLength);
}

/**
 * zlib's refusals of the peer's bytes as a ProtocolError; anything else (an allocation failure, a
 * defect) escapes as it is, never passed off as bad input.
 */
function refusalOf(error: unknown, codec: CompressionCodec, length: number, payloadBytes: number): unknown {
  const code = (error as { code?: unknown }).code;
  if (typeof code !== 'string') return error;
  if (code === 'ERR_BUFFER_TOO_LARGE')
    return new ProtocolError(
      'frame-bad-field',
      `compressed: ${length} bytes of ${codec} expand past the ${payloadBytes} bytes declared`,
    );
  if (code.startsWith('Z_') || code.startsWith('ERR__ERROR'))
    return new ProtocolError(
      'frame-bad-field',
      `compressed: ${length} bytes are not a whole ${codec} stream (${code}: ${(error as Error).message})`,
      { cause: error },
    );
  return error;
}
