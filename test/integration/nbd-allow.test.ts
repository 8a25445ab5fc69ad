// Proves the NBD allow-list with real sockets on 127.0.0.1: a client whose address is not on the
// list is closed before it hears the greeting (and logged), one on the list is greeted; IPv4
// addresses seen through IPv6 sockets are matched as IPv4.
import assert from 'node:assert/strict';
import { connect, type Server } from 'node:net';
import { test } from 'node:test';
import { allowed, allowListOf, startNbdServer } from '../../src/nbd/server.ts';
import { createLogger } from '../../src/ops/logger.ts';
import { freePort } from './harness.ts';

function greetingOf(port: number): Promise<number> {
  return new Promise((resolve) => {
    let received = 0;
    const socket = connect(port, '127.0.0.1');
    socket.on('data', (chunk: Buffer) => {
      received += chunk.length;
      if (received >= 18) socket.destroy();
    });
    socket.on('error', () => {});
    socket.on('close', () => resolve(received));
  });
}

async function serverAllowing(allow: string[], events: string[]): Promise<{ server: Server; port: number }> {
  const port = await freePort();
  const logger = createLogger({
    site: 'test',
    format: 'json',
    write: (line) => events.push(JSON.parse(line).event as string),
  });
  const server = await startNbdServer({ listen: `127.0.0.1:${port}`, allow }, () => [], logger);
  return { server, port };
}

test('a client not on nbd.allow is closed unheard; one on it is greeted', { timeout: 20_000 }, async () => {
  const events: string[] = [];
  const refusing = await serverAllowing(['127.0.0.2', '10.0.0.0/8'], events);
  assert.equal(await greetingOf(refusing.port), 0, 'no greeting for 127.0.0.1');
  assert.ok(events.includes('nbd-client-refused'));
  refusing.server.close();
  const admitting = await serverAllowing(['127.0.0.0/8'], []);
  assert.equal(await greetingOf(admitting.port), 18, 'the 18-byte greeting');
  admitting.server.close();
});

test('allow-list matching: exact addresses, subnets, IPv4 through IPv6, IPv6', () => {
  const list = allowListOf(['192.0.2.7', '10.1.0.0/16', '2001:db8::/32']);
  assert.ok(allowed(list, '192.0.2.7'));
  assert.ok(!allowed(list, '192.0.2.8'));
  assert.ok(allowed(list, '10.1.200.3'));
  assert.ok(!allowed(list, '10.2.0.1'));
  assert.ok(allowed(list, '::ffff:10.1.0.1'));
  assert.ok(allowed(list, '2001:db8::1'));
  assert.ok(!allowed(list, '2001:db9::1'));
  assert.ok(!allowed(list, undefined));
});
