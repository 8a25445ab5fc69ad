import assert from 'node:assert/strict';
import { closeSync, mkdtempSync, openSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { InlineWritePolicy } from '../../src/io/inline-writes.ts';
import { nodeFileSystem } from '../../src/io/node-file-system.ts';

const bounds = { bytesMax: 64 * 1024, slowMs: 2, pauseMs: 1000, turnMsMax: 1 };

describe('InlineWritePolicy', () => {
  it('writes up to bytesMax inline and larger ones through the pool', () => {
    const policy = new InlineWritePolicy(bounds);
    assert.equal(policy.inline(64 * 1024, 0), true);
    assert.equal(policy.inline(64 * 1024 + 1, 0), false);
  });

  it('goes through the pool for pauseMs after a write slower than slowMs, then inline again', () => {
    const policy = new InlineWritePolicy(bounds);
    policy.observed(10, 12);
    policy.newTurn();
    assert.equal(policy.inline(4096, 12.5), true, 'a write of exactly slowMs is not slow');
    policy.observed(20, 22.5);
    assert.equal(policy.slowWrites, 1);
    policy.newTurn();
    assert.equal(policy.inline(4096, 23), false);
    assert.equal(policy.inline(4096, 1022.4), false);
    assert.equal(policy.inline(4096, 1022.5), true);
  });

  it('stops writing inline in a turn once its inline writes took turnMsMax, until the next turn', () => {
    const policy = new InlineWritePolicy(bounds);
    assert.equal(policy.opensTurn(), true);
    assert.equal(policy.opensTurn(), false, 'one newTurn per turn is enough');
    policy.observed(0, 0.5);
    policy.observed(0.5, 0.9);
    assert.equal(policy.inline(4096, 1), true);
    policy.observed(1, 1.2);
    assert.equal(policy.inline(4096, 1.2), false);
    policy.newTurn();
    assert.equal(policy.inline(4096, 1.3), true);
    assert.equal(policy.opensTurn(), true);
  });
});

describe('nodeFileSystem writes', () => {
  const filled = (length: number, value: number) => new Uint8Array(length).fill(value);

  /** Whether `promise` settled before any other microtask or I/O ran: an inline write did. */
  async function settledAtOnce(promise: Promise<number>): Promise<boolean> {
    const marker = Symbol('pending');
    return (await Promise.race([promise, Promise.resolve(marker)])) !== marker;
  }

  it('appends small gathered writes inline and large ones through the pool, each byte where it belongs', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'inline-writes-'));
    const fd = openSync(join(dir, 'file'), 'w+');
    try {
      const small = nodeFileSystem.writev(fd, [filled(100, 1), filled(200, 2)], null);
      assert.equal(await settledAtOnce(small), true, 'a small gathered append is made inline');
      assert.equal(await small, 300);
      const large = nodeFileSystem.writev(fd, [filled(100 * 1024, 3), filled(100 * 1024, 4)], null);
      assert.equal(await settledAtOnce(large), false, 'a gathered append past bytesMax goes to the pool');
      assert.equal(await large, 200 * 1024);
      assert.equal(await nodeFileSystem.writev(fd, [filled(50, 5)], 150), 50, 'a positioned gathered write');
      assert.equal(await nodeFileSystem.write(fd, filled(10, 6), 0, 10, null), 10, 'an append after it');
      const content = readFileSync(join(dir, 'file'));
      assert.equal(content.length, 300 + 200 * 1024 + 10);
      assert.deepEqual([...new Set(content.subarray(0, 100))], [1]);
      assert.deepEqual([...new Set(content.subarray(100, 150))], [2]);
      assert.deepEqual([...new Set(content.subarray(150, 200))], [5]);
      assert.deepEqual([...new Set(content.subarray(200, 300))], [2]);
      assert.deepEqual([...new Set(content.subarray(300, 300 + 100 * 1024))], [3]);
      assert.deepEqual([...new Set(content.subarray(300 + 100 * 1024, 300 + 200 * 1024))], [4]);
      assert.deepEqual([...new Set(content.subarray(300 + 200 * 1024))], [6]);
    } finally {
      closeSync(fd);
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
