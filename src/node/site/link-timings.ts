/** The link's timings as the state machines take them, from the config's `link` section (both roles). */
import type { LinkTimings } from '../../core/limits.ts';
import type { FileConfig } from '../../ops/config.ts';

export function linkTimingsOf(link: FileConfig['link']): LinkTimings {
  return {
    heartbeatMsInterval: link.heartbeatMs,
    heartbeatMsTimeout: link.timeoutMs,
    reconnectMsMin: link.reconnectMinMs,
    reconnectMsMax: link.reconnectMaxMs,
    cyclesInFlightMax: link.cyclesInFlightMax,
    storedProgressMsTimeout: link.storedProgressTimeoutMs,
  };
}
