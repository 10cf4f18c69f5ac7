// Fakes for driving the lifecycle state machine (src/master/lifecycle.ts) in
// milliseconds: a clock that moves only when told, and children whose
// readiness, heartbeats and exits the test decides.
import type { Child, ChildState, Clock } from '../../src/master/lifecycle';
import type { Logger } from '../../src/log';

export class FakeClock implements Clock {
  private time = 0;
  private nextId = 1;
  private readonly timers = new Map<number, { at: number; fn: () => void }>();

  now(): number {
    return this.time;
  }

  setTimeout(fn: () => void, ms: number): unknown {
    const id = this.nextId++;
    this.timers.set(id, { at: this.time + ms, fn });
    return id;
  }

  clearTimeout(handle: unknown): void {
    this.timers.delete(handle as number);
  }

  /**
   * A pause of the whole process group (Ctrl-Z, docker pause, a VM freeze):
   * time moves on while nothing runs; the timers that fell due fire once each
   * at the next advance(), as a resumed event loop fires them.
   */
  pause(ms: number): void {
    this.time += ms;
  }

  /** Moves time forward, firing due timers in order (and the ones they set). */
  async advance(ms: number): Promise<void> {
    const end = this.time + ms;
    await settle(); // what is already under way sets its timers first
    for (;;) {
      const due = [...this.timers.entries()].filter(([, t]) => t.at <= end).sort((a, b) => a[1].at - b[1].at)[0];
      if (!due) break;
      this.timers.delete(due[0]);
      this.time = Math.max(this.time, due[1].at);
      due[1].fn();
      await settle();
    }
    this.time = end;
    await settle();
  }
}

/** Lets every pending promise callback run. */
export async function settle(): Promise<void> {
  for (let i = 0; i < 10; i++) await new Promise((resolve) => setImmediate(resolve));
}

let nextPid = 1000;

export class FakeChild implements Child {
  readonly pid = nextPid++;
  state: ChildState = 'starting';
  alive = true;
  lastSeen: number;
  requests = 0;
  rss = 0;
  readonly startedAt: number;
  readonly ready: Promise<void>;
  readonly exited: Promise<void>;
  /** What the lifecycle asked of it, in order. */
  readonly calls: string[] = [];
  /** Answers pings by itself unless frozen. */
  frozen = false;
  /** Says it stopped accepting right after drain() or park(), unless this is set: then at ack() or its exit. */
  holdsAck = false;
  stoppedAccepting: Promise<void> = Promise.resolve();
  private resolveAck = () => {};
  private resolveReady!: () => void;
  private rejectReady!: (e: Error) => void;
  private resolveExit!: () => void;

  constructor(readonly slot: number, readonly generation: number, private readonly clock: FakeClock) {
    this.startedAt = clock.now();
    this.lastSeen = clock.now();
    this.ready = new Promise((resolve, reject) => {
      this.resolveReady = resolve;
      this.rejectReady = reject;
    });
    this.ready.catch(() => {});
    this.exited = new Promise((resolve) => (this.resolveExit = resolve));
  }

  describe(): string {
    return `fake ${this.pid} (slot ${this.slot}, generation ${this.generation})`;
  }

  /** The worker reports ready. */
  becomeReady(): void {
    if (this.state !== 'starting' || !this.alive) return;
    this.state = 'ready';
    this.lastSeen = this.clock.now();
    this.resolveReady();
  }

  /** The process exits (crash, or the end of a drain). */
  exit(): void {
    if (!this.alive) return;
    this.alive = false;
    this.resolveAck();
    this.rejectReady(new Error(`${this.describe()} exited before it was ready`));
    this.resolveExit();
  }

  ping(): void {
    this.calls.push('ping');
    if (!this.frozen && this.alive) this.lastSeen = this.clock.now();
  }

  markUnresponsive(): void {
    this.calls.push('unresponsive');
    this.state = 'unresponsive';
  }

  /** It says it stopped accepting (after a drain or park while holdsAck). */
  ack(): void {
    this.resolveAck();
  }

  private stopAccepting(): void {
    this.stoppedAccepting = this.holdsAck && this.alive ? new Promise((resolve) => (this.resolveAck = resolve)) : Promise.resolve();
  }

  drain(): void {
    this.calls.push('drain');
    this.stopAccepting();
    if (this.state === 'starting') return this.kill();
    if (this.state !== 'unresponsive') this.state = 'draining';
  }

  closing(): void {
    this.calls.push('closing');
  }

  park(): void {
    this.calls.push('park');
    this.stopAccepting();
    if (this.state === 'ready') this.state = 'parked';
  }

  resume(): void {
    this.calls.push('resume');
    if (this.state !== 'parked') return;
    this.state = 'ready';
    this.lastSeen = this.clock.now(); // as WorkerProcess.resume: a parked child is not pinged
  }

  abandon(): void {
    this.calls.push('abandon');
    if (this.state === 'ready') this.state = 'draining';
    else this.kill();
  }

  kill(): void {
    this.calls.push('kill');
    this.exit();
  }

  cover(slot: number): void {
    this.calls.push(`cover ${slot}`);
  }

  uncover(slot: number): void {
    this.calls.push(`uncover ${slot}`);
  }

  /** Slots it covers now, from its calls. */
  get covering(): number[] {
    const slots = new Set<number>();
    for (const call of this.calls) {
      const [verb, slot] = call.split(' ');
      if (verb === 'cover') slots.add(Number(slot));
      if (verb === 'uncover') slots.delete(Number(slot));
    }
    return [...slots];
  }
}

/** A spawner that keeps every child it made, in order. */
export class FakeSpawner {
  readonly children: FakeChild[] = [];
  constructor(private readonly clock: FakeClock) {}

  readonly spawn = (slot: number, generation: number): FakeChild => {
    const child = new FakeChild(slot, generation, this.clock);
    this.children.push(child);
    return child;
  };

  /** Children of `generation`, by slot. */
  of(generation: number): FakeChild[] {
    return this.children.filter((c) => c.generation === generation).sort((a, b) => a.slot - b.slot);
  }

  get live(): FakeChild[] {
    return this.children.filter((c) => c.alive);
  }

  /** The newest child of a slot. */
  latest(slot: number): FakeChild {
    return this.children.filter((c) => c.slot === slot).at(-1)!;
  }
}

export const quietLog: Logger = { info: () => {}, warn: () => {}, error: () => {} };
