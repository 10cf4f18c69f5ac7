// `handover monit` in a real terminal (tmux): it draws every worker with its
// columns, redraws as things change (a reload's new workers appear), and `q`
// quits. tmux's capture-pane is what a user would see.
import { execFile, execFileSync, spawn } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import type { MasterStatus } from '../src/protocol';
import { adminStatus } from './helpers/control';
import { REAP_TAG, ROOT, cleanUp, missingTool, onCleanUp, pollUntil, scratch } from './helpers/processes';
import { freePort } from './helpers/ports';

const CLI = path.join(ROOT, 'dist/cli/cli.js');

afterEach(cleanUp);

const missing = missingTool('tmux', '-V', 'apt-get install tmux');

function tmux(socket: string, ...args: string[]): Promise<{ code: number; stdout: string }> {
  return new Promise((resolve) => {
    execFile('tmux', ['-L', socket, ...args], { timeout: 20_000 }, (error, stdout) => resolve({ code: error ? Number(error.code ?? 1) : 0, stdout }));
  });
}

describe('handover monit', () => {
  it.skipIf(missing !== undefined)(`renders each worker in a terminal, updates, and q quits${missing ? ` (skipped: ${missing})` : ''}`, async () => {
    const dir = scratch('handover-monit-');
    const runtime = path.join(dir, 'run');
    fs.mkdirSync(runtime);
    const env = { ...process.env, ...REAP_TAG, XDG_RUNTIME_DIR: runtime, PORT: String(await freePort()) }; // listen(0) stays private under handover start
    const master = spawn(process.execPath, [CLI, 'start', '--workers', '2', '--name', 'api', path.join(ROOT, 'test/fixtures/unmodified/http.js')], { cwd: dir, env, stdio: 'ignore' });
    const registry = () => fs.readdirSync(path.join(runtime, 'handover')).map((f) => JSON.parse(fs.readFileSync(path.join(runtime, 'handover', f), 'utf8')) as { socket: string });
    const socket = await pollUntil(() => { try { return registry()[0]?.socket; } catch { return undefined; } }, 'the master to register', 60_000);
    const ready = (s: MasterStatus, generation: number) => s.workers.filter((w) => w.generation === generation && w.state === 'ready').map((w) => w.pid);
    const first = ready(await pollUntil(async () => { const s = await adminStatus(socket); return ready(s, 1).length === 2 ? s : undefined; }, 'two ready workers', 60_000), 1);

    const server = `handover-test-${randomUUID()}`;
    onCleanUp(() => { try { execFileSync('tmux', ['-L', server, 'kill-server'], { stdio: 'ignore' }); } catch { /* already gone */ } });
    const command = `env XDG_RUNTIME_DIR=${runtime} ${process.execPath} ${CLI} monit`;
    expect((await tmux(server, '-f', '/dev/null', 'new-session', '-d', '-x', '180', '-y', '40', '-s', 'monit', command)).code).toBe(0);
    const pane = async () => (await tmux(server, 'capture-pane', '-p', '-t', 'monit')).stdout;

    const drawn = await pollUntil(async () => { const p = await pane(); return first.every((pid) => p.includes(String(pid))) ? p : undefined; }, 'monit to show both workers', 30_000);
    expect(drawn).toMatch(/handover monit {2}\d\d:\d\d:\d\d {2}\(q quits\)/);
    expect(drawn).toMatch(new RegExp(`^api  master pid ${master.pid}  generation 1 `, 'm'));
    expect(drawn).toMatch(/PID\s+SLOT\s+GEN\s+STATE\s+CPU\s+RSS\s+REQ\/S\s+CONNS\s+LOOP\s+RESTARTS/);
    for (const pid of first) expect(drawn).toMatch(new RegExp(`^\\s+${pid}\\s+[01]\\s+1\\s+ready\\s+\\d+\\.\\d%\\s+\\d+\\.\\d MB\\s+\\S+\\s+\\d+\\s+\\S+( ms)?\\s+0$`, 'm'));

    // a reload: the view follows without a key press
    execFileSync(process.execPath, [CLI, 'reload', 'api'], { env });
    const second = ready(await adminStatus(socket), 2);
    expect(second).toHaveLength(2);
    await pollUntil(async () => { const p = await pane(); return second.every((pid) => p.includes(String(pid))) && /generation 2 /.test(p); }, 'monit to show generation 2', 30_000);

    await tmux(server, 'send-keys', '-t', 'monit', 'q');
    await pollUntil(async () => (await tmux(server, 'has-session', '-t', 'monit')).code !== 0, 'monit to quit on q', 20_000);
    master.kill('SIGTERM');
    await pollUntil(() => master.exitCode !== null, 'the master to stop');
  });
});
