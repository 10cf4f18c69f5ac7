// A pm2 user's day with handover: an unchanged ecosystem.config.js started in
// the background, listed, reloaded under load, its logs read, and stopped,
// leaving nothing; and each pm2 habit that used to fail silently.
import { type ChildProcess, execFile, spawn } from 'node:child_process';
import * as fs from 'node:fs';
import * as http from 'node:http';
import * as path from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { RING_LINES } from '../src/master/log-ring';
import { Load } from './helpers/load';
import { REAP_TAG, ROOT, cleanUp, connectOutcome, isAlive, ourProcesses, pollUntil, scratch } from './helpers/processes';
import { freePort } from './helpers/ports';

const CLI = path.join(ROOT, 'dist/cli/cli.js');
const HTTP_APP = path.join(ROOT, 'test/fixtures/unmodified/http.js');

afterEach(cleanUp);

interface Run {
  code: number | null;
  stdout: string;
  stderr: string;
}

/** A scratch directory as the user's home for handover: its own registry and state directory. */
function home(): { dir: string; env: Record<string, string> } {
  const dir = scratch('handover-pm2-');
  fs.mkdirSync(path.join(dir, 'run'));
  return { dir, env: { ...REAP_TAG, XDG_RUNTIME_DIR: path.join(dir, 'run'), XDG_STATE_HOME: path.join(dir, 'state') } };
}

function cli(env: Record<string, string>, cwd: string, ...args: string[]): Promise<Run> {
  return new Promise((resolve) => {
    execFile(process.execPath, [CLI, ...args], { cwd, timeout: 120_000, env: { ...process.env, ...env } }, (error, stdout, stderr) => {
      resolve({ code: error ? (typeof error.code === 'number' ? error.code : null) : 0, stdout, stderr });
    });
  });
}

/** A foreground `handover start ...`, its output collected. */
function foreground(env: Record<string, string>, cwd: string, ...args: string[]): { proc: ChildProcess; output: () => string } {
  const proc = spawn(process.execPath, [CLI, 'start', ...args], { cwd, env: { ...process.env, ...env }, stdio: ['ignore', 'pipe', 'pipe'] });
  let output = '';
  proc.stdout!.on('data', (chunk: Buffer) => (output += chunk.toString()));
  proc.stderr!.on('data', (chunk: Buffer) => (output += chunk.toString()));
  return { proc, output: () => output };
}

interface Listed {
  name: string;
  pid: number;
  status?: { addresses: string[]; workers: { pid: number; generation: number; state: string }[] };
}

async function listed(env: Record<string, string>, cwd: string): Promise<Listed[]> {
  const run = await cli(env, cwd, 'list', '--json');
  return run.code === 0 ? JSON.parse(run.stdout) as Listed[] : [];
}

/** Waits until the master named `name` serves with `workers` ready workers. */
function serving(env: Record<string, string>, cwd: string, name: string, workers: number, output = () => ''): Promise<Listed> {
  return pollUntil(async () => (await listed(env, cwd)).find((m) => m.name === name &&
    m.status?.workers.filter((w) => w.state === 'ready').length === workers), `${name} to serve with ${workers} workers; output:\n${output()}`, 90_000);
}

function portOf(m: Listed): number {
  const address = m.status!.addresses[0];
  return Number(address.slice(address.lastIndexOf(':') + 1));
}

function get(port: number): Promise<string> {
  return new Promise((resolve, reject) => {
    http.get({ host: '127.0.0.1', port, agent: false, timeout: 20_000 }, (res) => {
      let body = '';
      res.setEncoding('utf8').on('data', (chunk: string) => (body += chunk));
      res.on('end', () => resolve(body));
    }).on('error', reject);
  });
}

const ECOSYSTEM = `module.exports = {
  apps: [
    {
      name: 'api',
      script: './http.js',
      instances: 2,
      exec_mode: 'cluster',
      env: { PORT: '${await freePort()}', GREETING: 'development' },
      env_production: { GREETING: 'production' },
      kill_timeout: 5000,
      listen_timeout: 20000,
      max_memory_restart: '500M',
    },
    { name: 'web', script: 'http.js', env: { PORT: '${await freePort()}' } },
  ],
};
`;

describe('a pm2 ecosystem.config.js, unchanged', () => {
  it('start --daemon --env production returns once both serve; list, reload under load (0 failed), logs, stop leave nothing', async () => {
    const { dir, env } = home();
    fs.copyFileSync(HTTP_APP, path.join(dir, 'http.js'));
    fs.writeFileSync(path.join(dir, 'ecosystem.config.js'), ECOSYSTEM);

    const started = await cli(env, dir, 'start', '--daemon', '--env', 'production', 'ecosystem.config.js');
    expect(started.code, started.stderr).toBe(0);
    expect(started.stdout).toMatch(/^api: serving, master pid \d+/m);
    expect(started.stdout).toMatch(/^web: serving, master pid \d+/m);

    // returned once both serve: each answers at once, api with its env_production over env
    const masters = await listed(env, dir);
    expect(masters.map((m) => m.name).sort()).toEqual(['api', 'web']);
    const api = masters.find((m) => m.name === 'api')!;
    const web = masters.find((m) => m.name === 'web')!;
    expect(api.status!.workers.filter((w) => w.state === 'ready')).toHaveLength(2); // instances: 2
    expect(await get(portOf(api))).toBe('hello from http, production\n');
    expect(await get(portOf(web))).toBe('hello from http, no greeting\n');
    const list = await cli(env, dir, 'list');
    expect(list.stdout).toMatch(/^api\s+\d+\s+1\s+2\/2/m);
    expect(list.stdout).toMatch(/^web\s+\d+\s+1\s+1\/1/m);

    // the command returned: the masters run detached, not as its children
    const workers = [...api.status!.workers, ...web.status!.workers].map((w) => w.pid);

    const load = new Load({ port: portOf(api), connections: 8 });
    await pollUntil(() => load.stats.ok >= 50, 'load to get going');
    const reload = await cli(env, dir, 'reload', 'api');
    expect(reload.code, reload.stdout + reload.stderr).toBe(0);
    expect(reload.stdout).toBe('reloaded\n');
    const answered = load.stats.ok;
    await pollUntil(() => load.stats.ok >= answered + 50, 'the new generation to answer the load');
    const stats = await load.stop();
    expect(stats.failed, JSON.stringify(stats.errors)).toBe(0);
    expect(stats.ok).toBeGreaterThan(0);

    // the app's own output, from the master's ring
    const logs = await cli(env, dir, 'logs', 'api', '--lines', '50');
    expect(logs.code, logs.stderr).toBe(0);
    expect(logs.stdout).toMatch(new RegExp(`^\\[g1 \\d+\\] listening on ${portOf(api)}$`, 'm'));
    expect(logs.stdout).toMatch(new RegExp(`^\\[g2 \\d+\\] listening on ${portOf(api)}$`, 'm'));
    expect(logs.stdout.trimEnd().split('\n').length).toBeLessThanOrEqual(50);
    // and in its log file in the state directory
    expect(fs.readFileSync(path.join(dir, 'state/handover/logs/api.log'), 'utf8')).toMatch(/\] listening on /);

    const newWorkers = (await listed(env, dir)).flatMap((m) => m.status!.workers.map((w) => w.pid));
    for (const name of ['api', 'web']) {
      const stop = await cli(env, dir, 'stop', name);
      expect(stop.code, stop.stderr).toBe(0);
    }
    // the workers are gone when stop returns; the masters exit right after answering
    for (const pid of [...workers, ...newWorkers]) expect(isAlive(pid), `worker ${pid} after stop`).toBe(false);
    await pollUntil(() => !isAlive(api.pid) && !isAlive(web.pid), 'the masters to exit');
    expect(await connectOutcome(portOf(api))).toBe('ECONNREFUSED');
    expect(await connectOutcome(portOf(web))).toBe('ECONNREFUSED');
    expect(ourProcesses()).toEqual([]);
  });

  it('--daemon with an app that fails: exit 1 with the worker\'s own error; the app that serves keeps serving', async () => {
    const { dir, env } = home();
    fs.copyFileSync(HTTP_APP, path.join(dir, 'http.js'));
    fs.copyFileSync(path.join(ROOT, 'test/fixtures/unmodified/broken.js'), path.join(dir, 'broken.js'));
    fs.writeFileSync(path.join(dir, 'handover.config.json'), JSON.stringify({
      apps: [{ name: 'good', script: 'http.js', env: { PORT: String(await freePort()) } }, { name: 'bad', script: 'broken.js', startTimeout: 20000 }],
    }));
    const started = await cli(env, dir, 'start', '-d', 'handover.config.json');
    expect(started.code).toBe(1);
    expect(started.stderr).toMatch(/^handover: bad failed: .*cannot connect to the database at db\.internal:5432/ms);
    expect(started.stdout).toMatch(/^good: serving/m);
    const [good] = await listed(env, dir);
    expect(good.name).toBe('good');
    expect(await get(portOf(good))).toBe('hello from http, no greeting\n');
    expect((await cli(env, dir, 'stop', 'good')).code).toBe(0);
  });

  it('a key handover does not act on is named in a warning; --only starts the apps named', async () => {
    const { dir, env } = home();
    fs.copyFileSync(HTTP_APP, path.join(dir, 'http.js'));
    fs.writeFileSync(path.join(dir, 'ecosystem.config.js'), `module.exports = { apps: [
      { name: 'one', script: 'http.js', env: { PORT: '${await freePort()}' }, max_restarts: 10, instance_var: 'ID' },
      { name: 'two', script: 'http.js', env: { PORT: '${await freePort()}' } },
    ] };`);
    const started = await cli(env, dir, 'start', '--daemon', '--only', 'one', 'ecosystem.config.js');
    expect(started.code, started.stderr).toBe(0);
    expect(started.stderr).toMatch(/warning: one: max_restarts is not used: handover respawns a crashed worker/);
    expect(started.stderr).toMatch(/warning: one: instance_var is not a key handover knows; ignored/);
    expect((await listed(env, dir)).map((m) => m.name)).toEqual(['one']);
    const stop = await cli(env, dir, 'stop', 'ecosystem.config.js');
    expect(stop.code).toBe(0);
    expect(stop.stderr).toMatch(/note: two is not running; nothing to stop/);
    await pollUntil(() => ourProcesses().length === 0, 'every process to exit after the stop');
  });
  it('in the foreground, several apps run as a master each; SIGTERM to the command stops them all, exit 0', async () => {
    const { dir, env } = home();
    fs.copyFileSync(HTTP_APP, path.join(dir, 'http.js'));
    fs.writeFileSync(path.join(dir, 'handover.config.js'), `module.exports = { apps: [
      { name: 'a', script: 'http.js', env: { PORT: '${await freePort()}' } }, { name: 'b', script: 'http.js', env: { PORT: '${await freePort()}' }, workers: 2 },
    ] };`);
    const run = foreground(env, dir, 'handover.config.js');
    const a = await serving(env, dir, 'a', 1, run.output);
    const b = await serving(env, dir, 'b', 2, run.output);
    expect(await get(portOf(a))).toBe('hello from http, no greeting\n');
    expect(await get(portOf(b))).toBe('hello from http, no greeting\n');
    run.proc.kill('SIGTERM');
    await pollUntil(() => run.proc.exitCode !== null, 'the command to exit');
    expect(run.proc.exitCode).toBe(0);
    await pollUntil(() => ourProcesses().length === 0, 'both masters and their workers to exit');
  });
});

describe('pm2 habits on the command line', () => {
  for (const flags of [['-w', '2'], ['-i', '2'], ['--instances', '2']]) {
    it(`handover start app.js ${flags.join(' ')}: two workers, and a note that says where the option belongs`, async () => {
      const { dir, env } = home();
      const run = foreground({ ...env, PORT: String(await freePort()) }, dir, HTTP_APP, ...flags);
      const master = await serving(env, dir, 'http', 2, run.output);
      expect(run.output()).toContain(`note: ${flags.join(' ')} after the script is handover's option --`);
      expect(run.output()).toContain(`put it after --: handover start ${HTTP_APP} -- ${flags.join(' ')}`);
      // the program did not get them: its argv is its own
      expect(master.status!.workers).toHaveLength(2);
      run.proc.kill('SIGTERM');
      await pollUntil(() => run.proc.exitCode !== null, 'the master to stop');
    });
  }

  it('after `--` following the script, the words are the program\'s, not handover\'s', async () => {
    const { dir, env } = home();
    const app = path.join(dir, 'argv.js');
    fs.writeFileSync(app, `require('node:http').createServer((q, s) => s.end(JSON.stringify(process.argv.slice(2)))).listen(${await freePort()}, '127.0.0.1');`);
    const run = foreground(env, dir, app, '--', '-w', '3');
    const master = await serving(env, dir, 'argv', 1, run.output);
    expect(JSON.parse(await get(portOf(master)))).toEqual(['-w', '3']);
    expect(run.output()).not.toContain('note:');
    run.proc.kill('SIGTERM');
    await pollUntil(() => run.proc.exitCode !== null, 'the master to stop');
  });

  it('--workers max runs one worker per CPU', async () => {
    const { dir, env } = home();
    const run = foreground({ ...env, PORT: String(await freePort()) }, dir, '--workers', 'max', HTTP_APP);
    const cpus = (await import('node:os')).availableParallelism();
    await serving(env, dir, 'http', cpus, run.output);
    run.proc.kill('SIGTERM');
    await pollUntil(() => run.proc.exitCode !== null, 'the master to stop');
  });

  it('restart is a reload, and says so; stop of an app that is not running exits 0 with a note (silent with --if-running)', async () => {
    const { dir, env } = home();
    const run = foreground({ ...env, PORT: String(await freePort()) }, dir, HTTP_APP);
    await serving(env, dir, 'http', 1, run.output);
    const restart = await cli(env, dir, 'restart', 'http');
    expect(restart.code).toBe(0);
    expect(restart.stderr).toMatch(/note: restart is a reload here: .*no request fails/);
    expect(restart.stdout).toBe('reloaded\n');
    expect((await cli(env, dir, 'stop', 'http')).code).toBe(0);
    await pollUntil(() => run.proc.exitCode !== null, 'the master to stop');
    const again = await cli(env, dir, 'stop', 'http');
    expect(again).toEqual({ code: 0, stdout: '', stderr: 'handover: note: http is not running; nothing to stop\n' });
    expect(await cli(env, dir, 'stop', 'http', '--if-running')).toEqual({ code: 0, stdout: '', stderr: '' });
  });

  it('a Node flag before the script without `--`: refused with the corrected command line', async () => {
    const { dir, env } = home();
    const run = await cli(env, dir, 'start', '--import', 'tsx', '-w', '2', 'app.ts');
    expect(run.code).toBe(2);
    expect(run.stderr).toBe('handover: --import is a Node flag, not handover\'s: Node flags for the workers go after --, before the script: ' +
      'handover start -w 2 -- --import tsx app.ts\n');
  });

  it.skipIf((process.features as { typescript?: unknown }).typescript)('a .ts script on a Node that cannot run it: refused, suggesting -- --import tsx', async () => {
    const { dir, env } = home();
    fs.writeFileSync(path.join(dir, 'app.ts'), 'const port: number = 0;\n');
    const run = await cli(env, dir, 'start', '-w', '2', 'app.ts');
    expect(run.code).toBe(2);
    expect(run.stderr).toContain(`app.ts is TypeScript, which Node ${process.version} cannot run by itself`);
    expect(run.stderr).toContain('handover start -w 2 -- --import tsx app.ts');
    expect(ourProcesses()).toEqual([]);
  });

  it('a master whose parent is npm warns that a service manager would signal npm, and says what to run', async () => {
    const { dir, env } = home();
    // what `npm start` looks like from the master: a parent whose command is npm
    const npm = path.join(dir, 'npm');
    fs.writeFileSync(npm, `require('node:child_process').spawn(process.execPath, process.argv.slice(2), { stdio: 'inherit' });`);
    const proc = spawn(process.execPath, [npm, CLI, 'start', HTTP_APP], { cwd: dir, env: { ...process.env, ...env, PORT: String(await freePort()) }, stdio: ['ignore', 'pipe', 'pipe'] });
    let output = '';
    proc.stderr!.on('data', (chunk: Buffer) => (output += chunk.toString()));
    await serving(env, dir, 'http', 1, () => output);
    expect(output).toMatch(new RegExp(`warning: this master \\(pid \\d+\\) runs under npm \\(pid ${proc.pid}\\)`));
    expect(output).toContain(`Run the master directly: node_modules/.bin/handover start ${HTTP_APP}`);
    expect((await cli(env, dir, 'stop', 'http')).code).toBe(0);
  });

  it('a master started directly does not warn about npm', async () => {
    const { dir, env } = home();
    const run = foreground({ ...env, PORT: String(await freePort()) }, dir, HTTP_APP);
    await serving(env, dir, 'http', 1, run.output);
    expect(run.output()).not.toContain('runs under npm');
    run.proc.kill('SIGTERM');
    await pollUntil(() => run.proc.exitCode !== null, 'the master to stop');
  });
});

describe('handover logs', () => {
  it('--follow streams new lines; --json gives time, stream, pid and generation', async () => {
    const { dir, env } = home();
    const app = path.join(dir, 'talk.js');
    fs.writeFileSync(app, `require('node:http').createServer((q, s) => { console.log('request ' + q.url); s.end('ok'); }).listen(${await freePort()}, '127.0.0.1');`);
    const run = foreground(env, dir, app);
    const master = await serving(env, dir, 'talk', 1, run.output);
    const follow = spawn(process.execPath, [CLI, 'logs', 'talk', '--follow', '--json', '--lines', '0'], { env: { ...process.env, ...env }, stdio: ['ignore', 'pipe', 'pipe'] });
    let followed = '';
    follow.stdout!.on('data', (chunk: Buffer) => (followed += chunk.toString()));
    // each request is a new line; poll until the follower has seen one (it may connect after the first)
    await pollUntil(async () => {
      await get(portOf(master));
      return followed.includes('"text":"request /"');
    }, `the follower to see a request line; it has:\n${followed}`);
    const line = JSON.parse(followed.split('\n').find((l) => l.includes('request /'))!) as Record<string, unknown>;
    expect(line).toMatchObject({ stream: 'stdout', generation: 1, text: 'request /' });
    expect(master.status!.workers.map((w) => w.pid)).toContain(line.pid);
    expect(new Date(line.time as string).getTime()).toBeGreaterThan(Date.now() - 600_000);
    follow.kill('SIGTERM');
    run.proc.kill('SIGTERM');
    await pollUntil(() => run.proc.exitCode !== null && follow.signalCode !== null, 'the master and the follower to exit');
  });

  it('the ring is bounded: of 7,000 lines the last RING_LINES are kept, the oldest dropped', async () => {
    const { dir, env } = home();
    const app = path.join(dir, 'chatty.js');
    fs.writeFileSync(app, `for (let i = 0; i < 7000; i++) console.log('line ' + i);\nrequire('node:http').createServer((q, s) => s.end('ok')).listen(${await freePort()}, '127.0.0.1');`);
    const run = foreground(env, dir, app);
    await serving(env, dir, 'chatty', 1, run.output);
    const logs = await pollUntil(async () => {
      const out = await cli(env, dir, 'logs', 'chatty', '--lines', '100000');
      return out.stdout.includes('] line 6999\n') ? out : undefined;
    }, 'the last line to reach the ring', 90_000);
    const lines = logs.stdout.trimEnd().split('\n');
    expect(lines).toHaveLength(RING_LINES);
    expect(logs.stdout).not.toMatch(/\] line 0\n/);
    run.proc.kill('SIGTERM');
    await pollUntil(() => run.proc.exitCode !== null, 'the master to stop');
  });
});
