// Who owns a write's buffer. PrimaryNode.write lets the caller reuse its buffer as soon as the call
// returns, so the primary must copy it before that, not once the journal has room (a microtask
// later: a caller filling its buffer again right after the call then had the new bytes journaled).
// A caller that hands its buffer over (the NBD server, whose request buffers are its own) skips the
// copy; the data written is the same either way. Real PrimaryNode on real files, no secondary.
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, test } from 'node:test';
import { PrimaryNode } from '../../src/node/primary-node.ts';
import { type PrimaryFileConfig, validateConfig } from '../../src/ops/config.ts';
import { createLogger } from '../../src/ops/logger.ts';

const directory = mkdtempSync(join(tmpdir(), 'cyclerep-write-buffers-'));
after(() => rmSync(directory, { recursive: true, force: true }));
const quiet = createLogger({ site: 'test', format: 'json', write: () => {} });
const blockBytes = 4096;

async function startPrimary(name: string): Promise<PrimaryNode> {
  const config = {
    ...(validateConfig({
      group: 'buffers',
      role: 'primary',
      dataDir: join(directory, name),
      volumes: [{ name: 'data', size: 1024 * 1024 }],
    }) as PrimaryFileConfig),
    nbd: null,
    http: null,
  } as unknown as PrimaryFileConfig;
  return PrimaryNode.start(config, quiet, (error) => assert.fail(error));
}

test('a caller may refill its buffer as soon as write() returns: the journal keeps what it wrote', async () => {
  const primary = await startPrimary('reused');
  try {
    const buffer = new Uint8Array(2 * blockBytes).fill(0x11);
    const first = primary.write(0, 0, buffer);
    buffer.fill(0x22);
    const second = primary.write(0, 2 * blockBytes, buffer.subarray(0, blockBytes));
    buffer.fill(0x33);
    await Promise.all([first, second]);
    assert.deepEqual(await primary.read(0, 0, 2 * blockBytes), new Uint8Array(2 * blockBytes).fill(0x11));
    assert.deepEqual(
      await primary.read(0, 2 * blockBytes, blockBytes),
      new Uint8Array(blockBytes).fill(0x22),
    );
    await primary.flush();
  } finally {
    await primary.stop();
  }
});

test('a buffer handed over is written as it is, whole or as a view into a larger one', async () => {
  const primary = await startPrimary('handed-over');
  try {
    const whole = new Uint8Array(4 * blockBytes).fill(0x44);
    const larger = new Uint8Array(8 * blockBytes).fill(0x55);
    await Promise.all([
      primary.write(0, 0, whole, true),
      primary.write(0, 4 * blockBytes, larger.subarray(blockBytes, 2 * blockBytes), true),
    ]);
    assert.deepEqual(await primary.read(0, 0, 4 * blockBytes), new Uint8Array(4 * blockBytes).fill(0x44));
    assert.deepEqual(
      await primary.read(0, 4 * blockBytes, blockBytes),
      new Uint8Array(blockBytes).fill(0x55),
    );
    await primary.flush();
  } finally {
    await primary.stop();
  }
});
