// rollout: 'canary' with real processes under load (workers: 3, canaryWindow
// 4000): a deploy that answers every other request with 500 is rolled back
// without a human: `handover reload` exits 1 naming the error rate, every 500
// came from the one canary pid, and afterwards only the old generation
// serves; a healthy deploy then reaches all 3 slots. The verdict's rules are
// pinned down on a fake clock in canary.test.ts.
import { spawn } from 'node:child_process';
import * as path from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { adminStatus, controlSocketOf } from './helpers/control';
import { Requests, app } from './helpers/deploys';
import { cleanUp, isAlive, pollUntil } from './helpers/processes';

afterEach(cleanUp);

const CLI = path.join(__dirname, '..', 'dist', 'cli', 'cli.js');

/** `handover reload` as an operator runs it (without blocking this process's load loops). */
function handoverReload(socket: string): Promise<{ code: number | null; output: string }> {
  return new Promise((resolve) => {
    const proc = spawn(process.execPath, [CLI, 'reload', '--socket', socket], { stdio: ['ignore', 'pipe', 'pipe'] });
    let output = '';
    proc.stdout.setEncoding('utf8').on('data', (chunk: string) => (output += chunk));
    proc.stderr.setEncoding('utf8').on('data', (chunk: string) => (output += chunk));
    proc.on('close', (code) => resolve({ code, output }));
  });
}

describe('rollout: canary', () => {
  it('a canary answering half its requests with 500 is rolled back automatically; a healthy one then reaches all 3 slots', async () => {
    const { app: a } = app({ code: 'A' });
    // p99s of fresh processes on a busy test machine are noise: latency is judged in canary.test.ts
    const master = await a.start({ workers: 3, rollout: 'canary', canaryWindow: 4_000, canaryMaxLatencyRatio: 50 });
    const control = controlSocketOf(master);
    const first = await adminStatus(control);
    const oldPids = first.workers.map((w) => w.pid);
    const requests = new Requests(master.port, 6);
    await pollUntil(() => requests.answers.length >= 60, 'the load to run');

    a.deploy({ code: 'B', failEvery: 2 });
    const bad = await handoverReload(control);
    expect(bad.code, bad.output).toBe(1);
    expect(bad.output).toMatch(/generation 1 serves again \(slots 0-0 were switched back\): the canary is unhealthy: error rate [1-9]\d\.\d% \(\d+ of \d+ requests answered 5xx\) against 0\.0%/);
    expect(master.stderr).toMatch(/canary: generation 2 serves slot\(s\) 0 for 4000 ms beside 2 worker\(s\) of generation 1/);

    const errors = requests.answers.filter((r) => r.status !== 200);
    const canaryPids = new Set(errors.map((r) => r.pid));
    expect(errors.length).toBeGreaterThan(0);
    expect(canaryPids.size, 'every 500 came from one pid').toBe(1);
    const [canary] = canaryPids;
    expect(oldPids).not.toContain(canary);
    expect(errors.every((r) => r.status === 500 && r.code === 'B')).toBe(true);
    expect(new Set(requests.answers.filter((r) => r.code === 'B').map((r) => r.pid))).toEqual(canaryPids);

    // afterwards only the old generation serves, in all three slots
    await pollUntil(() => !isAlive(canary), 'the canary to finish draining');
    const failedAt = requests.answers.length;
    const restored = await adminStatus(control);
    expect(restored.generation).toBe(1);
    expect(restored.slots!.map((s) => [s.state, s.pid])).toEqual(first.slots!.map((s) => ['ready', s.pid]));
    await pollUntil(() => requests.answers.length >= failedAt + 100, '100 answers after the verdict');
    const after = requests.answers.slice(failedAt);
    expect(after.every((r) => r.code === 'A' && r.status === 200 && oldPids.includes(r.pid))).toBe(true);
    expect(new Set(after.map((r) => r.pid)).size).toBe(3);

    // a healthy deploy goes through the canary and on to every slot
    a.deploy({ code: 'C' });
    const good = await handoverReload(control);
    expect(good.code, good.output).toBe(0);
    expect(master.stderr).toMatch(/canary: generation 3 is healthy \(error rate 0\.0% \(\d+ of \d+ requests answered 5xx\)/);
    const done = await adminStatus(control);
    expect(done.generation).toBe(3);
    expect(done.slots!.map((s) => s.state)).toEqual(['ready', 'ready', 'ready']);
    const newPids = done.slots!.map((s) => s.pid!);
    await pollUntil(() => oldPids.every((pid) => !isAlive(pid)), 'the old generation to finish draining');
    const servedAt = requests.answers.length;
    await pollUntil(() => new Set(requests.answers.slice(servedAt).map((r) => r.pid)).size === 3, 'answers from all three new workers');
    await requests.stop();
    expect(requests.answers.slice(servedAt).every((r) => r.code === 'C' && newPids.includes(r.pid))).toBe(true);
    expect(requests.failures).toEqual([]);
    expect((await master.stop()).code).toBe(0);
  });
});
