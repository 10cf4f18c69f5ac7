// Rollouts the way Puma, uWSGI and gunicorn do them, with real processes
// under load: phased reloads (one slot at a time) and graceful recycling
// (maxMemory, maxRequests), each with zero failed requests.
// test/lifecycle-machine.test.ts pins the orderings down with fakes.
import * as fs from 'node:fs';
import * as path from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import type { MasterStatus } from '../src/protocol';
import { adminStatus, controlSocketOf } from './helpers/control';
import { Load } from './helpers/load';
import { childrenOf, cleanUp, isAlive, pollUntil, scratch, startMaster, writeJson } from './helpers/processes';

const APP = 'test/fixtures/fault-app.js';

afterEach(cleanUp);




async function start(fixture: Record<string, unknown>) {
  const dir = scratch('handover-rollout-');
  const behaviour = path.join(dir, 'behaviour.json');
  writeJson(behaviour, {});
  const master = await startMaster({ script: APP, fixture: { behaviourFile: behaviour, stopTimeout: 5_000, ...fixture } });
  return { master, behaviour, control: controlSocketOf(master) };
}

const readySlots = (status: MasterStatus) => status.slots!.filter((s) => s.state === 'ready').length;

describe('rollout: phased', () => {
  it('a phased reload of 3 workers under load: never more than 4 worker processes, never fewer than 3 ready, zero failed requests', async () => {
    const { master, control } = await start({ workers: 3, rollout: 'phased' });
    const load = new Load({ port: master.port, connections: 12 });
    const closing = new Load({ port: master.port, connections: 4, mode: 'close' });
    let most = 0;
    let fewestReady = Infinity;
    let sampling = true;
    const sampler = (async () => {
      while (sampling) {
        most = Math.max(most, childrenOf(master.pid).length);
        fewestReady = Math.min(fewestReady, readySlots(await adminStatus(control)));
        await new Promise((resolve) => setTimeout(resolve, 10));
      }
    })();
    for (let i = 0; i < 2; i++) expect((await master.reload()).event).toBe('reloaded');
    sampling = false;
    await sampler;
    const [keepAlive, close] = await Promise.all([load.stop(), closing.stop()]);
    expect(keepAlive.errors).toEqual({});
    expect(close.errors).toEqual({});
    expect(most).toBeLessThanOrEqual(4);
    expect(most).toBe(4); // the sampler did see a rollout step
    expect(fewestReady).toBe(3);
    const status = await adminStatus(control);
    expect(status.generation).toBe(3);
    expect(status.workers.map((w) => w.generation)).toEqual([3, 3, 3]);
  });

  it('a phased reload whose second slot fails to start stops there: every slot keeps a ready worker, zero failed requests', async () => {
    const { master, behaviour, control } = await start({ workers: 3, rollout: 'phased' });
    const load = new Load({ port: master.port, connections: 8 });
    writeJson(behaviour, { crashSlots: [1] });
    const outcome = await master.reload();
    expect(outcome.event).toBe('reload-failed');
    expect(outcome.error).toMatch(/stopped at slot 1: slots 0-0 serve generation 2, slots 1-2 generation 1/);
    expect(outcome.error).toMatch(/slot 1, generation 2\) exited with code 1 before it was ready/);
    const status = await pollUntil(async () => {
      const s = await adminStatus(control);
      return readySlots(s) === 3 && s.workers.length === 3 ? s : undefined;
    }, 'three ready workers');
    expect(status.workers.map((w) => w.generation).sort()).toEqual([1, 1, 2]);
    // fixed, the next reload brings every slot to the newest generation
    writeJson(behaviour, {});
    expect((await master.reload()).event).toBe('reloaded');
    const stats = await load.stop();
    expect(stats.errors).toEqual({});
  });
});

describe('keepPrevious: instant rollback', () => {
  it('handover rollback within keepPrevious serves the previous generation\'s pids again, spawning nothing, with zero failed requests', async () => {
    const { master, control } = await start({ workers: 2, keepPrevious: 60_000 });
    // A new connection for every request: each lands on a slot's socket by the
    // kernel's hash, so every worker of the serving generation gets some (8
    // keep-alive connections could all stay on one slot: seen once in CI).
    const load = new Load({ port: master.port, connections: 8, mode: 'close' });
    const first = (await adminStatus(control)).slots!.map((s) => s.pid!);
    expect((await master.reload()).event).toBe('reloaded');
    const second = (await adminStatus(control)).slots!.map((s) => s.pid!);
    expect(second).not.toEqual(first);
    for (const pid of first) expect(isAlive(pid), 'the previous generation is kept alive').toBe(true);
    await load.servedBy(second[0]);
    const before = new Set(childrenOf(master.pid));

    const cli = await import('node:child_process');
    const rolled = cli.spawnSync(process.execPath, [path.join(__dirname, '..', 'dist', 'cli', 'cli.js'), 'rollback', '--socket', control], { encoding: 'utf8' });
    expect(rolled.stdout + rolled.stderr).toContain('rolled back');
    expect(rolled.status).toBe(0);
    const status = await adminStatus(control);
    expect(status.generation).toBe(1);
    expect(status.slots!.map((s) => s.pid)).toEqual(first);
    for (const pid of childrenOf(master.pid)) expect(before.has(pid), `pid ${pid} was spawned by the rollback`).toBe(true);
    const served = first.map((pid) => load.stats.pids.get(pid) ?? 0);
    await Promise.all(first.map((pid, i) => load.servedBy(pid, served[i] + 20)));
    await pollUntil(() => second.every((pid) => !isAlive(pid)), 'the rolled-back generation to drain');
    const stats = await load.stop();
    expect(stats.errors).toEqual({});
    // nothing is kept any more
    const again = cli.spawnSync(process.execPath, [path.join(__dirname, '..', 'dist', 'cli', 'cli.js'), 'rollback', '--socket', control], { encoding: 'utf8' });
    expect(again.status).toBe(1);
    expect(again.stdout).toMatch(/nothing to roll back to/);
    expect(again.stdout, 'the hint names the CLI flag').toMatch(/handover start --keep-previous/);
  });
});

describe('scaling at run time', () => {
  /** TCP listening sockets on `port` that the process holds, by inode. */
  function listening(pid: number, port: number): number {
    const hexPort = port.toString(16).toUpperCase().padStart(4, '0');
    const inodes = new Set<string>();
    for (const line of fs.readFileSync('/proc/net/tcp', 'utf8').split('\n').slice(1)) {
      const cols = line.trim().split(/\s+/);
      if (cols.length > 9 && cols[1].endsWith(`:${hexPort}`) && cols[3] === '0A') inodes.add(cols[9]);
    }
    return fs.readdirSync(`/proc/${pid}/fd`).filter((fd) => {
      try {
        return inodes.has(/^socket:\[(\d+)\]$/.exec(fs.readlinkSync(`/proc/${pid}/fd/${fd}`))?.[1] ?? '');
      } catch {
        return false;
      }
    }).length;
  }

  it.runIf(process.platform === 'linux')('2 -> 3 (handover scale) -> 1 (SIGTTOU twice) -> 2 (SIGTTIN) under load: zero failed requests; the group never shrinks', async () => {
    const { master, control } = await start({ workers: 2 });
    const load = new Load({ port: master.port, connections: 8 });
    const closing = new Load({ port: master.port, connections: 4, mode: 'close' });
    const serving = (n: number) => pollUntil(async () => {
      const status = await adminStatus(control);
      const ready = status.slots!.filter((s) => s.state === 'ready').length;
      return ready === n && status.workers.filter((w) => w.state === 'ready').length === n && childrenOf(master.pid).length === n
        ? status : undefined;
    }, `${n} ready workers and no other`, 60_000);

    const cli = await import('node:child_process');
    const scaled = cli.spawnSync(process.execPath, [path.join(__dirname, '..', 'dist', 'cli', 'cli.js'), 'scale', '--socket', control, '3'], { encoding: 'utf8' });
    expect(scaled.stdout + scaled.stderr).toContain('scaled to 3 worker(s)');
    expect(scaled.status).toBe(0);
    await serving(3);
    expect(listening(master.pid, master.port)).toBe(3);

    master.proc.kill('SIGTTOU');
    await pollUntil(() => master.count('scaled') >= 2, 'the first SIGTTOU');
    master.proc.kill('SIGTTOU');
    const one = await serving(1);
    expect(one.slots!.filter((s) => s.state === 'retired').map((s) => s.coveredBy)).toEqual([one.slots![0].pid, one.slots![0].pid]);
    expect(listening(master.pid, master.port)).toBe(3); // retired slots keep their sockets, served by the sibling

    master.proc.kill('SIGTTIN');
    await serving(2);
    const [keepAlive, close] = await Promise.all([load.stop(), closing.stop()]);
    expect(keepAlive.errors).toEqual({});
    expect(close.errors).toEqual({});
    expect(master.events.filter((e) => e.event === 'scaled').map((e) => (e as { workers?: number }).workers)).toEqual([3, 2, 1, 2]);
  });
});

describe('rollout: phased with keepPrevious', () => {
  it('a phased reload whose second slot fails restores the first slot\'s old worker (kept parked), zero failed requests', async () => {
    const { master, behaviour, control } = await start({ workers: 3, rollout: 'phased', keepPrevious: 60_000 });
    const load = new Load({ port: master.port, connections: 8 });
    // fresh connections reach every slot's socket (keep-alive ones stay where the kernel put them)
    const closing = new Load({ port: master.port, connections: 4, mode: 'close' });
    const before = (await adminStatus(control)).slots!.map((s) => s.pid!);
    writeJson(behaviour, { crashSlots: [1] });
    const outcome = await master.reload();
    expect(outcome.event).toBe('reload-failed');
    expect(outcome.error).toMatch(/generation 1 serves again \(slots 0-0 were switched back\)/);
    const status = await pollUntil(async () => {
      const s = await adminStatus(control);
      return readySlots(s) === 3 && s.workers.length === 3 ? s : undefined;
    }, 'the three old workers, and only them');
    expect(status.slots!.map((s) => s.pid)).toEqual(before);
    const served = closing.stats.pids.get(before[0]) ?? 0;
    await closing.servedBy(before[0], served + 20);
    const [keepAlive, close] = await Promise.all([load.stop(), closing.stop()]);
    expect(keepAlive.errors).toEqual({});
    expect(close.errors).toEqual({});
  });
});

describe('recycling', () => {
  it('maxMemory: a worker that leaks on every request is replaced before it crashes, with zero failed requests', async () => {
    const { master, control } = await start({ workers: 2, maxMemory: 160 * 2 ** 20 });
    const load = new Load({ port: master.port, connections: 4, path: '/leak' });
    await master.waitFor((e) => e.event === 'recycled', 'a recycle', 120_000);
    await pollUntil(() => master.count('recycled') >= 2, 'a second recycle', 120_000);
    const stats = await load.stop();
    expect(stats.errors).toEqual({});
    const recycled = master.events.find((e) => e.event === 'recycled') as { reason?: string };
    expect(recycled.reason).toMatch(/above maxMemory/);
    // every worker that exited was drained, none crashed
    for (const exit of master.events.filter((e) => e.event === 'worker-exit') as { code?: number; signal?: string }[]) {
      expect(exit).toMatchObject({ code: 0, signal: null });
    }
    const status = await adminStatus(control);
    expect(status.slots!.reduce((n, s) => n + s.recycles, 0)).toBeGreaterThanOrEqual(2);
  });

  it('maxRequests: workers are recycled one at a time under load, zero failed requests', async () => {
    const { master, control } = await start({ workers: 2, maxRequests: 300 });
    const load = new Load({ port: master.port, connections: 8 });
    await pollUntil(() => master.count('recycled') >= 3, 'three recycles', 120_000);
    const stats = await load.stop();
    expect(stats.errors).toEqual({});
    expect(stats.failed).toBe(0);
    const reasons = master.events.filter((e) => e.event === 'recycled').map((e) => (e as { reason?: string }).reason);
    for (const reason of reasons) expect(reason).toMatch(/served \d+ requests \(maxRequests 300/);
    await pollUntil(async () => readySlots(await adminStatus(control)) === 2, 'both slots ready');
  });
});
