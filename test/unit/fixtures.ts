/** Shared fixtures for the unit tests: a small group, fast timings, and a no-fault two-site harness. */

import type { TrackingState } from '../../src/core/changed-blocks.ts';
import type { JournalPiece } from '../../src/core/fold.ts';
import type { PrimaryIdentity } from '../../src/core/identity.ts';
import type { LinkTimings } from '../../src/core/limits.ts';
import { trackingNever } from '../../src/core/link-tracking.ts';
import { type PrimaryAction, type PrimaryConfig, PrimaryGroup } from '../../src/core/primary-group.ts';
import type { PrimaryRecord, SecondaryRecord } from '../../src/core/records.ts';
import { Secondary, type SecondaryAction } from '../../src/core/secondary.ts';
import type { Extent, GroupShape } from '../../src/core/types.ts';
import { encodeFrame, type Frame, FrameDecoder } from '../../src/protocol/frames.ts';
import { Random } from '../../src/sim/random.ts';
import { decodeTrackingState, encodeTrackingState } from '../../src/storage/tracking-file.ts';

export const blockBytes = 512;

export const shape: GroupShape = {
  group: 'unit',
  blockBytes,
  volumes: [
    { name: 'data', sizeBytes: 64 * blockBytes },
    { name: 'log', sizeBytes: 16 * blockBytes },
  ],
};

export const timings: LinkTimings = {
  heartbeatMsInterval: 100,
  heartbeatMsTimeout: 400,
  reconnectMsMin: 50,
  reconnectMsMax: 800,
  cyclesInFlightMax: 4,
  storedProgressMsTimeout: 4000,
};

/** A primary's identity for tests: fixed ids, one generation. */
export const primaryIdentity: PrimaryIdentity = {
  site: 'a'.repeat(32),
  generations: [{ id: '1'.repeat(32), startedAt: 1, primarySite: 'a'.repeat(32) }],
};

/** Another primary of the same group: another site, another generation (a split brain). */
export const otherPrimaryIdentity: PrimaryIdentity = {
  site: 'b'.repeat(32),
  generations: [{ id: '2'.repeat(32), startedAt: 1, primarySite: 'b'.repeat(32) }],
};

export function primaryConfig(overrides: Partial<PrimaryConfig> = {}): PrimaryConfig {
  return {
    shape,
    secondaries: ['dr1'],
    nodes: 1,
    ack: 'immediate',
    cycleMsMin: 100,
    cyclesQueuedMax: 4,
    connectionsPerLink: 1,
    timings,
    tracking: trackingNever,
    identity: primaryIdentity,
    syncBytes: Number.POSITIVE_INFINITY,
    ...overrides,
  };
}

/**
 * A volume write from the journal as the extent it writes: its bytes taken from the packets the
 * pieces name, found by append sequence (the node reads them from its segments the same way).
 */
export function extentFromJournal(
  write: { volume: number; block: number; blockCount: number; pieces: JournalPiece[] },
  recordOf: (seq: number) => SecondaryRecord | undefined,
): Extent {
  const data = bytesOfPieces(write.pieces, (seq) => {
    const record = recordOf(seq);
    return record?.kind === 'packet' ? record.extent.data : undefined;
  });
  if (data.length !== write.blockCount * blockBytes)
    throw new Error(`pieces of ${data.length} bytes for ${write.blockCount} blocks`);
  return { volume: write.volume, block: write.block, blockCount: write.blockCount, data };
}

/** The bytes journal pieces name, from the data of each append (by sequence). */
export function bytesOfPieces(
  pieces: readonly JournalPiece[],
  dataOf: (seq: number) => Uint8Array | null | undefined,
  bytesPerBlock = blockBytes,
): Uint8Array {
  const data = new Uint8Array(pieces.reduce((sum, piece) => sum + piece.blockCount, 0) * bytesPerBlock);
  let at = 0;
  for (const piece of pieces) {
    const bytes = dataOf(piece.seq);
    if (!bytes) throw new Error(`append ${piece.seq} holds no block data`);
    const from = piece.index * bytesPerBlock;
    data.set(bytes.subarray(from, from + piece.blockCount * bytesPerBlock), at);
    at += piece.blockCount * bytesPerBlock;
  }
  return data;
}

/** A primary write record's data (undefined for other records). */
export function writeData(record: PrimaryRecord | undefined): Uint8Array | null | undefined {
  return record?.kind === 'write' ? record.extent.data : undefined;
}

export function dataExtent(volume: number, block: number, blockCount: number, fill: number): Extent {
  return { volume, block, blockCount, data: new Uint8Array(blockCount * blockBytes).fill(fill) };
}

/** Passes frames through the real codec, as a socket would. */
function throughWire(frame: Frame, decoder: FrameDecoder): Frame[] {
  const result = decoder.push(encodeFrame(frame));
  if (result.error) throw result.error;
  return result.frames;
}

interface HarnessConnection {
  secondary: number;
  open: boolean;
  toSecondary: FrameDecoder;
  toPrimary: FrameDecoder;
}

/**
 * A primary and its secondaries with instant, loss-free storage and network, so a test reads as
 * a story: write, tick, cut a link, heal it, look at what each site holds.
 */
export class Harness {
  nowMs = 0;
  primary: PrimaryGroup;
  readonly secondaries: (Secondary | null)[];
  readonly primaryJournal: PrimaryRecord[] = [];
  readonly secondaryJournals: SecondaryRecord[][];
  readonly volumes: Uint8Array[][];
  readonly acked: number[] = [];
  /** The cycle each acknowledged write joined. */
  readonly ackedCycles = new Map<number, number>();
  readonly flushed: number[] = [];
  readonly framesToSecondary: Frame[][];
  readonly logs: string[] = [];
  /** The primary's image as its read path shows it (every write accepted so far): copy reads read it. */
  readonly primaryImage: Uint8Array[];
  /** The bitmaps the primary saved, by secondary (tracking-save answered at once). */
  readonly trackingFiles = new Map<string, TrackingState>();
  /** When set, tracking saves wait in `savesWaiting` until the test completes them. */
  deferTrackingSaves = false;
  readonly savesWaiting: (() => void)[] = [];
  /** When set, copy reads wait in `copyReadsWaiting` until the test answers them (reads in flight). */
  deferCopyReads = false;
  readonly copyReadsWaiting: (() => void)[] = [];
  /** Writes the primary refused, by token: the error's code. */
  readonly refusedWrites = new Map<number, string>();
  /** Switchovers a secondary was asked to take (its promotion-requested actions). */
  readonly promotionsRequested: { secondary: number; cycle: number; generation: string }[] = [];
  /** What the primary put on record of its switchovers (handover-record actions), in order. */
  readonly handoverRecords: ({ secondary: string; generation: string; cycle: number } | null)[] = [];
  /** When set, a secondary asked to take over refuses with this reason (as a node whose config cannot lead). */
  refuseSwitchover: string | null = null;
  /** Blocks copy reads covered, for tests of what a resync sends. */
  copiedBlocks = 0;
  /** Blocks the primary read back from its journal to build packets. */
  blocksRead = 0;
  private readonly connections = new Map<number, HarnessConnection>();
  private readonly cut = new Set<number>();
  private nextToken = 1;
  private readonly random = new Random(42);

  constructor(readonly config: PrimaryConfig) {
    this.primary = new PrimaryGroup(config, () => this.random.next());
    this.secondaries = config.secondaries.map(
      (name) => new Secondary({ name, shape: config.shape, timings: config.timings }),
    );
    this.secondaryJournals = config.secondaries.map(() => []);
    this.volumes = config.secondaries.map(() =>
      config.shape.volumes.map((volume) => new Uint8Array(volume.sizeBytes)),
    );
    this.framesToSecondary = config.secondaries.map(() => []);
    this.primaryImage = config.shape.volumes.map((volume) => new Uint8Array(volume.sizeBytes));
  }

  write(extent: Extent, node = 0): number {
    const token = this.nextToken++;
    const image = this.primaryImage[extent.volume] as Uint8Array;
    const at = extent.block * blockBytes;
    if (extent.data) image.set(extent.data, at);
    else image.fill(0, at, at + extent.blockCount * blockBytes);
    this.runPrimary(this.primary.onWrite(this.nowMs, { token, node, extent }));
    return token;
  }

  flush(): number {
    const token = this.nextToken++;
    this.runPrimary(this.primary.onFlush(this.nowMs, token));
    return token;
  }

  /** Advances time in ticks of 10 ms, letting every site act and every frame arrive. */
  advance(ms: number): void {
    const end = this.nowMs + ms;
    while (this.nowMs < end) {
      this.nowMs = Math.min(end, this.nowMs + 10);
      this.runPrimary(this.primary.onTick(this.nowMs));
      this.secondaries.forEach((secondary, index) => {
        if (secondary) this.runSecondary(index, secondary.onTick(this.nowMs));
      });
      this.pump();
    }
  }

  /** Cuts every connection of one link, both ends told, and refuses new ones until healed. */
  cutLink(secondary: number): void {
    this.cut.add(secondary);
    for (const [id, connection] of this.connections) {
      if (connection.secondary !== secondary || !connection.open) continue;
      connection.open = false;
      this.runPrimary(this.primary.onConnectionLost(this.nowMs, id, 'cable pulled'));
      const site = this.secondaries[secondary];
      if (site) this.runSecondary(secondary, site.onConnectionLost(this.nowMs, id, 'cable pulled'));
    }
  }

  /**
   * The primary's process dies and starts again from its journal and saved bitmaps (storage here
   * is synchronous, so everything appended survives); every connection drops.
   */
  restartPrimary(): void {
    for (const [id, connection] of this.connections) {
      if (!connection.open) continue;
      connection.open = false;
      const site = this.secondaries[connection.secondary];
      if (site)
        this.runSecondary(connection.secondary, site.onConnectionLost(this.nowMs, id, 'primary died'));
    }
    this.primary = PrimaryGroup.recover(
      this.config,
      () => this.random.next(),
      this.primaryJournal,
      this.trackingFiles,
    );
    this.runPrimary(this.primary.start());
  }

  healLink(secondary: number): void {
    this.cut.delete(secondary);
  }

  crashSecondary(index: number): void {
    this.cutLink(index);
    this.secondaries[index] = null;
  }

  restartSecondary(index: number): void {
    const name = this.config.secondaries[index] as string;
    const secondary = Secondary.recover(
      { name, shape: this.config.shape, timings: this.config.timings },
      this.secondaryJournals[index] as SecondaryRecord[],
    );
    this.secondaries[index] = secondary;
    this.runSecondary(index, secondary.start());
    this.healLink(index);
  }

  private pump(): void {
    for (let round = 0; round < 1000; round++) {
      let moved = false;
      for (const [id, connection] of this.connections) {
        if (!connection.open) continue;
        const frames = this.primary.pollFrames(this.nowMs, id, 1000);
        for (const frame of frames) {
          moved = true;
          for (const decoded of throughWire(frame, connection.toSecondary)) {
            (this.framesToSecondary[connection.secondary] as Frame[]).push(decoded);
            const site = this.secondaries[connection.secondary];
            if (site && connection.open)
              this.runSecondary(connection.secondary, site.onFrame(this.nowMs, id, decoded));
          }
        }
      }
      // Building packets asks for their bytes from the journal: answered here, they go next round.
      const pending = this.primary.pendingActions();
      if (pending.length > 0) {
        moved = true;
        this.runPrimary(pending);
      }
      if (!moved) return;
    }
  }

  private runPrimary(actions: PrimaryAction[]): void {
    for (const action of actions) {
      switch (action.type) {
        case 'journal-append':
          this.primaryJournal.push(action.record);
          break;
        case 'journal-sync':
          this.runPrimary(this.primary.onJournalSynced(this.nowMs, action.upTo));
          break;
        case 'ack':
          this.acked.push(action.token);
          this.ackedCycles.set(action.token, action.cycle);
          break;
        case 'flush-done':
          this.flushed.push(action.token);
          break;
        case 'connect':
          this.connect(action.link, action.connection);
          break;
        case 'disconnect':
          this.disconnect(action.connection, 'primary');
          break;
        case 'node-switch':
          this.runPrimary(this.primary.onNodeSwitch(this.nowMs, action.node, action.cycle));
          break;
        case 'log':
          this.logs.push(`${action.entry.event} ${JSON.stringify(action.entry.fields)}`);
          break;
        case 'tracking-save': {
          const primary = this.primary;
          const complete = (): void => {
            if (primary !== this.primary) return; // that process died before its save was durable
            // Through the file's codec, as the node saves it: a state its decoder refuses would
            // stop a restarted primary.
            this.trackingFiles.set(
              action.link,
              decodeTrackingState(
                `tracking/${action.link}.bitmap`,
                encodeTrackingState(action.state),
                this.config.shape.volumes.map((volume) => volume.sizeBytes / this.config.shape.blockBytes),
              ),
            );
            this.runPrimary(this.primary.onTrackingSaved(this.nowMs, action.link, action.token));
          };
          if (this.deferTrackingSaves) this.savesWaiting.push(complete);
          else complete();
          break;
        }
        case 'tracking-drop':
          this.trackingFiles.delete(action.link);
          break;
        case 'read-blocks':
          this.blocksRead += action.pieces.reduce((sum, piece) => sum + piece.blockCount, 0);
          this.runPrimary(
            this.primary.onBlocksRead(
              this.nowMs,
              action.link,
              action.token,
              bytesOfPieces(action.pieces, (seq) => writeData(this.primaryJournal[seq - 1])),
            ),
          );
          break;
        case 'copy-read': {
          const at = action.block * blockBytes;
          const data = (this.primaryImage[action.volume] as Uint8Array).slice(
            at,
            at + action.blockCount * blockBytes,
          );
          this.copiedBlocks += action.blockCount;
          const primary = this.primary;
          const answer = (): void => {
            if (primary !== this.primary) return; // that process died with the read out
            this.runPrimary(this.primary.onCopyRead(this.nowMs, action.link, action.token, data));
          };
          if (this.deferCopyReads) this.copyReadsWaiting.push(answer);
          else answer();
          break;
        }
        case 'write-refused':
          this.refusedWrites.set(action.token, action.error.code);
          break;
        case 'handover-record':
          // site.json is written at once here: the frame may go.
          this.handoverRecords.push(action.record);
          if (action.record) this.runPrimary(this.primary.onHandoverRecorded(this.nowMs));
          break;
        case 'journal-collect':
          break;
      }
    }
  }

  private connect(link: string, id: number): void {
    const secondary = this.config.secondaries.indexOf(link);
    const site = this.secondaries[secondary];
    if (!site || this.cut.has(secondary)) {
      this.runPrimary(this.primary.onConnectionLost(this.nowMs, id, 'connection refused'));
      return;
    }
    this.connections.set(id, {
      secondary,
      open: true,
      toSecondary: new FrameDecoder(),
      toPrimary: new FrameDecoder(),
    });
    this.runSecondary(secondary, site.onConnectionOpened(this.nowMs, id));
    this.runPrimary(this.primary.onConnected(this.nowMs, id));
  }

  private disconnect(id: number, by: 'primary' | 'secondary'): void {
    const connection = this.connections.get(id);
    if (!connection?.open) return;
    connection.open = false;
    if (by === 'primary') {
      const site = this.secondaries[connection.secondary];
      if (site)
        this.runSecondary(connection.secondary, site.onConnectionLost(this.nowMs, id, 'closed by primary'));
    } else {
      this.runPrimary(this.primary.onConnectionLost(this.nowMs, id, 'closed by secondary'));
    }
  }

  private runSecondary(index: number, actions: SecondaryAction[]): void {
    const site = this.secondaries[index];
    for (const action of actions) {
      switch (action.type) {
        case 'send': {
          const connection = this.connections.get(action.connection);
          if (!connection?.open) break;
          for (const frame of throughWire(action.frame, connection.toPrimary)) {
            this.runPrimary(this.primary.onFrame(this.nowMs, action.connection, frame));
          }
          break;
        }
        case 'close':
          this.disconnect(action.connection, 'secondary');
          break;
        case 'journal-append':
          (this.secondaryJournals[index] as SecondaryRecord[]).push(action.record);
          break;
        case 'journal-sync':
          if (site) this.runSecondary(index, site.onJournalSynced(this.nowMs, action.upTo));
          break;
        case 'volume-write':
          this.writeSecondaryVolume(index, action.extent);
          break;
        case 'volume-write-from-journal': {
          const journal = this.secondaryJournals[index] as SecondaryRecord[];
          for (const run of action.runs)
            this.writeSecondaryVolume(
              index,
              extentFromJournal(run, (seq) => journal[seq - 1]),
            );
          break;
        }
        case 'volume-sync':
          if (site) this.runSecondary(index, site.onVolumesSynced(this.nowMs, action.token));
          break;
        case 'apply-step':
          if (site) this.runSecondary(index, site.onApplyStep(this.nowMs));
          break;
        case 'log':
          this.logs.push(`${action.entry.event} ${JSON.stringify(action.entry.fields)}`);
          break;
        case 'journal-release':
          break;
        case 'promotion-requested':
          this.promotionsRequested.push({
            secondary: index,
            cycle: action.cycle,
            generation: action.generation,
          });
          if (this.refuseSwitchover)
            this.runSecondary(index, [
              {
                type: 'send',
                connection: action.connection,
                frame: { type: 'error', code: 'switchover-refused', message: this.refuseSwitchover },
              },
            ]);
          break;
      }
    }
  }

  /** Starts a planned switchover on the primary (docs/failover.md). */
  beginSwitchover(secondary: string, generation: string): void {
    this.runPrimary(this.primary.beginSwitchover(this.nowMs, secondary, generation));
  }

  private writeSecondaryVolume(index: number, extent: Extent): void {
    const volume = (this.volumes[index] as Uint8Array[])[extent.volume] as Uint8Array;
    const start = extent.block * blockBytes;
    if (extent.data) volume.set(extent.data, start);
    else volume.fill(0, start, start + extent.blockCount * blockBytes);
  }

  /** First byte of a block as a secondary's volume file holds it. */
  byteAt(secondary: number, volume: number, block: number): number {
    return ((this.volumes[secondary] as Uint8Array[])[volume] as Uint8Array)[block * blockBytes] as number;
  }

  endsOfCycles(secondary: number): { cycle: number; coversFrom: number }[] {
    return (this.framesToSecondary[secondary] as Frame[]).flatMap((frame) =>
      frame.type === 'end-of-cycle' ? [{ cycle: frame.cycle, coversFrom: frame.coversFrom }] : [],
    );
  }
}
