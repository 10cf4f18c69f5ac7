// The worker lifecycle, written once. Start-up, reload, crash respawn,
// heartbeats and stop all run through this state machine; the master and
// single-process mode only wire it to real processes (worker-process.ts), and
// the unit tests wire it to fakes with a fake clock.
//
// A generation, top to bottom (Generation.ready):
//   1. spawn one child per slot
//   2. wait until every child has reported ready
//   3. check that every child is *still* alive and ready (one may have died
//      while a sibling was finishing its ready hook)
//   4. commit: each slot's serving child is replaced, the old ones drain
// A failure anywhere abandons the whole new generation; the old one serves on.
//
// Reloads are coalesced (Reloader): one runs; any number of requests during it
// make exactly one more. Start-up is the first run, so a reload requested
// during start-up waits for it and then runs.
//
// Between reloads each slot has at most one serving child. A slot whose child
// has crashed, is backing off before its respawn, is starting, or stopped
// answering heartbeats is *vacant*. A vacant slot's accept queue is served by
// a healthy sibling (a cover) until the slot's own child is ready again, so no
// accept queue is left without a process accepting from it (invariant 11).

import type { Logger } from '../log';

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
  /** Clock time of its last sign of life (ready, or a heartbeat answer). */
  readonly lastSeen: number;
  /** Requests served and resident memory (bytes), as of its last heartbeat answer. */
  readonly requests: number;
  readonly rss: number;
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
  /** Stop accepting and finish in-flight work as a drain does, but stay alive (keepPrevious). */
  park(): void;
  /** A parked child accepts again (a rollback). */
  resume(): void;
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

export interface Clock {
  now(): number;
  setTimeout(fn: () => void, ms: number): unknown;
  clearTimeout(handle: unknown): void;
}

export const realClock: Clock = {
  now: () => Date.now(),
  setTimeout: (fn, ms) => setTimeout(fn, ms),
  clearTimeout: (handle) => clearTimeout(handle as NodeJS.Timeout),
};

/** Respawn backoff after a crash: 100 ms doubling to 10 s; reset after 30 s of life. */
export const RESPAWN_BASE_MS = 100;
export const RESPAWN_MAX_MS = 10_000;
export const RESPAWN_RESET_MS = 30_000;

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
  rollout?: 'parallel' | 'phased';
  recycle?: RecycleLimits;
  /** Old generations that may drain at once; past it the oldest is closed. Default: no bound. */
  maxDraining?: number;
  /** ms a replaced generation stays parked after a reload, for an instant rollback. Default 0: it drains at once. */
  keepPrevious?: number;
  /** scale() grows past every slot so far: make that slot's sockets (the group never shrinks). */
  addSlot?: (slot: number) => void;
  clock?: Clock;
  /** [0, 1): the jitter of maxRequests and maxLifetime. Default Math.random. */
  random?: () => number;
}

/** Thrown by a reload cut short by a stop: a cancellation, not a failed deploy. */
export class ReloadCancelled extends Error {
  readonly code = 'ERR_HANDOVER_RELOAD_CANCELLED';
}

/** The master's workers: generations, the slot table, respawns, heartbeats, covers and stop. */
export class Lifecycle {
  /** The committed generation (0 before start-up completes). */
  generation = 0;
  /** Restarts of each slot after a crash or a missed heartbeat. */
  readonly restarts: number[];
  /** Recycles of each slot (maxMemory, maxRequests, maxLifetime). */
  readonly recycles: number[];
  /** The worker being recycled now: one at a time. */
  private recycling?: Child;
  /** Each child's share of up to 10% added to maxRequests and maxLifetime. */
  private readonly jitter = new WeakMap<Child, number>();
  private lastSpawned = 0;
  /** Slots in service; slots from here to the table's end are retired (scaled down). */
  private active: number;
  /** How many slots' sockets each child received (it can cover only those). */
  private readonly knownSlots = new WeakMap<Child, number>();
  /** The generation a reload replaced, parked for keepPrevious ms: what rollback() puts back. */
  private previous?: { generation: number; children: Child[]; timer: unknown };
  /** Reloads, scaling and recycles change the slot table one at a time. */
  private exclusive: Promise<unknown> = Promise.resolve();
  /** Each slot's serving child: committed by a generation, or a respawn that became ready. */
  private readonly serving: (Child | undefined)[];
  /** Each slot's respawn that is starting. */
  private readonly replacing: (Child | undefined)[];
  private readonly backoff: unknown[];
  private readonly crashes: number[];
  /** Vacant slot -> the sibling accepting from its sockets. */
  private readonly covers = new Map<number, Child>();
  private readonly children = new Set<Child>();
  private readonly reloader = new Reloader(() => this.locked(() => this.nextGeneration()));
  private readonly clock: Clock;
  private heartbeat?: unknown;
  private started = false;
  private stopping = false;

  constructor(private readonly options: LifecycleOptions) {
    this.clock = options.clock ?? realClock;
    this.active = options.slots;
    this.serving = new Array(options.slots).fill(undefined);
    this.replacing = new Array(options.slots).fill(undefined);
    this.backoff = new Array(options.slots).fill(undefined);
    this.crashes = new Array(options.slots).fill(0);
    this.restarts = new Array(options.slots).fill(0);
    this.recycles = new Array(options.slots).fill(0);
  }

  /** Slots in service (workers per generation). */
  get workers(): number {
    return this.active;
  }

  /** Every slot ever made: the ones in service, then the retired ones. */
  get slotCount(): number {
    return this.serving.length;
  }

  get reloading(): boolean {
    return this.started && this.generation > 0 && this.reloader.busy;
  }

  /** Every live child, in spawn order. */
  get all(): Child[] {
    return [...this.children];
  }

  /** Starts generation 1; resolves once it serves. Heartbeats start with it. */
  start(): Promise<void> {
    if (this.started) return Promise.reject(new Error('already started'));
    this.started = true;
    this.scheduleHeartbeat();
    return this.reloader.request();
  }

  /** Starts a reload, or joins the one queued behind the reload (or start-up) in progress. */
  reload(): Promise<void> {
    if (!this.started) return Promise.reject(new Error('not serving yet; no reload'));
    if (this.stopping) return Promise.reject(new Error('stopping; no reload'));
    return this.reloader.request();
  }

  /**
   * Sets the number of workers. Growing starts one worker per new slot, each
   * ready before the next; shrinking drains the workers of the highest slots.
   * A slot's socket stays in the SO_REUSEPORT group for the master's life (a
   * closed listener would reset its queued connections), so a retired slot is
   * served by a sibling, and growing again reuses it.
   */
  scale(workers: number): Promise<void> {
    if (!Number.isInteger(workers) || workers < 1) return Promise.reject(new RangeError(`workers must be an integer >= 1, got ${workers}`));
    if (!this.started || this.generation === 0) return Promise.reject(new Error('not serving yet; no scaling'));
    if (this.stopping) return Promise.reject(new Error('stopping; no scaling'));
    return this.locked(() => this.applyScale(workers));
  }

  /** Runs `job` once no other reload, scale or recycle is changing the slot table. */
  private locked<T>(job: () => Promise<T>): Promise<T> {
    const run = this.exclusive.then(job, job);
    this.exclusive = run.catch(() => undefined);
    return run;
  }

  private async applyScale(workers: number): Promise<void> {
    if (this.stopping) throw new Error('stopping; no scaling');
    const from = this.active;
    if (workers === from) return;
    for (let slot = this.serving.length; slot < workers; slot++) {
      this.options.addSlot?.(slot);
      this.serving.push(undefined);
      this.replacing.push(undefined);
      this.backoff.push(undefined);
      this.crashes.push(0);
      this.restarts.push(0);
      this.recycles.push(0);
    }
    if (workers > from) {
      for (let slot = from; slot < workers; slot++) {
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
      const survivors = this.serving.slice(0, workers);
      const uncoverable = Array.from({ length: this.serving.length - workers }, (_, i) => workers + i)
        .some((slot) => !survivors.some((c) => knows(c, slot)));
      if (uncoverable) {
        const renewed = new Generation(this.generation, [0], (s, g) => this.spawn(s, g));
        await renewed.ready();
        this.commitSlot(renewed.children[0]);
        this.rebalance();
      }
      this.active = workers;
      for (let slot = workers; slot < from; slot++) {
        this.clock.clearTimeout(this.backoff[slot]);
        this.backoff[slot] = undefined;
        for (const c of [this.serving[slot], this.replacing[slot]]) c?.drain(this.serving[slot % workers]);
        this.serving[slot] = undefined;
        this.replacing[slot] = undefined;
      }
      this.rebalance();
    }
    this.options.log.info(`scaled from ${from} to ${workers} worker(s)`);
    this.options.events.scaled({ workers, from });
  }

  /** Drains every child; resolves when all have exited (each is killed at its stopTimeout). */
  async stop(): Promise<void> {
    this.stopping = true;
    this.clock.clearTimeout(this.heartbeat);
    this.clock.clearTimeout(this.previous?.timer);
    for (const timer of this.backoff) this.clock.clearTimeout(timer);
    for (const child of this.children) child.drain();
    await Promise.all([...this.children].map((c) => c.exited));
  }

  /** A forced stop: kills every child now. */
  kill(): void {
    this.stopping = true;
    for (const child of this.children) child.kill();
  }

  /** The truth about each slot, for status. */
  slotState(slot: number): { state: SlotState; pid?: number; coveredBy?: number; restarts: number; recycles: number } {
    const serving = this.serving[slot];
    const counts = { restarts: this.restarts[slot], recycles: this.recycles[slot] };
    const coveredBy = this.covers.get(slot)?.pid;
    if (serving?.state === 'ready') return { state: 'ready', pid: serving.pid, ...counts };
    if (this.stopping) return { state: 'stopped', ...counts };
    if (slot >= this.active) return { state: 'retired', coveredBy, ...counts };
    const replacing = this.replacing[slot];
    if (replacing) return { state: 'starting', pid: replacing.pid, coveredBy, ...counts };
    if (this.backoff[slot] !== undefined) return { state: 'backing-off', coveredBy, ...counts };
    const unresponsive = this.all.find((c) => c.slot === slot && c.state === 'unresponsive');
    if (unresponsive) return { state: 'unresponsive', pid: unresponsive.pid, coveredBy, ...counts };
    return { state: 'starting', coveredBy, ...counts };
  }

  private spawn(slot: number, generation: number): Child {
    const child = this.options.spawn(slot, generation);
    this.knownSlots.set(child, this.serving.length);
    this.children.add(child);
    void child.exited.then(() => this.onExit(child));
    return child;
  }

  private async nextGeneration(): Promise<void> {
    if (this.stopping) throw new ReloadCancelled('stopping; no reload');
    const first = this.generation === 0;
    const number = ++this.lastSpawned;
    const started = this.clock.now();
    if (!first) {
      this.options.log.info(`reload: starting generation ${number}`);
      this.options.events.reload({ generation: number });
    }
    const slots = Array.from({ length: this.active }, (_, i) => i);
    const phased = !first && this.options.rollout === 'phased';
    const keep = !first && (this.options.keepPrevious ?? 0) > 0;
    const before = this.generation;
    let old: Child[] = [];
    let switched = 0;
    try {
      // parallel: one generation of every slot; phased: one slot at a time
      for (const step of phased ? slots.map((slot) => [slot]) : [slots]) {
        const next = new Generation(number, step, (slot, g) => this.spawn(slot, g));
        await next.ready();
        if (this.stopping) {
          void next.abandon();
          throw new ReloadCancelled(`generation ${number} cancelled: stopping`);
        }
        const replaced = next.children.flatMap((child) => this.commitSlot(child, keep));
        this.rebalance();
        old = old.concat(replaced);
        switched += step.length;
        // phased: the next slot starts once this one's old worker is gone, so
        // at most N+1 worker processes exist at any moment (unless kept)
        if (phased && !keep) await Promise.all(replaced.map((c) => c.exited));
      }
    } catch (error) {
      const parked = old.filter((c) => c.state === 'parked' && c.alive);
      if (first || error instanceof ReloadCancelled || this.stopping) {
        for (const c of parked) c.drain();
        throw error;
      }
      const reason = error instanceof Error ? error.message : String(error);
      let serving = `generation ${before} keeps serving`;
      if (switched > 0 && parked.length === switched) {
        this.restore(parked);
        serving = `generation ${before} serves again (slots 0-${switched - 1} were switched back)`;
      } else if (switched > 0) {
        for (const c of parked) c.drain();
        serving = `the rollout stopped at slot ${switched}: slots 0-${switched - 1} serve generation ${number}, ` +
          `slots ${switched}-${slots.length - 1} generation ${before}`;
      }
      const failure = new Error(`reload to generation ${number} failed, ${serving}: ${reason}`);
      this.options.log.error(failure.message);
      this.options.events.reloadFailed({ generation: number, error: failure });
      throw failure;
    }
    this.generation = number;
    if (keep) this.keep(before, old.filter((c) => c.state === 'parked'));
    this.rebalance();
    this.boundDraining();
    if (!first) {
      const durationMs = this.clock.now() - started;
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
    const slot = child.slot;
    this.clock.clearTimeout(this.backoff[slot]);
    this.backoff[slot] = undefined;
    this.crashes[slot] = 0;
    const serving = this.serving[slot];
    const replaced = [serving, this.replacing[slot]].filter((c): c is Child => c !== undefined);
    this.serving[slot] = child;
    this.replacing[slot] = undefined;
    for (const c of replaced) {
      if (park && c === serving && c.state === 'ready') c.park();
      else c.drain(child);
    }
    return replaced;
  }

  /** Puts parked children back in their slots; the ones serving there now drain. */
  private restore(parked: Child[]): void {
    for (const c of parked) {
      c.resume();
      const current = this.serving[c.slot];
      this.serving[c.slot] = c;
      current?.drain(c);
    }
    this.rebalance();
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
        throw new Error('nothing to roll back to: no previous generation is kept (set keepPrevious; it is kept that long after a reload)');
      }
      const lost = previous.children.find((c) => !c.alive || c.state !== 'parked');
      if (lost || previous.children.length !== this.active) {
        this.release();
        throw new Error(`cannot roll back to generation ${previous.generation}: ${lost ? `${lost.describe()} is gone` : 'the number of workers changed since'}`);
      }
      this.clock.clearTimeout(previous.timer);
      this.previous = undefined;
      const from = this.generation;
      this.restore(previous.children);
      this.generation = previous.generation;
      this.options.log.info(`rollback: generation ${previous.generation} serves again; generation ${from} drains`);
      this.options.events.rolledBack({ generation: previous.generation, from });
    });
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

  private onExit(child: Child): void {
    this.children.delete(child);
    this.options.events.exit(child);
    const slot = child.slot;
    if (this.serving[slot] === child) {
      this.serving[slot] = undefined;
      if (!this.stopping && slot < this.active) this.scheduleRespawn(child, 'exited');
    } else if (this.replacing[slot] === child) {
      this.replacing[slot] = undefined;
      if (!this.stopping && slot < this.active) this.scheduleRespawn(child, 'exited before it was ready');
    }
    this.rebalance();
  }

  /**
   * A slot lost its child: respawn it after a backoff that doubles with each
   * crash in a row (a crash loop must not spin), of the committed generation.
   */
  private scheduleRespawn(lost: Child, how: string): void {
    const slot = lost.slot;
    if (this.clock.now() - lost.startedAt > RESPAWN_RESET_MS) this.crashes[slot] = 0;
    const delay = Math.min(RESPAWN_MAX_MS, RESPAWN_BASE_MS * 2 ** this.crashes[slot]++);
    this.options.log.warn(`${lost.describe()} ${how}; respawning slot ${slot} in ${delay} ms`);
    this.backoff[slot] = this.clock.setTimeout(() => {
      this.backoff[slot] = undefined;
      if (this.stopping || this.serving[slot] || this.replacing[slot] || slot >= this.active) return;
      this.restarts[slot]++;
      const child = this.spawn(slot, this.generation);
      this.replacing[slot] = child;
      child.ready.then(() => this.promote(child, lost.pid), () => {}); // its exit schedules the next try
    }, delay);
  }

  /** A respawned child became ready: it serves its slot now. */
  private promote(child: Child, replacedPid: number): void {
    if (this.replacing[child.slot] !== child || this.stopping || !child.alive || child.state !== 'ready') return;
    this.replacing[child.slot] = undefined;
    this.serving[child.slot] = child;
    this.options.log.info(`${child.describe()} replaced pid ${replacedPid}`);
    this.rebalance();
  }

  private scheduleHeartbeat(): void {
    // at least every second: maxMemory samples RSS with each answer
    const interval = Math.max(50, Math.min(1_000, Math.floor(this.options.heartbeatTimeout / 4)));
    this.heartbeat = this.clock.setTimeout(() => {
      this.checkHeartbeats();
      if (!this.stopping) this.scheduleHeartbeat();
    }, interval);
  }

  /** Ready children answer pings; one silent for heartbeatTimeout is taken out of service and replaced. */
  private checkHeartbeats(): void {
    const now = this.clock.now();
    for (const child of this.children) {
      if (child.state !== 'ready') continue;
      if (now - child.lastSeen <= this.options.heartbeatTimeout) {
        child.ping();
        continue;
      }
      this.options.log.warn(
        `${child.describe()} has not answered a heartbeat for ${now - child.lastSeen} ms ` +
          `(heartbeatTimeout ${this.options.heartbeatTimeout} ms); taking it out of service`,
      );
      child.markUnresponsive();
      const slot = child.slot;
      if (this.serving[slot] === child) {
        this.serving[slot] = undefined;
        this.scheduleRespawn(child, 'is unresponsive');
      } else if (this.replacing[slot] === child) {
        this.replacing[slot] = undefined;
        this.scheduleRespawn(child, 'is unresponsive');
      }
    }
    this.rebalance();
    this.recycleOne(now);
  }

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
      return `up ${now - child.startedAt} ms (maxLifetime ${maxLifetime} ms, plus jitter)`;
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
    for (const old of this.serving) {
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
    try {
      await next.ready();
      if (this.serving[old.slot] !== old || this.stopping) {
        void next.abandon(); // a reload or a crash replaced it meanwhile
        return;
      }
      const fresh = next.children[0];
      this.commitSlot(fresh);
      this.rebalance();
      this.recycles[old.slot]++;
      this.options.log.info(`recycled slot ${old.slot}: ${fresh.describe()} serves; pid ${old.pid} drains`);
      this.options.events.recycled({ slot: old.slot, pid: old.pid, replacedBy: fresh.pid, reason });
      await old.exited; // the next recycle waits: at most N+1 workers
    } catch (error) {
      this.options.log.warn(`recycling ${old.describe()} failed, it keeps serving: ${error instanceof Error ? error.message : String(error)}`);
    } finally {
      this.recycling = undefined;
    }
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
      c !== undefined && c.alive && c.state === 'ready' && this.serving[c.slot] === c;
    for (const [slot, by] of this.covers) {
      if (healthy(this.serving[slot]) || !healthy(by)) {
        if (by.alive) by.uncover(slot);
        this.covers.delete(slot);
      }
    }
    for (let slot = 0; slot < this.serving.length; slot++) {
      if (healthy(this.serving[slot]) || this.covers.has(slot)) continue;
      const load = (c: Child) => [...this.covers.values()].filter((by) => by === c).length;
      const able = (c: Child) => (this.knownSlots.get(c) ?? 0) > slot; // it has that slot's sockets
      const by = this.serving.filter(healthy).filter(able).sort((a, b) => load(a) - load(b))[0];
      if (!by) continue;
      by.cover(slot);
      this.covers.set(slot, by);
      const why = slot >= this.active ? 'is retired' : 'has no ready worker';
      this.options.log.info(`slot ${slot} ${why}; ${by.describe()} accepts its connections meanwhile`);
    }
  }
}
