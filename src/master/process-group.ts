// Each worker leads a process group of its own (spawned with setsid), so
// whatever it spawns (a queue consumer, a sidecar, a shell pipeline) is in
// that group, and the group ends with the worker: otherwise every reload and
// every stop would leave the helpers running, reparented to init.
//
// The worker had its whole drain (its `drain` event, up to stopTimeout) to
// stop its helpers itself; once it has exited nothing is left to stop them
// gracefully, so what remains of the group is killed. The group id stays
// reserved while any member lives, so the signal cannot reach a stranger.
//
// Side effect, on purpose: a signal to the master's process group (Ctrl-C,
// `kill -TERM -PGID`) reaches the master only, which then drains the workers
// itself, instead of racing the application's own signal handlers in every
// worker against the drain.
import type { ChildProcess } from 'node:child_process';

/** When `child` (spawned `detached`) exits, SIGKILLs what is left of its process group. */
export function endGroupWith(child: ChildProcess): void {
  const group = child.pid;
  if (group === undefined) return;
  child.once('exit', () => {
    try {
      process.kill(-group, 'SIGKILL');
    } catch {
      // ESRCH: the worker left no process behind
    }
  });
}
