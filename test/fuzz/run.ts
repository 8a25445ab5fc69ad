/** Runs one fuzz target case after case for a while; case N of seed S is always the same input. */
import { Random } from '../../src/sim/random.ts';
import type { FuzzTarget } from './targets.ts';

export interface FuzzResult {
  cases: number;
  seconds: number;
  failure: { case: number; message: string } | null;
}

export async function runFuzz(
  target: FuzzTarget,
  options: { seed: number; seconds: number; only?: number | undefined },
): Promise<FuzzResult> {
  const started = performance.now();
  const deadline = started + options.seconds * 1000;
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
    if (options.only !== undefined || (cases % 64 === 0 && performance.now() > deadline)) break;
  }
  return { cases, seconds: (performance.now() - started) / 1000, failure: null };
}
