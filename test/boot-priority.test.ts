// Issue 24: a worker boots at a lower scheduling priority, so it does not take
// CPU from the workers that serve, and serves at the master's priority once
// ready. What a user can check in /proc: every thread's nice value (field 19
// of /proc/<pid>/task/<tid>/stat) and the worker's autogroup nice
// (/proc/<pid>/autogroup), before and after ready.
//
// Sensitivity, checked by hand: with workerReady() in dist/master/boot-priority.js
// returning before it raises anything, "serves at the master's priority" fails
// (threads still at nice 10); with the spawn no longer lowered (spawnLowered
// calling spawn() at once) "boots lowered" fails (nice 0 while booting); with
// only the main thread raised (the /proc/<pid>/task loop cut to the pid) the
// after-ready check fails on the V8 platform threads.
import * as fs from 'node:fs';
import * as http from 'node:http';
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

const autogroups = fs.existsSync('/proc/sys/kernel/sched_autogroup_enabled') &&
  fs.readFileSync('/proc/sys/kernel/sched_autogroup_enabled', 'utf8').trim() === '1';
/** Only a privileged master can raise threads again, so only it lowers them (boot-priority.ts). */
const threadsLowered = process.getuid?.() === 0;

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
    const master = await startMaster({ script: 'test/fixtures/boot-priority-app.js', fixture: { holdFile } });
    const [first] = master.workerPids;
    // generation 1 boots with nobody to protect: at the master's priority
    expect(threadNices(first).every((n) => n === 0)).toBe(true);
    if (autogroups) expect(autogroupNice(first)).toBe(0);

    fs.writeFileSync(holdFile, '');
    const reloaded = master.reload();
    const booting = await bootingWorker(master, [first]);
    const lowered = threadsLowered ? BOOT_NICE_STEP : 0;
    expect(threadNices(booting), 'nice of each thread while booting').toEqual(threadNices(booting).map(() => lowered));
    if (autogroups) expect(autogroupNice(booting), 'autogroup nice while booting').toBe(BOOT_NICE_STEP);
    // meanwhile the old worker serves, at its own priority
    expect(await answer(master.port)).toBe(first);
    expect(threadNices(first).every((n) => n === 0)).toBe(true);

    fs.rmSync(holdFile);
    const outcome = await reloaded;
    expect(outcome.event, outcome.error).toBe('reloaded');
    await pollUntil(async () => (await answer(master.port)) === booting, 'the new worker to answer');
    expect(threadNices(booting), 'nice of each thread once ready').toEqual(threadNices(booting).map(() => 0));
    if (autogroups) await pollUntil(() => autogroupNice(booting) === 0, 'the autogroup to be raised');
    expect((await master.stop()).code).toBe(0);
  });
});
