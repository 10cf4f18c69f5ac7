// The master: binds every address, spawns workers, runs reloads, respawns
// crashed workers and stops. It keeps a stable pid for the process manager and
// owns the listening sockets for its whole life; workers only get copies.
//
// Reload, top to bottom (see reload()):
//   1. spawn generation g+1, one worker per slot, each with a fresh token
//   2. each connects to the control socket, proves who it is, gets its fds
//   3. each reports `ready` (listening on every fd, `ready()` hook resolved)
//   4. only then is generation g told to drain; it exits when done or is
//      killed at stopTimeout
// A new worker that exits or misses startTimeout is killed, generation g keeps
// serving, and the reload is reported failed.
import { randomBytes } from 'node:crypto';
import { EventEmitter } from 'node:events';
import * as fs from 'node:fs';
import * as net from 'node:net';
import { ENV, type Hello, type MasterStatus, type Message } from '../protocol';
import { ControlServer } from './control-server';
import { ListenerSet } from './listeners';
import { type Logger, createLogger } from '../log';
import type { ResolvedOptions } from '../options';
import { spawnSelf } from './spawn-self';
import { WorkerProcess } from './worker-process';
import { monotonicUsec, notify, takeActivatedSockets } from '../platform/systemd';

/** Respawn backoff after a crash: 100 ms doubling to 10 s; reset after 30 s of life. */
const RESPAWN_BASE_MS = 100;
const RESPAWN_MAX_MS = 10_000;
const RESPAWN_RESET_MS = 30_000;

const REPORTED = Symbol('handover.reported');

/** True for an error the master has already logged, so callers do not log it twice. */
export function reported(error: unknown): boolean {
  return typeof error === 'object' && error !== null && REPORTED in error;
}

export class Master {
  private readonly log: Logger;
  private readonly listeners: ListenerSet;
  private readonly workers = new Map<number, WorkerProcess>();
  /** The serving worker of each slot (current generation, or a respawn of it). */
  private readonly slots: (WorkerProcess | undefined)[];
  private readonly crashes: number[];
  private readonly respawnTimers = new Set<NodeJS.Timeout>();
  private generation = 0;
  private readonly startedAt = Date.now();
  private control?: ControlServer;
  private reloading?: Promise<void>;
  private queuedReload?: Promise<void>;
  private stopping?: Promise<void>;
  private stopRequested?: () => void;
  private forced = false;
  private readonly signalHandlers: [NodeJS.Signals, () => void][] = [];

  constructor(
    private readonly options: ResolvedOptions,
    private readonly addresses: string[],
    private readonly events: EventEmitter,
  ) {
    this.log = createLogger(options.logger, 'master');
    this.listeners = new ListenerSet({
      slots: options.workers,
      backlog: options.backlog,
      shared: options.shared,
      unixMode: options.unixSocketMode,
    });
    this.slots = new Array(options.workers).fill(undefined);
    this.crashes = new Array(options.workers).fill(0);
  }

  /** The bound addresses, with real ports ('127.0.0.1:41234'). */
  get bound(): string[] {
    return this.listeners.all.map((l) => l.bound);
  }

  /** Binds, starts generation 1, then serves until stopped. Rejects if it cannot start. */
  async run(): Promise<void> {
    const stopped = new Promise<void>((resolve) => (this.stopRequested = resolve));
    try {
      if (this.addresses.length === 0) throw new Error('nothing to serve: register at least one address before run()');
      this.listeners.adopt(takeActivatedSockets());
      for (const address of this.addresses) this.listeners.ensure(address);
      for (const socket of this.listeners.unclaimed) {
        this.log.warn(`systemd passed ${socket}, which no registered address matches; it is not served`);
      }
      this.control = await ControlServer.open(this.options.controlDir, this.options.identity, this.log, {
        hello: (pid, hello, conn) => this.onHello(pid, hello, conn),
        message: (pid, message) => {
          const worker = this.workers.get(pid);
          if (worker) this.onWorkerMessage(worker, message);
        },
        admin: (message, reply, conn) => this.onAdminMessage(message, reply, conn),
      });
      if (this.options.pidFile) fs.writeFileSync(this.options.pidFile, `${process.pid}\n`);
      this.installSignalHandlers();
      this.generation = 1;
      const first = this.spawnGeneration(1);
      this.log.info(`listening on ${this.bound.join(', ')}; starting generation 1 (${first.length} worker${first.length > 1 ? 's' : ''})`);
      await this.allReady(first);
      first.forEach((w, slot) => (this.slots[slot] = w));
    } catch (error) {
      if (this.stopping) return this.stopping; // a stop signal during start-up: a clean stop
      const message = error instanceof Error ? error.message : String(error);
      this.log.error(message);
      await this.shutdown(true);
      if (typeof error === 'object' && error !== null) Object.assign(error, { [REPORTED]: true });
      throw error;
    }
    notify('READY=1', this.statusLine());
    this.log.info(`ready: generation 1 serving on ${this.bound.join(', ')}`);
    this.events.emit('ready', { generation: 1, addresses: this.bound });
    await stopped;
  }

  /**
   * Starts a reload, or joins the one queued behind the reload in progress:
   * any number of requests during a reload make exactly one more.
   */
  reload(): Promise<void> {
    if (this.stopping) return Promise.reject(new Error('the master is stopping; no reload'));
    if (this.generation === 0) return Promise.reject(new Error('the master is not serving yet; no reload'));
    if (!this.reloading) {
      this.reloading = this.runReload().finally(() => (this.reloading = undefined));
      return this.reloading;
    }
    if (!this.queuedReload) {
      this.queuedReload = this.reloading
        .catch(() => {})
        .then(() => {
          this.queuedReload = undefined;
          return this.reload();
        });
    }
    return this.queuedReload;
  }

  private async runReload(): Promise<void> {
    const generation = ++this.generation;
    const started = process.hrtime.bigint();
    notify('RELOADING=1', `MONOTONIC_USEC=${monotonicUsec()}`, `STATUS=reloading: starting generation ${generation}`);
    this.log.info(`reload: starting generation ${generation}`);
    this.events.emit('reload', { generation });
    const next = this.spawnGeneration(generation);
    try {
      await this.allReady(next);
      if (this.stopping) throw new Error('stop requested during the reload');
    } catch (error) {
      // A sibling that is ready already accepts: it drains, so its requests finish.
      for (const w of next) w.abandon(this.options.stopTimeout);
      await Promise.all(next.filter((w) => w.state !== 'draining').map((w) => w.exited));
      if (this.stopping) {
        this.log.info(`reload to generation ${generation} cancelled: stopping`);
        throw new Error('reload cancelled: the master is stopping');
      }
      const message = `reload to generation ${generation} failed, generation ${this.servingGeneration()} keeps serving: ${
        error instanceof Error ? error.message : String(error)
      }`;
      notify('READY=1', this.statusLine());
      this.log.error(message);
      this.events.emit('reload-failed', { generation, error: new Error(message) });
      throw new Error(message);
    }
    const old = this.slots.slice();
    next.forEach((w, slot) => (this.slots[slot] = w));
    for (const w of old) w?.drain(this.options.stopTimeout);
    const durationMs = Number(process.hrtime.bigint() - started) / 1e6;
    notify('READY=1', this.statusLine());
    this.log.info(`reload: generation ${generation} ready in ${durationMs.toFixed(0)} ms; draining generation ${old[0]?.generation ?? '-'}`);
    this.events.emit('reloaded', { generation, durationMs });
  }

  /** Graceful stop; a second call forces it (kills what is left at once). */
  stop(): Promise<void> {
    if (this.stopping) {
      if (!this.forced) {
        this.log.warn('second stop request: killing workers now');
        this.forced = true;
        for (const w of this.workers.values()) w.kill('SIGKILL');
      }
      return this.stopping;
    }
    this.stopping = this.shutdown(false).then(() => this.stopRequested?.());
    return this.stopping;
  }

  status(): MasterStatus {
    return {
      pid: process.pid,
      generation: this.servingGeneration(),
      uptimeMs: Date.now() - this.startedAt,
      reloading: this.reloading !== undefined,
      addresses: this.bound,
      workers: [...this.workers.values()].map((w) => ({
        pid: w.pid, slot: w.slot, generation: w.generation, state: w.state,
      })),
    };
  }

  /** status() plus each worker's open connections, asked over the control socket. */
  private async statusWithConnections(): Promise<MasterStatus> {
    const status = this.status();
    const counts = await Promise.all(status.workers.map((w) => this.workers.get(w.pid)?.countConnections(1_000)));
    status.workers.forEach((w, i) => (w.connections = counts[i]));
    return status;
  }

  private servingGeneration(): number {
    return this.slots.find((w) => w)?.generation ?? 0;
  }

  private statusLine(): string {
    const serving = this.slots.filter((w) => w?.state === 'ready').length;
    return `STATUS=generation ${this.servingGeneration()}, ${serving}/${this.options.workers} workers serving`;
  }

  private async shutdown(force: boolean): Promise<void> {
    if (!force) {
      notify('STOPPING=1');
      this.log.info(`stopping: draining ${this.workers.size} worker(s), up to ${this.options.stopTimeout} ms`);
    }
    if (force) this.removeSignalHandlers();
    for (const timer of this.respawnTimers) clearTimeout(timer);
    this.respawnTimers.clear();
    for (const w of this.workers.values()) {
      if (force) w.kill('SIGKILL');
      else w.drain(this.options.stopTimeout);
    }
    await Promise.all([...this.workers.values()].map((w) => w.exited));
    this.control?.close();
    this.listeners.closeAll();
    if (this.options.pidFile) fs.rmSync(this.options.pidFile, { force: true });
    if (!force) {
      this.log.info('stopped');
      this.events.emit('stop');
    }
  }

  private installSignalHandlers(): void {
    const on = (signal: NodeJS.Signals, handler: () => void) => {
      process.on(signal, handler);
      this.signalHandlers.push([signal, handler]);
    };
    for (const signal of this.options.reloadSignals) {
      on(signal, () => {
        this.log.info(`${signal}: reload requested`);
        this.reload().catch(() => {}); // reported by runReload
      });
    }
    for (const signal of this.options.stopSignals) {
      on(signal, () => {
        this.log.info(`${signal}: stop requested`);
        void this.stop();
      });
    }
  }

  /**
   * Only for a forced shutdown. A graceful stop keeps every handler until
   * exit: a second stop signal forces, and a reload signal is refused
   * (reload() rejects while stopping) instead of killing the master by its
   * default action.
   */
  private removeSignalHandlers(): void {
    for (const [signal, handler] of this.signalHandlers) process.removeListener(signal, handler);
    this.signalHandlers.length = 0;
  }

  private spawnGeneration(generation: number): WorkerProcess[] {
    return Array.from({ length: this.options.workers }, (_, slot) => this.spawnWorker(slot, generation));
  }

  private spawnWorker(slot: number, generation: number): WorkerProcess {
    const token = randomBytes(32).toString('hex');
    const child = spawnSelf({
      [ENV.socket]: this.control!.path,
      [ENV.token]: token,
      [ENV.slot]: String(slot),
      [ENV.generation]: String(generation),
      [ENV.masterPid]: String(process.pid),
    }, this.options.identity);
    const worker = new WorkerProcess(child, slot, generation, this.options.startTimeout);
    if (worker.pid > 0) {
      this.workers.set(worker.pid, worker);
      this.control!.expect(worker.pid, token);
    }
    void worker.exited.then(() => this.onWorkerExit(worker));
    return worker;
  }

  private onWorkerExit(worker: WorkerProcess): void {
    this.workers.delete(worker.pid);
    this.control?.forget(worker.pid);
    const { code, signal } = worker.exit!;
    this.events.emit('worker-exit', { pid: worker.pid, slot: worker.slot, generation: worker.generation, code, signal });
    const serving = this.slots[worker.slot] === worker;
    if (serving && !this.stopping) {
      // A crash (or any exit) of a serving worker outside a drain: its slot's
      // accept queue holds new connections while a replacement starts.
      if (Date.now() - worker.startedAt > RESPAWN_RESET_MS) this.crashes[worker.slot] = 0;
      const delay = Math.min(RESPAWN_MAX_MS, RESPAWN_BASE_MS * 2 ** this.crashes[worker.slot]++);
      const how = signal ? `killed by ${signal}` : `exited with code ${code}`;
      this.log.warn(`${worker.describe()} ${how}; respawning slot ${worker.slot} in ${delay} ms`);
      const timer = setTimeout(() => {
        this.respawnTimers.delete(timer);
        if (this.slots[worker.slot] !== worker || this.stopping) return; // a reload replaced it meanwhile
        const replacement = this.spawnWorker(worker.slot, worker.generation);
        this.slots[worker.slot] = replacement;
        replacement.ready.then(
          () => this.log.info(`${replacement.describe()} replaced pid ${worker.pid}`),
          () => {}, // its own exit schedules the next respawn
        );
      }, delay);
      this.respawnTimers.add(timer);
    }
    this.releaseUnusedListeners();
  }

  /** Closes listeners that no live worker registered any more (a reload dropped them). */
  private releaseUnusedListeners(): void {
    const live = [...this.workers.values()];
    if (live.length === 0 || live.some((w) => w.addresses === undefined)) return;
    const inUse = new Set(live.flatMap((w) => w.addresses!));
    for (const bound of this.listeners.release(inUse)) this.log.info(`closed ${bound}: no generation serves it any more`);
  }

  private async allReady(workers: WorkerProcess[]): Promise<void> {
    await Promise.all(workers.map((w) => w.ready));
  }

  private onHello(pid: number, hello: Hello, conn: net.Socket): void {
    const worker = this.workers.get(pid);
    if (!worker) return void conn.destroy();
    worker.conn = conn;
    worker.addresses = hello.addresses;
    void this.listeners.sendTo(conn, hello.addresses, worker.slot).then((failure) => (worker.failure = failure));
  }

  private onWorkerMessage(worker: WorkerProcess, message: Message): void {
    switch (message.type) {
      case 'ready':
        if (worker.state === 'starting') worker.becameReady();
        break;
      case 'failed':
        worker.failure = message.message;
        break;
      case 'connections':
        worker.countWaiters.shift()?.(message.count);
        break;
      case 'reload':
        this.reload().then(
          () => worker.send({ type: 'reload-result', id: message.id, ok: true }),
          (error: Error) => worker.send({ type: 'reload-result', id: message.id, ok: false, message: error.message }),
        );
        break;
      default:
        this.log.warn(`control: ${worker.describe()} sent an unexpected ${message.type} frame; ignored`);
    }
  }

  /** Same-uid tools (the `handover` command) may ask for status, a reload or a stop. */
  private onAdminMessage(message: Message, reply: (answer: Message) => void, socket: net.Socket): void {
    switch (message.type) {
      case 'status':
        void this.statusWithConnections().then((status) => reply({ type: 'status-result', status }));
        break;
      case 'reload':
        this.reload().then(
          () => reply({ type: 'reload-result', id: message.id, ok: true }),
          (error: Error) => reply({ type: 'reload-result', id: message.id, ok: false, message: error.message }),
        );
        break;
      case 'stop':
        void this.stop().then(() => socket.end());
        break;
      default:
        this.log.warn(`control: unexpected ${message.type} frame from a non-worker; connection closed`);
        socket.destroy();
    }
  }
}
