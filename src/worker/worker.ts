// The worker side: connect to the master, prove who we are, receive the
// listening fds, serve them with the application's servers, report ready, and
// drain when told to (or when the master is gone, or on a stop signal).
import type { EventEmitter } from 'node:events';
import { ENV } from '../protocol';
import { guardAgainstOrphaning } from './orphan';
import { loopDelayMs } from './loop-delay';
import { ControlClient } from './control-client';
import { type Logger, createLogger } from '../log';
import * as native from '../platform/native';
import type { ResolvedOptions } from '../options';
import { type Registration, Serving } from './serving';

/** How long the worker waits for the master's answer to its hello. */
const HANDSHAKE_TIMEOUT_MS = 10_000;

/**
 * What the master put in this worker's environment, taken out of process.env
 * at load so a child the application spawns does not mistake itself for a
 * worker (and never sees the token).
 */
const spawnedWith = Object.fromEntries(Object.values(ENV).map((name) => {
  const value = process.env[name];
  delete process.env[name];
  return [name, value];
})) as Record<(typeof ENV)[keyof typeof ENV], string | undefined>;

/** True in a process the master spawned as a worker. */
export function isWorkerProcess(): boolean {
  return spawnedWith[ENV.socket] !== undefined && spawnedWith[ENV.token] !== undefined;
}

export class Worker {
  readonly slot = Number(spawnedWith[ENV.slot]);
  readonly generation = Number(spawnedWith[ENV.generation]);
  private readonly masterPid = Number(spawnedWith[ENV.masterPid]);
  private readonly log: Logger;
  private readonly serving: Serving;
  private control?: ControlClient;
  private draining = false;
  private finished!: () => void;
  private readonly done = new Promise<void>((resolve) => (this.finished = resolve));
  private nextReloadId = 1;
  private readonly pendingReloads = new Map<number, { resolve: () => void; reject: (e: Error) => void }>();

  constructor(
    private readonly options: ResolvedOptions,
    private readonly registrations: Registration[],
    private readonly events: EventEmitter,
  ) {
    this.log = createLogger(options.logger, 'worker');
    this.serving = new Serving(registrations, options, (line) => this.log.warn(line));
  }

  get bound(): string[] {
    return this.serving.bound;
  }

  /** Serves until drained; then the process exits. Rejects if start-up fails. */
  async run(): Promise<void> {
    guardAgainstOrphaning(this.masterPid, this.options.stopSignals[0], this.options.stopTimeout, this.log);
    this.installSignalHandlers();
    const { client, listeners, fds, ticketKeys } = await ControlClient.connect(spawnedWith[ENV.socket]!, {
      type: 'hello',
      token: spawnedWith[ENV.token]!,
      pid: process.pid,
      slot: this.slot,
      generation: this.generation,
      addresses: this.registrations.map((r) => r.address),
    }, HANDSHAKE_TIMEOUT_MS);
    this.control = client;
    if (ticketKeys) this.serving.ticketKeys.set(ticketKeys);
    client.on('message', (message) => {
      if (message.type === 'ticket-keys') this.serving.ticketKeys.set(message.keys);
      if (message.type === 'drain') this.drain('the master asked');
      if (message.type === 'closing') this.serving.closeEachResponse();
      if (message.type === 'park') this.park();
      if (message.type === 'resume') this.resume();
      if (message.type === 'ping') client.send({ type: 'pong', requests: this.serving.requests, rss: process.memoryUsage.rss(), loopDelayMs: loopDelayMs() });
      if (message.type === 'cover') this.cover(message.slot);
      if (message.type === 'uncover') this.serving.uncover(message.slot);
      if (message.type === 'count') client.send({ type: 'connections', count: this.serving.connections });
      if (message.type === 'reload-result') {
        const pending = this.pendingReloads.get(message.id);
        this.pendingReloads.delete(message.id);
        if (message.ok) pending?.resolve();
        else pending?.reject(new Error(message.message ?? 'reload failed'));
      }
    });
    client.on('protocol-error', (error: Error) => this.log.error(`control: ${error.message}`));
    client.on('close', () => {
      this.control = undefined;
      this.drain('the master is gone');
    });
    try {
      await this.options.ready?.();
      await this.serving.listen(listeners, fds, this.slot);
    } catch (error) {
      if (!this.serving.started) fds.flat().forEach((fd) => native.closeFd(fd));
      client.send({ type: 'failed', message: error instanceof Error ? error.message : String(error) });
      throw error;
    }
    client.send({ type: 'ready' });
    await this.done;
  }

  /** keepPrevious: a newer generation serves; finish what is in flight and wait, in case of a rollback. */
  private park(): void {
    if (this.draining) return;
    this.log.info(`parked: a newer generation serves; finishing ${this.serving.connections} open connection(s), then waiting for a rollback`);
    this.serving.park(); // no 'drain' event: a rollback may need the application's resources again
  }

  /** A rollback: accept again. */
  private resume(): void {
    if (this.draining) return;
    this.log.info('rollback: accepting again');
    this.serving.resume();
  }

  /** The master asks us to accept a sibling slot's connections too (its worker is not ready). */
  private cover(slot: number): void {
    try {
      this.serving.cover(slot);
      this.log.info(`covering slot ${slot}: accepting its connections until its worker is ready`);
    } catch (error) {
      this.log.error(`cannot cover slot ${slot}: ${error instanceof Error ? error.message : String(error)}`);
    }
  }

  /** Asks the master for a reload; resolves when the new generation serves. */
  reload(): Promise<void> {
    const control = this.control;
    if (!control) return Promise.reject(new Error('this worker is not connected to its master'));
    const id = this.nextReloadId++;
    return new Promise<void>((resolve, reject) => {
      this.pendingReloads.set(id, { resolve, reject });
      control.send({ type: 'reload', id });
    });
  }

  /** Reload signals are the master's business; stop signals drain (invariant 9). */
  private installSignalHandlers(): void {
    for (const signal of this.options.reloadSignals) process.on(signal, () => {});
    for (const signal of this.options.stopSignals) process.on(signal, () => this.drain(signal));
  }

  /** Drains every server, then exits; at stopTimeout exits regardless. Idempotent. */
  drain(reason: string): void {
    if (this.draining) return;
    this.draining = true;
    if (!this.serving.started) {
      this.log.info(`draining (${reason}) before serving anything; exiting`);
      process.exit(0);
    }
    this.log.info(`draining (${reason}): ${this.serving.connections} open connection(s), up to ${this.options.stopTimeout} ms`);
    const drained = this.serving.drain();
    this.events.emit('drain');
    const deadline = setTimeout(() => {
      this.log.warn(`stopTimeout (${this.options.stopTimeout} ms): closing ${this.serving.connections} connection(s) still open`);
      process.exit(0);
    }, this.options.stopTimeout);
    void drained.then(() => {
      clearTimeout(deadline);
      this.control?.end();
      this.finished();
      setImmediate(() => process.exit(0));
    });
  }
}
