// How each kind of server stops without breaking a client (invariant 4).
//
// Stock http `server.close()` closes idle keep-alive connections at once
// (Node >= 19): a request the client is sending at that moment meets a closed
// socket (ECONNRESET, "socket hang up"). That is the classic reload race, so it
// is never used here. Instead a drain:
//   - stops accepting (net.Server's own close, which leaves connections open;
//     the master's copy of the socket keeps the accept queue alive);
//   - lets in-flight requests finish, their responses saying `Connection: close`
//     where headers are not sent yet;
//   - answers the next request on every keep-alive connection with
//     `Connection: close`, and Node then ends the socket with a FIN;
//   - leaves idle connections to Node's keep-alive timeout, which would have
//     closed them anyway;
//   - HTTP/2: a two-phase GOAWAY on every session (see closeSession), open
//     streams finish;
//   - over TLS, and for HTTP/2, which cannot move to the new generation, the
//     closes are spread over `closeSpread` ms (close-spread.ts): each idle
//     HTTPS connection gets a FIN, each HTTP/2 session its GOAWAY, and each
//     TLS raw or upgraded socket its 'handover:drain' at its own moment;
//   - raw net servers and upgraded (WebSocket) sockets: a 'handover:drain' event
//     on each socket so the application can say goodbye in its own protocol
//     (on a tls.Server, on the TLS socket the application holds, not the raw
//     TCP one under it). (Not 'drain': every Writable already emits that when
//     its buffer empties.)
// A drain is over when the server has stopped accepting and every connection
// it saw has closed: counted by its 'connection' events, not by the server's
// own count, which misses the sockets handed to it with
// `server.emit('connection', socket)` from another listener.
// The worker destroys whatever is left at stopTimeout by exiting.
import * as http from 'node:http';
import type * as http2 from 'node:http2';
import * as net from 'node:net';
import type * as tls from 'node:tls';
import { isHttpsServer, isTlsServer, isTlsSocket } from '../tls-kind';
import { sendWhole } from '../platform/native';
import { ADOPT_EVENT, ours } from './migrate';
import { IDLE_CLOSE_GUARD_MS, closesWhenIdle, spreadOver } from './close-spread';

/** Emitted on raw and upgraded sockets when their worker starts draining. */
export const SOCKET_DRAIN_EVENT = 'handover:drain';

type Kind = 'http' | 'http2' | 'net';

/** http2's server classes are not exported; recognise them along the prototype chain. */
function isHttp2Server(server: net.Server): boolean {
  for (let p = Object.getPrototypeOf(server); p && p !== net.Server.prototype; p = Object.getPrototypeOf(p)) {
    const name = p.constructor?.name;
    if (name === 'Http2Server' || name === 'Http2SecureServer') return true;
  }
  return false;
}

function kindOf(server: net.Server): Kind {
  if (server instanceof http.Server || isHttpsServer(server)) return 'http';
  return isHttp2Server(server) ? 'http2' : 'net';
}

/**
 * The first half of a two-phase GOAWAY (RFC 9113 6.8): "no new streams, but
 * every stream up to the largest id may still come". Node has no call for it:
 * its `session.goaway()` makes nghttp2 drop, silently, every stream that
 * arrives afterwards, and those end with no response at all. So the frame is
 * written raw on the TCP socket, between two of the session's writes (each of
 * which is whole frames), by a send that writes all of it or nothing.
 */
const SHUTDOWN_NOTICE = Buffer.from([
  0x00, 0x00, 0x08, // length 8
  0x07, // type GOAWAY
  0x00, // flags
  0x00, 0x00, 0x00, 0x00, // stream 0
  0x7f, 0xff, 0xff, 0xff, // last stream id: 2^31-1
  0x00, 0x00, 0x00, 0x00, // NO_ERROR
]);

/** How long the notice may wait for a moment with nothing unsent, and the client for the PING. */
const NOTICE_PATIENCE_MS = 5_000;
/** How often it looks for that moment (a client slow to read keeps bytes unsent). */
const NOTICE_RETRY_MS = 5;

type Handle = { fd?: number; writeQueueSize?: number };

/** Writes the shutdown notice if it can go out whole now: true once written. */
function sendShutdownNotice(socket: net.Socket): boolean {
  const handle = (socket as net.Socket & { _handle?: Handle })._handle;
  if (!handle || typeof handle.fd !== 'number' || handle.fd < 0 || handle.writeQueueSize !== 0) return false;
  return sendWhole(handle.fd, SHUTDOWN_NOTICE);
}

/**
 * Closes a session without refusing a stream the client has sent. The
 * shutdown notice stops the client opening streams; once it answers the PING
 * that follows, every stream it opened before reading the notice has arrived,
 * so the final GOAWAY (`session.close()`, naming the last stream received)
 * refuses none, and the session closes when its open streams finish
 * (test/http2-drain.test.ts). On TLS the raw notice is impossible (it would
 * need the session's encryption), so there, and if the notice or the PING
 * cannot go out, the single GOAWAY: streams crossing it get REFUSED_STREAM,
 * never processed, so safe to retry (RFC 9113 8.7).
 */
function closeSession(session: http2.Http2Session, socket: net.Socket | undefined): void {
  const gone = () => session.closed || session.destroyed;
  if (gone()) return;
  const deadline = Date.now() + NOTICE_PATIENCE_MS;
  const close = () => {
    clearTimeout(patience);
    if (!gone()) session.close();
  };
  const patience = setTimeout(close, NOTICE_PATIENCE_MS).unref();
  if (!socket || isTlsSocket(socket)) return close();
  const notice = () => {
    if (gone()) return close();
    let sent: boolean;
    try {
      sent = sendShutdownNotice(socket);
    } catch {
      return close(); // the connection is going anyway; Node reports its error
    }
    if (sent) return void (session.ping(close) || close());
    if (Date.now() < deadline) setTimeout(notice, NOTICE_RETRY_MS).unref();
    else close();
  };
  notice();
}

function closeAfterThisResponse(res: http.ServerResponse): void {
  if (res.headersSent) return;
  res.shouldKeepAlive = false;
  res.setHeader('Connection', 'close');
}

/** Watches one application server from the start so it can drain it later. */
export class ServerDrain {
  readonly kind: Kind;
  private draining = false;
  /** stopDelay: still accepting, but every response closes its connection. */
  private closing = false;
  /** Called when the last tracked socket has closed during a drain. */
  private lastClosed?: () => void;
  private readonly sockets = new Set<net.Socket>();
  private readonly upgraded = new Set<net.Socket>();
  private readonly secureSockets = new Set<tls.TLSSocket>();
  /** HTTP/2 sessions, each with the socket it runs on (for closeSession). */
  private readonly sessions = new Map<http2.Http2Session, net.Socket | undefined>();
  /** The socket whose session Node is creating (it emits 'session' synchronously). */
  private accepted?: net.Socket;
  /** A connection that will move to the new generation after its response: no `Connection: close` (migrate.ts). */
  willMove?: (socket: net.Socket) => boolean;
  /** Cancels the spread closes still to come. */
  private cancelCloses = () => {};

  /** `closeSpread`: ms over which the closes of what cannot move are spread. */
  constructor(readonly server: net.Server, private readonly closeSpread = 0) {
    this.kind = kindOf(server);
    const tlsServer = isTlsServer(server);
    server.prependListener('connection', (socket: net.Socket) => {
      if (this.kind === 'http2') this.accepted = socket;
      this.track(socket);
      if (this.draining && this.kind === 'net' && !tlsServer) process.nextTick(() => socket.emit(SOCKET_DRAIN_EVENT));
    });
    // A connection moved here from the old generation with migrate(): the
    // application holds it as it holds an upgraded one.
    server.prependListener(ADOPT_EVENT, ours((socket: net.Socket) => {
      this.track(socket);
      if (this.kind !== 'net') {
        this.upgraded.add(socket);
        socket.once('close', () => this.upgraded.delete(socket));
      }
      if (this.draining) process.nextTick(() => socket.emit(SOCKET_DRAIN_EVENT));
    }));
    if (this.kind === 'http' || this.kind === 'http2') {
      // HTTP/1 requests: on http servers, and on http2 servers with allowHTTP1.
      // Nothing per request until the drain: it must cost nothing while serving.
      server.prependListener('request', (_req: unknown, res: unknown) => {
        if ((this.draining || this.closing) && res instanceof http.ServerResponse && !this.moves(res)) closeAfterThisResponse(res);
      });
    }
    if (this.kind === 'http') this.trackUpgrades();
    if (tlsServer) {
      // HTTPS parses on the TLS socket, and a tls.Server's application holds
      // it: not the raw one 'connection' gave us.
      server.prependListener('secureConnection', (socket: tls.TLSSocket) => {
        if (this.kind === 'http2') this.accepted = socket;
        this.secureSockets.add(socket);
        socket.once('close', () => this.secureSockets.delete(socket));
        if (this.draining && this.kind === 'net') process.nextTick(() => socket.emit(SOCKET_DRAIN_EVENT));
      });
    }
    if (this.kind === 'http2') {
      server.prependListener('session', (session: http2.Http2Session) => {
        const socket = this.socketOf(session);
        if (this.draining) return void process.nextTick(() => closeSession(session, socket));
        this.sessions.set(session, socket);
        session.once('close', () => this.sessions.delete(session));
      });
    }
  }

  private track(socket: net.Socket): void {
    this.sockets.add(socket);
    socket.once('close', () => {
      this.sockets.delete(socket);
      if (this.sockets.size === 0) this.lastClosed?.();
    });
  }

  private moves(res: http.ServerResponse): boolean {
    return this.draining && !this.closing && res.socket !== null && this.willMove?.(res.socket) === true;
  }

  /**
   * The socket under a new session: the one just accepted, checked by its
   * native handle (a session's own `socket` is a proxy that refuses writes).
   */
  private socketOf(session: http2.Http2Session): net.Socket | undefined {
    const socket = this.accepted;
    this.accepted = undefined;
    const handle = (session.socket as net.Socket & { _handle?: unknown })._handle;
    return socket && handle !== undefined && (socket as net.Socket & { _handle?: unknown })._handle === handle ? socket : undefined;
  }

  /**
   * Upgraded sockets are tracked only while the application itself listens
   * for 'upgrade': with no listener, Node answers an Upgrade request as an
   * ordinary request, and a listener of ours would swallow it instead.
   */
  private trackUpgrades(): void {
    const track = (_req: http.IncomingMessage, socket: net.Socket) => {
      this.upgraded.add(socket);
      socket.once('close', () => this.upgraded.delete(socket));
      if (this.draining) process.nextTick(() => socket.emit(SOCKET_DRAIN_EVENT));
    };
    const appListens = () => this.server.listeners('upgrade').some((l) => l !== track);
    const sync = () => {
      const installed = this.server.listeners('upgrade').includes(track);
      if (appListens() && !installed) this.server.prependListener('upgrade', track);
      if (!appListens() && installed) this.server.removeListener('upgrade', track);
    };
    this.server.on('newListener', (event: string | symbol, listener: unknown) => {
      if (event === 'upgrade' && listener !== track && !this.server.listeners('upgrade').includes(track)) {
        this.server.prependListener('upgrade', track); // added before the app's own, which follows
      }
    });
    this.server.on('removeListener', (event: string | symbol) => {
      if (event === 'upgrade') sync();
    });
    sync();
  }

  /** After a park (keepPrevious), a rollback: serve normally again (the caller listens again). */
  resume(): void {
    this.cancelCloses();
    this.draining = false;
    this.closing = false;
  }

  /**
   * A stop is coming (stopDelay): keep accepting, but each HTTP/1 response
   * says `Connection: close`, so clients move to another endpoint while the
   * load balancer still sends some here.
   */
  closeEachResponse(): void {
    this.closing = true;
  }

  /** The open connections themselves (a copy). */
  get openSockets(): net.Socket[] {
    return [...this.sockets];
  }

  /** Open connections (upgraded ones included). */
  get connections(): number {
    return this.sockets.size;
  }

  /**
   * Starts the drain; resolves when the server has stopped accepting and the
   * last connection it saw (its own or one handed to it) has closed.
   */
  drain(): Promise<void> {
    this.draining = true;
    const stoppedAccepting = new Promise<void>((resolve) => {
      // net.Server's close, not http's: stop accepting, keep connections.
      // (Its callback's ERR_SERVER_NOT_RUNNING just means it never listened.)
      net.Server.prototype.close.call(this.server, () => resolve());
    });

    // A request in flight: its response is the socket's current message.
    for (const socket of [...this.sockets, ...this.secureSockets]) {
      const res = (socket as net.Socket & { _httpMessage?: unknown })._httpMessage;
      if (res instanceof http.ServerResponse && !this.moves(res)) closeAfterThisResponse(res);
    }
    const secure = isTlsServer(this.server);
    const told = this.kind !== 'net' ? this.upgraded : secure ? this.secureSockets : this.sockets;
    const tell = [...told].map((socket) => () => socket.emit(SOCKET_DRAIN_EVENT));
    // HTTP/1 over TLS: on an https server, or an http2 one with allowHTTP1.
    const http1 = [...this.secureSockets].filter((s) => !this.upgraded.has(s) && (this.kind === 'http' || (this.kind === 'http2' && s.alpnProtocol !== 'h2')));
    const cancelSessions = spreadOver(this.closeSpread, [
      ...[...this.sessions].map(([session, socket]) => () => closeSession(session, socket)),
      ...(secure ? tell : []),
    ]);
    const cancelIdle = spreadOver(this.closeSpread, secure ? closesWhenIdle(this.server, http1) : [], Math.min(IDLE_CLOSE_GUARD_MS, this.closeSpread / 2));
    this.cancelCloses = () => {
      cancelSessions();
      cancelIdle();
    };
    if (!secure) tell.forEach((emit) => emit());
    return stoppedAccepting.then(() => new Promise<void>((resolve) => {
      if (this.sockets.size === 0) resolve();
      else this.lastClosed = resolve;
    }));
  }
}
