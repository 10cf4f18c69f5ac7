// Upgrade in place (invariant 16): SIGUSR2, or `handover upgrade`, makes the
// master exec a fresh image of itself in the same pid, keeping the listening
// sockets; the new image's generation serves, the old workers drain and are
// reaped. A new image that cannot start changes nothing.
import { execFile } from 'node:child_process';
import * as fs from 'node:fs';
import * as http from 'node:http';
import * as os from 'node:os';
import * as path from 'node:path';
import { afterAll, afterEach, describe, expect, it } from 'vitest';
import { Load } from './helpers/load';
import { ROOT, cleanUp, isAlive, ourProcesses, pollUntil, scratch, startMaster, writeJson } from './helpers/processes';
import { freePort } from './helpers/ports';

afterEach(cleanUp);

const CLI = path.join(ROOT, 'dist/cli/cli.js');
/** A registry of its own, so `handover start` masters of other test files never clash with ours. */
const RUNTIME = fs.mkdtempSync(path.join(os.tmpdir(), 'handover-upgrade-runtime-'));
afterAll(() => fs.rmSync(RUNTIME, { recursive: true, force: true }));

/** The [stack] line of /proc/PID/maps: its address changes with every exec (ASLR), never otherwise. */
function stackMapping(pid: number): string {
  return fs.readFileSync(`/proc/${pid}/maps`, 'utf8').split('\n').find((l) => l.endsWith('[stack]'))!;
}

/** Runs `handover ...args`; resolves with its exit code and output. */
function handover(...args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    execFile(process.execPath, [CLI, ...args], { cwd: ROOT, timeout: 120_000, env: { ...process.env, XDG_RUNTIME_DIR: RUNTIME } }, (error, stdout, stderr) => {
      resolve({ code: error ? (typeof error.code === 'number' ? error.code : 1) : 0, stdout, stderr });
    });
  });
}

/** `count` requests, each on its own connection: the x-pid of each 200, or the error. */
async function requests(port: number, count: number): Promise<(number | string)[]> {
  return Promise.all(Array.from({ length: count }, () => new Promise<number | string>((resolve) => {
    http.get({ host: '127.0.0.1', port, path: '/', agent: false, timeout: 30_000 }, (res) => {
      res.resume();
      res.on('end', () => resolve(res.statusCode === 200 ? Number(res.headers['x-pid']) : `status ${res.statusCode}`));
    }).on('error', (error: NodeJS.ErrnoException) => resolve(error.code ?? error.message));
  })));
}

describe('upgrade in place', () => {
  it('SIGUSR2 under keep-alive and connection-per-request load: 0 failed, same pid, a fresh image, every worker of its generation, the old ones reaped', async () => {
    const master = await startMaster({ fixture: { workers: 2 } });
    const stackBefore = stackMapping(master.pid);
    const oldWorkers = master.workerPids;
    expect(oldWorkers).toHaveLength(2);
    const keepAlive = new Load({ port: master.port, connections: 8 });
    const perRequest = new Load({ port: master.port, connections: 8, mode: 'close' });
    // keep-alive connections stay with the worker that accepted them; connection-per-request reaches every one
    await Promise.all(oldWorkers.map((pid) => perRequest.servedBy(pid)));

    master.proc.kill('SIGUSR2');
    await master.waitFor(() => master.count('ready') === 2, 'the new image to be ready');
    const ready = master.events.filter((e) => e.event === 'ready')[1];
    expect(ready.status!.pid).toBe(master.pid);
    const fresh = ready.status!.workers.map((w) => w.pid);
    expect(fresh).toHaveLength(2);
    for (const w of ready.status!.workers) expect(w.generation).toBe(ready.status!.generation);
    expect(fresh.filter((pid) => oldWorkers.includes(pid))).toEqual([]);
    await Promise.all(fresh.map((pid) => perRequest.servedBy(pid)));
    // each keep-alive connection was closed by its draining worker after a response, and reopened to the new image
    await pollUntil(() => fresh.some((pid) => keepAlive.stats.pids.has(pid)), 'keep-alive requests answered by the new image');

    const stats = [await keepAlive.stop(), await perRequest.stop()];
    for (const s of stats) {
      expect(s.errors).toEqual({});
      expect(s.failed).toBe(0);
    }
    expect(stackMapping(master.pid), 'a fresh image: the stack moved').not.toBe(stackBefore);
    expect(master.proc.exitCode).toBeNull();
    // the old workers drained, exited and were reaped (no zombie left: /proc has no entry)
    await pollUntil(() => oldWorkers.every((pid) => !fs.existsSync(`/proc/${pid}`)), 'the old workers to be reaped');
    expect(master.stderr).toMatch(/upgraded in place \(upgrade 1/);
    expect((await master.stop()).code).toBe(0);
    expect(ourProcesses()).toEqual([]);
  });

  it('a new image that throws at load: SIGUSR2 and `handover upgrade` change nothing, 20 of 20 answered on the same pid, the cause reported; fixed, `handover upgrade` succeeds', async () => {
    const masterBehaviourFile = path.join(scratch(), 'master.json');
    const master = await startMaster({ fixture: { masterBehaviourFile } });
    const stackBefore = stackMapping(master.pid);
    const [worker] = master.workerPids;
    writeJson(masterBehaviourFile, { throwAtLoad: true });

    master.proc.kill('SIGUSR2');
    const failed = await master.waitFor((e) => e.event === 'upgrade-failed', 'the upgrade to fail');
    expect(failed.error).toMatch(/cannot start: it exited with code 1:[\s\S]*this master image is broken \(throwAtLoad\)/);
    expect(master.stderr).toMatch(/master error: upgrade failed; generation 1 keeps serving on pid \d+: .*cannot start/);

    const cli = await handover('upgrade', '--pid', String(master.pid));
    expect(cli.code).toBe(1);
    expect(cli.stdout).toMatch(/^upgrade failed: the new master image .* cannot start: it exited with code 1:[\s\S]*throwAtLoad/);
    const missing = await handover('upgrade', '--pid', String(master.pid), '--node', '/nonexistent/node');
    expect(missing.code).toBe(1);
    expect(missing.stdout).toMatch(/upgrade failed: .*\/nonexistent\/node does not exist \(ENOENT\)/);

    expect(await requests(master.port, 20)).toEqual(Array(20).fill(worker));
    expect(stackMapping(master.pid), 'no exec happened').toBe(stackBefore);
    expect(isAlive(worker)).toBe(true);

    writeJson(masterBehaviourFile, {});
    const fixed = await handover('upgrade', '--pid', String(master.pid));
    expect(fixed.stdout).toMatch(/^upgraded: pid \d+, generation 1 serving \(1 worker\(s\)\)/);
    expect(fixed.code).toBe(0);
    expect(stackMapping(master.pid)).not.toBe(stackBefore);
    const [after] = await requests(master.port, 1);
    expect(after).not.toBe(worker);
    expect(typeof after).toBe('number');
    expect((await master.stop()).code).toBe(0);
    expect(ourProcesses()).toEqual([]);
  });

  it('a new image whose workers fail to start: the old workers keep serving on the same pid, `handover upgrade` exits 1 with the cause; a fixed reload replaces them', async () => {
    const behaviourFile = path.join(scratch(), 'behaviour.json');
    const master = await startMaster({ fixture: { behaviourFile } });
    const [worker] = master.workerPids;
    writeJson(behaviourFile, { throwAtStartup: true });

    const cli = await handover('upgrade', '--pid', String(master.pid));
    expect(cli.stdout).toMatch(/^upgrade failed: the new image runs \(pid \d+\), but its workers did not start: worker pid \d+ \(slot 0, generation 1\) exited with code 1 before it was ready/);
    expect(cli.code).toBe(1);
    expect(await requests(master.port, 20)).toEqual(Array(20).fill(worker));
    expect(master.stderr).toMatch(/master error: upgrade: this image's generation 1 did not start/);

    writeJson(behaviourFile, {});
    master.proc.kill('SIGHUP');
    await master.waitFor(() => master.count('ready') === 2, 'the new image\'s generation to serve after the reload');
    await pollUntil(() => !fs.existsSync(`/proc/${worker}`), 'the previous image\'s worker to drain and be reaped');
    const [after] = await requests(master.port, 1);
    expect(after).not.toBe(worker);
    expect((await master.stop()).code).toBe(0);
    expect(ourProcesses()).toEqual([]);
  });

  it('`handover start`: `handover upgrade NAME` waits for the new image to serve on the same pid, and reports it', async () => {
    const port = await freePort();
    const master = await startMaster({
      script: 'dist/cli/cli.js',
      args: ['start', '--name', 'upgraded', path.join(ROOT, 'test/fixtures/unmodified/http.js')],
      env: { XDG_RUNTIME_DIR: RUNTIME, PORT: String(port) },
      waitReady: false,
    });
    await pollUntil(async () => (await handover('status', 'upgraded')).code === 0, 'the master to register', 60_000);
    const [before] = await requests(port, 1);
    const stackBefore = stackMapping(master.pid);

    const result = await handover('upgrade', 'upgraded');
    expect(result.stdout).toBe(`upgraded: pid ${master.pid}, generation 1 serving (1 worker(s))\n`);
    expect(result.code).toBe(0);
    expect(stackMapping(master.pid)).not.toBe(stackBefore);
    const after = await requests(port, 5);
    expect(after.every((pid) => typeof pid === 'number' && pid !== before), JSON.stringify(after)).toBe(true);
    const status = JSON.parse((await handover('status', 'upgraded', '--json')).stdout);
    expect(status).toMatchObject({ pid: master.pid, upgrades: 1 });
    expect((await master.stop()).code).toBe(0);
  });
});
