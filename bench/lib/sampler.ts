/** Polls a primary's /status every few milliseconds while a workload runs. */
import type { CyclerepSites, PrimaryStatus } from './servers.ts';

export interface StatusSample {
  atMs: number;
  status: PrimaryStatus;
}

export function sampleStatus(sites: CyclerepSites, everyMs = 100): { stop: () => Promise<StatusSample[]> } {
  const samples: StatusSample[] = [];
  let running = true;
  const loop = (async () => {
    while (running) {
      try {
        samples.push({ atMs: performance.now(), status: await sites.status() });
      } catch {
        // a poll that failed is simply missing
      }
      await new Promise((resolve) => setTimeout(resolve, everyMs));
    }
  })();
  return {
    stop: async () => {
      running = false;
      await loop;
      return samples;
    },
  };
}
