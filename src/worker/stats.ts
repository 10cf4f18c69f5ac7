// What a worker counts for the master's metrics and the canary's verdict:
// requests, 5xx responses and a response-duration histogram, plus its CPU
// time and event-loop delay (loop-delay.ts), sampled with each heartbeat
// answer. Per request this is one 'finish' listener and a few additions.
import type * as http from 'node:http';
import { LATENCY_BUCKETS_S, type WorkerSample } from '../protocol';
import { loopDelayMs } from './loop-delay';

const BOUNDS_NS = LATENCY_BUCKETS_S.map((s) => BigInt(Math.round(s * 1e9)));

export class RequestStats {
  requests = 0;
  private errors = 0;
  private lastRss?: number;
  /** Per bucket (the last one +Inf), not cumulative; then the total in microseconds. */
  private readonly buckets = new Array<number>(LATENCY_BUCKETS_S.length + 1).fill(0);
  private sumUs = 0;

  /** A connection on a plain net server: counted, no status or duration. */
  connection(): void {
    this.requests++;
  }

  request(res: http.ServerResponse): void {
    this.requests++;
    const started = process.hrtime.bigint();
    res.once('finish', () => {
      const ns = process.hrtime.bigint() - started;
      if (res.statusCode >= 500) this.errors++;
      let i = 0;
      while (i < BOUNDS_NS.length && ns > BOUNDS_NS[i]) i++;
      this.buckets[i]++;
      this.sumUs += Number(ns / 1000n);
    });
  }

  /**
   * Resident memory. Node reads it from /proc/self/stat, which needs a free
   * fd: with the fd table full (the application's own leak, or a flood of
   * connections) it throws EMFILE, and an exception in the heartbeat answer
   * would kill a worker that is otherwise serving. Then the last figure read
   * stands (undefined before the first: maxMemory waits).
   */
  private rss(): number | undefined {
    try {
      this.lastRss = process.memoryUsage.rss();
    } catch {
      // EMFILE/ENFILE: keep the last figure
    }
    return this.lastRss;
  }

  /** The heartbeat answer's numbers. `last`: the worker's final report, which does not start the loop-delay probe. */
  sample(last = false): WorkerSample {
    const { user, system } = process.cpuUsage();
    let running = 0;
    const latency = this.buckets.map((n) => (running += n));
    latency.push(Math.round(this.sumUs));
    return { requests: this.requests, rss: this.rss(), cpu: user + system, loopDelayMs: loopDelayMs(!last), errors: this.errors, latency };
  }
}
