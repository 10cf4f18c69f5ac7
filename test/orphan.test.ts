// Invariant 14: workers end even when JavaScript cannot run. A worker whose
// event loop is blocked for good (test/fixtures/fault-app.js GET /spin) can
// neither run its stop-signal handler nor its stopTimeout timer; when its
// master is SIGKILLed it must still end (src/worker/orphan.ts: the native
// parent-death handler arms an alarm), or it keeps the port forever and a
// new master fails with EADDRINUSE.
//
// Needs the worker to call guardAgainstOrphaning from src/worker/orphan.ts
// (src/worker/worker.ts run()); with the old PR_SET_PDEATHSIG(SIGTERM) alone
// this test fails: the blocked worker never exits.
import * as http from 'node:http';
import { afterEach, describe, expect, it } from 'vitest';
import { isAlive, pollUntil, reapAll, startMaster } from './helpers/processes';

afterEach(async () => {
  await reapAll();
});

/** GET /spin: resolves once the worker has sent its first chunk (its loop is then blocked). */
function spin(port: number): Promise<http.ClientRequest> {
  return new Promise((resolve, reject) => {
    const req = http.get({ host: '127.0.0.1', port, path: '/spin', agent: false }, (res) => {
      res.once('data', () => resolve(req));
    });
    req.on('error', reject);
  });
}

describe('a worker whose master dies', () => {
  it('ends within a generous deadline even with its event loop blocked for good', async (ctx) => {
    ctx.skip(process.platform !== 'linux', 'PR_SET_PDEATHSIG is linux-only; on darwin only the loop can notice');
    const master = await startMaster({ script: 'test/fixtures/fault-app.js', fixture: { stopTimeout: 2_000 } });
    const [worker] = master.workerPids;
    expect(worker).toBeGreaterThan(0);
    const req = await spin(master.port);
    try {
      process.kill(master.pid, 'SIGKILL');
      await master.exited;
      // stopTimeout is 2 s; the deadline is only there so a broken run ends.
      await pollUntil(() => !isAlive(worker), `worker ${worker} (loop blocked) to end after its master's death`, 60_000);
    } finally {
      req.destroy();
    }
  });
});
