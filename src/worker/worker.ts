// The worker side: connect to the master, prove who we are, receive the
// listening fds, serve them with the application's servers, report ready, and
// drain when told to (or when the master is gone, or on a stop signal).
import type { EventEmitter } from 'node:events';
import { ENV, type HandoffEndpoint, type Message } from '../protocol';
import { appMetricsSnapshot } from './app-metrics';
import { guardAgainstOrphaning } from './orphan';
import { ControlClient } from './control-client';
import { type Logger, createLogger } from '../log';
import * as native from '../platform/native';
import type { ResolvedOptions } from '../options';
import { DUPLICATE_STOP_MS, masterOnlySignals } from '../signals';
import { type Registration, Serving } from './serving';
import { HandoffListener } from './handoff';
import { codeVersion } from '../master/version';
import { spawnedWith } from './spawned';

/** How long the worker waits for the master's answer to its hello. */
const HANDSHAKE_TIMEOUT_MS = 10_000;

/**
 * Node's own process.exit. While a worker drains, the application's calls go
 * through holdExits() instead; the worker's own exits never wait.
 */
const exitNow = process.exit.bind(process) as (code?: number) => never;

/** How long a drained worker waits for its last frames to reach a master that does not read. */
const FLUSH_MS = 1_000;

/** The reason a drain frame gives. */
const MASTER_ASKED = 'the master asked';

/** The worker running in this process, once run() is called. */
let current: Worker | undefined;

/** This process's worker (undefined before its run(), or outside a master's workers). */
export function currentWorker(): Worker | undefined {
  return current;
}

export class Worker {
  readonly slot = Number(spawnedWith[ENV.slot]);
  readonly generation = Number(spawnedWith[ENV.generation]);
  private readonly masterPid = Number(spawnedWith[ENV.masterPid]);
  private readonly log: Logger;
  private readonly serving: Serving;
  private control?: ControlClient;
  /** Where the worker that this one replaces hands over its connections. */
  private handoff?: HandoffListener;
  private draining = false;
  /**
   * A stop signal reached this worker while its master is connected: the
   * master's stop delivered to every process of the service. Until the
   * master's drain arrives the worker serves on, and the program's exit waits.
   */
  private stopSignalled = false;
  /** The master said a stop has begun (its `closing` frame): its drain follows, however long that takes. */
  private masterStopping = false;
  /** The master said it is about to exec a fresh image of itself (an upgrade in place). */
  private masterUpgrading = false;
  private finished!: () => void;
  /** Resolves once the drain is over (every connection closed), just before the process exits. */
  readonly done = new Promise<void>((resolve) => (this.finished = resolve));
  /** The code the application asked process.exit() for during the drain. */
  private exitCode?: number | string | null;
  private nextReloadId = 1;
  private appMetricsAsked = false;
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

  /** Serving every address; drain() from now on drains rather than exits at once. */
  get started(): boolean {
    return this.serving.started;
  }

  /** A drain has begun, or a stop signal waits for the master's. */
  get stopping(): boolean {
    return this.draining || this.stopSignalled;
  }

  /** Serves until drained; then the process exits. Rejects if start-up fails. */
  async run(): Promise<void> {
    current = this;
    guardAgainstOrphaning(this.masterPid, this.options.stopSignals[0], this.options.stopTimeout, this.log);
    this.installSignalHandlers();
    this.holdExits();
    const { client, listeners, fds, ticketKeys } = await ControlClient.connect(spawnedWith[ENV.socket]!, {
      type: 'hello',
      token: spawnedWith[ENV.token]!,
      pid: process.pid,
      slot: this.slot,
      generation: this.generation,
      addresses: this.registrations.map((r) => r.address),
      version: codeVersion(this.options.version),
    }, HANDSHAKE_TIMEOUT_MS);
    this.control = client;
    if (ticketKeys) this.serving.ticketKeys.set(ticketKeys);
    client.on('message', (message) => {
      if (message.type === 'ticket-keys') this.serving.ticketKeys.set(message.keys);
      if (message.type === 'drain') this.drain(MASTER_ASKED, message.handoff);
      if (message.type === 'closing') {
        this.masterStopping = true;
        this.serving.closeEachResponse();
      }
      if (message.type === 'upgrading') this.masterUpgrading = true;
      if (message.type === 'park') this.park();
      if (message.type === 'resume') this.resume();
      // drain() and park() close every listening handle (own slot, covered
      // slots) before they return, and whatever libuv accepted before that was
      // handed to the servers already: nothing is accepted here from now on.
      if (message.type === 'drain' || message.type === 'park') client.send({ type: 'stopped-accepting' });
      if (message.type === 'ping') client.send({ type: 'pong', ...this.serving.stats.sample() });
      if (message.type === 'cover') this.cover(message.slot);
      if (message.type === 'uncover') this.serving.uncover(message.slot);
      if (message.type === 'metrics') void this.reportAppMetrics();
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
      if (this.masterUpgrading && process.ppid === this.masterPid) return this.serveThroughUpgrade();
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
    try {
      this.handoff = await HandoffListener.open(this.options.controlDir, (item, fd) => this.serving.adopt(item, fd));
    } catch (error) {
      this.log.warn(`cannot take over connections from the previous generation: ${error instanceof Error ? error.message : String(error)}`);
    }
    client.send({ type: 'ready', handoff: this.handoff?.endpoint });
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

  /**
   * Sends the program's prom-client metrics (for the master's /metrics); once
   * asked, also the last ones after the drain, so none of its counts are lost.
   */
  private async reportAppMetrics(): Promise<void> {
    this.appMetricsAsked = true;
    let answer: Message;
    try {
      answer = { type: 'app-metrics', metrics: await appMetricsSnapshot() };
    } catch (error) {
      answer = { type: 'app-metrics', metrics: [], error: error instanceof Error ? error.message : String(error) };
    }
    try {
      this.control?.send(answer);
    } catch (error) {
      this.control?.send({ type: 'app-metrics', metrics: [], error: (error as Error).message }); // larger than a frame
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

  /**
   * Reload, upgrade and scale signals are the master's business; stop signals
   * stop (invariant 9). Ours run before any the application installed (most
   * programs have `process.on('SIGTERM', () => server.close(() =>
   * process.exit(0)))`), so the stop has begun when theirs run, and their
   * exit waits for the drain.
   */
  private installSignalHandlers(): void {
    for (const signal of masterOnlySignals(this.options)) process.prependListener(signal, () => {});
    for (const signal of this.options.stopSignals) process.prependListener(signal, () => this.stopSignal(signal));
  }

  /**
   * A stop signal. Without a master (before the handshake, after it is
   * gone) the worker drains now. With one, the signal is almost always the
   * master's stop reaching every process of the service (systemd's
   * KillMode=control-group): draining here at once would stop accepting from
   * this slot's socket while connections still wait in its queue, which the
   * master's stop sequence accepts before the sockets close (invariant 12).
   * So the master drives: its `closing` frame says its stop has begun, its
   * `drain` frame follows. If no `closing` comes within DUPLICATE_STOP_MS,
   * the signal was this worker's alone, and it drains as before.
   */
  private stopSignal(signal: NodeJS.Signals): void {
    // (the master's death raises a stop signal here, maybe before the control socket's EOF is read: orphan.ts)
    if (!this.control || process.ppid !== this.masterPid) return this.drain(signal);
    if (this.stopSignalled || this.draining) return;
    this.stopSignalled = true;
    if (this.masterStopping) return this.log.info(`${signal}: the master is stopping; serving until it says drain`);
    this.log.info(`${signal}: serving until the master's stop drains this worker (draining in ${DUPLICATE_STOP_MS} ms if no stop begins)`);
    setTimeout(() => {
      if (!this.masterStopping) this.drain(`${signal}, and the master is not stopping`);
    }, DUPLICATE_STOP_MS).unref();
  }

  /**
   * The program asked to stop serving (a `close()` on its server, under
   * `handover start`): during a stop signal that is the master's stop, which
   * drains this worker when its sequence gets there; otherwise drain now.
   */
  stopServing(reason: string): void {
    if (!this.stopSignalled) this.drain(reason);
  }

  /**
   * An application's process.exit() during a drain (or while a stop signal
   * waits for the master's drain) would cut every request in flight and reset
   * every keep-alive connection: it waits for the drain instead (bounded by
   * stopTimeout, as the drain is), and its code becomes the worker's exit code.
   */
  private holdExits(): void {
    process.exit = ((code?: number | string | null) => {
      if (!this.draining && !this.stopSignalled) return exitNow(code as number);
      this.exitCode = code ?? process.exitCode;
      return undefined as never;
    }) as typeof process.exit;
  }

  /**
   * The master exec'd a fresh image (same pid): keep serving until the new
   * image's generation is ready and sends a stop signal, so no moment passes
   * without an acceptor. If the master dies, the parent-death signal drains
   * this worker; if the new image never takes over, so does the timer.
   */
  private serveThroughUpgrade(): void {
    const waitMs = 2 * this.options.startTimeout;
    this.log.info(`the master is upgrading in place; serving until its new image is ready (at most ${waitMs} ms)`);
    setTimeout(() => this.drain('the upgraded master did not take over'), waitMs).unref();
  }

  /**
   * Drains every server, then exits; at stopTimeout exits regardless.
   * Idempotent. `to`: the worker that replaces this one, which takes the
   * connections that can move.
   */
  drain(reason: string, to?: HandoffEndpoint): void {
    if (this.draining) return;
    this.draining = true;
    if (!this.serving.started) {
      this.log.info(`draining (${reason}) before serving anything; exiting`);
      exitNow(0);
    }
    // The master's own drain of an idle worker is in the master's log already
    // ("draining generation N"); the worker tells what only it knows.
    if (this.serving.connections > 0 || reason !== MASTER_ASKED) {
      this.log.info(`draining (${reason}): ${this.serving.connections} open connection(s), up to ${this.options.stopTimeout} ms`);
    }
    this.handoff?.close();
    const drained = this.serving.drain(to);
    this.events.emit('drain');
    const report = () => this.control?.send({ type: 'moves', tally: this.serving.tally });
    // (after the moved sockets' 'close', which comes a tick after their destroy())
    if (to) void this.serving.moved().then(() => setImmediate(report));
    const deadline = setTimeout(() => {
      this.log.warn(`stopTimeout (${this.options.stopTimeout} ms): closing ${this.serving.connections} connection(s) still open`);
      report();
      exitNow((this.exitCode ?? 0) as number);
    }, this.options.stopTimeout);
    void drained.then(() => (this.appMetricsAsked ? this.reportAppMetrics() : undefined)).then(() => {
      clearTimeout(deadline);
      report();
      // the last counts, so the master's totals include every request served here
      this.control?.send({ type: 'pong', ...this.serving.stats.sample(true) });
      this.finished();
      // Once the master has read those frames (its end of the connection
      // came back). A master that does not read (stopped) holds the exit for
      // at most FLUSH_MS.
      const exit = () => exitNow((this.exitCode ?? 0) as number);
      if (this.control) {
        this.control.end(exit);
        setTimeout(exit, FLUSH_MS);
      } else {
        setImmediate(exit);
      }
    });
  }
}
