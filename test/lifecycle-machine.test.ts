// The worker lifecycle state machine (src/master/lifecycle.ts) driven by a
// fake spawner and a fake clock: every race the process-level tests can only
// hit by chance, each pinned down in milliseconds.
import { spawn } from 'node:child_process';
import { EventEmitter } from 'node:events';
import * as fs from 'node:fs';
import { describe, expect, it, onTestFinished } from 'vitest';
import {
  type Child, Lifecycle, type LifecycleOptions, RESPAWN_BASE_MS, RESPAWN_MAX_MS, Reloader, STOP_QUEUE_WAIT_MS, STOP_QUIET_MS, type StopSockets,
} from '../src/master/lifecycle';
import { fitFrame } from '../src/master/master';
import { WorkerProcess } from '../src/master/worker-process';
import { MAX_WORKERS } from '../src/options';
import { MAX_FRAME_BYTES, type MasterStatus, encode } from '../src/protocol';
import { FakeClock, FakeSpawner, quietLog, settle } from './helpers/fake-lifecycle';

const HEARTBEAT_MS = 1_000;

function setup(slots: number, more: Partial<LifecycleOptions> = {}) {
  const clock = new FakeClock();
  const spawner = new FakeSpawner(clock);
  const outcomes: string[] = [];
  const lifecycle = new Lifecycle({
    slots,
    heartbeatTimeout: HEARTBEAT_MS,
    spawn: spawner.spawn,
    clock,
    log: quietLog,
    random: () => 0,
    ...more,
    events: {
      reload: ({ generation }) => outcomes.push(`reload ${generation}`),
      reloaded: ({ generation }) => outcomes.push(`reloaded ${generation}`),
      reloadFailed: ({ generation }) => outcomes.push(`failed ${generation}`),
      exit: (child: Child) => outcomes.push(`exit ${child.pid}`),
      recycled: ({ slot, reason }) => outcomes.push(`recycled ${slot}: ${reason}`),
      scaled: ({ workers }) => outcomes.push(`scaled ${workers}`),
      rolledBack: ({ generation }) => outcomes.push(`rolled back to ${generation}`),
    },
  });
  /** Starts and makes generation 1 ready. */
  const started = async () => {
    const start = lifecycle.start();
    await settle();
    for (const c of spawner.of(1)) c.becomeReady();
    await start;
  };
  const states = () => Array.from({ length: slots }, (_, s) => lifecycle.slotState(s).state);
  return { clock, spawner, lifecycle, outcomes, started, states };
}

describe('start-up', () => {
  it('commits generation 1 once every worker is ready', async () => {
    const { lifecycle, spawner, started, states } = setup(3);
    await started();
    expect(lifecycle.generation).toBe(1);
    expect(spawner.children).toHaveLength(3);
    expect(states()).toEqual(['ready', 'ready', 'ready']);
  });

  it('fails and kills the rest when a worker of generation 1 exits before ready', async () => {
    const { lifecycle, spawner } = setup(2);
    const start = lifecycle.start();
    await settle();
    spawner.of(1)[0].exit();
    await expect(start).rejects.toThrow(/exited before it was ready/);
    expect(spawner.live).toEqual([]);
  });

  it('a reload requested during start-up waits for it, then runs once; generation 1 is drained, not orphaned', async () => {
    const { lifecycle, spawner, outcomes } = setup(2);
    const start = lifecycle.start();
    await settle();
    const early = [lifecycle.reload(), lifecycle.reload(), lifecycle.reload()];
    expect(spawner.children).toHaveLength(2); // nothing spawned until start-up is done
    for (const c of spawner.of(1)) c.becomeReady();
    await start;
    await settle();
    expect(spawner.of(2)).toHaveLength(2);
    for (const c of spawner.of(2)) c.becomeReady();
    await Promise.all(early);
    expect(outcomes.filter((o) => o.startsWith('reloaded'))).toEqual(['reloaded 2']);
    expect(lifecycle.generation).toBe(2);
    for (const old of spawner.of(1)) expect(old.calls).toContain('drain');
    expect(spawner.children).toHaveLength(4);
  });
});

describe('reload', () => {
  it('drains the old generation only after every new worker is ready', async () => {
    const { lifecycle, spawner, started } = setup(2);
    await started();
    const reload = lifecycle.reload();
    await settle();
    spawner.of(2)[0].becomeReady();
    await settle();
    for (const old of spawner.of(1)) expect(old.calls).not.toContain('drain');
    spawner.of(2)[1].becomeReady();
    await reload;
    for (const old of spawner.of(1)) expect(old.calls).toContain('drain');
    // committing a generation slot by slot never makes a slot look vacant
    for (const c of spawner.children) expect(c.calls.filter((call) => call.startsWith('cover'))).toEqual([]);
  });

  it('a new worker that is ready and then dies before its sibling is ready fails the reload; the old generation keeps every slot', async () => {
    const { lifecycle, spawner, started, states, outcomes } = setup(2);
    await started();
    const reload = lifecycle.reload();
    await settle();
    const [a, b] = spawner.of(2);
    a.becomeReady();
    await settle();
    a.exit(); // ready, then dead, while b is still in its ready hook
    await settle();
    b.becomeReady();
    await expect(reload).rejects.toThrow(/exited after it was ready/);
    expect(lifecycle.generation).toBe(1);
    expect(states()).toEqual(['ready', 'ready']);
    for (const old of spawner.of(1)) {
      expect(old.alive).toBe(true);
      expect(old.calls).not.toContain('drain');
    }
    expect(b.calls).toContain('abandon'); // the ready sibling drains
    expect(outcomes).toContain('failed 2');
  });

  it('a new worker that dies after the commit is respawned like any crash', async () => {
    const { lifecycle, spawner, started, clock, states } = setup(2);
    await started();
    const reload = lifecycle.reload();
    await settle();
    for (const c of spawner.of(2)) c.becomeReady();
    await reload;
    spawner.of(2)[1].exit();
    await settle();
    expect(states()[1]).toBe('backing-off');
    await clock.advance(RESPAWN_BASE_MS);
    const respawn = spawner.latest(1);
    expect(respawn.generation).toBe(2);
    respawn.becomeReady();
    await settle();
    expect(states()).toEqual(['ready', 'ready']);
  });

  it('requests during a reload make exactly one more', async () => {
    const { lifecycle, spawner, started, outcomes } = setup(1);
    await started();
    const first = lifecycle.reload();
    await settle();
    const queued = Array.from({ length: 10 }, () => lifecycle.reload());
    spawner.of(2)[0].becomeReady();
    await first;
    await settle();
    spawner.of(3)[0].becomeReady();
    await Promise.all(queued);
    await settle();
    expect(outcomes.filter((o) => o.startsWith('reloaded'))).toEqual(['reloaded 2', 'reloaded 3']);
    expect(spawner.of(4)).toEqual([]);
  });

  it('a stop during a reload cancels it: the new workers are abandoned, everyone drains', async () => {
    const { lifecycle, spawner, started, outcomes } = setup(2);
    await started();
    const reload = lifecycle.reload().then(() => 'reloaded', (e: Error) => e.message);
    await settle();
    spawner.of(2)[0].becomeReady();
    const stopped = lifecycle.stop();
    await settle();
    for (const c of spawner.children) c.exit();
    await stopped;
    expect(await reload).toMatch(/stopping|exited/);
    expect(outcomes.filter((o) => o.startsWith('failed'))).toEqual([]);
    await expect(lifecycle.reload()).rejects.toThrow(/stopping/);
  });

  it('a respawn still starting when a reload commits is drained; the slot gets the new generation', async () => {
    const { lifecycle, spawner, started, clock, states } = setup(2);
    await started();
    spawner.of(1)[0].exit();
    await clock.advance(RESPAWN_BASE_MS);
    const respawn = spawner.latest(0);
    expect(respawn.generation).toBe(1);
    const reload = lifecycle.reload();
    await settle();
    for (const c of spawner.of(2)) c.becomeReady();
    await reload;
    expect(respawn.calls).toContain('drain');
    expect(states()).toEqual(['ready', 'ready']);
    expect(lifecycle.slotState(0).pid).toBe(spawner.of(2)[0].pid);
  });
});

describe('every accept queue has an acceptor (invariant 11)', () => {
  it('a crashed slot is covered by a sibling at once, until its respawn is ready', async () => {
    const { spawner, started, clock, states } = setup(2);
    await started();
    const [a, b] = spawner.of(1);
    b.exit();
    await settle();
    expect(a.covering).toEqual([1]);
    expect(states()).toEqual(['ready', 'backing-off']);
    await clock.advance(RESPAWN_BASE_MS);
    expect(states()[1]).toBe('starting');
    expect(a.covering).toEqual([1]);
    spawner.latest(1).becomeReady();
    await settle();
    expect(a.covering).toEqual([]);
    expect(states()).toEqual(['ready', 'ready']);
  });

  it('a crash-looping slot backs off exponentially (capped) and stays covered throughout', async () => {
    const { spawner, started, clock, lifecycle } = setup(2);
    await started();
    const healthy = spawner.of(1)[0];
    spawner.of(1)[1].exit();
    let expected = RESPAWN_BASE_MS;
    for (let i = 0; i < 10; i++) {
      await settle();
      expect(healthy.covering).toEqual([1]);
      const before = spawner.children.length;
      await clock.advance(expected - 1);
      expect(spawner.children.length).toBe(before); // still backing off
      await clock.advance(1);
      expect(spawner.children.length).toBe(before + 1);
      spawner.latest(1).exit(); // throws at start-up again
      expected = Math.min(RESPAWN_MAX_MS, expected * 2);
    }
    expect(lifecycle.slotState(1).restarts).toBe(10);
    expect(healthy.covering).toEqual([1]);
  });

  it('covers are spread: with 3 slots and 2 down, the survivor covers both; when the coverer dies its slots move on', async () => {
    const { spawner, started, clock } = setup(3);
    await started();
    const [a, b, c] = spawner.of(1);
    b.exit();
    await settle();
    expect([...a.covering, ...c.covering]).toEqual([1]);
    const coverer = a.covering.length ? a : c;
    const other = coverer === a ? c : a;
    coverer.exit();
    await settle();
    expect(other.covering.sort()).toEqual([coverer.slot, 1].sort());
    await clock.advance(RESPAWN_BASE_MS);
    for (const s of [1, coverer.slot]) spawner.latest(s).becomeReady();
    await settle();
    expect(other.covering).toEqual([]);
  });

  it('with one worker there is no sibling: the slot stays uncovered (its queue holds connections) until the respawn is ready', async () => {
    const { spawner, started, clock, states } = setup(1);
    await started();
    spawner.of(1)[0].exit();
    await clock.advance(RESPAWN_BASE_MS);
    spawner.latest(0).becomeReady();
    await settle();
    expect(states()).toEqual(['ready']);
  });

  it('a worker that stops answering heartbeats is taken out of service, covered and replaced', async () => {
    const { spawner, started, clock, states, lifecycle } = setup(2);
    await started();
    const [a, b] = spawner.of(1);
    b.frozen = true;
    await clock.advance(HEARTBEAT_MS / 2);
    expect(states()).toEqual(['ready', 'ready']);
    await clock.advance(HEARTBEAT_MS);
    expect(b.calls).toContain('unresponsive');
    expect(a.covering).toEqual([1]);
    expect(a.calls).not.toContain('unresponsive');
    expect(['backing-off', 'starting']).toContain(states()[1]);
    await clock.advance(RESPAWN_BASE_MS);
    spawner.latest(1).becomeReady();
    await settle();
    expect(states()).toEqual(['ready', 'ready']);
    expect(a.covering).toEqual([]);
    expect(lifecycle.slotState(1).restarts).toBe(1);
    b.exit(); // killed at stopTimeout: nothing more to do
    await settle();
    expect(states()).toEqual(['ready', 'ready']);
  });

  it('a new worker that freezes while its sibling starts fails the reload', async () => {
    const { lifecycle, spawner, started, clock } = setup(2);
    await started();
    const reload = lifecycle.reload();
    await settle();
    const [a, b] = spawner.of(2);
    a.becomeReady();
    a.frozen = true;
    await clock.advance(HEARTBEAT_MS * 2);
    b.becomeReady();
    await expect(reload).rejects.toThrow(/became unresponsive after it was ready/);
    expect(lifecycle.generation).toBe(1);
  });

  it('a stop ends every cover, respawn timer and heartbeat', async () => {
    const { lifecycle, spawner, started, clock } = setup(2);
    await started();
    spawner.of(1)[1].exit();
    await settle();
    const stopped = lifecycle.stop();
    spawner.of(1)[0].exit();
    await stopped;
    const count = spawner.children.length;
    await clock.advance(RESPAWN_MAX_MS * 2);
    expect(spawner.children.length).toBe(count);
    expect(lifecycle.slotState(0).state).toBe('stopped');
  });
});

describe('phased rollout', () => {
  /** Live worker processes (draining ones too), and the serving (ready, committed) ones. */
  function census(spawner: FakeSpawner, lifecycle: Lifecycle, slots: number) {
    const live = spawner.live.length;
    const serving = Array.from({ length: slots }, (_, s) => lifecycle.slotState(s)).filter((s) => s.state === 'ready').length;
    return { live, serving };
  }

  it('replaces one slot at a time: never more than N+1 workers, never fewer than N serving', async () => {
    const { lifecycle, spawner, started, outcomes } = setup(3, { rollout: 'phased' });
    await started();
    const reload = lifecycle.reload();
    for (let slot = 0; slot < 3; slot++) {
      await settle();
      const fresh = spawner.of(2);
      expect(fresh.map((c) => c.slot)).toEqual(Array.from({ length: slot + 1 }, (_, i) => i));
      expect(census(spawner, lifecycle, 3)).toEqual({ live: 4, serving: 3 });
      expect(spawner.of(1)[slot].calls).not.toContain('drain');
      fresh[slot].becomeReady();
      await settle();
      expect(spawner.of(1)[slot].calls).toContain('drain');
      expect(census(spawner, lifecycle, 3)).toEqual({ live: 4, serving: 3 });
      expect(spawner.of(2)).toHaveLength(slot + 1); // the next slot waits for the old worker to exit
      spawner.of(1)[slot].exit(); // drained
    }
    await reload;
    expect(lifecycle.generation).toBe(2);
    expect(outcomes).toContain('reloaded 2');
  });

  it('a failure at the first slot leaves everything on the old generation', async () => {
    const { lifecycle, spawner, started } = setup(2, { rollout: 'phased' });
    await started();
    const reload = lifecycle.reload();
    await settle();
    spawner.of(2)[0].exit();
    await expect(reload).rejects.toThrow(/generation 1 keeps serving/);
    expect(spawner.of(2)).toHaveLength(1); // slot 1 was never touched
    for (const old of spawner.of(1)) expect(old.calls).not.toContain('drain');
  });

  it('a failure later stops the rollout and says which slots serve which generation', async () => {
    const { lifecycle, spawner, started, states } = setup(3, { rollout: 'phased' });
    await started();
    const reload = lifecycle.reload();
    await settle();
    spawner.of(2)[0].becomeReady();
    await settle();
    spawner.of(1)[0].exit(); // drained
    await settle();
    spawner.of(2)[1].exit();
    await expect(reload).rejects.toThrow(/stopped at slot 1: slots 0-0 serve generation 2, slots 1-2 generation 1/);
    expect(states()).toEqual(['ready', 'ready', 'ready']);
    expect(lifecycle.slotState(0).pid).toBe(spawner.of(2)[0].pid);
    expect(lifecycle.slotState(1).pid).toBe(spawner.of(1)[1].pid);
    expect(spawner.of(2)).toHaveLength(2);
  });
});

describe('recycling', () => {
  it('maxRequests: a fresh worker of the same generation replaces the slot; the old one drains only once it is ready', async () => {
    const { lifecycle, spawner, started, clock, outcomes } = setup(2, { recycle: { maxRequests: 100 } });
    await started();
    const [a] = spawner.of(1);
    a.requests = 100;
    await clock.advance(HEARTBEAT_MS);
    const fresh = spawner.latest(0);
    expect(fresh).not.toBe(a);
    expect(fresh.generation).toBe(1);
    expect(a.calls).not.toContain('drain');
    fresh.becomeReady();
    await settle();
    expect(a.calls).toContain('drain');
    expect(lifecycle.slotState(0)).toMatchObject({ state: 'ready', pid: fresh.pid, recycles: 1 });
    expect(outcomes.some((o) => /^recycled 0: served 100 requests/.test(o))).toBe(true);
  });

  it('one at a time: a second worker over its limit waits for the first recycle', async () => {
    const { spawner, started, clock } = setup(2, { recycle: { maxMemory: 1 << 20 } });
    await started();
    for (const c of spawner.of(1)) c.rss = 2 << 20;
    await clock.advance(HEARTBEAT_MS);
    expect(spawner.children).toHaveLength(3);
    await clock.advance(HEARTBEAT_MS * 3);
    expect(spawner.children).toHaveLength(3);
    spawner.latest(0).becomeReady();
    await clock.advance(HEARTBEAT_MS);
    expect(spawner.children).toHaveLength(3); // the old one still drains
    spawner.of(1)[0].exit();
    await clock.advance(HEARTBEAT_MS);
    expect(spawner.children).toHaveLength(4);
    expect(spawner.latest(1).slot).toBe(1);
  });

  it('a replacement that fails to start leaves the old worker serving', async () => {
    const { lifecycle, spawner, started, clock } = setup(1, { recycle: { maxLifetime: 5_000 } });
    await started();
    const [a] = spawner.of(1);
    await clock.advance(6_000);
    const fresh = spawner.latest(0);
    expect(fresh).not.toBe(a);
    fresh.exit();
    await settle();
    expect(a.calls).not.toContain('drain');
    expect(lifecycle.slotState(0)).toMatchObject({ state: 'ready', pid: a.pid, recycles: 0 });
  });

  it('never during a reload: the reload replaces everyone', async () => {
    const { lifecycle, spawner, started, clock } = setup(1, { recycle: { maxRequests: 10 } });
    await started();
    const reload = lifecycle.reload();
    spawner.of(1)[0].requests = 50;
    await clock.advance(HEARTBEAT_MS);
    expect(spawner.children).toHaveLength(2); // generation 2's worker only
    spawner.of(2)[0].becomeReady();
    await reload;
  });
});

describe('scale', () => {
  it('up: new slots start one at a time, each ready before the next; their sockets are made first', async () => {
    const added: number[] = [];
    const { lifecycle, spawner, started } = setup(1, { addSlot: (slot) => added.push(slot) });
    await started();
    const scaled = lifecycle.scale(3);
    await settle();
    expect(added).toEqual([1, 2]);
    expect(spawner.children.map((c) => c.slot)).toEqual([0, 1]);
    spawner.latest(1).becomeReady();
    await settle();
    expect(spawner.children.map((c) => c.slot)).toEqual([0, 1, 2]);
    spawner.latest(2).becomeReady();
    await scaled;
    expect([0, 1, 2].map((slot) => lifecycle.slotState(slot).state)).toEqual(['ready', 'ready', 'ready']);
    expect(lifecycle.workers).toBe(3);
  });

  it('down: the highest slots drain and stay covered by a sibling (their sockets stay in the group); up again reuses them', async () => {
    const added: number[] = [];
    const { lifecycle, spawner, started, clock } = setup(3, { addSlot: (slot) => added.push(slot) });
    await started();
    const [a, b, c] = spawner.of(1);
    await lifecycle.scale(1);
    expect(b.calls).toContain('drain');
    expect(c.calls).toContain('drain');
    expect(a.covering.sort()).toEqual([1, 2]);
    expect(lifecycle.slotState(2)).toMatchObject({ state: 'retired', coveredBy: a.pid });
    b.exit();
    c.exit();
    await clock.advance(RESPAWN_MAX_MS); // retired slots are never respawned
    expect(spawner.children).toHaveLength(3);
    const up = lifecycle.scale(2);
    await settle();
    spawner.latest(1).becomeReady();
    await up;
    expect(added).toEqual([]);
    expect(a.covering).toEqual([2]);
    expect(lifecycle.slotState(1).state).toBe('ready');
  });

  it('a reload after scaling runs the new number of workers', async () => {
    const { lifecycle, spawner, started } = setup(2);
    await started();
    await lifecycle.scale(1);
    const reload = lifecycle.reload();
    await settle();
    expect(spawner.of(2)).toHaveLength(1);
    spawner.of(2)[0].becomeReady();
    await reload;
  });

  /** One worker, then scaled to two: slot 1 is added after slot 0's worker got its sockets. */
  async function scaledUpFromOne() {
    const machine = setup(1, { addSlot: () => {} });
    await machine.started();
    const up = machine.lifecycle.scale(2);
    await settle();
    machine.spawner.latest(1).becomeReady();
    await up;
    return machine;
  }

  it('down below a slot added later: a survivor that lacks its sockets is renewed first, so the retired slot stays covered', async () => {
    const { lifecycle, spawner } = await scaledUpFromOne();
    const [old] = spawner.of(1);
    const down = lifecycle.scale(1);
    await settle();
    const renewed = spawner.latest(0);
    expect(renewed).not.toBe(old);
    expect(spawner.latest(1).calls).not.toContain('drain'); // slot 1 serves until slot 0 is renewed
    renewed.becomeReady();
    await down;
    expect(old.calls).toContain('drain');
    expect(renewed.covering).toEqual([1]);
  });

  it('a worker that started before a slot was added does not cover it (it has not got its sockets)', async () => {
    const { spawner } = await scaledUpFromOne();
    spawner.latest(1).exit();
    await settle();
    expect(spawner.of(1)[0].covering).toEqual([]);
  });

  /** Rescued sockets whose queue holds `queued` connections until the test empties it. */
  function rescuedSockets() {
    const calls: string[] = [];
    const sockets = { queued: 3, rescues: [] as { slot: number; by: number }[], calls };
    const rescue = (slot: number, by: Child): StopSockets => {
      sockets.rescues.push({ slot, by: by.pid });
      calls.push(`rescue ${slot}`);
      return {
        refuseNew: () => calls.push('refuseNew'),
        queued: () => sockets.queued,
        shutdown: () => calls.push('shutdown'),
        close: () => calls.push('close'),
      };
    };
    return { sockets, rescue };
  }

  it('a scale-up slot whose worker dies after its ready, which no sibling can cover, is rescued: its queue goes to the old worker, then it stops listening; its respawn waits for that', async () => {
    const { sockets, rescue } = rescuedSockets();
    const machine = setup(1, { addSlot: () => {}, rescue });
    await machine.started();
    const up = machine.lifecycle.scale(2);
    await settle();
    machine.spawner.latest(1).becomeReady();
    await up;
    const [old] = machine.spawner.of(1);
    const count = machine.spawner.children.length;
    machine.spawner.latest(1).exit();
    await settle();
    expect(sockets.rescues).toEqual([{ slot: 1, by: old.pid }]);
    expect(sockets.calls).toEqual(['rescue 1', 'refuseNew']);
    await machine.clock.advance(RESPAWN_BASE_MS * 2); // the respawn is due, but connections are still being handed over
    expect(machine.spawner.children).toHaveLength(count);
    sockets.queued = 0;
    await machine.clock.advance(STOP_QUIET_MS + 20);
    expect(sockets.calls).toEqual(['rescue 1', 'refuseNew', 'shutdown', 'close']);
    expect(machine.spawner.children).toHaveLength(count + 1); // now the respawn starts; its listen arms the socket again
    expect(machine.spawner.latest(1).slot).toBe(1);
    machine.spawner.latest(1).exit(); // it dies before ready: rescued again, not covered
    await settle();
    expect(sockets.rescues).toHaveLength(2);
  });

  it('a scale-up worker that dies before its ready leaves its slot rescued; a slot that siblings can cover, or whose own worker is starting, is not', async () => {
    const { sockets, rescue } = rescuedSockets();
    sockets.queued = 0;
    const machine = setup(1, { addSlot: () => {}, rescue });
    await machine.started();
    const up = machine.lifecycle.scale(2);
    await machine.clock.advance(HEARTBEAT_MS); // heartbeats rebalance the slots meanwhile
    expect(sockets.rescues).toEqual([]); // its own worker is starting
    machine.spawner.latest(1).exit();
    await expect(up).rejects.toThrow(/stopped at 1/);
    expect(sockets.rescues).toEqual([{ slot: 1, by: machine.spawner.of(1)[0].pid }]);
    const covered = setup(2, { rescue });
    await covered.started();
    covered.spawner.of(1)[1].exit();
    await settle();
    expect(covered.spawner.of(1)[0].covering).toEqual([1]);
    expect(sockets.rescues).toHaveLength(1);
  });
});

describe('keepPrevious and rollback', () => {
  const KEEP_MS = 60_000;

  async function reloaded(lifecycle: Lifecycle, spawner: FakeSpawner, generation: number) {
    const reload = lifecycle.reload();
    await settle();
    for (const c of spawner.of(generation)) c.becomeReady();
    await reload;
  }

  it('a reload parks the old generation; rollback puts it back at once, starting no process, and drains the new one', async () => {
    const { lifecycle, spawner, started, outcomes } = setup(2, { keepPrevious: KEEP_MS });
    await started();
    await reloaded(lifecycle, spawner, 2);
    const [old, fresh] = [spawner.of(1), spawner.of(2)];
    for (const c of old) expect(c.state).toBe('parked');
    const count = spawner.children.length;
    await lifecycle.rollback();
    expect(spawner.children).toHaveLength(count);
    for (const c of old) expect(c.state).toBe('ready');
    for (const c of fresh) expect(c.calls).toContain('drain');
    expect(lifecycle.generation).toBe(1);
    expect([0, 1].map((s) => lifecycle.slotState(s).pid)).toEqual(old.map((c) => c.pid));
    expect(outcomes).toContain('rolled back to 1');
    await expect(lifecycle.rollback()).rejects.toThrow(/nothing to roll back to/);
  });

  it('after keepPrevious the parked generation drains, and rollback says there is nothing to roll back to', async () => {
    const { lifecycle, spawner, started, clock } = setup(1, { keepPrevious: KEEP_MS });
    await started();
    await reloaded(lifecycle, spawner, 2);
    await clock.advance(KEEP_MS);
    expect(spawner.of(1)[0].calls).toContain('drain');
    await expect(lifecycle.rollback()).rejects.toThrow(/nothing to roll back to/);
  });

  it('a parked worker that died makes rollback refuse, and the rest of that generation drains', async () => {
    const { lifecycle, spawner, started } = setup(2, { keepPrevious: KEEP_MS });
    await started();
    await reloaded(lifecycle, spawner, 2);
    spawner.of(1)[0].exit();
    await settle();
    await expect(lifecycle.rollback()).rejects.toThrow(/is gone/);
    expect(spawner.of(1)[1].calls).toContain('drain');
    expect(lifecycle.generation).toBe(2);
  });

  it('without keepPrevious the old generation drains and there is nothing to roll back to', async () => {
    const { lifecycle, spawner, started } = setup(1);
    await started();
    await reloaded(lifecycle, spawner, 2);
    expect(spawner.of(1)[0].calls).toEqual(['drain']);
    await expect(lifecycle.rollback()).rejects.toThrow(/set keepPrevious/);
  });

  it('phased with keepPrevious: a failure at slot 1 restores slot 0\'s old worker', async () => {
    const { lifecycle, spawner, started, states } = setup(3, { keepPrevious: KEEP_MS, rollout: 'phased' });
    await started();
    const reload = lifecycle.reload();
    await settle();
    spawner.of(2)[0].becomeReady();
    await settle();
    spawner.of(2)[1].exit();
    await expect(reload).rejects.toThrow(/generation 1 serves again \(slots 0-0 were switched back\)/);
    const old = spawner.of(1);
    expect(old[0].calls).toEqual(['park', 'resume']);
    expect(spawner.of(2)[0].calls).toContain('drain');
    expect([0, 1, 2].map((s) => lifecycle.slotState(s).pid)).toEqual(old.map((c) => c.pid));
    expect(states()).toEqual(['ready', 'ready', 'ready']);
  });
});

describe('a reload or rollback resolves once the workers it replaced stopped accepting', () => {
  /** Settles `promise`'s outcome into a flag the test can read without awaiting. */
  function watch(promise: Promise<void>) {
    const seen = { done: false };
    promise.then(() => (seen.done = true), () => (seen.done = true));
    return seen;
  }

  it('a reload resolves only after every old worker has said it stopped accepting (an exit counts too)', async () => {
    const { lifecycle, spawner, started, outcomes } = setup(2);
    await started();
    const [a, b] = spawner.of(1);
    a.holdsAck = b.holdsAck = true;
    const reload = watch(lifecycle.reload());
    await settle();
    for (const c of spawner.of(2)) c.becomeReady();
    await settle();
    expect(a.calls).toContain('drain');
    expect(reload.done).toBe(false);
    a.ack();
    await settle();
    expect(reload.done).toBe(false);
    expect(outcomes).not.toContain('reloaded 2');
    b.exit();
    await settle();
    expect(reload.done).toBe(true);
    expect(outcomes).toContain('reloaded 2');
  });

  it('a frozen old worker that never says so holds the reload for heartbeatTimeout only, and the log names it', async () => {
    const warnings: string[] = [];
    const { lifecycle, spawner, started, clock } = setup(2, { log: { ...quietLog, warn: (line: string) => warnings.push(line) } });
    await started();
    const [frozen] = spawner.of(1);
    frozen.holdsAck = true;
    const reload = watch(lifecycle.reload());
    await settle();
    for (const c of spawner.of(2)) c.becomeReady();
    await clock.advance(HEARTBEAT_MS - 1);
    expect(reload.done).toBe(false);
    await clock.advance(1);
    expect(reload.done).toBe(true);
    expect(lifecycle.generation).toBe(2);
    expect(warnings.filter((w) => w.includes('did not say it stopped accepting'))).toEqual([
      expect.stringContaining(frozen.describe()),
    ]);
  });

  it('a rollback resolves only after the generation it replaces has said it stopped accepting', async () => {
    const { lifecycle, spawner, started } = setup(2, { keepPrevious: 60_000 });
    await started();
    const reload = lifecycle.reload();
    await settle();
    for (const c of spawner.of(2)) c.becomeReady();
    await reload;
    const fresh = spawner.of(2);
    for (const c of fresh) c.holdsAck = true;
    const rollback = watch(lifecycle.rollback());
    await settle();
    for (const c of fresh) expect(c.calls).toContain('drain');
    expect(rollback.done).toBe(false);
    fresh[0].ack();
    await settle();
    expect(rollback.done).toBe(false);
    fresh[1].ack();
    await settle();
    expect(rollback.done).toBe(true);
    expect(lifecycle.generation).toBe(1);
  });

  it('a reload with keepPrevious resolves only after the parked generation has said it stopped accepting', async () => {
    const { lifecycle, spawner, started } = setup(1, { keepPrevious: 60_000 });
    await started();
    const [old] = spawner.of(1);
    old.holdsAck = true;
    const reload = watch(lifecycle.reload());
    await settle();
    spawner.of(2)[0].becomeReady();
    await settle();
    expect(old.state).toBe('parked');
    expect(reload.done).toBe(false);
    old.ack();
    await settle();
    expect(reload.done).toBe(true);
  });
});

describe('maxDraining', () => {
  it('past the bound, the oldest draining generation is closed at once', async () => {
    const { lifecycle, spawner, started } = setup(1, { maxDraining: 1 });
    await started();
    for (const generation of [2, 3]) {
      const reload = lifecycle.reload();
      await settle();
      spawner.of(generation)[0].becomeReady();
      await reload;
    }
    // generation 1's worker never finished draining: generation 2's started too
    const [first] = spawner.of(1);
    expect(first.calls).toEqual(expect.arrayContaining(['drain', 'kill']));
    expect(first.alive).toBe(false);
    expect(spawner.of(2)[0].calls).toEqual(['drain']);
    expect(spawner.of(2)[0].alive).toBe(true);
  });
});

describe('Reloader', () => {
  it('runs one job at a time and coalesces every request during a run into one more', async () => {
    let runs = 0;
    const gates: (() => void)[] = [];
    const reloader = new Reloader(() => {
      runs++;
      return new Promise<void>((resolve) => gates.push(resolve));
    });
    const first = reloader.request();
    const more = [reloader.request(), reloader.request()];
    expect(runs).toBe(1);
    gates[0]();
    await first;
    await settle();
    expect(runs).toBe(2);
    gates[1]();
    await Promise.all(more);
    expect(runs).toBe(2);
  });

  it('a failed run still lets the queued one run', async () => {
    let runs = 0;
    const reloader = new Reloader(async () => {
      if (++runs === 1) throw new Error('first fails');
    });
    const first = reloader.request();
    const second = reloader.request();
    await expect(first).rejects.toThrow('first fails');
    await expect(second).resolves.toBeUndefined();
    expect(runs).toBe(2);
  });
});

describe('time is monotonic, and judged after I/O (invariant 19)', () => {
  it('a 7 s pause of the whole process group, with a ping unanswered when it began, replaces no worker', async () => {
    const { lifecycle, spawner, started, clock, states } = setup(2);
    await started();
    const before = spawner.live.map((c) => c.pid);
    for (const c of spawner.live) c.frozen = true; // the group stops with a ping in flight
    await clock.advance(HEARTBEAT_MS / 4);
    clock.pause(7_000);
    for (const c of spawner.live) c.frozen = false; // everyone runs again; answers come as the loop turns
    await clock.advance(HEARTBEAT_MS * 3);
    expect(spawner.live.map((c) => c.pid)).toEqual(before);
    expect(spawner.children.flatMap((c) => c.calls)).not.toContain('unresponsive');
    expect(states()).toEqual(['ready', 'ready']);
    expect(lifecycle.slotState(0).restarts + lifecycle.slotState(1).restarts).toBe(0);
  });

  it('a worker silent for heartbeatTimeout of running time is still replaced after a pause', async () => {
    const { spawner, started, clock } = setup(2);
    await started();
    const [a, b] = spawner.of(1);
    b.frozen = true;
    clock.pause(7_000);
    await clock.advance(HEARTBEAT_MS * 2);
    expect(b.calls).toContain('unresponsive');
    expect(a.calls).not.toContain('unresponsive');
  });
});

describe('scale bounds (invariant 18)', () => {
  it(`past MAX_WORKERS (${MAX_WORKERS}) is a RangeError naming the bound; no slot is made`, async () => {
    const added: number[] = [];
    const { lifecycle, spawner, started } = setup(1, { addSlot: (slot) => added.push(slot) });
    await started();
    await expect(lifecycle.scale(MAX_WORKERS + 1)).rejects.toThrow(new RegExp(`from 1 to ${MAX_WORKERS} \\(MAX_WORKERS\\)`));
    await expect(lifecycle.scale(MAX_WORKERS + 1)).rejects.toBeInstanceOf(RangeError);
    expect(added).toEqual([]);
    expect(lifecycle.slotCount).toBe(1);
    expect(spawner.children).toHaveLength(1);
  });

  it('target is the last count asked for while a scale is under way, then the count reached', async () => {
    const { lifecycle, spawner, started } = setup(1);
    await started();
    const up = lifecycle.scale(2);
    const more = lifecycle.scale(3);
    expect(lifecycle.target).toBe(3);
    expect(lifecycle.workers).toBe(1);
    await settle();
    spawner.latest(1).becomeReady();
    await up;
    await settle();
    spawner.latest(2).becomeReady();
    await more;
    expect(lifecycle.target).toBe(3);
    expect(lifecycle.workers).toBe(3);
  });

  it('a status reply always fits one frame: long lists are cut and say by how many', () => {
    const workers = Array.from({ length: 2 * MAX_WORKERS }, (_, i) => ({
      pid: 4_000_000 + i, slot: i % MAX_WORKERS, generation: 99_999, state: 'unresponsive', startedAt: 1_764_000_000_000, connections: 12_345,
    }));
    const slots = Array.from({ length: MAX_WORKERS }, (_, slot) => ({
      slot, state: 'backing-off', pid: 4_000_000 + slot, coveredBy: 4_000_001, restarts: 999, recycles: 999,
    }));
    const status: MasterStatus = { pid: 1, generation: 99_999, uptimeMs: 1, reloading: false, addresses: ['127.0.0.1:1'], workers, slots };
    expect(() => encode({ type: 'status-result', status })).toThrow(/exceeds/);
    const fitted = fitFrame(status);
    expect(encode({ type: 'status-result', status: fitted }).length).toBeLessThanOrEqual(4 + MAX_FRAME_BYTES);
    expect(fitted.workers.length + fitted.omitted!.workers).toBe(workers.length);
    expect(fitted.slots!.length + fitted.omitted!.slots).toBe(slots.length);
    expect(fitted.workers.length).toBeGreaterThan(0);
    const small: MasterStatus = { ...status, workers: workers.slice(0, 2), slots: slots.slice(0, 1) };
    expect(fitFrame(small)).toBe(small);
  });
});

describe('stop (invariant 12)', () => {
  /** Fake sockets that log what the stop did, with `queue` connections waiting (each poll accepts one). */
  function fakeSockets(queue: number, log: string[]): StopSockets {
    return {
      refuseNew: () => log.push('refuse new'),
      queued: () => {
        log.push(`queued ${queue}`);
        return queue > 0 ? queue-- : 0;
      },
      shutdown: () => log.push('shutdown'),
      close: () => log.push('close'),
    };
  }

  it('refuses new handshakes, lets the workers accept what is queued, stops listening, then drains', async () => {
    const log: string[] = [];
    const { lifecycle, spawner, started, clock } = setup(2, { sockets: fakeSockets(3, log) });
    await started();
    const stopped = lifecycle.stop();
    await clock.advance(STOP_QUIET_MS / 2);
    expect(log[0]).toBe('refuse new');
    expect(spawner.live.flatMap((c) => c.calls)).not.toContain('drain'); // still accepting the queue
    await clock.advance(STOP_QUEUE_WAIT_MS);
    const shutdown = log.indexOf('shutdown');
    expect(log.slice(0, shutdown).filter((l) => l.startsWith('queued')).slice(-1)).toEqual(['queued 0']);
    for (const c of spawner.of(1)) expect(c.calls).toContain('drain');
    expect(log.slice(shutdown)).toEqual(['shutdown', 'close']);
    for (const c of spawner.of(1)) c.exit();
    await stopped;
  });

  it('a queue nobody empties (a frozen worker\'s slot) holds the stop up STOP_QUEUE_WAIT_MS at most', async () => {
    const log: string[] = [];
    const { lifecycle, spawner, started, clock } = setup(2, { sockets: fakeSockets(1_000_000, log) });
    await started();
    const stopped = lifecycle.stop();
    await clock.advance(STOP_QUEUE_WAIT_MS + 20);
    expect(log).toContain('shutdown');
    for (const c of spawner.of(1)) c.exit();
    await stopped;
  });

  it('stop() twice is one stop; stopDelay tells every worker to close each connection first', async () => {
    const log: string[] = [];
    const { lifecycle, spawner, started, clock } = setup(1, { sockets: fakeSockets(0, log), stopDelay: 2_000 });
    await started();
    const first = lifecycle.stop();
    expect(lifecycle.stop()).toBe(first);
    await clock.advance(1_000);
    expect(spawner.of(1)[0].calls).toContain('closing');
    expect(log).toEqual([]);
    await clock.advance(1_000 + STOP_QUIET_MS + 20);
    expect(log).toContain('shutdown');
    spawner.of(1)[0].exit();
    await first;
    expect(log.filter((l) => l === 'close')).toHaveLength(1);
  });

  it('a stop before start() means no worker is ever spawned', async () => {
    const { lifecycle, spawner } = setup(2);
    await lifecycle.stop();
    await expect(lifecycle.start()).rejects.toThrow(/stopping/);
    expect(spawner.children).toHaveLength(0);
  });
});

describe('WorkerProcess.alive', () => {
  it.skipIf(process.platform !== 'linux')('a child that died but is not reaped yet (a zombie) is not alive, before its exit event', async () => {
    const child = spawn('sleep', ['60'], { stdio: 'ignore' });
    const worker = new WorkerProcess(child, 0, 1, 60_000, 60_000);
    expect(worker.alive).toBe(true);
    process.kill(child.pid!, 'SIGKILL');
    // The loop does not turn here, so Node cannot reap it: it stays a zombie.
    const stat = () => fs.readFileSync(`/proc/${child.pid}/stat`, 'utf8');
    const deadline = Date.now() + 10_000;
    while (!/^\d+ \(.*\) Z/.test(stat())) if (Date.now() > deadline) throw new Error('no zombie within 10 s');
    expect(worker.exit).toBeUndefined();
    expect(worker.alive).toBe(true); // what /proc said earlier in this turn of the loop
    await Promise.resolve(); // the turn's work is done (microtasks only: the loop still cannot reap)
    expect(worker.exit).toBeUndefined();
    expect(worker.alive).toBe(false);
    worker.kill(); // no signal to a dead pid (which may be reused)
  });
});

describe('WorkerProcess.stoppedAccepting', () => {
  it('counts one stopped-accepting answer per drain or park frame: a late answer to an earlier park does not end the wait for the next', async () => {
    const child = spawn('sleep', ['60'], { stdio: 'ignore' });
    onTestFinished(() => void child.kill('SIGKILL'));
    const worker = new WorkerProcess(child, 0, 1, 60_000, 60_000);
    const sent: string[] = [];
    // a control connection that ends when the child is killed, as a real one would
    const conn = Object.assign(new EventEmitter(), { destroyed: false, write: (frame: Buffer) => sent.push(String(frame)), destroy: () => {} });
    child.once('exit', () => conn.emit('end'));
    worker.conn = conn as unknown as WorkerProcess['conn'];
    worker.becameReady();
    let done = false;
    worker.park();
    worker.resume(); // a rollback, before the park's answer came
    worker.park();
    void worker.stoppedAccepting.then(() => (done = true));
    worker.saidStoppedAccepting(); // the first park's answer
    await settle();
    expect(done).toBe(false);
    worker.saidStoppedAccepting();
    await settle();
    expect(done).toBe(true);
    worker.drain();
    let drained = false;
    void worker.stoppedAccepting.then(() => (drained = true));
    await settle();
    expect(drained).toBe(false);
    child.kill('SIGKILL');
    await worker.exited; // an exit ends the wait too
    await settle();
    expect(drained).toBe(true);
    expect(sent.filter((f) => /"(park|drain)"/.test(f))).toHaveLength(3);
  });
});
