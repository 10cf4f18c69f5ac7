// What a stop does to the master's listening sockets (lifecycle.ts, "stop"),
// on the sockets the master made: the ones systemd passed in are left alone,
// since systemd keeps a copy and passes it to the next start. A rescue
// (slot-rescue.ts) takes the same steps on one slot's sockets.
import type { Logger } from '../log';
import * as native from '../platform/native';
import type { StopSockets } from './lifecycle';
import type { Listener, ListenerSet } from './listeners';

/** Refuse new handshakes, count what is queued, stop listening: on `fds()` (TCP) and `all()`, for `what`'s log lines. */
export function socketSteps(fds: () => number[], all: () => number[], log: Logger, what: string): Omit<StopSockets, 'close'> {
  // Best effort, each socket on its own: a failure leaves that socket as it
  // was (its new connections are reset at close instead of refused).
  const each = (list: number[], step: string, fn: (fd: number) => void) => {
    for (const fd of list) {
      try {
        fn(fd);
      } catch (error) {
        log.warn(`${what}: cannot ${step} on fd ${fd}: ${error instanceof Error ? error.message : String(error)}`);
      }
    }
  };
  return {
    refuseNew: () => each(fds(), 'drop new SYNs', (fd) => native.refuseNewConnections(fd)),
    queued: () => {
      let queued = 0;
      each(fds(), 'read the accept queue', (fd) => (queued += Math.max(0, native.acceptQueueLength(fd))));
      return queued;
    },
    shutdown: () => each(all(), 'shut down the listening socket', (fd) => native.shutdownSocket(fd, 'both')),
  };
}

export function stopSockets(listeners: ListenerSet, log: Logger): StopSockets {
  // With the fd store every socket is systemd's to keep as well (its queue waits for the next master).
  const own = (kind?: 'tcp'): number[] => listeners.stored ? [] : listeners.all
    .filter((l: Listener) => !l.adopted && (kind === undefined || l.address.kind === kind)).flatMap((l) => l.fds);
  return { ...socketSteps(() => own('tcp'), () => own(), log, 'stopping'), close: () => listeners.closeAll() };
}
