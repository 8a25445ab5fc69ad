/** What a simulated run counts; one run's figures and a whole report's add up the same way. */
import { type FaultKind, faultKinds } from './scenario.ts';

export interface SimStats {
  faults: Record<FaultKind, number>;
  recoveries: number;
  recoveryCyclesApplied: number;
  maxLagCycles: number;
  cyclesClosed: number;
  writes: number;
  events: number;
}

export function emptyStats(): SimStats {
  return {
    faults: Object.fromEntries(faultKinds.map((kind) => [kind, 0])) as Record<FaultKind, number>,
    recoveries: 0,
    recoveryCyclesApplied: 0,
    maxLagCycles: 0,
    cyclesClosed: 0,
    writes: 0,
    events: 0,
  };
}

/** Adds `part` into `total`; the lag is the largest seen, everything else sums. */
export function addStats(total: SimStats, part: SimStats): void {
  for (const kind of faultKinds) total.faults[kind] += part.faults[kind];
  total.recoveries += part.recoveries;
  total.recoveryCyclesApplied += part.recoveryCyclesApplied;
  total.maxLagCycles = Math.max(total.maxLagCycles, part.maxLagCycles);
  total.cyclesClosed += part.cyclesClosed;
  total.writes += part.writes;
  total.events += part.events;
}
