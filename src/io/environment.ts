/**
 * Everything a site takes from the world: files, time, randomness and (in the simulator) the network.
 * `nodeEnvironment` is the real one; the simulator builds one per site from its seed, so the same
 * PrimaryNode and SecondaryNode code runs in both.
 */
import { randomBytes } from 'node:crypto';
import type { Clock } from './clock.ts';
import type { FileSystem } from './file-system.ts';
import type { LinkNetwork } from './network.ts';
import { nodeClock } from './node-clock.ts';
import { nodeFileSystem } from './node-file-system.ts';

export interface SiteEnvironment {
  fs: FileSystem;
  clock: Clock;
  /** Uniform in [0, 1): backoff jitter and the like. */
  random: () => number;
  /** Random bytes: site ids, generation ids. */
  randomBytes: (count: number) => Uint8Array;
  /** The link's sockets; absent in production, where the config decides TCP or TLS. */
  network?: LinkNetwork;
  /**
   * Whether /metrics carries the process's own figures (CPU, memory, event loop): yes in
   * production; no in the simulator, where thousands of sites share one process.
   */
  processMetrics?: boolean;
}

export const nodeEnvironment: SiteEnvironment = {
  fs: nodeFileSystem,
  clock: nodeClock,
  random: Math.random,
  randomBytes: (count) => new Uint8Array(randomBytes(count)),
};
