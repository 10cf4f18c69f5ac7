// The worker's event-loop delay for `handover monit`: the mean delay since
// the previous heartbeat, from Node's own histogram (libuv timer, 20 ms
// resolution), which costs nothing measurable when nobody looks.
import { type IntervalHistogram, monitorEventLoopDelay } from 'node:perf_hooks';

let histogram: IntervalHistogram | undefined;

/** Mean delay in ms since the previous call (0 on the first). */
export function loopDelayMs(): number {
  if (!histogram) {
    histogram = monitorEventLoopDelay({ resolution: 20 });
    histogram.enable();
    return 0;
  }
  const mean = Number.isFinite(histogram.mean) ? histogram.mean / 1e6 : 0;
  histogram.reset();
  return Math.round(mean * 10) / 10;
}
