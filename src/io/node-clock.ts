/** The process's own clock and timers, for production. */
import type { Clock, Timer } from './clock.ts';

export const nodeClock: Clock = {
  now: () => Date.now(),
  after(ms, callback, options) {
    const handle = setTimeout(callback, ms);
    if (options?.background) handle.unref();
    return { cancel: () => clearTimeout(handle) } satisfies Timer;
  },
  every(ms, callback) {
    const handle = setInterval(callback, ms);
    return { cancel: () => clearInterval(handle) };
  },
  soon(callback) {
    setImmediate(callback);
  },
};
