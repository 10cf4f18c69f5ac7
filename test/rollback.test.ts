// Invariant 3, ready before drain: a new generation that cannot start (it
// throws, or it never reports ready within startTimeout) is killed, the old
// generation keeps serving a running load without one failed request, the
// reload reports failure, and the master stays up; the next good deploy
// reloads fine. If generation 1 itself never becomes ready, the master exits
// non-zero and leaves nothing behind: no process, no bound port.
//
// A "deploy" is the behaviour file test/fixtures/app.js reads in each worker at
// start-up, rewritten before the SIGHUP.
import * as fs from 'node:fs';
import * as http from 'node:http';
import * as net from 'node:net';
import * as path from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { Load } from './helpers/load';
import { freePort } from './helpers/ports';
import { type Master, isAlive, ourProcesses, pollUntil, reapAll, startMaster, tempDir } from './helpers/processes';
import { within } from './helpers/wait';

afterEach(reapAll);

function deploy(file: string, behaviour: Record<string, unknown>): void {
  fs.writeFileSync(file, JSON.stringify(behaviour));
}

function get(port: number): Promise<{ status: number; pid: number; version: string }> {
  return new Promise((resolve, reject) => {
    http.get({ host: '127.0.0.1', port, path: '/', agent: false }, (res) => {
      res.resume();
      res.on('end', () => resolve({
        status: res.statusCode!, pid: Number(res.headers['x-pid']), version: String(res.headers['x-version']),
      }));
    }).on('error', reject);
  });
}

/** True if nothing listens on 127.0.0.1:port: a plain bind (no SO_REUSEPORT) succeeds. */
function portIsFree(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const probe = net.createServer();
    probe.once('error', () => resolve(false));
    probe.listen(port, '127.0.0.1', () => probe.close(() => resolve(true)));
  });
}

/** The pid of a process of this run other than the master and `known`, once there is one. */
function newProcess(master: Master, known: number[]): Promise<number> {
  return pollUntil(() => ourProcesses().find((pid) => pid !== master.pid && !known.includes(pid)), 'a new worker process');
}

/**
 * Deploys `broken`, reloads under load and checks the rollback; then deploys
 * a good version and checks that reload. Returns the failed reload's error.
 */
async function brokenReloadUnderLoad(
  broken: Record<string, unknown>,
  fixture: Record<string, unknown> = {},
  catchAlive = false,
): Promise<{ error: string; failedPid: number; failedExit: { code?: unknown; signal?: unknown } }> {
  const file = path.join(tempDir(), 'behaviour.json');
  deploy(file, { version: 1 });
  const master = await startMaster({ fixture: { behaviourFile: file, ...fixture } });
  const [oldPid] = master.workerPids;
  const load = new Load({ port: master.port, connections: 16 });
  await load.servedBy(oldPid);

  deploy(file, broken);
  const reloading = master.reload();
  // a worker that lives long enough (one that hangs): its pid while it is alive
  const seenAlive = catchAlive ? await newProcess(master, [oldPid]) : undefined;
  const outcome = await reloading;
  expect(outcome.event).toBe('reload-failed');
  expect(outcome.generation).toBe(2);
  const failedPid = Number(/worker pid (\d+) \(slot 0, generation 2\)/.exec(outcome.error ?? '')?.[1]);
  expect(failedPid, outcome.error).toBeGreaterThan(0);
  if (seenAlive !== undefined) expect(failedPid).toBe(seenAlive);

  // the stuck or crashed worker is gone, the old one is untouched and still serving
  await pollUntil(() => !isAlive(failedPid), `the failed worker ${failedPid} to be gone`, 10_000);
  const failedExit = master.events.find((e) => e.event === 'worker-exit' && e.pid === failedPid) as
    { code?: unknown; signal?: unknown } | undefined;
  expect(failedExit, 'a worker-exit event for the failed worker').toBeDefined();
  expect(isAlive(master.pid)).toBe(true);
  expect(isAlive(oldPid)).toBe(true);
  expect(outcome.status!.generation).toBe(1);
  expect(outcome.status!.workers.map((w) => w.pid)).toEqual([oldPid]);
  const servedSoFar = load.stats.pids.get(oldPid) ?? 0;
  await load.servedBy(oldPid, servedSoFar + 100);
  expect(master.events.some((e) => e.event === 'worker-exit' && e.pid === oldPid)).toBe(false);

  // the fixed deploy reloads
  deploy(file, { version: 3 });
  const fixed = await master.reload();
  expect(fixed.event, fixed.error).toBe('reloaded');
  expect(fixed.generation).toBe(3);
  const newPids = fixed.status!.workers.filter((w) => w.generation === 3).map((w) => w.pid);
  expect(newPids).toHaveLength(1);
  await load.servedBy(newPids[0]);
  const answer = await get(master.port);
  expect(answer).toEqual({ status: 200, pid: newPids[0], version: '3' });

  const stats = await load.stop();
  expect(stats.errors).toEqual({});
  expect(stats.failed).toBe(0);
  expect((await master.stop()).code).toBe(0);
  return { error: outcome.error!, failedPid, failedExit: failedExit! };
}

describe('rollback (ready before drain)', () => {
  it('a new generation that throws at start-up: the old one keeps serving, the master stays up', async () => {
    const { error, failedExit } = await brokenReloadUnderLoad({ throwAtStartup: true });
    expect(error).toMatch(/exited with code [1-9]/);
    expect(failedExit).toMatchObject({ code: 1, signal: null });
  });

  it('a new generation that never becomes ready is killed at startTimeout; the old one keeps serving', async () => {
    const { error, failedExit } = await brokenReloadUnderLoad({ neverReady: true }, { startTimeout: 2000 }, true);
    expect(error).toContain('did not become ready within startTimeout (2000 ms)');
    expect(failedExit).toMatchObject({ signal: 'SIGKILL' });
  });

  it('generation 1 throws at start-up: the master exits non-zero with the error, leaving nothing behind', async () => {
    const file = path.join(tempDir(), 'behaviour.json');
    deploy(file, { throwAtStartup: true });
    const port = await freePort();
    const master = await startMaster({
      fixture: { behaviourFile: file, addresses: [`127.0.0.1:${port}`] },
      waitReady: false,
    });
    const exit = await within(master.exited, 30_000, 'the master to exit');
    expect(exit.signal).toBeNull();
    expect(exit.code).not.toBe(0);
    // it did bind and start a worker, whose own error reached the master's stderr
    expect(master.stderr).toContain(`listening on 127.0.0.1:${port}`);
    expect(master.stderr).toContain('this deploy is broken (throwAtStartup)');
    expect(master.events.some((e) => e.event === 'ready')).toBe(false);
    expect(ourProcesses()).toEqual([]);
    expect(await portIsFree(port)).toBe(true);
  });

  it('generation 1 never becomes ready: the master kills it at startTimeout and exits non-zero, leaving nothing behind', async () => {
    const file = path.join(tempDir(), 'behaviour.json');
    deploy(file, { neverReady: true });
    const port = await freePort();
    const master = await startMaster({
      fixture: { behaviourFile: file, addresses: [`127.0.0.1:${port}`], startTimeout: 2000 },
      waitReady: false,
    });
    const stuck = await newProcess(master, []);
    const exit = await within(master.exited, 30_000, 'the master to exit');
    expect(exit.signal).toBeNull();
    expect(exit.code).not.toBe(0);
    expect(master.stderr).toContain(`listening on 127.0.0.1:${port}`);
    expect(master.stderr).toContain(`worker pid ${stuck} (slot 0, generation 1) did not become ready within startTimeout`);
    expect(master.events.some((e) => e.event === 'ready')).toBe(false);
    expect(isAlive(stuck)).toBe(false);
    expect(ourProcesses()).toEqual([]);
    expect(await portIsFree(port)).toBe(true);
  });
});
