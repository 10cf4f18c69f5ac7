// Upgrade in place (invariant 16): the master execs a fresh image of itself
// (the program now on disk, optionally under another Node binary) in the same
// pid, so systemd, supervisors and pid files see nothing but RELOADING=1 and
// READY=1. The listening sockets cross the exec: they are the only fds left
// without close-on-exec, and their numbers, address keys and slots travel in
// one environment variable that the new image reads, and removes, first.
//
// In the order things happen:
//   1. probe: the new image is started once as a child in probe mode, with the
//      Node binary it will run under; it loads the addon and the program up to
//      run(), reports its registrations on fd 3 and exits. A program that
//      throws while loading, a Node binary that is missing or broken, an addon
//      that does not load: the probe fails, nothing else happens, and the
//      generation serving now keeps serving on the same pid.
//   2. exec: each worker is told `upgrading` first, so when its control
//      connection closes at the exec (it is close-on-exec) it keeps serving
//      instead of draining (invariant 8 still holds: the master's pid lives,
//      and its death still drains the worker).
//   3. the new image adopts the sockets by key and slot, starts its
//      generation, says READY=1, and only then sends the old workers a stop
//      signal (they drain); it reaps them as they exit (libuv waits only for
//      children it spawned). If its generation does not start, the old
//      workers keep serving until a reload succeeds: a new image that cannot
//      serve never takes the service down.
import { spawn } from 'node:child_process';
import * as fs from 'node:fs';
import * as native from '../platform/native';

/** Carries the sockets (and the old workers to reap) across the exec. */
const STATE_ENV = 'HANDOVER_UPGRADE_STATE';
/** Set in the probe child: run() reports the registrations on fd 3 and exits. */
const PROBE_ENV = 'HANDOVER_UPGRADE_PROBE';
/** Probe output kept for the failure report. */
const TAIL_LINES = 20;

export interface UpgradeState {
  /** Per address key, its sockets by slot (fds without close-on-exec in the new image until taken). */
  listeners: { key: string; fds: number[]; createdInode?: number; shared?: boolean }[];
  /** The previous image's workers, children of this pid that the new image must reap. */
  workers: number[];
  /** In-place upgrades so far, this one included. */
  upgrades: number;
}

/**
 * The state the previous image left, or undefined when this image was not
 * exec'd by an upgrade. Each socket is replaced by a close-on-exec duplicate
 * (no worker may inherit one at spawn), and the variable is removed so no
 * child sees it.
 */
export function takeUpgradeState(): UpgradeState | undefined {
  const text = process.env[STATE_ENV];
  delete process.env[STATE_ENV];
  if (!text) return undefined;
  let state: UpgradeState;
  try {
    state = JSON.parse(text) as UpgradeState;
  } catch {
    throw new Error(`${STATE_ENV} is set but is not what an upgrade in place leaves (JSON); it is handover's own: unset it`);
  }
  for (const listener of state.listeners) {
    listener.fds = listener.fds.map((inherited) => {
      const fd = native.dup(inherited);
      native.closeFd(inherited);
      return fd;
    });
  }
  return state;
}

/** True in a probe child: the program got as far as run(). */
export function isProbe(): boolean {
  return process.env[PROBE_ENV] === '1';
}

/** In the probe child, at run(): reports what the program registered and exits 0. */
export function reportProbe(addresses: string[]): Promise<never> {
  fs.writeSync(3, `${JSON.stringify({ addresses, node: process.version })}\n`);
  process.exit(0);
}

/** How this master image is started again: the Node binary, its flags, the program and its arguments. */
function command(node: string): [string, string[]] {
  return [node, [...process.execArgv, ...process.argv.slice(1)]];
}

/**
 * Runs the new image in probe mode; resolves with its registrations, or
 * rejects with the reason it cannot start (its own error output).
 */
export function probe(node: string, timeoutMs: number): Promise<{ addresses: string[]; node: string }> {
  const [file, args] = command(node);
  const env: NodeJS.ProcessEnv = { ...process.env, [PROBE_ENV]: '1' };
  delete env.NOTIFY_SOCKET; // the probe is no service of systemd's
  return new Promise((resolve, reject) => {
    const child = spawn(file, args, { env, stdio: ['ignore', 'ignore', 'pipe', 'pipe'] });
    let stderr = '';
    let report = '';
    child.stderr!.setEncoding('utf8').on('data', (chunk: string) => (stderr = (stderr + chunk).slice(-64 * 1024)));
    (child.stdio[3] as NodeJS.ReadableStream).setEncoding('utf8').on('data', (chunk: string) => (report += chunk));
    const timer = setTimeout(() => child.kill('SIGKILL'), timeoutMs);
    const fail = (why: string) => {
      const tail = stderr.split('\n').filter((l) => l.trim() && !/^\s+at .*\(?node:internal\//.test(l)).slice(-TAIL_LINES).join('\n');
      reject(new Error(`the new master image (${file} ${args.join(' ')}) cannot start: ${why}${tail ? `:\n${tail}` : ''}`));
    };
    child.on('error', (error) => {
      clearTimeout(timer);
      fail((error as NodeJS.ErrnoException).code === 'ENOENT' ? `${file} does not exist (ENOENT)` : error.message);
    });
    child.on('close', (code, signal) => {
      clearTimeout(timer);
      if (signal === 'SIGKILL' && report === '') return fail(`it did not reach run() within startTimeout (${timeoutMs} ms)`);
      try {
        if (code === 0) return resolve(JSON.parse(report) as { addresses: string[]; node: string });
      } catch {
        // no report: fall through
      }
      fail(code === 0 ? 'it exited without reaching run()' : signal ? `it was killed by ${signal}` : `it exited with code ${code}`);
    });
  });
}

/**
 * Replaces this process's image (same pid) with `node` running this program
 * again, passing `state`. Every fd but the listening sockets is close-on-exec.
 * Returns only by throwing (the exec failed); then the sockets are
 * close-on-exec again and nothing else changed.
 */
export function execUpgrade(node: string, state: UpgradeState): never {
  const sockets = state.listeners.flatMap((l) => l.fds);
  native.markCloseOnExec(3);
  for (const fd of sockets) native.setCloseOnExec(fd, false);
  // stdio may be close-on-exec too (it is here, under Node 20): the new image writes the same log
  for (const fd of [0, 1, 2]) {
    try {
      native.setCloseOnExec(fd, false);
    } catch {
      // closed: Node opens /dev/null there
    }
  }
  const [file, args] = command(node);
  const env = { ...process.env, [STATE_ENV]: JSON.stringify(state) };
  try {
    const execve = (process as { execve?: (file: string, args: string[], env: NodeJS.ProcessEnv) => never }).execve;
    if (execve) execve(file, [file, ...args], env);
    return native.execve(file, [file, ...args], Object.entries(env).map(([k, v]) => `${k}=${v}`));
  } catch (error) {
    for (const fd of sockets) native.setCloseOnExec(fd, true);
    throw error;
  }
}

/**
 * Reaps the previous image's workers as they exit: libuv only waits for
 * children it spawned itself, so without this they would stay zombies.
 */
export function reapInherited(pids: number[], onExit: (pid: number) => void): void {
  const waiting = new Set(pids);
  if (waiting.size === 0) return;
  const timer = setInterval(() => {
    for (const pid of waiting) {
      if (native.reapChild(pid) === null) continue;
      waiting.delete(pid);
      onExit(pid);
    }
    if (waiting.size === 0) clearInterval(timer);
  }, 100);
  timer.unref();
}
