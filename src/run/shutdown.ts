// The program's own shutdown code, under `handover start`. Most programs stop
// with `process.on('SIGTERM', () => server.close(() => process.exit(0)))`.
// With a stop signal to every process of the service (systemd's
// KillMode=control-group) that code runs in each worker next to handover's
// drain, and stock close() closes idle keep-alive connections at once (Node
// >= 19: the reload race of invariant 4). So on a server the program
// listened with, close() is the worker's drain (during a stop signal, the
// one the master's stop sequence starts: Worker.stopSignal): the program's
// callback runs once every connection has finished, and a process.exit() it
// calls meanwhile waits for the drain (Worker.holdExits).
import type * as http from 'node:http';
import type * as net from 'node:net';
import { currentWorker } from '../worker/worker';

/** From now on `server.close()` drains the worker, once it serves; before, it is Node's own. */
export function drainOnClose(server: net.Server): void {
  const stockClose = server.close;
  server.close = function close(this: net.Server, callback?: (error?: Error) => void): net.Server {
    const worker = currentWorker();
    if (!worker?.started) return stockClose.call(this, callback);
    worker.stopServing('the program closed its server');
    if (callback) void worker.done.then(() => callback());
    return this;
  };
  // Called by shutdown code that means "stop lingering": during a drain the
  // drain closes each idle connection itself (after its response, or at its
  // keep-alive timeout), never under a request arriving on it.
  const web = server as http.Server;
  const stockCloseIdle = web.closeIdleConnections;
  if (typeof stockCloseIdle !== 'function') return;
  web.closeIdleConnections = function closeIdleConnections(this: http.Server): void {
    if (!currentWorker()?.stopping) stockCloseIdle.call(this);
  };
}
