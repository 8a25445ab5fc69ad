// Proves structured replies, metadata contexts and BLOCK_STATUS (base:allocation) without sockets,
// and the bound on requests in flight across connections: what is negotiated and when, what a
// structured READ looks like (data and holes, the last chunk DONE), block status read from the
// content (zero runs are NBD_STATE_ZERO, never a claimed hole), errors as error chunks, and a full
// server that stops reading new requests until one is answered.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { RequestBudget } from '../../src/nbd/budget.ts';
import type { NbdExport } from '../../src/nbd/connection.ts';
import { chunkTypes, commandFlags, commands, nbdErrors, options, replies } from '../../src/nbd/protocol.ts';
import { Client, chunk, connected, flush, memoryExport, metaContextData, nameData } from './nbd-client.ts';

const contextName = (payload: Uint8Array) => new TextDecoder().decode(payload.subarray(4));
const contextId = (payload: Uint8Array) => new DataView(payload.buffer).getUint32(0);

function handshaken(exports: NbdExport[]): Client {
  const client = new Client(exports);
  client.take(18);
  client.send(Uint8Array.of(0, 0, 0, 3));
  return client;
}

/** Structured replies, base:allocation on `name`, then GO. */
async function withBlockStatus(found: NbdExport): Promise<Client> {
  const client = handshaken([found]);
  client.option(options.structuredReply);
  assert.equal(client.reply()[1], replies.ack);
  client.option(options.setMetaContext, metaContextData(found.name, ['base:allocation']));
  const [, type, payload] = client.reply();
  assert.equal(type, replies.metaContext);
  assert.equal(contextName(payload), 'base:allocation');
  assert.equal(client.reply()[1], replies.ack);
  client.option(options.go, nameData(found.name));
  while (client.reply()[1] !== replies.ack) {
    // info replies
  }
  await flush();
  return client;
}

/** Decodes a BLOCK_STATUS payload into [length, flags] pairs. */
function descriptors(payload: Uint8Array): [number, number][] {
  const view = new DataView(payload.buffer);
  const found: [number, number][] = [];
  for (let at = 4; at < payload.length; at += 8) found.push([view.getUint32(at), view.getUint32(at + 4)]);
  return found;
}

test('LIST_META_CONTEXT offers base:allocation for no query, "base:" and the full name; others nothing', () => {
  const client = handshaken([memoryExport('data', 65536)]);
  client.option(options.structuredReply);
  assert.equal(client.reply()[1], replies.ack);
  for (const queries of [[], ['base:'], ['base:allocation'], ['qemu:dirty-bitmap:x', 'base:allocation']]) {
    client.option(options.listMetaContext, metaContextData('data', queries));
    const [, type, payload] = client.reply();
    assert.equal(type, replies.metaContext, JSON.stringify(queries));
    assert.equal(contextName(payload), 'base:allocation');
    assert.equal(contextId(payload), 0, 'LIST replies carry the reserved id 0');
    assert.equal(client.reply()[1], replies.ack);
  }
  client.option(options.listMetaContext, metaContextData('data', ['base:nothing', 'x-other:thing']));
  assert.equal(client.reply()[1], replies.ack, 'no match: ACK alone');
  client.option(options.listMetaContext, metaContextData('data', ['no-colon']));
  assert.equal(client.reply()[1], replies.errorInvalid);
  client.option(options.listMetaContext, metaContextData('nope', []));
  assert.equal(client.reply()[1], replies.errorUnknown);
  client.option(options.listMetaContext, metaContextData('data', ['base:']).subarray(0, 10));
  assert.equal(client.reply()[1], replies.errorInvalid, 'a query longer than the option');
  assert.equal(client.closed, null);
});

test('SET_META_CONTEXT needs structured replies first and selects only base:allocation', () => {
  const client = handshaken([memoryExport('data', 65536)]);
  client.option(options.setMetaContext, metaContextData('data', ['base:allocation']));
  assert.equal(client.reply()[1], replies.errorInvalid);
  client.option(options.structuredReply, Uint8Array.of(1));
  assert.equal(client.reply()[1], replies.errorInvalid, 'STRUCTURED_REPLY with data');
  client.option(options.structuredReply);
  assert.equal(client.reply()[1], replies.ack);
  client.option(options.setMetaContext, metaContextData('data', ['base:', 'x-y:z']));
  assert.equal(client.reply()[1], replies.ack, 'a wildcard selects nothing');
  client.option(options.setMetaContext, metaContextData('data', ['base:allocation']));
  const [, type, payload] = client.reply();
  assert.equal(type, replies.metaContext);
  assert.notEqual(contextId(payload), 0);
  assert.equal(client.reply()[1], replies.ack);
});

test('BLOCK_STATUS reports zero runs as NBD_STATE_ZERO and data as 0, with REQ_ONE one extent', async () => {
  const found = memoryExport('data', 1 << 20);
  found.bytes.fill(7, 8192, 16384);
  const client = await withBlockStatus(found);
  client.request(commands.blockStatus, 1, 0, 65536);
  await flush();
  const [flags, type, cookie, payload] = chunk(client);
  assert.deepEqual([flags & 1, type, cookie], [1, chunkTypes.blockStatus, 1]);
  assert.deepEqual(descriptors(payload), [
    [8192, 2],
    [8192, 0],
    [49152, 2],
  ]);
  client.request(commands.blockStatus, 2, 8192, 65536, undefined, commandFlags.requestOne);
  await flush();
  assert.deepEqual(descriptors(chunk(client)[3]), [[8192, 0]]);
});

test('BLOCK_STATUS after a trim shows the zeroes; a large request is answered for its first part', async () => {
  const found = memoryExport('data', 64 << 20);
  found.bytes.fill(1);
  const client = await withBlockStatus(found);
  client.request(commands.trim, 1, 4096, 8192);
  await flush();
  assert.equal(client.simpleReply()[1], 0);
  client.request(commands.blockStatus, 2, 0, 32 << 20);
  await flush();
  const extents = descriptors(chunk(client)[3]);
  assert.deepEqual(extents.slice(0, 3), [
    [4096, 0],
    [8192, 2],
    [(8 << 20) - 12288, 0],
  ]);
  assert.equal(
    extents.reduce((sum, [length]) => sum + length, 0),
    8 << 20,
    'at most blockStatusBytesMax is looked at',
  );
});

test('BLOCK_STATUS without a negotiated context, past the end or of zero bytes is an error chunk', async () => {
  const plain = await connected([memoryExport('data', 65536)], 'data');
  plain.request(commands.blockStatus, 1, 0, 4096);
  await flush();
  assert.equal(plain.simpleReply()[1], nbdErrors.EINVAL);
  const client = await withBlockStatus(memoryExport('data', 65536));
  client.request(commands.blockStatus, 2, 61440, 8192);
  client.request(commands.blockStatus, 3, 0, 0);
  await flush();
  for (const expected of [2, 3]) {
    const [flags, type, cookie, payload] = chunk(client);
    assert.deepEqual([flags & 1, type, cookie], [1, chunkTypes.error, expected]);
    assert.equal(new DataView(payload.buffer).getUint32(0), nbdErrors.EINVAL);
    assert.ok(new DataView(payload.buffer).getUint16(4) > 0, 'a message for the user');
  }
  assert.equal(client.closed, null);
});

test('context selected for another export than the one entered gives no BLOCK_STATUS', async () => {
  const client = handshaken([memoryExport('a', 65536), memoryExport('b', 65536)]);
  client.option(options.structuredReply);
  client.option(options.setMetaContext, metaContextData('a', ['base:allocation']));
  client.option(options.go, nameData('b'));
  while (client.reply()[1] !== replies.ack || client.received.length > 0) {
    // replies of the three options
  }
  await flush();
  client.request(commands.blockStatus, 1, 0, 4096);
  await flush();
  assert.equal(chunk(client)[1], chunkTypes.error);
});

test('a structured READ sends data chunks and long zero runs as holes, the last chunk DONE', async () => {
  const found = memoryExport('data', 1 << 20);
  found.bytes.fill(5, 0, 4096);
  found.bytes.fill(6, 4096 + 65536, 4096 + 65536 + 4096);
  found.bytes.fill(8, 4096 * 30, 4096 * 31);
  const client = await withBlockStatus(found);
  client.request(commands.read, 9, 0, 256 * 1024);
  await flush();
  const seen: [number, number, number][] = [];
  const image = new Uint8Array(256 * 1024);
  for (;;) {
    const [flags, type, cookie, payload] = chunk(client);
    assert.equal(cookie, 9);
    const view = new DataView(payload.buffer);
    const offset = Number(view.getBigUint64(0));
    if (type === chunkTypes.offsetData) image.set(payload.subarray(8), offset);
    const length = type === chunkTypes.offsetData ? payload.length - 8 : view.getUint32(8);
    seen.push([type, offset, length]);
    if (flags & 1) break;
  }
  assert.deepEqual(Buffer.compare(image, found.bytes.subarray(0, 256 * 1024)), 0, 'same bytes');
  assert.deepEqual(seen, [
    [chunkTypes.offsetData, 0, 4096],
    [chunkTypes.offsetHole, 4096, 65536],
    [chunkTypes.offsetData, 69632, 4096 * 31 - 69632],
    [chunkTypes.offsetHole, 4096 * 31, 256 * 1024 - 4096 * 31],
  ]);
  assert.equal(client.received.length, 0);
});

test('a structured READ past the end is an error chunk; a write is still a simple reply', async () => {
  const client = await withBlockStatus(memoryExport('data', 65536));
  client.request(commands.read, 1, 65536, 4096);
  await flush();
  const [flags, type] = chunk(client);
  assert.deepEqual([flags & 1, type], [1, chunkTypes.error]);
  client.request(commands.write, 2, 0, 4096, new Uint8Array(4096));
  await flush();
  assert.deepEqual(client.simpleReply().slice(0, 2), [2, 0]);
});

test('the server-wide budget: at its bound no connection reads another request until one is answered', async () => {
  const budget = new RequestBudget(2);
  const gates: (() => void)[] = [];
  const slow = memoryExport('data', 65536);
  slow.read = (offset, length) =>
    new Promise((resolve) => gates.push(() => resolve(slow.bytes.slice(offset, offset + length))));
  const first = await connected([slow], 'data', budget);
  const second = await connected([slow], 'data', budget);
  first.request(commands.read, 1, 0, 4096);
  second.request(commands.read, 2, 0, 4096);
  second.request(commands.read, 3, 4096, 4096);
  first.request(commands.read, 4, 8192, 4096);
  await flush();
  assert.equal(gates.length, 2, 'two requests in flight, the bound');
  assert.equal(budget.requestsInFlight, 2);
  assert.ok(second.paused, 'the second connection stopped reading');
  gates.shift()?.();
  await flush();
  assert.equal(first.simpleReply(4096)[0], 1);
  assert.equal(gates.length, 2, 'a freed slot lets one waiting request in');
  while (gates.length > 0) {
    gates.shift()?.();
    await flush();
  }
  await flush();
  assert.equal(budget.requestsInFlight, 0);
  const cookies = [second.simpleReply(4096)[0], second.simpleReply(4096)[0], first.simpleReply(4096)[0]];
  assert.deepEqual(cookies.sort(), [2, 3, 4]);
});

test('STARTTLS: refused when TLS is off, required before anything else when so configured, once only', () => {
  const off = handshaken([memoryExport('data', 65536)]);
  off.option(options.startTls);
  assert.equal(off.reply()[1], replies.errorUnsupported);
  const started: string[] = [];
  const client = new Client([memoryExport('data', 65536)], undefined, 'required', () => started.push('tls'));
  client.take(18);
  client.send(Uint8Array.of(0, 0, 0, 3));
  client.option(options.list);
  assert.equal(client.reply()[1], replies.errorTlsRequired, 'LIST before STARTTLS');
  client.option(options.go, nameData('data'));
  assert.equal(client.reply()[1], replies.errorTlsRequired, 'GO before STARTTLS');
  client.option(options.startTls, Uint8Array.of(1));
  assert.equal(client.reply()[1], replies.errorInvalid, 'STARTTLS with data');
  client.option(options.startTls);
  assert.equal(client.reply()[1], replies.ack);
  assert.deepEqual(started, ['tls']);
  client.connection.onTlsReady();
  client.option(options.startTls);
  assert.equal(client.reply()[1], replies.errorInvalid, 'STARTTLS inside TLS');
  client.option(options.list);
  assert.equal(client.reply()[1], replies.server, 'inside TLS the haggling goes on');
  const named = new Client([memoryExport('data', 65536)], undefined, 'required', () => {});
  named.take(18);
  named.send(Uint8Array.of(0, 0, 0, 3));
  named.option(options.exportName, new TextEncoder().encode('data'));
  assert.match(named.closed ?? '', /EXPORT_NAME before STARTTLS/);
});

test('plain bytes sent after STARTTLS before the TLS handshake end the connection', () => {
  const client = new Client([memoryExport('data', 65536)], undefined, 'optional', () => {});
  client.take(18);
  client.send(Uint8Array.of(0, 0, 0, 3));
  const startTls = new Uint8Array(16);
  new DataView(startTls.buffer).setBigUint64(0, 0x49484156454f5054n);
  new DataView(startTls.buffer).setUint32(8, options.startTls);
  client.send(Uint8Array.from([...startTls, 1, 2, 3]));
  assert.match(client.closed ?? '', /plain bytes after NBD_OPT_STARTTLS/);
});
