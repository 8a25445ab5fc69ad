import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { InlineWritePolicy } from '../../src/io/inline-writes.ts';

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
