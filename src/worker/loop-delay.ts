// The worker's event-loop delay for `handover monit` and /metrics: the mean
// lateness, since the previous heartbeat, of a probe timer due every
// PERIOD_MS. The time between two of its runs is PERIOD_MS plus how late the
// loop ran it, so the period is taken off. The mean lateness of a periodic
// probe does not depend on its period (a block of B ms is hit with chance
// B/period and then costs B/2 on average), so a coarse timer measures the
// same thing, only with fewer samples: 5 wakeups a second.
//
// What perf_hooks.monitorEventLoopDelay measures, without node:perf_hooks:
// loading it cost every worker about 1 ms of CPU, that is every reload 1 ms
// per worker (bench/RESULTS.md, "cost-exit"). The probe starts with the first
// heartbeat; a worker that drains before any never starts it.

const PERIOD_MS = 200;

interface Probe {
  last: bigint;
  lateMs: number;
  samples: number;
}

let probe: Probe | undefined;

/**
 * Mean delay in ms since the previous call (0 on the first and when no
 * sample was taken). The first call starts the probe, unless `start` is
 * false (the worker's last report): then, without a probe, undefined.
 */
export function loopDelayMs(start = true): number | undefined {
  if (!probe) {
    if (!start) return undefined;
    const p: Probe = { last: process.hrtime.bigint(), lateMs: 0, samples: 0 };
    setInterval(() => {
      const now = process.hrtime.bigint();
      p.lateMs += Math.max(0, Number(now - p.last) / 1e6 - PERIOD_MS);
      p.samples++;
      p.last = now;
    }, PERIOD_MS).unref();
    probe = p;
    return 0;
  }
  const mean = probe.samples > 0 ? probe.lateMs / probe.samples : 0;
  probe.lateMs = 0;
  probe.samples = 0;
  return Math.round(mean * 10) / 10;
}
