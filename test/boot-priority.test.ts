// Issue 24: a worker boots at a lower scheduling priority, so it does not take
// CPU from the workers that serve, and serves at the master's priority once
// ready (or once a tenth of startTimeout has passed). What a user can check in /proc: every thread's nice value (field 19
// of /proc/<pid>/task/<tid>/stat) and the worker's autogroup nice
// (/proc/<pid>/autogroup), before and after ready. Only the knob that decides
// is turned: the autogroup where the kernel uses autogroups, else the threads.
//
// Sensitivity, checked by hand: with workerReady() in dist/master/boot-priority.js
// returning before it raises anything, "serves at the master's priority" fails
// (threads or autogroup still at nice 10); with the spawn no longer lowered
// (spawnLowered calling spawn() at once) "boots lowered" fails (nice 0 while
// booting); with the threads lowered where the autogroup decides, "boots
// lowered" fails (threads at 10); where the threads are the knob, with only
// the main thread raised (the /proc/<pid>/task loop cut to the pid) the
// after-ready check fails on the V8 platform threads; with raiseAfter() a
// no-op, "is raised while still booting" times out waiting for the raise.
import * as fs from 'node:fs';
import * as http from 'node:http';
import * as os from 'node:os';
import * as path from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { BOOT_NICE_STEP } from '../src/master/boot-priority';
import { cleanUp, type Master, pollUntil, scratch, startMaster, workerProcessesOf } from './helpers/processes';

afterEach(cleanUp);

/** The nice value of every thread of `pid`. */
function threadNices(pid: number): number[] {
  return fs.readdirSync(`/proc/${pid}/task`).flatMap((tid) => {
    try {
      const stat = fs.readFileSync(`/proc/${pid}/task/${tid}/stat`, 'utf8');
      return [Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[16])];
    } catch {
      return []; // that thread ended
    }
  });
}

/** The nice value of the autogroup `pid` belongs to. */
function autogroupNice(pid: number): number {
  return Number(/nice (-?\d+)/.exec(fs.readFileSync(`/proc/${pid}/autogroup`, 'utf8'))![1]);
}

/**
 * The kernel weighs a session's autogroup only for tasks in the root CPU
 * group: with cgroup v1 the `cpu` line of /proc/self/cgroup says `/`; with v2
 * no cgroup on the way up has the CPU controller on (cpu.weight).
 */
function rootCpuGroup(): boolean {
  const lines = fs.readFileSync('/proc/self/cgroup', 'utf8').trim().split('\n');
  const cpuV1 = lines.find((line) => line.split(':')[1]!.split(',').includes('cpu'));
  if (cpuV1) return cpuV1.endsWith(':/');
  const unified = lines.find((line) => line.startsWith('0::'));
  if (!unified || !fs.existsSync('/sys/fs/cgroup/cgroup.controllers')) return false;
  const parts = unified.slice(3).split('/').filter(Boolean);
  return parts.every((_, i) => !fs.existsSync(path.join('/sys/fs/cgroup', ...parts.slice(0, i + 1), 'cpu.weight')));
}

/** A worker (a session of its own) is lowered by its autogroup where the kernel uses autogroups, else by its threads. */
const autogroups = fs.existsSync('/proc/sys/kernel/sched_autogroup_enabled') &&
  fs.readFileSync('/proc/sys/kernel/sched_autogroup_enabled', 'utf8').trim() === '1' && rootCpuGroup();
/**
 * Threads are lowered only where they can be raised again (boot-priority.ts):
 * with CAP_SYS_NICE (bit 23 of CapEff; root) or an RLIMIT_NICE reaching nice 0.
 */
function threadsLowered(): boolean {
  const capEff = /^CapEff:\s*([0-9a-f]+)$/m.exec(fs.readFileSync('/proc/self/status', 'utf8'))![1];
  const limit = /^Max nice priority\s+(\d+|unlimited)/m.exec(fs.readFileSync('/proc/self/limits', 'utf8'))![1];
  return ((BigInt(`0x${capEff}`) >> 23n) & 1n) === 1n || limit === 'unlimited' || 20 - Number(limit) <= os.getPriority();
}

function answer(port: number): Promise<number> {
  return new Promise((resolve, reject) => {
    http.get({ host: '127.0.0.1', port, agent: false }, (res) => {
      let body = '';
      res.on('data', (chunk) => (body += chunk)).on('end', () => resolve(Number(body)));
    }).on('error', reject);
  });
}

/** A new generation's worker that has exec'd and started Node's own threads. */
async function bootingWorker(master: Master, old: number[]): Promise<number> {
  return pollUntil(() => workerProcessesOf(master.pid).find((pid) => !old.includes(pid) && threadNices(pid).length > 1), 'the new worker to start');
}

describe.runIf(process.platform === 'linux')('a booting worker runs at a lower priority until it is ready', () => {
  it('boots lowered next to a serving worker, every thread, and serves at the master\'s priority once ready', async () => {
    const holdFile = path.join(scratch(), 'hold');
    // lowered for at most startTimeout / 10: 60 s here, longer than this test looks
    const master = await startMaster({ script: 'test/fixtures/boot-priority-app.js', fixture: { holdFile, startTimeout: 600_000 } });
    const [first] = master.workerPids;
    const normal = os.getPriority(master.pid); // the master's nice (0 unless the tests run under `nice`)
    // every thread of `pid` at `nice`, from one reading (a thread Node starts between two readings would change the count)
    const expectAllAt = (pid: number, nice: number, what?: string) => {
      const nices = threadNices(pid);
      expect(nices, what).toEqual(nices.map(() => nice));
    };
    // generation 1 boots with nobody to protect: at the master's priority
    expectAllAt(first, normal);
    if (autogroups) expect(autogroupNice(first)).toBe(0);

    fs.writeFileSync(holdFile, '');
    const reloaded = master.reload();
    const booting = await bootingWorker(master, [first]);
    const lowered = threadsLowered() && !autogroups ? Math.min(19, normal + BOOT_NICE_STEP) : normal;
    expectAllAt(booting, lowered, 'nice of each thread while booting');
    // the autogroup: lowered where it decides, and left at a new session's 0 where it does not
    if (fs.existsSync(`/proc/${booting}/autogroup`)) expect(autogroupNice(booting), 'autogroup nice while booting').toBe(autogroups ? BOOT_NICE_STEP : 0);
    // meanwhile the old worker serves, at its own priority
    expect(await answer(master.port)).toBe(first);
    expectAllAt(first, normal);

    fs.rmSync(holdFile);
    const outcome = await reloaded;
    expect(outcome.event, outcome.error).toBe('reloaded');
    await pollUntil(async () => (await answer(master.port)) === booting, 'the new worker to answer');
    expectAllAt(booting, normal, 'nice of each thread once ready');
    if (autogroups) await pollUntil(() => autogroupNice(booting) === 0, 'the autogroup to be raised');
    expect((await master.stop()).code).toBe(0);
  });

  it('is raised while still booting once a tenth of startTimeout has passed', async () => {
    const holdFile = path.join(scratch(), 'hold');
    const master = await startMaster({ script: 'test/fixtures/boot-priority-app.js', fixture: { holdFile, startTimeout: 20_000 } });
    const [first] = master.workerPids;
    const normal = os.getPriority(master.pid);
    fs.writeFileSync(holdFile, '');
    const reloaded = master.reload();
    const booting = await bootingWorker(master, [first]);
    // still booting (its ready hook waits for the file), raised 2 s after its spawn
    await pollUntil(() => threadNices(booting).every((n) => n === normal) && (!autogroups || autogroupNice(booting) === 0), 'the booting worker to be raised', 15_000);
    expect(master.count('reloaded')).toBe(0);
    fs.rmSync(holdFile);
    expect((await reloaded).event).toBe('reloaded');
    expect((await master.stop()).code).toBe(0);
  });
});
