/** One simulated scenario, drawn entirely from its seed. */
import type { LinkTimings } from '../core/limits.ts';
import type { AckMode, GroupShape } from '../core/types.ts';
import { Random } from './random.ts';

export const faultKinds = [
  'connection-drop',
  'connection-stall',
  'byte-corrupt',
  'link-partition',
  'primary-crash',
  'primary-machine-crash',
  'secondary-crash',
  'secondary-machine-crash',
] as const;
export type FaultKind = (typeof faultKinds)[number];

export interface Fault {
  atMs: number;
  kind: FaultKind;
  /** Which secondary (link or site) the fault hits, where it applies. */
  target: number;
  /** How long a stall or partition lasts, or how long a crashed site stays down. */
  durationMs: number;
}

export interface Scenario {
  seed: number;
  shape: GroupShape;
  secondaries: string[];
  nodes: number;
  ack: AckMode;
  connectionsPerLink: number;
  cycleMsMin: number;
  cyclesQueuedMax: number;
  timings: LinkTimings;
  sources: number;
  /** Chance that a write also depends on another source's last acknowledged write. */
  crossDependencyChance: number;
  thinkMsMax: number;
  latencyMs: number[];
  storageMsMax: number;
  nodeSwitchMsMax: number;
  tickMs: number;
  faultPhaseMs: number;
  settleMsMax: number;
  faults: Fault[];
}

export const simBlockBytes = 512;

/**
 * Draws the scenario of `seed`. `keepFaults` (indices into the drawn fault schedule) replays the
 * same scenario with only those faults: the shrinker's way to a shorter failing run.
 */
export function drawScenario(seed: number, keepFaults?: readonly number[]): Scenario {
  const random = new Random(seed);
  const volumeCount = random.between(1, 4);
  const shape: GroupShape = {
    group: 'sim',
    blockBytes: simBlockBytes,
    volumes: Array.from({ length: volumeCount }, (_, index) => ({
      name: `vol${index}`,
      sizeBytes: random.between(16, 96) * simBlockBytes,
    })),
  };
  const secondaryCount = random.between(1, 3);
  const multiNode = random.chance(0.4);
  const nodes = multiNode ? random.between(2, 3) : 1;
  const ack = chooseAck(random, nodes);
  const faultPhaseMs = random.between(3000, 6000);
  const heartbeatMsInterval = random.between(40, 120);
  return {
    seed,
    shape,
    secondaries: Array.from({ length: secondaryCount }, (_, index) => `dr${index + 1}`),
    nodes,
    ack,
    connectionsPerLink: random.between(1, 3),
    cycleMsMin: random.between(10, 250),
    cyclesQueuedMax: random.between(1, 4),
    timings: {
      heartbeatMsInterval,
      heartbeatMsTimeout: heartbeatMsInterval * random.between(3, 6),
      reconnectMsMin: random.between(20, 100),
      reconnectMsMax: random.between(300, 1500),
      cyclesInFlightMax: random.between(1, 4),
      // Drawn from nothing, so every seed keeps the scenario it had before this bound existed.
      storedProgressMsTimeout: heartbeatMsInterval * 50,
    },
    sources: random.between(2, 8),
    crossDependencyChance: random.pick([0.2, 0.5, 0.9]),
    thinkMsMax: random.between(2, 40),
    latencyMs: Array.from({ length: secondaryCount }, () => random.between(1, 40)),
    storageMsMax: random.between(0, 8),
    nodeSwitchMsMax: random.between(1, 40),
    tickMs: 10,
    faultPhaseMs,
    settleMsMax: 30_000,
    faults: drawFaults(random.fork(), faultPhaseMs, secondaryCount).filter(
      (_, index) => keepFaults === undefined || keepFaults.includes(index),
    ),
  };
}

/** Several nodes need ack mode cycle (docs/core.md); the configuration refuses anything else. */
function chooseAck(random: Random, nodes: number): AckMode {
  if (nodes > 1) return 'cycle';
  return random.chance(0.5) ? 'immediate' : 'cycle';
}

function drawFaults(random: Random, faultPhaseMs: number, secondaryCount: number): Fault[] {
  const count = random.between(2, 14);
  const weights: [FaultKind, number][] = [
    ['connection-drop', 5],
    ['connection-stall', 3],
    ['byte-corrupt', 3],
    ['link-partition', 2],
    ['primary-crash', 1],
    ['primary-machine-crash', 1],
    ['secondary-crash', 2],
    ['secondary-machine-crash', 2],
  ];
  const total = weights.reduce((sum, [, weight]) => sum + weight, 0);
  const faults: Fault[] = [];
  for (let i = 0; i < count; i++) {
    let draw = random.int(total);
    let kind: FaultKind = 'connection-drop';
    for (const [candidate, weight] of weights) {
      if (draw < weight) {
        kind = candidate;
        break;
      }
      draw -= weight;
    }
    faults.push({
      atMs: random.between(100, faultPhaseMs),
      kind,
      target: random.int(secondaryCount),
      durationMs: random.between(20, 1500),
    });
  }
  return faults.sort((a, b) => a.atMs - b.atMs);
}

export function describeScenario(scenario: Scenario): string {
  const volumes = scenario.shape.volumes
    .map((volume) => volume.sizeBytes / scenario.shape.blockBytes)
    .join('+');
  return (
    `seed ${scenario.seed}: ${scenario.secondaries.length} secondaries, volumes of ${volumes} blocks, ` +
    `${scenario.nodes} node(s), ack ${scenario.ack}, ${scenario.connectionsPerLink} connection(s)/link, ` +
    `cycle.intervalMinMs ${scenario.cycleMsMin}, queuedMax ${scenario.cyclesQueuedMax}, ${scenario.sources} sources, ` +
    `faults: ${scenario.faults.map((fault) => `${fault.kind}@${fault.atMs}`).join(' ') || 'none'}`
  );
}
