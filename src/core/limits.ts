/**
 * Every bound of the replication core, in one place, with its unit in its name.
 * Input over a bound is refused before anything is allocated for it.
 */
export const limits = {
  /** Largest frame payload accepted from a peer (bytes after the 20-byte header). */
  frameBytesMax: 8 * 1024 * 1024,
  /** Largest data carried by one DATA packet; extents longer than this are split. */
  packetBytesMax: 1024 * 1024,
  /**
   * Blocks a secondary folds or issues writes for in one step of an apply before it lets other
   * events in (a fold of 16,384 blocks takes milliseconds; a gigabyte cycle at once took seconds).
   */
  applyStepBlocksMax: 16_384,
  /**
   * DATA packets one data-batch frame carries (protocol 5): the primary gathers small packets up
   * to packetBytesMax of data per frame; a packet of 512-byte blocks each would be 2,048 of them.
   */
  dataBatchPacketsMax: 4096,
  /**
   * The payload a compressed frame may expand to (protocol 6): the largest the primary builds, a
   * data-batch closed past packetBytesMax by one more packet of up to packetBytesMax, with a u32
   * count, and a u32 length and a 32-byte head per packet. A small frame claiming more is refused
   * before anything is decompressed.
   */
  compressedInnerBytesMax: 2 * 1024 * 1024 + 4 + 4096 * (4 + 32),
  /** Packets one cycle may consist of. */
  packetsPerCycleMax: 1 << 24,
  /** Volumes in one group. */
  volumesMax: 256,
  /** UTF-8 bytes of a group, secondary or volume name. */
  nameBytesMax: 64,
  /** UTF-8 bytes of the human-readable message in an ERROR frame. */
  errorMessageBytesMax: 1024,
  /** Connections one site link may use in parallel. */
  connectionsPerLinkMax: 16,
  /** Secondaries one primary serves. */
  secondariesMax: 8,
  /** Sequencer nodes feeding one group. */
  nodesMax: 16,
  /** Incomplete cycles a secondary buffers at once (the primary's in-flight window is smaller). */
  receiveCyclesBufferedMax: 64,
  /** Generations a hello carries, newest last; older ones are left out of it. */
  generationsInHelloMax: 64,
  /** Extents one divergence frame carries (14 bytes each on the wire: well inside frameBytesMax). */
  divergenceExtentsPerFrameMax: 65536,
  /** Extents a rejoining site states in all (docs/failover.md): coarser chunks beyond that. */
  divergenceExtentsMax: 1 << 20,
  /**
   * Bytes a secondary keeps free on its journal's disk while it stages a resync: past this it
   * refuses more (docs/resync.md) rather than fill the disk, leaving room for its applied markers,
   * site.json and whatever else shares the disk.
   */
  stagingFreeBytesMin: 64 * 1024 * 1024,
  /** Smallest and largest block size. */
  blockBytesMin: 512,
  blockBytesMax: 1024 * 1024,
} as const;

/**
 * How much of a link's outgoing data is built ahead of its sockets, and how much is written per
 * turn of the event loop. Small, so that a heartbeat never waits behind megabytes of data in this
 * process and timers and reads run between turns however large the cycle being sent.
 */
export const linkQueue = {
  /** Built frames waiting on one link's connections: packets are built only while fewer wait. */
  framesLow: 64,
  /** Bytes of block data built and waiting on one link's connections: the same, in bytes. */
  bytesLow: 4 * 1024 * 1024,
  /** Bytes of frames one connection writes to its socket per turn before other work runs. */
  turnBytesMax: 4 * 1024 * 1024,
} as const;

/** Relations between the fixed bounds, checked once when the module loads. */
function checkLimits(): void {
  const dataFrameHeadBytes = 64;
  if (limits.packetBytesMax + dataFrameHeadBytes > limits.frameBytesMax) {
    throw new Error('limits: a full DATA packet must fit in frameBytesMax');
  }
  if (limits.blockBytesMax > limits.packetBytesMax) {
    throw new Error('limits: one block must fit in one packet');
  }
  if (linkQueue.bytesLow < limits.packetBytesMax || linkQueue.turnBytesMax < limits.packetBytesMax) {
    throw new Error('limits: a link queue and a turn must each hold a full packet');
  }
}
checkLimits();

/** Timings of the site link; the simulator and the daemons pass their own. */
export interface LinkTimings {
  /** Send a heartbeat when nothing else was sent for this long. */
  heartbeatMsInterval: number;
  /** Declare the link failed when nothing arrived for this long. */
  heartbeatMsTimeout: number;
  /** First reconnect delay; doubles on each failed attempt. */
  reconnectMsMin: number;
  /** Reconnect delays never exceed this. */
  reconnectMsMax: number;
  /** Closed cycles one link may have sent but not yet seen STORED for. */
  cyclesInFlightMax: number;
  /**
   * Declare the link failed when an end-of-cycle frame went out and the secondary's stored number
   * did not move for this long, though it heartbeats: its storage has failed or hangs inside.
   */
  storedProgressMsTimeout: number;
}

export const defaultLinkTimings: LinkTimings = {
  heartbeatMsInterval: 1000,
  heartbeatMsTimeout: 5000,
  reconnectMsMin: 100,
  reconnectMsMax: 5000,
  cyclesInFlightMax: 4,
  storedProgressMsTimeout: 30_000,
};

/** Checks how the timings relate; a bad combination is a configuration error, caught at start. */
export function checkLinkTimings(timings: LinkTimings): string[] {
  const problems: string[] = [];
  if (timings.heartbeatMsInterval <= 0) problems.push('heartbeatMsInterval must be positive');
  if (timings.heartbeatMsTimeout < 2 * timings.heartbeatMsInterval) {
    problems.push('heartbeatMsTimeout must be at least twice heartbeatMsInterval');
  }
  if (timings.reconnectMsMin <= 0 || timings.reconnectMsMax < timings.reconnectMsMin) {
    problems.push('reconnectMsMin must be positive and not above reconnectMsMax');
  }
  if (!Number.isSafeInteger(timings.cyclesInFlightMax) || timings.cyclesInFlightMax < 1) {
    problems.push('cyclesInFlightMax must be a positive integer');
  }
  if (timings.storedProgressMsTimeout < timings.heartbeatMsTimeout) {
    problems.push('storedProgressMsTimeout must be at least heartbeatMsTimeout');
  }
  return problems;
}
