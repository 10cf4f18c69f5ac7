// The lifecycle's limits with real processes (invariants 11 and 18): a
// scale-up whose worker never starts, or dies after its listen (before its
// ready or right after), strands no connection; scaling down serves what the
// removed slot had queued; a scale request
// past MAX_WORKERS changes nothing, and SIGTTIN bursts count from the last
// request, as reload requests queue.
import * as http from 'node:http';
import * as path from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { MAX_WORKERS } from '../src/options';
import type { MasterStatus } from '../src/protocol';
import { adminScale, adminStatus, controlSocketOf } from './helpers/control';
import { cleanUp, fdCount, type Master, pollUntil, scratch, startMaster, writeJson } from './helpers/processes';

const APP = 'test/fixtures/fault-app.js';
/** Far beyond any answer; only a connection queued where nobody accepts gets here. */
const CLIENT_TIMEOUT_MS = 10_000;

afterEach(cleanUp);

/** `total` requests, 16 at a time, each on its own connection; what happened to each. */
async function fresh(port: number, total: number): Promise<{ ok: number; errors: string[]; pids: Set<number> }> {
  const result = { ok: 0, errors: [] as string[], pids: new Set<number>() };
  let next = 0;
  const one = () => new Promise<void>((resolve) => {
    const req = http.request({ host: '127.0.0.1', port, agent: false, headers: { connection: 'close' }, timeout: CLIENT_TIMEOUT_MS }, (res) => {
      res.resume();
      res.on('end', () => {
        if (res.statusCode === 200) result.ok++;
        else result.errors.push(`status ${res.statusCode}`);
        result.pids.add(Number(res.headers['x-pid']));
        resolve();
      });
    });
    req.on('timeout', () => req.destroy(Object.assign(new Error('no answer (a hang)'), { code: 'HANG' })));
    req.on('error', (error: NodeJS.ErrnoException) => {
      result.errors.push(error.code ?? error.message);
      resolve();
    });
    req.end();
  });
  await Promise.all(Array.from({ length: 16 }, async () => {
    while (next++ < total) await one();
  }));
  return result;
}

async function startFault(fixture: Record<string, unknown>): Promise<{ master: Master; behaviour: string; control: string }> {
  const behaviour = path.join(scratch('handover-limits-'), 'behaviour.json');
  writeJson(behaviour, {});
  const master = await startMaster({ script: APP, fixture: { behaviourFile: behaviour, stopTimeout: 3_000, ...fixture } });
  return { master, behaviour, control: controlSocketOf(master) };
}

const readySlots = (status: MasterStatus) => status.slots!.filter((s) => s.state === 'ready').length;

describe('scale', () => {
  const failures = [
    ['cannot start (it throws before any listen)', { crashSlots: [1] }],
    ['dies between its listen and its ready (its socket armed, then nobody accepts)', { dieAfterListenSlots: [1] }],
  ] as const;
  for (const [how, deploy] of failures) {
    it(`a failed scale-up whose worker ${how} leaves no socket without an acceptor: 0 of 112 fresh connections hang`, async () => {
      const { master, behaviour, control } = await startFault({ workers: 1 });
      const [serving] = master.workerPids;
      writeJson(behaviour, deploy); // the deploy on disk cannot serve slot 1
      const outcome = await adminScale(control, 2);
      expect(outcome.ok).toBe(false);
      expect(outcome.message).toMatch(/scaling to 2 workers stopped at 1/);
      const result = await fresh(master.port, 112);
      expect(result.errors).toEqual([]);
      expect(result.ok).toBe(112);
      expect([...result.pids]).toEqual([serving]);
      // and once the deploy is fixed, the slot serves (it listens again, with a worker of its own)
      writeJson(behaviour, {});
      expect(await adminScale(control, 2)).toEqual({ ok: true, message: undefined });
      const grown = await fresh(master.port, 112);
      expect(grown.errors).toEqual([]);
      expect(grown.pids.size).toBe(2);
      expect((await master.stop()).code).toBe(0);
    });
  }

  it('a scale-up worker that is ready and then dies, with its respawns broken, strands none of 112 fresh connections', async () => {
    const { master, behaviour, control } = await startFault({ workers: 1 });
    const [serving] = master.workerPids;
    expect(await adminScale(control, 2)).toEqual({ ok: true, message: undefined });
    const added = (await adminStatus(control)).slots!.find((s) => s.slot === 1)!.pid!;
    writeJson(behaviour, { crashSlots: [1] }); // every respawn of slot 1 throws at start-up
    process.kill(added, 'SIGKILL');
    await pollUntil(async () => (await adminStatus(control)).slots!.find((s) => s.slot === 1)!.state !== 'ready' || undefined, 'slot 1 to lose its worker');
    const result = await fresh(master.port, 112);
    expect(result.errors).toEqual([]);
    expect(result.ok).toBe(112);
    expect([...result.pids]).toEqual([serving]);
    expect((await master.stop()).code).toBe(0);
  });

  it('scaling down serves the connections queued on the removed slot (fresh connections during 1 -> 2 -> 1)', async () => {
    const { master, control } = await startFault({ workers: 1 });
    expect(await adminScale(control, 2)).toEqual({ ok: true, message: undefined });
    const load = fresh(master.port, 300);
    expect(await adminScale(control, 1)).toEqual({ ok: true, message: undefined });
    const result = await load;
    expect(result.errors).toEqual([]);
    expect(result.ok).toBe(300);
    const after = await fresh(master.port, 40);
    expect(after.errors).toEqual([]);
    expect(after.pids.size).toBe(1);
    expect((await master.stop()).code).toBe(0);
  });

  it(`scale past MAX_WORKERS (${MAX_WORKERS}) is refused with a RangeError naming the bound, and nothing changes`, async () => {
    const { master, control } = await startFault({ workers: 1 });
    const before = await adminStatus(control);
    const fds = fdCount(master.pid);
    const outcome = await adminScale(control, 100_000);
    expect(outcome.ok).toBe(false);
    expect(outcome.message).toMatch(new RegExp(`from 1 to ${MAX_WORKERS} \\(MAX_WORKERS\\), got 100000; nothing changed`));
    const after = await adminStatus(control);
    expect(after.slots).toEqual(before.slots);
    expect(after.workers.map((w) => w.pid)).toEqual(before.workers.map((w) => w.pid));
    // no socket was bound for the refused slots (an admin connection still closing may make it one fewer)
    expect(await pollUntil(() => fdCount(master.pid) <= fds || undefined, 'the master to hold no more fds than before', 10_000)).toBe(true);
    const result = await fresh(master.port, 10);
    expect(result.ok).toBe(10);
    expect((await master.stop()).code).toBe(0);
  });

  it('4 SIGTTIN to a 1-worker master, 50 ms apart, give 5 workers (each counts from the last one asked for)', async () => {
    const { master, control } = await startFault({ workers: 1 });
    for (let i = 0; i < 4; i++) {
      master.proc.kill('SIGTTIN');
      await new Promise((resolve) => setTimeout(resolve, 50)); // the spacing of the burst, not a wait for anything
    }
    await master.waitFor((e) => e.event === 'scaled' && (e as { workers?: number }).workers === 5, 'the scale step to 5 workers');
    const status = await pollUntil(async () => {
      const s = await adminStatus(control);
      return readySlots(s) === 5 ? s : undefined;
    }, '5 ready slots');
    expect(status.workers).toHaveLength(5);
    expect(master.events.filter((e) => e.event === 'scaled').map((e) => (e as { workers?: number }).workers)).toEqual([2, 3, 4, 5]);
    const result = await fresh(master.port, 80);
    expect(result.errors).toEqual([]);
    expect((await master.stop()).code).toBe(0);
  });
});
