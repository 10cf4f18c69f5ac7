// A worker never outlives its master (invariants 8 and 14), even when its
// event loop is blocked for good: then neither its stop-signal handler nor
// its stopTimeout timer can run, and it would keep the port forever, so a new
// master fails with EADDRINUSE.
//
// Linux: PR_SET_PDEATHSIG makes the kernel signal the worker when the master
// dies. The signal is a dedicated realtime one with a native handler, which
// runs whatever JavaScript is doing: it arms alarm(ceil(stopTimeout) + 1 s),
// whose default action ends the process, and raises the configured stop
// signal, so a worker whose loop still turns drains as usual and exits before
// the alarm. darwin has no parent-death signal: there the control socket's
// EOF is the only news of the master's death, and it needs the event loop.
import * as os from 'node:os';
import type { Logger } from '../log';
import * as native from '../platform/native';

/**
 * Arms the parent-death stop; exits at once if the master is already gone.
 * `stopSignal` is raised on the master's death (the worker's first stop
 * signal, which drains it); with none, the alarm alone ends the worker, and
 * the control socket's EOF drains it meanwhile if its loop turns.
 */
export function guardAgainstOrphaning(
  masterPid: number,
  stopSignal: NodeJS.Signals | undefined,
  stopTimeoutMs: number,
  log: Logger,
): void {
  const signo = stopSignal === undefined ? 0 : os.constants.signals[stopSignal];
  native.setParentDeathStop(signo, Math.ceil(stopTimeoutMs / 1000) + 1);
  // The master may have died before the kernel knew whom to tell.
  if (process.ppid !== masterPid) {
    log.error(`master pid ${masterPid} is gone before this worker started; exiting`);
    process.exit(1);
  }
}
