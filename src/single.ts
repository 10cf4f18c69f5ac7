// Single-process mode: no master. This process owns the listening sockets
// (bound here, adopted from systemd, or handed over by its predecessor) and
// serves dups of them itself. A reload starts a successor copy of the program,
// hands it the sockets over SCM_RIGHTS, waits until it is ready, and only then
// drains and exits. The pid changes on each reload: `pidFile` is rewritten
// atomically and systemd is told MAINPID=.
import { randomBytes } from 'node:crypto';
import type { EventEmitter } from 'node:events';
import * as fs from 'node:fs';
import type { MasterStatus, Message } from './protocol';
import { ControlClient } from './worker/control-client';
import { ControlServer } from './master/control-server';
import { ListenerSet } from './master/listeners';
import { type Logger, createLogger } from './log';
import * as native from './platform/native';
import type { ResolvedOptions } from './options';
import { type Registration, Serving } from './worker/serving';
import { spawnSelf } from './master/spawn-self';
import { monotonicUsec, notify, takeActivatedSockets } from './platform/systemd';
import { WorkerProcess } from './master/worker-process';

const SUCCESSOR = {
  socket: 'HANDOVER_SUCCESSOR_SOCKET',
  token: 'HANDOVER_SUCCESSOR_TOKEN',
  generation: 'HANDOVER_SUCCESSOR_GENERATION',
} as const;

/** How long a successor waits for its predecessor's answer to its hello. */
const HANDSHAKE_TIMEOUT_MS = 10_000;

function writeAtomically(file: string, content: string): void {
  const temp = `${file}.${process.pid}.tmp`;
  fs.writeFileSync(temp, content);
  fs.renameSync(temp, file);
}

export class SingleProcess {
  private readonly log: Logger;
  private readonly listeners: ListenerSet;
  private readonly serving: Serving;
  private readonly startedAt = Date.now();
  private generation = Number(process.env[SUCCESSOR.generation] ?? 1);
  private control?: ControlServer;
  private successor?: WorkerProcess;
  private reloading?: Promise<void>;
  private reloadAgain = false;
  /** Draining: after a handover, or for a stop. */
  private stopping = false;
  private stopRequested = false;
  private stopped!: () => void;

  constructor(
    private readonly options: ResolvedOptions,
    private readonly registrations: Registration[],
    private readonly events: EventEmitter,
  ) {
    this.log = createLogger(options.logger, 'single');
    this.listeners = new ListenerSet({ slots: 1, backlog: options.backlog, shared: options.shared, unixMode: options.unixSocketMode });
    this.serving = new Serving(registrations);
  }

  get bound(): string[] {
    return this.serving.bound;
  }

  async run(): Promise<void> {
    const done = new Promise<void>((resolve) => (this.stopped = resolve));
    const predecessor = process.env[SUCCESSOR.socket] ? await this.takeOver() : undefined;
    const addresses = this.registrations.map((r) => r.address);
    try {
      if (!predecessor) this.listeners.adopt(takeActivatedSockets());
      const listeners = addresses.map((a) => this.listeners.ensure(a));
      this.control = await this.openControl();
      await this.options.ready?.();
      // The servers own dups; this process keeps the originals to hand over.
      await this.serving.listen(
        listeners.map((l) => ({ address: l.key, bound: l.bound, backlog: this.options.backlog })),
        addresses.map((a) => native.dup(this.listeners.fdFor(a, 0))),
      );
    } catch (error) {
      predecessor?.send({ type: 'failed', message: error instanceof Error ? error.message : String(error) });
      this.control?.close();
      this.listeners.closeAll(!predecessor);
      throw error;
    }
    this.installSignalHandlers();
    if (predecessor) {
      // It now drains and exits; its EOF is expected. If it is stopping
      // meanwhile, it asks us to stop too.
      predecessor.on('message', (message: Message) => message.type === 'drain' && void this.stop());
      predecessor.send({ type: 'ready' });
    } else {
      if (this.options.pidFile) writeAtomically(this.options.pidFile, `${process.pid}\n`);
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
    const { client, listeners, fds } = await ControlClient.connect(socketPath, {
      type: 'hello', token, pid: process.pid, slot: 0, generation: this.generation, addresses,
    }, HANDSHAKE_TIMEOUT_MS);
    this.listeners.adopt(fds.map((fd, i) => ({ fd, bound: native.localAddress(fd), name: listeners[i].address, owned: true })));
    return client;
  }

  private openControl(): Promise<ControlServer> {
    return ControlServer.open(this.options.controlDir, this.options.identity, this.log, {
      hello: (pid, hello, conn) => {
        const successor = this.successor;
        if (!successor || successor.pid !== pid) return void conn.destroy();
        successor.conn = conn;
        void this.listeners.sendTo(conn, hello.addresses, 0).then((failure) => (successor.failure = failure));
      },
      message: (pid, message) => {
        const successor = this.successor;
        if (successor?.pid !== pid) return;
        if (message.type === 'ready') successor.becameReady();
        if (message.type === 'failed') successor.failure = message.message;
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
      reloading: this.reloading !== undefined,
      addresses: this.bound,
      workers: [{
        pid: process.pid, slot: 0, generation: this.generation, state: this.stopping ? 'draining' : 'ready', connections: this.serving.connections,
      }],
    };
  }

  /** Hands over to a successor; requests during one are passed on to the successor as one more reload. */
  reload(): Promise<void> {
    if (this.stopping) return Promise.reject(new Error('stopping; no reload'));
    if (this.reloading) {
      this.reloadAgain = true;
      return this.reloading;
    }
    this.reloading = this.handOver().finally(() => (this.reloading = undefined));
    return this.reloading;
  }

  private async handOver(): Promise<void> {
    const generation = this.generation + 1;
    notify('RELOADING=1', `MONOTONIC_USEC=${monotonicUsec()}`, `STATUS=reloading: starting generation ${generation}`);
    this.log.info(`reload: starting generation ${generation} (successor process)`);
    this.events.emit('reload', { generation });
    const started = process.hrtime.bigint();
    const token = randomBytes(32).toString('hex');
    const child = spawnSelf({
      [SUCCESSOR.socket]: this.control!.path,
      [SUCCESSOR.token]: token,
      [SUCCESSOR.generation]: String(generation),
    }, this.options.identity);
    const successor = new WorkerProcess(child, 0, generation, this.options.startTimeout);
    this.successor = successor;
    this.control!.expect(successor.pid, token);
    try {
      await successor.ready;
      if (this.stopping) throw new Error('stop requested during the reload');
    } catch (error) {
      successor.abandon(this.options.stopTimeout);
      if (successor.state !== 'draining') await successor.exited;
      this.successor = undefined;
      const message = `reload to generation ${generation} failed, generation ${this.generation} keeps serving: ${(error as Error).message}`;
      notify('READY=1', `STATUS=generation ${this.generation} serving`);
      this.log.error(message);
      this.events.emit('reload-failed', { generation, error: new Error(message) });
      throw new Error(message);
    }
    // The successor serves: tell the world its pid, then step aside.
    if (this.options.pidFile) writeAtomically(this.options.pidFile, `${successor.pid}\n`);
    notify(`MAINPID=${successor.pid}`, 'READY=1', `STATUS=generation ${generation} serving`);
    const durationMs = Number(process.hrtime.bigint() - started) / 1e6;
    this.log.info(`reload: generation ${generation} (pid ${successor.pid}) ready in ${durationMs.toFixed(0)} ms; draining`);
    this.events.emit('reloaded', { generation, durationMs, pid: successor.pid });
    this.successor = undefined; // no longer ours to kill: it serves now
    if (this.reloadAgain) process.kill(successor.pid, this.options.reloadSignals[0] ?? 'SIGHUP');
    this.retire(false);
  }

  /** Graceful stop; a second call exits at once. */
  stop(): Promise<void> {
    if (this.stopRequested) {
      this.log.warn('second stop request: exiting now');
      process.exit(0);
    }
    this.stopRequested = true;
    // Already draining after a handover: the drain goes on as it is.
    if (!this.stopping) {
      notify('STOPPING=1');
      this.retire(true);
    }
    return new Promise(() => {}); // the process exits when drained
  }

  /** Drains this process's servers and exits; `final` also removes socket files and the pidFile. */
  private retire(final: boolean): void {
    this.stopping = true;
    this.successor?.abandon(this.options.stopTimeout); // a successor still starting: the stop wins
    this.log.info(`draining: ${this.serving.connections} open connection(s), up to ${this.options.stopTimeout} ms`);
    const drained = this.serving.drain();
    this.events.emit('drain');
    const exit = () => {
      this.control?.close();
      this.listeners.closeAll(final);
      if (final && this.options.pidFile) fs.rmSync(this.options.pidFile, { force: true });
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

  private installSignalHandlers(): void {
    for (const signal of this.options.reloadSignals) {
      process.on(signal, () => {
        // A process that is handing over or stopping ignores it (its pidFile
        // already names the successor); never fatal (invariant 9).
        if (this.stopping) return this.log.info(`${signal}: ignored, this process is draining`);
        this.log.info(`${signal}: reload requested`);
        this.reload().catch(() => {}); // reported by handOver
      });
    }
    for (const signal of this.options.stopSignals) {
      process.on(signal, () => {
        this.log.info(`${signal}: stop requested`);
        void this.stop();
      });
    }
  }
}
