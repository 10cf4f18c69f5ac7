// Single-process mode (issue 6): `new Server({ mode: 'single', pidFile })`.
// No master: the process serves itself, and a reload signal hands its
// listening sockets over SCM_RIGHTS to a successor copy of the program, which
// takes over once ready; the old process drains and exits, so the pid changes
// and the pidFile follows it. test/fixtures/single-app.js is the app; every
// generation prints its events (with `self`, its own pid) on the stdout pipe
// the first process was given, which its successors inherit.
//
// The first process exits after the first handover: its exit is expected, so
// these tests wait on the event list (pollUntil) rather than the helper's
// waitFor, which gives up once the process it started has exited. reapAll
// finds every generation by the environment marker they all inherit.
//
// Sensitivity, checked by hand on a private copy of the repository (dist/
// edited, then this file run against it, with the src fix the last test asks
// for applied); each mutation made the named test fail:
//   - handOver() not rewriting the pidFile:                          pidFile follows the pid
//   - handOver() retiring before the successor is ready:             10 reloads under load
//   - retire() exiting at once instead of draining:                  10 reloads (ECONNRESET), SIGTERM
//   - the predecessor retiring after a failed successor too:         both rollback tests
//   - retire(true) keeping the pidFile and the socket file:          SIGTERM, Unix socket
//   - retire(false) unlinking the socket file at a handover:         Unix socket
// Against src as it is, the last test fails on a real bug: retire() removes
// the reload-signal handlers, so a SIGHUP to the draining process kills it.
import * as fs from 'node:fs';
import * as http from 'node:http';
import * as path from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { adminReload, adminStatus } from './helpers/control';
import { Load, inFlight } from './helpers/load';
import { type Master, type MasterEvent, isAlive, ourProcesses, pollUntil, reapAll, startMaster, tempDir } from './helpers/processes';

const APP = 'test/fixtures/single-app.js';

const cleanups: (() => void)[] = [];
afterEach(async () => {
  await reapAll();
  for (const cleanup of cleanups.splice(0)) cleanup();
});

function scratch(): string {
  const dir = tempDir('handover-single-');
  cleanups.push(() => fs.rmSync(dir, { recursive: true, force: true }));
  return dir;
}

// ---------------------------------------------------------------- helpers

/** An event from any generation: `self` is the pid that printed it; `pid` (reloaded) the successor's. */
type Event = MasterEvent & { self: number };

function events(first: Master): Event[] {
  return first.events as Event[];
}

/** The first matching event from any generation (polls: the first process may be long gone). */
function waitEvent(first: Master, match: (e: Event) => boolean, what: string, timeoutMs = 60_000): Promise<Event> {
  return pollUntil(() => events(first).find(match), what, timeoutMs).catch((error: Error) => {
    throw new Error(`${error.message}; output so far:\n${first.stderr}`);
  });
}

function readPid(pidFile: string): number {
  return Number(fs.readFileSync(pidFile, 'utf8').trim());
}

type Target = { port: number } | { socketPath: string };

interface Reply {
  status: number;
  body: string;
  pid: number;
  version: number;
}

/** One request on a fresh connection; rejects if unanswered by the deadline. */
function get(target: Target, urlPath = '/', deadlineMs = 30_000): Promise<Reply> {
  return new Promise((resolve, reject) => {
    const req = http.request({ host: '127.0.0.1', ...target, path: urlPath, agent: false }, (res) => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (chunk: string) => (body += chunk));
      res.on('end', () => resolve({
        status: res.statusCode!, body, pid: Number(res.headers['x-pid']), version: Number(res.headers['x-version']),
      }));
      res.on('error', reject);
    });
    req.setTimeout(deadlineMs, () => req.destroy(new Error(`no answer to GET ${urlPath} within ${deadlineMs} ms`)));
    req.on('error', reject);
    req.end();
  });
}

/**
 * Closed-loop keep-alive clients on a Unix socket (the Load helper speaks TCP
 * only): every outcome counted, responses per pid.
 */
class UnixLoad {
  readonly pids = new Map<number, number>();
  readonly errors: Record<string, number> = {};
  ok = 0;
  failed = 0;
  private running = true;
  private readonly loops: Promise<void>[] = [];

  constructor(socketPath: string, connections: number) {
    for (let i = 0; i < connections; i++) {
      const agent = new http.Agent({ keepAlive: true, maxSockets: 1 });
      this.loops.push((async () => {
        while (this.running) {
          await new Promise<void>((resolve) => {
            const fail = (code: string) => {
              this.failed++;
              this.errors[code] = (this.errors[code] ?? 0) + 1;
              resolve();
            };
            const req = http.request({ socketPath, path: '/', agent, timeout: 60_000 }, (res) => {
              res.resume();
              res.on('end', () => {
                if (res.statusCode !== 200) return fail(`status ${res.statusCode}`);
                this.ok++;
                const pid = Number(res.headers['x-pid']);
                this.pids.set(pid, (this.pids.get(pid) ?? 0) + 1);
                resolve();
              });
              res.on('error', (error: NodeJS.ErrnoException) => fail(error.code ?? error.message));
            });
            req.on('timeout', () => req.destroy(Object.assign(new Error('timeout'), { code: 'TIMEOUT' })));
            req.on('error', (error: NodeJS.ErrnoException) => fail(error.code ?? error.message));
            req.end();
          });
        }
        agent.destroy();
      })());
    }
  }

  servedBy(pid: number, what: string): Promise<unknown> {
    return pollUntil(() => this.pids.has(pid), what);
  }

  async stop(): Promise<void> {
    this.running = false;
    await Promise.all(this.loops);
  }
}

/**
 * Sends the reload signal to the pid in the pidFile and waits for the
 * handover it starts: the successor's pid, once the pidFile names it.
 */
async function handOver(first: Master, pidFile: string): Promise<{ from: number; to: number }> {
  const from = readPid(pidFile);
  const before = events(first).filter((e) => e.event === 'reloaded' || e.event === 'reload-failed').length;
  process.kill(from, 'SIGHUP');
  const outcome = await pollUntil(
    () => events(first).filter((e) => e.event === 'reloaded' || e.event === 'reload-failed')[before],
    `the handover from pid ${from}`,
    60_000,
  ) as Event;
  expect(outcome.event, outcome.error).toBe('reloaded');
  expect(outcome.self).toBe(from);
  const to = outcome.pid!;
  expect(to).not.toBe(from);
  expect(readPid(pidFile), 'the pidFile once the successor serves').toBe(to);
  return { from, to };
}

// ---------------------------------------------------------------- tests

describe('single-process mode', () => {
  it('serves; SIGHUP to the pid in the pidFile starts a successor, the pidFile follows it, the old process exits 0', async () => {
    const dir = scratch();
    const pidFile = path.join(dir, 'app.pid');
    const first = await startMaster({ script: APP, fixture: { pidFile } });
    const ready = events(first).find((e) => e.event === 'ready')!;
    expect(ready).toMatchObject({ self: first.pid, generation: 1 });
    expect(readPid(pidFile)).toBe(first.pid);
    expect(await get({ port: first.port })).toMatchObject({ status: 200, pid: first.pid });

    const { to } = await handOver(first, pidFile);
    await waitEvent(first, (e) => e.event === 'ready' && e.self === to, 'the successor\'s ready event');
    expect(events(first).find((e) => e.event === 'ready' && e.self === to)).toMatchObject({ generation: 2 });
    expect(await first.exited, 'the first process\'s exit').toEqual({ code: 0, signal: null });
    expect(isAlive(first.pid)).toBe(false);
    // same port, new process
    expect(await get({ port: first.port })).toMatchObject({ status: 200, pid: to });
    expect(ourProcesses()).toEqual([to]);
    expect(readPid(pidFile)).toBe(to);
  });

  it('10 reloads under keep-alive load: zero failed requests, responses from every generation\'s pid', async () => {
    const dir = scratch();
    const pidFile = path.join(dir, 'app.pid');
    const first = await startMaster({ script: APP, fixture: { pidFile } });
    const load = new Load({ port: first.port, connections: 16 });
    const pids = [first.pid];
    await load.servedBy(first.pid);
    for (let i = 0; i < 10; i++) {
      const { to } = await handOver(first, pidFile);
      pids.push(to);
      await load.servedBy(to); // the new generation answers before the next reload
    }
    const stats = await load.stop();
    expect(stats.errors).toEqual({});
    expect(stats.failed).toBe(0);
    expect(new Set(pids).size).toBe(11);
    for (const pid of pids) expect(stats.pids.get(pid), `responses from generation pid ${pid}`).toBeGreaterThan(0);
    expect(events(first).filter((e) => e.event === 'reloaded').map((e) => e.generation)).toEqual([2, 3, 4, 5, 6, 7, 8, 9, 10, 11]);
    // every old generation has drained and exited; only the newest is left
    const last = pids[pids.length - 1];
    await pollUntil(() => ourProcesses().length === 1, 'the old generations to exit', 30_000);
    expect(ourProcesses()).toEqual([last]);
    expect(await first.exited).toEqual({ code: 0, signal: null });
  });

  for (const [name, broken] of [
    ['throws at start-up', { throwAtStartup: true }],
    ['never becomes ready (startTimeout)', { neverReady: true }],
  ] as const) {
    it(`a successor that ${name} is rolled back: the current process keeps serving, the pidFile is unchanged`, async () => {
      const dir = scratch();
      const pidFile = path.join(dir, 'app.pid');
      const behaviourFile = path.join(dir, 'behaviour.json');
      fs.writeFileSync(behaviourFile, JSON.stringify({ version: 1 }));
      // startTimeout is also what the fixed deploy below must boot within: 10 s, not
      // less, so a busy machine (a CI run beside the whole suite) cannot fail it
      const first = await startMaster({ script: APP, fixture: { pidFile, behaviourFile, startTimeout: 10_000 } });
      const load = new Load({ port: first.port, connections: 16 });
      await load.servedBy(first.pid, 50);

      fs.writeFileSync(behaviourFile, JSON.stringify(broken));
      process.kill(readPid(pidFile), 'SIGHUP');
      const failed = await waitEvent(first, (e) => e.event === 'reload-failed', 'the handover to fail');
      expect(failed.self).toBe(first.pid);
      expect(failed.error).toMatch(/generation 1 keeps serving/);
      expect(failed.error).toMatch(broken.throwAtStartup ? /exited with code 1/ : /startTimeout/);
      expect(readPid(pidFile)).toBe(first.pid);
      expect(events(first).filter((e) => e.event === 'ready').map((e) => e.self)).toEqual([first.pid]);
      // the broken successor is gone, the first process serves on
      await pollUntil(() => ourProcesses().length === 1, 'the broken successor to be gone', 10_000);
      expect(ourProcesses()).toEqual([first.pid]);
      const served = load.stats.pids.get(first.pid)!;
      await load.servedBy(first.pid, served + 50);
      expect((await get({ port: first.port })).pid).toBe(first.pid);

      // a fixed deploy then goes through
      fs.writeFileSync(behaviourFile, JSON.stringify({ version: 2 }));
      const { to } = await handOver(first, pidFile);
      await load.servedBy(to);
      expect(await get({ port: first.port })).toMatchObject({ pid: to, version: 2 });
      const stats = await load.stop();
      expect(stats.errors).toEqual({});
      expect(stats.failed).toBe(0);
      expect([...stats.pids.keys()].sort()).toEqual([first.pid, to].sort());
    });
  }

  it('with reloadSignals: [] a reload requested during a handover is run by the successor (no signal): both calls succeed, zero failed requests', async () => {
    const dir = scratch();
    const behaviourFile = path.join(dir, 'behaviour.json');
    const gateFile = path.join(dir, 'gate');
    fs.writeFileSync(behaviourFile, JSON.stringify({ gateFile }));
    fs.writeFileSync(gateFile, '');
    const first = await startMaster({ script: APP, fixture: { reloadSignals: [], behaviourFile, controlDir: dir } });
    const control = path.join(dir, fs.readdirSync(dir).find((n) => n.startsWith(`handover-${first.pid}-`))!, 'control.sock');
    const load = new Load({ port: first.port, connections: 8 });
    await load.servedBy(first.pid);
    fs.rmSync(gateFile);
    const firstReload = adminReload(control);
    await waitEvent(first, (e) => e.event === 'reload' && e.self === first.pid, 'the handover to start');
    const secondReload = adminReload(control);
    await adminStatus(control); // answered after the second request was read
    fs.writeFileSync(gateFile, '');
    expect(await firstReload).toEqual({ ok: true });
    expect(await secondReload).toEqual({ ok: true });
    const third = await waitEvent(first, (e) => e.event === 'ready' && e.generation === 3, 'generation 3 to serve');
    await pollUntil(() => ourProcesses().length === 1, 'generations 1 and 2 to exit', 30_000);
    expect(ourProcesses()).toEqual([third.self]);
    await load.servedBy(third.self);
    const stats = await load.stop();
    expect(stats.errors).toEqual({});
    expect(events(first).filter((e) => e.event === 'reloaded').map((e) => e.generation)).toEqual([2, 3]);
  });

  it('SIGTERM to the current pid drains it (an in-flight request completes) and leaves no process and no pidFile', async () => {
    const dir = scratch();
    const pidFile = path.join(dir, 'app.pid');
    const first = await startMaster({ script: APP, fixture: { pidFile } });
    const { to } = await handOver(first, pidFile); // stop a successor, not the process the test started
    const flush = inFlight(first.port, '/flush?ms=1500');
    expect(await flush.started).toBe(to);

    process.kill(readPid(pidFile), 'SIGTERM');
    expect(await flush.done).toBe('started done');
    await waitEvent(first, (e) => e.event === 'stop' && e.self === to, 'the stop event');
    await pollUntil(() => ourProcesses().length === 0, 'every process to exit', 30_000);
    expect(fs.existsSync(pidFile), 'the pidFile after the stop').toBe(false);
    await expect(get({ port: first.port }, '/', 5_000)).rejects.toThrow(/ECONNREFUSED/);
  });

  it('a Unix socket survives handovers (the same file, served throughout) and is removed at the final stop', async () => {
    const dir = scratch();
    const pidFile = path.join(dir, 'app.pid');
    const socketPath = path.join(dir, 'app.sock');
    const first = await startMaster({ script: APP, fixture: { pidFile, addresses: [`unix:${socketPath}`] } });
    expect(events(first).find((e) => e.event === 'ready')!.addresses).toEqual([`unix:${socketPath}`]);
    const inode = fs.lstatSync(socketPath).ino;
    expect(fs.lstatSync(socketPath).isSocket()).toBe(true);

    const load = new UnixLoad(socketPath, 8);
    const pids = [first.pid];
    await load.servedBy(first.pid, 'the first process to answer on the socket');
    for (let i = 0; i < 3; i++) {
      const { to } = await handOver(first, pidFile);
      pids.push(to);
      await load.servedBy(to, `generation ${i + 2} to answer on the socket`);
      expect(fs.lstatSync(socketPath).ino, 'the socket file after a handover').toBe(inode);
    }
    await pollUntil(() => ourProcesses().length === 1, 'the old generations to exit', 30_000);
    expect(fs.lstatSync(socketPath).ino, 'the socket file once the old generations exited').toBe(inode);
    await load.stop();
    expect(load.errors).toEqual({});
    expect(load.failed).toBe(0);
    for (const pid of pids) expect(load.pids.get(pid), `responses from generation pid ${pid}`).toBeGreaterThan(0);

    process.kill(readPid(pidFile), 'SIGTERM');
    await pollUntil(() => ourProcesses().length === 0, 'every process to exit', 30_000);
    expect(fs.existsSync(socketPath), 'the socket file after the final stop').toBe(false);
    expect(fs.existsSync(pidFile), 'the pidFile after the final stop').toBe(false);
  });

  it('a reload signal that reaches the draining predecessor (a stale pidFile read) is not fatal: its in-flight request completes', async () => {
    const dir = scratch();
    const pidFile = path.join(dir, 'app.pid');
    const finish = path.join(dir, 'finish');
    const first = await startMaster({ script: APP, fixture: { pidFile } });
    const flush = inFlight(first.port, `/flush?until=${encodeURIComponent(finish)}`);
    expect(await flush.started).toBe(first.pid);

    const { to } = await handOver(first, pidFile);
    await waitEvent(first, (e) => e.event === 'drain' && e.self === first.pid, 'the first process to drain');
    // `kill -HUP $(cat app.pid)` that read the file just before the rewrite
    process.kill(first.pid, 'SIGHUP');
    // the signal is handled (or ignored) before the request may finish
    await pollUntil(() => {
      const stat = fs.readFileSync(`/proc/${first.pid}/status`, 'utf8');
      return /^SigPnd:\s*0+$/m.test(stat) && /^ShdPnd:\s*0+$/m.test(stat);
    }, 'the SIGHUP to be delivered', 10_000).catch(() => undefined); // gone already: the assertions below say why
    fs.writeFileSync(finish, '');
    expect(await flush.done).toBe('started done');
    expect(await first.exited).toEqual({ code: 0, signal: null });
    expect(ourProcesses()).toEqual([to]);
    expect(readPid(pidFile)).toBe(to);
  });
});
