// The worker side: connect to the master, prove who we are, receive the
// listening fds, serve them with the application's servers, report ready, and
// drain when told to (or when the master is gone, or on a stop signal).
import { EventEmitter } from 'node:events';
import * as net from 'node:net';
import * as os from 'node:os';
import { ENV, FrameDecoder, type ListenerInfo, MAX_FRAME_BYTES, type Message, encode } from './control';
import { ServerDrain } from './drain';
import { type Logger, createLogger } from './log';
import * as native from './native';
import type { ResolvedOptions } from './options';

/** How long the worker waits for the master's answer to its hello. */
const HANDSHAKE_TIMEOUT_MS = 10_000;

/** An address and how to build the server that serves it (called in workers only). */
export interface Registration {
  address: string;
  create(): net.Server;
}

/** True in a process the master spawned as a worker. */
export function isWorkerProcess(): boolean {
  return process.env[ENV.socket] !== undefined && process.env[ENV.token] !== undefined;
}

function workerEnv(): { socket: string; token: string; slot: number; generation: number; masterPid: number } {
  return {
    socket: process.env[ENV.socket]!,
    token: process.env[ENV.token]!,
    slot: Number(process.env[ENV.slot]),
    generation: Number(process.env[ENV.generation]),
    masterPid: Number(process.env[ENV.masterPid]),
  };
}

/** Writes all of `data` on a non-blocking fd that no Node handle owns yet. */
async function writeAll(fd: number, data: Buffer, deadline: number): Promise<void> {
  let offset = 0;
  while (offset < data.length) {
    try {
      offset += native.sendFds(fd, data.subarray(offset), []);
    } catch (error) {
      if (!native.isSystemError(error, 'EAGAIN') || Date.now() > deadline) throw error;
      await new Promise((resolve) => setTimeout(resolve, 5));
    }
  }
}

/** Connects to the master's control socket, retrying while its backlog is full. */
async function connect(path: string, deadline: number): Promise<number> {
  for (;;) {
    try {
      return native.connectUnix(path);
    } catch (error) {
      if (!native.isSystemError(error, 'EAGAIN') || Date.now() > deadline) throw error;
      await new Promise((resolve) => setTimeout(resolve, 5));
    }
  }
}

export class Worker {
  readonly slot: number;
  readonly generation: number;
  private readonly log: Logger;
  private readonly env = workerEnv();
  private control?: net.Socket;
  private readonly decoder = new FrameDecoder();
  private readonly drains: ServerDrain[] = [];
  private draining = false;
  private finished!: () => void;
  private readonly done = new Promise<void>((resolve) => (this.finished = resolve));
  private nextReloadId = 1;
  private readonly pendingReloads = new Map<number, { resolve: () => void; reject: (e: Error) => void }>();
  bound: string[] = [];

  constructor(
    private readonly options: ResolvedOptions,
    private readonly registrations: Registration[],
    private readonly events: EventEmitter,
  ) {
    this.slot = this.env.slot;
    this.generation = this.env.generation;
    this.log = createLogger(options.logger, 'worker');
  }

  /** Serves until drained; then the process exits. Rejects if start-up fails. */
  async run(): Promise<void> {
    this.guardAgainstOrphaning();
    this.installSignalHandlers();
    const { listeners, fds } = await this.handshake();
    try {
      await this.options.ready?.();
      await this.serve(listeners, fds);
    } catch (error) {
      fds.forEach((fd, i) => this.drains[i] === undefined && native.closeFd(fd));
      this.send({ type: 'failed', message: error instanceof Error ? error.message : String(error) });
      throw error;
    }
    this.send({ type: 'ready' });
    await this.done;
  }

  /** Asks the master for a reload; resolves when the new generation serves. */
  reload(): Promise<void> {
    if (!this.control) return Promise.reject(new Error('this worker is not connected to its master yet'));
    const id = this.nextReloadId++;
    return new Promise<void>((resolve, reject) => {
      this.pendingReloads.set(id, { resolve, reject });
      this.send({ type: 'reload', id });
    });
  }

  /** Linux: the kernel sends SIGTERM (a drain) if the master dies; a late start checks it is not already gone. */
  private guardAgainstOrphaning(): void {
    native.setParentDeathSignal(os.constants.signals.SIGTERM);
    if (process.ppid !== this.env.masterPid) {
      this.log.error(`master pid ${this.env.masterPid} is gone before this worker started; exiting`);
      process.exit(1);
    }
  }

  /** Reload signals are the master's business; stop signals drain (invariant 9). */
  private installSignalHandlers(): void {
    for (const signal of this.options.reloadSignals) process.on(signal, () => {});
    for (const signal of this.options.stopSignals) process.on(signal, () => this.drain(`${signal}`));
  }

  private async handshake(): Promise<{ listeners: ListenerInfo[]; fds: number[] }> {
    const deadline = Date.now() + HANDSHAKE_TIMEOUT_MS;
    const addresses = this.registrations.map((r) => r.address);
    const fd = await connect(this.env.socket, deadline);
    const received: number[] = [];
    try {
      await writeAll(fd, encode({
        type: 'hello', token: this.env.token, pid: process.pid, slot: this.slot, generation: this.generation, addresses,
      }), deadline);
      let answer: Message | undefined;
      while (!answer) {
        const chunk = await native.recvFds(fd, MAX_FRAME_BYTES + 4, addresses.length, Math.max(1, deadline - Date.now()));
        received.push(...chunk.fds);
        if (chunk.data.length === 0) throw new Error('the master closed the control connection during the handshake');
        answer = this.decoder.push(chunk.data)[0];
      }
      if (answer.type === 'refused') throw new Error(answer.message);
      if (answer.type !== 'listeners' || answer.listeners.length !== addresses.length || received.length !== addresses.length) {
        throw new Error(`the master answered the hello with ${answer.type} and ${received.length} fds; expected ${addresses.length}`);
      }
      this.attachControl(fd);
      return { listeners: answer.listeners, fds: received };
    } catch (error) {
      received.forEach(native.closeFd);
      native.closeFd(fd);
      throw error;
    }
  }

  /** From here on the control connection is a plain Node socket: no more fds come. */
  private attachControl(fd: number): void {
    const control = new net.Socket({ fd, readable: true, writable: true });
    this.control = control;
    control.on('error', () => {});
    control.on('data', (chunk) => {
      try {
        for (const message of this.decoder.push(chunk)) this.onMessage(message);
      } catch (error) {
        this.log.error(`control: ${(error as Error).message}`);
      }
    });
    control.on('close', () => {
      this.control = undefined;
      this.drain('the master is gone');
    });
  }

  private onMessage(message: Message): void {
    if (message.type === 'drain') return this.drain('the master asked');
    if (message.type === 'reload-result') {
      const pending = this.pendingReloads.get(message.id);
      this.pendingReloads.delete(message.id);
      if (message.ok) pending?.resolve();
      else pending?.reject(new Error(message.message ?? 'reload failed'));
    }
  }

  private send(message: Message): void {
    if (this.control && !this.control.destroyed) this.control.write(encode(message));
  }

  private async serve(listeners: ListenerInfo[], fds: number[]): Promise<void> {
    await Promise.all(this.registrations.map((registration, i) => {
      const server = registration.create();
      this.drains[i] = new ServerDrain(server);
      return new Promise<void>((resolve, reject) => {
        server.once('error', reject);
        server.listen({ fd: fds[i], backlog: listeners[i].backlog }, () => {
          server.removeListener('error', reject);
          resolve();
        });
      });
    }));
    this.bound = listeners.map((l) => l.bound);
  }

  /** Drains every server, then exits; at stopTimeout exits regardless. Idempotent. */
  drain(reason: string): void {
    if (this.draining) return;
    this.draining = true;
    if (this.drains.length === 0) {
      this.log.info(`draining (${reason}) before serving anything; exiting`);
      process.exit(0);
    }
    const open = this.drains.reduce((n, d) => n + d.connections, 0);
    this.log.info(`draining (${reason}): ${open} open connection(s), up to ${this.options.stopTimeout} ms`);
    this.events.emit('drain');
    const deadline = setTimeout(() => {
      const left = this.drains.reduce((n, d) => n + d.connections, 0);
      this.log.warn(`stopTimeout (${this.options.stopTimeout} ms): closing ${left} connection(s) still open`);
      process.exit(0);
    }, this.options.stopTimeout);
    void Promise.all(this.drains.map((d) => d.drain())).then(() => {
      clearTimeout(deadline);
      this.control?.end();
      this.finished();
      setImmediate(() => process.exit(0));
    });
  }
}
