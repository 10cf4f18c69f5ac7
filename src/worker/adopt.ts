// The new worker's half of moving connections (invariant 15): what becomes of
// a connection a draining worker hands over (handoff.ts), and
// adoptWebSocket(). A connection is held, not read, until the old worker says
// it has closed its copy; then an HTTP/1.1 one goes to its server's
// 'connection' as if accepted here, and one the application moved with
// migrate() to the server's 'handover:adopt' with its state.
import * as http from 'node:http';
import * as net from 'node:net';
import type { Held, Item } from './handoff';
import { isTlsServer } from '../tls-kind';
import { ADOPT_EVENT, type ConnectionMover, isOurs } from './migrate';

/** The subprotocol a moved WebSocket had negotiated, for adoptWebSocket(). */
const PROTOCOL = Symbol('handover.websocket.protocol');

/** Takes `fd` for `server` (the one serving item.address here): held until commit, or why not. */
export function adopt(server: net.Server | undefined, item: Item, fd: number, mover: ConnectionMover): Held | string {
  if (!server) return `nothing here serves ${item.address}`;
  const plainHttp = server instanceof http.Server && !isTlsServer(server);
  if (item.kind === 'http' && !plainHttp) return `${item.address} is not served by a plain http server here`;
  if (item.kind === 'app' && !server.listeners(ADOPT_EVENT).some((l) => !isOurs(l))) {
    return `nothing listens for '${ADOPT_EVENT}' on ${item.address}`;
  }
  const options = server as net.Server & { allowHalfOpen?: boolean; pauseOnConnect?: boolean };
  // manualStart: not a byte is read before the old worker has let go.
  const socket = new net.Socket({ fd, readable: true, writable: true, allowHalfOpen: options.allowHalfOpen, manualStart: true } as net.SocketConstructorOpts);
  return {
    commit: () => {
      if (item.kind === 'http') {
        if (!options.pauseOnConnect) socket.read(0); // as net.Server starts an accepted socket
        server.emit('connection', socket);
        mover.adopted(socket, server as http.Server);
      } else {
        (socket as net.Socket & { [PROTOCOL]?: string })[PROTOCOL] = item.protocol;
        server.emit(ADOPT_EVENT, socket, item.state);
      }
    },
    cancel: () => socket.destroy(), // close(2): the old worker keeps the connection
  };
}

/** The parts of a `ws` WebSocketServer that adoptWebSocket() uses (ws 8). */
export interface AdoptingWebSocketServer<W> {
  options: {
    WebSocket?: new (address: null, protocols: undefined, options: object) => W;
    maxPayload?: number;
    allowSynchronousEvents?: boolean;
    skipUTF8Validation?: boolean;
    maxBufferedChunks?: number;
    maxFragments?: number;
  };
  clients?: Set<W>;
}

/**
 * In a new worker, turns a socket that `'handover:adopt'` delivered (a
 * WebSocket the old worker moved with migrate()) into an open WebSocket of
 * the application's own `ws` (handover does not depend on it): as `ws`'s
 * WebSocketServer completes an upgrade, minus the handshake, which happened
 * long ago. It joins `wss.clients`.
 *
 * ```ts
 * server.on('handover:adopt', (socket, state) => {
 *   const ws = adoptWebSocket(wss, socket);
 *   serve(ws, state); // the state the old worker passed to migrate()
 * });
 * ```
 */
export function adoptWebSocket<W>(wss: AdoptingWebSocketServer<W>, socket: net.Socket): W {
  const WebSocket = wss.options?.WebSocket;
  if (typeof WebSocket !== 'function') {
    throw new TypeError('adoptWebSocket(): the first argument must be a ws WebSocketServer (ws >= 8, whose options name its WebSocket class)');
  }
  // Not public ws API, but what WebSocketServer.completeUpgrade does (ws 8.x;
  // test/migrate-ws.test.ts pins it).
  const ws = new WebSocket(null, undefined, wss.options) as W & {
    _protocol?: string;
    setSocket(socket: net.Socket, head: Buffer, options: object): void;
    on(event: 'close', listener: () => void): void;
  };
  const protocol = (socket as net.Socket & { [PROTOCOL]?: string })[PROTOCOL];
  if (protocol) ws._protocol = protocol;
  ws.setSocket(socket, Buffer.alloc(0), {
    allowSynchronousEvents: wss.options.allowSynchronousEvents,
    maxBufferedChunks: wss.options.maxBufferedChunks,
    maxFragments: wss.options.maxFragments,
    maxPayload: wss.options.maxPayload,
    skipUTF8Validation: wss.options.skipUTF8Validation,
  });
  if (wss.clients) {
    wss.clients.add(ws);
    ws.on('close', () => wss.clients!.delete(ws));
  }
  return ws;
}
