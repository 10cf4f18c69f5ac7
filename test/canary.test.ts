// The canary's verdict (src/master/canary.ts) on a fake clock with fake
// counters: healthy, 5xx, crash, slow, too few requests to judge; and the
// lifecycle acting on it (a failed canary puts its slots' parked old workers
// back; a healthy one continues slot by slot), with fake children.
import { describe, expect, it } from 'vitest';
import { CANARY_MIN_REQUESTS, type CanaryLimits, type Subject, quantile, watchCanary } from '../src/master/canary';
import { type Child, Lifecycle } from '../src/master/lifecycle';
import { resolveOptions } from '../src/options';
import { LATENCY_BUCKETS_S, type WorkerSample } from '../src/protocol';
import { FakeClock, FakeSpawner, quietLog, settle } from './helpers/fake-lifecycle';

const LIMITS: CanaryLimits = { window: 4_000, maxErrorRate: 0.01, maxLatencyRatio: 2 };

/** Cumulative latency buckets (plus the sum) for `n` responses that each took `seconds`. */
function latency(n: number, seconds: number): number[] {
  const bucket = LATENCY_BUCKETS_S.findIndex((le) => seconds <= le);
  const at = bucket < 0 ? LATENCY_BUCKETS_S.length : bucket;
  return [...Array.from({ length: LATENCY_BUCKETS_S.length + 1 }, (_, i) => (i >= at ? n : 0)), Math.round(n * seconds * 1e6)];
}

/** A worker whose counters the test moves. */
class FakeSubject implements Subject {
  sample?: WorkerSample;
  alive = true;
  readonly exited: Promise<void>;
  private exit!: () => void;
  constructor(readonly name: string) {
    this.exited = new Promise((resolve) => (this.exit = resolve));
  }

  describe(): string {
    return this.name;
  }

  /** Its counters rose by `requests`, `errors` of them 5xx, each taking `seconds`. */
  served(requests: number, errors: number, seconds = 0.002): void {
    const s = this.sample ?? { requests: 0, errors: 0, latency: latency(0, 0) };
    const add = latency(requests, seconds);
    this.sample = { requests: s.requests! + requests, errors: s.errors! + errors, latency: s.latency!.map((n, i) => n + add[i]) };
  }

  crash(): void {
    this.alive = false;
    this.exit();
  }
}

async function watch(setup: (canary: FakeSubject, baseline: FakeSubject[]) => void | Promise<void>, clock = new FakeClock()) {
  const canary = new FakeSubject('canary');
  const baseline = [new FakeSubject('old 1'), new FakeSubject('old 2')];
  for (const b of baseline) b.served(5_000, 3); // before the window: not counted
  const verdict = watchCanary([canary], baseline, LIMITS, clock);
  await settle();
  await setup(canary, baseline);
  await clock.advance(LIMITS.window);
  return verdict;
}

describe('the canary verdict', () => {
  it('healthy: the same error rate and latency as the old generation', async () => {
    const verdict = await watch((canary, baseline) => {
      canary.served(200, 0);
      for (const b of baseline) b.served(200, 0);
    });
    expect(verdict.healthy).toBe(true);
    expect(verdict.canary).toMatchObject({ requests: 200, errors: 0 });
    expect(verdict.baseline).toMatchObject({ requests: 400, errors: 0 }); // only the window's counts
  });

  it('5xx: half the canary\'s answers are 500s: unhealthy, with the rates in numbers', async () => {
    const verdict = await watch((canary, baseline) => {
      canary.served(200, 100);
      for (const b of baseline) b.served(200, 0);
    });
    expect(verdict.healthy).toBe(false);
    expect(verdict.reason).toBe('error rate 50.0% (100 of 200 requests answered 5xx) against 0.0% (0 of 400) on the old generation; canaryMaxErrorRate allows 1.0% more');
  });

  it('an error rate within canaryMaxErrorRate of the baseline\'s is healthy', async () => {
    const verdict = await watch((canary, baseline) => {
      canary.served(1_000, 25); // 2.5%
      for (const b of baseline) b.served(1_000, 20); // 2%
    });
    expect(verdict.healthy, verdict.reason).toBe(true);
  });

  it('crash: a canary worker that exits fails the verdict at once, before the window ends', async () => {
    const clock = new FakeClock();
    const canary = new FakeSubject('worker pid 7 (slot 0, generation 2)');
    const verdict = watchCanary([canary], [new FakeSubject('old')], LIMITS, clock);
    await clock.advance(1_000);
    canary.crash();
    const result = await verdict;
    expect(clock.now()).toBe(1_000);
    expect(result.healthy).toBe(false);
    expect(result.reason).toBe('worker pid 7 (slot 0, generation 2) exited 1000 ms into the canary window (4000 ms)');
  });

  it('slow: a p99 more than canaryMaxLatencyRatio times the baseline\'s is unhealthy', async () => {
    const verdict = await watch((canary, baseline) => {
      canary.served(200, 0, 0.4);
      for (const b of baseline) b.served(200, 0, 0.08);
    });
    expect(verdict.healthy).toBe(false);
    expect(verdict.reason).toMatch(/^p99 \d+ ms against \d+ ms \(canaryMaxLatencyRatio 2 of \d+ ms\)/);
  });

  it('a fast service: p99s under 50 ms are not judged slow (a fresh process\'s noise)', async () => {
    const verdict = await watch((canary, baseline) => {
      canary.served(200, 0, 0.02);
      for (const b of baseline) b.served(200, 0, 0.001);
    });
    expect(verdict.healthy, verdict.reason).toBe(true);
  });

  it('too few requests to judge: only a crash could fail it, and the verdict says so', async () => {
    const verdict = await watch((canary) => canary.served(CANARY_MIN_REQUESTS - 1, CANARY_MIN_REQUESTS - 1));
    expect(verdict.healthy).toBe(true);
    expect(verdict.reason).toMatch(/^too few requests to judge \(19 in 4000 ms, fewer than 20\)/);
  });

  it('p99 interpolates inside its bucket, as histogram_quantile does', () => {
    expect(quantile(0.99, latency(100, 0.003).slice(0, -1))).toBeCloseTo(0.004975, 6);
    expect(quantile(0.5, latency(0, 0).slice(0, -1))).toBe(0);
  });
});

describe('the lifecycle with rollout: canary', () => {
  function setup() {
    const clock = new FakeClock();
    const spawner = new FakeSpawner(clock);
    const failures: string[] = [];
    const lifecycle = new Lifecycle({
      slots: 3,
      heartbeatTimeout: 1_000,
      spawn: spawner.spawn,
      clock,
      log: quietLog,
      rollout: 'canary',
      canary: { slots: 1, ...LIMITS },
      events: {
        reload: () => {},
        reloaded: () => {},
        reloadFailed: ({ error }) => failures.push(error.message),
        exit: () => {},
        recycled: () => {},
        scaled: () => {},
        rolledBack: () => {},
      },
    });
    const serve = (child: Child, requests: number, errors: number) => {
      const c = child as Child & { sample?: WorkerSample };
      c.sample = { requests: (c.sample?.requests ?? 0) + requests, errors: (c.sample?.errors ?? 0) + errors, latency: latency((c.sample?.requests ?? 0) + requests, 0.002) };
    };
    return { clock, spawner, lifecycle, failures, serve };
  }

  async function start(s: ReturnType<typeof setup>) {
    const started = s.lifecycle.start();
    await settle();
    for (const c of s.spawner.of(1)) c.becomeReady();
    await started;
  }

  it('an unhealthy canary: only slot 0 ever ran the new code, its parked old worker serves again, the reload fails naming the error rate', async () => {
    const s = setup();
    await start(s);
    const old = s.spawner.of(1);
    const reload = s.lifecycle.reload();
    reload.catch(() => {});
    await settle();
    expect(s.spawner.of(2)).toHaveLength(1); // the canary only
    const [canary] = s.spawner.of(2);
    canary.becomeReady();
    await settle();
    expect(old[0].state).toBe('parked');
    s.serve(canary, 100, 50);
    for (const o of old.slice(1)) s.serve(o, 100, 0);
    await s.clock.advance(LIMITS.window);
    await expect(reload).rejects.toThrow(/generation 1 serves again \(slots 0-0 were switched back\): the canary is unhealthy: error rate 50\.0%/);
    expect(old.map((c) => c.state)).toEqual(['ready', 'ready', 'ready']);
    expect(canary.calls).toContain('drain');
    expect(s.spawner.of(2)).toHaveLength(1);
    expect(s.lifecycle.generation).toBe(1);
    expect(s.lifecycle.slotState(0)).toMatchObject({ state: 'ready', pid: old[0].pid });
    expect(s.failures).toHaveLength(1);
  });

  it('an unhealthy canary in a slot whose old worker had crashed: the canary stops serving and the slot is respawned with the old generation', async () => {
    const s = setup();
    await start(s);
    const old = s.spawner.of(1);
    old[0].exit(); // crashed: slot 0 backs off, its respawn pending
    await settle();
    const reload = s.lifecycle.reload();
    reload.catch(() => {});
    await settle();
    const [canary] = s.spawner.of(2);
    canary.becomeReady();
    await settle();
    s.serve(canary, 100, 50);
    for (const o of old.slice(1)) s.serve(o, 100, 0);
    await s.clock.advance(LIMITS.window);
    await expect(reload).rejects.toThrow(/generation 1 serves again \(slot\(s\) 0 had no old worker and are respawned\): the canary is unhealthy/);
    expect(canary.calls).toContain('drain');
    expect(s.lifecycle.slotState(0).pid).not.toBe(canary.pid);
    await s.clock.advance(10_000);
    const respawned = s.spawner.latest(0);
    expect(respawned.generation).toBe(1);
    expect(respawned).not.toBe(canary);
  });

  it('a healthy canary: the rollout waits for the verdict, then replaces the other slots one at a time', async () => {
    const s = setup();
    await start(s);
    const old = s.spawner.of(1);
    const reload = s.lifecycle.reload();
    await settle();
    s.spawner.of(2)[0].becomeReady();
    await settle();
    s.serve(s.spawner.of(2)[0], 100, 0);
    for (const o of old.slice(1)) s.serve(o, 100, 0);
    await s.clock.advance(LIMITS.window - 1);
    expect(s.spawner.of(2)).toHaveLength(1); // still judging
    await s.clock.advance(1);
    expect(old[0].calls).toContain('drain'); // the canary's old worker is no longer kept
    old[0].exit();
    await settle();
    for (let slot = 1; slot < 3; slot++) {
      expect(s.spawner.of(2)).toHaveLength(slot + 1);
      s.spawner.of(2)[slot].becomeReady();
      await settle();
      old[slot].exit();
      await settle();
    }
    await reload;
    expect(s.lifecycle.generation).toBe(2);
    expect([0, 1, 2].map((slot) => s.lifecycle.slotState(slot).pid)).toEqual(s.spawner.of(2).map((c) => c.pid));
  });
});

describe('canary options', () => {
  it('defaults: one slot, 30 s, one percentage point of errors, twice the p99', () => {
    expect(resolveOptions({ rollout: 'canary', workers: 3 })).toMatchObject({
      rollout: 'canary', canarySlots: 1, canaryWindow: 30_000, canaryMaxErrorRate: 0.01, canaryMaxLatencyRatio: 2,
    });
  });

  it('out of range or of the wrong type, each names the option; single mode has no canary', () => {
    expect(() => resolveOptions({ canaryMaxErrorRate: 2 })).toThrow(new RangeError('canaryMaxErrorRate must be a fraction (0.01: one percentage point) from 0 to 1, got 2'));
    expect(() => resolveOptions({ canaryMaxLatencyRatio: 'x' as unknown as number })).toThrow(TypeError);
    expect(() => resolveOptions({ canarySlots: 0 })).toThrow(/canarySlots must be an integer from 1 to 1024, got 0/);
    expect(() => resolveOptions({ rollout: 'canery' as 'canary' })).toThrow(/rollout must be 'parallel' or 'phased' or 'canary', got "canery"/);
    expect(() => resolveOptions({ mode: 'single', rollout: 'canary' })).toThrow(/rollout: 'canary': .* mode: 'single' has none/);
  });
});
