// The master's Prometheus endpoint and probes (the `metrics` option):
//   /metrics  counters the master owns, which never go backwards across
//             reloads, recycles and worker deaths (the master lives through
//             them all, as Envoy's counters live through hot restarts), plus
//             each live worker's RSS, CPU and event-loop delay labelled by
//             slot and version, plus the program's own prom-client metrics
//             combined across workers (app-metrics.ts);
//   /healthz  200 while the master lives;
//   /readyz   200 while a generation serves and no stop has begun, 503 from
//             the start of a stop (before stopDelay), so a kubelet takes the
//             pod out of its endpoints while connections are still answered.
// A worker's counters start at 0 in every new process; the master keeps each
// worker's last sample and adds up only the increases, so a dead worker's
// requests stay counted.
import * as http from 'node:http';
import { formatBound, parseAddress } from '../platform/address';
import { LATENCY_BUCKETS_S, type WorkerSample } from '../protocol';

/** Upper bounds (seconds) of handover_reload_duration_seconds. */
const RELOAD_BUCKETS_S = [0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60];

const WORKER_STATES = ['starting', 'ready', 'unresponsive', 'parked', 'draining'];

/** What the metrics read from the master at each scrape. */
export interface MetricsSource {
  generation(): number;
  workers(): { pid: number; slot: number; generation: number; state: string; version?: string; sample?: WorkerSample }[];
  /** Restarts after a crash or a missed heartbeat, over every slot, since the master started. */
  restarts(): number;
  /** A generation serves and no stop has begun. */
  ready(): boolean;
  /** The program's own metrics (prom-client), as Prometheus text; '' when it has none. */
  appMetrics?(): Promise<string>;
}

function label(value: string | number): string {
  return String(value).replace(/\\/g, '\\\\').replace(/"/g, '\\"').replace(/\n/g, '\\n');
}

function labels(pairs: Record<string, string | number>): string {
  const text = Object.entries(pairs).map(([k, v]) => `${k}="${label(v)}"`).join(',');
  return text ? `{${text}}` : '';
}

/** Prometheus text for one metric family. */
function family(name: string, type: string, help: string, samples: [Record<string, string | number>, number][]): string {
  const lines = [`# HELP ${name} ${help}`, `# TYPE ${name} ${type}`];
  for (const [pairs, value] of samples) lines.push(`${name}${labels(pairs)} ${value}`);
  return lines.join('\n');
}

function histogram(name: string, help: string, bounds: number[], cumulative: number[], sum: number): string {
  const lines = [`# HELP ${name} ${help}`, `# TYPE ${name} histogram`];
  bounds.forEach((le, i) => lines.push(`${name}_bucket{le="${le}"} ${cumulative[i]}`));
  lines.push(`${name}_bucket{le="+Inf"} ${cumulative[bounds.length]}`, `${name}_sum ${sum}`, `${name}_count ${cumulative[bounds.length]}`);
  return lines.join('\n');
}

export class Metrics {
  private readonly reloads = { ok: 0, failed: 0 };
  /** Per bucket of RELOAD_BUCKETS_S (cumulative), +Inf last. */
  private readonly reloadBuckets = new Array<number>(RELOAD_BUCKETS_S.length + 1).fill(0);
  private reloadSeconds = 0;
  private readonly recycles = new Map<string, number>();
  private requests = 0;
  private errors = 0;
  /** Cumulative per LATENCY_BUCKETS_S bucket, +Inf, then the sum in microseconds (as WorkerSample.latency). */
  private readonly latency = new Array<number>(LATENCY_BUCKETS_S.length + 2).fill(0);
  private moved = 0;
  private closed = 0;
  /** Each live worker's last sample: what its next one is compared with. */
  private readonly last = new Map<number, WorkerSample>();

  constructor(private readonly source: MetricsSource) {}

  ready(): boolean {
    return this.source.ready();
  }

  /** A worker's heartbeat answer: adds what its counters rose by since its last one. */
  sampled(pid: number, sample: WorkerSample): void {
    const before = this.last.get(pid) ?? {};
    const rise = (now: number | undefined, then: number | undefined) => Math.max(0, (now ?? 0) - (then ?? 0));
    this.requests += rise(sample.requests, before.requests);
    this.errors += rise(sample.errors, before.errors);
    sample.latency?.forEach((n, i) => (this.latency[i] += rise(n, before.latency?.[i])));
    this.last.set(pid, { ...before, ...sample });
  }

  /** A worker is gone: its counts stay in the totals. */
  exited(pid: number): void {
    this.last.delete(pid);
  }

  reloaded(ok: boolean, durationMs: number): void {
    this.reloads[ok ? 'ok' : 'failed']++;
    const seconds = durationMs / 1000;
    this.reloadSeconds += seconds;
    RELOAD_BUCKETS_S.forEach((le, i) => seconds <= le && this.reloadBuckets[i]++);
    this.reloadBuckets[RELOAD_BUCKETS_S.length]++;
  }

  /** A recycle, by the limit that caused it (maxMemory, maxRequests, maxLifetime). */
  recycled(reason: string): void {
    const limit = /maxMemory|maxRequests|maxLifetime/.exec(reason)?.[0] ?? 'other';
    this.recycles.set(limit, (this.recycles.get(limit) ?? 0) + 1);
  }

  /** Connections handed to another process (a move), or closed because they could not move. */
  connectionsMoved(count = 1): void {
    this.moved += count;
  }

  connectionsClosed(count = 1): void {
    this.closed += count;
  }

  /** The whole /metrics page. */
  async render(): Promise<string> {
    const workers = this.source.workers();
    const per = (pick: (s: WorkerSample) => number | undefined, scale = 1) => workers
      .filter((w) => w.sample && pick(w.sample) !== undefined)
      .map((w): [Record<string, string | number>, number] => [
        { slot: w.slot, generation: w.generation, version: w.version ?? 'unknown', pid: w.pid },
        pick(w.sample!)! * scale,
      ]);
    const limits = ['maxMemory', 'maxRequests', 'maxLifetime', ...(this.recycles.has('other') ? ['other'] : [])];
    const sections = [
      family('handover_generation', 'gauge', 'The generation serving now.', [[{}, this.source.generation()]]),
      family('handover_reloads_total', 'counter', 'Reloads, by outcome.', [[{ result: 'ok' }, this.reloads.ok], [{ result: 'failed' }, this.reloads.failed]]),
      histogram('handover_reload_duration_seconds', 'Time from a reload\'s start to its outcome.', RELOAD_BUCKETS_S, this.reloadBuckets, this.reloadSeconds),
      family('handover_workers', 'gauge', 'Live worker processes, by state.',
        WORKER_STATES.map((state) => [{ state }, workers.filter((w) => w.state === state).length])),
      family('handover_worker_restarts_total', 'counter', 'Workers respawned after a crash or a missed heartbeat.', [[{}, this.source.restarts()]]),
      family('handover_recycles_total', 'counter', 'Workers replaced for crossing a recycling limit, by limit.',
        limits.map((reason) => [{ reason }, this.recycles.get(reason) ?? 0])),
      family('handover_requests_total', 'counter', 'Requests served by every worker of every generation (connections, on a plain net server).', [[{}, this.requests]]),
      family('handover_responses_5xx_total', 'counter', 'HTTP responses with a 5xx status, every worker of every generation.', [[{}, this.errors]]),
      histogram('handover_request_duration_seconds', 'HTTP response durations, every worker of every generation.', LATENCY_BUCKETS_S,
        this.latency, this.latency[LATENCY_BUCKETS_S.length + 1] / 1e6),
      family('handover_connections_moved_total', 'counter', 'Established connections handed to another worker process.', [[{}, this.moved]]),
      family('handover_connections_closed_total', 'counter', 'Established connections closed because they could not move.', [[{}, this.closed]]),
      family('handover_worker_resident_memory_bytes', 'gauge', 'Each live worker\'s RSS at its last heartbeat.', per((s) => s.rss)),
      family('handover_worker_cpu_seconds_total', 'counter', 'Each live worker\'s CPU time (user + system).', per((s) => s.cpu, 1e-6)),
      family('handover_worker_event_loop_delay_seconds', 'gauge', 'Each live worker\'s mean event-loop delay between heartbeats.', per((s) => s.loopDelayMs, 1e-3)),
    ];
    const app = (await this.source.appMetrics?.()) ?? '';
    return `${sections.join('\n')}\n${app}`;
  }
}

/** The HTTP side: /metrics, /healthz, /readyz on `address`. */
export class MetricsServer {
  private constructor(private readonly server: http.Server, readonly bound: string) {}

  /** Listens on `address` ('127.0.0.1:9464', ':9464', 'unix:/run/app-metrics.sock'); rejects naming it and the errno. */
  static async open(address: string, metrics: Metrics): Promise<MetricsServer> {
    const parsed = parseAddress(address);
    const server = http.createServer((req, res) => {
      const path = (req.url ?? '/').split('?')[0];
      const reply = (status: number, body: string, type = 'text/plain; charset=utf-8') => {
        res.writeHead(status, { 'content-type': type, 'cache-control': 'no-store' });
        res.end(body);
      };
      if (req.method !== 'GET' && req.method !== 'HEAD') return reply(405, 'GET only\n');
      if (path === '/healthz') return reply(200, 'ok\n');
      if (path === '/readyz') return metrics.ready() ? reply(200, 'ready\n') : reply(503, 'not ready\n');
      if (path !== '/metrics') return reply(404, 'not found: try /metrics, /healthz or /readyz\n');
      metrics.render().then(
        (text) => reply(200, text, 'text/plain; version=0.0.4; charset=utf-8'),
        (error: Error) => reply(500, `metrics failed: ${error.message}\n`),
      );
    });
    // a scrape must never keep the master from stopping
    server.keepAliveTimeout = 5_000;
    await new Promise<void>((resolve, reject) => {
      server.once('error', (error: NodeJS.ErrnoException) => {
        reject(Object.assign(new Error(
          `metrics: cannot listen on ${address} (${error.code ?? error.message}): ${error.code === 'EADDRINUSE'
            ? 'another process listens there; pick another address for `metrics`'
            : error.code === 'EACCES' ? 'not allowed to bind it; use a port above 1023' : error.message}`,
        ), { code: error.code, address }));
      });
      if (parsed.kind === 'unix') server.listen(parsed.path, () => resolve());
      else server.listen({ host: parsed.host, port: parsed.port, ipv6Only: false }, () => resolve());
    });
    server.on('error', () => {}); // after listen: a client's error is that client's
    const info = server.address();
    const bound = typeof info === 'string' || info === null ? address : formatBound(info);
    return new MetricsServer(server, bound);
  }

  close(): void {
    this.server.close();
    this.server.closeAllConnections();
  }
}
