// What a worker does not load, create or write unless it needs it (issue 24):
// every reload boots new workers, so whatever each one does at boot and at
// its exit is paid again at every reload. The CPU figures are in bench/ (the
// `cost` command); these tests hold the mechanisms in place.
import { execFileSync, spawn } from 'node:child_process';
import * as http from 'node:http';
import * as path from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { ENV } from '../src/protocol';
import { adminStatus, controlSocketOf } from './helpers/control';
import { cleanUp, pollUntil, startMaster, workerProcessesOf } from './helpers/processes';

afterEach(cleanUp);

const DIST = path.join(__dirname, '..', 'dist');

/** Runs `script` in a fresh node; returns what it printed as JSON. */
function inFreshNode(script: string, env: Record<string, string> = {}): unknown {
  // (without the test runner's NODE_OPTIONS, whose preloads would load what is counted here)
  return JSON.parse(execFileSync(process.execPath, ['-e', script], { encoding: 'utf8', env: { ...process.env, NODE_OPTIONS: '', ...env } }));
}

describe('a worker process', () => {
  it('loads the API (the bundle, as in a worker of a library-API master) without node:perf_hooks, node:crypto, node:module or node:tls, and no file of handover but main.js and the bundle', () => {
    // (node -e loads some of them for itself: only what the require adds counts)
    const out = inFreshNode(`
      const before = new Set(process.moduleLoadList);
      const api = require(${JSON.stringify(path.join(DIST, 'main.js'))});
      const files = Object.keys(require.cache).filter((f) => f.startsWith(${JSON.stringify(DIST + path.sep)})).sort();
      const loaded = process.moduleLoadList.filter((m) => !before.has(m) && /^NativeModule (perf_hooks|crypto|module|tls)$/.test(m));
      console.log(JSON.stringify({ files, listenAndServe: typeof api.listenAndServe, loaded }));`,
    { [ENV.socket]: '/nonexistent/control.sock', [ENV.token]: 'x' });
    expect(out).toEqual({ files: [path.join(DIST, 'bundle', 'index.js'), path.join(DIST, 'main.js')], listenAndServe: 'function', loaded: [] });
  });

  it('starts its event-loop delay probe with a heartbeat answer, not with its last report, and never loads node:perf_hooks for it', () => {
    const out = inFreshNode(`
      const { RequestStats } = require(${JSON.stringify(path.join(DIST, 'worker', 'stats.js'))});
      const stats = new RequestStats();
      const delays = [stats.sample(true), stats.sample(true), stats.sample(), stats.sample(true)].map((s) => s.loopDelayMs ?? null);
      const perfHooks = process.moduleLoadList.includes('NativeModule perf_hooks');
      console.log(JSON.stringify({ delays, perfHooks }));`);
    // last reports without a probe say nothing; the heartbeat starts it (0: no sample yet); from then on the last report has a figure
    expect(out).toEqual({ delays: [null, null, 0, 0], perfHooks: false });
  });

  it('creates no stdout or stderr stream for its logger; the program\'s own writes to a closed stdout later are still harmless', async () => {
    // Records when Node creates each stream (its getter runs), before handover's logger is made.
    const script = `
      const fs = require('node:fs');
      const created = {};
      for (const name of ['stdout', 'stderr']) {
        const own = Object.getOwnPropertyDescriptor(process, name);
        Object.defineProperty(process, name, { configurable: true, enumerable: true, get() { created[name] = true; return own.get.call(process); } });
      }
      require(${JSON.stringify(path.join(DIST, 'log.js'))}).createLogger(undefined, 'worker');
      const atStart = { ...created };
      setTimeout(() => {
        for (let i = 0; i < 200; i++) process.stdout.write('x'.repeat(1000)); // EPIPE: its reader is gone (console.log would swallow it itself)
        setTimeout(() => {
          fs.writeSync(3, JSON.stringify({ atStart, after: created }));
          process.exit(0);
        }, 300);
      }, 300);`;
    const proc = spawn(process.execPath, ['-e', script], { stdio: ['ignore', 'pipe', 'pipe', 'pipe'], env: { ...process.env, NODE_OPTIONS: '' } });
    proc.stdout!.destroy(); // the reader of its stdout goes away
    let report = '';
    proc.stdio[3]!.setEncoding('utf8').on('data', (chunk: string) => (report += chunk));
    let stderr = '';
    proc.stderr!.setEncoding('utf8').on('data', (chunk: string) => (stderr += chunk));
    const [code, signal] = await new Promise<[number | null, NodeJS.Signals | null]>((resolve) => proc.once('exit', (c, s) => resolve([c, s])));
    expect({ code, signal, stderr }).toEqual({ code: 0, signal: null, stderr: '' });
    const { atStart, after } = JSON.parse(report) as { atStart: object; after: { stdout?: boolean } };
    expect(atStart).toEqual({});
    expect(after.stdout).toBe(true); // the EPIPE came, and was swallowed
  });

  it('logs its drain only when it has connections to finish: not for an idle reload, and with the count for one with a request in flight', async () => {
    const master = await startMaster({ fixture: { workers: 1 } });
    const control = controlSocketOf(master);
    expect((await master.reload()).event).toBe('reloaded');

    const answer = new Promise<{ status: number; body: string }>((resolve, reject) => {
      http.get({ host: '127.0.0.1', port: master.port, path: '/slow?ms=2000', agent: false }, (res) => {
        let body = '';
        res.setEncoding('utf8').on('data', (chunk: string) => (body += chunk));
        res.on('end', () => resolve({ status: res.statusCode!, body }));
      }).on('error', reject);
    });
    await pollUntil(async () => (await adminStatus(control)).workers.some((w) => w.connections === 1), 'the request to reach the worker');
    expect((await master.reload()).event).toBe('reloaded');
    expect(await answer).toEqual({ status: 200, body: 'slow done' });
    await pollUntil(() => /worker info: draining/.test(master.stderr), "the busy worker's drain line");
    // One line: the busy worker's. The idle one (drained long before) wrote none.
    expect(master.stderr.match(/worker info: draining.*/g)).toEqual([expect.stringMatching(/draining \(the master asked\): 1 open connection\(s\), up to \d+ ms$/)]);
  });

  it('serves, covers a sibling and takes connections over without Node loading node:cluster (and with it child_process and dgram)', async () => {
    const master = await startMaster({ fixture: { workers: 2 } });
    const before = workerProcessesOf(master.pid);
    expect((await master.reload()).event).toBe('reloaded'); // workers that listened on their hand-off socket and their slot's
    // the new generation's two, once the old one has exited
    const [one, two] = await pollUntil(() => {
      const pids = workerProcessesOf(master.pid);
      return pids.length === 2 && !pids.some((pid) => before.includes(pid)) ? pids : undefined;
    }, 'the old generation to exit');
    process.kill(two!, 'SIGKILL'); // its sibling covers its slot: one more listen, on the dead slot's socket
    await pollUntil(() => new RegExp(`handover\\[${one}\\] worker info: covering slot`).test(master.stderr), 'the cover');
    const modulesOf = () => new Promise<{ pid: number; modules: string[] }>((resolve, reject) => {
      http.get({ host: '127.0.0.1', port: master.port, path: '/modules', agent: false }, (res) => {
        let body = '';
        res.setEncoding('utf8').on('data', (chunk: string) => (body += chunk));
        res.on('end', () => resolve({ pid: Number(res.headers['x-pid']), modules: JSON.parse(body) as string[] }));
      }).on('error', reject);
    });
    const { modules } = await pollUntil(async () => {
      const answer = await modulesOf();
      return answer.pid === one ? answer : undefined;
    }, 'an answer from the worker that covered');
    expect(modules).toContain('NativeModule net'); // (a worker's list)
    expect(modules.filter((m) => /^NativeModule (cluster|child_process|dgram)$/.test(m))).toEqual([]);
  });
});
