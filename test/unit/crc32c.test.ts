// Proves the CRC32C against published check values (RFC 3720 appendix B.4 vectors) and that
// checksumming in pieces equals checksumming at once, and that the native and JavaScript paths agree.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { crc32c, crc32cImplementation, crc32cJs } from '../../src/protocol/crc32c.ts';

test('crc32c matches the standard check value of "123456789"', () => {
  assert.equal(crc32c(new TextEncoder().encode('123456789')), 0xe3069283);
});

test('crc32c matches the iSCSI vectors of 32 zero bytes, 32 0xff bytes and an ascending run', () => {
  assert.equal(crc32c(new Uint8Array(32)), 0x8a9136aa);
  assert.equal(crc32c(new Uint8Array(32).fill(0xff)), 0x62a8ab43);
  assert.equal(crc32c(Uint8Array.from({ length: 32 }, (_, i) => i)), 0x46dd794e);
});

test('crc32c of the empty input is 0', () => {
  assert.equal(crc32c(new Uint8Array(0)), 0);
});

test('crc32c continued over pieces equals crc32c of the whole, for every split point', () => {
  const bytes = Uint8Array.from({ length: 77 }, (_, i) => (i * 31 + 7) & 0xff);
  const whole = crc32c(bytes);
  for (let cut = 0; cut <= bytes.length; cut++) {
    assert.equal(crc32c(bytes.subarray(cut), crc32c(bytes.subarray(0, cut))), whole, `split at ${cut}`);
  }
});

test('the native path (when loaded) and the JavaScript tables agree on long inputs, in pieces too', () => {
  assert.equal(crc32cImplementation, 'native', 'the prebuilt @node-rs/crc32 binary loads on this machine');
  const bytes = Uint8Array.from({ length: 70_000 }, (_, i) => (i * 2654435761) >>> 24);
  for (const length of [256, 257, 4096, 65_536, 70_000]) {
    const piece = bytes.subarray(3, 3 + length - 3);
    assert.equal(crc32c(piece), crc32cJs(piece), `length ${piece.length}`);
    assert.equal(crc32c(piece, 0x12345678), crc32cJs(piece, 0x12345678), `continued, length ${piece.length}`);
  }
});
