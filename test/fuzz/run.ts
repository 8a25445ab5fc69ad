/** Runs one fuzz target case after case for a while; case N of seed S is always the same input. */
import { Random } from '../../src/sim/random.ts';
import type { FuzzTarget } from './targets.ts';

export interface FuzzResult {
  cases: number;
  seconds: number;
  failure: { case: number; message: string } | null;
}

export interface FuzzRunOptions {
  seed: number;
  /** Time budget; the run goes on past it until `casesMin` cases ran, so a slow machine still tests. */
  seconds: number;
  casesMin?: number;
  /** Stops here even if time is left (a planted defect must be caught within this many cases). */
  casesMax?: number;
  /** Replays this one case. */
  only?: number | undefined;
}

export async function runFuzz(target: FuzzTarget, options: FuzzRunOptions): Promise<FuzzResult> {
  const started = performance.now();
  const deadline = started + options.seconds * 1000;
  const casesMin = options.casesMin ?? 0;
  const casesMax = options.casesMax ?? Number.POSITIVE_INFINITY;
  let cases = 0;
  for (let index = options.only ?? 0; ; index++) {
    // Each case has its own generator, so one case replays alone from (seed, case).
    const random = new Random(options.seed * 1_000_003 + index);
    try {
      await target(random);
    } catch (error) {
      return {
        cases: cases + 1,
        seconds: (performance.now() - started) / 1000,
        failure: { case: index, message: (error as Error).stack ?? String(error) },
      };
    }
    cases++;
    if (options.only !== undefined || cases >= casesMax) break;
    if (cases >= casesMin && performance.now() > deadline) break;
  }
  return { cases, seconds: (performance.now() - started) / 1000, failure: null };
}
