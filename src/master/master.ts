// The master: binds every address, runs the worker lifecycle (lifecycle.ts)
// with real processes, answers the control socket, and stops (the stop
// sequence is the lifecycle's; this file adds the process manager's side:
// sd_notify, the pidFile, the control socket). It keeps a stable pid for the
// process manager and owns the listening sockets for its whole life; workers
// only get copies.
import { randomBytes } from 'node:crypto';
import type { EventEmitter } from 'node:events';
import type * as net from 'node:net';
import { performance } from 'node:perf_hooks';
import { type Logger, createLogger } from '../log';
import type { ResolvedOptions } from '../options';
import { serveLogs } from './log-ring';
import { FdStore, fdStoreWanted } from '../platform/fdstore';
import { removePidFile, writePidFile } from '../platform/pidfile';
import { monotonicUsec, notify, takeActivatedSockets } from '../platform/systemd';
import { ENV, type Hello, MAX_FRAME_BYTES, type MasterStatus, type Message, encode } from '../protocol';
import { handleSignals } from '../signals';
import { TicketKeyRing } from '../ticket-keys';
import { ControlServer } from './control-server';
import { Lifecycle } from './lifecycle';
import { ListenerSet } from './listeners';
import { MasterMemory } from './memory';
import { ReloadConnections, describeTally } from './moves';
import { AppMetrics } from './app-metrics';
import { Metrics, MetricsServer } from './metrics';
import { GenerationVersions } from './version';
import { spawnSelf } from './spawn-self';
import { execUpgrade, probe, reapInherited, takeUpgradeState } from './upgrade';
import { rescueSlot } from './slot-rescue';
import { stopSockets } from './stop-sockets';
import { WorkerProcess } from './worker-process';

const REPORTED = Symbol('handover.reported');

/** True for an error the master has already logged, so callers do not log it twice. */
export function reported(error: unknown): boolean {
  return typeof error === 'object' && error !== null && REPORTED in error;
}

export class Master {
  private readonly log: Logger;
  private readonly listeners: ListenerSet;
  private readonly lifecycle: Lifecycle;
  /** Every live worker by pid (the lifecycle's children, as processes). */
  private readonly workers = new Map<number, WorkerProcess>();
  private readonly startedAt = performance.now();
  private readonly memory = new MasterMemory();
  private readonly moves = new ReloadConnections();
  /** The TLS session-ticket keys of every worker (src/ticket-keys.ts). */
  private readonly ticketKeys = new TicketKeyRing();
  private control?: ControlServer;
  /** Binding, the control socket and the signal handlers: what a stop during start-up waits for. */
  private opened?: Promise<void>;
  private stopping?: Promise<void>;
  private stopRequested?: () => void;
  private removeSignalHandlers?: () => void;
  private reloadStartedAt?: number;
  private lastReload?: MasterStatus['lastReload'];
  /** In-place upgrades of this pid so far (carried across each exec). */
  private upgrades = 0;
  private upgrading = false;
  /** The previous image's workers (an upgrade), serving until this image's generation is ready; reaped as they exit. */
  private readonly inherited = new Set<number>();
  private markStarted?: () => void;
  /** Resolves once generation 1 serves: an upgrade waits for it. */
  private readonly started = new Promise<void>((resolve) => (this.markStarted = resolve));
  /** Invariant 20: the version each generation runs, and slots whose respawn was refused for other code. */
  private readonly versions = new GenerationVersions();
  private readonly held = new Map<number, string>();
  private readonly metrics: Metrics;
  private readonly appMetrics = new AppMetrics();
  private metricsServer?: MetricsServer;

  constructor(
    private readonly options: ResolvedOptions,
    private readonly addresses: string[],
    private readonly events: EventEmitter,
  ) {
    this.log = createLogger(options.logger, 'master');
    this.metrics = new Metrics({
      generation: () => this.lifecycle.generation,
      workers: () => this.lifecycle.all.map((c) => c as WorkerProcess),
      restarts: () => Array.from({ length: this.lifecycle.slotCount }, (_, s) => this.lifecycle.slotState(s).restarts).reduce((a, b) => a + b, 0),
      ready: () => this.lifecycle.generation > 0 && !this.stopping,
      appMetrics: () => this.appMetrics.collect(
        [...this.workers.values()].filter((w) => w.state !== 'starting' && w.conn).map((w) => w.pid),
        (pid) => this.workers.get(pid)?.send({ type: 'metrics' }),
      ),
    });
    this.listeners = new ListenerSet({
      slots: options.workers,
      backlog: options.backlog,
      shared: options.shared,
      unixMode: options.unixSocketMode,
      store: fdStoreWanted(options.fdStore) ? new FdStore((message) => this.log.warn(message)) : undefined,
      // handover start --user: the program asks for its addresses, so each one is judged (privilege.ts)
      bindFor: options.identity && options.dynamicAddresses ? { identity: options.identity, allowListen: options.allowListen } : undefined,
    });
    this.lifecycle = new Lifecycle({
      slots: options.workers,
      heartbeatTimeout: options.heartbeatTimeout,
      spawn: (slot, generation) => this.spawnWorker(slot, generation),
      log: this.log,
      events: {
        reload: ({ generation }) => {
          this.reloadStartedAt = performance.now();
          this.moves.begin();
          notify('RELOADING=1', `MONOTONIC_USEC=${monotonicUsec()}`, `STATUS=reloading: starting generation ${generation}`);
          this.events.emit('reload', { generation });
        },
        reloaded: (e) => {
          this.retireInherited();
          this.lastReload = { generation: e.generation, startedAt: Math.round(Date.now() - e.durationMs), durationMs: e.durationMs, ok: true };
          this.metrics.reloaded(true, e.durationMs);
          notify('READY=1', this.statusLine());
          // Said once the drained workers have reported their first moves.
          for (const w of this.workers.values()) if (w.handingOff && w.state === 'draining') this.moves.expect(w.pid);
          void this.moves.firstReports().then(() => {
            const connections = this.moves.summary;
            this.log.info(`reload: generation ${e.generation}: connections ${describeTally(connections)}`);
            this.events.emit('reloaded', { ...e, connections });
          });
        },
        reloadFailed: (e) => {
          const startedAt = this.reloadStartedAt ?? performance.now();
          const durationMs = Math.round(performance.now() - startedAt);
          this.lastReload = { generation: e.generation, startedAt: Date.now() - durationMs, durationMs, ok: false, error: e.error.message };
          this.metrics.reloaded(false, durationMs);
          notify('READY=1', this.statusLine());
          this.events.emit('reload-failed', e);
        },
        exit: (child) => this.onWorkerExit(child as WorkerProcess),
        recycled: (e) => {
          this.metrics.recycled(e.reason);
          this.events.emit('recycled', e);
        },
        rolledBack: (e) => {
          notify('READY=1', this.statusLine());
          this.events.emit('rolled-back', e);
        },
        scaled: (e) => {
          notify(this.statusLine());
          this.events.emit('scaled', e);
        },
      },
      addSlot: () => this.listeners.addSlot(),
      rescue: (slot, by) => rescueSlot(this.listeners, slot, by as WorkerProcess, this.log),
      sockets: stopSockets(this.listeners, this.log),
      stopDelay: options.stopDelay,
      stopTimeout: options.stopTimeout,
      rollout: options.rollout,
      canary: {
        slots: options.canarySlots,
        window: options.canaryWindow,
        maxErrorRate: options.canaryMaxErrorRate,
        maxLatencyRatio: options.canaryMaxLatencyRatio,
      },
      keepPrevious: options.keepPrevious,
      maxDraining: options.maxDraining,
      recycle: options.maxMemory ?? options.maxRequests ?? options.maxLifetime
        ? { maxMemory: options.maxMemory, maxRequests: options.maxRequests, maxLifetime: options.maxLifetime }
        : undefined,
    });
  }

  /** The bound addresses, with real ports ('127.0.0.1:41234'). */
  get bound(): string[] {
    return this.listeners.all.map((l) => l.bound);
  }

  /** Binds, starts generation 1, then serves until stopped. Rejects if it cannot start. */
  async run(): Promise<void> {
    const stopped = new Promise<void>((resolve) => (this.stopRequested = resolve));
    this.opened = this.open();
    try {
      await this.opened;
      if (!this.stopping) {
        const workers = this.options.workers;
        const listening = this.bound.length > 0 ? `listening on ${this.bound.join(', ')}; ` : '';
        this.log.info(`${listening}starting generation 1 (${workers} worker${workers > 1 ? 's' : ''})`);
        await this.lifecycle.start();
      }
    } catch (error) {
      if (this.stopping) return this.stopping; // a stop during start-up: a clean stop
      if (this.inherited.size > 0) return this.serveWithPreviousWorkers(error, stopped);
      const message = error instanceof Error ? error.message : String(error);
      this.log.error(message);
      await this.shutdown(true);
      if (typeof error === 'object' && error !== null) Object.assign(error, { [REPORTED]: true });
      throw error;
    }
    if (this.stopping) return this.stopping;
    this.announceReady();
    await stopped;
  }

  /** Generation 1 serves (after start-up, or after an upgraded image's failed start, at the reload that fixed it). */
  private announceReady(): void {
    notify('READY=1', this.statusLine());
    this.markStarted?.();
    this.retireInherited();
    this.log.info(`ready: generation 1 serving on ${this.bound.join(', ')}`);
    this.events.emit('ready', { generation: 1, addresses: this.bound });
  }

  /** Binds every address, opens the control socket, writes the pidFile, installs the signal handlers. */
  private async open(): Promise<void> {
    if (this.addresses.length === 0 && !this.options.dynamicAddresses) {
      throw new Error('nothing to serve: register at least one address before run()');
    }
    this.listeners.adopt(takeActivatedSockets());
    this.adoptPreviousImage();
    for (const address of this.addresses) this.listeners.ensure(address);
    for (const socket of this.listeners.unclaimed) {
      this.log.warn(`systemd passed ${socket}, which no registered address matches; it is not served`);
    }
    this.control = await ControlServer.open(this.options, this.log, {
      hello: (pid, hello, conn) => this.onHello(pid, hello, conn),
      message: (pid, message) => {
        const worker = this.workers.get(pid);
        if (worker) this.onWorkerMessage(worker, message);
      },
      admin: (message, reply, conn) => this.onAdminMessage(message, reply, conn),
    });
    if (this.options.metrics) {
      this.metricsServer = await MetricsServer.open(this.options.metrics, this.metrics);
      this.log.info(`metrics on http://${this.metricsServer.bound}/metrics (and /healthz, /readyz)`);
    }
    if (this.options.pidFile) writePidFile(this.options.pidFile);
    this.ticketKeys.start(this.options.ticketKeyRotation, (keys) => {
      this.log.info('rotated the TLS session-ticket keys; tickets under the previous key still resume');
      for (const w of this.workers.values()) w.send({ type: 'ticket-keys', keys });
    });
    this.removeSignalHandlers = handleSignals({
      reloadSignals: this.options.reloadSignals,
      stopSignals: this.options.stopSignals,
      log: this.log,
      stopping: () => this.stopping !== undefined,
      reload: () => void this.reload().catch(() => {}), // reported by the lifecycle
      upgradeSignals: this.options.upgradeSignals,
      upgrade: () => void this.upgrade().catch(() => {}), // logged by upgrade()
      stop: () => void this.stop(),
      force: () => this.force(),
      // From the last count asked for: a burst of SIGTTIN queues like reload requests.
      scale: (delta) => void this.scale(Math.max(1, this.lifecycle.target + delta)).catch((error: Error) => this.log.error(error.message)),
    });
  }

  /**
   * Starts a reload, or joins the one queued behind the reload (or start-up)
   * in progress: any number of requests during one make exactly one more.
   */
  reload(): Promise<void> {
    if (this.stopping) return Promise.reject(new Error('the master is stopping; no reload'));
    if (this.lifecycle.generation > 0) return this.lifecycle.reload();
    // an upgraded image whose first generation failed: this reload is its start
    return this.lifecycle.reload().then(() => this.announceReady());
  }

  /**
   * Execs a fresh image of this master (the program on disk, under `node`) in
   * the same pid, keeping the listening sockets (see upgrade.ts). Rejects,
   * changing nothing, if the new image cannot start; otherwise never
   * settles: this image is gone. `beforeExec` runs last (an admin's answer).
   */
  async upgrade(node = process.execPath, beforeExec?: () => Promise<void>): Promise<void> {
    if (this.stopping) throw new Error('the master is stopping; no upgrade');
    if (this.upgrading) throw new Error('an upgrade is in progress already');
    this.upgrading = true;
    try {
      // the exec would end a start or a reload half done: let it finish first
      await this.started;
      while (this.lifecycle.reloading) await new Promise((resolve) => setTimeout(resolve, 50));
      notify('RELOADING=1', `MONOTONIC_USEC=${monotonicUsec()}`, 'STATUS=upgrading: checking the new master image');
      this.log.info(`upgrade: starting the new image in probe mode (${node})`);
      const probed = await probe(node, this.options.startTimeout);
      if (this.stopping) throw new Error('the master began to stop during the upgrade');
      this.log.info(`upgrade: the new image loads (Node ${probed.node}, ${probed.addresses.length} address(es)); exec'ing it in pid ${process.pid}`);
      await beforeExec?.();
      await this.tellWorkersUpgrading();
      execUpgrade(node, {
        listeners: this.listeners.all.map((l) => ({ key: l.key, fds: l.fds, createdInode: l.createdInode, shared: l.shared })),
        workers: [...this.workers.keys(), ...this.inherited],
        upgrades: this.upgrades + 1,
      });
    } catch (error) {
      this.upgrading = false;
      const message = error instanceof Error ? error.message : String(error);
      this.log.error(`upgrade failed; generation ${this.lifecycle.generation} keeps serving on pid ${process.pid}: ${message}`);
      notify('READY=1', this.statusLine());
      this.events.emit('upgrade-failed', { error: error instanceof Error ? error : new Error(message) });
      throw error;
    }
  }

  /** The workers, told before the exec, keep serving through it (until retireInherited()); stops waiting after a second. */
  private tellWorkersUpgrading(): Promise<void> {
    return Promise.all([...this.workers.values()].map((w) => new Promise<void>((resolve) => {
      if (!w.conn || w.conn.destroyed) return resolve();
      setTimeout(resolve, 1_000).unref();
      w.conn.write(encode({ type: 'upgrading' }), () => resolve());
    }))).then(() => undefined);
  }

  /** After an upgrade's exec: the previous image's sockets, and its workers, which serve until this image's are ready. */
  private adoptPreviousImage(): void {
    const state = takeUpgradeState();
    if (!state) return;
    this.upgrades = state.upgrades;
    for (const l of state.listeners) this.listeners.inherit(l.key, new Map(l.fds.map((fd, slot) => [slot, fd])), l.createdInode, l.shared);
    this.log.info(`upgraded in place (upgrade ${state.upgrades}, Node ${process.version}): adopted ${state.listeners.length} address(es); ` +
      `${state.workers.length} worker(s) of the previous image serve until this image's generation is ready`);
    for (const pid of state.workers) this.inherited.add(pid);
    reapInherited(state.workers, (pid) => {
      this.inherited.delete(pid);
      this.log.info(`worker ${pid} of the previous image exited`);
    });
  }

  /** This image's workers serve: the previous image's drain (a stop signal, as their own master's drain would). */
  private retireInherited(): void {
    for (const pid of this.inherited) {
      try {
        process.kill(pid, this.options.stopSignals[0] ?? 'SIGTERM');
      } catch {
        // exited already; the reaper has it
      }
    }
  }

  /**
   * The upgraded image's first generation did not start (the program on
   * disk fails in workers): the previous image's workers keep serving, and
   * the next successful reload replaces them. Exiting would end the service.
   */
  private async serveWithPreviousWorkers(error: unknown, stopped: Promise<void>): Promise<void> {
    const message = error instanceof Error ? error.message : String(error);
    this.lastReload = { generation: 1, startedAt: this.startedAt, durationMs: Date.now() - this.startedAt, ok: false, error: message };
    this.log.error(`upgrade: this image's generation 1 did not start (${message}); the previous image's ` +
      `${this.inherited.size} worker(s) keep serving on pid ${process.pid}: fix the program, then reload or upgrade again`);
    notify('READY=1', this.statusLine());
    this.markStarted?.();
    this.events.emit('upgrade-failed', { error: error instanceof Error ? error : new Error(message) });
    await stopped;
  }

  /** Sets the number of workers (see Lifecycle.scale); resolves once the new ones serve. */
  scale(workers: number): Promise<void> {
    if (this.stopping) return Promise.reject(new Error('the master is stopping; no scaling'));
    return this.lifecycle.scale(workers);
  }

  /** Puts the generation kept by keepPrevious back and drains the current one; no process starts. */
  rollback(): Promise<void> {
    if (this.stopping) return Promise.reject(new Error('the master is stopping; no rollback'));
    return this.lifecycle.rollback();
  }

  /**
   * Graceful stop; resolves once it is done. Idempotent: a second call (the
   * application's own SIGTERM handler next to ours) is the same stop. Only a
   * stop *signal* after the duplicate window forces it (signals.ts).
   */
  stop(): Promise<void> {
    this.stopping ??= this.shutdown(false).then(() => this.stopRequested?.());
    return this.stopping;
  }

  private force(): void {
    this.log.warn('forced stop: killing workers now');
    this.lifecycle.kill();
  }

  status(): MasterStatus {
    return {
      pid: process.pid,
      generation: this.lifecycle.generation,
      uptimeMs: Math.round(performance.now() - this.startedAt),
      reloading: this.lifecycle.reloading,
      addresses: this.bound,
      controlSocket: this.control?.path,
      lastReload: this.lastReload && { ...this.lastReload, ...(this.lastReload.ok ? { connections: this.moves.summary } : {}) },
      upgrades: this.upgrades,
      memory: { collections: this.memory.collections, collectCpuMs: Math.round(this.memory.collectCpuMs) },
      workers: this.lifecycle.all.map((c) => {
        const w = c as WorkerProcess;
        return { pid: w.pid, slot: w.slot, generation: w.generation, state: w.state, startedAt: Math.round(performance.timeOrigin + w.startedAt), version: w.version };
      }),
      slots: Array.from({ length: this.lifecycle.slotCount }, (_, slot) => ({ slot, ...this.lifecycle.slotState(slot), held: this.held.get(slot) })),
      versions: this.versions.of([this.lifecycle.generation, ...this.lifecycle.all.map((w) => w.generation)]),
    };
  }

  /** status() plus each worker's open connections, asked over the control socket. */
  private async statusWithConnections(): Promise<MasterStatus> {
    const status = this.status();
    const counts = await Promise.all(status.workers.map((w) => this.workers.get(w.pid)?.countConnections(1_000)));
    status.workers.forEach((w, i) => {
      const worker = this.workers.get(w.pid);
      Object.assign(w, { connections: counts[i], requests: worker?.requests, loopDelayMs: worker?.loopDelayMs });
    });
    return status;
  }

  private statusLine(): string {
    const workers = this.lifecycle.workers;
    const serving = Array.from({ length: workers }, (_, s) => this.lifecycle.slotState(s)).filter((s) => s.state === 'ready');
    return `STATUS=generation ${this.lifecycle.generation}, ${serving.length}/${workers} workers serving`;
  }

  /** Stops (Lifecycle.stop); `force` (a failed start) kills instead of draining. */
  private async shutdown(force: boolean): Promise<void> {
    if (force) this.removeSignalHandlers?.();
    else notify('STOPPING=1');
    await this.opened?.catch(() => {}); // a stop during start-up closes what start-up opened
    this.retireInherited();
    await this.lifecycle.stop(force);
    this.removeSignalHandlers?.(); // stopped: a later signal is the process's own business
    this.memory.close();
    this.metricsServer?.close();
    this.ticketKeys.stop();
    if (this.options.pidFile) removePidFile(this.options.pidFile);
    this.control?.close(); // last: ends every admin connection, a `handover stop` waiting on one included
    if (!force) {
      this.log.info('stopped');
      this.events.emit('stop');
    }
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
    const worker = new WorkerProcess(child, slot, generation, this.options.startTimeout, this.options.stopTimeout);
    if (worker.pid > 0) {
      this.workers.set(worker.pid, worker);
      this.control!.expect(worker.pid, token);
    }
    return worker;
  }

  private onWorkerExit(worker: WorkerProcess): void {
    this.workers.delete(worker.pid);
    this.control?.forget(worker.pid);
    this.moves.gone(worker.pid);
    this.metrics.exited(worker.pid);
    this.appMetrics.exited(worker.pid);
    this.versions.prune(this.lifecycle.all.map((w) => w.generation), this.lifecycle.generation);
    const { code, signal } = worker.exit!;
    this.events.emit('worker-exit', { pid: worker.pid, slot: worker.slot, generation: worker.generation, code, signal });
    this.releaseUnusedListeners();
    if (!this.stopping) this.memory.collectSoon();
  }

  /** Closes listeners that no live worker registered any more (a reload dropped them). */
  private releaseUnusedListeners(): void {
    const live = [...this.workers.values()];
    if (this.stopping || live.length === 0 || live.some((w) => w.addresses === undefined)) return;
    const inUse = new Set(live.flatMap((w) => w.addresses!));
    for (const bound of this.listeners.release(inUse)) this.log.info(`closed ${bound}: no generation serves it any more`);
  }

  private onHello(pid: number, hello: Hello, conn: net.Socket): void {
    const worker = this.workers.get(pid);
    if (!worker) return void conn.destroy();
    worker.conn = conn;
    worker.addresses = hello.addresses;
    worker.version = hello.version;
    const serving = (slot: number) => this.lifecycle.slotState(slot).state === 'ready';
    const coverable = Array.from({ length: this.lifecycle.workers }, (_, s) => s).some((s) => s !== worker.slot && serving(s));
    const wrongCode = hello.version === undefined ? undefined : this.versions.check(worker.generation, worker.slot, hello.version, coverable);
    if (wrongCode) {
      if (this.held.get(worker.slot) !== wrongCode.message) this.log.error(`${worker.describe()}: ${wrongCode.message}`);
      this.held.set(worker.slot, wrongCode.message);
    }
    if (wrongCode?.refuse) {
      worker.failure = wrongCode.message;
      conn.write(encode({ type: 'refused', message: wrongCode.message }));
      return;
    }
    this.log.info(`${worker.describe()} runs version ${hello.version ?? 'unknown'}`);
    // A master started as root binds for unprivileged workers only what its
    // own program registered: a worker must not get a privileged port or an
    // arbitrary Unix path just by asking.
    const restricted = this.options.identity !== undefined && !this.options.dynamicAddresses;
    const unregistered = restricted ? hello.addresses.filter((a) => !this.addresses.includes(a)) : [];
    if (unregistered.length > 0) {
      worker.failure = `${worker.describe()} asked for ${unregistered.join(', ')}, which the master's program did not register; ` +
        'with `user` set the master binds only its own registrations (register the address in the code the master runs too)';
      this.log.error(worker.failure);
      conn.write(encode({ type: 'refused', message: worker.failure }));
      return;
    }
    void this.listeners.sendTo(conn, hello.addresses, this.ticketKeys.wire).then((failure) => (worker.failure = failure));
  }

  private onWorkerMessage(worker: WorkerProcess, message: Message): void {
    worker.sawLife();
    switch (message.type) {
      case 'ready':
        worker.handoff = message.handoff;
        if (this.versions.matches(worker.generation, worker.version)) this.held.delete(worker.slot);
        worker.becameReady();
        break;
      case 'pong':
        if (message.requests !== undefined) worker.requests = message.requests;
        if (message.rss !== undefined) worker.rss = message.rss;
        if (message.loopDelayMs !== undefined) worker.loopDelayMs = message.loopDelayMs;
        worker.sample = message;
        this.metrics.sampled(worker.pid, message);
        break;
      case 'failed':
        worker.failure = message.message;
        break;
      case 'app-metrics':
        this.appMetrics.received(worker.pid, message.metrics, message.error);
        break;
      case 'connections':
        worker.countWaiters.shift()?.(message.count);
        break;
      case 'moves':
        this.moves.report(worker.pid, message.tally);
        break;
      case 'stopped-accepting':
        worker.saidStoppedAccepting();
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
        void this.statusWithConnections().then((status) => reply({ type: 'status-result', status: fitFrame(status) }));
        break;
      case 'reload':
        this.reload().then(
          () => reply({ type: 'reload-result', id: message.id, ok: true }),
          (error: Error) => reply({ type: 'reload-result', id: message.id, ok: false, message: error.message }),
        );
        break;
      case 'rollback':
        this.rollback().then(
          () => reply({ type: 'reload-result', id: message.id, ok: true }),
          (error: Error) => reply({ type: 'reload-result', id: message.id, ok: false, message: error.message }),
        );
        break;
      case 'scale':
        this.scale(message.workers).then(
          () => reply({ type: 'scale-result', id: message.id, ok: true }),
          (error: Error) => reply({ type: 'scale-result', id: message.id, ok: false, message: error.message }),
        );
        break;
      case 'upgrade':
        this.upgrade(message.node, () => new Promise<void>((resolve) => {
          if (socket.destroyed) return resolve();
          socket.write(encode({ type: 'upgrade-result', id: message.id, ok: true }), () => resolve());
        })).catch((error: Error) => reply({ type: 'upgrade-result', id: message.id, ok: false, message: error.message }));
        break;
      case 'stop':
        void this.stop().then(() => socket.end());
        break;
      case 'logs':
        serveLogs(message, socket);
        break;
      default:
        this.log.warn(`control: unexpected ${message.type} frame from a non-worker; connection closed`);
        socket.destroy();
    }
  }
}

/**
 * A status reply always fits one frame: past MAX_FRAME_BYTES the worker and
 * slot lists are cut (from the end) and `omitted` says by how many.
 */
export function fitFrame(status: MasterStatus): MasterStatus {
  const size = (s: MasterStatus) => Buffer.byteLength(JSON.stringify({ type: 'status-result', status: s }));
  const workers = status.workers;
  const slots = status.slots ?? [];
  let fitted = status;
  for (let keep = 1; size(fitted) > MAX_FRAME_BYTES; keep *= 0.9) {
    const w = Math.floor(workers.length * keep);
    const s = Math.floor(slots.length * keep);
    fitted = { ...status, workers: workers.slice(0, w), slots: slots.slice(0, s), omitted: { workers: workers.length - w, slots: slots.length - s } };
  }
  return fitted;
}
