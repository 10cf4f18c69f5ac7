// The README's signal table, for real: no signal an operator is likely to
// send ends a master, a worker or a single process by its default action.
// Each one either does its job or is logged and ignored.
import * as fs from 'node:fs';
import * as path from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { cleanUp, isAlive, pollUntil, scratch, startMaster } from './helpers/processes';
import { get } from './helpers/start';

afterEach(cleanUp);

/** R (running) or S (sleeping): not stopped (T) by SIGTTIN/SIGTTOU's default action, not a zombie. */
function running(pid: number): boolean {
  return isAlive(pid) && /^\d+ \(.*\) [RSD]/.test(fs.readFileSync(`/proc/${pid}/stat`, 'utf8'));
}

describe('signals', () => {
  it('the master logs and ignores SIGQUIT, and survives SIGWINCH and SIGPIPE; it keeps serving with the same worker', async () => {
    const master = await startMaster();
    const [worker] = master.workerPids;
    for (const signal of ['SIGQUIT', 'SIGWINCH', 'SIGPIPE'] as const) {
      master.proc.kill(signal);
      expect((await get(master.port)).pid).toBe(worker);
      expect(running(master.pid), `the master after ${signal}`).toBe(true);
    }
    await pollUntil(() => /master warn: SIGQUIT: ignored/.test(master.stderr), 'the SIGQUIT warning');
    expect(master.count('reloaded')).toBe(0);
    expect((await master.stop()).code).toBe(0);
  });

  it('a worker ignores the master\'s signals (reload, upgrade, scale, SIGQUIT), as when the whole process group gets them', async () => {
    const master = await startMaster();
    const [worker] = master.workerPids;
    for (const signal of ['SIGHUP', 'SIGUSR1', 'SIGUSR2', 'SIGTTIN', 'SIGTTOU', 'SIGQUIT'] as const) {
      process.kill(worker, signal);
      expect((await get(master.port)).pid).toBe(worker);
      expect(running(worker), `the worker after ${signal}`).toBe(true);
    }
    expect((await master.stop()).code).toBe(0);
  });

  it('single mode: SIGUSR2 starts a fresh image (a handover to a successor); SIGQUIT, SIGTTIN and SIGTTOU are logged and ignored', async () => {
    const pidFile = path.join(scratch(), 'app.pid');
    const first = await startMaster({ script: 'test/fixtures/single-app.js', fixture: { pidFile } });
    for (const signal of ['SIGQUIT', 'SIGTTIN', 'SIGTTOU'] as const) {
      first.proc.kill(signal);
      expect((await get(first.port)).pid).toBe(first.pid);
      expect(running(first.pid), `the process after ${signal}`).toBe(true);
    }
    await pollUntil(() => /SIGTTOU: ignored/.test(first.stderr), 'the SIGTTOU warning');
    first.proc.kill('SIGUSR2');
    const successor = await pollUntil(() => {
      const pid = Number(fs.readFileSync(pidFile, 'utf8'));
      return pid !== first.pid ? pid : undefined;
    }, 'the successor to take over');
    expect((await get(first.port)).pid).toBe(successor);
    process.kill(successor, 'SIGTERM');
    await pollUntil(() => !isAlive(successor), 'the successor to stop');
  });
});
