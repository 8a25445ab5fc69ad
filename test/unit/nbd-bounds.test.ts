// Proves the NBD server's bounds and strictness without sockets: the budget in requests and bytes
// (first come, first served; a stalled payload or an unread reply gives its bytes back when the
// connection is closed), the handshake, payload and reply timeouts on a virtual clock, unsent
// replies stopping a connection from being read, client flags the spec says to drop the connection
// for, command flags answered with NBD_EINVAL (and logged), the server refusing a client when it
// serves connectionsMax already, and the rate-limited logger.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { AssertionFailure } from '../../src/core/assert.ts';
import type { LogEntry } from '../../src/core/types.ts';
import { type BudgetHold, RequestBudget } from '../../src/nbd/budget.ts';
import { defaultNbdLimits, flagRefusal, type NbdLimits } from '../../src/nbd/connection.ts';
import { commandFlags, commands, nbdErrors, options, replies } from '../../src/nbd/protocol.ts';
import { createLogger, type LogClock, rateLimited } from '../../src/ops/logger.ts';
import { Client, connected, flush, ManualTimers, memoryExport, nameData } from './nbd-client.ts';

const limits = (changes: Partial<NbdLimits>): NbdLimits => ({ ...defaultNbdLimits, ...changes });

// ---- the budget ------------------------------------------------------------------------------

test('RequestBudget refuses nonsense bounds and a request larger than itself', () => {
  assert.throws(() => new RequestBudget(0), RangeError);
  assert.throws(() => new RequestBudget(1, 0), RangeError);
  assert.throws(() => new RequestBudget(4, 1000).reserve(1001, () => {}), AssertionFailure);
});

test('RequestBudget bounds requests and bytes, serves its line in order, and releases once', () => {
  const budget = new RequestBudget(3, 100);
  const granted: string[] = [];
  const holds = new Map<string, BudgetHold>();
  const waiter = (name: string) => (hold: BudgetHold) => {
    granted.push(name);
    holds.set(name, hold);
  };
  const first = budget.reserve(60, waiter('first')) as BudgetHold;
  assert.equal(budget.bytesInFlight, 60);
  assert.equal(budget.reserve(50, waiter('big')), null, 'over the bytes');
  assert.equal(budget.reserve(10, waiter('small')), null, 'fits, but waits behind the big one');
  assert.equal(budget.waiting, 2);
  budget.release(first);
  budget.release(first);
  assert.deepEqual(granted, ['big', 'small'], 'in order, each once');
  assert.equal(budget.bytesInFlight, 60);
  assert.equal(budget.requestsInFlight, 2);
  budget.releaseBytes(holds.get('big') as BudgetHold);
  assert.deepEqual([budget.bytesInFlight, budget.requestsInFlight], [10, 2], 'the slot stays');
  assert.ok(budget.reserve(0, waiter('third')));
  const fourth = waiter('fourth');
  assert.equal(budget.reserve(0, fourth), null, 'over the requests');
  budget.leave(fourth);
  budget.release(holds.get('small') as BudgetHold);
  assert.deepEqual(granted, ['big', 'small'], 'one that left the line is not served');
  assert.equal(budget.waiting, 0);
});

// ---- client flags and command flags ------------------------------------------------------------

test('unknown client flags end the connection, as the spec says the server MUST', () => {
  const client = new Client([memoryExport('data', 65536)]);
  client.take(18);
  client.send(Uint8Array.of(0, 0, 0, 3 | 4));
  assert.match(client.closed ?? '', /unknown client flags 0x4/);
  assert.equal(client.received.length, 0, 'nothing more is said');
  const high = new Client([memoryExport('data', 65536)]);
  high.take(18);
  high.send(Uint8Array.of(0x80, 0, 0, 1));
  assert.match(high.closed ?? '', /unknown client flags 0x80000000/);
});

test('flagRefusal: FUA anywhere, NO_HOLE on WRITE_ZEROES, REQ_ONE on BLOCK_STATUS, nothing else', () => {
  const check = (type: number, flags: number) =>
    flagRefusal({ type, flags, cookie: 0n, offset: 0, length: 0 });
  assert.equal(check(commands.write, commandFlags.fua), null);
  assert.equal(check(commands.read, commandFlags.fua), null);
  assert.equal(check(commands.writeZeroes, commandFlags.noHole | commandFlags.fua), null);
  assert.equal(check(commands.blockStatus, commandFlags.requestOne), null);
  assert.match(check(commands.writeZeroes, commandFlags.fastZero) ?? '', /FAST_ZERO was not offered/);
  assert.match(check(commands.write, commandFlags.fastZero) ?? '', /FAST_ZERO/);
  assert.match(check(commands.read, commandFlags.dontFragment) ?? '', /DF was not offered/);
  assert.match(check(commands.trim, commandFlags.noHole) ?? '', /NO_HOLE is only for WRITE_ZEROES/);
  assert.match(check(commands.read, commandFlags.requestOne) ?? '', /REQ_ONE is only for BLOCK_STATUS/);
  assert.match(check(commands.blockStatus, commandFlags.payloadLength) ?? '', /PAYLOAD_LEN/);
  assert.match(check(commands.flush, 0x80) ?? '', /unknown flag 0x80/);
});

test('a request with a flag not allowed is NBD_EINVAL, logged; a WRITE payload is still drained', async () => {
  const data = memoryExport('data', 1 << 20);
  const client = await connected([data], 'data');
  client.request(commands.write, 1, 0, 4096, new Uint8Array(4096).fill(7), commandFlags.fastZero);
  client.request(commands.writeZeroes, 2, 0, 4096, undefined, commandFlags.fastZero);
  client.request(commands.read, 3, 0, 4096, undefined, commandFlags.dontFragment);
  client.request(commands.flush, 4, 0, 0, undefined, 0x100);
  client.request(commands.writeZeroes, 5, 4096, 4096, undefined, commandFlags.noHole);
  client.request(commands.read, 6, 0, 4096, undefined, commandFlags.fua);
  await flush();
  assert.deepEqual(client.simpleReply().slice(0, 2), [1, nbdErrors.EINVAL]);
  assert.deepEqual(client.simpleReply().slice(0, 2), [2, nbdErrors.EINVAL]);
  assert.deepEqual(client.simpleReply().slice(0, 2), [3, nbdErrors.EINVAL]);
  assert.deepEqual(client.simpleReply().slice(0, 2), [4, nbdErrors.EINVAL]);
  assert.deepEqual(client.simpleReply().slice(0, 2), [5, 0], 'NO_HOLE on WRITE_ZEROES is fine');
  assert.deepEqual(client.simpleReply(4096).slice(0, 2), [6, 0], 'FUA on a READ is fine');
  assert.equal(data.bytes[0], 0, 'the refused write changed nothing');
  assert.equal(client.closed, null);
  const reasons = client.warnings.filter((warning) => warning.event === 'nbd-request-refused');
  assert.equal(reasons.length, 4);
  assert.match(reasons[0]?.reason ?? '', /write: flag FAST_ZERO was not offered/);
  assert.match(reasons[3]?.reason ?? '', /flush: unknown flag 0x100/);
});

// ---- admission and the handshake timeout -------------------------------------------------------

test('a client picking an export while the server is full is refused: GO with ERR_POLICY, EXPORT_NAME closed', () => {
  const full = () => '4 clients already served (nbd.connectionsMax)';
  const go = new Client([memoryExport('data', 65536)], undefined, 'off', undefined, { admit: full });
  go.take(18);
  go.send(Uint8Array.of(0, 0, 0, 3));
  go.option(options.go, nameData('data'));
  const [, type, message] = go.reply();
  assert.equal(type, replies.errorPolicy);
  assert.match(new TextDecoder().decode(message), /connectionsMax/);
  assert.equal(go.closed, null, 'it may still abort politely');
  const named = new Client([memoryExport('data', 65536)], undefined, 'off', undefined, { admit: full });
  named.take(18);
  named.send(Uint8Array.of(0, 0, 0, 3));
  named.option(options.exportName, new TextEncoder().encode('data'));
  assert.match(named.closed ?? '', /connectionsMax/);
});

test('a client that does not finish its handshake within handshakeTimeoutMs is closed; one that does is not', async () => {
  const timers = new ManualTimers();
  const options = { timers, limits: limits({ handshakeTimeoutMs: 500 }) };
  const idle = new Client([memoryExport('data', 65536)], undefined, 'off', undefined, options);
  timers.elapse(499);
  assert.equal(idle.closed, null);
  timers.elapse(1);
  assert.match(idle.closed ?? '', /handshake not finished within 500 ms/);
  assert.equal(idle.warnings[0]?.event, 'nbd-client-timeout');
  const served = await connected([memoryExport('data', 65536)], 'data', undefined, options);
  timers.elapse(10_000);
  assert.equal(served.closed, null);
});

// ---- payloads and replies ----------------------------------------------------------------------

test('a WRITE payload waits for the byte budget before it is read; a stalled one is closed and gives it back', async () => {
  const timers = new ManualTimers();
  const budget = new RequestBudget(16, 64 * 1024);
  const options = { timers, limits: limits({ requestPayloadTimeoutMs: 1000 }) };
  const data = memoryExport('data', 1 << 20);
  const staller = await connected([data], 'data', budget, options);
  const waiter = await connected([data], 'data', budget, options);
  const header = (client: Client, cookie: number, length: number) => {
    client.request(commands.write, cookie, 0, length);
  };
  header(staller, 1, 64 * 1024);
  staller.send(new Uint8Array(60 * 1024));
  assert.equal(budget.bytesInFlight, 64 * 1024, 'the whole payload is reserved');
  header(waiter, 2, 4096);
  waiter.send(new Uint8Array(4096).fill(3));
  assert.ok(waiter.paused, 'no budget: the second connection stops reading');
  assert.equal(budget.waiting, 1);
  timers.elapse(1000);
  assert.match(
    staller.closed ?? '',
    /write payload of 65536 bytes not received within 1000 ms \(61440 received\)/,
  );
  await flush();
  assert.equal(waiter.paused, false, 'the stalled bytes went to the one waiting');
  assert.deepEqual(waiter.simpleReply().slice(0, 2), [2, 0]);
  assert.equal(data.bytes[0], 3);
  await flush();
  assert.deepEqual([budget.bytesInFlight, budget.requestsInFlight], [0, 0]);
});

test('unsent replies: a client that does not read stops being read, and is closed after replyTimeoutMs', async () => {
  const timers = new ManualTimers();
  const budget = new RequestBudget(256, 1 << 30);
  const options = {
    timers,
    limits: limits({ replyBytesQueuedMax: 64 * 1024, replyTimeoutMs: 1000, requestsInFlightMax: 64 }),
  };
  const client = await connected([memoryExport('data', 1 << 20)], 'data', budget, options);
  const reads = (from: number, count: number) => {
    for (let cookie = from; cookie < from + count; cookie++)
      client.request(commands.read, cookie, 0, 16 * 1024);
  };
  client.stalled = true;
  reads(0, 10);
  await flush();
  assert.ok(client.paused, '160 KiB of replies not taken: reading stopped');
  reads(10, 10);
  await flush();
  assert.equal(budget.requestsInFlight, 10, 'no request read past the bound; the others hold theirs');
  assert.equal(budget.bytesInFlight, 10 * 16 * 1024, 'until their replies leave');
  timers.elapse(1000);
  assert.equal(client.closed, null, 'the first check only starts the watch');
  client.unstall();
  await flush();
  await flush();
  assert.equal(client.paused, false, 'replies left: reading goes on');
  assert.equal(client.received.length, 20 * (16 + 16 * 1024), 'all twenty answered');
  assert.equal(budget.requestsInFlight, 0);
  client.stalled = true;
  reads(20, 10);
  await flush();
  timers.elapse(1000);
  timers.elapse(1000);
  assert.match(client.closed ?? '', /bytes of replies not read by the client within 1000 ms/);
  assert.deepEqual([budget.bytesInFlight, budget.requestsInFlight], [0, 0], 'all given back');
});

test('during the handshake, option replies the client does not take stop it from being read', () => {
  const client = new Client([memoryExport('data', 65536)], undefined, 'off', undefined, {
    limits: limits({ handshakeBytesQueuedMax: 1024 }),
  });
  client.stalled = true;
  client.take(18);
  client.send(Uint8Array.of(0, 0, 0, 3));
  for (let count = 0; count < 100; count++) client.option(options.info, nameData('data'));
  assert.ok(client.paused);
  // Each INFO is answered with three replies of 86 bytes in all; reading stops past 1 KiB.
  assert.ok(client.received.length < 1024 + 100, `${client.received.length} bytes of replies`);
});

// ---- the rate-limited logger -------------------------------------------------------------------

test('rateLimited: one line per event per interval, then the count of the ones held back', () => {
  const lines: Record<string, unknown>[] = [];
  const logger = createLogger({ site: 't', format: 'json', write: (line) => lines.push(JSON.parse(line)) });
  let now = 0;
  const due: { at: number; fire: () => void }[] = [];
  const clock: LogClock = { now: () => now, after: (ms, fire) => due.push({ at: now + ms, fire }) };
  const limited = rateLimited(logger, { intervalMs: 1000, clock });
  const advance = (to: number) => {
    now = to;
    for (const timer of due.splice(0)) {
      if (timer.at <= now) timer.fire();
      else due.push(timer);
    }
  };
  for (let count = 0; count < 5; count++) limited.warn('nbd-request-refused', { client: count });
  limited.warn('nbd-client-timeout', { client: 9 });
  assert.deepEqual(
    lines.map((line) => [line.event, line.client]),
    [
      ['nbd-request-refused', 0],
      ['nbd-client-timeout', 9],
    ],
  );
  advance(1000);
  const summary = lines.at(-1) as Record<string, unknown>;
  assert.deepEqual(
    [summary.event, summary.similar, summary.suppressed],
    ['log-suppressed', 'nbd-request-refused', 4],
  );
  assert.equal(summary.level, 'warn');
  limited.warn('nbd-request-refused', { client: 7 });
  assert.equal((lines.at(-1) as LogEntry['fields']).client, 7, 'a new interval logs again');
  assert.equal(lines.length, 4);
});
