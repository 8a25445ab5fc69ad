// Proves the configuration of the fail-stop bounds: shutdown.timeoutMs and shutdown.faultStatusMs
// and link.storedProgressTimeoutMs have their documented defaults, reach the link's timings, and a
// bad value or relation is refused naming the key.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { ConfigError } from '../../src/core/errors.ts';
import { linkTimingsOf } from '../../src/node/secondary-node.ts';
import { validateConfig } from '../../src/ops/config.ts';

const base = {
  group: 'g',
  role: 'secondary',
  name: 'dr1',
  dataDir: './var/g/dr1',
};

test('defaults: shutdown in 10 s, the fault shown 2 s, a link failed after 30 s without STORED progress', () => {
  const config = validateConfig(base);
  assert.deepEqual(config.shutdown, { timeoutMs: 10_000, faultStatusMs: 2000 });
  assert.equal(config.link.storedProgressTimeoutMs, 30_000);
  assert.equal(linkTimingsOf(config.link).storedProgressMsTimeout, 30_000);
});

test('a stored-progress bound below the heartbeat timeout, or a bad shutdown value, is refused naming the key', () => {
  const cases: [Record<string, unknown>, RegExp][] = [
    [
      { link: { timeoutMs: 5000, storedProgressTimeoutMs: 1000 } },
      /link\.storedProgressTimeoutMs: must be at least link\.timeoutMs/,
    ],
    [{ shutdown: { timeoutMs: 'soon' } }, /shutdown\.timeoutMs: expected number/],
    [{ shutdown: { faultStatusMs: -1 } }, /shutdown\.faultStatusMs/],
    [{ shutdown: { linger: 5 } }, /shutdown: unknown key "linger"/],
  ];
  for (const [extra, message] of cases) {
    assert.throws(
      () => validateConfig({ ...base, ...extra }),
      (error: unknown) => error instanceof ConfigError && message.test(error.message),
      JSON.stringify(extra),
    );
  }
});
