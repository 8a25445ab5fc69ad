// Proves the NBD server's protocol handling without sockets: the fixed newstyle handshake (GO,
// INFO, LIST, EXPORT_NAME, ABORT, unknown options), then requests served out of order with their
// cookies, out-of-range requests refused alone with the errno the spec names, a
// refused write's payload still consumed, writes refused on a read-only export, and a protocol
// violation ending only that connection.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { defaultNbdLimits } from '../../src/nbd/connection.ts';
import { commands, nbdErrors, optionMagic, options, replies, requestMagic } from '../../src/nbd/protocol.ts';

import { blockBytes, Client, connected, flush, memoryExport, nameData } from './nbd-client.ts';

test('the greeting is NBDMAGIC, IHAVEOPT and the fixed newstyle and no-zeroes flags', () => {
  const client = new Client([]);
  const greeting = client.take(18);
  assert.equal(greeting.getBigUint64(0), 0x4e42444d41474943n);
  assert.equal(greeting.getBigUint64(8), optionMagic);
  assert.equal(greeting.getUint16(16), 3);
});

test('GO answers the export info and block sizes, then ACK, and enters transmission', () => {
  const data = memoryExport('data', 1 << 20);
  const client = new Client([data]);
  client.take(18);
  client.send(Uint8Array.of(0, 0, 0, 3));
  client.option(options.go, nameData('data'));
  const [option, type, payload] = client.reply();
  assert.equal(option, options.go);
  assert.equal(type, replies.info);
  const info = new DataView(payload.buffer);
  assert.equal(info.getUint16(0), 0);
  assert.equal(info.getBigUint64(2), BigInt(1 << 20));
  assert.equal(info.getUint16(10) & 1, 1, 'HAS_FLAGS');
  const [, blockType, blocks] = client.reply();
  assert.equal(blockType, replies.info);
  assert.equal(new DataView(blocks.buffer).getUint32(2), 1, 'minimum block size: any byte offset is served');
  assert.equal(new DataView(blocks.buffer).getUint32(6), blockBytes, 'preferred block size');
  assert.equal(client.reply()[1], replies.ack);
});

test('LIST names every export; unknown options get ERR_UNSUP; unknown exports ERR_UNKNOWN', () => {
  const client = new Client([memoryExport('a', 8192), memoryExport('b', 8192)]);
  client.take(18);
  client.send(Uint8Array.of(0, 0, 0, 1));
  client.option(options.list);
  const names = [client.reply(), client.reply()].map(([, , payload]) =>
    new TextDecoder().decode(payload.subarray(4)),
  );
  assert.deepEqual(names, ['a', 'b']);
  assert.equal(client.reply()[1], replies.ack);
  client.option(options.startTls);
  assert.equal(client.reply()[1], replies.errorUnsupported);
  client.option(99);
  assert.equal(client.reply()[1], replies.errorUnsupported);
  client.option(options.info, nameData('nope'));
  assert.equal(client.reply()[1], replies.errorUnknown);
  client.option(options.abort);
  assert.equal(client.reply()[1], replies.ack);
  assert.match(client.closed ?? '', /aborted/);
});

test('EXPORT_NAME answers size and flags without the 124 zero bytes when NO_ZEROES was agreed', () => {
  const client = new Client([memoryExport('data', 65536, true)]);
  client.take(18);
  client.send(Uint8Array.of(0, 0, 0, 3));
  client.option(options.exportName, new TextEncoder().encode('data'));
  const reply = client.take(10);
  assert.equal(reply.getBigUint64(0), 65536n);
  assert.equal(reply.getUint16(8) & 2, 2, 'READ_ONLY');
  assert.equal(client.received.length, 0);
});

test('writes and reads round-trip; FLUSH and FUA reach the export', async () => {
  const data = memoryExport('data', 1 << 20);
  const client = await connected([data], 'data');
  client.request(commands.write, 7, 8192, 4096, new Uint8Array(4096).fill(9), 1);
  await flush();
  assert.deepEqual(client.simpleReply(), [7, 0, new Uint8Array(0)]);
  client.request(commands.read, 8, 8192, 4096);
  await flush();
  const [cookie, error, bytes] = client.simpleReply(4096);
  assert.deepEqual([cookie, error, bytes[0], bytes[4095]], [8, 0, 9, 9]);
  client.request(commands.flush, 9, 0, 0);
  await flush();
  assert.deepEqual(client.simpleReply(), [9, 0, new Uint8Array(0)]);
  assert.ok(data.flushes >= 1);
});

test('out of range and unknown requests fail alone; a refused write is drained', async () => {
  const data = memoryExport('data', 1 << 20);
  const client = await connected([data], 'data');
  client.request(commands.read, 1, 1 << 20, 4096);
  client.request(commands.write, 3, 1 << 20, 4096, new Uint8Array(4096).fill(1));
  client.request(99, 5, 0, 0);
  client.request(commands.read, 6, 0, 4096);
  await flush();
  assert.deepEqual(client.simpleReply()[1], nbdErrors.EINVAL, 'read past the end');
  assert.deepEqual(client.simpleReply()[1], nbdErrors.ENOSPC, 'write past the end');
  assert.deepEqual(client.simpleReply()[1], nbdErrors.EINVAL, 'unknown command');
  assert.deepEqual(client.simpleReply(4096).slice(0, 2), [6, 0], 'the stream stayed in step');
  assert.equal(client.closed, null);
});

test('a read-only export refuses writes and trims with EPERM', async () => {
  const client = await connected([memoryExport('ro', 65536, true)], 'ro');
  client.request(commands.write, 1, 0, 4096, new Uint8Array(4096));
  client.request(commands.trim, 2, 0, 4096);
  await flush();
  assert.equal(client.simpleReply()[1], nbdErrors.EPERM);
  assert.equal(client.simpleReply()[1], nbdErrors.EPERM);
});

test('a bad request magic, an oversized option or an oversized write ends the connection', async () => {
  const bad = await connected([memoryExport('data', 65536)], 'data');
  bad.send(new Uint8Array(28).fill(0x41));
  assert.match(bad.closed ?? '', /bad request magic/);
  const big = new Client([]);
  big.take(18);
  big.send(Uint8Array.of(0, 0, 0, 1));
  big.option(options.go, new Uint8Array(defaultNbdLimits.optionBytesMax + 1));
  assert.match(big.closed ?? '', /at most 4096/);
  const huge = await connected([memoryExport('data', 65536)], 'data');
  huge.request(commands.write, 1, 0, defaultNbdLimits.requestBytesMax + 4096);
  assert.match(huge.closed ?? '', /write of/);
});

test('replies leave out of order, each with its own cookie', async () => {
  let release: () => void = () => {};
  const slow = memoryExport('data', 65536);
  const gate = new Promise<void>((resolve) => {
    release = resolve;
  });
  const original = slow.read;
  slow.read = async (offset, length) => {
    if (offset === 0) await gate;
    return original(offset, length);
  };
  const client = await connected([slow], 'data');
  client.request(commands.read, 1, 0, 4096);
  client.request(commands.read, 2, 4096, 4096);
  await flush();
  assert.equal(client.simpleReply(4096)[0], 2, 'the fast read answers first');
  release();
  await flush();
  await flush();
  assert.equal(client.simpleReply(4096)[0], 1);
});

test('property: random and mutated handshake and request bytes never throw, and a bad stream only closes', async () => {
  const fc = (await import('fast-check')).default;
  const valid = (() => {
    const parts: number[] = [0, 0, 0, 3];
    const option = new Uint8Array(16 + 10);
    const view = new DataView(option.buffer);
    view.setBigUint64(0, optionMagic);
    view.setUint32(8, options.go);
    view.setUint32(12, 10);
    view.setUint32(16, 4);
    option.set(new TextEncoder().encode('data'), 20);
    parts.push(...option);
    const request = new Uint8Array(28);
    const requestView = new DataView(request.buffer);
    requestView.setUint32(0, requestMagic);
    requestView.setUint16(6, commands.read);
    requestView.setUint32(24, 4096);
    parts.push(...request);
    return Uint8Array.from(parts);
  })();
  await fc.assert(
    fc.asyncProperty(
      fc.oneof(
        fc.uint8Array({ maxLength: 200 }),
        fc
          .array(fc.record({ at: fc.nat(valid.length - 1), mask: fc.integer({ min: 1, max: 255 }) }), {
            minLength: 1,
            maxLength: 4,
          })
          .map((flips) => {
            const mutated = valid.slice();
            for (const { at, mask } of flips) mutated[at] = (mutated[at] as number) ^ mask;
            return mutated;
          }),
      ),
      fc.integer({ min: 1, max: 40 }),
      async (bytes, chunk) => {
        const client = new Client([memoryExport('data', 1 << 20)]);
        for (let at = 0; at < bytes.length; at += chunk) client.send(bytes.subarray(at, at + chunk));
        await flush();
      },
    ),
    { numRuns: 1500 },
  );
});
