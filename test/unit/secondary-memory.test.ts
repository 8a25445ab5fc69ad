// Proves the secondary's memory budget at its bound: with its journal's disk slowed down (every
// segment write waits 15 ms) and `memory.dataBytesMax` at its 1 MiB minimum, a primary writing 24 MiB
// as fast as it can never makes the secondary hold more than the budget plus one packet of received
// data waiting for the journal: past the budget it stops reading its link (the bytes wait in the
// socket, then at the primary). The same run without the hold holds many MiB (checked below by
// lifting the budget), so the bound is the hold's doing; the replica still converges byte for byte.
import assert from 'node:assert/strict';
import { EventEmitter } from 'node:events';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, test } from 'node:test';
import { limits } from '../../src/core/limits.ts';
import type { SiteEnvironment } from '../../src/io/environment.ts';
import type { FileSystem } from '../../src/io/file-system.ts';
import type { DialledSocket, LinkListener, LinkNetwork, LinkSocket } from '../../src/io/network.ts';
import { nodeClock } from '../../src/io/node-clock.ts';
import { nodeFileSystem } from '../../src/io/node-file-system.ts';
import { PrimaryNode } from '../../src/node/primary-node.ts';
import { SecondaryNode } from '../../src/node/secondary-node.ts';
import { type PrimaryFileConfig, type SecondaryFileConfig, validateConfig } from '../../src/ops/config.ts';
import { createLogger } from '../../src/ops/logger.ts';

const directory = mkdtempSync(join(tmpdir(), 'cyclerep-memory-'));
after(() => rmSync(directory, { recursive: true, force: true }));
const quiet = createLogger({ site: 'test', format: 'json', write: () => {} });
const mib = 1024 * 1024;

/** One end of an in-memory stream that can be paused: bytes then wait here, as in a kernel buffer. */
class PausableSocket extends EventEmitter implements LinkSocket {
  peer: PausableSocket | null = null;
  readonly writableNeedDrain = false;
  private closed = false;
  private paused = false;
  private readonly waiting: Uint8Array[] = [];

  write(bytes: Uint8Array): boolean {
    if (this.closed) return false;
    const copy = bytes.slice();
    setImmediate(() => this.peer?.receive(copy));
    return true;
  }

  private receive(bytes: Uint8Array): void {
    if (this.closed) return;
    if (this.paused) this.waiting.push(bytes);
    else this.emit('data', bytes);
  }

  pause(): void {
    this.paused = true;
  }

  resume(): void {
    this.paused = false;
    while (!this.paused && this.waiting.length > 0) this.emit('data', this.waiting.shift() as Uint8Array);
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

class PausableNetwork implements LinkNetwork {
  private readonly listeners = new Map<string, (socket: LinkSocket, peer: string) => void>();

  dial(address: string): DialledSocket {
    const near = new PausableSocket();
    const far = new PausableSocket();
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

/** The real file system, with every write to a journal segment 15 ms slow: a disk behind the link. */
const slowJournalDisk: FileSystem = {
  ...nodeFileSystem,
  write: async (fd, data, offset, length, position) => {
    await new Promise((resolve) => setTimeout(resolve, 15));
    return nodeFileSystem.write(fd, data, offset, length, position);
  },
  writev: async (fd, pieces, position) => {
    await new Promise((resolve) => setTimeout(resolve, 15));
    return nodeFileSystem.writev(fd, pieces, position);
  },
};

async function waitFor(condition: () => boolean, what: string): Promise<void> {
  const deadline = Date.now() + 60_000;
  while (!condition()) {
    assert.ok(Date.now() < deadline, `not reached within 60 s: ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 10));
  }
}

/** Writes 24 MiB at the primary and returns the secondary's peak of data held in memory. */
async function peakWithBudget(name: string, port: number, dataBytesMax: number): Promise<number> {
  // An address nothing real listens on: only the in-memory network connects the two.
  const address = `127.0.0.1:${port}`;
  const link = { heartbeatMs: 200, timeoutMs: 5000, reconnectMinMs: 50, reconnectMaxMs: 200 };
  const primaryConfig = {
    ...(validateConfig({
      group: 'memory',
      role: 'primary',
      dataDir: join(directory, name, 'primary'),
      volumes: [{ name: 'data', size: '32MiB' }],
      cycle: { intervalMinMs: 20, queuedMax: 64 },
      link,
      secondaries: [{ name: 'dr1', address }],
    }) as PrimaryFileConfig),
    nbd: null,
    http: null,
  } as unknown as PrimaryFileConfig;
  const secondaryConfig = {
    ...(validateConfig({
      group: 'memory',
      role: 'secondary',
      name: 'dr1',
      dataDir: join(directory, name, 'dr1'),
      listen: address,
      link,
    }) as SecondaryFileConfig),
    memory: { dataBytesMax },
    nbd: null,
    http: null,
  } as unknown as SecondaryFileConfig;
  const network = new PausableNetwork();
  const environment = (fs: FileSystem): SiteEnvironment => ({
    fs,
    clock: nodeClock,
    random: Math.random,
    randomBytes: (count) => new Uint8Array(count).map(() => Math.floor(Math.random() * 256)),
    network,
  });
  const failures: Error[] = [];
  const secondary = await SecondaryNode.start(secondaryConfig, quiet, (error) => failures.push(error), {
    environment: environment(slowJournalDisk),
  });
  const primary = await PrimaryNode.start(primaryConfig, quiet, (error) => failures.push(error), {
    environment: environment(nodeFileSystem),
  });
  try {
    const written: Uint8Array[] = [];
    for (let i = 0; i < 24; i++) {
      const data = new Uint8Array(mib).fill(i + 1);
      written.push(data);
      await primary.write(0, i * mib, data);
    }
    await primary.flush();
    await waitFor(() => primary.status().secondaries[0]?.lagBytes === 0, 'dr1 stored every write');
    await secondary.settle();
    for (const [i, data] of written.entries())
      assert.deepEqual(await secondary.read(0, i * mib, mib), data, `MiB ${i} replicated`);
    assert.deepEqual(failures, []);
    return secondary.status().memory.dataBytesPeak;
  } finally {
    await primary.stop();
    await secondary.stop();
  }
}

test('past memory.dataBytesMax the secondary stops reading its link rather than hold more', {
  timeout: 180_000,
}, async (t) => {
  const budget = limits.packetBytesMax;
  const bounded = await peakWithBudget('bounded', 9, budget);
  // One packet's record may arrive past the budget before reading stops.
  assert.ok(bounded <= budget + 2 * limits.packetBytesMax, `peak ${bounded} bytes for a budget of ${budget}`);
  const unbounded = await peakWithBudget('unbounded', 19, 1024 * mib);
  t.diagnostic(`peak held: ${bounded} bytes with a budget of ${budget}, ${unbounded} without`);
  assert.ok(unbounded > 4 * bounded, `without the hold the peak is ${unbounded} bytes, with it ${bounded}`);
});
