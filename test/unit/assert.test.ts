import assert from 'node:assert/strict';
import { test } from 'node:test';
import { AssertionFailure, assert as check } from '../../src/core/assert.ts';

test('a message given as a function is built only when the assertion fails', () => {
  let built = 0;
  const message = (): string => {
    built++;
    return `built ${built}`;
  };
  check(true, message);
  assert.equal(built, 0);
  assert.throws(
    () => check(false, message),
    (error) => error instanceof AssertionFailure && error.message === 'built 1',
  );
  assert.throws(() => check(0, 'a plain message'), /a plain message/);
});
