// Proves that `cyclerep status` tells an operator about a storage failure: the fault's kind, time
// and cause, and what to do next, for either role; and says nothing of faults when there is none.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { describe } from '../../src/cli/status.ts';

const fault = {
  kind: 'disk-full',
  message: '/var/dr1/journal/0000000000000003.seg: write failed: ENOSPC: no space left on device, write',
  at: '2026-11-26T03:09:11.872Z',
};

test('a secondary with a storage fault: kind, time, cause and the next step', () => {
  const text = describe({
    group: 'g',
    role: 'secondary',
    name: 'dr1',
    link: 'streaming',
    stored: 4,
    applied: 4,
    fault,
  });
  assert.match(
    text,
    /FAULT disk-full at 2026-11-26T03:09:11.872Z: .*0000000000000003.seg: write failed: ENOSPC/,
  );
  assert.match(text, /exit code 3.*nothing acknowledged is lost: free space/);
});

test('a primary with a storage fault shows it on its own line', () => {
  const text = describe({
    group: 'g',
    role: 'primary',
    capture: 9,
    closed: 8,
    journalBytes: 4096,
    secondaries: [],
    fault: { ...fault, kind: 'io-error', message: 'journal fdatasync failed: EIO: i/o error, fdatasync' },
  });
  assert.match(text, /^g role:primary capture:9/);
  assert.match(text, /FAULT io-error at .*: journal fdatasync failed: EIO/);
});

test('no fault, no FAULT line', () => {
  const text = describe({
    group: 'g',
    role: 'secondary',
    name: 'dr1',
    link: 'streaming',
    stored: 4,
    applied: 4,
    fault: null,
  });
  assert.doesNotMatch(text, /FAULT/);
});
