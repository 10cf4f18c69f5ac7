// The master's metrics without processes: the counters it owns add up only
// the increases of each worker's counters, so a replaced worker (whose
// counters start at 0 again) never makes them go backwards; the program's
// prom-client metrics are combined by each metric's aggregator, and an exited
// worker's counters stay counted while its gauges go.
import { describe, expect, it } from 'vitest';
import { AppMetrics } from '../src/master/app-metrics';
import { Metrics, type MetricsSource } from '../src/master/metrics';
import { FrameDecoder, LATENCY_BUCKETS_S, ProtocolError, encode } from '../src/protocol';

function source(): MetricsSource {
  return { generation: () => 1, workers: () => [], restarts: () => 0, ready: () => true };
}

const line = (text: string, series: string) => Number(new RegExp(`^${series.replace(/[{}()"]/g, '\\$&')} (\\S+)$`, 'm').exec(text)?.[1]);

describe('the master\'s counters', () => {
  it('add up each worker\'s increases; a replacement starting from 0 and an exited worker never make them drop', async () => {
    const metrics = new Metrics(source());
    metrics.sampled(100, { requests: 50, errors: 1 });
    metrics.sampled(101, { requests: 30 });
    metrics.sampled(100, { requests: 80, errors: 2 });
    expect(line(await metrics.render(), 'handover_requests_total')).toBe(110);
    metrics.exited(100);
    expect(line(await metrics.render(), 'handover_requests_total')).toBe(110);
    metrics.sampled(102, { requests: 5 }); // the replacement
    const text = await metrics.render();
    expect(line(text, 'handover_requests_total')).toBe(115);
    expect(line(text, 'handover_responses_5xx_total')).toBe(2);
  });

  it('reloads by outcome and their durations as a histogram; recycles by limit', async () => {
    const metrics = new Metrics(source());
    metrics.reloaded(true, 70);
    metrics.reloaded(false, 3_000);
    metrics.recycled('RSS 210.0 MB is above maxMemory (200.0 MB)');
    const text = await metrics.render();
    expect(line(text, 'handover_reloads_total{result="ok"}')).toBe(1);
    expect(line(text, 'handover_reloads_total{result="failed"}')).toBe(1);
    expect(line(text, 'handover_reload_duration_seconds_bucket{le="0.1"}')).toBe(1);
    expect(line(text, 'handover_reload_duration_seconds_bucket{le="5"}')).toBe(2);
    expect(line(text, 'handover_reload_duration_seconds_count')).toBe(2);
    expect(line(text, 'handover_recycles_total{reason="maxMemory"}')).toBe(1);
    expect(line(text, 'handover_recycles_total{reason="maxRequests"}')).toBe(0);
  });
});

describe('the program\'s prom-client metrics', () => {
  const counter = (value: number) => ({ name: 'app_requests_total', help: 'Requests.', type: 'counter', aggregator: 'sum', values: [{ value, labels: { code: '200' } }] });
  const gauge = (value: number, aggregator = 'sum') => ({ name: 'app_open', help: 'Open.', type: 'gauge', aggregator, values: [{ value, labels: {} }] });

  it('are summed across workers; an exited worker\'s counter stays counted, its gauge goes', async () => {
    const app = new AppMetrics();
    const asked: number[] = [];
    const collect = () => app.collect([1, 2].filter((pid) => !exited.has(pid)), (pid) => {
      asked.push(pid);
      app.received(pid, pid === 1 ? [counter(10), gauge(3)] : [counter(5), gauge(4)]);
    });
    const exited = new Set<number>();
    let text = await collect();
    expect(line(text, 'app_requests_total{code="200"}')).toBe(15);
    expect(line(text, 'app_open')).toBe(7);
    expect(asked).toEqual([1, 2]);
    app.exited(1);
    exited.add(1);
    text = await collect();
    expect(line(text, 'app_requests_total{code="200"}')).toBe(15);
    expect(line(text, 'app_open')).toBe(4);
    expect(text).toContain('# TYPE app_requests_total counter');
  });

  it('follow each metric\'s aggregator (first, max, omit) as AggregatorRegistry does', async () => {
    const app = new AppMetrics();
    const metrics = (pid: number) => [
      { ...gauge(pid, 'first'), name: 'first_g' },
      { ...gauge(pid * 10, 'max'), name: 'max_g' },
      { ...gauge(pid, 'omit'), name: 'omitted_g' },
    ];
    const text = await app.collect([1, 2], (pid) => app.received(pid, metrics(pid)));
    expect(line(text, 'first_g')).toBe(1);
    expect(line(text, 'max_g')).toBe(20);
    expect(text).not.toContain('omitted_g');
  });

  it('a worker that does not answer within 1 s: its last answer is used', async () => {
    const app = new AppMetrics();
    await app.collect([1], (pid) => app.received(pid, [counter(7)]));
    const text = await app.collect([1], () => {}); // no answer this time
    expect(line(text, 'app_requests_total{code="200"}')).toBe(7);
  });

  it('malformed metrics from a worker are left out, never rendered', async () => {
    const app = new AppMetrics();
    const text = await app.collect([1], (pid) => app.received(pid, [{ name: 'bad name', type: 'counter', values: [] }, null, counter(1)]));
    expect(text).not.toContain('bad name');
    expect(line(text, 'app_requests_total{code="200"}')).toBe(1);
  });
});

describe('heartbeat answers on the wire', () => {
  it('a pong with the counters decodes; a latency array of the wrong length or a negative count is a protocol error', () => {
    const latency = new Array<number>(LATENCY_BUCKETS_S.length + 2).fill(1);
    const good = { type: 'pong' as const, requests: 3, rss: 1, cpu: 2, loopDelay: 0, errors: 0, latency };
    expect(new FrameDecoder().push(encode(good))).toEqual([good]);
    expect(() => new FrameDecoder().push(encode({ ...good, latency: [1, 2] }))).toThrow(ProtocolError);
    expect(() => new FrameDecoder().push(encode({ ...good, errors: -1 }))).toThrow(ProtocolError);
  });
});
