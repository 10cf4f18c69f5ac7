// The master's life around the reloads: signal bursts coalesce (invariant 9),
// the accept queue outlives every worker (1), workers never outlive the
// master (8), no fd leaks (7) or inherited fds (5), process-group signals,
// the forced stop, clean-up of socket files and pidFile, respawn.
//
// Sensitivity, checked by hand on a private copy of the repository (dist/
// edited, then this file run against it); each mutation made the named test(s)
// fail, each with an assertion or a pollUntil deadline, not the test timeout:
//   - reload() without the queue (every call starts runReload):       burst
//   - reload() dropping requests made during a reload:                burst
//   - the worker's reload-signal handlers removed:                    group SIGHUP
//   - the worker's stop-signal handlers removed (default SIGINT):     group SIGINT
//   - the worker's control 'close' handler not draining:              SIGKILL master (EOF alone)
//   - that, and PR_SET_PDEATHSIG not set either:                      SIGKILL master (both)
//   - spawnSelf passing the master's sockets as extra stdio:          no fd the master opened
//   - one fd (/dev/null) opened per worker hello, never closed:       fd count after 20 reloads
//   - stop() ignoring a second call:                                  second stop signal
//   - shutdown() not calling listeners.closeAll():                    unix + pidFile
//   - shutdown() not removing the pidFile:                            unix + pidFile
//   - onWorkerExit not respawning after an exit with code 0:          worker exits on its own
//   - listeners closed (and re-bound) when a serving worker crashes:  both accept-queue tests
// "an fd the master inherited without close-on-exec" fails on the code as it
// is (see the report) and passes once the master marks every inherited fd >= 3
// close-on-exec before it spawns (tried with a native helper in the copy).
import * as fs from 'node:fs';
import * as http from 'node:http';
import * as net from 'node:net';
import * as path from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { ENV } from '../src/protocol';
import { DUPLICATE_STOP_MS } from '../src/signals';
import { adminStatus } from './helpers/control';
import { Load, inFlight } from './helpers/load';
import { type Master, ROOT, fdCount, isAlive, ourProcesses, pollUntil, reapAll, startMaster, tempDir } from './helpers/processes';

const APP = 'test/fixtures/lifecycle-app.js';
const LAUNCH = 'test/fixtures/lifecycle-launch.js';

const cleanups: (() => void | Promise<void>)[] = [];
afterEach(async () => {
  await reapAll();
  for (const cleanup of cleanups.splice(0).reverse()) await cleanup();
});

function scratch(): string {
  const dir = tempDir('handover-lifecycle-');
  cleanups.push(() => fs.rmSync(dir, { recursive: true, force: true }));
  return dir;
}

// ---------------------------------------------------------------- helpers

type Target = { port: number } | { socketPath: string };

interface Reply {
  status: number;
  body: string;
  pid: number;
}

/** One request on a fresh connection (no agent, no keep-alive). */
function get(target: Target, urlPath = '/'): Promise<Reply> {
  return new Promise((resolve, reject) => {
    const req = http.request({ host: '127.0.0.1', ...target, path: urlPath, agent: false }, (res) => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (chunk: string) => (body += chunk));
      res.on('end', () => resolve({ status: res.statusCode!, body, pid: Number(res.headers['x-pid']) }));
      res.on('error', reject);
    });
    req.on('error', reject);
    req.end();
  });
}

/** Environment of a live process (we are its user, or root). */
function environOf(pid: number): Record<string, string> {
  const env: Record<string, string> = {};
  for (const entry of fs.readFileSync(`/proc/${pid}/environ`, 'utf8').split('\0')) {
    const eq = entry.indexOf('=');
    if (eq > 0) env[entry.slice(0, eq)] = entry.slice(eq + 1);
  }
  return env;
}

/** The master's control socket, as its workers were told. */
function controlSocketOf(master: Master): string {
  const socket = environOf(master.workerPids[0])[ENV.socket];
  expect(socket).toBeTruthy();
  return socket;
}

/** `ino` values of the sockets and pipes a process has open, from /proc/<pid>/fd. */
function fdTargets(pid: number): Map<number, string> {
  const targets = new Map<number, string>();
  for (const fd of fs.readdirSync(`/proc/${pid}/fd`)) {
    try {
      targets.set(Number(fd), fs.readlinkSync(`/proc/${pid}/fd/${fd}`));
    } catch {
      // closed meanwhile
    }
  }
  return targets;
}

/** Process group of a live process (field 5 of /proc/<pid>/stat). */
function pgidOf(pid: number): number {
  const stat = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
  return Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[2]);
}

/** Resolves once `port` can be bound by a plain server on 127.0.0.1 (and closes it again). */
function canListen(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const server = net.createServer();
    server.once('error', () => resolve(false));
    server.listen(port, '127.0.0.1', () => server.close(() => resolve(true)));
  });
}

interface FdReport {
  pid: number;
  startup: { fd: number; target: string | null }[];
  now: { fd: number; target: string | null }[];
}

function workersOf(event: { status?: { workers: { pid: number; generation: number }[] } }, generation: number): number[] {
  return event.status!.workers.filter((w) => w.generation === generation).map((w) => w.pid);
}

// ---------------------------------------------------------------- tests

describe('reload signals (invariant 9)', () => {
  it('a burst of 10 mixed SIGHUP/SIGUSR1 runs exactly 2 reloads (the first plus one queued) and ends on the newest generation', async () => {
    const master = await startMaster({ script: APP, fixture: { workers: 2 } });
    const control = controlSocketOf(master);
    // Back to back: the whole burst reaches the master long before the first
    // reload can finish (its workers must start and say ready over the
    // master's own event loop). SIGHUP and SIGUSR1 are distinct signals, so at
    // least two deliveries happen even if the kernel merges repeats: the
    // first starts a reload, every later one joins the single queued reload.
    for (let i = 0; i < 10; i++) master.proc.kill(i % 2 === 0 ? 'SIGHUP' : 'SIGUSR1');

    // Quiescence, asked of the master itself: no reload running or queued,
    // every worker of its newest generation and ready, and no older one left.
    const settled = await pollUntil(async () => {
      const status = await adminStatus(control);
      const quiet = !status.reloading && status.generation > 1 && status.workers.length === 2 &&
        status.workers.every((w) => w.generation === status.generation && w.state === 'ready');
      return quiet ? status : undefined;
    }, 'the reload burst to settle');
    // the events the master printed before it answered
    await master.waitFor((e) => e.event === 'reloaded' && e.generation === settled.generation, 'the last reloaded event');

    expect(master.count('reload-failed')).toBe(0);
    expect(master.count('reload'), 'reloads started by the burst').toBe(2);
    expect(master.count('reloaded')).toBe(2);
    expect(settled.generation).toBe(3);
    // exactly the master and the two newest workers are alive
    expect(ourProcesses().sort()).toEqual([master.pid, ...settled.workers.map((w) => w.pid)].sort());
    // and they serve
    expect(settled.workers.map((w) => w.pid)).toContain((await get({ port: master.port })).pid);
    expect((await master.stop()).code).toBe(0);
  });
});

describe('the accept queue outlives the workers (invariant 1)', () => {
  it('connections made while no worker is alive wait in the queue and are served by the respawned worker', async () => {
    const behaviourFile = path.join(scratch(), 'behaviour.json');
    fs.writeFileSync(behaviourFile, '{}');
    // app.js reads its behaviour file at start-up: throwAtStartup makes every
    // respawn die before it even connects to the master.
    const master = await startMaster({ fixture: { behaviourFile } });
    const [first] = master.workerPids;
    fs.writeFileSync(behaviourFile, JSON.stringify({ throwAtStartup: true }));
    process.kill(first, 'SIGKILL');
    await master.waitFor((e) => e.event === 'worker-exit' && e.pid === first, 'the killed worker\'s exit');

    // No worker can accept now. Open connections and send requests.
    const n = 20;
    const connected: Promise<void>[] = [];
    const failures: string[] = [];
    const replies = Array.from({ length: n }, () => new Promise<Reply>((resolve, reject) => {
      const req = http.request({ host: '127.0.0.1', port: master.port, path: '/', agent: false }, (res) => {
        let body = '';
        res.setEncoding('utf8');
        res.on('data', (chunk: string) => (body += chunk));
        res.on('end', () => resolve({ status: res.statusCode!, body, pid: Number(res.headers['x-pid']) }));
      });
      // settles when the kernel completed the handshake (or refused it: then the reply is an error)
      connected.push(new Promise((ok) => {
        req.once('socket', (socket) => socket.once('connect', () => ok()));
        req.once('error', () => ok());
      }));
      req.on('error', (error: NodeJS.ErrnoException) => {
        failures.push(`${error.code}: ${error.message}`);
        reject(error);
      });
      req.end();
    }));
    const outcomes = Promise.allSettled(replies);
    await Promise.all(connected); // every handshake completed: they sit in the accept queue
    expect(failures, 'requests refused or reset while no worker was alive').toEqual([]);
    // at least one respawn has come and died while they waited
    await master.waitFor(
      (e) => e.event === 'worker-exit' && e.pid !== first && Number(e.code) === 1, // (code is a number here)
      'a respawned worker to die at start-up',
    );

    // Fix the deploy: the next respawn serves every queued connection.
    fs.writeFileSync(behaviourFile, '{}');
    const settled = await outcomes;
    expect(failures, 'requests that failed').toEqual([]);
    const served = settled.map((s) => (s as PromiseFulfilledResult<Reply>).value);
    for (const reply of served) {
      expect(reply.status).toBe(200);
      expect(reply.pid).not.toBe(first);
    }
    expect(new Set(served.map((r) => r.pid)).size).toBe(1);
    expect((await master.stop()).code).toBe(0);
  });

  it('under load, SIGKILL of the only worker fails at most the requests in flight on it; never ECONNREFUSED', async () => {
    const master = await startMaster({ script: APP });
    const [first] = master.workerPids;
    const connections = 16;
    const load = new Load({ port: master.port, connections });
    await load.servedBy(first, 200);
    process.kill(first, 'SIGKILL');
    await master.waitFor((e) => e.event === 'worker-exit' && e.pid === first, 'the killed worker\'s exit');
    const replacement = await pollUntil(() => [...load.stats.pids.keys()].find((pid) => pid !== first), 'a respawned worker to serve');
    await load.servedBy(replacement, 200);
    const stats = await load.stop();
    // Each loop had one keep-alive connection on the killed worker: at most
    // its request in flight there fails (reset / hang up). Every later request
    // opens a new connection, which waits in the queue and succeeds.
    expect(stats.errors.ECONNREFUSED, 'connections refused: the accept queue was gone').toBeUndefined();
    const inFlightFailures = ['ECONNRESET', 'socket hang up', 'EPIPE'];
    expect(Object.keys(stats.errors).filter((code) => !inFlightFailures.includes(code))).toEqual([]);
    expect(stats.failed).toBeLessThanOrEqual(connections);
    expect(stats.ok).toBeGreaterThan(400);
    expect((await master.stop()).code).toBe(0);
  });
});

describe('workers never outlive the master (invariant 8)', () => {
  const cases: [string, Record<string, unknown>][] = [
    ['PR_SET_PDEATHSIG and EOF', {}],
    // the worker clears PR_SET_PDEATHSIG: the control socket's EOF is all it has
    ['EOF on the control socket alone', { clearDeathSignal: true }],
  ];
  for (const [name, extra] of cases) {
    it(`SIGKILL to the master (${name}): every worker is gone within stopTimeout and the port is free`, async () => {
      const stopTimeout = 3000;
      const master = await startMaster({ script: APP, fixture: { workers: 2, stopTimeout, ...extra } });
      const { port } = master;
      const workers = master.workerPids;
      expect(workers).toHaveLength(2);
      // a master killed by SIGKILL cannot remove its control directory: do it for it
      const controlDir = path.dirname(controlSocketOf(master));
      cleanups.push(() => fs.rmSync(controlDir, { recursive: true, force: true }));
      // a request that never ends keeps its worker draining until stopTimeout
      const hung = inFlight(port, '/hang');
      await hung.started;
      expect(await canListen(port)).toBe(false);

      master.proc.kill('SIGKILL');
      await master.exited;
      // deadline: stopTimeout plus the time to notice (generous: this is not a speed test)
      await pollUntil(() => workers.every((pid) => !isAlive(pid)), 'every worker to exit after the master died', stopTimeout + 10_000);
      expect(ourProcesses()).toEqual([]);
      await expect(hung.done).rejects.toThrow();
      expect(await canListen(port), `port ${port} still taken after every process exited`).toBe(true);
    });
  }
});

describe('fds (invariants 5 and 7)', () => {
  /** /fds reports from every worker in `pids` (fresh connections until each has answered). */
  async function fdReports(port: number, pids: number[]): Promise<Map<number, FdReport>> {
    const reports = new Map<number, FdReport>();
    await pollUntil(async () => {
      const report = JSON.parse((await get({ port }, '/fds')).body) as FdReport;
      reports.set(report.pid, report);
      return pids.every((pid) => reports.has(pid));
    }, `a /fds report from workers ${pids.join(', ')}`);
    return reports;
  }

  it('no fd the master opened reaches a worker at spawn: no socket beyond stdio', async () => {
    const master = await startMaster({ script: APP, fixture: { workers: 2 } });
    // generation 2 starts while the master holds generation 1's control connections too
    const outcome = await master.reload();
    expect(outcome.event, outcome.error).toBe('reloaded');
    const newest = workersOf(outcome, 2);
    const reports = await fdReports(master.port, newest);

    // What the master inherited from this test runner is not the master's doing (see the next test).
    const fromAbove = new Set(fdTargets(process.pid).values());
    const masterOwn = new Set([...fdTargets(master.pid).values()].filter((t) => /^(socket|pipe):/.test(t) && !fromAbove.has(t)));
    expect([...masterOwn].some((t) => t.startsWith('socket:')), 'the master has sockets to leak').toBe(true);
    for (const pid of newest) {
      const { startup, now } = reports.get(pid)!;
      const beyondStdio = startup.filter((f) => f.fd > 2 && f.target !== null);
      expect(beyondStdio.filter((f) => f.target!.startsWith('socket:')), `sockets worker ${pid} had at start-up`).toEqual([]);
      expect(beyondStdio.filter((f) => masterOwn.has(f.target!)), `fds worker ${pid} shares with the master at start-up`).toEqual([]);
      // the listing does see sockets once they exist: the listener came over the control socket
      expect(now.filter((f) => f.target?.startsWith('socket:')).length).toBeGreaterThanOrEqual(2);
    }
    expect((await master.stop()).code).toBe(0);
  });

  // Node itself marks low inherited fds (3, 4, ...) close-on-exec at start-up,
  // but not one further up: fd 40 is what a supervisor (or this test runner,
  // whose fd 251 is such a pipe) can leave in the master.
  const EXTRA_FD = 40;
  it(`an fd the master inherited without close-on-exec (a socket at fd ${EXTRA_FD}) is not passed on to workers`, async () => {
    const master = await startMaster({
      script: LAUNCH,
      args: [process.execPath, path.join(ROOT, APP)],
      env: { LAUNCH_EXTRA_FD: String(EXTRA_FD) },
      fixture: { workers: 1 },
    });
    const leader = master.events.find((e) => e.event === 'launched')!.pid!;
    const inherited = fdTargets(leader).get(EXTRA_FD);
    expect(inherited, `the master's fd ${EXTRA_FD}`).toMatch(/^socket:/);
    const reports = await fdReports(master.port, master.workerPids);
    const { startup } = reports.get(master.workerPids[0])!;
    expect(startup.filter((f) => f.target === inherited), `the master's inherited fd ${EXTRA_FD}, in its worker at start-up`).toEqual([]);
    expect(startup.filter((f) => f.fd > 2 && f.target?.startsWith('socket:')), 'sockets beyond stdio at start-up').toEqual([]);
    master.proc.kill('SIGTERM'); // the launcher passes it on
    expect((await master.exited).code).toBe(0);
  });

  it('the master\'s fd count after 20 reloads equals its count after the first', async () => {
    const master = await startMaster({ script: APP, fixture: { workers: 2 } });
    let reloads = 0;
    const reloadAndSettle = async () => {
      const outcome = await master.reload(reloads % 2 === 0 ? 'SIGHUP' : 'SIGUSR1');
      expect(outcome.event, outcome.error).toBe('reloaded');
      reloads++;
      // every drained worker has exited and the master has seen it
      await master.waitFor(() => master.count('worker-exit') === 2 * reloads, `generation ${reloads} to exit`);
    };
    await reloadAndSettle();
    const baseline = fdTargets(master.pid);
    while (reloads < 20) await reloadAndSettle();
    const describeFds = (fds: Map<number, string>) => [...fds].map(([fd, t]) => `${fd} -> ${t}`).join('\n');
    // the last connection may still be closing: poll, and show the difference if it never settles
    const settled = await pollUntil(() => fdCount(master.pid) === baseline.size, 'the fd count to return to its baseline', 5_000)
      .then(() => true, () => false);
    expect(settled, `fds after the first reload:\n${describeFds(baseline)}\nafter 20:\n${describeFds(fdTargets(master.pid))}`).toBe(true);
    expect((await master.stop()).code).toBe(0);
  });
});

describe('signals to the whole process group (invariant 9)', () => {
  /** A master leading its own process group, started through the launcher (which stays outside the group). */
  async function groupLeader(fixture: Record<string, unknown>): Promise<{ master: Master; leader: number }> {
    const master = await startMaster({
      script: LAUNCH,
      args: [process.execPath, path.join(ROOT, APP)],
      env: { LAUNCH_DETACHED: '1' },
      fixture,
    });
    const leader = master.events.find((e) => e.event === 'launched')!.pid!;
    expect(master.events.find((e) => e.event === 'ready')!.status!.pid).toBe(leader);
    // the signal will reach the master, not the launcher or this test; each
    // worker leads its own group (src/master/process-group.ts), so the master drains it
    expect(pgidOf(leader)).toBe(leader);
    for (const pid of master.workerPids) expect(pgidOf(pid)).toBe(pid);
    expect(pgidOf(master.pid)).not.toBe(leader);
    return { master, leader };
  }

  it('SIGINT to the group (Ctrl-C) drains everyone: in-flight request completes, every process exits 0', async () => {
    const { master, leader } = await groupLeader({ workers: 2, stopTimeout: 30_000 });
    const workers = master.workerPids;
    const slow = inFlight(master.port, '/flush?ms=1500');
    expect(workers).toContain(await slow.started);
    process.kill(-leader, 'SIGINT');
    expect(await slow.done).toBe('started done');
    const launched = await master.waitFor((e) => e.event === 'launched-exit', 'the master to exit');
    expect(launched).toMatchObject({ code: 0, signal: null });
    const exits = master.events.filter((e) => e.event === 'worker-exit');
    expect(exits.map((e) => e.pid).sort()).toEqual([...workers].sort());
    for (const exit of exits) expect(exit, `worker ${exit.pid}`).toMatchObject({ code: 0, signal: null });
    expect(master.count('stop')).toBe(1);
    await master.exited;
    expect(ourProcesses()).toEqual([]);
  });

  it('a 7 s SIGSTOP of the whole group (Ctrl-Z, docker pause), then SIGCONT, replaces no worker (invariant 19)', async () => {
    const { master, leader } = await groupLeader({ workers: 2, heartbeatTimeout: 1_000 });
    const control = controlSocketOf(master);
    const before = [...master.workerPids].sort();
    // every process of the service, as docker pause or a VM freeze stops them
    // (each worker leads its own process group: src/master/process-group.ts)
    const groups = [leader, ...before];
    for (const group of groups) process.kill(-group, 'SIGSTOP');
    await new Promise((resolve) => setTimeout(resolve, 7_000)); // the pause under test, not a wait for an event
    for (const group of groups) process.kill(-group, 'SIGCONT');
    // Heartbeats are judged every 250 ms here; a judgment on the clock alone
    // takes everyone out of service at the first one. Watch 3 s of them.
    const until = Date.now() + 3_000;
    while (Date.now() < until) {
      const status = await adminStatus(control);
      expect(status.workers.map((w) => w.pid).sort()).toEqual(before);
      expect(status.slots!.map((s) => [s.state, s.restarts])).toEqual([['ready', 0], ['ready', 0]]);
      await new Promise((resolve) => setTimeout(resolve, 100));
    }
    expect(master.stderr).not.toMatch(/has not answered a heartbeat/);
    expect(before).toContain((await get({ port: master.port })).pid);
    master.proc.kill('SIGTERM'); // the launcher passes it on
    expect((await master.exited).code).toBe(0);
  });

  it('SIGHUP to the group reloads once; the old workers ignore it and drain normally', async () => {
    const { master, leader } = await groupLeader({ workers: 2 });
    const control = controlSocketOf(master);
    const old = master.workerPids;
    process.kill(-leader, 'SIGHUP');
    const outcome = await master.waitFor((e) => e.event === 'reloaded' || e.event === 'reload-failed', 'the reload');
    expect(outcome.event, outcome.error).toBe('reloaded');
    await master.waitFor(() => master.count('worker-exit') >= old.length, 'the old generation to exit');
    const settled = await pollUntil(async () => {
      const status = await adminStatus(control);
      return !status.reloading && status.workers.every((w) => w.generation === status.generation) ? status : undefined;
    }, 'the master to settle');
    expect(settled.generation).toBe(2);
    expect(master.count('reload')).toBe(1);
    const exits = master.events.filter((e) => e.event === 'worker-exit');
    expect(exits.map((e) => e.pid).sort()).toEqual([...old].sort());
    // drained (code 0), not killed by the SIGHUP they received too
    for (const exit of exits) expect(exit, `worker ${exit.pid}`).toMatchObject({ code: 0, signal: null });
    expect(settled.workers).toHaveLength(2);
    expect(settled.workers.map((w) => w.pid)).toContain((await get({ port: master.port })).pid);
    master.proc.kill('SIGTERM'); // the launcher passes it on
    expect((await master.exited).code).toBe(0);
  });
});

describe('stop', () => {
  it('a second stop signal a second or more after the first forces the stop at once (a request hangs, stopTimeout is 60 s)', async () => {
    const master = await startMaster({ script: APP, fixture: { stopTimeout: 60_000 } });
    const hung = inFlight(master.port, '/hang');
    await hung.started;
    master.proc.kill('SIGTERM');
    // the first one was handled (a second signal sent before that could merge with it)
    await pollUntil(() => /SIGTERM: stop requested/.test(master.stderr), 'the master to handle the first SIGTERM', 10_000);
    expect(ourProcesses()).toContain(master.workerPids[0]); // the drain is waiting on the hung request
    // Within DUPLICATE_STOP_MS a second signal is the same stop delivered
    // twice (process group); a deliberate second one comes later.
    await new Promise((resolve) => setTimeout(resolve, DUPLICATE_STOP_MS + 100));
    master.proc.kill('SIGTERM');
    // far less than stopTimeout: only a forced stop gets here
    await pollUntil(() => ourProcesses().length === 0, 'every process to be gone after the second SIGTERM', 20_000);
    expect((await master.exited).code).toBe(0);
    await expect(hung.done).rejects.toThrow();
  });

  it('stop removes the Unix socket files it created and the pidFile', async () => {
    const dir = scratch();
    const socketPath = path.join(dir, 'app.sock');
    const pidFile = path.join(dir, 'app.pid');
    const master = await startMaster({
      script: APP,
      fixture: { addresses: [`unix:${socketPath}`, '127.0.0.1:0'], pidFile },
    });
    const ready = master.events.find((e) => e.event === 'ready')!;
    expect(ready.addresses![0]).toBe(`unix:${socketPath}`);
    const tcp = ready.addresses![1];
    const port = Number(tcp.slice(tcp.lastIndexOf(':') + 1));
    expect(fs.lstatSync(socketPath).isSocket()).toBe(true);
    expect(fs.readFileSync(pidFile, 'utf8').trim()).toBe(String(master.pid));
    const controlDir = path.dirname(controlSocketOf(master));
    expect(fs.existsSync(controlDir)).toBe(true);
    const [viaUnix, viaTcp] = await Promise.all([get({ socketPath }), get({ port })]);
    expect(viaUnix).toMatchObject({ status: 200, body: 'ok' });
    expect(viaTcp).toMatchObject({ status: 200, body: 'ok' });
    expect(master.workerPids).toContain(viaUnix.pid);

    expect((await master.stop()).code).toBe(0);
    expect(fs.existsSync(socketPath), 'the Unix socket file').toBe(false);
    expect(fs.existsSync(pidFile), 'the pidFile').toBe(false);
    expect(fs.existsSync(controlDir), 'the control directory').toBe(false);
    expect(ourProcesses()).toEqual([]);
  });
});

describe('respawn', () => {
  it('a worker that exits with code 0 on its own is respawned, and requests meanwhile are served', async () => {
    const master = await startMaster({ script: APP });
    const control = controlSocketOf(master);
    const [first] = master.workerPids;
    expect(await get({ port: master.port }, '/exit')).toMatchObject({ status: 200, body: 'bye', pid: first });
    const exit = await master.waitFor((e) => e.event === 'worker-exit' && e.pid === first, 'the worker to exit');
    expect(exit).toMatchObject({ code: 0, signal: null });
    // sent right away: it waits in the queue for the replacement
    const pending = get({ port: master.port });
    const replacement = await pollUntil(async () => {
      const { workers } = await adminStatus(control);
      return workers.find((w) => w.pid !== first && w.state === 'ready');
    }, 'a replacement worker to be ready');
    const reply = await pending;
    expect(reply.status).toBe(200);
    expect(reply.pid).toBe(replacement.pid);
    expect(reply.pid).not.toBe(first);
    const status = await adminStatus(control);
    expect(status.workers).toEqual([expect.objectContaining({ pid: reply.pid, slot: 0, generation: 1, state: 'ready' })]);
    expect(master.count('reload')).toBe(0);
    expect((await master.stop()).code).toBe(0);
  });
});
