// Proves the fencing of a real primary site (PrimaryNode over real files, its link over TCP on
// 127.0.0.1) against a stand-in for a promoted site's link listener, which answers the primary's
// hello with a superseded frame carrying the primary's chain and one more generation:
// - the primary records `fencedBy` in site.json, logs `fenced` at ERROR and shows `fenced` in
//   status; a write is refused with WriteError `fenced` naming who superseded it (NBD: EPERM),
//   while a flush of what it journaled before still completes and reads go on;
// - it never dials its secondary again;
// - restarted, it starts fenced: the first write is refused, it says so at start, and dials nobody.
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { createServer, type Server, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, test } from 'node:test';
import { WriteError } from '../../src/core/errors.ts';
import type { Generation } from '../../src/core/identity.ts';
import { nbdErrorOf } from '../../src/nbd/connection.ts';
import { nbdErrors } from '../../src/nbd/protocol.ts';
import { PrimaryNode } from '../../src/node/primary-node.ts';
import type { PrimaryFileConfig } from '../../src/ops/config.ts';
import { createLogger, type Logger } from '../../src/ops/logger.ts';
import { encodeFrame, FrameDecoder, type HelloFrame } from '../../src/protocol/frames.ts';
import { standInPrimaryConfig } from './stand-in-secondary.ts';

const directory = mkdtempSync(join(tmpdir(), 'cyclerep-fence-'));
after(() => rmSync(directory, { recursive: true, force: true }));
const blockBytes = 4096;
const promotedSite = 'b'.repeat(32);

async function waitFor(condition: () => boolean, what: string, timeoutMs = 10_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!condition()) {
    assert.ok(Date.now() < deadline, `not reached within ${timeoutMs} ms: ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 10));
  }
}

function recordingLogger(): { logger: Logger; entries: Record<string, unknown>[] } {
  const entries: Record<string, unknown>[] = [];
  const logger = createLogger({
    site: 'fence',
    format: 'json',
    write: (line) => entries.push(JSON.parse(line)),
  });
  return { logger, entries };
}

/**
 * A promoted site's link listener, reduced to what fencing needs: it counts the connections it
 * gets, keeps the hellos, and once `answering` answers each with a superseded frame whose chain
 * extends the hello's by `promotion`.
 */
class PromotedListener {
  readonly hellos: HelloFrame[] = [];
  connections = 0;
  answering = false;
  private readonly waiting: { socket: Socket; hello: HelloFrame }[] = [];
  private server: Server | null = null;

  constructor(readonly promotion: Generation) {}

  async listen(): Promise<number> {
    const server = createServer((socket) => this.onConnection(socket));
    this.server = server;
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    return (server.address() as { port: number }).port;
  }

  answer(): void {
    this.answering = true;
    for (const { socket, hello } of this.waiting.splice(0)) this.supersede(socket, hello);
  }

  close(): Promise<void> {
    return new Promise((resolve) => (this.server ? this.server.close(() => resolve()) : resolve()));
  }

  private onConnection(socket: Socket): void {
    this.connections++;
    const decoder = new FrameDecoder();
    socket.on('error', () => {});
    socket.on('data', (chunk) => {
      for (const frame of decoder.push(chunk).frames) {
        if (frame.type !== 'hello') continue;
        this.hellos.push(frame);
        if (this.answering) this.supersede(socket, frame);
        else this.waiting.push({ socket, hello: frame });
      }
    });
  }

  private supersede(socket: Socket, hello: HelloFrame): void {
    socket.write(
      encodeFrame({
        type: 'superseded',
        site: promotedSite,
        generations: [...hello.generations, this.promotion],
      }),
    );
  }
}

function primaryConfig(port: number): PrimaryFileConfig {
  return standInPrimaryConfig('fence', join(directory, 'primary'), port);
}

function block(fill: number): Uint8Array {
  return new Uint8Array(blockBytes).fill(fill);
}

async function refusal(write: Promise<unknown>): Promise<WriteError> {
  try {
    await write;
  } catch (error) {
    assert.ok(error instanceof WriteError, `a WriteError, got ${String(error)}`);
    return error;
  }
  assert.fail('the write was taken');
}

test('a superseded primary records it, refuses writes (EPERM), keeps its links down, and stays fenced across a restart', {
  timeout: 60_000,
}, async (t) => {
  const promotion: Generation = { id: '7'.repeat(32), startedAt: 5, primarySite: promotedSite };
  const listener = new PromotedListener(promotion);
  const port = await listener.listen();
  t.after(() => listener.close());
  const config = primaryConfig(port);
  const first = recordingLogger();
  const failures: Error[] = [];
  const primary = await PrimaryNode.start(config, first.logger, (error) => failures.push(error));
  let stopped = false;
  t.after(() => (stopped ? undefined : primary.stop().catch(() => {})));

  // Before it hears of the promotion it leads: a write is acknowledged.
  await primary.write(0, 0, block(0x11));
  await waitFor(() => listener.hellos.length > 0, 'the primary dialled its secondary');
  const ownChain = listener.hellos[0]?.generations ?? [];
  assert.equal(primary.status().fenced, null);

  listener.answer();
  await waitFor(() => primary.status().fenced !== null, 'the primary fenced itself');
  const fenced = primary.status().fenced;
  assert.deepEqual(
    { site: fenced?.site, generation: fenced?.generation, startedAt: fenced?.startedAt },
    { site: promotedSite, generation: promotion.id, startedAt: 5 },
  );
  assert.ok(fenced && !Number.isNaN(Date.parse(fenced.at)));
  const siteJson = JSON.parse(readFileSync(join(config.dataDir, 'site.json'), 'utf8'));
  assert.deepEqual(siteJson.fencedBy, fenced, 'recorded durably in site.json');
  assert.deepEqual(siteJson.generations, ownChain, 'its own chain is left as it was');
  const logged = first.entries.find((entry) => entry.event === 'fenced');
  assert.equal(logged?.level, 'error');
  assert.equal(logged?.generation, promotion.id);

  const refused = await refusal(primary.write(0, blockBytes, block(0x22)));
  assert.equal(refused.code, 'fenced');
  assert.match(
    refused.message,
    new RegExp(`superseded by site ${promotedSite}, generation ${promotion.id}, from cycle 5 on`),
  );
  assert.equal(nbdErrorOf(refused), nbdErrors.EPERM);
  const [nbdExport] = primary.nbdExports();
  assert.equal(nbdExport?.readOnly, true, 'a fenced primary exports read-only');
  assert.equal((await refusal(nbdExport?.write(0, block(0x33), false) ?? Promise.resolve())).code, 'fenced');
  assert.equal((await refusal(primary.writeZeroes(0, 0, blockBytes))).code, 'fenced');
  await primary.flush();
  assert.deepEqual(
    await primary.read(0, 0, blockBytes),
    block(0x11),
    'reads go on, the refused writes left no trace',
  );
  assert.deepEqual(await primary.read(0, blockBytes, blockBytes), block(0));

  // Its link stays down: no reconnect well past the longest backoff.
  const connections = listener.connections;
  await new Promise((resolve) => setTimeout(resolve, 600));
  assert.equal(listener.connections, connections, 'no new connection after the fence');
  assert.equal(primary.status().secondaries[0]?.link, 'refused');
  assert.equal(failures.length, 0, failures.map(String).join('; '));
  await primary.stop();
  stopped = true;

  // Restarted, it is fenced from the first request and says so at start.
  const second = recordingLogger();
  const restarted = await PrimaryNode.start(config, second.logger, (error) => failures.push(error));
  t.after(() => restarted.stop().catch(() => {}));
  assert.equal((await refusal(restarted.write(0, blockBytes, block(0x44)))).code, 'fenced');
  assert.deepEqual(restarted.status().fenced, fenced);
  const atStart = second.entries.find((entry) => entry.event === 'fenced');
  assert.equal(atStart?.level, 'error');
  assert.match(String(atStart?.reason), /started fenced/);
  await new Promise((resolve) => setTimeout(resolve, 300));
  assert.equal(listener.connections, connections, 'a fenced primary dials nobody');
  assert.deepEqual(
    JSON.parse(readFileSync(join(config.dataDir, 'site.json'), 'utf8')).fencedBy,
    fenced,
    'the restart kept the record',
  );
  assert.deepEqual(await restarted.read(0, 0, blockBytes), block(0x11));
  assert.equal(failures.length, 0, failures.map(String).join('; '));
});
