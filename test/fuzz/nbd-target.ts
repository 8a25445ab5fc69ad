/**
 * Fuzz target for the NBD connection, handshake and requests, served by its real request handlers
 * over real exports (raw image files in a temporary directory, through VolumeFile). Each case
 * sends a handshake (valid, or mutated now and then) and a stream of requests with distinct
 * cookies (valid, out of range, misaligned, unknown, flagged), mutated most of the time, in
 * socket-sized chunks with the event loop turning in between, then waits until the connection is
 * quiet. After a valid handshake, a reference parser reads the request stream as the NBD spec
 * frames it, and every reply is checked: well formed (magic, chunk types, lengths), for a request
 * that was sent, answered once (one simple reply, or structured chunks ending in one DONE), reads
 * covering exactly their range. A healthy export never fails, so an I/O error reply is a defect.
 */
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { nodeFileSystem } from '../../src/io/node-file-system.ts';
import { defaultNbdLimits, NbdConnection, type NbdExport } from '../../src/nbd/connection.ts';
import {
  chunkTypes,
  commandFlags,
  commands,
  nbdErrors,
  optionMagic,
  options,
  replyFlagDone,
  requestHeaderBytes,
  requestMagic,
  simpleReplyMagic,
  structuredReplyMagic,
} from '../../src/nbd/protocol.ts';
import { byteGranular } from '../../src/nbd/unaligned.ts';
import type { Random } from '../../src/sim/random.ts';
import { VolumeFile } from '../../src/storage/volume-file.ts';
import { check, chunks, concat, mutate } from './mutate.ts';

const blockBytes = 4096;
const exportBytes = 256 * 1024;

/** The exports every case is served from: one writable, one read-only, files made once per process. */
let exports: Map<string, NbdExport> | null = null;
/** Export operations started and not yet finished, so a case knows when its connection is quiet. */
let exportOpsInFlight = 0;

function counted<T>(operation: Promise<T>): Promise<T> {
  exportOpsInFlight++;
  return operation.finally(() => {
    exportOpsInFlight--;
  });
}

function realExports(): Map<string, NbdExport> {
  if (exports) return exports;
  // Memory-backed where there is one: real files, without a disk's fdatasync per FLUSH.
  const parent = existsSync('/dev/shm') ? '/dev/shm' : tmpdir();
  const directory = mkdtempSync(join(parent, 'cyclerep-fuzz-nbd-'));
  process.once('exit', () => rmSync(directory, { recursive: true, force: true }));
  const exportOf = (name: string, readOnly: boolean): NbdExport => {
    const file = VolumeFile.create(nodeFileSystem, join(directory, `${name}.img`), exportBytes, blockBytes);
    return {
      name,
      sizeBytes: exportBytes,
      blockBytes,
      readOnly,
      read: (offset, length) => counted(file.read(offset, length)),
      write: (offset, data) =>
        counted(
          file.writeExtent({
            volume: 0,
            block: offset / blockBytes,
            blockCount: data.length / blockBytes,
            data,
          }),
        ),
      writeZeroes: (offset, length) =>
        counted(
          file.writeExtent({
            volume: 0,
            block: offset / blockBytes,
            blockCount: length / blockBytes,
            data: null,
          }),
        ),
      flush: () => counted(file.flush()),
    };
  };
  // As the server does: any byte offset is served, partial blocks by read-modify-write.
  exports = new Map([
    ['data', byteGranular(exportOf('data', false))],
    ['ro', byteGranular(exportOf('ro', true))],
  ]);
  return exports;
}

// ---- what the client sends --------------------------------------------------------------------

const encodeText = (text: string) => new TextEncoder().encode(text);
const u32 = (value: number) =>
  Uint8Array.of(value >>> 24, (value >>> 16) & 255, (value >>> 8) & 255, value & 255);

function option(code: number, data: Uint8Array): Uint8Array {
  const bytes = new Uint8Array(16 + data.length);
  const view = new DataView(bytes.buffer);
  view.setBigUint64(0, optionMagic);
  view.setUint32(8, code);
  view.setUint32(12, data.length);
  bytes.set(data, 16);
  return bytes;
}

interface Negotiated {
  bytes: Uint8Array;
  exportName: string;
  structured: boolean;
  metaContext: boolean;
}

/** Client flags and options ending in GO, with or without structured replies and base:allocation. */
function handshake(random: Random): Negotiated {
  const structured = random.chance(0.7);
  const metaContext = structured && random.chance(0.7);
  const exportName = random.chance(0.8) ? 'data' : 'ro';
  const name = encodeText(exportName);
  const parts: Uint8Array[] = [Uint8Array.of(0, 0, 0, 3)];
  if (random.chance(0.3)) parts.push(option(options.list, new Uint8Array(0)));
  if (structured) parts.push(option(options.structuredReply, new Uint8Array(0)));
  if (metaContext) {
    parts.push(
      option(
        options.setMetaContext,
        concat([u32(name.length), name, u32(1), u32(15), encodeText('base:allocation')]),
      ),
    );
  }
  parts.push(option(options.go, concat([u32(name.length), name, Uint8Array.of(0, 0)])));
  return { bytes: concat(parts), exportName, structured, metaContext };
}

interface Request {
  type: number;
  flags: number;
  cookie: bigint;
  offset: number;
  length: number;
}

function encodeRequest(request: Request, payload: boolean): Uint8Array {
  const carries = payload && request.type === commands.write;
  const bytes = new Uint8Array(requestHeaderBytes + (carries ? request.length : 0));
  const view = new DataView(bytes.buffer);
  view.setUint32(0, requestMagic);
  view.setUint16(4, request.flags);
  view.setUint16(6, request.type);
  view.setBigUint64(8, request.cookie);
  view.setBigUint64(16, BigInt(request.offset));
  view.setUint32(24, request.length);
  if (carries) bytes.fill(Number(request.cookie & 0xffn), requestHeaderBytes);
  return bytes;
}

/** A request of every kind, mostly valid, some past the end, misaligned or unknown. */
function randomRequest(random: Random, cookie: bigint): Request {
  const types = [
    commands.read,
    commands.write,
    commands.trim,
    commands.writeZeroes,
    commands.flush,
    commands.blockStatus,
    commands.cache,
    99,
  ];
  const type = types[random.int(types.length)] as number;
  const blocks = exportBytes / blockBytes;
  const block = random.chance(0.1) ? blocks - random.int(2) : random.int(blocks);
  const count = random.int(5);
  const misaligned = random.chance(0.1) ? 1 + random.int(blockBytes - 1) : 0;
  const flags = random.chance(0.3)
    ? ([commandFlags.fua, commandFlags.noHole, commandFlags.dontFragment, commandFlags.requestOne][
        random.int(4)
      ] ?? 0)
    : 0;
  return {
    type,
    flags,
    cookie,
    offset: block * blockBytes + misaligned,
    length: type === commands.flush ? 0 : count * blockBytes,
  };
}

// ---- the reference reading of the request stream ----------------------------------------------

/**
 * The requests a server must answer, read from the stream as the spec frames it: a 28-byte header,
 * then the payload of a WRITE. Reading stops where a conforming server stops reading: a bad magic,
 * a WRITE over the size bound, DISCONNECT, or the end of the bytes.
 */
function requestsIn(bytes: Uint8Array): Request[] {
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.length);
  const found: Request[] = [];
  for (let at = 0; at + requestHeaderBytes <= bytes.length; ) {
    if (view.getUint32(at) !== requestMagic) break;
    const offset = view.getBigUint64(at + 16);
    const request: Request = {
      flags: view.getUint16(at + 4),
      type: view.getUint16(at + 6),
      cookie: view.getBigUint64(at + 8),
      offset: offset > BigInt(Number.MAX_SAFE_INTEGER) ? Number.MAX_SAFE_INTEGER : Number(offset),
      length: view.getUint32(at + 24),
    };
    at += requestHeaderBytes;
    if (request.type === commands.disconnect) break;
    if (request.type === commands.write) {
      if (request.length > defaultNbdLimits.requestBytesMax || at + request.length > bytes.length) break;
      at += request.length;
    }
    found.push(request);
  }
  return found;
}

// ---- checking the replies ---------------------------------------------------------------------

interface Expected {
  request: Request;
  /** Bytes of the range covered so far by structured READ chunks. */
  covered: number;
  errored: boolean;
  done: boolean;
}

class ReplyReader {
  private at = 0;
  private readonly view: DataView;

  constructor(private readonly bytes: Uint8Array) {
    this.view = new DataView(bytes.buffer, bytes.byteOffset, bytes.length);
  }

  get finished(): boolean {
    return this.at === this.bytes.length;
  }

  need(count: number, what: string): void {
    check(
      this.at + count <= this.bytes.length,
      `reply cut short: ${what} needs ${count} bytes at ${this.at}`,
    );
  }

  u16(): number {
    this.need(2, 'u16');
    this.at += 2;
    return this.view.getUint16(this.at - 2);
  }

  u32(): number {
    this.need(4, 'u32');
    this.at += 4;
    return this.view.getUint32(this.at - 4);
  }

  u64(): bigint {
    this.need(8, 'u64');
    this.at += 8;
    return this.view.getBigUint64(this.at - 8);
  }

  skip(count: number, what: string): void {
    this.need(count, what);
    this.at += count;
  }
}

/** Checks the transmission-phase output against the requests sent; returns the requests answered. */
function checkReplies(output: Uint8Array, requests: Request[], negotiated: Negotiated): Expected[] {
  const expected = new Map<bigint, Expected>();
  for (const request of requests)
    expected.set(request.cookie, { request, covered: 0, errored: false, done: false });
  const reader = new ReplyReader(output);
  while (!reader.finished) {
    const magic = reader.u32();
    if (magic === simpleReplyMagic) readSimpleReply(reader, expected, negotiated);
    else if (magic === structuredReplyMagic) readChunk(reader, expected, negotiated);
    else check(false, `reply with magic 0x${magic.toString(16)}`);
  }
  return [...expected.values()];
}

function answering(expected: Map<bigint, Expected>, cookie: bigint): Expected {
  const entry = expected.get(cookie);
  check(entry !== undefined, `reply for cookie ${cookie}, which no request carried`);
  check(!entry.done, `second reply for cookie ${cookie}`);
  return entry;
}

function readSimpleReply(reader: ReplyReader, expected: Map<bigint, Expected>, negotiated: Negotiated): void {
  const error = reader.u32();
  const entry = answering(expected, reader.u64());
  const { request } = entry;
  const structuredCommand = request.type === commands.read || request.type === commands.blockStatus;
  check(!(negotiated.structured && structuredCommand), `simple reply to a structured ${request.type}`);
  check(error !== nbdErrors.EIO, `I/O error from a healthy export for request ${describe(request)}`);
  if (error === 0 && request.type === commands.read) reader.skip(request.length, 'read data');
  entry.done = true;
}

function readChunk(reader: ReplyReader, expected: Map<bigint, Expected>, negotiated: Negotiated): void {
  const flags = reader.u16();
  const type = reader.u16();
  const entry = answering(expected, reader.u64());
  const length = reader.u32();
  const { request } = entry;
  check(negotiated.structured, 'structured chunk without structured replies negotiated');
  check(
    request.type === commands.read || request.type === commands.blockStatus,
    `structured chunk for command ${request.type}`,
  );
  check(!entry.errored, `chunk after an error chunk for ${describe(request)}`);
  const end = request.offset + request.length;
  switch (type) {
    case chunkTypes.none:
      check(length === 0 && (flags & replyFlagDone) !== 0, 'NONE chunk with a payload or without DONE');
      break;
    case chunkTypes.offsetData: {
      check(request.type === commands.read && length > 8, `OFFSET_DATA of ${length} bytes`);
      const offset = Number(reader.u64());
      check(
        offset >= request.offset && offset + length - 8 <= end,
        `data chunk outside ${describe(request)}`,
      );
      reader.skip(length - 8, 'data');
      entry.covered += length - 8;
      break;
    }
    case chunkTypes.offsetHole: {
      check(request.type === commands.read && length === 12, `OFFSET_HOLE of ${length} bytes`);
      const offset = Number(reader.u64());
      const size = reader.u32();
      check(
        offset >= request.offset && offset + size <= end && size > 0,
        `hole outside ${describe(request)}`,
      );
      entry.covered += size;
      break;
    }
    case chunkTypes.blockStatus: {
      check(
        request.type === commands.blockStatus &&
          negotiated.metaContext &&
          length >= 12 &&
          (length - 4) % 8 === 0,
        `BLOCK_STATUS chunk of ${length} bytes`,
      );
      reader.u32();
      let covered = 0;
      for (let index = 0; index < (length - 4) / 8; index++) {
        covered += reader.u32();
        reader.u32();
      }
      check(covered > 0 && covered <= request.length, `block status covers ${covered} of ${request.length}`);
      break;
    }
    case chunkTypes.error: {
      check(length >= 6, `ERROR chunk of ${length} bytes`);
      const error = reader.u32();
      check(error !== 0 && error !== nbdErrors.EIO, `error ${error} for ${describe(request)}`);
      check(reader.u16() === length - 6, 'error message length');
      reader.skip(length - 6, 'error message');
      entry.errored = true;
      break;
    }
    default:
      check(false, `chunk type ${type}`);
  }
  if ((flags & replyFlagDone) === 0) return;
  entry.done = true;
  if (request.type === commands.read && !entry.errored)
    check(entry.covered === request.length, `read chunks cover ${entry.covered} of ${request.length} bytes`);
}

function describe(request: Request): string {
  return `command ${request.type} cookie ${request.cookie} at ${request.offset}+${request.length}`;
}

// ---- the case ---------------------------------------------------------------------------------

/** How far the cases of a run got: requests whose replies were checked one by one. */
export const nbdReach = { cases: 0, requestsChecked: 0 };

export async function fuzzNbd(random: Random): Promise<void> {
  const negotiated = handshake(random);
  const mutatedHandshake = random.chance(0.15);
  const handshakeBytes = mutatedHandshake ? mutate(random, negotiated.bytes) : negotiated.bytes;
  const sent = Array.from({ length: 1 + random.int(10) }, (_, index) =>
    randomRequest(random, BigInt(index + 1)),
  );
  let requestBytes = concat(sent.map((request) => encodeRequest(request, true)));
  if (random.chance(0.6)) requestBytes = mutate(random, requestBytes);
  if (random.chance(0.3))
    requestBytes = concat([
      requestBytes,
      encodeRequest({ ...(sent[0] as Request), type: commands.disconnect, length: 0 }, false),
    ]);

  const output: Uint8Array[] = [];
  let transmissionAt = -1;
  let closed = false;
  const failures: string[] = [];
  const connection = new NbdConnection(realExports(), {
    send: (bytes, sent) => {
      output.push(bytes.slice());
      sent?.();
    },
    close: () => {
      closed = true;
    },
    pause: () => {},
    log: (event, fields) => {
      if (event === 'nbd-transmission') transmissionAt = concat(output).length;
      if (event === 'nbd-request-failed') failures.push(JSON.stringify(fields));
    },
    warn: (event, fields) => {
      if (event === 'nbd-request-failed') failures.push(JSON.stringify(fields));
    },
    startTls: () => connection.onTlsReady(),
  });
  for (const chunk of chunks(random, concat([handshakeBytes, requestBytes]))) {
    connection.onData(chunk);
    if (random.chance(0.3)) await turn();
  }
  await quiet();
  check(failures.length === 0, `a request failed at a healthy export: ${failures.join('; ')}`);
  nbdReach.cases++;
  if (mutatedHandshake) return;
  check(transmissionAt >= 0, 'a valid handshake did not reach transmission');
  const requests = requestsIn(requestBytes);
  // A mutation that repeats a cookie makes replies ambiguous; such rare cases check only the above.
  if (new Set(requests.map((request) => request.cookie)).size !== requests.length) return;
  const answered = checkReplies(concat(output).subarray(transmissionAt), requests, negotiated);
  nbdReach.requestsChecked += answered.filter((entry) => entry.done).length;
  if (closed) return;
  for (const entry of answered) check(entry.done, `no reply to ${describe(entry.request)}`);
}

function turn(): Promise<void> {
  return new Promise((resolve) => setImmediate(resolve));
}

/**
 * Waits until no export operation is running and none started during a turn of the event loop, so
 * every reply that will ever come has been sent; fails if that takes absurdly long.
 */
async function quiet(): Promise<void> {
  const deadline = Date.now() + quietMsMax;
  for (let stillTurns = 0; stillTurns < 3; ) {
    check(Date.now() < deadline, `the connection was still busy after ${quietMsMax} ms`);
    await new Promise((resolve) => setImmediate(resolve));
    stillTurns = exportOpsInFlight === 0 ? stillTurns + 1 : 0;
  }
}

/** Far beyond any case's I/O: only a request that never completes gets near it. */
const quietMsMax = 30_000;
