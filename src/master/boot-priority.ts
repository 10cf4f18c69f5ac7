// A booting worker must not take CPU from the workers that serve (issue 24):
// loading Node and the application costs a worker more CPU than anything it
// does later, and on a small machine under load that CPU would come out of
// the serving workers' requests. So a worker boots at a lower scheduling
// priority and is raised to the master's own when it reports ready, or when a
// tenth of startTimeout has passed (so a machine saturated by other work
// cannot stretch a boot towards startTimeout).
//
// Linux only. Only while something serves next to the new worker (a first
// generation has nobody to protect and boots at full speed), and each knob
// only where it can be undone: a worker must never serve for ever at the
// lower priority. Two knobs, because the kernel weighs CPU per scheduling
// group first and per thread within a group; each worker gets the one that
// decides its share against the others, not both:
//
// - Thread nice. setpriority() on Linux sets one thread, and Node starts its
//   V8 platform threads before any JavaScript runs, so a worker cannot lower
//   itself. The master lowers its own spawning thread for the synchronous
//   fork + exec instead: the child inherits that nice value, and every thread
//   it starts inherits it from the child's main thread. At ready every thread
//   in /proc/<pid>/task is raised (the main thread first, so threads it starts
//   from then on are born raised). Lowering is always allowed; raising back
//   needs CAP_SYS_NICE or an RLIMIT_NICE that covers the master's nice value
//   (setpriority(2)), checked once, at the first lowered spawn: without it
//   the threads are not lowered.
// - The autogroup nice. With kernel.sched_autogroup_enabled (most desktop and
//   many server kernels), each session is a scheduling group, and a worker is
//   a session of its own (process-group.ts): its threads' nice values then
//   weigh only against each other. /proc/<pid>/autogroup sets the group's
//   nice; values >= 0 need no privilege, though a process without
//   CAP_SYS_ADMIN may change one only every 100 ms machine-wide (EAGAIN,
//   kernel/sched/autogroup.c): a refused lowering leaves the worker at the
//   normal priority, a refused raise is retried until it is done or the
//   worker has exited. The kernel uses autogroups only for tasks of the
//   root CPU group (task_wants_autogroup()): in a cgroup with its own CPU
//   share (systemd's CPUWeight=, containers) they are not used, and the
//   thread nice does the work. Where the autogroup decides, the threads are
//   left alone: their nice values would weigh only against each other, and
//   setting every thread's, twice, cost the master about 0.5 ms a worker.
//   (cgroup v1 inside a cgroup namespace shows its own group as the root:
//   there a worker would boot at the normal priority.)
import type { ChildProcess } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';

/** The nice value a worker boots at, relative to the master's: 10 gives it about a tenth of a serving worker's weight. */
export const BOOT_NICE_STEP = 10;
/** How often a refused (EAGAIN) autogroup raise is tried again. */
const AUTOGROUP_RETRY_MS = 110;
const CAP_SYS_NICE = 23;

interface Lowered {
  /** The thread nice to raise it back to, when its threads were lowered. */
  threads?: number;
  /** Its autogroup was lowered: raise it to 0, a new session's default. */
  autogroup: boolean;
  /** Raises it if it is still booting by then (raiseAfter). */
  timer?: NodeJS.Timeout;
}

const lowered = new WeakMap<ChildProcess, Lowered>();

/** The thread nice values the master lowers a spawn to and raises the worker back to (undefined: it cannot undo it). */
interface ThreadPlan {
  normal: number;
  boot: number;
}
let plan: { threads?: ThreadPlan; autogroups: boolean } | undefined;

function planThreads(): ThreadPlan | undefined {
  try {
    const normal = os.getPriority(0);
    const boot = Math.min(19, normal + BOOT_NICE_STEP);
    if (boot === normal) return undefined;
    const capEff = /^CapEff:\s*([0-9a-f]+)$/m.exec(fs.readFileSync('/proc/self/status', 'utf8'))?.[1];
    const privileged = capEff !== undefined && ((BigInt(`0x${capEff}`) >> BigInt(CAP_SYS_NICE)) & 1n) === 1n;
    // "Max nice priority": an unprivileged thread may go as low as nice 20 - limit
    const limit = /^Max nice priority\s+(\d+|unlimited)/m.exec(fs.readFileSync('/proc/self/limits', 'utf8'))?.[1];
    const undoable = privileged || limit === 'unlimited' || (limit !== undefined && 20 - Number(limit) <= normal);
    return undoable ? { normal, boot } : undefined;
  } catch {
    return undefined;
  }
}

/** Autogroups are on and this process is in the root CPU group, so a session's autogroup nice sets its share. */
function autogroupsDecide(): boolean {
  try {
    return fs.readFileSync('/proc/sys/kernel/sched_autogroup_enabled', 'utf8').trim() === '1' && inRootCpuGroup();
  } catch {
    return false;
  }
}

/**
 * cgroup v1: the `cpu` hierarchy's path is `/`. cgroup v2: no group from this
 * process's up to the top has the CPU controller on (a `cpu.weight` file; the
 * true root has none, a cgroup namespace's top does).
 */
function inRootCpuGroup(): boolean {
  const lines = fs.readFileSync('/proc/self/cgroup', 'utf8').trim().split('\n').map((line) => line.split(':'));
  const v1 = lines.find(([, controllers]) => controllers!.split(',').includes('cpu'));
  if (v1) return v1.slice(2).join(':') === '/';
  const v2 = lines.find(([id, controllers]) => id === '0' && controllers === '');
  if (!v2) return false;
  const top = '/sys/fs/cgroup';
  if (!fs.existsSync(path.join(top, 'cgroup.controllers'))) return false; // not mounted here: cannot tell
  for (let dir = path.join(top, v2.slice(2).join(':')); ; dir = path.dirname(dir)) {
    if (fs.existsSync(path.join(dir, 'cpu.weight'))) return false;
    if (dir === top || !dir.startsWith(top)) return true;
  }
}

/** This process's workers that have reported ready and not exited: what a booting worker would take CPU from. */
const serving = new Set<ChildProcess>();

/**
 * Runs `spawn` (a synchronous fork + exec) with this thread lowered, so the
 * child starts at the boot priority, when something serves next to it: a
 * ready worker of this master, or the process itself (a single-mode
 * successor, `ownSession` false). `ownSession`: the child is a session leader
 * (spawned detached), whose autogroup is lowered instead of its threads where
 * autogroups decide. A first generation
 * boots at full speed: there is nobody to protect. workerReady() raises it.
 */
export function spawnLowered(spawn: () => ChildProcess, ownSession: boolean): ChildProcess {
  if (process.platform !== 'linux' || (ownSession && serving.size === 0)) return spawn();
  plan ??= { threads: planThreads(), autogroups: autogroupsDecide() };
  const threads = ownSession && plan.autogroups ? undefined : plan.threads;
  if (threads) os.setPriority(0, threads.boot);
  let child: ChildProcess;
  try {
    child = spawn();
  } finally {
    if (threads) os.setPriority(0, threads.normal);
  }
  const autogroup = ownSession && plan.autogroups && child.pid !== undefined && writeAutogroup(child.pid, BOOT_NICE_STEP) === 'done';
  if (threads || autogroup) lowered.set(child, { threads: threads?.normal, autogroup });
  return child;
}

function writeAutogroup(pid: number, nice: number): 'done' | 'again' | 'gone' {
  try {
    fs.writeFileSync(`/proc/${pid}/autogroup`, String(nice));
    return 'done';
  } catch (error) {
    return (error as NodeJS.ErrnoException).code === 'EAGAIN' ? 'again' : 'gone';
  }
}

/** A worker reported ready: it counts as serving, and is raised if it was lowered. */
export function workerReady(child: ChildProcess): void {
  if (child.pid === undefined || child.exitCode !== null || child.signalCode !== null) return;
  serving.add(child);
  child.once('exit', () => serving.delete(child));
  raise(child);
}

/**
 * Raises `child` after `ms` if it is still booting, so a machine saturated by
 * other work stretches a boot by at most that much before the worker competes
 * at the normal priority (the master passes a tenth of startTimeout).
 */
export function raiseAfter(child: ChildProcess, ms: number): void {
  const record = lowered.get(child);
  if (!record) return;
  record.timer = setTimeout(() => raise(child), ms).unref();
  child.once('exit', () => clearTimeout(record.timer));
}

/** Raises a child spawnLowered() lowered to the master's priority: every thread, and its autogroup. Once. */
function raise(child: ChildProcess): void {
  const record = lowered.get(child);
  const pid = child.pid;
  if (!record || pid === undefined) return;
  lowered.delete(child);
  clearTimeout(record.timer);
  if (record.threads !== undefined) {
    const normal = record.threads;
    let tasks: string[] = [];
    try {
      tasks = fs.readdirSync(`/proc/${pid}/task`);
    } catch {} // gone: nothing to raise
    for (const tid of [String(pid), ...tasks.filter((t) => t !== String(pid))]) {
      try {
        os.setPriority(Number(tid), normal);
      } catch {} // that thread has ended
    }
  }
  if (record.autogroup) {
    const retry = () => {
      if (child.exitCode === null && child.signalCode === null && writeAutogroup(pid, 0) === 'again') setTimeout(retry, AUTOGROUP_RETRY_MS).unref();
    };
    retry();
  }
}
