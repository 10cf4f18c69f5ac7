// A slot no process can accept from (lifecycle.ts, rescueStranded): a
// scale-up's sockets are newer than every worker that serves, so when the
// scale-up's worker dies nobody holds them but the master. The master then
// accepts what is queued there, without reading a byte, and hands each
// connection to a healthy worker over that worker's hand-off channel
// (worker/handoff.ts), as a draining worker hands over an idle connection;
// meanwhile new handshakes are refused on those sockets and, once the queues
// are empty, they stop listening (shutdown: the group's other sockets take
// the client's next SYN). A worker's listen() arms them again.
import * as net from 'node:net';
import type { Logger } from '../log';
import * as native from '../platform/native';
import { HandoffSender } from '../worker/handoff';
import type { RescuedSockets } from './lifecycle';
import type { ListenerSet } from './listeners';
import { socketSteps } from './stop-sockets';
import type { WorkerProcess } from './worker-process';

export function rescueSlot(listeners: ListenerSet, slot: number, to: WorkerProcess, log: Logger): RescuedSockets {
  const sockets = listeners.slotSockets(slot);
  const sender = to.handoff ? new HandoffSender(to.handoff) : undefined;
  const what = `slot ${slot}`;
  let moved = 0;
  const lost: string[] = [];
  const acceptors = sockets.map(({ fd, bound }) => {
    const acceptor = net.createServer({ pauseOnConnect: true }, (socket) => {
      const keep = (reason: string) => {
        lost.push(reason);
        socket.destroy();
      };
      const own = (socket as unknown as { _handle?: { fd?: number } })._handle?.fd;
      if (!sender || own === undefined || own < 0) return keep(`${to.describe()} has no hand-off channel`);
      sender.offer({ item: { address: bound, kind: 'http' }, fd: own, check: () => undefined, moved: () => (moved++, socket.destroy()), kept: keep });
    });
    acceptor.on('error', () => {}); // an accept failing on a socket being shut down
    acceptor.listen({ fd: native.dup(fd) }, listeners.backlog);
    return acceptor;
  });
  const fds = () => sockets.map((s) => s.fd);
  return {
    ...socketSteps(fds, fds, log, what),
    close: () => {
      for (const acceptor of acceptors) acceptor.close();
      for (const fd of fds()) {
        try {
          native.allowNewConnections(fd);
        } catch (error) {
          log.warn(`${what}: cannot take the SYN filter off fd ${fd}: ${error instanceof Error ? error.message : String(error)}`);
        }
      }
      void (sender?.close() ?? Promise.resolve()).then(() => {
        const closed = lost.length > 0 ? `; ${lost.length} closed (${[...new Set(lost)].join('; ')})` : '';
        log.info(`${what}: ${moved} queued connection(s) handed to ${to.describe()}${closed}; it listens again once a worker of its own starts`);
      });
    },
  };
}
