// `handover start` with unmodified programs (issue 11): Express, Fastify,
// Koa, raw http, net, and one with two ports, each with --workers 2 under load
// across reloads (zero failed requests, new pids each time), then `handover
// stop` (exit 0, ports free). A deploy that throws or does not parse fails the
// reload with its own error in the output while the old generation serves;
// --env-file is read again at each reload; --watch reloads on a change;
// --wait-ready keeps traffic away until the program says ready().
//
// Each test has its own registry (XDG_RUNTIME_DIR), so `handover reload`
// without a NAME finds exactly the master the test started.
//
// Sensitivity, checked by hand on a copy of the repository:
//   - intercept.ts binding directly (original listen) instead of recording:
//     every app test fails (EADDRINUSE in the second worker, or no status);
//   - spawn-self.ts not reading the env file at each spawn: the env-file test
//     fails on the greeting;
//   - worker.ts ignoring --wait-ready (settle only): the wait-ready test sees 503s.
import { execFile } from 'node:child_process';
import * as fs from 'node:fs';
import * as http from 'node:http';
import * as path from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { adminStatus, controlSocketOf } from './helpers/control';
import { Load } from './helpers/load';
import { type Master, ROOT, cleanUp, connectOutcome, pollUntil, scratch, startMaster } from './helpers/processes';

const CLI = path.join(ROOT, 'dist/cli/cli.js');
const FIXTURES = path.join(ROOT, 'test/fixtures/unmodified');

afterEach(cleanUp);

interface Run {
  code: number | null;
  stdout: string;
  stderr: string;
}

interface Status {
  generation: number;
  addresses: string[];
  workers: { pid: number; slot: number; generation: number; state: string; rssBytes?: number; uptimeMs?: number }[];
}

class App {
  /** What the master wrote to stdout: its workers' stdout, prefixed. */
  stdout = '';

  constructor(readonly master: Master, private readonly runtime: string) {
    master.proc.stdout!.on('data', (chunk: string) => (this.stdout += chunk));
  }

  /** `handover ...args` as the same user, with this app's registry. */
  cli(...args: string[]): Promise<Run> {
    return new Promise((resolve) => {
      execFile(process.execPath, [CLI, ...args], { cwd: ROOT, timeout: 120_000, env: { ...process.env, XDG_RUNTIME_DIR: this.runtime } },
        (error, stdout, stderr) => resolve({ code: error ? (typeof error.code === 'number' ? error.code : null) : 0, stdout, stderr }));
    });
  }

  async status(): Promise<Status | undefined> {
    const run = await this.cli('status', '--json');
    return run.code === 0 ? JSON.parse(run.stdout) as Status : undefined;
  }

  /**
   * Waits until `generation` serves with `workers` ready workers; returns that
   * status. Polls over the control socket, as `handover status` does, rather
   * than starting a CLI process every 20 ms.
   */
  async serving(generation: number, workers = 2): Promise<Status> {
    return pollUntil(async () => {
      if (this.master.proc.exitCode !== null) throw new Error(`the master exited; its output:\n${this.master.stderr}`);
      const s = await this.quickStatus();
      const ready = s?.workers.filter((w) => w.generation === generation && w.state === 'ready') ?? [];
      return s && s.generation === generation && ready.length === workers ? s : undefined;
    }, `generation ${generation} to serve with ${workers} workers; output:\n${this.master.stderr}`, 90_000);
  }

  private controlSocket?: string;

  /** The master's status over its control socket; undefined until it has a worker to name that socket. */
  private async quickStatus(): Promise<Status | undefined> {
    try {
      this.controlSocket ??= controlSocketOf(this.master);
      return await adminStatus(this.controlSocket);
    } catch {
      return undefined;
    }
  }

  pids(status: Status, generation: number): number[] {
    return status.workers.filter((w) => w.generation === generation).map((w) => w.pid).sort();
  }
}

async function start(script: string, args: string[] = [], env: Record<string, string> = {}): Promise<App> {
  const runtime = scratch('handover-start-');
  const master = await startMaster({
    script: 'dist/cli/cli.js',
    args: ['start', ...args, script],
    env: { XDG_RUNTIME_DIR: runtime, ...env },
    waitReady: false,
  });
  return new App(master, runtime);
}

function portOf(address: string): number {
  return Number(address.slice(address.lastIndexOf(':') + 1));
}

function get(port: number): Promise<{ status: number; pid: number; body: string }> {
  return new Promise((resolve, reject) => {
    http.get({ host: '127.0.0.1', port, path: '/', agent: false, timeout: 20_000 }, (res) => {
      let body = '';
      res.setEncoding('utf8').on('data', (chunk: string) => (body += chunk));
      res.on('end', () => resolve({ status: res.statusCode!, pid: Number(res.headers['x-pid']), body }));
    }).on('error', reject);
  });
}

const RELOADS = 3;

describe('handover start: unmodified programs', () => {
  const apps: [string, 'keep-alive' | 'close'][] = [
    ['express', 'keep-alive'],
    ['fastify', 'keep-alive'],
    ['koa', 'keep-alive'],
    ['http', 'keep-alive'],
    ['net', 'close'],
    ['two-ports', 'keep-alive'],
  ];
  it.each(apps)(`%s with --workers 2: ${RELOADS} reloads under load, zero failed requests, new pids; stop exits 0 and frees the ports`, async (name, mode) => {
    const app = await start(path.join(FIXTURES, `${name}.js`), ['--workers', '2']);
    let status = await app.serving(1);
    const ports = status.addresses.map(portOf);
    expect(ports).toHaveLength(name === 'two-ports' ? 2 : 1);
    const loads = ports.map((port) => new Load({ port, connections: 4, mode }));
    let previous = app.pids(status, 1);
    for (let generation = 2; generation <= RELOADS + 1; generation++) {
      const reload = await app.cli('reload');
      expect(reload, `reload to generation ${generation}`).toMatchObject({ code: 0, stdout: 'reloaded\n' });
      status = await app.serving(generation);
      const fresh = app.pids(status, generation);
      expect(fresh.filter((pid) => previous.includes(pid))).toEqual([]);
      expect(status.addresses.map(portOf), 'the ports stay the same across reloads').toEqual(ports);
      // every port is answered by the new generation
      await Promise.all(loads.map((load) => pollUntil(() => fresh.some((pid) => load.stats.pids.has(pid)), `generation ${generation} to answer`)));
      previous = fresh;
    }
    const stats = await Promise.all(loads.map((load) => load.stop()));
    for (const s of stats) {
      expect(s.failed, `failures: ${JSON.stringify(s.errors)}`).toBe(0);
      expect(s.ok).toBeGreaterThan(0);
    }
    const stop = await app.cli('stop');
    expect(stop).toMatchObject({ code: 0, stdout: 'stopped\n' });
    expect(await app.master.exited).toEqual({ code: 0, signal: null });
    for (const port of ports) expect(await connectOutcome(port)).toBe('ECONNREFUSED');
  });
});

describe('handover start: deploys, environment, watch, readiness', () => {
  it('a deploy that throws at start-up: reload exits 1 with the thrown message; the old generation keeps serving', async () => {
    const dir = scratch('handover-start-');
    const script = path.join(dir, 'app.js');
    fs.copyFileSync(path.join(FIXTURES, 'http.js'), script);
    const app = await start(script, ['--workers', '2']);
    const status = await app.serving(1);
    const port = portOf(status.addresses[0]);
    const old = app.pids(status, 1);

    fs.copyFileSync(path.join(FIXTURES, 'broken.js'), script);
    const failed = await app.cli('reload');
    expect(failed.code).toBe(1);
    expect(failed.stdout).toMatch(/^reload failed: /);
    expect(failed.stdout).toContain('Error: cannot connect to the database at db.internal:5432 (broken deploy)');
    expect(failed.stdout).toContain(`${script}:2`);
    const after = await app.serving(1);
    expect(app.pids(after, 1)).toEqual(old);
    expect(old).toContain((await get(port)).pid);

    fs.writeFileSync(script, 'const x = ;\n');
    const syntax = await app.cli('reload');
    expect(syntax.code).toBe(1);
    expect(syntax.stdout).toContain(`${script}:1`);
    expect(syntax.stdout).toContain('SyntaxError: Unexpected token');

    fs.copyFileSync(path.join(FIXTURES, 'http.js'), script);
    expect((await app.cli('reload')).code).toBe(0);
    expect((await app.status())?.generation).toBe(4);
  });

  it('--env-file is read again at each reload: a changed value reaches the new generation, a removed one is gone', async () => {
    const dir = scratch('handover-start-');
    const envFile = path.join(dir, 'app.env');
    fs.writeFileSync(envFile, 'GREETING=first\n');
    const app = await start(path.join(FIXTURES, 'http.js'), ['--env-file', envFile]);
    const port = portOf((await app.serving(1, 1)).addresses[0]);
    expect((await get(port)).body).toBe('hello from http, first\n');

    fs.writeFileSync(envFile, '# a comment\nGREETING="second one"\n');
    expect((await app.cli('reload')).code).toBe(0);
    await app.serving(2, 1);
    await pollUntil(async () => (await get(port)).body === 'hello from http, second one\n', 'the second greeting');

    fs.writeFileSync(envFile, '');
    expect((await app.cli('reload')).code).toBe(0);
    await pollUntil(async () => (await get(port)).body === 'hello from http, no greeting\n', 'the greeting to be gone');

    fs.rmSync(envFile);
    const missing = await app.cli('reload');
    expect(missing.code).toBe(1);
    // Node 20 itself checks a file named by --env-file anywhere on its command line ("node: FILE: not found")
    expect(missing.stdout).toMatch(new RegExp(`${envFile}(: not found| \\(ENOENT\\))`));
  });

  it('--watch reloads after a file under the watched directory changes', async () => {
    const dir = scratch('handover-start-');
    const script = path.join(dir, 'app.js');
    fs.copyFileSync(path.join(FIXTURES, 'http.js'), script);
    const app = await start(script, [`--watch=${dir}`]);
    const port = portOf((await app.serving(1, 1)).addresses[0]);
    const old = (await get(port)).pid;
    fs.writeFileSync(script, fs.readFileSync(script, 'utf8').replace('hello from http', 'hello from the edited http'));
    await app.serving(2, 1);
    const reply = await get(port);
    expect(reply.body).toBe('hello from the edited http, no greeting\n');
    expect(reply.pid).not.toBe(old);
    expect(app.master.stderr).toMatch(/--watch: .*app\.js changed; reloading/);
  });

  it('--wait-ready: no request reaches a worker before its program calls ready()', async () => {
    const app = await start(path.join(FIXTURES, 'wait-ready.js'), ['--workers', '2', '--wait-ready']);
    const port = portOf((await app.serving(1)).addresses[0]);
    const load = new Load({ port, connections: 4 });
    for (let generation = 2; generation <= 3; generation++) {
      expect((await app.cli('reload')).code).toBe(0);
      const fresh = app.pids(await app.serving(generation), generation);
      await pollUntil(() => fresh.some((pid) => load.stats.pids.has(pid)), `generation ${generation} to answer`);
    }
    const stats = await load.stop();
    expect(stats.failed, `failures (a 503 is a request served before ready()): ${JSON.stringify(stats.errors)}`).toBe(0);
  });

  it('worker output reaches the master\'s, each line prefixed with generation and pid', async () => {
    const app = await start(path.join(FIXTURES, 'http.js'), ['--workers', '2']);
    const status = await app.serving(1);
    for (const pid of app.pids(status, 1)) {
      await pollUntil(() => app.stdout.includes(`[g1 ${pid}] listening on ${portOf(status.addresses[0])}\n`), `worker ${pid}'s line`);
    }
  });
});
