// The `handover` command (dist/cli.js) against a running master: status,
// reload (good and broken deploys), stop, by --pid (with --control-dir) or by
// --socket, and the errors a user meets (unknown pid, dead master).
//
// Sensitivity, checked by hand on a private copy of the repository:
//   - cli.js's reload returning 0 whatever the answer: the broken-deploy test
//     fails on the exit code;
//   - findSocket() ignoring --control-dir: every --pid test fails;
//   - the master answering `stop` before the stop is done: the stop test
//     fails (the in-flight request is still running when the command returns).
import { execFile } from 'node:child_process';
import * as fs from 'node:fs';
import * as http from 'node:http';
import * as net from 'node:net';
import * as os from 'node:os';
import * as path from 'node:path';
import { afterAll, afterEach, describe, expect, it } from 'vitest';
import { type Master, ROOT, cleanUp, isAlive, onCleanUp, ourProcesses, pollUntil, reapAll, scratch, startMaster } from './helpers/processes';

const CLI = path.join(ROOT, 'dist/cli/cli.js');

afterEach(cleanUp);

interface Run {
  code: number | null;
  stdout: string;
  stderr: string;
}

/** This file's own registry of masters, so masters other tests run are not found here. */
const RUNTIME = fs.mkdtempSync(path.join(os.tmpdir(), 'handover-cli-runtime-'));
afterAll(() => fs.rmSync(RUNTIME, { recursive: true, force: true }));

/** Runs `node dist/cli.js ...args` (asynchronously: the master's pipes keep flowing). */
function cli(...args: string[]): Promise<Run> {
  return new Promise((resolve) => {
    execFile(process.execPath, [CLI, ...args], { cwd: ROOT, timeout: 60_000, env: { ...process.env, XDG_RUNTIME_DIR: RUNTIME } }, (error, stdout, stderr) => {
      const code = error ? (typeof error.code === 'number' ? error.code : null) : 0;
      resolve({ code, stdout, stderr });
    });
  });
}

function get(port: number): Promise<{ status: number; pid: number }> {
  return new Promise((resolve, reject) => {
    http.get({ host: '127.0.0.1', port, path: '/', agent: false, timeout: 20_000 }, (res) => {
      res.resume();
      res.on('end', () => resolve({ status: res.statusCode!, pid: Number(res.headers['x-pid']) }));
    }).on('error', reject);
  });
}

interface Status {
  pid: number;
  generation: number;
  listening: string[];
  workers: { pid: number; slot: number; generation: number; state: string; connections: string }[];
}

/** Parses the status command's output; fails the test if a line is not as documented. */
function parseStatus(stdout: string): Status {
  const lines = stdout.trimEnd().split('\n');
  const head = /^master pid (\d+)(?: \([\w.-]+\))?, generation (\d+)(?: \(reloading\))?, up (?:\d+[dhms] ?)+$/.exec(lines[0]);
  expect(head, `first line of status: ${lines[0]}`).not.toBeNull();
  const listening = /^listening on (.+)$/.exec(lines[1]);
  expect(listening, `second line of status: ${lines[1]}`).not.toBeNull();
  const workers = lines.slice(2).filter((line) => !line.startsWith('last reload: ') && !line.startsWith('  slot ')).map((line) => {
    const m = /^ {2}worker pid (\d+) {2}slot (\d+) {2}generation (\d+) {2}(\w+) {2}(\d+|\?) open connection\(s\) {2}up (?:\d+[dhms] ?)+ {2}rss \d+\.\d MB {2}cpu (?:\d+\.\d%|\?) {2}(?:\d+|\?) restart\(s\)$/.exec(line);
    expect(m, `worker line of status: ${line}`).not.toBeNull();
    return { pid: Number(m![1]), slot: Number(m![2]), generation: Number(m![3]), state: m![4], connections: m![5] };
  });
  return { pid: Number(head![1]), generation: Number(head![2]), listening: listening![1].split(', '), workers };
}

async function start(fixture: Record<string, unknown> = {}): Promise<{ master: Master; controlDir: string; dir: string }> {
  const dir = scratch('handover-cli-');
  const controlDir = path.join(dir, 'control');
  fs.mkdirSync(controlDir);
  const master = await startMaster({ fixture: { controlDir, ...fixture } });
  return { master, controlDir, dir };
}

describe('handover status|reload|stop', () => {
  it('status --pid prints the master pid, its generation, addresses and worker pids', async () => {
    const { master, controlDir } = await start({ workers: 2 });
    const run = await cli('status', '--pid', String(master.pid), '--control-dir', controlDir);
    expect(run.stderr).toBe('');
    expect(run.code).toBe(0);
    const status = parseStatus(run.stdout);
    expect(status.pid).toBe(master.pid);
    expect(status.generation).toBe(1);
    expect(status.listening).toEqual([`127.0.0.1:${master.port}`]);
    expect(status.workers.map((w) => w.pid).sort()).toEqual([...master.workerPids].sort());
    expect(status.workers.map((w) => [w.slot, w.generation, w.state, w.connections]).sort()).toEqual([[0, 1, 'ready', '0'], [1, 1, 'ready', '0']]);
  });

  it('status counts the open connections of each worker', async () => {
    const { master, controlDir } = await start();
    const agent = new http.Agent({ keepAlive: true, maxSockets: 2 });
    onCleanUp(() => agent.destroy());
    // two idle keep-alive connections held open to the one worker
    const hold = () => new Promise<void>((resolve, reject) => {
      http.get({ host: '127.0.0.1', port: master.port, path: '/', agent }, (res) => {
        res.resume();
        res.on('end', () => resolve());
      }).on('error', reject);
    });
    await Promise.all([hold(), hold()]);
    expect(Object.values(agent.freeSockets).flat()).toHaveLength(2);
    const status = parseStatus((await cli('status', '--pid', String(master.pid), '--control-dir', controlDir)).stdout);
    expect(status.workers.map((w) => [w.pid, w.connections])).toEqual([[master.workerPids[0], '2']]);
  });

  it('reload --pid exits 0 once the new generation serves; status shows it', async () => {
    const { master, controlDir } = await start();
    const [old] = master.workerPids;
    const run = await cli('reload', '--pid', String(master.pid), '--control-dir', controlDir);
    expect(run.stderr).toBe('');
    expect(run.code).toBe(0);
    expect(run.stdout).toBe('reloaded\n');
    const reloaded = await master.waitFor((e) => e.event === 'reloaded', 'the reloaded event');
    expect(reloaded.generation).toBe(2);
    const fresh = reloaded.status!.workers.filter((w) => w.generation === 2).map((w) => w.pid);
    expect(fresh).toHaveLength(1);
    expect(fresh).not.toContain(old);

    const status = parseStatus((await cli('status', '--pid', String(master.pid), '--control-dir', controlDir)).stdout);
    expect(status.generation).toBe(2);
    expect(status.workers.filter((w) => w.generation === 2).map((w) => w.pid)).toEqual(fresh);
    await pollUntil(() => !isAlive(old), `generation 1 worker ${old} to exit`);
    expect((await get(master.port)).pid).toBe(fresh[0]);
  });

  it('reload of a broken deploy exits 1 with "reload failed"; the old generation keeps serving', async () => {
    const dir = scratch('handover-cli-');
    const behaviourFile = path.join(dir, 'behaviour.json');
    const { master, controlDir } = await start({ behaviourFile });
    const [old] = master.workerPids;
    fs.writeFileSync(behaviourFile, JSON.stringify({ throwAtStartup: true }));
    const run = await cli('reload', '--pid', String(master.pid), '--control-dir', controlDir);
    expect(run.code).toBe(1);
    expect(run.stdout).toMatch(/^reload failed: reload to generation 2 failed, generation 1 keeps serving: .+\n$/);
    await master.waitFor((e) => e.event === 'reload-failed', 'the reload-failed event');

    const status = parseStatus((await cli('status', '--pid', String(master.pid), '--control-dir', controlDir)).stdout);
    expect(status.generation).toBe(1);
    expect(status.workers.map((w) => w.pid)).toEqual([old]);
    expect(await get(master.port)).toEqual({ status: 200, pid: old });

    // the deploy is fixed: the next reload works
    fs.writeFileSync(behaviourFile, JSON.stringify({ version: 2 }));
    expect((await cli('reload', '--pid', String(master.pid), '--control-dir', controlDir)).code).toBe(0);
  });

  it('stop --pid exits 0 after the master has stopped; the master exits 0 and nothing is left', async () => {
    const { master, controlDir } = await start();
    const [worker] = master.workerPids;
    // a request in flight: the drain lets it finish, and the command waits for all of that
    let slowDone = false;
    const slow = new Promise<string>((resolve, reject) => {
      http.get({ host: '127.0.0.1', port: master.port, path: '/slow?ms=2000', agent: false }, (res) => {
        let body = '';
        res.setEncoding('utf8');
        res.on('data', (chunk: string) => (body += chunk));
        res.on('end', () => {
          slowDone = true;
          resolve(body);
        });
      }).on('error', reject);
    });
    await pollUntil(async () => (await cli('status', '--pid', String(master.pid), '--control-dir', controlDir)).stdout.includes('  1 open connection(s)'),
      'the slow request to reach the worker');
    const run = await cli('stop', '--pid', String(master.pid), '--control-dir', controlDir);
    expect(run.code).toBe(0);
    expect(run.stdout).toBe('stopped\n');
    // the command waited for the stop: the in-flight response was delivered, the worker reaped
    expect(slowDone, 'the in-flight request finished before the stop command returned').toBe(true);
    expect(await slow).toBe('slow done');
    expect(isAlive(worker), `worker ${worker} still running when the stop command returned`).toBe(false);
    const { code, signal } = await master.exited;
    expect({ code, signal }).toEqual({ code: 0, signal: null });
    expect(ourProcesses()).toEqual([]);
    expect(fs.readdirSync(controlDir), 'the control directory is removed').toEqual([]);
  });

  it('--socket PATH works for status, reload and stop', async () => {
    const { master, controlDir } = await start();
    const [entry] = fs.readdirSync(controlDir).filter((name) => name.startsWith(`handover-${master.pid}-`));
    const socket = path.join(controlDir, entry, 'control.sock');
    expect(fs.statSync(socket).isSocket()).toBe(true);

    const status = await cli('status', '--socket', socket);
    expect(status.code).toBe(0);
    expect(parseStatus(status.stdout).pid).toBe(master.pid);
    expect(parseStatus(status.stdout).workers.map((w) => w.pid)).toEqual(master.workerPids);

    const reload = await cli('reload', '--socket', socket);
    expect(reload.code).toBe(0);
    expect((await master.waitFor((e) => e.event === 'reloaded', 'the reloaded event')).generation).toBe(2);

    const stop = await cli('stop', '--socket', socket);
    expect(stop.code).toBe(0);
    expect((await master.exited).code).toBe(0);
  });

  it('an unknown pid exits 2 with a message naming the pid and the directory', async () => {
    const dir = scratch('handover-cli-');
    const pid = 4_000_000; // above pid_max: nothing runs there
    for (const command of ['status', 'reload', 'stop']) {
      const run = await cli(command, '--pid', String(pid), '--control-dir', dir);
      expect(run.code, command).toBe(2);
      expect(run.stdout).toBe('');
      expect(run.stderr).toBe(`handover: no control socket for master pid ${pid} in ${dir} (is it running, as this user? --control-dir?)\n`);
    }
  });

  it('a master that died without cleaning up exits 2 with "cannot reach the master"', async () => {
    const { master, controlDir } = await start();
    master.proc.kill('SIGKILL');
    await master.exited;
    await reapAll(); // its orphaned worker too
    const run = await cli('status', '--pid', String(master.pid), '--control-dir', controlDir);
    expect(run.code).toBe(2);
    expect(run.stderr).toMatch(new RegExp(`^handover: cannot reach the master at ${controlDir}/handover-${master.pid}-\\w+/control\\.sock: .*ECONNREFUSED`));
  });

  it('without NAME, --pid or --socket, and no master running, it says so and how to start or find one', async () => {
    for (const command of ['status', 'reload']) {
      const run = await cli(command);
      expect(run.code, command).toBe(2);
      expect(run.stderr).toBe('handover: no master is running as this user (start one with `handover start app.js`; ' +
        'a master started from code is found with --pid PID or --socket PATH)\n');
    }
    // stop has nothing to do, which is success (a deploy script under set -e goes on)
    expect(await cli('stop')).toEqual({ code: 0, stdout: '', stderr: 'handover: note: no master is running; nothing to stop\n' });
  });
});

describe('command-line forms and messages (issue 12)', () => {
  it('--pid=N, -p N, --control-dir=DIR and -s PATH all find the master', async () => {
    const { master, controlDir } = await start();
    const [entry] = fs.readdirSync(controlDir).filter((name) => name.startsWith(`handover-${master.pid}-`));
    for (const args of [
      [`--pid=${master.pid}`, `--control-dir=${controlDir}`],
      ['-p', String(master.pid), '--control-dir', controlDir],
      ['-s', path.join(controlDir, entry, 'control.sock')],
    ]) {
      const run = await cli('status', ...args);
      expect(run.stderr, args.join(' ')).toBe('');
      expect(parseStatus(run.stdout).pid).toBe(master.pid);
    }
  });

  it('--version and -v print the version; --help prints the usage', async () => {
    const { version } = JSON.parse(fs.readFileSync(path.join(ROOT, 'package.json'), 'utf8'));
    expect(await cli('--version')).toEqual({ code: 0, stdout: `${version}\n`, stderr: '' });
    expect(await cli('-v')).toEqual({ code: 0, stdout: `${version}\n`, stderr: '' });
    const help = await cli('--help');
    expect(help.code).toBe(0);
    expect(help.stdout).toMatch(/^usage: handover <command> \[options\]\n/);
    const startHelp = await cli('start', '--help');
    expect(startHelp.stdout).toMatch(/^usage: handover start \[options\]/);
  });

  it('an unknown command or option is named, with the closest known one', async () => {
    expect(await cli('stauts')).toEqual({
      code: 2,
      stdout: '',
      stderr: 'handover: unknown command stauts; did you mean `handover status`?; commands: start, list, status, reload, restart, rollback, scale, stop, logs, monit, startup (handover --help)\n',
    });
    const flagFirst = await cli('--pid', '123', 'status');
    expect(flagFirst.code).toBe(2);
    expect(flagFirst.stderr).toMatch(/^handover: --pid is not a command; commands: start, list, status, reload, restart, rollback, scale, stop, logs, monit, startup/);
    const option = await cli('status', '--jsno');
    expect(option.code).toBe(2);
    expect(option.stderr).toBe('handover: unknown option --jsno for `handover status`; did you mean --json? (handover status --help lists them)\n');
    const value = await cli('status', '--pid');
    expect(value.stderr).toBe('handover: --pid needs a value: --pid VALUE\n');
    const start = await cli('start', '--workers', 'two', 'app.js');
    expect(start.stderr).toBe('handover: --workers must be a whole number >= 1 (got "two")\n');
  });

  it('--control-dir on a missing directory: one line naming it and what to give, no stack trace', async () => {
    const missing = path.join(scratch('handover-cli-'), 'nope');
    const run = await cli('status', '--pid', '123', '--control-dir', missing);
    expect(run).toEqual({
      code: 2,
      stdout: '',
      stderr: `handover: cannot read the control directory ${missing} (ENOENT); give the directory the master was started with (its controlDir option) to --control-dir\n`,
    });
  });

  it.skipIf(process.getuid!() !== 0)('a master of another user: says whose it is and how to ask as that user, instead of "closed the connection"', async () => {
    // A socket that listens, owned by nobody: the uid check happens before any request is sent.
    const dir = scratch('handover-cli-');
    const socket = path.join(dir, 'control.sock');
    const server = net.createServer((conn) => conn.destroy());
    await new Promise<void>((resolve) => server.listen(socket, resolve));
    onCleanUp(() => server.close());
    fs.chownSync(socket, 65534, 65534);
    const nobody = fs.readFileSync('/etc/passwd', 'utf8').split('\n').find((l) => l.split(':')[2] === '65534')!.split(':')[0];
    const run = await cli('status', '--socket', socket);
    expect(run).toEqual({
      code: 2,
      stdout: '',
      stderr: `handover: the master at ${socket} runs as ${nobody}, and answers only its own user (you are root); ` +
        `run the command as that user, e.g. sudo -u ${nobody} handover ...\n`,
    });
  });
});

describe('masters found by name (handover start registers them)', () => {
  const HTTP_APP = path.join(ROOT, 'test/fixtures/unmodified/http.js');

  async function startNamed(name: string): Promise<Master> {
    const master = await startMaster({
      script: 'dist/cli/cli.js',
      args: ['start', '--name', name, HTTP_APP],
      env: { XDG_RUNTIME_DIR: RUNTIME },
      waitReady: false,
    });
    await pollUntil(async () => (await cli('status', name)).code === 0, `master ${name} to register`, 60_000);
    return master;
  }

  it('list shows each master; status/reload/stop take a NAME; without one they refuse to guess between two', async () => {
    const api = await startNamed('api');
    const admin = await startNamed('admin');
    const list = await cli('list');
    expect(list.code).toBe(0);
    const rows = list.stdout.trimEnd().split('\n');
    expect(rows[0]).toMatch(/^NAME +PID +GENERATION +WORKERS +UPTIME +ADDRESSES +DIRECTORY$/);
    expect(rows.slice(1).map((r) => r.split(/ +/).slice(0, 4))).toEqual([
      ['api', String(api.pid), '1', '1/1'],
      ['admin', String(admin.pid), '1', '1/1'],
    ]);

    const guess = await cli('status');
    expect(guess.code).toBe(2);
    expect(guess.stderr).toBe(`handover: 2 masters are running: api (pid ${api.pid}, in ${ROOT}), admin (pid ${admin.pid}, in ${ROOT}); ` +
      'name one (handover status NAME) or give --pid PID\n');

    const status = JSON.parse((await cli('status', 'api', '--json')).stdout);
    expect(status).toMatchObject({ pid: api.pid, name: 'api', generation: 1 });
    expect(status.workers).toHaveLength(1);
    expect(status.workers[0].rssBytes).toBeGreaterThan(1 << 20);
    expect(status.workers[0].uptimeMs).toBeGreaterThanOrEqual(0);

    expect(await cli('reload', 'admin')).toMatchObject({ code: 0, stdout: 'reloaded\n' });
    expect(JSON.parse((await cli('status', 'admin', '--json')).stdout).generation).toBe(2);
    expect(JSON.parse((await cli('status', 'api', '--json')).stdout).generation).toBe(1);

    const missing = await cli('reload', 'nosuch');
    expect(missing.code).toBe(2);
    expect(missing.stderr).toMatch(/^handover: no master named nosuch is running as this user; running: api \(pid \d+, in .*\), admin/);

    expect(await cli('stop', 'api')).toMatchObject({ code: 0, stdout: 'stopped\n' });
    expect((await api.exited).code).toBe(0);
    // one left: it is the default
    expect(parseStatus((await cli('status')).stdout).pid).toBe(admin.pid);
    const second = await startMaster({ script: 'dist/cli/cli.js', args: ['start', '--name', 'admin', HTTP_APP], env: { XDG_RUNTIME_DIR: RUNTIME }, waitReady: false });
    expect((await second.exited).code).toBe(2);
    expect(second.stderr).toContain(`a master named admin is already running (pid ${admin.pid}, in ${ROOT}); give this one another --name, or \`handover stop admin\` first`);
  });

  it('an entry whose master was SIGKILLed is proven stale (its socket refuses) and removed; a live one is kept', async () => {
    const gone = await startNamed('gone');
    const kept = await startNamed('kept');
    gone.proc.kill('SIGKILL');
    await gone.exited;
    const list = await cli('list');
    expect(list.stdout).not.toMatch(/^gone /m);
    expect(list.stdout).toMatch(new RegExp(`^kept +${kept.pid} `, 'm'));
    const dir = path.join(RUNTIME, 'handover');
    const entries = fs.readdirSync(dir).map((f) => JSON.parse(fs.readFileSync(path.join(dir, f), 'utf8')).name);
    expect(entries).toEqual(['kept']);
    expect((fs.statSync(dir).mode & 0o777).toString(8)).toBe('700');
  });
});
