// The program's own prom-client metrics, combined across workers the way
// prom-client's AggregatorRegistry does (each metric's `aggregator`: sum by
// default, or first, min, max, average, omit), but with counters that never
// go backwards: a worker that exits leaves its last counter and histogram
// values here, so a reload or a crash does not make a summed counter drop
// (prom-client#385). Gauges and summaries are of live workers only.

/** One metric as prom-client's getMetricsAsJSON() gives it. */
interface MetricJSON {
  name: string;
  help: string;
  type: string;
  aggregator?: string;
  values: Sample[];
}

interface Sample {
  value: number;
  labels: Record<string, string | number>;
  metricName?: string;
}

/** How long a scrape waits for each worker's answer before it uses the last one. */
const ANSWER_TIMEOUT_MS = 1_000;

/** Only what can be rendered: a worker runs the program's code, which may send anything. */
function wellFormed(metrics: unknown[]): MetricJSON[] {
  const isName = (v: unknown): v is string => typeof v === 'string' && /^[a-zA-Z_:][a-zA-Z0-9_:]*$/.test(v);
  return metrics.flatMap((m) => {
    const x = m as Partial<MetricJSON> | null;
    if (!x || !isName(x.name) || typeof x.type !== 'string' || !Array.isArray(x.values)) return [];
    const values = x.values.filter((v): v is Sample => typeof v?.value === 'number' && typeof v.labels === 'object' && v.labels !== null &&
      (v.metricName === undefined || isName(v.metricName)) && Object.keys(v.labels).every(isName));
    return [{ name: x.name, help: typeof x.help === 'string' ? x.help : '', type: x.type, aggregator: x.aggregator, values }];
  });
}

function seriesKey(sample: Sample): string {
  const labels = Object.keys(sample.labels).sort().map((k) => [k, String(sample.labels[k])]);
  return `${sample.metricName ?? ''}${JSON.stringify(labels)}`;
}

const escape = (value: string | number) => String(value).replace(/\\/g, '\\\\').replace(/"/g, '\\"').replace(/\n/g, '\\n');

function render(metric: MetricJSON): string {
  const lines = [`# HELP ${metric.name} ${metric.help.replace(/\\/g, '\\\\').replace(/\n/g, '\\n')}`, `# TYPE ${metric.name} ${metric.type}`];
  for (const v of metric.values) {
    const labels = Object.entries(v.labels).map(([k, l]) => `${k}="${escape(l)}"`).join(',');
    lines.push(`${v.metricName ?? metric.name}${labels ? `{${labels}}` : ''} ${v.value}`);
  }
  return lines.join('\n');
}

/** Combines one metric's samples from several workers by its aggregator. */
function aggregate(sources: MetricJSON[]): MetricJSON | undefined {
  const [first] = sources;
  const how = first.aggregator ?? 'sum';
  if (how === 'omit') return undefined;
  const groups = new Map<string, { sample: Sample; values: number[] }>();
  for (const source of sources) {
    for (const sample of source.values) {
      const key = seriesKey(sample);
      const group = groups.get(key) ?? { sample, values: [] };
      group.values.push(sample.value);
      groups.set(key, group);
    }
  }
  const combine: Record<string, (values: number[]) => number> = {
    sum: (v) => v.reduce((a, b) => a + b, 0),
    first: (v) => v[0],
    min: (v) => Math.min(...v),
    max: (v) => Math.max(...v),
    average: (v) => v.reduce((a, b) => a + b, 0) / v.length,
  };
  const fn = combine[how] ?? combine.sum;
  const values = [...groups.values()].map(({ sample, values: v }) => ({ ...sample, value: fn(v) }));
  return { ...first, values };
}

export class AppMetrics {
  /** Each live worker's last answer. */
  private readonly live = new Map<number, MetricJSON[]>();
  /** Exited workers' counter and histogram values, summed: metric name -> series -> sample. */
  private readonly retired = new Map<string, { meta: MetricJSON; series: Map<string, Sample> }>();
  private readonly waiting = new Map<number, () => void>();

  /** A worker's app-metrics frame. */
  received(pid: number, metrics: unknown[], error?: string): void {
    if (error === undefined) this.live.set(pid, wellFormed(metrics));
    this.waiting.get(pid)?.();
  }

  /** A worker exited: its counters stay counted. */
  exited(pid: number): void {
    for (const metric of this.live.get(pid) ?? []) {
      if (metric.type !== 'counter' && metric.type !== 'histogram') continue;
      const kept = this.retired.get(metric.name) ?? { meta: { ...metric, values: [] }, series: new Map<string, Sample>() };
      for (const sample of metric.values) {
        const key = seriesKey(sample);
        const before = kept.series.get(key);
        kept.series.set(key, { ...sample, value: (before?.value ?? 0) + sample.value });
      }
      this.retired.set(metric.name, kept);
    }
    this.live.delete(pid);
    this.waiting.get(pid)?.();
  }

  /** Asks every worker for its metrics (`ask(pid)` sends the frame) and renders them combined. */
  async collect(pids: number[], ask: (pid: number) => void): Promise<string> {
    await Promise.all(pids.map((pid) => new Promise<void>((resolve) => {
      const timer = setTimeout(done, ANSWER_TIMEOUT_MS);
      const waiting = this.waiting;
      function done() {
        clearTimeout(timer);
        waiting.delete(pid);
        resolve();
      }
      this.waiting.get(pid)?.(); // an earlier scrape still waiting: this one takes over
      this.waiting.set(pid, done);
      ask(pid);
    })));
    const byName = new Map<string, MetricJSON[]>();
    const add = (metric: MetricJSON) => byName.set(metric.name, [...(byName.get(metric.name) ?? []), metric]);
    for (const metrics of this.live.values()) metrics.forEach(add);
    for (const { meta, series } of this.retired.values()) add({ ...meta, aggregator: 'sum', values: [...series.values()] });
    const text = [...byName.values()].flatMap((sources) => {
      const combined = aggregate(sources);
      return combined ? [render(combined)] : [];
    });
    return text.length > 0 ? `${text.join('\n')}\n` : '';
  }
}
