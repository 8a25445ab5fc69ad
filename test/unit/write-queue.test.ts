// Proves the volume write queue's bounds: at most `concurrency` tasks run at once, room(n) resolves
// only once at most n tasks wait to start (an apply holds its next step on it), and drained()
// resolves once everything pushed has landed.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { WriteQueue } from '../../src/node/site/write-queue.ts';

test('room(n) waits until at most n tasks wait to start; drained() until all landed', async () => {
  const queue = new WriteQueue(2);
  const release: (() => void)[] = [];
  let running = 0;
  let runningMax = 0;
  for (let i = 0; i < 6; i++)
    queue.push(async () => {
      running++;
      runningMax = Math.max(runningMax, running);
      await new Promise<void>((resolve) => release.push(resolve));
      running--;
    });
  let roomFor2 = false;
  void queue.room(2).then(() => {
    roomFor2 = true;
  });
  let drained = false;
  void queue.drained().then(() => {
    drained = true;
  });
  const turn = () => new Promise((resolve) => setImmediate(resolve));
  await turn();
  assert.equal(roomFor2, false, '4 tasks wait to start');
  (release.shift() as () => void)();
  await turn();
  assert.equal(roomFor2, false, '3 tasks wait to start');
  (release.shift() as () => void)();
  await turn();
  assert.equal(roomFor2, true, '2 tasks wait to start');
  assert.equal(drained, false);
  while (release.length > 0) {
    (release.shift() as () => void)();
    await turn();
  }
  assert.equal(drained, true);
  assert.equal(runningMax, 2);
  await queue.room(0);
});

test('drained() waits for tasks a running task queued, and they run as many at a time as any', async () => {
  const queue = new WriteQueue(4);
  const release: (() => void)[] = [];
  let running = 0;
  let runningMax = 0;
  const write = async (): Promise<void> => {
    running++;
    runningMax = Math.max(runningMax, running);
    await new Promise<void>((resolve) => release.push(resolve));
    running--;
  };
  // A read, then the writes of what it read queued from inside it (the secondary's apply).
  queue.push(async () => {
    await Promise.resolve();
    for (let i = 0; i < 8; i++) queue.push(write);
  });
  let drained = false;
  void queue.drained().then(() => {
    drained = true;
  });
  const turn = () => new Promise((resolve) => setImmediate(resolve));
  await turn();
  assert.equal(runningMax, 4, 'four of the queued writes run together');
  assert.equal(drained, false);
  while (release.length > 0) {
    (release.shift() as () => void)();
    await turn();
  }
  assert.equal(drained, true);
});
