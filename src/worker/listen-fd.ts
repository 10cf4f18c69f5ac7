// Listening on a received fd without Node loading node:cluster. Every
// net.Server listen() goes through net's listenInCluster, whose first call
// loads node:cluster, and with it child_process and dgram (ten modules, about
// 1 ms of CPU in every worker at every reload; issue 24), only to find that
// this process is not a cluster worker. For an fd, what listen() does besides
// is to add the callback for 'listening' and call net.Server's _listen2 (its
// setupListenHandle, under that name since Node 0.x): done here, directly.
//
// listen() as usual wherever skipping it would change what something else
// sees: in a cluster worker (NODE_UNIQUE_ID: its listen asks its primary),
// on a Node without _listen2, while something traces net.server.listen (a
// diagnostics_channel subscriber: it would see the end of a listen without
// its start), and when listen is not Node's own (wrapped by an APM agent or a
// test, which expect to see every listen).
import * as diagnostics from 'node:diagnostics_channel';
import type * as net from 'node:net';

type Listen2 = (address: null, port: null, addressType: null, backlog: number | undefined, fd: number) => void;

let traced: { hasSubscribers?: boolean } | undefined;
/** The listen function found to be Node's own (its source calls listenInCluster). */
let nodesListen: unknown;

function isNodesOwn(listen: (...args: never[]) => unknown): boolean {
  if (listen === nodesListen) return true;
  if (!Function.prototype.toString.call(listen).includes('listenInCluster(')) return false;
  nodesListen = listen;
  return true;
}

/** server.listen({ fd }, backlog, onListening), as it does it for a process that is no cluster worker. */
export function listenOnFd(server: net.Server, fd: number, backlog?: number, onListening?: () => void): void {
  const listen2 = (server as net.Server & { _listen2?: Listen2 })._listen2;
  traced ??= diagnostics.tracingChannel('net.server.listen') as { hasSubscribers?: boolean };
  if (typeof listen2 !== 'function' || process.env.NODE_UNIQUE_ID !== undefined || traced.hasSubscribers !== false ||
    !isNodesOwn(server.listen)) {
    server.listen({ fd }, backlog, onListening);
    return;
  }
  if (onListening) server.once('listening', onListening);
  listen2.call(server, null, null, null, backlog, fd);
}
