// What "resolved" means for a reload and a rollback: once `handover reload`
// (or `handover rollback`, or server.reload() / rollback()) has answered, the
// workers it replaced accept no connection any more, so the very next fresh
// connection is answered by the generation that serves now. (The master waits
// for each replaced worker's `stopped-accepting` answer to its drain or park.)
//
// The race it guards: under load, a worker's listening socket is often
// readable already when its drain frame arrives, so its event loop accepts
// what is queued (a connection made right after the reload returned, too)
// before it reads the frame. A CPU-bound handler under a little background
// load makes that common. keepPrevious covers both ends: a reload parks the
// old generation, a rollback drains the current one.
import { afterEach, describe, expect, it } from 'vitest';
import { adminReload, adminRollback, adminStatus, controlSocketOf } from './helpers/control';
import { Requests, app, get } from './helpers/deploys';
import { cleanUp } from './helpers/processes';

afterEach(cleanUp);

const ROUNDS = 50;
const BUSY = { code: 'A', busyMs: 20 };

/** One request on a fresh connection right away; then which generation served it, as status says. */
async function servedBy(port: number, control: string): Promise<{ pid: number; generation?: number; current: number }> {
  const { pid, status } = await get(port);
  expect(status).toBe(200);
  const after = await adminStatus(control);
  return { pid, generation: after.workers.find((w) => w.pid === pid)?.generation, current: after.generation };
}

describe('a reload or rollback has resolved: every new connection reaches the generation serving now', () => {
  it(`keepPrevious: ${ROUNDS} rounds of reload then rollback under load, each followed by one fresh connection: always the generation serving now`, async () => {
    const { app: a } = app(BUSY);
    const master = await a.start({ workers: 2, keepPrevious: 60_000 });
    const control = controlSocketOf(master);
    const load = new Requests(master.port, 2);
    try {
      for (let round = 0; round < ROUNDS; round++) {
        const reloaded = await adminReload(control);
        expect(reloaded, reloaded.message).toEqual({ ok: true });
        const afterReload = await servedBy(master.port, control);
        expect(afterReload.generation, `round ${round}, reload: pid ${afterReload.pid} is not of generation ${afterReload.current}`)
          .toBe(afterReload.current);
        const rolled = await adminRollback(control);
        expect(rolled, rolled.message).toEqual({ ok: true });
        const afterRollback = await servedBy(master.port, control);
        expect(afterRollback.generation, `round ${round}, rollback: pid ${afterRollback.pid} is not of generation ${afterRollback.current}`)
          .toBe(afterRollback.current);
      }
    } finally {
      await load.stop();
    }
    expect(load.failures).toEqual([]);
  }, 300_000);
});
