/**
 * Runs several concurrent sources against any `write` function (the library API, later NBD):
 * each writes self-describing blocks one at a time and names another source's newest
 * acknowledged write as its dependency.
 */
import { layoutRegions, type SourceRegion, stampBlock } from './blocks.ts';

export interface WorkloadOptions {
  sources: number;
  volumeBlocks: number[];
  blocksPerSource: number;
  blockBytes: number;
  write: (volume: number, offset: number, data: Uint8Array) => Promise<unknown>;
  /** Pause between a source's writes, in ms (0: as fast as acknowledgements come). */
  thinkMs?: number;
  random?: () => number;
}

export class Workload {
  readonly regions: SourceRegion[];
  /** Newest acknowledged counter of each source (-1: none yet). */
  readonly acknowledged: number[];
  writes = 0;
  bytes = 0;
  errors = 0;
  lastError: Error | null = null;
  private running = false;
  private loops: Promise<void>[] = [];

  constructor(private readonly options: WorkloadOptions) {
    this.regions = layoutRegions(options.sources, options.volumeBlocks, options.blocksPerSource);
    this.acknowledged = this.regions.map(() => -1);
  }

  /** Resumes after a restart of the primary: counters go on from what the image shows. */
  resumeFrom(newest: number[]): void {
    newest.forEach((counter, source) => {
      this.acknowledged[source] = Math.max(this.acknowledged[source] as number, counter);
    });
  }

  start(): void {
    this.running = true;
    this.loops = this.regions.map((region) => this.loop(region));
  }

  async stop(): Promise<void> {
    this.running = false;
    await Promise.all(this.loops);
  }

  private async loop(region: SourceRegion): Promise<void> {
    const random = this.options.random ?? Math.random;
    while (this.running) {
      const counter = (this.acknowledged[region.source] as number) + 1;
      const other = Math.floor(random() * this.regions.length);
      const dependencyCounter = this.acknowledged[other] as number;
      const dependency =
        other !== region.source && dependencyCounter >= 0
          ? { source: other, counter: dependencyCounter }
          : null;
      const block = region.firstBlock + (counter % region.blocks);
      const data = stampBlock({ source: region.source, counter, dependency }, this.options.blockBytes);
      try {
        await this.options.write(region.volume, block * this.options.blockBytes, data);
        this.acknowledged[region.source] = counter;
        this.writes++;
        this.bytes += data.length;
      } catch (error) {
        this.errors++;
        this.lastError = error as Error;
        await sleep(50);
      }
      if (this.options.thinkMs) await sleep(this.options.thinkMs * random() * 2);
    }
  }
}

function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}
