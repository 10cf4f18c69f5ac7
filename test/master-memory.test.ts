// The master's memory over reloads (src/master/memory.ts): old-space garbage
// made its RSS creep while its live heap stayed the same (issue 10; the
// figures are bench/soak.js's). Once a worker has exited and the heap has
// grown since the last full collection, the master runs one: gc() under
// --expose-gc, else the full mark-compact that vm.measureMemory() runs,
// without a warning in the program's output and without ever turning the
// flag on inside the program.
import { afterEach, describe, expect, it } from 'vitest';
import { adminStatus, controlSocketOf } from './helpers/control';
import { cleanUp, type Master, pollUntil, startMaster } from './helpers/processes';

afterEach(cleanUp);

/** The master's own full collections so far, as its status says. */
const collections = async (master: Master) => (await adminStatus(controlSocketOf(master))).memory!.collections;

async function reloadAndExit(master: Master, workers: number, n: number): Promise<void> {
  const outcome = await master.reload();
  expect(outcome.event, outcome.error).toBe('reloaded');
  await master.waitFor(() => master.count('worker-exit') === workers * n, `generation ${n} to exit`);
}

describe('the master\'s memory', () => {
  for (const [flag, env] of [['without --expose-gc (vm.measureMemory)', {}], ['with --expose-gc (gc())', { NODE_OPTIONS: '--expose-gc' }]] as const) {
    it(`${flag}: a heap grown since the last collection is collected once the replaced workers exit, with no warning`, async () => {
      const master = await startMaster({ fixture: { workers: 2, garbagePerReloadMb: 8 }, env });
      for (let n = 1; n <= 3; n++) {
        await reloadAndExit(master, 2, n);
        await pollUntil(async () => (await collections(master)) >= n || undefined, `a full collection after generation ${n} exited`);
        // what the master kept for the previous reload (generation n) is garbage now, and that collection freed it
        if (n > 1) await master.waitFor((e) => e.event === 'garbage-freed' && e.generation === n, `the garbage of the reload to generation ${n} to be freed`);
      }
      expect((await master.stop()).code).toBe(0);
      expect(master.stderr).not.toMatch(/Warning/);
    });
  }

  it('a heap that has not grown is not collected: no full collection\'s CPU after every exit', async () => {
    const master = await startMaster({ fixture: { workers: 2, reportGc: true } });
    for (let n = 1; n <= 3; n++) await reloadAndExit(master, 2, n);
    expect(await collections(master)).toBe(0);
    expect((await master.stop()).code).toBe(0);
    expect(master.events.filter((e) => e.event === 'full-gc' && e.forced)).toEqual([]);
  });
});
