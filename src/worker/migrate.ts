// The draining worker's half of moving connections (invariant 15): which
// connections can move, stopping and resuming their reads, and counting what
// became of each. The exchange itself is handoff.ts; the new worker's half
// is adopt.ts.
//
// A connection moves only at a protocol boundary with nothing of it in user
// space: bytes the kernel holds travel with the fd, bytes Node has read do not.
//   - HTTP/1.1 (plain http servers, `migrate` option): no request begun and
//     not answered (the parser's message-begin counts a request from its
//     first byte, before its headers are complete), the last request's body
//     read to the end, no response or write pending. Idle ones move when the
//     drain starts; one with a request in flight right after its response
//     (instead of `Connection: close`).
//   - Anything else the application moves with migrate(): raw TCP, and `ws`
//     WebSockets with no partial frame, nothing queued to send and no
//     compression.
// Reading stops (readStop, in the same tick as the check, so nothing can be
// read between) before the fd is offered, and starts again if it stays.
import * as http from 'node:http';
import type * as net from 'node:net';
import * as tls from 'node:tls';
import type { ConnectionTally, HandoffEndpoint } from '../protocol';
import { HandoffSender, HANDOFF_TIMEOUT_MS, type Item } from './handoff';

/** Emitted on the server registered for an address, in the new worker: (socket, state). */
export const ADOPT_EVENT = 'handover:adopt';

const OURS = Symbol('handover.listener');

/** Marks a listener as handover's own, so it does not count as the application listening. */
export function ours<F extends (...args: never[]) => unknown>(listener: F): F {
  return Object.assign(listener, { [OURS]: true });
}

export function isOurs(listener: unknown): boolean {
  return typeof listener === 'function' && OURS in listener;
}

/** migrate()'s state: JSON, at most this many bytes. */
export const MAX_STATE_BYTES = 64 * 1024;

// eslint-disable-next-line @typescript-eslint/no-require-imports
const kOnMessageBegin: number = (require('_http_common') as { HTTPParser: { kOnMessageBegin?: number } }).HTTPParser.kOnMessageBegin ?? 0;

type Handle = { fd?: number; reading?: boolean; readStop?(): number; readStart?(): number; writeQueueSize?: number };
type Internals = net.Socket & {
  _handle?: Handle | null;
  /** `incoming`: the request the parser is reading (until its message is complete), if any. */
  parser?: (Record<number, unknown> & { incoming?: http.IncomingMessage | null }) | null;
  _httpMessage?: unknown;
};

/** What is known about one connection of a watched server. */
interface Track {
  address: string;
  /** Requests begun (first byte parsed) and requests whose headers were complete ('request'). */
  begun: number;
  requests: number;
  /** Why it will not move (then it drains as before). */
  stays?: string;
  moved?: boolean;
  /** Adopted with a fresh keep-alive timer, which its first request clears as Node's own would be. */
  adoptedTimer?: boolean;
}

/** The parts of a `ws` (8.x) WebSocket that decide whether it can move. */
interface WsInternals {
  readyState: number;
  _socket?: net.Socket;
  _protocol?: string;
  _extensions?: Record<string, unknown>;
  _receiver?: { _state?: number; _bufferedBytes?: number; _fragments?: unknown[] };
  _sender?: { _bufferedBytes?: number; _queue?: unknown[]; _state?: number };
}

/** A `ws` WebSocket (or anything shaped like one): what migrate() accepts besides a net.Socket. */
export interface MigratableWebSocket {
  readonly readyState: number;
}

function isWebSocket(connection: unknown): connection is WsInternals {
  return typeof connection === 'object' && connection !== null && '_receiver' in connection && '_socket' in connection;
}

function fdOf(socket: net.Socket): number {
  const fd = (socket as Internals)._handle?.fd;
  return typeof fd === 'number' ? fd : -1;
}

function stopReading(socket: net.Socket): void {
  const handle = (socket as Internals)._handle;
  if (handle?.readStop) {
    handle.reading = false;
    handle.readStop();
  }
}

function startReading(socket: net.Socket): void {
  const handle = (socket as Internals)._handle;
  if (handle?.readStart && !socket.destroyed) {
    handle.reading = true;
    handle.readStart();
  }
}

/** Bytes of it still in user space, waiting to be written. */
function unsent(socket: net.Socket): boolean {
  return socket.writableLength > 0 || ((socket as Internals)._handle?.writeQueueSize ?? 0) > 0;
}

const tracks = new WeakMap<net.Socket, Track>();

/** The worker's mover; migrate() goes through it. One per process. */
let current: ConnectionMover | undefined;

export class ConnectionMover {
  private sender?: HandoffSender;
  private draining = false;
  /** Why nothing moves automatically in this drain, if so. */
  private automaticOff?: string;
  private readonly tally: ConnectionTally = { moved: 0, closed: 0, notMoved: {} };
  private readonly plainHttp = new WeakSet<net.Server>();

  /** `automatic`: the `migrate` option (idle HTTP/1.1 connections move by themselves). */
  constructor(private readonly automatic: boolean) {
    current = this;
  }

  /** Follows every connection of `server` (served on `address`) from the start. */
  watch(server: net.Server, address: string): void {
    const plain = server instanceof http.Server && !(server instanceof tls.Server);
    if (plain) this.plainHttp.add(server);
    const follow = (socket: net.Socket): Track => {
      const track: Track = { address, begun: 0, requests: 0 };
      tracks.set(socket, track);
      socket.once('close', () => this.closed(track, server, socket));
      return track;
    };
    server.on('connection', (socket: Internals) => {
      const track = follow(socket);
      // The parser counts a request from its first byte; Node leaves this hook unset.
      if (plain && socket.parser && socket.parser[kOnMessageBegin] == null) socket.parser[kOnMessageBegin] = () => void track.begun++;
    });
    server.on(ADOPT_EVENT, ours((socket: net.Socket) => void follow(socket)));
    if (plain) {
      server.on('request', (req: http.IncomingMessage, res: http.ServerResponse) => {
        const socket = req.socket;
        const track = tracks.get(socket);
        if (!track) return;
        track.requests++;
        if (track.adoptedTimer) {
          track.adoptedTimer = false;
          socket.setTimeout((server as http.Server).timeout);
        }
        if (this.sender && this.willMove(socket)) res.once('finish', () => this.moveHttp(socket, false));
      });
    }
  }

  /** An adopted HTTP connection: idle until its next request, closed by the keep-alive timeout like any other. */
  adopted(socket: net.Socket, server: http.Server): void {
    const track = tracks.get(socket);
    if (!track || !server.keepAliveTimeout) return;
    track.adoptedTimer = true;
    // Node's own margin past the advertised keep-alive timeout.
    socket.setTimeout(server.keepAliveTimeout + 1_000);
  }

  /**
   * The drain starts: with `to` (the replacing worker's channel), idle HTTP
   * connections move now, busy ones after their response, and migrate()
   * works; without it (a stop, or no ready successor) nothing moves.
   */
  start(to: HandoffEndpoint | undefined, servers: net.Server[], sockets: (server: net.Server) => Iterable<net.Socket>): void {
    this.draining = true;
    if (!to) this.automaticOff = 'no new worker to take it';
    else if (!this.automatic) this.automaticOff = 'migrate: false';
    if (!to) return;
    this.sender = new HandoffSender(to);
    if (!this.automatic) return;
    for (const server of servers) {
      if (!this.plainHttp.has(server)) continue;
      for (const socket of sockets(server)) this.moveHttp(socket, true);
    }
  }

  /** Will this connection move after its response (so the drain must not close it)? */
  willMove(socket: net.Socket): boolean {
    const track = tracks.get(socket);
    return this.sender !== undefined && this.automatic && track !== undefined && !track.stays && !track.moved &&
      (socket as Internals).parser != null;
  }

  /** Resolves once every offer has been answered. */
  settled(): Promise<void> {
    return this.sender?.settled() ?? Promise.resolve();
  }

  /** What became of the connections so far; connections still open count as `open`. */
  report(open: number): ConnectionTally {
    return { ...this.tally, notMoved: { ...this.tally.notMoved }, ...(open > 0 ? { open } : {}) };
  }

  /** The channel closes once every offer is decided. */
  close(): Promise<void> {
    return this.sender?.close() ?? Promise.resolve();
  }

  private closed(track: Track, server: net.Server, socket: net.Socket): void {
    if (!this.draining || track.moved) return;
    this.tally.closed++;
    const reason = track.stays ?? this.automaticOff ?? this.kindReason(server, socket);
    this.tally.notMoved[reason] = (this.tally.notMoved[reason] ?? 0) + 1;
  }

  private kindReason(server: net.Server, socket: net.Socket): string {
    if (server instanceof tls.Server) return 'tls';
    if (!(server instanceof http.Server) && server.listenerCount('session') > 0) return 'http2';
    if (this.plainHttp.has(server) && (socket as Internals).parser == null) return 'upgraded, not migrated by the application';
    if (this.plainHttp.has(server)) return 'closed by the client or its timeout';
    return 'not migrated by the application';
  }

  /** Why this HTTP connection cannot move now; 'in flight' when it can after its response. */
  private httpBusy(socket: Internals, track: Track): string | undefined {
    if (socket.destroyed || socket.writableEnded) return 'closing';
    if (socket.parser == null) return 'upgraded, not migrated by the application';
    if (socket._httpMessage) return 'in flight';
    // The parser's own reference, not one of ours: holding every connection's
    // last request until its next would keep each one alive through young-
    // generation collections, and V8 then grows the young generation (3 MB
    // more RSS per worker under keep-alive load, bench/RESULTS.md "Memory").
    const arriving = socket.parser.incoming;
    if (track.begun > track.requests || (arriving && !arriving.complete)) return 'a request was arriving';
    if (socket.readableLength > 0) return 'bytes read into user space';
    if (unsent(socket)) return 'a response still being written';
    if (fdOf(socket) < 0) return 'no fd';
    return undefined;
  }

  /** `atStart`: the drain's first look, when a request still arriving may yet move after its response. */
  private moveHttp(socket: net.Socket, atStart: boolean): void {
    const track = tracks.get(socket);
    if (!track || track.stays || track.moved || !this.sender) return;
    const busy = this.httpBusy(socket, track);
    if (busy === 'in flight') {
      // At a response's end, another response in flight means pipelining: it drains.
      if (!atStart) track.stays = 'pipelined: its next request had begun';
      else (socket as Internals & { _httpMessage: http.ServerResponse })._httpMessage.once('finish', () => this.moveHttp(socket, false));
      return;
    }
    if (busy === 'a request was arriving' && atStart) return; // its 'request' hooks the move after its response
    if (busy) {
      track.stays = busy === 'a request was arriving' ? 'pipelined: its next request had begun' : busy;
      return;
    }
    this.offer(socket, track, { address: track.address, kind: 'http' }, () => this.httpBusy(socket, track));
  }

  /** Stops reading and offers it; resolves true once it moved. */
  private offer(socket: net.Socket, track: Track, item: Item, busy: () => string | undefined): Promise<boolean> {
    stopReading(socket);
    const bytesRead = socket.bytesRead;
    return new Promise<boolean>((resolve) => {
      this.sender!.offer({
        item,
        fd: fdOf(socket),
        check: () => (socket.bytesRead !== bytesRead ? 'it read bytes during the hand-off' : busy()),
        moved: () => {
          track.moved = true;
          this.tally.moved++;
          socket.destroy(); // close(2): the new worker holds the same connection, so no FIN
          resolve(true);
        },
        kept: (reason) => {
          track.stays = reason;
          startReading(socket);
          resolve(false);
        },
      });
    });
  }

  /** migrate(): see its doc comment in src/index.ts. */
  async migrate(connection: net.Socket | MigratableWebSocket, state: unknown): Promise<boolean> {
    const ws = isWebSocket(connection) ? connection : undefined;
    const socket = ws ? ws._socket : (connection as net.Socket);
    const json = state === undefined ? undefined : JSON.stringify(state);
    if (json !== undefined && Buffer.byteLength(json) > MAX_STATE_BYTES) {
      throw new RangeError(`migrate(): state is ${Buffer.byteLength(json)} bytes of JSON; at most ${MAX_STATE_BYTES}`);
    }
    const track = socket ? tracks.get(socket) : undefined;
    if (!socket || !track || socket.destroyed || track.moved) return false;
    const stays = (reason: string) => {
      track.stays = reason;
      return false;
    };
    if (socket instanceof tls.TLSSocket) return stays('tls');
    if (!this.sender) return stays(this.draining ? 'no new worker to take it' : 'not draining');
    const wsBusy = () => {
      if (!ws) return undefined;
      if (ws.readyState !== 1) return 'not open';
      if (ws._extensions && Object.keys(ws._extensions).length > 0) return 'a compression context';
      const r = ws._receiver;
      if (r && (r._state !== 0 || (r._bufferedBytes ?? 0) > 0 || (r._fragments?.length ?? 0) > 0)) return 'a partial frame';
      const s = ws._sender;
      if (s && ((s._bufferedBytes ?? 0) > 0 || (s._queue?.length ?? 0) > 0 || (s._state ?? 0) !== 0)) return 'a frame being sent';
      return undefined;
    };
    const busy = () => wsBusy() ?? (socket.readableLength > 0 ? 'bytes read into user space' : fdOf(socket) < 0 ? 'no fd' : undefined);
    stopReading(socket);
    const before = busy();
    if (before) {
      startReading(socket);
      return stays(before);
    }
    if (unsent(socket)) {
      // What the application wrote goes out first, from here.
      const flushed = await new Promise<boolean>((resolve) => {
        const timer = setTimeout(() => resolve(false), HANDOFF_TIMEOUT_MS);
        socket.once('drain', () => {
          clearTimeout(timer);
          resolve(true);
        });
      });
      if (!flushed || socket.destroyed) {
        startReading(socket);
        return stays('a response still being written');
      }
    }
    const item: Item = { address: track.address, kind: 'app', ...(json !== undefined ? { state: JSON.parse(json) } : {}), ...(ws?._protocol ? { protocol: ws._protocol } : {}) };
    return this.offer(socket, track, item, () => busy() ?? (unsent(socket) ? 'bytes written meanwhile' : undefined));
  }
}


/**
 * Moves an established connection to the new generation while this worker
 * drains (call it from the socket's `'handover:drain'` event): `connection` is
 * a `net.Socket` or a `ws` WebSocket, `state` any JSON (at most 64 KiB) that
 * the new worker receives with it. Resolves true once the new worker has
 * adopted it: this process must not touch it again (its copy is closed,
 * without a FIN; a WebSocket here sees 'close' 1006). Resolves false when it
 * cannot move (TLS, bytes already read into user space, a partial `ws`
 * frame or one being sent, permessage-deflate, no new worker, or the new
 * worker did not take it): it stays open here, so close it as before.
 * In the new worker the server registered for the same address emits
 * `'handover:adopt'` with `(socket, state)`; see adoptWebSocket().
 *
 * ```ts
 * wss.on('connection', (ws, req) => {
 *   req.socket.on('handover:drain', async () => {
 *     if (!(await migrate(ws, { user: ws.user }))) ws.close(1001);
 *   });
 * });
 * ```
 */
export function migrate(connection: net.Socket | MigratableWebSocket, state?: unknown): Promise<boolean> {
  if (!current) return Promise.resolve(false);
  return current.migrate(connection, state);
}
