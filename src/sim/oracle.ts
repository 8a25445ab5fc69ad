/**
 * The simulator's model of what the primary holds, kept apart from the code under test. It knows
 * every write a source issued, the journal record that carried it (so it knows from its own disk
 * model which writes a crash took back), and the cycle each write was tagged with. From that it
 * computes the group's image at the end of any closed cycle, and which write last touched each
 * block of that image, to check consistency and dependent-write order.
 */
import type { CycleNumber, Extent, GroupShape } from '../core/types.ts';
import { volumeBlocks } from '../core/types.ts';

export interface SimWrite {
  id: number;
  source: number;
  extent: Extent;
  /** Writes that were acknowledged before this one was issued, and that it depends on. */
  deps: number[];
  /** Journal record id (the simulator's disk) once appended; cycle tag from that record. */
  logId: number | null;
  cycle: CycleNumber | null;
  ackOrder: number | null;
  lost: boolean;
}

export interface Image {
  cycle: CycleNumber;
  volumes: Uint8Array[];
  /** Per volume and block, the id of the write that last touched it, or -1. */
  lastWriter: Int32Array[];
}

/** Self-describing block content: the write id, the block's index inside the write, then a fill byte. */
export function blockContent(writeId: number, indexInWrite: number, blockBytes: number): Uint8Array {
  const bytes = new Uint8Array(blockBytes);
  bytes.fill(writeId & 0xff);
  const view = new DataView(bytes.buffer);
  view.setUint32(0, writeId);
  view.setUint32(4, indexInWrite);
  return bytes;
}

export function describeBlock(bytes: Uint8Array): string {
  if (bytes.every((byte) => byte === 0)) return 'zeroes';
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  return `write ${view.getUint32(0)}.${view.getUint32(4)}`;
}

const checkpointCycles = 32;

export class Oracle {
  readonly writes = new Map<number, SimWrite>();
  /** Journaled, not lost writes by cycle, in journal order. */
  private readonly byCycle = new Map<CycleNumber, SimWrite[]>();
  /** Highest cycle the primary closed durably; images up to it are final. */
  closed: CycleNumber = 0;
  private readonly cache = new Map<CycleNumber, Image>();
  /** Dependent-write violations found while building images. */
  readonly violations: string[] = [];

  constructor(private readonly shape: GroupShape) {
    this.cache.set(0, this.emptyImage());
  }

  issue(write: SimWrite): void {
    this.writes.set(write.id, write);
  }

  journaled(writeId: number, logId: number, cycle: CycleNumber): void {
    const write = this.writes.get(writeId);
    if (!write) throw new Error(`journal record for unknown write ${writeId}`);
    write.logId = logId;
    write.cycle = cycle;
    const list = this.byCycle.get(cycle) ?? [];
    list.push(write);
    this.byCycle.set(cycle, list);
  }

  /** A crash of the primary's machine: journaled writes of open cycles whose record did not survive are gone. */
  dropLost(surviving: Set<number>): SimWrite[] {
    const lost: SimWrite[] = [];
    for (const [cycle, list] of this.byCycle) {
      if (cycle <= this.closed) continue;
      const kept = list.filter((write) => write.logId !== null && surviving.has(write.logId));
      for (const write of list) {
        if (!kept.includes(write)) {
          write.lost = true;
          lost.push(write);
        }
      }
      this.byCycle.set(cycle, kept);
    }
    return lost;
  }

  noteClosed(closed: CycleNumber): void {
    if (closed > this.closed) this.closed = closed;
  }

  /** Newest cycle any surviving write was tagged with. */
  newestTag(): CycleNumber {
    let newest = 0;
    for (const [cycle, list] of this.byCycle) if (list.length > 0 && cycle > newest) newest = cycle;
    return newest;
  }

  /** The group's image at the end of closed cycle `cycle`. */
  image(cycle: CycleNumber): Image {
    const cached = this.cache.get(cycle);
    if (cached) return cached;
    if (cycle > this.closed) throw new Error(`image of cycle ${cycle}, only ${this.closed} is closed`);
    let base = 0;
    for (const known of this.cache.keys()) if (known < cycle && known > base) base = known;
    const image = this.copy(this.cache.get(base) as Image);
    for (let next = base + 1; next <= cycle; next++) {
      for (const write of this.byCycle.get(next) ?? []) this.applyWrite(image, write);
      if (next % checkpointCycles === 0 && next < cycle && !this.cache.has(next)) {
        const checkpoint = this.copy(image);
        checkpoint.cycle = next;
        this.checkDependencies(checkpoint);
        this.cache.set(next, checkpoint);
      }
    }
    image.cycle = cycle;
    this.checkDependencies(image);
    this.remember(image);
    return image;
  }

  private applyWrite(image: Image, write: SimWrite): void {
    const { volume, block, blockCount, data } = write.extent;
    const bytes = image.volumes[volume] as Uint8Array;
    const start = block * this.shape.blockBytes;
    if (data) bytes.set(data, start);
    else bytes.fill(0, start, start + blockCount * this.shape.blockBytes);
    (image.lastWriter[volume] as Int32Array).fill(write.id, block, block + blockCount);
  }

  /** In every image, a visible write's dependencies are visible too (or overwritten by newer writes). */
  private checkDependencies(image: Image): void {
    image.lastWriter.forEach((writers, volume) => {
      const seen = new Set<number>();
      for (const writerId of writers) {
        if (writerId < 0 || seen.has(writerId)) continue;
        seen.add(writerId);
        const writer = this.writes.get(writerId) as SimWrite;
        for (const depId of writer.deps) this.checkDependency(image, writer, depId, volume);
      }
    });
  }

  private checkDependency(image: Image, writer: SimWrite, depId: number, volume: number): void {
    const dep = this.writes.get(depId) as SimWrite;
    if (dep.lost) return;
    const holder = (image.lastWriter[dep.extent.volume] as Int32Array)[dep.extent.block] as number;
    const holderWrite = holder >= 0 ? this.writes.get(holder) : undefined;
    if (holderWrite && !isOlder(holderWrite, dep)) return;
    this.violations.push(
      `dependent write: image of cycle ${image.cycle} holds write ${writer.id} (cycle ${writer.cycle}, volume ${volume}) ` +
        `but not write ${dep.id} (cycle ${dep.cycle}) it depends on; block ${dep.extent.volume}:${dep.extent.block} ` +
        `holds ${holder < 0 ? 'nothing' : `write ${holder}`}`,
    );
  }

  /** Keeps the empty image, a checkpoint every 32 cycles, and the 12 newest images. */
  private remember(image: Image): void {
    this.cache.set(image.cycle, image);
    const newest = [...this.cache.keys()].sort((a, b) => b - a).slice(0, 12);
    for (const cycle of this.cache.keys()) {
      if (cycle !== 0 && cycle % checkpointCycles !== 0 && !newest.includes(cycle)) this.cache.delete(cycle);
    }
  }

  private emptyImage(): Image {
    const volumes = this.shape.volumes.map((volume) => new Uint8Array(volume.sizeBytes));
    const lastWriter = this.shape.volumes.map((_, index) =>
      new Int32Array(volumeBlocks(this.shape, index)).fill(-1),
    );
    return { cycle: 0, volumes, lastWriter };
  }

  private copy(image: Image): Image {
    return {
      cycle: image.cycle,
      volumes: image.volumes.map((bytes) => bytes.slice()),
      lastWriter: image.lastWriter.map((writers) => writers.slice()),
    };
  }
}

/** Primary order of two writes to one block: by cycle, then by journal position. */
function isOlder(a: SimWrite, b: SimWrite): boolean {
  const cycleA = a.cycle ?? 0;
  const cycleB = b.cycle ?? 0;
  if (cycleA !== cycleB) return cycleA < cycleB;
  return (a.logId ?? 0) < (b.logId ?? 0);
}
