// A stop strands no connection (invariant 12), and the same stop delivered
// twice is one stop (invariant 9): real masters, real signals, real clients.
import { execFileSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as http from 'node:http';
import * as path from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { adminStatus, controlSocketOf } from './helpers/control';
import { Load, inFlight } from './helpers/load';
import { cleanUp, isAlive, onCleanUp, ourProcesses, pollUntil, scratch, startMaster, workerProcessesOf } from './helpers/processes';
import { within } from './helpers/wait';

const APP = 'test/fixtures/fault-app.js';
const OWN_STOP = 'test/fixtures/own-stop-app.js';
/** Far beyond any answer or refusal; only a connection left in a queue nobody serves gets here. */
const CLIENT_TIMEOUT_MS = 20_000;

afterEach(cleanUp);

interface Outcome {
  status?: number;
  error?: string;
  connection?: string;
  body?: string;
}

/** One request on a fresh connection; resolves with what happened to it. */
function request(port: number, urlPath = '/', timeout = CLIENT_TIMEOUT_MS): Promise<Outcome> {
  return new Promise((resolve) => {
    const req = http.request({ host: '127.0.0.1', port, path: urlPath, agent: false, timeout }, (res) => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (chunk: string) => (body += chunk));
      res.on('end', () => resolve({
        status: res.statusCode, body, connection: String(res.headers.connection),
        error: res.complete ? undefined : 'cut short',
      }));
      res.on('error', (error: NodeJS.ErrnoException) => resolve({ error: error.code ?? error.message }));
    });
    req.on('timeout', () => req.destroy(Object.assign(new Error('timeout'), { code: 'TIMEOUT' })));
    req.on('error', (error: NodeJS.ErrnoException) => resolve({ error: error.code ?? error.message }));
    req.end();
  });
}

describe('stop', () => {
  it('the same stop signal twice at once (process-group delivery) is one stop: the request in flight completes', async () => {
    const dir = scratch('handover-stop-');
    const gate = path.join(dir, 'finish');
    const master = await startMaster({ script: APP, fixture: { workers: 2, stopTimeout: 60_000 } });
    const long = inFlight(master.port, `/flush?until=${encodeURIComponent(gate)}`);
    await long.started;
    // Two back-to-back kill()s may merge in the kernel into one delivery; the
    // second is sent once the first was taken, as a group delivery racing the
    // master's handler would be (well within DUPLICATE_STOP_MS).
    master.proc.kill('SIGTERM');
    await pollUntil(() => /SIGTERM: stop requested/.test(master.stderr), 'the master to take the first SIGTERM', 30_000);
    master.proc.kill('SIGTERM');
    await pollUntil(() => /one stop/.test(master.stderr), 'the master to see the second SIGTERM', 30_000);
    fs.writeFileSync(gate, '');
    expect(await long.done).toBe('started done');
    expect(await master.exited).toEqual({ code: 0, signal: null });
    expect(master.stderr).not.toMatch(/killing workers|stopping now/);
  });

  it('after a stop begins, a new connection is served or refused at once, never left waiting and then reset', async () => {
    const dir = scratch('handover-stop-');
    const gate = path.join(dir, 'finish');
    const master = await startMaster({ script: APP, fixture: { workers: 2, stopTimeout: 60_000 } });
    const port = master.port;
    // a long request keeps one worker (and so the master) alive while we knock
    const long = inFlight(port, `/flush?until=${encodeURIComponent(gate)}`);
    await long.started;
    master.proc.kill('SIGTERM');
    await pollUntil(() => /stopping: draining/.test(master.stderr), 'the stop to begin', 30_000);
    const knocks = await Promise.all(Array.from({ length: 24 }, () => request(port)));
    for (const knock of knocks) {
      expect(knock.status === 200 || knock.error === 'ECONNREFUSED', JSON.stringify(knock)).toBe(true);
    }
    fs.writeFileSync(gate, '');
    expect(await long.done).toBe('started done');
    expect(await master.exited).toEqual({ code: 0, signal: null });
  });

  it('a reload signal during a stop is ignored and says so', async () => {
    const dir = scratch('handover-stop-');
    const gate = path.join(dir, 'finish');
    const master = await startMaster({ script: APP, fixture: { stopTimeout: 60_000 } });
    const long = inFlight(master.port, `/flush?until=${encodeURIComponent(gate)}`);
    await long.started;
    master.proc.kill('SIGTERM');
    await pollUntil(() => /stop requested/.test(master.stderr), 'the stop to begin', 30_000);
    master.proc.kill('SIGHUP');
    await pollUntil(() => /SIGHUP: reload ignored, stopping/.test(master.stderr), 'the SIGHUP to be reported as ignored', 30_000);
    fs.writeFileSync(gate, '');
    expect(await long.done).toBe('started done');
    expect(await master.exited).toEqual({ code: 0, signal: null });
    expect(master.count('reload')).toBe(0);
    expect(ourProcesses()).toEqual([]);
  });

  it('stopDelay: new connections are still served during the delay, each answer saying Connection: close; then refused', async () => {
    const master = await startMaster({ script: APP, fixture: { workers: 2, stopDelay: 3_000 } });
    const port = master.port;
    master.proc.kill('SIGTERM');
    await pollUntil(() => /still accepting for stopDelay/.test(master.stderr), 'the stop delay to begin', 30_000);
    const during = await Promise.all(Array.from({ length: 10 }, () => request(port)));
    for (const answer of during) expect(answer).toMatchObject({ status: 200, connection: 'close' });
    expect(await master.exited).toEqual({ code: 0, signal: null });
    expect((await request(port)).error).toBe('ECONNREFUSED');
  });
});

describe('a stop signal to one worker alone', () => {
  it('is not the master\'s stop: the worker drains on its own after 1 s, its slot gets a new worker, the master serves on', async () => {
    const master = await startMaster({ script: APP, fixture: { workers: 2 } });
    const control = controlSocketOf(master);
    const signalled = (await adminStatus(control)).slots!.find((s) => s.slot === 0)!.pid!;
    process.kill(signalled, 'SIGTERM');
    await pollUntil(() => !isAlive(signalled), 'the signalled worker to drain and exit', 30_000);
    // (its line reaches the master's output through a pipe, maybe after its exit is seen)
    await pollUntil(() => master.stderr.includes('draining (SIGTERM, and the master is not stopping)'), "the worker's drain line", 30_000);
    await pollUntil(async () => {
      const slot = (await adminStatus(control)).slots!.find((s) => s.slot === 0)!;
      return slot.state === 'ready' && slot.pid !== signalled;
    }, 'slot 0 to serve with a new worker', 30_000);
    expect((await request(master.port)).status).toBe(200);
    expect(master.stderr).not.toMatch(/stop requested/);
  });
});

describe('stop with a frozen worker (invariant 12)', () => {
  it.runIf(process.platform === 'linux')('one worker SIGSTOPped holds every slot\'s socket: after SIGTERM the connections in its queue and every new one are answered or refused, none waits and is reset', async () => {
    const master = await startMaster({ script: APP, fixture: { workers: 2, stopTimeout: 8_000 } });
    const control = controlSocketOf(master);
    const status = await adminStatus(control);
    const frozen = status.slots!.find((s) => s.slot === 1)!.pid!;
    process.kill(frozen, 'SIGSTOP');
    onCleanUpContinue(frozen);
    // Connections that wait in the frozen worker's queue when the stop begins
    // (its missed heartbeats are not judged yet, so no sibling covers it).
    // Before the fix they were reset once the stop gave up on that queue.
    const queued = Array.from({ length: 20 }, () => request(master.port, '/', 5_000));
    await pollUntil(() => acceptQueue(master.port) > 0, 'a connection to wait in the frozen worker\'s queue', 30_000);
    master.proc.kill('SIGTERM');
    await pollUntil(() => /SIGTERM: stop requested/.test(master.stderr), 'the stop to begin', 30_000);
    // Before the fix these waited for the frozen worker's kill (stopTimeout
    // and more), then were reset; 5 s tells such a wait from a refusal.
    const knock = () => Promise.all(Array.from({ length: 10 }, () => request(master.port, '/', 5_000)));
    const knocks = [...await knock(), ...await knock(), ...await knock()];
    for (const outcome of [...await Promise.all(queued), ...knocks]) {
      expect(outcome.status === 200 || outcome.error === 'ECONNREFUSED', JSON.stringify(outcome)).toBe(true);
    }
    expect(knocks.filter((k) => k.error === 'ECONNREFUSED').length).toBeGreaterThan(0);
    expect(await master.exited).toEqual({ code: 0, signal: null });
  });
});

describe('stop under load (invariant 12)', () => {
  // 'to the master': `kill <pid>`, and Ctrl-C or `kill -TERM -PGID`, which
  // reach only the master (each worker leads a process group of its own);
  // 'to every process': systemd's KillMode=control-group, GNU timeout on a
  // cgroup, `docker kill` of a shared pid namespace: each worker gets it too,
  // and runs the program's own handler, here `process.exit(0)` (workers first:
  // their signal must not wait behind the master's first frame).
  it.each(['to the master', 'to every process'])(
    'keep-alive and new-connection loops through a SIGTERM %s, with the program\'s own SIGTERM handlers: 0 connections reset and no request cut, in 5 runs (refused is the only failure)',
    async (how) => {
      for (let run = 0; run < 5; run++) {
        const master = await startMaster({ script: OWN_STOP, fixture: { workers: 2, stopTimeout: 10_000, stopAt: 'everywhere' } });
        const keepAlive = new Load({ port: master.port, connections: 8 });
        const fresh = new Load({ port: master.port, connections: 8, mode: 'close', gap: () => [0, 2] });
        await pollUntil(() => keepAlive.stats.ok > 200 && fresh.stats.ok > 200, 'both loads to be under way');
        const long = inFlight(master.port, '/flush?ms=1500');
        await long.started;
        const workers = workerProcessesOf(master.pid);
        expect(workers).toHaveLength(2);
        for (const pid of how === 'to the master' ? [master.pid] : [...workers, master.pid]) process.kill(pid, 'SIGTERM');
        expect(await master.exited).toEqual({ code: 0, signal: null });
        expect(await long.done, `run ${run + 1}: the request in flight`).toBe('started done');
        const stats = [await keepAlive.stop(), await fresh.stop()];
        for (const { errors } of stats) {
          const { ECONNREFUSED: _refused, ...others } = errors;
          expect(others, `run ${run + 1}: failures other than ECONNREFUSED`).toEqual({});
        }
        expect(master.stderr).not.toMatch(/forced stop|killing workers|stopping now/);
      }
    },
  );
});

describe('stop() from the program itself', () => {
  it('stop() right after run(), before start-up finished, ends the process: exit 0, nothing left running', async () => {
    const master = await startMaster({ script: OWN_STOP, fixture: { workers: 2, stopAt: 'start' }, waitReady: false });
    expect(await within(master.exited, 30_000, 'the master to exit after its early stop()')).toEqual({ code: 0, signal: null });
    expect(master.count('stopped')).toBe(1);
    expect(master.count('ready')).toBe(0);
    expect(master.stderr).not.toMatch(/forced stop|killing workers/);
    expect(ourProcesses()).toEqual([]);
  });

  it('the program\'s own SIGTERM handler calling server.stop() next to ours is one stop: the request in flight completes', async () => {
    const master = await startMaster({ script: OWN_STOP, fixture: { workers: 1, stopAt: 'sigterm', stopTimeout: 60_000 } });
    const long = inFlight(master.port, '/flush?ms=1500');
    await long.started;
    master.proc.kill('SIGTERM');
    expect(await long.done).toBe('started done');
    expect(await master.exited).toEqual({ code: 0, signal: null });
    expect(master.stderr).not.toMatch(/forced stop|killing workers/);
    expect(master.count('stop')).toBe(1);
  });
});

/** Connections waiting in the accept queues of the listening sockets on `port` (ss's Recv-Q). */
function acceptQueue(port: number): number {
  return execFileSync('ss', ['-ltnH', `sport = :${port}`], { encoding: 'utf8' }).trim().split('\n')
    .reduce((sum, line) => sum + Number(line.trim().split(/\s+/)[1] ?? 0), 0);
}

/** A SIGSTOPped worker is SIGCONTed at clean-up, so it can die of the SIGKILL that reaps it. */
function onCleanUpContinue(pid: number): void {
  onCleanUp(() => {
    try {
      process.kill(pid, 'SIGCONT');
    } catch {
      // gone
    }
  });
}

describe('backlog', () => {
  it.runIf(process.platform === 'linux')('reaches listen(2) on every slot\'s socket (a worker\'s listen does not put back 511)', async () => {
    const master = await startMaster({ script: APP, fixture: { workers: 2, backlog: 37 } });
    const lines = execFileSync('ss', ['-ltnH', `sport = :${master.port}`], { encoding: 'utf8' }).trim().split('\n');
    expect(lines).toHaveLength(2); // one socket per slot
    for (const line of lines) expect(line.trim().split(/\s+/)[2], line).toBe('37');
    expect((await master.reload()).event).toBe('reloaded');
    const after = execFileSync('ss', ['-ltnH', `sport = :${master.port}`], { encoding: 'utf8' }).trim().split('\n');
    for (const line of after) expect(line.trim().split(/\s+/)[2], line).toBe('37');
  });
});
