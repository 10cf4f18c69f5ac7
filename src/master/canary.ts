// The canary's verdict (`rollout: 'canary'`): the new generation's first
// slots serve for `canaryWindow` ms while the old generation's other slots
// serve beside them; then the two are compared over that same window, from
// the counters each worker reports with its heartbeats (requests, 5xx
// responses, response durations). Unhealthy: a canary exited, its error rate
// is more than `canaryMaxErrorRate` above the baseline's, or its p99 is more
// than `canaryMaxLatencyRatio` times the baseline's. With too few requests to
// judge, only a crash fails it. The lifecycle (lifecycle.ts) acts on the
// verdict: continue the rollout, or put the parked old workers back.
import { LATENCY_BUCKETS_S, type WorkerSample } from '../protocol';
import type { Clock } from './lifecycle';

/** Below this many requests in the window (canary or baseline) a rate or a p99 says nothing. */
export const CANARY_MIN_REQUESTS = 20;
/** A p99 under this is never "slow": a fresh process's first requests make small p99s noisy. */
export const LATENCY_FLOOR_S = 0.05;

export interface CanaryLimits {
  /** ms the canary serves before it is judged. */
  window: number;
  /** How far (a fraction, 0.01 = one percentage point) its 5xx rate may exceed the baseline's. */
  maxErrorRate: number;
  /** How many times the baseline's p99 (at least LATENCY_FLOOR_S) its p99 may be. */
  maxLatencyRatio: number;
}

/** A worker as the verdict sees it: its last heartbeat's counters, and its exit. */
export interface Subject {
  readonly sample?: WorkerSample;
  readonly alive: boolean;
  readonly exited: Promise<void>;
  describe(): string;
}

/** Counts over a window, summed over a group of workers. */
export interface WindowCounts {
  requests: number;
  errors: number;
  /** Cumulative count per LATENCY_BUCKETS_S bucket, then +Inf. */
  buckets: number[];
}

export interface Verdict {
  healthy: boolean;
  /** The verdict in numbers, for the log and the failed reload's message. */
  reason: string;
  canary: WindowCounts;
  baseline: WindowCounts;
}

function counts(sample: WorkerSample | undefined): WindowCounts {
  return {
    requests: sample?.requests ?? 0,
    errors: sample?.errors ?? 0,
    buckets: sample?.latency?.slice(0, LATENCY_BUCKETS_S.length + 1) ?? new Array<number>(LATENCY_BUCKETS_S.length + 1).fill(0),
  };
}

function minus(a: WindowCounts, b: WindowCounts): WindowCounts {
  return {
    requests: Math.max(0, a.requests - b.requests),
    errors: Math.max(0, a.errors - b.errors),
    buckets: a.buckets.map((n, i) => Math.max(0, n - b.buckets[i])),
  };
}

function plus(a: WindowCounts, b: WindowCounts): WindowCounts {
  return { requests: a.requests + b.requests, errors: a.errors + b.errors, buckets: a.buckets.map((n, i) => n + b.buckets[i]) };
}

const none = (): WindowCounts => counts(undefined);

/** The q-quantile of cumulative buckets, interpolated inside its bucket as Prometheus' histogram_quantile does. */
export function quantile(q: number, buckets: number[]): number {
  const total = buckets[buckets.length - 1];
  if (total === 0) return 0;
  const rank = q * total;
  const i = buckets.findIndex((n) => n >= rank);
  if (i >= LATENCY_BUCKETS_S.length) return LATENCY_BUCKETS_S[LATENCY_BUCKETS_S.length - 1]; // in +Inf: the highest bound
  const lower = i === 0 ? 0 : LATENCY_BUCKETS_S[i - 1];
  const below = i === 0 ? 0 : buckets[i - 1];
  const inBucket = buckets[i] - below;
  return lower + (LATENCY_BUCKETS_S[i] - lower) * (inBucket === 0 ? 1 : (rank - below) / inBucket);
}

const percent = (n: number, of: number) => `${of === 0 ? '0.0' : ((100 * n) / of).toFixed(1)}%`;
const ms = (s: number) => `${Math.round(s * 1000)} ms`;

/** Compares the canary's window with the baseline's; `crash` names a canary that exited. */
export function judge(canary: WindowCounts, baseline: WindowCounts, limits: CanaryLimits, crash?: string): Verdict {
  const verdict = (healthy: boolean, reason: string): Verdict => ({ healthy, reason, canary, baseline });
  if (crash) return verdict(false, crash);
  const rates = `error rate ${percent(canary.errors, canary.requests)} (${canary.errors} of ${canary.requests} requests answered 5xx) ` +
    `against ${percent(baseline.errors, baseline.requests)} (${baseline.errors} of ${baseline.requests}) on the old generation`;
  if (canary.requests < CANARY_MIN_REQUESTS) {
    return verdict(true, `too few requests to judge (${canary.requests} in ${limits.window} ms, fewer than ${CANARY_MIN_REQUESTS}); no canary crashed`);
  }
  const baselineRate = baseline.requests >= CANARY_MIN_REQUESTS ? baseline.errors / baseline.requests : 0;
  if (canary.errors / canary.requests > baselineRate + limits.maxErrorRate) {
    return verdict(false, `${rates}; canaryMaxErrorRate allows ${percent(limits.maxErrorRate, 1)} more`);
  }
  const p99 = quantile(0.99, canary.buckets);
  const judged = baseline.requests >= CANARY_MIN_REQUESTS;
  const reference = Math.max(judged ? quantile(0.99, baseline.buckets) : 0, LATENCY_FLOOR_S);
  const latency = `p99 ${ms(p99)} against ${judged ? ms(quantile(0.99, baseline.buckets)) : 'no baseline'}`;
  if (p99 > reference * limits.maxLatencyRatio) {
    return verdict(false, `${latency} (canaryMaxLatencyRatio ${limits.maxLatencyRatio} of ${ms(reference)}); ${rates}`);
  }
  return verdict(true, `${rates}; ${latency}`);
}

/**
 * Watches the canary for `limits.window` ms (ending early if one of its
 * workers exits) and judges it against the baseline over the same window.
 */
export async function watchCanary(canary: Subject[], baseline: Subject[], limits: CanaryLimits, clock: Clock): Promise<Verdict> {
  const started = clock.now();
  const before = new Map<Subject, WindowCounts>([...canary, ...baseline].map((s) => [s, counts(s.sample)]));
  let timer: unknown;
  const lost = await Promise.race([
    new Promise<undefined>((resolve) => (timer = clock.setTimeout(() => resolve(undefined), limits.window))),
    ...canary.map((s) => s.exited.then(() => s)),
  ]);
  clock.clearTimeout(timer);
  const crashed = lost ?? canary.find((s) => !s.alive);
  const windowOf = (group: Subject[]) => group.reduce((sum, s) => plus(sum, minus(counts(s.sample), before.get(s)!)), none());
  // a baseline worker that exited meanwhile has no counts for the window's end: left out
  const crash = crashed && `${crashed.describe()} exited ${clock.now() - started} ms into the canary window (${limits.window} ms)`;
  return judge(windowOf(canary), windowOf(baseline.filter((s) => s.alive)), limits, crash);
}
