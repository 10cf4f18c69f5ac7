// The worker lifecycle, written once: while the master lives, every slot's
// accept queue has a live, responsive process accepting from it, and a
// generation drains only once its successor is ready.
//
// Start-up, reload, crash respawn, heartbeats, recycling, scaling, rollback and
// stop all run through this state machine; the master only wires it to real
// processes (worker-process.ts) and sockets, and the unit tests wire it to
// fakes with a fake clock. It reads in the order things happen:
//
//   start      generation 1, like any reload
//   reload     a generation, top to bottom (Generation.ready):
//                1. spawn one child per slot
//                2. wait until every child has reported ready
//                3. check that every child is *still* alive and ready (one may
//                   have died while a sibling was finishing its ready hook)
//                4. commit: each slot's serving child is replaced, the old
//                   ones drain
//                5. resolve once each old one has said it stopped accepting
//                   (or exited; a frozen one is waited for heartbeatTimeout)
//              a failure anywhere abandons the new generation; the old one
//              serves on. Reloads are coalesced (Reloader): one runs; any
//              number of requests during it make exactly one more.
//   between    each slot has at most one serving child. A slot whose child has
//   reloads    crashed, is backing off before its respawn, is starting, or
//              stopped answering heartbeats is *vacant*; a healthy sibling
//              covers it (accepts from its sockets) until the slot's own
//              child is ready again (invariant 11). Heartbeats are judged on
//              a monotonic clock, after pending I/O was read, in missed
//              intervals, so a pause of the whole process group is not a
//              failure (invariant 19). A slot no process can cover (its
//              sockets are newer than every healthy child: a scale-up's) is
//              *rescued*: what is queued there goes to a healthy child and
//              the socket stops listening until a worker listens on it again
//   policies   recycle (maxMemory, maxRequests, maxLifetime), scale, rollback
//   stop       new handshakes are refused, what is queued is accepted, the
//              sockets stop listening everywhere, then everyone drains
//              (invariant 12)
import { performance } from 'node:perf_hooks';
import { ReloadCancelled } from '../errors';
import type { Logger } from '../log';
import { MAX_WORKERS } from '../options';
import type { WorkerSample } from '../protocol';
import { type CanaryLimits, watchCanary } from './canary';

/** 'parked': kept after a reload (keepPrevious), alive but not accepting, until a rollback or its window ends. */
export type ChildState = 'starting' | 'ready' | 'unresponsive' | 'parked' | 'draining';

/** What the lifecycle needs from a spawned worker process. */
export interface Child {
  readonly pid: number;
  readonly slot: number;
  readonly generation: number;
  readonly state: ChildState;
  readonly alive: boolean;
  /** Clock time it was spawned. */
  readonly startedAt: number;
  /** Clock time of its last sign of life (ready, or any frame such as a heartbeat answer). */
  readonly lastSeen: number;
  /** Requests served and resident memory (bytes), as of its last heartbeat answer. */
  readonly requests: number;
  readonly rss: number;
  /** Its last heartbeat answer's counters (what the canary's verdict compares). */
  readonly sample?: WorkerSample;
  /** Resolves when it reports ready; rejects if it exits first or misses startTimeout. */
  readonly ready: Promise<void>;
  readonly exited: Promise<void>;
  describe(): string;
  /** Asks for a heartbeat answer (which moves `lastSeen`). */
  ping(): void;
  /** Takes it out of service for missing heartbeats: it drains, and is killed at stopTimeout. */
  markUnresponsive(): void;
  /**
   * Stop accepting, finish in-flight work, exit; killed at stopTimeout.
   * `successor`: the ready child taking its place, to move connections to.
   */
  drain(successor?: Child): void;
  /** A stop is coming (stopDelay): keep serving, but close each connection after its response. */
  closing(): void;
  /** Stop accepting and finish in-flight work as a drain does, but stay alive (keepPrevious). */
  park(): void;
  /** A parked child accepts again (a rollback). */
  resume(): void;
  /**
   * After the last drain() or park(): resolves once it accepts from none of
   * its sockets (its slot's, the ones it covered), as it says, or has exited.
   */
  readonly stoppedAccepting: Promise<void>;
  /** Gives up on a new child: one that is ready already accepts, so it drains; any other is killed. */
  abandon(): void;
  /** Kills it at once (a forced stop). */
  kill(): void;
  /** Also accept from `slot`'s listening sockets (a sibling of that slot is not serving). */
  cover(slot: number): void;
  /** Stop accepting from `slot`'s sockets again. */
  uncover(slot: number): void;
}

export type Spawn = (slot: number, generation: number) => Child;

/** Monotonic milliseconds and timers; a wall-clock step (NTP, a VM resume) must not look like silence. */
export interface Clock {
  now(): number;
  setTimeout(fn: () => void, ms: number): unknown;
  clearTimeout(handle: unknown): void;
}

export const realClock: Clock = {
  now: () => performance.now(),
  setTimeout: (fn, ms) => setTimeout(fn, ms),
  clearTimeout: (handle) => clearTimeout(handle as NodeJS.Timeout),
};

/** Respawn backoff after a crash: 100 ms doubling to 10 s; reset after 30 s of life. */
export const RESPAWN_BASE_MS = 100;
export const RESPAWN_MAX_MS = 10_000;
export const RESPAWN_RESET_MS = 30_000;

/**
 * At stop, how long the accept queues must stay empty (with new SYNs dropped)
 * before the sockets stop listening: a handshake under way completes within a
 * round trip, and its connection must be accepted, not reset.
 */
export const STOP_QUIET_MS = 50;
/** At stop, the longest wait for the queues to empty (a frozen worker's slot never does). */
export const STOP_QUEUE_WAIT_MS = 500;
const STOP_POLL_MS = 10;

/** The master's listening sockets, as the stop sequence needs them. */
export interface StopSockets {
  /** New handshakes stop completing (a filter drops SYNs); queued connections stay to be accepted. */
  refuseNew(): void;
  /** Connections waiting in the accept queues now (0 where the platform cannot tell). */
  queued(): number;
  /** The sockets stop listening for every process holding a copy: new connections are refused at once. */
  shutdown(): void;
  /** Closes the master's copies. */
  close(): void;
}

/**
 * A slot's listening sockets while they are rescued: `rescue()` has begun
 * accepting from them and handing each connection to a healthy child. The
 * steps are the stop's (refuse new handshakes, let the queues empty, stop
 * listening); close() ends the accepting and lets the sockets take new
 * handshakes again once a worker listens on them.
 */
export type RescuedSockets = StopSockets;

/** Runs one job at a time; any number of requests during a run make exactly one more run. */
export class Reloader<T> {
  private running?: Promise<T>;
  private queued?: Promise<T>;

  constructor(private readonly run: () => Promise<T>) {}

  get busy(): boolean {
    return this.running !== undefined;
  }

  /** Resolves once nothing runs and nothing is queued. */
  idle(): Promise<void> {
    const pending = this.queued ?? this.running;
    return pending ? pending.then(() => this.idle(), () => this.idle()) : Promise.resolve();
  }

  request(): Promise<T> {
    if (!this.running) {
      this.running = this.run().finally(() => (this.running = undefined));
      return this.running;
    }
    if (!this.queued) {
      this.queued = this.running.catch(() => undefined).then(() => {
        this.queued = undefined;
        return this.request();
      });
    }
    return this.queued;
  }
}

/** One child per slot, started together, committed together or abandoned together. */
export class Generation {
  readonly children: Child[];

  constructor(readonly number: number, slots: number[], spawn: Spawn) {
    this.children = slots.map((slot) => spawn(slot, number));
  }

  /**
   * Resolves once every child is ready and still alive and ready at this
   * moment; otherwise abandons every child and rejects with the first reason
   * once the killed ones are gone (ready ones drain, their requests finish).
   */
  async ready(): Promise<void> {
    try {
      await Promise.all(this.children.map((c) => c.ready));
    } catch (error) {
      await this.abandon();
      throw error;
    }
    const lost = this.children.find((c) => !c.alive || c.state !== 'ready');
    if (lost) {
      const how = lost.alive ? `became ${lost.state}` : 'exited';
      await this.abandon();
      throw new Error(`${lost.describe()} ${how} after it was ready, before the generation was committed`);
    }
  }

  /** Gives up on every child; resolves when the ones that were killed (not drained) have exited. */
  async abandon(): Promise<void> {
    for (const child of this.children) child.abandon();
    await Promise.all(this.children.filter((c) => c.state !== 'draining').map((c) => c.exited));
  }
}

/** 'retired': removed by scale(); its socket stays in the group, served by a sibling. */
export type SlotState = 'ready' | 'starting' | 'backing-off' | 'unresponsive' | 'retired' | 'stopped';

/** One slot: its serving child, its respawn, its backoff and cover, its counters. */
interface Slot {
  readonly index: number;
  /** Committed by a generation, or a respawn that became ready. */
  serving?: Child;
  /** A respawn that is starting. */
  replacing?: Child;
  /** The respawn timer while it backs off after a crash. */
  backoff?: unknown;
  /** The sibling accepting from its sockets while it has no ready child of its own (or is retired). */
  cover?: Child;
  /** Crashes in a row: the backoff's exponent. */
  crashes: number;
  /** Restarts after a crash or a missed heartbeat. */
  restarts: number;
  /** Recycles (maxMemory, maxRequests, maxLifetime). */
  recycles: number;
  /** Its queued connections are being handed to a healthy child (no process could cover it). */
  rescue?: Promise<void>;
  /** Rescued: its sockets do not listen until a child spawned for it (or a cover) listens again. */
  disarmed?: boolean;
}

export interface LifecycleEvents {
  reload(e: { generation: number }): void;
  reloaded(e: { generation: number; durationMs: number }): void;
  reloadFailed(e: { generation: number; error: Error }): void;
  exit(child: Child): void;
  recycled(e: { slot: number; pid: number; replacedBy: number; reason: string }): void;
  scaled(e: { workers: number; from: number }): void;
  rolledBack(e: { generation: number; from: number }): void;
}

/** When a worker is replaced, one at a time, by a fresh one of its generation (recycling). */
export interface RecycleLimits {
  maxMemory?: number;
  maxRequests?: number;
  maxLifetime?: number;
}

export interface LifecycleOptions {
  slots: number;
  heartbeatTimeout: number;
  spawn: Spawn;
  log: Logger;
  events: LifecycleEvents;
  rollout?: 'parallel' | 'phased' | 'canary';
  /** rollout 'canary': the first `slots` slots are the canary, judged after `window` ms (canary.ts). */
  canary?: CanaryLimits & { slots: number };
  recycle?: RecycleLimits;
  /** Old generations that may drain at once; past it the oldest is closed. Default: no bound. */
  maxDraining?: number;
  /** ms a replaced generation stays parked after a reload, for an instant rollback. Default 0: it drains at once. */
  keepPrevious?: number;
  /** scale() grows past every slot so far: make that slot's sockets (the group never shrinks). */
  addSlot?: (slot: number) => void;
  /** ms the workers keep accepting after a stop begins, each response closing its connection. Default 0. */
  stopDelay?: number;
  /** For the stop's log line: each worker is killed this long after it was told to drain. */
  stopTimeout?: number;
  /**
   * A slot no healthy child can cover (they all predate its sockets) and no
   * child of its own serves: start accepting from its sockets and handing
   * what is queued to `by`. Without it such a slot's queue waits for its own
   * next worker.
   */
  rescue?: (slot: number, by: Child) => RescuedSockets;
  /** The listening sockets; without them (unit tests) a stop only drains. */
  sockets?: StopSockets;
  clock?: Clock;
  /** [0, 1): the jitter of maxRequests and maxLifetime. Default Math.random. */
  random?: () => number;
}

/** Thrown by judgeCanary: the verdict, and the canary's children. */
class CanaryUnhealthy extends Error {
  constructor(message: string, readonly canary: Child[]) {
    super(message);
  }
}

/** The master's workers: generations, the slot table, respawns, heartbeats, covers and stop. */
export class Lifecycle {
  /** The committed generation (0 before start-up completes). */
  generation = 0;
  private readonly slots: Slot[];
  /** Slots in service; slots from here to the table's end are retired (scaled down). */
  private active: number;
  /** The workers the last accepted scale() asked for, until it is done. */
  private scaleTarget?: { workers: number };
  private readonly children = new Set<Child>();
  /** How many slots' sockets each child received (it can cover only those). */
  private readonly knownSlots = new WeakMap<Child, number>();
  /** Each child's last heartbeat: when the ping went out, and how many intervals in a row went unanswered. */
  private readonly heartbeats = new WeakMap<Child, { sentAt: number; missed: number }>();
  /** Each child's share of up to 10% added to maxRequests and maxLifetime. */
  private readonly jitter = new WeakMap<Child, number>();
  private lastSpawned = 0;
  /** The worker being recycled now: one at a time. */
  private recycling?: Child;
  /** The generation a reload replaced, parked for keepPrevious ms: what rollback() puts back. */
  private previous?: { generation: number; children: Child[]; timer: unknown };
  /** Reloads, scaling and recycles change the slot table one at a time. */
  private exclusive: Promise<unknown> = Promise.resolve();
  private readonly reloader = new Reloader(() => this.locked(() => this.nextGeneration()));
  private readonly clock: Clock;
  private heartbeat?: unknown;
  private started = false;
  private stopping = false;
  private stopped?: Promise<void>;

  constructor(private readonly options: LifecycleOptions) {
    this.clock = options.clock ?? realClock;
    this.active = options.slots;
    this.slots = Array.from({ length: options.slots }, (_, index) => this.newSlot(index));
  }

  private newSlot(index: number): Slot {
    return { index, crashes: 0, restarts: 0, recycles: 0 };
  }

  /** Slots in service (workers per generation). */
  get workers(): number {
    return this.active;
  }

  /** The workers asked for: the last accepted scale() while one is pending, else `workers`. */
  get target(): number {
    return this.scaleTarget?.workers ?? this.active;
  }

  /** Every slot ever made: the ones in service, then the retired ones. */
  get slotCount(): number {
    return this.slots.length;
  }

  get reloading(): boolean {
    return this.started && this.generation > 0 && this.reloader.busy;
  }

  /** Every live child, in spawn order. */
  get all(): Child[] {
    return [...this.children];
  }

  // --- start ---------------------------------------------------------------

  /** Starts generation 1; resolves once it serves. Heartbeats start with it. */
  start(): Promise<void> {
    if (this.started) return Promise.reject(new Error('already started'));
    this.started = true;
    this.scheduleHeartbeat();
    return this.reloader.request();
  }

  private spawn(slot: number, generation: number): Child {
    const child = this.options.spawn(slot, generation);
    this.slots[slot].disarmed = false; // its listen() arms the slot's sockets again
    this.knownSlots.set(child, this.slots.length);
    this.children.add(child);
    void child.exited.then(() => this.onExit(child));
    return child;
  }

  // --- reload --------------------------------------------------------------

  /** Starts a reload, or joins the one queued behind the reload (or start-up) in progress. */
  reload(): Promise<void> {
    if (!this.started) return Promise.reject(new Error('not serving yet; no reload'));
    if (this.stopping) return Promise.reject(new Error('stopping; no reload'));
    return this.reloader.request();
  }

  /** Runs `job` once no other reload, scale or recycle is changing the slot table. */
  private locked<T>(job: () => Promise<T>): Promise<T> {
    const run = this.exclusive.then(job, job);
    this.exclusive = run.catch(() => undefined);
    return run;
  }

  private async nextGeneration(): Promise<void> {
    await this.rescues();
    if (this.stopping) throw new ReloadCancelled('stopping; no reload');
    const first = this.generation === 0;
    const number = ++this.lastSpawned;
    const started = this.clock.now();
    if (!first) {
      this.options.log.info(`reload: starting generation ${number}`);
      this.options.events.reload({ generation: number });
    }
    const slots = Array.from({ length: this.active }, (_, i) => i);
    const canary = !first && this.options.rollout === 'canary' ? this.options.canary : undefined;
    const phased = !first && (this.options.rollout === 'phased' || canary !== undefined);
    const keep = !first && (this.options.keepPrevious ?? 0) > 0;
    const before = this.generation;
    let old: Child[] = [];
    let switched = 0;
    try {
      // parallel: one generation of every slot; phased: one slot at a time;
      // canary: the canary's slots together (their old workers parked until
      // the verdict), then the others one at a time
      const steps = canary
        ? [slots.slice(0, canary.slots), ...slots.slice(canary.slots).map((slot) => [slot])]
        : phased ? slots.map((slot) => [slot]) : [slots];
      for (const [index, step] of steps.entries()) {
        const judged = canary !== undefined && index === 0;
        const next = new Generation(number, step, (slot, g) => this.spawn(slot, g));
        await next.ready();
        if (this.stopping) {
          void next.abandon();
          throw new ReloadCancelled(`generation ${number} cancelled: stopping`);
        }
        const replaced = next.children.flatMap((child) => this.commitSlot(child, keep || judged));
        this.rebalance();
        old = old.concat(replaced);
        switched += step.length;
        if (judged) {
          await this.judgeCanary(next.children, number, before, canary);
          if (!keep) for (const c of replaced) if (c.state === 'parked') c.drain();
        }
        // phased: the next slot starts once this one's old worker is gone, so
        // at most N+1 worker processes exist at any moment (unless kept)
        if (phased && !keep) await Promise.all(replaced.map((c) => c.exited));
      }
    } catch (error) {
      const parked = old.filter((c) => c.state === 'parked' && c.alive);
      let stopped: Child[] = [];
      if (first || error instanceof ReloadCancelled || this.stopping) {
        for (const c of parked) c.drain();
        throw error;
      }
      const reason = error instanceof Error ? error.message : String(error);
      let serving = `generation ${before} keeps serving`;
      if (switched > 0 && parked.length === switched) {
        stopped = this.restore(parked);
        serving = `generation ${before} serves again (slots 0-${switched - 1} were switched back)`;
      } else if (error instanceof CanaryUnhealthy) {
        // a canary slot whose old worker was already gone: the canary must not serve on
        stopped = this.restore(parked);
        const lost = error.canary.filter((c) => this.slots[c.slot].serving === c);
        for (const c of lost) {
          this.slots[c.slot].serving = undefined;
          c.drain();
          stopped.push(c);
          this.scheduleRespawn(c, 'was an unhealthy canary, and its slot had no old worker to put back');
        }
        this.rebalance();
        serving = `generation ${before} serves again (slot(s) ${lost.map((c) => c.slot).join(', ')} had no old worker and are respawned)`;
      } else if (switched > 0) {
        for (const c of parked) c.drain();
        serving = `the rollout stopped at slot ${switched}: slots 0-${switched - 1} serve generation ${number}, ` +
          `slots ${switched}-${slots.length - 1} generation ${before}`;
      }
      await this.stoppedAccepting(stopped, `reload to generation ${number} failed`);
      const failure = new Error(`reload to generation ${number} failed, ${serving}: ${reason}`);
      this.options.log.error(failure.message);
      this.options.events.reloadFailed({ generation: number, error: failure });
      throw failure;
    }
    this.generation = number;
    if (keep) this.keep(before, old.filter((c) => c.state === 'parked'));
    this.rebalance();
    this.boundDraining();
    await this.stoppedAccepting(old, `reload to generation ${number}`);
    if (!first) {
      const durationMs = Math.round(this.clock.now() - started);
      const drained = [...new Set(old.map((c) => c.generation))].join(', ') || '-';
      this.options.log.info(`reload: generation ${number} ready in ${durationMs} ms; draining generation ${drained}`);
      this.options.events.reloaded({ generation: number, durationMs });
    }
  }

  /**
   * Installs a ready child in its slot; the children it replaces drain, or
   * with `park` the serving one is parked (keepPrevious). Returns them.
   */
  private commitSlot(child: Child, park = false): Child[] {
    const slot = this.slots[child.slot];
    this.clock.clearTimeout(slot.backoff);
    slot.backoff = undefined;
    slot.crashes = 0;
    const serving = slot.serving;
    const replaced = [serving, slot.replacing].filter((c): c is Child => c !== undefined);
    slot.serving = child;
    slot.replacing = undefined;
    for (const c of replaced) {
      if (park && c === serving && c.state === 'ready') c.park();
      else c.drain(child);
    }
    return replaced;
  }

  /** At most maxDraining old generations drain at once: past it, the oldest one's workers are closed now. */
  private boundDraining(): void {
    const max = this.options.maxDraining;
    if (max === undefined) return;
    const draining = this.all.filter((c) => c.state === 'draining' || c.state === 'unresponsive');
    const generations = [...new Set(draining.map((c) => c.generation))].sort((a, b) => a - b);
    for (const generation of generations.slice(0, Math.max(0, generations.length - max))) {
      const workers = draining.filter((c) => c.generation === generation);
      this.options.log.warn(
        `maxDraining (${max}): generation ${generation} still has ${workers.length} worker(s) draining; closing them now`,
      );
      for (const c of workers) c.kill();
    }
  }

  // --- between reloads -----------------------------------------------------

  private onExit(child: Child): void {
    this.children.delete(child);
    this.options.events.exit(child);
    const slot = this.slots[child.slot];
    if (slot.serving === child) {
      slot.serving = undefined;
      if (!this.stopping && slot.index < this.active) this.scheduleRespawn(child, 'exited');
    } else if (slot.replacing === child) {
      slot.replacing = undefined;
      if (!this.stopping && slot.index < this.active) this.scheduleRespawn(child, 'exited before it was ready');
    }
    this.rebalance();
  }

  /**
   * A slot lost its child: respawn it after a backoff that doubles with each
   * crash in a row (a crash loop must not spin), of the committed generation.
   */
  private scheduleRespawn(lost: Child, how: string): void {
    const slot = this.slots[lost.slot];
    if (this.clock.now() - lost.startedAt > RESPAWN_RESET_MS) slot.crashes = 0;
    const delay = Math.min(RESPAWN_MAX_MS, RESPAWN_BASE_MS * 2 ** slot.crashes++);
    this.options.log.warn(`${lost.describe()} ${how}; respawning slot ${slot.index} in ${delay} ms`);
    const respawn = () => {
      slot.backoff = undefined;
      if (this.stopping || slot.serving || slot.replacing || slot.index >= this.active) return;
      slot.restarts++;
      const child = this.spawn(slot.index, this.generation);
      slot.replacing = child;
      child.ready.then(() => this.promote(child, lost.pid), () => {}); // its exit schedules the next try
    };
    // a worker's listen must not race a rescue's shutdown of the slot's sockets
    slot.backoff = this.clock.setTimeout(() => (slot.rescue ? void slot.rescue.then(respawn) : respawn()), delay);
  }

  /** A respawned child became ready: it serves its slot now. */
  private promote(child: Child, replacedPid: number): void {
    const slot = this.slots[child.slot];
    if (slot.replacing !== child || this.stopping || !child.alive || child.state !== 'ready') return;
    slot.replacing = undefined;
    slot.serving = child;
    this.options.log.info(`${child.describe()} replaced pid ${replacedPid}`);
    this.rebalance();
  }

  /** At least every second: maxMemory samples RSS with each answer. */
  private get heartbeatInterval(): number {
    return Math.max(50, Math.min(1_000, Math.floor(this.options.heartbeatTimeout / 4)));
  }

  private scheduleHeartbeat(): void {
    this.heartbeat = this.clock.setTimeout(() => {
      // A timer can fire before the poll phase has read answers that came in
      // meanwhile (after a pause, all of them): judge after it has.
      setImmediate(() => {
        if (this.stopping) return;
        this.checkHeartbeats();
        this.scheduleHeartbeat();
      });
    }, this.heartbeatInterval);
  }

  /**
   * Ready children answer pings. Silence is counted in heartbeat intervals
   * during which this loop was running, not in clock time: after a pause of
   * the whole process group the first tick finds at most one more interval
   * unanswered, and the answers arrive before the next. One silent for
   * heartbeatTimeout that way is taken out of service and replaced.
   */
  private checkHeartbeats(): void {
    const now = this.clock.now();
    const interval = this.heartbeatInterval;
    for (const child of this.children) {
      if (child.state !== 'ready') continue;
      const beat = this.heartbeats.get(child) ?? { sentAt: now, missed: -1 };
      beat.missed = child.lastSeen >= beat.sentAt ? 0 : beat.missed + 1;
      if (beat.missed * interval < this.options.heartbeatTimeout) {
        beat.sentAt = now;
        this.heartbeats.set(child, beat);
        child.ping();
        continue;
      }
      this.options.log.warn(
        `${child.describe()} has not answered a heartbeat for ${beat.missed} intervals of ${interval} ms in a row ` +
          `(heartbeatTimeout ${this.options.heartbeatTimeout} ms); taking it out of service`,
      );
      child.markUnresponsive();
      const slot = this.slots[child.slot];
      if (slot.serving === child) slot.serving = undefined;
      else if (slot.replacing === child) slot.replacing = undefined;
      else continue;
      this.scheduleRespawn(child, 'is unresponsive');
    }
    this.rebalance();
    this.recycleOne(now);
  }

  /**
   * Every vacant slot gets a cover (the healthy serving child with the fewest
   * covers); a cover ends when the slot has its own ready child again or the
   * covering child stops being healthy. With no healthy child at all
   * (workers: 1), the slot's queue holds connections until one is ready.
   */
  private rebalance(): void {
    if (this.stopping) return;
    const healthy = (c: Child | undefined): c is Child =>
      c !== undefined && c.alive && c.state === 'ready' && this.slots[c.slot].serving === c;
    for (const slot of this.slots) {
      const by = slot.cover;
      if (by && (healthy(slot.serving) || !healthy(by))) {
        if (by.alive) by.uncover(slot.index);
        slot.cover = undefined;
      }
    }
    const servers = this.slots.map((s) => s.serving).filter(healthy);
    const load = (c: Child) => this.slots.filter((s) => s.cover === c).length;
    for (const slot of this.slots) {
      if (healthy(slot.serving) || slot.cover || slot.rescue) continue;
      const able = (c: Child) => (this.knownSlots.get(c) ?? 0) > slot.index; // it has that slot's sockets
      const by = servers.filter(able).sort((a, b) => load(a) - load(b))[0];
      if (!by) {
        this.rescueStranded(slot, servers.sort((a, b) => load(a) - load(b))[0]);
        continue;
      }
      by.cover(slot.index);
      slot.cover = by;
      slot.disarmed = false; // the cover's listen arms it
      const why = slot.index >= this.active ? 'is retired' : 'has no ready worker';
      this.options.log.info(`slot ${slot.index} ${why}; ${by.describe()} accepts its connections meanwhile`);
    }
  }

  /**
   * A vacant slot nobody can cover: unless a child of its own is starting or
   * serving there (it accepts, or is about to), its queued connections go to
   * `by` and its sockets stop listening, so no connection waits where nobody
   * accepts. A scale-up's slot is like that while only workers older than it
   * serve: its worker died before it was ready, or right after.
   */
  private rescueStranded(slot: Slot, by: Child | undefined): void {
    const rescue = this.options.rescue;
    if (!rescue || !by || slot.disarmed) return;
    const own = this.all.some((c) => c.slot === slot.index && c.alive && (c.state === 'starting' || c.state === 'ready'));
    if (own) return;
    const what = `slot ${slot.index}`;
    this.options.log.warn(`${what} has no worker and no sibling holds its sockets; ${by.describe()} takes its queued connections, and it stops listening until a worker of its own starts`);
    const sockets = rescue(slot.index, by);
    slot.rescue = this.acceptQueued(sockets, what)
      .catch((error: unknown) => this.options.log.warn(`${what}: rescue failed: ${error instanceof Error ? error.message : String(error)}`))
      .finally(() => {
        sockets.close();
        slot.rescue = undefined;
        slot.disarmed = true;
        this.rebalance();
      });
  }

  /** Resolves once no slot is being rescued. */
  private async rescues(): Promise<void> {
    await Promise.all(this.slots.map((s) => s.rescue));
  }

  /** The truth about each slot, for status. */
  slotState(index: number): { state: SlotState; pid?: number; coveredBy?: number; restarts: number; recycles: number } {
    const slot = this.slots[index];
    const counts = { restarts: slot.restarts, recycles: slot.recycles };
    const coveredBy = slot.cover?.pid;
    if (slot.serving?.state === 'ready') return { state: 'ready', pid: slot.serving.pid, ...counts };
    if (this.stopping) return { state: 'stopped', ...counts };
    if (index >= this.active) return { state: 'retired', coveredBy, ...counts };
    if (slot.replacing) return { state: 'starting', pid: slot.replacing.pid, coveredBy, ...counts };
    if (slot.backoff !== undefined) return { state: 'backing-off', coveredBy, ...counts };
    const unresponsive = this.all.find((c) => c.slot === index && c.state === 'unresponsive');
    if (unresponsive) return { state: 'unresponsive', pid: unresponsive.pid, coveredBy, ...counts };
    return { state: 'starting', coveredBy, ...counts };
  }

  // --- policies: recycle ---------------------------------------------------

  /** Why `child` should be recycled now, if it should. */
  private recycleReason(child: Child, now: number): string | undefined {
    const { maxMemory, maxRequests, maxLifetime } = this.options.recycle ?? {};
    let jitter = this.jitter.get(child);
    if (jitter === undefined) this.jitter.set(child, (jitter = 1 + (this.options.random ?? Math.random)() * 0.1));
    const mb = (bytes: number) => `${(bytes / 2 ** 20).toFixed(1)} MB`;
    if (maxMemory !== undefined && child.rss > maxMemory) return `RSS ${mb(child.rss)} is above maxMemory (${mb(maxMemory)})`;
    if (maxRequests !== undefined && child.requests >= Math.round(maxRequests * jitter)) {
      return `served ${child.requests} requests (maxRequests ${maxRequests}, plus jitter)`;
    }
    if (maxLifetime !== undefined && now - child.startedAt >= maxLifetime * jitter) {
      return `up ${Math.round(now - child.startedAt)} ms (maxLifetime ${maxLifetime} ms, plus jitter)`;
    }
    return undefined;
  }

  /**
   * Replaces one worker that crossed a recycling limit, as a phased reload
   * replaces a slot: a fresh worker of the same generation starts, and only
   * once it is ready does the old one drain. One at a time (the next waits
   * until the old worker has exited), never during a reload (which replaces
   * everyone anyway).
   */
  private recycleOne(now: number): void {
    if (this.recycling || this.reloader.busy || this.stopping || !this.options.recycle) return;
    for (const { serving: old } of this.slots) {
      if (old?.state !== 'ready') continue;
      const reason = this.recycleReason(old, now);
      if (!reason) continue;
      this.recycling = old;
      return void this.locked(() => this.recycle(old, reason));
    }
  }

  private async recycle(old: Child, reason: string): Promise<void> {
    this.options.log.info(`recycling ${old.describe()}: ${reason}`);
    const next = new Generation(old.generation, [old.slot], (slot, g) => this.spawn(slot, g));
    const slot = this.slots[old.slot];
    try {
      await next.ready();
      if (slot.serving !== old || this.stopping) {
        void next.abandon(); // a reload or a crash replaced it meanwhile
        return;
      }
      const fresh = next.children[0];
      this.commitSlot(fresh);
      this.rebalance();
      slot.recycles++;
      this.options.log.info(`recycled slot ${old.slot}: ${fresh.describe()} serves; pid ${old.pid} drains`);
      this.options.events.recycled({ slot: old.slot, pid: old.pid, replacedBy: fresh.pid, reason });
      await old.exited; // the next recycle waits: at most N+1 workers
    } catch (error) {
      this.options.log.warn(`recycling ${old.describe()} failed, it keeps serving: ${error instanceof Error ? error.message : String(error)}`);
    } finally {
      this.recycling = undefined;
    }
  }

  // --- policies: scale -----------------------------------------------------

  /**
   * Sets the number of workers (1 to MAX_WORKERS). Growing starts one worker
   * per new slot, each ready before the next; shrinking drains the workers of
   * the highest slots. A slot's socket stays in the SO_REUSEPORT group for
   * the master's life (a closed listener would reset its queued connections),
   * so a retired slot is served by a sibling, and growing again reuses it.
   * A new slot's socket takes connections only once its first worker listens
   * on it, so a scale-up whose worker never starts strands none.
   */
  scale(workers: number): Promise<void> {
    if (!Number.isInteger(workers) || workers < 1 || workers > MAX_WORKERS) {
      return Promise.reject(new RangeError(`workers must be an integer from 1 to ${MAX_WORKERS} (MAX_WORKERS), got ${workers}; nothing changed`));
    }
    if (!this.started || this.generation === 0) return Promise.reject(new Error('not serving yet; no scaling'));
    if (this.stopping) return Promise.reject(new Error('stopping; no scaling'));
    const target = { workers };
    this.scaleTarget = target;
    const done = this.locked(() => this.applyScale(workers));
    const settled = () => {
      if (this.scaleTarget === target) this.scaleTarget = undefined;
    };
    done.then(settled, settled);
    return done;
  }

  private async applyScale(workers: number): Promise<void> {
    if (this.stopping) throw new Error('stopping; no scaling');
    const from = this.active;
    if (workers === from) return;
    while (this.slots.length < workers) {
      this.options.addSlot?.(this.slots.length);
      this.slots.push(this.newSlot(this.slots.length));
    }
    if (workers > from) {
      for (let slot = from; slot < workers; slot++) {
        await this.rescues();
        const next = new Generation(this.generation, [slot], (s, g) => this.spawn(s, g));
        try {
          await next.ready();
        } catch (error) {
          const reason = error instanceof Error ? error.message : String(error);
          throw new Error(`scaling to ${workers} workers stopped at ${this.active}: ${reason}`);
        }
        if (this.stopping) {
          void next.abandon();
          throw new Error('stopping; no scaling');
        }
        this.active = slot + 1;
        this.commitSlot(next.children[0]);
        this.rebalance();
      }
    } else {
      // A retired slot's socket must have an acceptor: a worker started before
      // the slot existed has not got its sockets, so the first one is renewed.
      const knows = (c: Child | undefined, slot: number) => c !== undefined && (this.knownSlots.get(c) ?? 0) > slot;
      const survivors = this.slots.slice(0, workers).map((s) => s.serving);
      const uncoverable = this.slots.slice(workers).some((s) => !survivors.some((c) => knows(c, s.index)));
      if (uncoverable) {
        const renewed = new Generation(this.generation, [0], (s, g) => this.spawn(s, g));
        await renewed.ready();
        this.commitSlot(renewed.children[0]);
        this.rebalance();
      }
      this.active = workers;
      for (const slot of this.slots.slice(workers, from)) {
        this.clock.clearTimeout(slot.backoff);
        slot.backoff = undefined;
        for (const c of [slot.serving, slot.replacing]) c?.drain(this.slots[0]?.serving);
        slot.serving = undefined;
        slot.replacing = undefined;
      }
      this.rebalance();
    }
    this.options.log.info(`scaled from ${from} to ${workers} worker(s)`);
    this.options.events.scaled({ workers, from });
  }

  // --- policies: rollback --------------------------------------------------

  /**
   * Instant rollback: the generation kept by keepPrevious accepts again and
   * the current one drains; no process starts. Rejects when none is kept
   * (keepPrevious unset or over, one of its workers gone, or scaled since).
   */
  rollback(): Promise<void> {
    if (this.stopping) return Promise.reject(new Error('stopping; no rollback'));
    return this.locked(async () => {
      const previous = this.previous;
      if (!previous) {
        throw new Error('nothing to roll back to: no previous generation is kept (set keepPrevious, handover start --keep-previous 60s; it is kept that long after a reload)');
      }
      const lost = previous.children.find((c) => !c.alive || c.state !== 'parked');
      if (lost || previous.children.length !== this.active) {
        this.release();
        throw new Error(`cannot roll back to generation ${previous.generation}: ${lost ? `${lost.describe()} is gone` : 'the number of workers changed since'}`);
      }
      this.clock.clearTimeout(previous.timer);
      this.previous = undefined;
      const from = this.generation;
      const replaced = this.restore(previous.children);
      this.generation = previous.generation;
      await this.stoppedAccepting(replaced, `rollback to generation ${previous.generation}`);
      this.options.log.info(`rollback: generation ${previous.generation} serves again; generation ${from} drains`);
      this.options.events.rolledBack({ generation: previous.generation, from });
    });
  }

  /**
   * rollout 'canary': `canary` serves beside generation `before`'s other slots
   * for the window; throws the verdict in numbers if it is unhealthy (the
   * caller then puts the parked old workers back).
   */
  private async judgeCanary(canary: Child[], generation: number, before: number, limits: CanaryLimits): Promise<void> {
    const indexes = new Set(canary.map((c) => c.slot));
    const baseline = this.slots.map((s) => s.serving).filter((c): c is Child => c?.state === 'ready' && !indexes.has(c.slot));
    this.options.log.info(`canary: generation ${generation} serves slot(s) ${[...indexes].join(', ')} for ${limits.window} ms ` +
      `beside ${baseline.length} worker(s) of generation ${before}; their old workers are parked until the verdict`);
    const verdict = await watchCanary(canary, baseline, limits, this.clock);
    if (this.stopping) throw new ReloadCancelled(`generation ${generation} cancelled: stopping`);
    if (!verdict.healthy) throw new CanaryUnhealthy(`the canary is unhealthy: ${verdict.reason}`, canary);
    this.options.log.info(`canary: generation ${generation} is healthy (${verdict.reason}); continuing slot by slot`);
  }

  /** Puts parked children back in their slots; the ones serving there now drain. Returns those. */
  private restore(parked: Child[]): Child[] {
    const replaced: Child[] = [];
    for (const c of parked) {
      const slot = this.slots[c.slot];
      // a canary that crashed scheduled its slot's respawn: the old worker serves it instead
      this.clock.clearTimeout(slot.backoff);
      slot.backoff = undefined;
      c.resume();
      const current = slot.serving;
      slot.serving = c;
      if (current) {
        current.drain(c);
        replaced.push(current);
      }
    }
    this.rebalance();
    return replaced;
  }

  /**
   * Resolves once each of `children` (just drained or parked) accepts no more,
   * so that when a reload or rollback resolves, every new connection reaches
   * the generation that serves now. A frozen worker cannot say so: the wait
   * ends at heartbeatTimeout on the monotonic clock, judged after pending I/O
   * was read (invariant 19), and the log names it.
   */
  private async stoppedAccepting(children: Child[], what: string): Promise<void> {
    const waiting = new Set(children);
    if (waiting.size === 0) return;
    const timeout = this.options.heartbeatTimeout;
    let timer: unknown;
    const bound = new Promise<void>((resolve) => {
      timer = this.clock.setTimeout(() => setImmediate(resolve), timeout);
    });
    await Promise.race([Promise.all(children.map((c) => c.stoppedAccepting.then(() => waiting.delete(c)))), bound]);
    this.clock.clearTimeout(timer);
    for (const c of waiting) {
      this.options.log.warn(`${what}: ${c.describe()} did not say it stopped accepting within heartbeatTimeout (${timeout} ms); ` +
        'it may still take new connections until it exits');
    }
  }

  /** Keeps a replaced generation parked for keepPrevious ms; an older kept one drains now. */
  private keep(generation: number, children: Child[]): void {
    this.release();
    const timer = this.clock.setTimeout(() => {
      this.options.log.info(`keepPrevious (${this.options.keepPrevious} ms) is over: generation ${generation} drains`);
      this.release();
    }, this.options.keepPrevious ?? 0);
    this.previous = { generation, children, timer };
  }

  /** Drains the kept generation, if any. */
  private release(): void {
    const previous = this.previous;
    if (!previous) return;
    this.clock.clearTimeout(previous.timer);
    this.previous = undefined;
    for (const c of previous.children) c.drain();
  }

  // --- stop ----------------------------------------------------------------

  /**
   * Stops; resolves when every child has exited. Called again, it returns the
   * same stop (kill() is what forces one). Top to bottom:
   *   1. every worker hears a stop has begun (each response now says
   *      Connection: close; a stop signal a worker got too waits for step 5),
   *      and every ready worker accepts from every slot's sockets (a frozen
   *      worker's queue is served too); stopDelay (if set): keep accepting
   *   2. new SYNs are dropped, so no connection joins a queue about to close
   *      (its client retries in a second and is refused)
   *   3. the workers accept what is queued, until the queues are empty
   *   4. the sockets stop listening, in every process holding a copy (a frozen
   *      worker's included): from now on a new connection is refused at once
   *   5. every worker drains (each is killed at stopTimeout); the master's
   *      copies close
   * `force` (a failed start) kills every child instead and closes the sockets.
   */
  stop(force = false): Promise<void> {
    this.stopped ??= this.shutdown(force);
    return this.stopped;
  }

  private async shutdown(force: boolean): Promise<void> {
    this.stopping = true;
    this.clock.clearTimeout(this.heartbeat);
    this.clock.clearTimeout(this.previous?.timer);
    for (const slot of this.slots) this.clock.clearTimeout(slot.backoff);
    const { sockets, stopDelay = 0 } = this.options;
    if (force) {
      this.kill();
    } else {
      for (const child of this.children) child.closing();
      this.coverEverySlot();
      if (stopDelay > 0) {
        this.options.log.info(`stopping: still accepting for stopDelay (${stopDelay} ms)`);
        await this.sleep(stopDelay);
      }
      await this.rescues(); // a rescue's hand-offs land before anyone drains
      if (sockets) await this.acceptQueued(sockets, 'stopping');
      const upTo = this.options.stopTimeout === undefined ? '' : `, up to ${this.options.stopTimeout} ms`;
      this.options.log.info(`stopping: draining ${this.children.size} worker(s)${upTo}`);
      for (const child of this.children) child.drain();
    }
    sockets?.close();
    await Promise.all([...this.children].map((c) => c.exited));
  }

  /**
   * Step 1 of a stop: every ready child accepts from every slot's sockets it
   * has, so each queue empties even when its own worker is frozen or slow
   * (its missed heartbeats are not judged yet; the stop cannot wait for them).
   */
  private coverEverySlot(): void {
    for (const child of this.children) {
      if (!child.alive || child.state !== 'ready') continue;
      for (const slot of this.slots) {
        if (slot.index === child.slot || slot.cover === child || (this.knownSlots.get(child) ?? 0) <= slot.index) continue;
        child.cover(slot.index);
      }
    }
  }

  /** Steps 2-4 of a stop (and a rescue, for `what`'s sockets): refuse new handshakes, let the queues empty, stop listening. */
  private async acceptQueued(sockets: StopSockets, what: string): Promise<void> {
    sockets.refuseNew();
    const started = this.clock.now();
    let emptySince: number | undefined;
    for (;;) {
      const now = this.clock.now();
      const queued = sockets.queued();
      emptySince = queued > 0 ? undefined : emptySince ?? now;
      if (emptySince !== undefined && now - emptySince >= STOP_QUIET_MS) break;
      if (now - started >= STOP_QUEUE_WAIT_MS) {
        if (queued > 0) {
          this.options.log.warn(`${what}: ${queued} connection(s) still queued after ${STOP_QUEUE_WAIT_MS} ms with no worker accepting them; they are reset`);
        }
        break;
      }
      await this.sleep(STOP_POLL_MS);
    }
    sockets.shutdown();
  }

  private sleep(ms: number): Promise<void> {
    return new Promise((resolve) => this.clock.setTimeout(resolve, ms));
  }

  /** A forced stop: kills every child now. */
  kill(): void {
    this.stopping = true;
    for (const child of this.children) child.kill();
  }
}
