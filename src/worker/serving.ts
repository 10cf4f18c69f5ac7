// The application's servers on received listening fds, covering a sibling's
// slot when the master asks, and the drain.
import * as net from 'node:net';
import type { ConnectionTally, HandoffEndpoint, ListenerInfo } from '../protocol';
import * as native from '../platform/native';
import { adopt } from './adopt';
import { ServerDrain } from './drain';
import type { Held, Item } from './handoff';
import { listenOnFd } from './listen-fd';
import { ConnectionMover } from './migrate';
import { RequestStats } from './stats';
import type { ResolvedOptions } from '../options';
import { TicketKeys } from '../ticket-keys';

/** An address and how to build the server that serves it (in serving processes only). */
export interface Registration {
  address: string;
  create(): net.Server;
}

/** Socket options of an application server that an extra acceptor must apply the same way. */
function acceptorFor(app: net.Server): net.Server {
  const options = app as net.Server & { noDelay?: boolean; keepAlive?: boolean; keepAliveInitialDelay?: number; pauseOnConnect?: boolean };
  const acceptor = new net.Server({
    noDelay: options.noDelay,
    keepAlive: options.keepAlive,
    keepAliveInitialDelay: options.keepAliveInitialDelay,
    pauseOnConnect: options.pauseOnConnect,
  });
  // The application server handles it exactly as one it accepted itself.
  acceptor.on('connection', (socket) => app.emit('connection', socket));
  acceptor.on('error', () => {}); // a failed accept on a borrowed queue must not take the worker down
  return acceptor;
}

export class Serving {
  private readonly drains: ServerDrain[] = [];
  private readonly servers: net.Server[] = [];
  /** Per registration, the sockets of the other slots (-1 at our own), unused until we cover one. */
  private dormant: number[][] = [];
  /** Per registration, a dup of our own slot's socket: to accept again after a park. */
  private own: number[] = [];
  private readonly backlogs: number[] = [];
  /** Covered slot -> the acceptors on its sockets. */
  private readonly covering = new Map<number, net.Server[]>();
  private draining = false;
  /** The addresses served, as bound ('127.0.0.1:41234'). */
  bound: string[] = [];
  /** Requests served (connections, on a plain net server), 5xx and durations: for maxRequests, metrics, the canary. */
  readonly stats = new RequestStats();

  /** What every TLS server issues and resumes tickets with; set from what the master sends. */
  readonly ticketKeys: TicketKeys;

  private readonly mover: ConnectionMover;

  /** `options.migrate`: idle HTTP/1.1 connections move to the replacing worker by themselves when this one drains. `warn`: for a TLS server whose tickets would outlive the keys (see TicketKeys). */
  constructor(
    private readonly registrations: Registration[],
    private readonly options: Pick<ResolvedOptions, 'closeSpread' | 'ticketKeyRotation' | 'migrate'>,
    warn: (line: string) => void,
  ) {
    this.ticketKeys = new TicketKeys(options.ticketKeyRotation, warn);
    this.mover = new ConnectionMover(options.migrate);
  }

  /** True once every server listens. */
  get started(): boolean {
    return this.drains.length === this.registrations.length && this.bound.length > 0;
  }

  /** Open connections over all servers. */
  get connections(): number {
    return this.drains.reduce((n, d) => n + d.connections, 0);
  }

  /** Slots this process is covering now. */
  get covered(): number[] {
    return [...this.covering.keys()];
  }

  /**
   * Builds each registered server and listens on `slot`'s fd of its address
   * (which the server then owns); the other slots' fds stay dormant. On
   * failure, fds no server took are closed; the caller exits.
   */
  async listen(listeners: ListenerInfo[], fds: number[][], slot: number): Promise<void> {
    const own = fds.map((set) => (set.length === 1 ? 0 : slot));
    this.dormant = fds.map((set, i) => set.map((fd, k) => (k === own[i] ? -1 : fd)));
    this.own = fds.map((set, i) => native.dup(set[own[i]]));
    await Promise.all(this.registrations.map((registration, i) => {
      const server = registration.create();
      this.servers[i] = server;
      this.backlogs[i] = listeners[i].backlog;
      this.ticketKeys.use(server);
      this.drains[i] = new ServerDrain(server, this.options.closeSpread);
      this.drains[i].willMove = (socket) => this.mover.willMove(socket);
      this.mover.watch(server, listeners[i].bound);
      if (this.drains[i].kind === 'net') server.on('connection', () => this.stats.connection());
      else server.on('request', (_req, res) => this.stats.request(res));
      return new Promise<void>((resolve, reject) => {
        server.once('error', reject);
        // Node's listen({fd}) ignores `backlog` in an options object and
        // re-listens with 511; only the positional argument reaches listen(2).
        listenOnFd(server, fds[i][own[i]], listeners[i].backlog, () => {
          server.removeListener('error', reject);
          resolve();
        });
      });
    }));
    this.bound = listeners.map((l) => l.bound);
  }

  /** Also accepts from `slot`'s sockets (dups of the dormant ones), for the application's servers. */
  cover(slot: number): void {
    if (this.draining || this.covering.has(slot)) return;
    const acceptors: net.Server[] = [];
    this.dormant.forEach((set, i) => {
      const fd = set[slot];
      if (fd === undefined || fd < 0) return; // our own slot, or one shared socket for all
      const acceptor = acceptorFor(this.servers[i]);
      listenOnFd(acceptor, native.dup(fd), this.backlogs[i]);
      acceptors.push(acceptor);
    });
    this.covering.set(slot, acceptors);
  }

  /** Stops accepting from `slot`'s sockets; connections taken from them go on. */
  uncover(slot: number): void {
    for (const acceptor of this.covering.get(slot) ?? []) acceptor.close();
    this.covering.delete(slot);
  }

  /**
   * keepPrevious: stop accepting and finish what is in flight as a drain
   * does, but keep every socket, to accept again on resume() (a rollback).
   */
  park(): void {
    for (const slot of this.covered) this.uncover(slot);
    for (const drain of this.drains) void drain.drain();
  }

  /** After park(): the application's servers accept from our slot's sockets again. */
  resume(): void {
    this.drains.forEach((drain, i) => {
      drain.resume();
      listenOnFd(this.servers[i], native.dup(this.own[i]), this.backlogs[i]);
    });
  }

  /** A stop is coming (stopDelay): keep serving, each response closing its connection. */
  closeEachResponse(): void {
    for (const drain of this.drains) drain.closeEachResponse();
  }

  /** A connection a draining worker offers: held for the server of its address (adopt.ts). */
  adopt(item: Item, fd: number): Held | string {
    if (this.draining) return 'it is draining too';
    return adopt(this.servers[this.bound.indexOf(item.address)], item, fd, this.mover);
  }

  /** What became of the connections since the drain began. */
  get tally(): ConnectionTally {
    return this.mover.report(this.connections);
  }

  /** Resolves once every connection offered so far has moved or stayed. */
  moved(): Promise<void> {
    return this.mover.settled();
  }

  /**
   * Drains every server; resolves when the last connection has closed.
   * `to`: the replacing worker, which takes the connections that can move.
   */
  drain(to?: HandoffEndpoint): Promise<void> {
    this.draining = true;
    this.mover.start(to, this.servers, (server) => this.drains[this.servers.indexOf(server)].openSockets);
    for (const slot of this.covered) this.uncover(slot);
    for (const fd of [...this.dormant.flat(), ...this.own]) if (fd >= 0) native.closeFd(fd);
    this.dormant = [];
    this.own = [];
    return Promise.all(this.drains.map((d) => d.drain())).then(() => this.mover.close());
  }
}
