// Proves that what a hello says is held to the config's rules before a fresh secondary makes any
// file of it, and that every refusal is answered with an ERROR frame: hand-crafted hellos over a raw
// TCP socket to a real secondary process (no volumes configured, so it would take them from the
// hello) naming a volume "../../x" get `hello-invalid` and no file appears outside the data dir; a
// hello of group "other" gets `group-mismatch` naming both groups, one of protocol 1
// `version-unsupported`. A real primary of another group
// is told the same, shows the refusal in its status and keeps retrying (at its longest backoff: see
// the unit test in primary.test.ts).
import assert from 'node:assert/strict';
import { existsSync, readdirSync } from 'node:fs';
import { connect } from 'node:net';
import { test } from 'node:test';
import {
  type ErrorFrame,
  encodeFrame,
  FrameDecoder,
  type HelloFrame,
  protocolVersion,
} from '../../src/protocol/frames.ts';
import { waitForStatus, workspacesCleanedAfterTests } from './harness.ts';

const fresh = workspacesCleanedAfterTests();

function hello(overrides: Partial<HelloFrame>): HelloFrame {
  const site = 'e'.repeat(32);
  return {
    type: 'hello',
    protocolVersion,
    sessionId: 1,
    connectionIndex: 0,
    connectionCount: 1,
    group: 'it',
    blockBytes: 4096,
    volumes: [{ name: 'vol0', sizeBytes: 16 * 4096 }],
    primarySite: site,
    generations: [{ id: 'f'.repeat(32), startedAt: 1, primarySite: site }],
    ...overrides,
  };
}

/** Sends one hello on a raw socket; resolves with the ERROR frame the secondary answers, or fails. */
function answerTo(port: number, frame: HelloFrame): Promise<ErrorFrame> {
  return new Promise((resolve, reject) => {
    const socket = connect(port, '127.0.0.1');
    const decoder = new FrameDecoder();
    const timer = setTimeout(() => {
      socket.destroy();
      reject(new Error('no answer within 15 s'));
    }, 15_000);
    socket.on('connect', () => socket.write(encodeFrame(frame)));
    socket.on('data', (chunk) => {
      const [first] = decoder.push(chunk).frames;
      if (!first) return;
      clearTimeout(timer);
      socket.destroy();
      if (first.type === 'error') resolve(first);
      else reject(new Error(`answered ${first.type}, not error`));
    });
    socket.on('close', () => {
      clearTimeout(timer);
      reject(new Error('closed without an ERROR frame'));
    });
    socket.on('error', () => {});
  });
}

test('a hello naming a volume "../../x" or of another group is refused with an ERROR frame; no file is made', {
  timeout: 60_000,
}, async () => {
  const workspace = fresh();
  const secondary = await workspace.secondaryConfig('dr1');
  const dr1 = workspace.startSecondary(secondary.path);
  await dr1.waitForEvent('secondary-started');

  const traversal = await answerTo(
    secondary.port,
    hello({ volumes: [{ name: '../../x', sizeBytes: 16 * 4096 }] }),
  );
  assert.equal(traversal.code, 'hello-invalid');
  assert.match(traversal.message, /volume 0 name: "\.\.\/\.\.\/x"/);
  assert.equal(existsSync(workspace.path('x.img')), false, 'nothing made outside the data dir');
  assert.equal(existsSync(workspace.path('dr1', 'volumes')), false, 'nothing made inside it either');

  const oddSize = await answerTo(secondary.port, hello({ volumes: [{ name: 'vol0', sizeBytes: 1000 }] }));
  assert.equal(oddSize.code, 'hello-invalid');
  assert.match(oddSize.message, /1000 is not a positive multiple of blockSize 4096/);

  const otherGroup = await answerTo(secondary.port, hello({ group: 'other' }));
  assert.equal(otherGroup.code, 'group-mismatch');
  assert.equal(otherGroup.message, 'group "other" offered, this site is of group "it"');
  assert.equal(existsSync(workspace.path('dr1', 'volumes')), false);

  // A primary of protocol 1 (no identity in its hello) is told which versions differ.
  const oldPrimary = await answerTo(secondary.port, hello({ protocolVersion: 1 }));
  assert.equal(oldPrimary.code, 'version-unsupported');
  assert.equal(oldPrimary.message, `hello of protocol 1, this site speaks ${protocolVersion}`);
  // The log line may reach stderr after the ERROR frame reached us: wait for all four.
  assert.deepEqual(
    (await dr1.waitForEvents('primary-refused', 4)).map((event) => event.code),
    ['hello-invalid', 'hello-invalid', 'group-mismatch', 'version-unsupported'],
  );
  // Beside the config and the data dir (if the secondary keeps anything there), nothing at all.
  assert.deepEqual(
    readdirSync(workspace.dir).filter((entry) => entry !== 'dr1'),
    ['dr1.yaml'],
  );
});

test('a primary of another group hears why, shows it in status and keeps retrying', {
  timeout: 60_000,
}, async () => {
  const workspace = fresh();
  const secondary = await workspace.secondaryConfig('dr1');
  const primary = await workspace.primaryConfig({
    group: 'other',
    secondaries: [{ name: 'dr1', port: secondary.port }],
  });
  const dr1 = workspace.startSecondary(secondary.path);
  await dr1.waitForEvent('secondary-started');
  const load = workspace.startLoadPrimary(primary.path, { LOAD_SETTLE_MS: '0' });
  const refused = await waitForStatus(primary.httpPort, (s) => {
    const link = (s.secondaries as { link: string; refusal: string | null }[])[0];
    return link?.link === 'refused' && link.refusal !== null;
  });
  const link = (refused.secondaries as { refusal: string }[])[0];
  assert.match(link?.refusal ?? '', /group-mismatch: group "other" offered, this site is of group "it"/);
  const event = await load.waitForEvent('link-refused');
  assert.match(String(event.reason), /group "other" offered, this site is of group "it"/);
  // The primary tries again: the other side may be fixed.
  await load.waitForEvents('link-refused', 2, 30_000);
  assert.equal(existsSync(workspace.path('dr1', 'volumes')), false);
});
