// Proves, against a real primary process and raw sockets on 127.0.0.1, that no client can hold
// the NBD front door or the status listener, or the primary's memory, beyond the configured bounds:
// idle sockets take handshake slots (apart from served clients) and are closed after
// handshakeTimeoutMs, so a real client (qemu-io) gets in; idle sockets on the status port are
// closed after http.requestTimeoutMs; WRITEs stalled mid-payload wait for the byte budget and are
// closed after requestPayloadTimeoutMs, with the primary's resident memory (VmRSS) bounded
// throughout; a client pipelining READs without reading the replies stops being read and is closed
// after replyTimeoutMs, memory bounded; unknown client flags close the connection, and request
// flags nobody offered are answered NBD_EINVAL while the connection goes on. Small bounds and
// timeouts in the configs keep each test short and its numbers decisive.
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { connect, type Socket } from 'node:net';
import { afterEach, test } from 'node:test';
import { commandFlags, commands, nbdErrors, replies } from '../../src/nbd/protocol.ts';
import { startNbdServer } from '../../src/nbd/server.ts';
import { createLogger } from '../../src/ops/logger.ts';
import { memoryExport } from '../unit/nbd-client.ts';
import { freePort, type Site, sleep, status, Workspace } from './harness.ts';
import { RawNbdClient, requestHeader } from './nbd-raw-client.ts';

const mebibyte = 1024 * 1024;
let workspace: Workspace;

afterEach(async () => {
  await workspace?.cleanup();
});

/** A primary whose secondary never answers (replication is not what these tests look at). */
async function startPrimary(options: {
  nbd: string;
  http?: string;
  volumes?: number[];
}): Promise<{ site: Site; nbdPort: number; httpPort: number }> {
  workspace = new Workspace();
  const nbdPort = await freePort();
  const config = await workspace.primaryConfig({
    secondaries: [{ name: 'dr1', port: await freePort() }],
    volumes: options.volumes,
    http: options.http,
    extra: `nbd: { listen: 127.0.0.1:${nbdPort}, ${options.nbd} }`,
  });
  const site = workspace.startPrimary(config.path);
  await site.waitForEvent('nbd-listening');
  return { site, nbdPort, httpPort: config.httpPort };
}

function residentBytes(site: Site): number {
  const text = readFileSync(`/proc/${site.process.pid}/status`, 'utf8');
  const match = /VmRSS:\s+(\d+) kB/.exec(text);
  assert.ok(match, 'VmRSS in /proc/PID/status');
  return Number(match[1]) * 1024;
}

/** Samples the primary's resident memory until `done` holds (bounded), failing at once past `limit`. */
async function watchMemory(
  site: Site,
  limitBytes: number,
  done: () => boolean,
  timeoutMs: number,
): Promise<number> {
  const deadline = Date.now() + timeoutMs;
  let peak = 0;
  while (!done()) {
    peak = Math.max(peak, residentBytes(site));
    assert.ok(
      peak < limitBytes,
      `resident memory ${mib(peak)} MiB crossed the bound of ${mib(limitBytes)} MiB`,
    );
    assert.ok(Date.now() < deadline, `not done within ${timeoutMs} ms (peak ${mib(peak)} MiB)`);
    await sleep(50);
  }
  return peak;
}

const mib = (bytes: number): number => Math.round(bytes / mebibyte);

/** A real client: qemu-io writes a pattern and reads it back through the primary. */
function qemuWriteAndRead(nbdPort: number, pattern: number, at: string, length: string): void {
  const result = spawnSync(
    'qemu-io',
    [
      '-f',
      'raw',
      `nbd://127.0.0.1:${nbdPort}/vol0`,
      '-c',
      `write -P ${pattern} ${at} ${length}`,
      '-c',
      `read -P ${pattern} ${at} ${length}`,
    ],
    { encoding: 'utf8', timeout: 60_000 },
  );
  const output = `${result.stdout}${result.stderr}`;
  assert.equal(result.status, 0, output);
  assert.doesNotMatch(output, /failed|error/i);
}

/** Sockets that connect and say nothing; resolves once each has been greeted (so it is counted). */
async function idleSockets(port: number, count: number, greeting: boolean): Promise<Socket[]> {
  return Promise.all(
    Array.from(
      { length: count },
      () =>
        new Promise<Socket>((resolve, reject) => {
          const socket = connect(port, '127.0.0.1');
          socket.on('error', () => {});
          socket.once('connect', () => {
            if (!greeting) resolve(socket);
          });
          socket.once('data', () => resolve(socket));
          socket.once('close', () => reject(new Error('closed before it was greeted')));
        }),
    ),
  );
}

async function allClosed(sockets: Socket[], timeoutMs: number): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (sockets.some((socket) => !socket.closed)) {
    const open = sockets.filter((socket) => !socket.closed).length;
    assert.ok(Date.now() < deadline, `${open} of ${sockets.length} idle sockets still open`);
    await sleep(25);
  }
}

test('idle NBD sockets neither keep a real client out nor stall /status; they are closed after handshakeTimeoutMs', {
  timeout: 90_000,
}, async () => {
  const { site, nbdPort, httpPort } = await startPrimary({
    nbd: 'connectionsMax: 4, handshakesMax: 8, handshakeTimeoutMs: 2000',
  });
  // As many idle sockets as clients may be served: they hold handshake slots, not those.
  const idlers = await idleSockets(nbdPort, 4, true);
  assert.equal((await status(httpPort)).role, 'primary', '/status answers meanwhile');
  qemuWriteAndRead(nbdPort, 0x5a, '0', '64k');
  await allClosed(idlers, 20_000);
  const timeout = await site.waitForEvent('nbd-client-timeout');
  assert.match(String(timeout.reason), /handshake not finished within 2000 ms/);
  // Every handshake slot taken: the next client gets in once the idle ones are timed out.
  const crowd = await idleSockets(nbdPort, 8, true);
  await allClosed(crowd, 20_000);
  qemuWriteAndRead(nbdPort, 0x6b, '64k', '64k');
});

test('at handshakesMax the next socket is closed unheard; at connectionsMax the next GO is refused with the reason', {
  timeout: 30_000,
}, async () => {
  const port = await freePort();
  const events: string[] = [];
  const logger = createLogger({
    site: 'test',
    format: 'json',
    write: (line) => events.push(JSON.parse(line).event as string),
  });
  const server = await startNbdServer(
    { listen: `127.0.0.1:${port}`, handshakesMax: 2, connectionsMax: 1, handshakeTimeoutMs: 60_000 },
    () => [memoryExport('data', 1 << 20)],
    logger,
  );
  try {
    const idlers = await idleSockets(port, 2, true);
    const third = await RawNbdClient.open(port);
    assert.ok(await third.closedWithin(15_000), 'a third socket in the handshake is closed');
    assert.ok(events.includes('nbd-connection-refused'));
    idlers[0]?.destroy();
    // The slot is free once the server has seen the close.
    let served: RawNbdClient | null = null;
    for (let attempt = 0; !served; attempt++) {
      assert.ok(attempt < 200, 'a handshake slot came free');
      const client = await RawNbdClient.open(port);
      try {
        await client.handshake('data');
        served = client;
      } catch {
        client.destroy();
        await sleep(50);
      }
    }
    const second = await RawNbdClient.open(port);
    await second.greet();
    const refusal = await second.go('data');
    assert.equal(refusal.type, replies.errorPolicy);
    assert.match(refusal.message, /1 clients already served \(nbd\.connectionsMax\)/);
    served.request(commands.read, 1, 0, 4096);
    assert.deepEqual(await served.simpleReply(4096), [1, 0], 'the served client is undisturbed');
    for (const client of [served, second]) client.destroy();
    for (const idler of idlers) idler.destroy();
  } finally {
    server.close();
  }
});

test('idle sockets on the status port are closed after http.requestTimeoutMs, and /status answers again', {
  timeout: 60_000,
}, async () => {
  const { httpPort } = await startPrimary({
    nbd: 'connectionsMax: 4',
    http: 'connectionsMax: 4, requestTimeoutMs: 500',
  });
  const idlers = await idleSockets(httpPort, 4, false);
  await allClosed(idlers, 15_000);
  assert.equal((await status(httpPort)).role, 'primary');
});

test('WRITEs stalled mid-payload keep the primary within its byte budget, and are closed after requestPayloadTimeoutMs', {
  timeout: 120_000,
}, async () => {
  const { site, nbdPort } = await startPrimary({
    volumes: [64 * mebibyte],
    nbd: 'connectionsMax: 64, handshakesMax: 64, requestBytesInFlightMax: 48MiB, requestPayloadTimeoutMs: 3000',
  });
  const baseline = residentBytes(site);
  const clients = await Promise.all(Array.from({ length: 16 }, () => RawNbdClient.open(nbdPort)));
  await Promise.all(clients.map((client) => client.handshake('vol0')));
  // Each announces 24 MiB and sends 23 of them, then stalls: 368 MiB if the payloads were read;
  // the budget lets two in at a time.
  const partial = Buffer.alloc(23 * mebibyte, 0x33);
  for (const [index, client] of clients.entries()) {
    client.write(requestHeader(commands.write, index, 0, 24 * mebibyte));
    client.write(partial);
  }
  const peak = await watchMemory(
    site,
    baseline + 200 * mebibyte,
    () => clients.every((client) => client.isClosed),
    90_000,
  );
  assert.match(
    String((await site.waitForEvent('nbd-client-timeout')).reason),
    /write payload of 25165824 bytes not received within 3000 ms/,
  );
  // The budget came back: a write of a third of it goes through (it would wait forever otherwise).
  qemuWriteAndRead(nbdPort, 0x44, '0', '16M');
  console.log(`stalled writes: baseline ${mib(baseline)} MiB, peak ${mib(peak)} MiB`);
});

test('a client pipelining READs that never reads the replies is not read further, and is closed after replyTimeoutMs', {
  timeout: 90_000,
}, async () => {
  const { site, nbdPort } = await startPrimary({
    nbd: 'requestsPerConnectionMax: 16, replyBytesQueuedMax: 8MiB, replyTimeoutMs: 1000',
  });
  const baseline = residentBytes(site);
  const client = await RawNbdClient.open(nbdPort);
  await client.handshake('vol0');
  client.socket.pause();
  // 1000 READs of 1 MiB: a gigabyte of replies if they were all made.
  const requests = Buffer.concat(
    Array.from({ length: 1000 }, (_, index) =>
      requestHeader(commands.read, index, (index % 8) * mebibyte, mebibyte),
    ),
  );
  client.write(requests);
  // The client reads nothing, so it learns of the close only from the log, or once it reads again.
  const closedByServer = () => site.events('nbd-client-closed').length > 0;
  const peak = await watchMemory(site, baseline + 256 * mebibyte, closedByServer, 60_000);
  const timeout = await site.waitForEvent('nbd-client-timeout');
  assert.match(String(timeout.reason), /bytes of replies not read by the client within 1000 ms/);
  client.socket.resume();
  assert.ok(await client.closedWithin(15_000), 'the socket ends once the client reads');
  qemuWriteAndRead(nbdPort, 0x21, '0', '1M');
  console.log(`unread replies: baseline ${mib(baseline)} MiB, peak ${mib(peak)} MiB`);
});

test('unknown client flags close the connection; request flags nobody offered are NBD_EINVAL', {
  timeout: 60_000,
}, async () => {
  const { site, nbdPort } = await startPrimary({ nbd: 'connectionsMax: 4' });
  const unknown = await RawNbdClient.open(nbdPort);
  await unknown.greet(0x3 | 0x10);
  assert.ok(await unknown.closedWithin(15_000), 'dropped, as the spec says the server MUST');
  const client = await RawNbdClient.open(nbdPort);
  await client.handshake('vol0');
  client.write(requestHeader(commands.write, 1, 0, 4096, commandFlags.fastZero));
  client.write(Buffer.alloc(4096, 0x77));
  client.request(commands.writeZeroes, 2, 0, 4096, commandFlags.fastZero);
  client.request(commands.read, 3, 0, 4096, commandFlags.dontFragment);
  client.request(commands.flush, 4, 0, 0, 0x200);
  client.request(commands.read, 5, 0, 4096);
  assert.deepEqual(await client.simpleReply(), [1, nbdErrors.EINVAL], 'WRITE with FAST_ZERO');
  assert.deepEqual(await client.simpleReply(), [2, nbdErrors.EINVAL], 'WRITE_ZEROES with FAST_ZERO');
  assert.deepEqual(await client.simpleReply(), [3, nbdErrors.EINVAL], 'READ with DF');
  assert.deepEqual(await client.simpleReply(), [4, nbdErrors.EINVAL], 'an unknown flag');
  assert.deepEqual(await client.simpleReply(4096), [5, 0], 'the connection goes on, in step');
  const refused = await site.waitForEvent('nbd-request-refused');
  assert.match(String(refused.reason), /FAST_ZERO was not offered/);
  client.destroy();
});
