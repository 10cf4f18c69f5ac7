// The master's /metrics, /healthz and /readyz (the `metrics` option). Its
// counters are the master's, so they never go backwards across reloads, a
// failed reload and a worker SIGKILL; handover_reloads_total rises by exactly
// the reloads made and handover_requests_total by at least the requests
// answered; a program's own prom-client counter, combined across workers,
// survives a reload without going backwards; the text passes `promtool check
// metrics`. /readyz turns 503 at the start of stopDelay while requests are
// still answered.
import * as child from 'node:child_process';
import { afterEach, describe, expect, it } from 'vitest';
import { adminStatus, controlSocketOf } from './helpers/control';
import { Requests, app, fetchText, get } from './helpers/deploys';
import * as net from 'node:net';
import * as path from 'node:path';
import { resolveOptions } from '../src/options';
import { type Master, ROOT, cleanUp, onCleanUp, ourProcesses, pollUntil, startMaster } from './helpers/processes';

afterEach(cleanUp);

const promtool = child.spawnSync('promtool', ['--version']).status === 0;

/** The metrics address the master logged ('metrics on http://127.0.0.1:PORT/metrics'). */
async function metricsUrl(master: Master): Promise<string> {
  const found = await pollUntil(() => /metrics on (http:\/\/[^/\s]+)\/metrics/.exec(master.stderr), 'the metrics address in the log');
  return found[1];
}

interface Scrape {
  text: string;
  /** series ('name{labels}') -> value */
  values: Map<string, number>;
  /** Series of counters and histograms: what must never go down. */
  monotonic: Set<string>;
}

async function scrape(base: string): Promise<Scrape> {
  const { status, text } = await fetchText(`${base}/metrics`);
  expect(status).toBe(200);
  const values = new Map<string, number>();
  const types = new Map<string, string>();
  const monotonic = new Set<string>();
  for (const line of text.split('\n')) {
    const type = /^# TYPE (\S+) (\S+)$/.exec(line);
    if (type) types.set(type[1], type[2]);
    if (!line || line.startsWith('#')) continue;
    const at = line.lastIndexOf(' ');
    const series = line.slice(0, at);
    values.set(series, Number(line.slice(at + 1)));
    const name = series.replace(/\{.*$/, '');
    const family = types.has(name) ? name : name.replace(/_(bucket|sum|count)$/, '');
    // per-worker CPU is a counter of one process (labelled by pid): it ends with the process, it never goes down either
    if (types.get(family) === 'counter' || types.get(family) === 'histogram') monotonic.add(series);
  }
  return { text, values, monotonic };
}

const value = (s: Scrape, series: string) => s.values.get(series) ?? NaN;

describe('metrics', () => {
  it('counters never go backwards across reloads, a failed reload and a worker SIGKILL; reloads and requests are counted', async () => {
    const { app: a } = app({ code: 'A', promCounter: true });
    const master = await a.start({ workers: 2, metrics: '127.0.0.1:0' });
    const base = await metricsUrl(master);
    const scrapes: Scrape[] = [await scrape(base)];
    let sampling = true;
    const sampler = (async () => {
      while (sampling) {
        scrapes.push(await scrape(base));
        await new Promise((resolve) => setTimeout(resolve, 50));
      }
    })();
    const start = scrapes[0];
    expect(value(start, 'handover_generation')).toBe(1);
    expect(value(start, 'handover_reloads_total{result="ok"}')).toBe(0);

    const requests = new Requests(master.port);
    await pollUntil(() => requests.answers.length >= 100, '100 answers');
    a.deploy({ code: 'B', promCounter: true });
    expect((await master.reload()).event).toBe('reloaded');
    a.deploy({ code: 'C', throwAtStartup: true });
    expect((await master.reload()).event).toBe('reload-failed');
    a.deploy({ code: 'D', promCounter: true });
    expect((await master.reload()).event).toBe('reloaded');
    await pollUntil(() => requests.answers.some((r) => r.code === 'D'), 'an answer from the last deploy');
    await requests.stop();
    const answered = requests.answers.filter((r) => r.status === 200).length;
    expect(requests.failures).toEqual([]);

    // every request answered is counted once its worker's next heartbeat (or its drain) reports it
    const counted = await pollUntil(async () => {
      const s = await scrape(base);
      return value(s, 'handover_requests_total') - value(start, 'handover_requests_total') >= answered &&
        value(s, 'app_requests_total{code="200"}') >= answered ? s : undefined;
    }, `handover_requests_total and app_requests_total to count ${answered} answers`);
    expect(value(counted, 'handover_reloads_total{result="ok"}')).toBe(2);
    expect(value(counted, 'handover_reloads_total{result="failed"}')).toBe(1);
    expect(value(counted, 'handover_reload_duration_seconds_count')).toBe(3);
    expect(value(counted, 'handover_generation')).toBe(4);
    expect(value(counted, 'handover_workers{state="ready"}')).toBe(2);
    const status = await adminStatus(controlSocketOf(master));
    const [victim] = status.workers.filter((w) => w.state === 'ready');
    expect(counted.text).toContain(`handover_worker_resident_memory_bytes{slot="${victim.slot}",generation="4",version="${victim.version}",pid="${victim.pid}"}`);

    process.kill(victim.pid, 'SIGKILL');
    await pollUntil(async () => value(await scrape(base), 'handover_worker_restarts_total') === 1, 'the restart to be counted');
    await pollUntil(async () => value(await scrape(base), 'handover_workers{state="ready"}') === 2, 'two ready workers again');
    sampling = false;
    await sampler;
    const last = await scrape(base);
    scrapes.push(last);
    expect(value(last, 'handover_reloads_total{result="ok"}')).toBe(2);

    // no counter series ever went down between two scrapes
    for (let i = 1; i < scrapes.length; i++) {
      for (const series of scrapes[i].monotonic) {
        const before = scrapes[i - 1].values.get(series);
        if (before !== undefined) expect(scrapes[i].values.get(series)!, `${series} at scrape ${i}`).toBeGreaterThanOrEqual(before);
      }
    }
    expect(value(last, 'app_requests_total{code="200"}')).toBeGreaterThanOrEqual(answered);
    expect((await master.stop()).code).toBe(0);
  });

  it.skipIf(!promtool)('promtool check metrics passes (needs promtool: Debian package prometheus)', async () => {
    const { app: a } = app({ code: 'A', promCounter: true });
    const master = await a.start({ workers: 1, metrics: '127.0.0.1:0' });
    const base = await metricsUrl(master);
    await get(master.port);
    const text = (await pollUntil(async () => {
      const s = await scrape(base);
      return s.values.get('app_requests_total{code="200"}') ? s : undefined;
    }, 'the app counter')).text;
    const checked = child.spawnSync('promtool', ['check', 'metrics'], { input: text, encoding: 'utf8' });
    expect(checked.status, checked.stdout + checked.stderr).toBe(0);
    expect((await master.stop()).code).toBe(0);
  });

  it('a metrics address that is taken: the master does not start, and says which address, the errno and what to do', async () => {
    const taken = net.createServer();
    await new Promise<void>((resolve) => taken.listen(0, '127.0.0.1', resolve));
    onCleanUp(() => taken.close());
    const address = `127.0.0.1:${(taken.address() as net.AddressInfo).port}`;
    const { app: a } = app({ code: 'A' });
    const master = await startMaster({ script: path.relative(ROOT, a.entry), fixture: { metrics: address }, waitReady: false });
    expect((await master.exited).code).not.toBe(0);
    expect(master.stderr).toContain(`metrics: cannot listen on ${address} (EADDRINUSE): another process listens there; pick another address for \`metrics\``);
    expect(ourProcesses()).toEqual([]);
    expect(() => resolveOptions({ metrics: 'nonsense' })).toThrow(/^metrics: invalid address "nonsense"/);
  });

  it('/healthz answers while the master lives; /readyz turns 503 at the start of stopDelay while requests are still answered', async () => {
    const { app: a } = app({ code: 'A' });
    const master = await a.start({ workers: 1, metrics: '127.0.0.1:0', stopDelay: 30_000 });
    const base = await metricsUrl(master);
    expect(await fetchText(`${base}/healthz`)).toEqual({ status: 200, text: 'ok\n' });
    expect(await fetchText(`${base}/readyz`)).toEqual({ status: 200, text: 'ready\n' });
    master.proc.kill('SIGTERM');
    await pollUntil(() => master.stderr.includes('still accepting for stopDelay'), 'the stop delay to begin');
    expect((await fetchText(`${base}/readyz`)).status).toBe(503);
    expect((await fetchText(`${base}/healthz`)).status).toBe(200);
    const answer = await get(master.port);
    expect(answer.status).toBe(200);
    expect(answer.code).toBe('A');
    master.proc.kill('SIGKILL'); // no need to wait 30 s: cleanUp reaps its worker
  });
});
