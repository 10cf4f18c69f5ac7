// Starting another copy of this program: the same Node binary, flags and
// arguments, so it loads the code now on disk.
import { type ChildProcess, spawn } from 'node:child_process';

/**
 * Spawns this program again with `env` added. Only stdio crosses the spawn:
 * listening sockets travel over the control socket (invariant 5), and every fd
 * handover holds is close-on-exec. The inspector port cannot be shared, so
 * inspector flags stay with the parent.
 */
export function spawnSelf(env: Record<string, string>, identity?: { uid: number; gid: number }): ChildProcess {
  const execArgv = process.execArgv.filter((arg) => !/^--inspect(-brk|-port)?(=|$)/.test(arg));
  return spawn(process.execPath, [...execArgv, ...process.argv.slice(1)], {
    env: { ...process.env, ...env },
    stdio: ['ignore', 'inherit', 'inherit'],
    uid: identity?.uid,
    gid: identity?.gid,
  });
}
