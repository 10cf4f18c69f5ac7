// What a stop does to the master's listening sockets (lifecycle.ts, "stop"),
// on the sockets the master made: the ones systemd passed in are left alone,
// since systemd keeps a copy and passes it to the next start.
import type { Logger } from '../log';
import * as native from '../platform/native';
import type { StopSockets } from './lifecycle';
import type { Listener, ListenerSet } from './listeners';

export function stopSockets(listeners: ListenerSet, log: Logger): StopSockets {
  const own = (kind?: 'tcp'): number[] =>
    listeners.all.filter((l: Listener) => !l.adopted && (kind === undefined || l.address.kind === kind)).flatMap((l) => l.fds);
  // Best effort, each socket on its own: a failure leaves that socket as it
  // was (its new connections are reset at close instead of refused).
  const each = (fds: number[], what: string, fn: (fd: number) => void) => {
    for (const fd of fds) {
      try {
        fn(fd);
      } catch (error) {
        log.warn(`stopping: cannot ${what} on fd ${fd}: ${error instanceof Error ? error.message : String(error)}`);
      }
    }
  };
  return {
    refuseNew: () => each(own('tcp'), 'drop new SYNs', (fd) => native.refuseNewConnections(fd)),
    queued: () => {
      let queued = 0;
      each(own('tcp'), 'read the accept queue', (fd) => (queued += Math.max(0, native.acceptQueueLength(fd))));
      return queued;
    },
    shutdown: () => each(own(), 'shut down the listening socket', (fd) => native.shutdownListener(fd)),
    close: () => listeners.closeAll(),
  };
}
