// Proves the CRC32C against published check values (RFC 3720 appendix B.4 vectors) and that
// checksumming in pieces equals checksumming at once.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { crc32c } from '../../src/protocol/crc32c.ts';

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
