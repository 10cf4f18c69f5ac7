// What a parent (the master, or a single process handing over) knows about a
// child it spawned: its state, readiness (with startTimeout), heartbeats, exit,
// and how to tell it to drain or to cover a sibling's slot. This is the real
// `Child` of the lifecycle state machine (lifecycle.ts).
import type { ChildProcess } from 'node:child_process';
import * as fs from 'node:fs';
import type * as net from 'node:net';
import { performance } from 'node:perf_hooks';
import { type HandoffEndpoint, type Message, type WorkerSample, encode } from '../protocol';
import { raiseAfter, workerReady } from './boot-priority';
import type { Child, ChildState } from './lifecycle';
import { stderrTail } from './spawn-self';

/** Extra time past stopTimeout before a child that did not exit is killed. */
const KILL_GRACE_MS = 2_000;
/** A worker boots at a lower priority (boot-priority.ts) for at most startTimeout / this. */
const BOOT_LOWERED_FRACTION = 10;
/** How long an exited worker's control connection may take to deliver what the worker wrote last. */
const EXIT_READ_MS = 1_000;

/** One spawned child. `ready` resolves on its `ready` frame; rejects if it exits first or misses startTimeout. */
export class WorkerProcess implements Child {
  /** Monotonic (performance.now()), as the lifecycle's clock. */
  readonly startedAt = performance.now();
  lastSeen = performance.now();
  requests = 0;
  rss = 0;
  /** The version of its code (its hello), and its last heartbeat answer. */
  version?: string;
  sample?: WorkerSample;
  /** Mean event-loop delay (ms) since the previous heartbeat, as the worker measured it. */
  loopDelayMs?: number;
  state: ChildState = 'starting';
  conn?: net.Socket;
  /** Addresses its code registered (known after hello). */
  addresses?: string[];
  /** Where it takes over connections from a worker it replaces (from its ready frame). */
  handoff?: HandoffEndpoint;
  /** Told to drain with a successor to move its connections to: it reports what moved. */
  handingOff = false;
  /** Why it could not start, as the worker reported it. */
  failure?: string;
  exit?: { code: number | null; signal: NodeJS.Signals | null };
  /** Answers to `count` frames wait here. */
  readonly countWaiters: ((count: number) => void)[] = [];
  readonly exited: Promise<void>;
  readonly ready: Promise<void>;
  private markReady!: () => void;
  private markFailed!: (error: Error) => void;
  private killTimer?: NodeJS.Timeout;
  /**
   * `stopped-accepting` answers still to come, one per drain or park frame
   * (the worker answers each, in order). A frame that could not be sent, or a
   * drain by signal, owes one that never comes: only the exit ends that wait.
   */
  private acksOwed = 0;
  private readonly ackWaiters: (() => void)[] = [];

  constructor(
    readonly child: ChildProcess,
    readonly slot: number,
    readonly generation: number,
    startTimeout: number,
    private readonly stopTimeout: number,
  ) {
    this.ready = new Promise<void>((resolve, reject) => {
      this.markReady = resolve;
      this.markFailed = reject;
    });
    this.ready.catch(() => {}); // observed by whoever awaits it; never unhandled
    const timer = setTimeout(() => {
      this.markFailed(new Error(`${this.describe()} did not become ready within startTimeout (${startTimeout} ms)`));
      this.kill('SIGKILL');
    }, startTimeout);
    this.exited = new Promise<void>((resolve) => {
      let exited = false;
      const onExit = (code: number | null, signal: NodeJS.Signals | null) => {
        if (exited) return;
        exited = true;
        // What the worker wrote before it exited (its last counts, its moves)
        // is read first (invariant 19): the exit counts once its control
        // connection has ended, which a dead process's end always does.
        const conn = this.conn;
        if (!conn || conn.destroyed) return exit(code, signal);
        const read = () => {
          clearTimeout(bound);
          exit(code, signal);
        };
        const bound = setTimeout(read, EXIT_READ_MS);
        conn.once('end', read).once('close', read);
      };
      const exit = (code: number | null, signal: NodeJS.Signals | null) => {
        if (this.exit) return;
        this.exit = { code, signal };
        clearTimeout(timer);
        clearTimeout(this.killTimer);
        const how = signal ? `was killed by ${signal}` : `exited with code ${code}`;
        this.conn?.destroy();
        this.settleAcks();
        resolve();
        // A start-up failure is reported with what the worker itself said: its
        // `failed` frame, and the last lines of its stderr when they pass
        // through the master (the exception and stack, a SyntaxError's file:line).
        void stderrTail(child).then((tail) => this.markFailed(new Error(
          `${this.describe()} ${how} before it was ready${this.failure ? `: ${this.failure}` : ''}` +
            `${tail ? `; its last output:\n${tail}` : ''}`,
        )));
      };
      child.once('exit', onExit);
      child.once('error', () => onExit(null, null));
    });
    this.ready.then(() => clearTimeout(timer), () => {});
    raiseAfter(child, startTimeout / BOOT_LOWERED_FRACTION);
  }

  get pid(): number {
    return this.child.pid ?? -1;
  }

  /**
   * Not exited, as far as this process knows: its exit is seen only when the
   * event loop reaps it, which a busy loop may do after other news (a
   * sibling's ready frame). On Linux a child that has died but is not reaped
   * yet is a zombie in /proc: that counts as dead already.
   */
  get alive(): boolean {
    if (this.exit !== undefined) return false;
    if (process.platform !== 'linux' || this.pid <= 0) return true;
    if (this.procReading === undefined) {
      this.procReading = this.readProc();
      queueMicrotask(() => (this.procReading = undefined));
    }
    return this.procReading;
  }

  /**
   * What /proc said, for the rest of this turn of the event loop: one
   * rebalance asks about every child several times, and a death the kernel
   * records meanwhile is seen at the next turn, as one just after it would be.
   */
  private procReading?: boolean;

  private readProc(): boolean {
    try {
      const stat = fs.readFileSync(`/proc/${this.pid}/stat`, 'utf8');
      return stat.slice(stat.lastIndexOf(')') + 2, stat.lastIndexOf(')') + 3) !== 'Z';
    } catch {
      return false; // reaped by now: its exit event is on its way
    }
  }

  describe(): string {
    return `worker pid ${this.pid} (slot ${this.slot}, generation ${this.generation})`;
  }

  becameReady(): void {
    if (this.state !== 'starting') return;
    this.state = 'ready';
    this.lastSeen = performance.now();
    workerReady(this.child); // it booted at a lower priority; it serves at the master's
    this.markReady();
  }

  ping(): void {
    this.send({ type: 'ping' });
  }

  /** Any frame from it is a sign of life; `pong` exists to prompt one. */
  sawLife(): void {
    this.lastSeen = performance.now();
  }

  markUnresponsive(): void {
    if (this.state !== 'ready') return;
    this.drain();
    this.state = 'unresponsive';
  }

  park(): void {
    if (this.state !== 'ready') return;
    this.sendStop({ type: 'park' });
    this.state = 'parked';
  }

  /** Resolves once it accepts from none of its sockets after the last drain() or park(): it said so, or exited. */
  get stoppedAccepting(): Promise<void> {
    if (this.acksOwed === 0 || this.exit) return Promise.resolve();
    return new Promise((resolve) => this.ackWaiters.push(resolve));
  }

  /** Its `stopped-accepting` frame. */
  saidStoppedAccepting(): void {
    if (this.acksOwed > 0) this.acksOwed--;
    if (this.acksOwed === 0) this.settleAcks();
  }

  private settleAcks(): void {
    for (const resolve of this.ackWaiters.splice(0)) resolve();
  }

  /** A drain or park frame, which the worker answers with `stopped-accepting`. */
  private sendStop(message: Message): void {
    this.acksOwed++;
    this.send(message);
  }

  resume(): void {
    if (this.state !== 'parked') return;
    this.send({ type: 'resume' });
    this.state = 'ready';
    this.lastSeen = performance.now();
  }

  closing(): void {
    this.send({ type: 'closing' });
  }

  cover(slot: number): void {
    this.send({ type: 'cover', slot });
  }

  uncover(slot: number): void {
    this.send({ type: 'uncover', slot });
  }

  send(message: Message): void {
    if (this.conn && !this.conn.destroyed) this.conn.write(encode(message));
  }

  /** Its open connections, as it reports them; undefined if it does not answer within `timeoutMs`. */
  countConnections(timeoutMs: number): Promise<number | undefined> {
    if (this.state === 'starting' || !this.conn || this.conn.destroyed) return Promise.resolve(undefined);
    return new Promise((resolve) => {
      const waiter = (count: number) => {
        clearTimeout(timer);
        resolve(count);
      };
      // Answers come in order; a late one must not answer the next request.
      const timer = setTimeout(() => {
        this.countWaiters.splice(this.countWaiters.indexOf(waiter), 1, () => {});
        resolve(undefined);
      }, timeoutMs);
      this.countWaiters.push(waiter);
      this.send({ type: 'count' });
    });
  }

  /** Gives up on a new child: one that is ready already serves, so it drains; any other is killed. */
  abandon(): void {
    if (this.state === 'ready') this.drain();
    else this.kill();
  }

  kill(signal: NodeJS.Signals = 'SIGKILL'): void {
    if (this.alive) this.child.kill(signal);
  }

  /**
   * Tells the worker to drain, naming the ready `successor` that takes its
   * connections; kills it if it is still there after stopTimeout.
   */
  drain(successor?: Child): void {
    if (!this.alive || this.state === 'draining' || this.state === 'unresponsive') return;
    const wasReady = this.state === 'ready' || this.state === 'parked';
    this.state = 'draining';
    // A worker that is not ready serves nothing yet and may not be reading the
    // control socket: a stop signal makes it drain just the same.
    const to = successor instanceof WorkerProcess && successor.state === 'ready' && successor.alive ? successor.handoff : undefined;
    this.handingOff = wasReady && to !== undefined;
    if (wasReady && this.conn && !this.conn.destroyed) {
      this.sendStop({ type: 'drain', ...(to ? { handoff: to } : {}) });
    } else {
      this.acksOwed++; // a stop signal: no answer comes, only its exit
      this.kill('SIGTERM');
    }
    this.killTimer = setTimeout(() => this.kill('SIGKILL'), this.stopTimeout + KILL_GRACE_MS);
  }
}
