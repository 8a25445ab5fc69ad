// Proves that a site started with an environment takes its link, time and randomness from it: a
// primary and a secondary built with nbd and http null and an in-memory network (sockets paired in
// this file) replicate a write through that network and nothing else, their site and generation
// ids are the environment's random bytes, their timers run on the environment's clock, and both
// stop cleanly with no NBD or status server to close. Storage still uses the real file system.
import assert from 'node:assert/strict';
import { EventEmitter } from 'node:events';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, test } from 'node:test';
import type { Clock } from '../../src/io/clock.ts';
import type { SiteEnvironment } from '../../src/io/environment.ts';
import type { DialledSocket, LinkListener, LinkNetwork, LinkSocket } from '../../src/io/network.ts';
import { nodeClock } from '../../src/io/node-clock.ts';
import { nodeFileSystem } from '../../src/io/node-file-system.ts';
import { PrimaryNode } from '../../src/node/primary-node.ts';
import { SecondaryNode } from '../../src/node/secondary-node.ts';
import { type PrimaryFileConfig, type SecondaryFileConfig, validateConfig } from '../../src/ops/config.ts';
import { createLogger } from '../../src/ops/logger.ts';

const directory = mkdtempSync(join(tmpdir(), 'cyclerep-environment-'));
after(() => rmSync(directory, { recursive: true, force: true }));
const quiet = createLogger({ site: 'test', format: 'json', write: () => {} });

/** One end of an in-memory stream: bytes reach the peer a turn later, in order; ending closes both. */
class MemorySocket extends EventEmitter implements LinkSocket {
  peer: MemorySocket | null = null;
  readonly writableNeedDrain = false;
  private closed = false;

  constructor(private readonly carried: { bytes: number }) {
    super();
  }

  write(bytes: Uint8Array): boolean {
    if (this.closed) return false;
    const copy = bytes.slice();
    this.carried.bytes += copy.length;
    setImmediate(() => this.peer?.receive(copy));
    return true;
  }

  private receive(bytes: Uint8Array): void {
    if (!this.closed) this.emit('data', bytes);
  }

  end(): void {
    setImmediate(() => this.destroy());
  }

  destroy(): void {
    if (this.closed) return;
    this.closed = true;
    setImmediate(() => this.emit('close'));
    this.peer?.destroy();
  }

  setNoDelay(): void {}
}

class MemoryNetwork implements LinkNetwork {
  readonly carried = { bytes: 0 };
  readonly dialled: string[] = [];
  private readonly listeners = new Map<string, (socket: LinkSocket, peer: string) => void>();

  dial(address: string): DialledSocket {
    this.dialled.push(address);
    const near = new MemorySocket(this.carried);
    const far = new MemorySocket(this.carried);
    near.peer = far;
    far.peer = near;
    const ready: (() => void)[] = [];
    setImmediate(() => {
      const accept = this.listeners.get(address);
      if (!accept) {
        near.emit('error', new Error(`connect ECONNREFUSED ${address}`));
        near.destroy();
        return;
      }
      accept(far, 'primary');
      for (const listener of ready) listener();
    });
    return { socket: near, onReady: (listener) => ready.push(listener) };
  }

  async listen(address: string, onSocket: (socket: LinkSocket, peer: string) => void): Promise<LinkListener> {
    this.listeners.set(address, onSocket);
    return { close: async () => void this.listeners.delete(address) };
  }
}

/** The process's clock, counting what the sites ask of it. */
function countingClock(counts: Record<keyof Clock, number>): Clock {
  return {
    now: () => {
      counts.now++;
      return nodeClock.now();
    },
    after: (ms, callback, options) => {
      counts.after++;
      return nodeClock.after(ms, callback, options);
    },
    every: (ms, callback) => {
      counts.every++;
      return nodeClock.every(ms, callback);
    },
    soon: (callback) => {
      counts.soon++;
      nodeClock.soon(callback);
    },
  };
}

async function waitFor(condition: () => boolean, what: string): Promise<void> {
  const deadline = Date.now() + 20_000;
  while (!condition()) {
    assert.ok(Date.now() < deadline, `not reached within 20 s: ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 10));
  }
}

test('sites with an environment replicate over its network, with its clock and random bytes, and no services', {
  timeout: 60_000,
}, async (t) => {
  // An address nothing real listens on: only the in-memory network can connect the two.
  const address = '127.0.0.1:9';
  const link = { heartbeatMs: 100, timeoutMs: 400, reconnectMinMs: 50, reconnectMaxMs: 200 };
  const primaryConfig = {
    ...(validateConfig({
      group: 'env',
      role: 'primary',
      dataDir: join(directory, 'primary'),
      volumes: [{ name: 'data', size: '1MiB' }],
      cycle: { intervalMinMs: 50 },
      link,
      secondaries: [{ name: 'dr1', address }],
    }) as PrimaryFileConfig),
    nbd: null,
    http: null,
  } as unknown as PrimaryFileConfig;
  const secondaryConfig = {
    ...(validateConfig({
      group: 'env',
      role: 'secondary',
      name: 'dr1',
      dataDir: join(directory, 'dr1'),
      listen: address,
      link,
    }) as SecondaryFileConfig),
    nbd: null,
    http: null,
  } as unknown as SecondaryFileConfig;
  const network = new MemoryNetwork();
  const counts = { now: 0, after: 0, every: 0, soon: 0 };
  let nextByte = 1;
  const environment: SiteEnvironment = {
    fs: nodeFileSystem,
    clock: countingClock(counts),
    random: Math.random,
    // Each id is one byte value repeated: the n-th id asked for is n, 16 times.
    randomBytes: (count) => new Uint8Array(count).fill(nextByte++),
    network,
  };
  const failures: Error[] = [];
  const secondary = await SecondaryNode.start(secondaryConfig, quiet, (error) => failures.push(error), {
    environment,
  });
  t.after(() => secondary.stop());
  const primary = await PrimaryNode.start(primaryConfig, quiet, (error) => failures.push(error), {
    environment,
  });
  t.after(() => primary.stop());

  assert.equal(secondary.status().site, '01'.repeat(16), "the secondary's id is the first random bytes");
  assert.equal(primary.status().site, '02'.repeat(16), "the primary's site id is the next");
  assert.equal(primary.status().generation, '03'.repeat(16), 'and its generation id the one after');

  const data = new Uint8Array(64 * 1024).map((_, index) => (index * 7) & 0xff);
  await primary.write(0, 4096, data);
  await primary.flush();
  await waitFor(() => primary.status().secondaries[0]?.lagBytes === 0, 'dr1 stored the write');
  await secondary.settle();
  assert.deepEqual(await secondary.read(0, 4096, data.length), data, 'the replica has the write');

  assert.deepEqual([...new Set(network.dialled)], [address], 'the primary dialled through the network');
  assert.ok(network.carried.bytes > data.length, 'the write travelled through the network');
  assert.ok(counts.every >= 2, 'both sites tick on the environment clock');
  assert.ok(counts.now > 0 && counts.soon > 0, 'and read the time and schedule work on it');
  assert.deepEqual(failures, []);

  await primary.stop();
  await secondary.stop();
  assert.equal(primary.fatal, null);
  assert.equal(secondary.fatal, null);
});
