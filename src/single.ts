// Single-process mode: no master. This process owns the listening sockets
// (bound here, adopted from systemd, or handed over by its predecessor) and
// serves dups of them itself. A reload starts a successor copy of the program,
// hands it the sockets over SCM_RIGHTS, waits until it is ready, and only then
// drains and exits. The pid changes on each reload: `pidFile` is rewritten
// atomically and systemd is told MAINPID=.
import { randomBytes } from 'node:crypto';
import type { EventEmitter } from 'node:events';
import type { MasterStatus, Message } from './protocol';
import { ControlClient } from './worker/control-client';
import { ControlServer } from './master/control-server';
import { Generation, Reloader } from './master/lifecycle';
import { ListenerSet } from './master/listeners';
import { type Logger, createLogger } from './log';
import * as native from './platform/native';
import type { ResolvedOptions } from './options';
import { type Registration, Serving } from './worker/serving';
import { spawnSelf } from './master/spawn-self';
import { adoptPidFile, removePidFile, writePidFile } from './platform/pidfile';
import { monotonicUsec, notify, takeActivatedSockets } from './platform/systemd';
import { handleSignals } from './signals';
import { WorkerProcess } from './master/worker-process';
import { TicketKeyRing } from './ticket-keys';

const SUCCESSOR = {
  socket: 'HANDOVER_SUCCESSOR_SOCKET',
  token: 'HANDOVER_SUCCESSOR_TOKEN',
  generation: 'HANDOVER_SUCCESSOR_GENERATION',
} as const;

/** How long a successor waits for its predecessor's answer to its hello. */
const HANDSHAKE_TIMEOUT_MS = 10_000;

export class SingleProcess {
  private readonly log: Logger;
  private readonly listeners: ListenerSet;
  private readonly serving: Serving;
  /** This process keeps the TLS ticket keys (made here, or handed over by the predecessor) and passes them on. */
  private ticketKeyRing?: TicketKeyRing;
  private readonly startedAt = Date.now();
  private generation = Number(process.env[SUCCESSOR.generation] ?? 1);
  private control?: ControlServer;
  /** A successor that is starting (ours to abandon). */
  private successor?: WorkerProcess;
  /** The successor that took over: a reload requested during the handover is passed on to it. */
  private heir?: WorkerProcess;
  private readonly reloader = new Reloader(() => (this.heir ? this.passOnReload(this.heir) : this.handOver()));
  private readonly pendingResults = new Map<number, { resolve: () => void; reject: (e: Error) => void }>();
  private nextId = 1;
  /** Draining: after a handover, or for a stop. */
  private stopping = false;
  private stopped!: () => void;

  constructor(
    private readonly options: ResolvedOptions,
    private readonly registrations: Registration[],
    private readonly events: EventEmitter,
  ) {
    this.log = createLogger(options.logger, 'single');
    this.listeners = new ListenerSet({ slots: 1, backlog: options.backlog, shared: options.shared, unixMode: options.unixSocketMode });
    this.serving = new Serving(registrations, options, (line) => this.log.warn(line));
  }

  get bound(): string[] {
    return this.serving.bound;
  }

  async run(): Promise<void> {
    const done = new Promise<void>((resolve) => (this.stopped = resolve));
    const predecessor = process.env[SUCCESSOR.socket] ? await this.takeOver() : undefined;
    this.ticketKeyRing ??= new TicketKeyRing();
    this.serving.ticketKeys.set(this.ticketKeyRing.wire);
    this.ticketKeyRing.start(this.options.ticketKeyRotation, (keys) => this.serving.ticketKeys.set(keys));
    const addresses = this.registrations.map((r) => r.address);
    try {
      if (!predecessor) this.listeners.adopt(takeActivatedSockets());
      const listeners = addresses.map((a) => this.listeners.ensure(a));
      this.control = await this.openControl();
      await this.options.ready?.();
      // The servers own dups; this process keeps the originals to hand over.
      await this.serving.listen(
        listeners.map((l) => ({ address: l.key, bound: l.bound, backlog: this.options.backlog, fds: 1 })),
        addresses.map((a) => [native.dup(this.listeners.fdFor(a, 0))]),
        0,
      );
    } catch (error) {
      predecessor?.send({ type: 'failed', message: error instanceof Error ? error.message : String(error) });
      this.control?.close();
      this.listeners.closeAll(!predecessor);
      throw error;
    }
    handleSignals({
      reloadSignals: this.options.reloadSignals,
      stopSignals: this.options.stopSignals,
      upgradeSignals: this.options.upgradeSignals,
      log: this.log,
      // A process that is handing over or stopping ignores reload signals (its
      // pidFile already names the successor); never fatal (invariant 9).
      stopping: () => this.stopping,
      reload: () => void this.reload().catch(() => {}), // reported by handOver
      stop: () => void this.stop(),
      force: () => {
        this.log.warn('exiting now');
        process.exit(0);
      },
    });
    if (predecessor) {
      // It now drains and exits; its EOF is expected. If it is stopping
      // meanwhile, it asks us to stop too; a reload requested of it during the
      // handover is ours to run.
      predecessor.on('message', (message: Message) => {
        if (message.type === 'drain') void this.stop();
        if (message.type === 'reload') {
          this.reload().then(
            () => predecessor.send({ type: 'reload-result', id: message.id, ok: true }),
            (error: Error) => predecessor.send({ type: 'reload-result', id: message.id, ok: false, message: error.message }),
          );
        }
      });
      predecessor.send({ type: 'ready' });
    } else {
      if (this.options.pidFile) writePidFile(this.options.pidFile);
      notify('READY=1', `STATUS=generation ${this.generation} serving`);
    }
    this.log.info(`ready: generation ${this.generation} serving on ${this.bound.join(', ')} (single process)`);
    this.events.emit('ready', { generation: this.generation, addresses: this.bound });
    await done;
  }

  /** As a successor: receive the listening sockets from the process we replace. */
  private async takeOver(): Promise<ControlClient> {
    const socketPath = process.env[SUCCESSOR.socket]!;
    const token = process.env[SUCCESSOR.token]!;
    for (const name of Object.values(SUCCESSOR)) delete process.env[name];
    const addresses = this.registrations.map((r) => r.address);
    const { client, listeners, fds, ticketKeys } = await ControlClient.connect(socketPath, {
      type: 'hello', token, pid: process.pid, slot: 0, generation: this.generation, addresses,
    }, HANDSHAKE_TIMEOUT_MS);
    this.ticketKeyRing = new TicketKeyRing(ticketKeys);
    // A Unix socket file our predecessor made is ours to remove at the final
    // stop; one systemd made (socket activation) is systemd's.
    this.listeners.adopt(fds.map(([fd], i) => ({
      fd, bound: native.localAddress(fd), name: listeners[i].address, owned: listeners[i].owned === true,
    })));
    return client;
  }

  private openControl(): Promise<ControlServer> {
    return ControlServer.open(this.options, this.log, {
      hello: (pid, hello, conn) => {
        const successor = this.successor;
        if (!successor || successor.pid !== pid) return void conn.destroy();
        successor.conn = conn;
        void this.listeners.sendTo(conn, hello.addresses, this.ticketKeyRing?.wire).then((failure) => (successor.failure = failure));
      },
      message: (pid, message) => {
        const child = [this.successor, this.heir].find((c) => c?.pid === pid);
        if (message.type === 'ready') child?.becameReady();
        if (message.type === 'failed' && child) child.failure = message.message;
        if (message.type === 'reload-result' && child === this.heir) {
          const pending = this.pendingResults.get(message.id);
          this.pendingResults.delete(message.id);
          if (message.ok) pending?.resolve();
          else pending?.reject(new Error(message.message ?? 'reload failed'));
        }
      },
      admin: (message, reply) => this.onAdmin(message, reply),
    });
  }

  private onAdmin(message: Message, reply: (answer: Message) => void): void {
    if (message.type === 'status') reply({ type: 'status-result', status: this.status() });
    if (message.type === 'stop') void this.stop();
    if (message.type === 'reload') {
      this.reload().then(
        () => reply({ type: 'reload-result', id: message.id, ok: true }),
        (error: Error) => reply({ type: 'reload-result', id: message.id, ok: false, message: error.message }),
      );
    }
  }

  status(): MasterStatus {
    return {
      pid: process.pid,
      generation: this.generation,
      uptimeMs: Date.now() - this.startedAt,
      reloading: this.reloader.busy,
      addresses: this.bound,
      workers: [{
        pid: process.pid, slot: 0, generation: this.generation, state: this.stopping ? 'draining' : 'ready', connections: this.serving.connections,
      }],
    };
  }

  /**
   * Hands over to a successor. Requests during a handover make exactly one
   * more reload, which the successor runs once it serves (no signals: it may
   * not handle any).
   */
  reload(): Promise<void> {
    if (this.stopping && !this.heir) return Promise.reject(new Error('stopping; no reload'));
    return this.reloader.request();
  }

  /** After the handover: the successor serves, so it runs the reload; resolves with its outcome. */
  private passOnReload(heir: WorkerProcess): Promise<void> {
    if (!heir.alive) return Promise.reject(new Error(`the successor (pid ${heir.pid}) has exited; no reload`));
    const id = this.nextId++;
    return new Promise<void>((resolve, reject) => {
      this.pendingResults.set(id, { resolve, reject });
      heir.send({ type: 'reload', id });
      void heir.exited.then(() => reject(new Error(`the successor (pid ${heir.pid}) exited before its reload finished`)));
    });
  }

  private async handOver(): Promise<void> {
    const number = this.generation + 1;
    notify('RELOADING=1', `MONOTONIC_USEC=${monotonicUsec()}`, `STATUS=reloading: starting generation ${number}`);
    this.log.info(`reload: starting generation ${number} (successor process)`);
    this.events.emit('reload', { generation: number });
    const started = process.hrtime.bigint();
    const next = new Generation(number, [0], (_slot, generation) => this.spawnSuccessor(generation));
    const successor = next.children[0] as WorkerProcess;
    try {
      await next.ready();
      if (this.stopping) {
        await next.abandon();
        throw new Error('stop requested during the reload');
      }
    } catch (error) {
      this.successor = undefined;
      const message = `reload to generation ${number} failed, generation ${this.generation} keeps serving: ${(error as Error).message}`;
      notify('READY=1', `STATUS=generation ${this.generation} serving`);
      this.log.error(message);
      this.events.emit('reload-failed', { generation: number, error: new Error(message) });
      throw new Error(message);
    }
    // The successor serves: tell the world its pid, then step aside.
    if (this.options.pidFile) writePidFile(this.options.pidFile, successor.pid);
    notify(`MAINPID=${successor.pid}`, 'READY=1', `STATUS=generation ${number} serving`);
    const durationMs = Number(process.hrtime.bigint() - started) / 1e6;
    this.log.info(`reload: generation ${number} (pid ${successor.pid}) ready in ${durationMs.toFixed(0)} ms; draining`);
    this.events.emit('reloaded', { generation: number, durationMs, pid: successor.pid });
    this.successor = undefined; // no longer ours to kill: it serves now
    this.heir = successor;
    this.retire(false);
  }

  private spawnSuccessor(generation: number): WorkerProcess {
    const token = randomBytes(32).toString('hex');
    const child = spawnSelf({
      [SUCCESSOR.socket]: this.control!.path,
      [SUCCESSOR.token]: token,
      [SUCCESSOR.generation]: String(generation),
    });
    const successor = new WorkerProcess(child, 0, generation, this.options.startTimeout, this.options.stopTimeout);
    this.successor = successor;
    this.control!.expect(successor.pid, token);
    return successor;
  }

  /** Graceful stop; the process exits when drained. */
  stop(): Promise<void> {
    // Already draining after a handover: the drain goes on as it is.
    if (!this.stopping) {
      this.stopping = true;
      notify('STOPPING=1');
      const delay = this.options.stopDelay;
      if (delay > 0) {
        this.log.info(`stopping: still accepting for stopDelay (${delay} ms)`);
        this.serving.closeEachResponse();
      }
      setTimeout(() => this.retire(true), delay);
    }
    return new Promise(() => {}); // the process exits when drained
  }

  /**
   * Drains this process's servers and exits; `final` also removes socket
   * files and the pidFile. The original sockets close first: our servers hold
   * the only other copies, so once they stop accepting a new connection is
   * refused at once, never left waiting in a queue nobody serves.
   */
  private retire(final: boolean): void {
    this.stopping = true;
    this.ticketKeyRing?.stop();
    this.successor?.abandon(); // a successor still starting: the stop wins
    this.listeners.closeAll(final);
    this.log.info(`draining: ${this.serving.connections} open connection(s), up to ${this.options.stopTimeout} ms`);
    // A reload passed on to the successor is answered through us: stay for it.
    const drained = Promise.all([this.serving.drain(), this.reloader.idle()]);
    this.events.emit('drain');
    const exit = () => {
      this.control?.close();
      if (final && this.options.pidFile) {
        adoptPidFile(this.options.pidFile); // a successor's was written by its predecessor: ours once it names us
        removePidFile(this.options.pidFile);
      }
      if (final) {
        this.log.info('stopped');
        this.events.emit('stop');
      }
      this.stopped();
      setImmediate(() => process.exit(0));
    };
    const deadline = setTimeout(() => {
      this.log.warn(`stopTimeout (${this.options.stopTimeout} ms): closing ${this.serving.connections} connection(s) still open`);
      exit();
    }, this.options.stopTimeout);
    void drained.then(() => {
      clearTimeout(deadline);
      exit();
    });
  }
}
