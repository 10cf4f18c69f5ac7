// The worker's event-loop delay for `handover monit` and /metrics: the mean
// lateness since the previous heartbeat of Node's histogram timer
// (perf_hooks.monitorEventLoopDelay). Each sample is the time between two of
// its timer's runs, that is RESOLUTION_MS plus how late the loop ran it, so the
// resolution is taken off. The mean lateness of a periodic probe does not
// depend on its period (a block of B ms is hit with chance B/period and then
// costs B/2 on average), so a coarse timer measures the same thing, only with
// fewer samples: 5 wakeups a second instead of the 50 a 20 ms timer cost every
// idle worker.
//
// node:perf_hooks loads with the first heartbeat, not at boot, and a worker
// that drains before any heartbeat never loads it (about 1 ms of CPU each
// time, in every worker of every reload: bench/RESULTS.md, "cost").
import type { IntervalHistogram } from 'node:perf_hooks';

const RESOLUTION_MS = 200;

let histogram: IntervalHistogram | undefined;

/**
 * Mean delay in ms since the previous call (0 on the first and when no
 * sample was taken). The first call starts the timer, unless `start` is
 * false (the worker's last report): then, without a timer, undefined.
 */
export function loopDelayMs(start = true): number | undefined {
  if (!histogram) {
    if (!start) return undefined;
    const { monitorEventLoopDelay } = require('node:perf_hooks') as typeof import('node:perf_hooks');
    histogram = monitorEventLoopDelay({ resolution: RESOLUTION_MS });
    histogram.enable();
    return 0;
  }
  const mean = histogram.count > 0 ? Math.max(0, histogram.mean / 1e6 - RESOLUTION_MS) : 0;
  histogram.reset();
  return Math.round(mean * 10) / 10;
}

