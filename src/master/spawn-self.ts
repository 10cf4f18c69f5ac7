// Starting another copy of this program: the same Node binary, flags and
// arguments, so it loads the code now on disk.
import { type ChildProcess, spawn } from 'node:child_process';
import { markCloseOnExec } from '../platform/native';

/**
 * Spawns this program again with `env` added. Only stdio crosses the spawn:
 * listening sockets travel over the control socket (invariant 5). Every fd
 * handover opens is close-on-exec; fds this process inherited may not be, so
 * they are marked first. The inspector port cannot be shared, so inspector
 * flags stay with the parent.
 */
export function spawnSelf(env: Record<string, string>, identity?: { uid: number; gid: number }): ChildProcess {
  markCloseOnExec(3);
  const execArgv = process.execArgv.filter((arg) => !/^--inspect(-brk|-port)?(=|$)/.test(arg));
  return spawn(process.execPath, [...execArgv, ...process.argv.slice(1)], {
    env: { ...process.env, ...env },
    stdio: ['ignore', 'inherit', 'inherit'],
    uid: identity?.uid,
    gid: identity?.gid,
  });
}
