// Privilege separation (the `user` option): a master started as root binds a
// port below 1024 and runs its workers as `nobody`. Checks the real uids in
// /proc, the control directory's owner and modes, and that the control socket
// gives nothing to processes that are not this master's workers: a `nobody`
// process (the workers' own uid) gets no fds and no admin access, and a process
// of another uid cannot even connect.
//
// Needs root (skipped otherwise), except the unknown-user test.
//
// Sensitivity, checked by hand on a private copy of the repository:
//   - spawnSelf() ignoring the identity (workers spawned as root): the uid
//     checks fail (worker Uid 0);
//   - ControlServer.open() not chown-ing the directory and socket: the owner
//     checks fail, and the workers cannot connect at all (EACCES: the
//     directory is root's, 0700), so the master never becomes ready;
//   - the hello gate without the pid/token check: the refusal lines are
//     missing (the master's onHello still drops unknown pids); with that
//     second check removed too, the fake `nobody` process receives the
//     listening fd and the result comparison fails;
//   - the admin gate accepting the workers' uid: the fake process's status
//     request gets an answer.
import { execFile, execFileSync, spawn } from 'node:child_process';
import { once } from 'node:events';
import * as fs from 'node:fs';
import * as http from 'node:http';
import * as net from 'node:net';
import * as path from 'node:path';
import { afterAll, afterEach, describe, expect, it } from 'vitest';
import { controlSocketOf } from './helpers/control';
import { freePort } from './helpers/ports';
import { type Master, ROOT, childrenOf, fdCount, isAlive, ourProcesses, pollUntil, reapAll, startMaster, tempDir } from './helpers/processes';

const isRoot = process.getuid!() === 0;

/**
 * The fixture and the package it loads, copied into a world-readable temp
 * directory: workers run as `nobody`, and a checkout under /root or in a
 * mkdtemp directory (0700) is not readable by `nobody`.
 */
function worldReadableCopy(): string {
  const dir = tempDir('handover-priv-pkg-');
  const copy = (from: string) => {
    if (fs.existsSync(path.join(ROOT, from))) fs.cpSync(path.join(ROOT, from), path.join(dir, from), { recursive: true });
  };
  for (const entry of ['package.json', 'dist', 'prebuilds', 'build/Release/handover.node', 'node_modules/node-gyp-build',
    'test/fixtures/eco-privileged.js', 'test/fixtures/report.js', 'test/fixtures/privileged-program.js']) copy(entry);
  // mkdtemp makes it 0700 and the copies keep the checkout's modes
  execFileSync('chmod', ['-R', 'a+rX', dir]);
  return dir;
}
const PACKAGE = isRoot ? worldReadableCopy() : ROOT;
afterAll(() => {
  if (PACKAGE !== ROOT) fs.rmSync(PACKAGE, { recursive: true, force: true });
});
/** startMaster takes a path relative to the checkout. */
const SCRIPT = path.relative(ROOT, path.join(PACKAGE, 'test', 'fixtures', 'eco-privileged.js'));
const NOBODY = 65534;
if (!isRoot) console.log('skipping the privilege separation tests: they need root (the master binds a port < 1024 and setuids its workers)');

const cleanups: (() => void)[] = [];
afterEach(async () => {
  await reapAll();
  for (const cleanup of cleanups.splice(0).reverse()) cleanup();
});

/** Resolves once the master's stdout and stderr have ended (its exit may be seen before their last bytes). */
async function outputDone(master: Master): Promise<void> {
  await Promise.all([master.proc.stdout!, master.proc.stderr!].map((s) => (s.readableEnded ? undefined : once(s, 'end'))));
}

/** A parent for the control directory that `nobody` can traverse (mkdtemp makes 0700 dirs). */
function controlParent(): string {
  const dir = tempDir('handover-priv-');
  fs.chmodSync(dir, 0o755);
  cleanups.push(() => fs.rmSync(dir, { recursive: true, force: true }));
  return dir;
}

/** A free port in 900-1000 on 127.0.0.1 (we are root), found by listening on it. */
async function privilegedPort(from = 900): Promise<number> {
  for (let port = from; port <= 1000; port++) {
    const server = net.createServer();
    const ok = await new Promise<boolean>((resolve) => {
      server.once('error', () => resolve(false));
      server.listen(port, '127.0.0.1', () => resolve(true));
    });
    if (ok) {
      await new Promise<void>((resolve) => server.close(() => resolve()));
      return port;
    }
  }
  throw new Error('no free port in 900-1000 on 127.0.0.1');
}

/** The Uid:/Gid: lines (real, effective, saved, fs) and Groups: of a process. */
function credentials(pid: number): { uid: number[]; gid: number[]; groups: number[] } {
  const status = fs.readFileSync(`/proc/${pid}/status`, 'utf8');
  const ids = (name: string) => (new RegExp(`^${name}:\\s*(.*)$`, 'm').exec(status)?.[1] ?? '').trim().split(/\s+/).filter(Boolean).map(Number);
  return { uid: ids('Uid'), gid: ids('Gid'), groups: ids('Groups') };
}

function get(port: number): Promise<number> {
  return new Promise((resolve, reject) => {
    http.get({ host: '127.0.0.1', port, path: '/', agent: false, timeout: 20_000 }, (res) => {
      res.resume();
      res.on('end', () => (res.statusCode === 200 ? resolve(Number(res.headers['x-pid'])) : reject(new Error(`status ${res.statusCode}`))));
    }).on('error', reject);
  });
}

function controlPaths(parent: string, master: Master): { dir: string; socket: string } {
  const entries = fs.readdirSync(parent).filter((name) => name.startsWith(`handover-${master.pid}-`));
  expect(entries, `control directory of master ${master.pid} in ${parent}`).toHaveLength(1);
  const dir = path.join(parent, entries[0]);
  return { dir, socket: path.join(dir, 'control.sock') };
}

async function startPrivileged(fixture: Record<string, unknown>): Promise<{ master: Master; port: number; parent: string }> {
  const port = await privilegedPort();
  const parent = controlParent();
  const master = await startMaster({ script: SCRIPT, fixture: { addresses: [`127.0.0.1:${port}`], controlDir: parent, ...fixture } });
  return { master, port, parent };
}

/**
 * Runs `node -e <code> <args>` as another user via setpriv (no supplementary
 * groups), resolving with the JSON line it prints.
 */
function runAs(user: string[], code: string, args: string[]): Promise<{ pid: number; result: Record<string, unknown> }> {
  return new Promise((resolve, reject) => {
    const child = spawn('setpriv', [...user, '--clear-groups', process.execPath, '-e', code, ...args], {
      cwd: '/', stdio: ['ignore', 'pipe', 'pipe'],
    });
    cleanups.push(() => child.kill('SIGKILL'));
    let stdout = '';
    let stderr = '';
    child.stdout!.setEncoding('utf8').on('data', (chunk: string) => (stdout += chunk));
    child.stderr!.setEncoding('utf8').on('data', (chunk: string) => (stderr += chunk));
    child.on('error', reject);
    child.on('close', (status) => {
      try {
        resolve({ pid: child.pid!, result: JSON.parse(stdout) });
      } catch {
        reject(new Error(`setpriv ${user.join(' ')} node exited ${status}: stdout ${stdout} stderr ${stderr}`));
      }
    });
  });
}

// A client of the control socket, run as another user. For each attempt: connect
// (native, like a worker), send one frame, then wait for the master's answer
// with recvFds: the bytes and any fds it carried, or EOF.
const PROBE = `
const native = require(${JSON.stringify(path.join(PACKAGE, 'dist/platform/native.js'))});
const { encode } = require(${JSON.stringify(path.join(PACKAGE, 'dist/protocol.js'))});
const [socketPath, port, workerPid] = process.argv.slice(1);
async function attempt(frame) {
  let fd;
  try {
    fd = native.connectUnix(socketPath);
  } catch (error) {
    return { connect: error.code };
  }
  try {
    native.sendFds(fd, encode(frame), []);
    const got = await native.recvFds(fd, 65536, 8, 10000);
    for (const received of got.fds) native.closeFd(received);
    return { connect: 'ok', bytes: got.data.length, fds: got.fds.length };
  } catch (error) {
    return { connect: 'ok', error: error.code || error.message };
  } finally {
    native.closeFd(fd);
  }
}
(async () => {
  const uid = process.getuid();
  const hello = (token, pid) => ({ type: 'hello', token, pid, slot: 0, generation: 1, addresses: ['127.0.0.1:' + port] });
  let stolen = '';
  try {
    stolen = /HANDOVER_TOKEN=([^\\0]*)/.exec(require('fs').readFileSync('/proc/' + workerPid + '/environ', 'latin1'))[1];
  } catch (error) {
    stolen = 'unreadable: ' + error.code;
  }
  const results = {
    fakeToken: await attempt(hello('0'.repeat(64), process.pid)),
    stolenToken: await attempt(hello(stolen, process.pid)),
    stolenTokenAndPid: await attempt(hello(stolen, Number(workerPid))),
    status: await attempt({ type: 'status' }),
    stop: await attempt({ type: 'stop' }),
  };
  console.log(JSON.stringify({ uid, stolen: stolen.length === 64 ? 'read' : stolen, ...results }));
})();
`;

describe('privilege separation: new Server({ user: \'nobody\' })', () => {
  it.skipIf(!isRoot)('workers run as nobody, the master as root, on a port below 1024; a reload keeps it so', async () => {
    const { master, port, parent } = await startPrivileged({ user: 'nobody' });
    expect(port).toBeLessThan(1024);
    const pid1 = await get(port);
    expect(master.workerPids).toEqual([pid1]);
    expect(credentials(master.pid).uid).toEqual([0, 0, 0, 0]);
    const worker = credentials(pid1);
    expect(worker.uid).toEqual([NOBODY, NOBODY, NOBODY, NOBODY]);
    expect(worker.gid).toEqual([NOBODY, NOBODY, NOBODY, NOBODY]);
    expect(worker.groups, 'the worker keeps none of root\'s supplementary groups').not.toContain(0);

    const { dir, socket } = controlPaths(parent, master);
    const dirStat = fs.statSync(dir);
    const sockStat = fs.statSync(socket);
    expect(sockStat.isSocket()).toBe(true);
    // root's, reachable by the workers' group only (the setgid bit hands the group down to the socket)
    expect({ uid: dirStat.uid, gid: dirStat.gid, mode: dirStat.mode & 0o7777 }).toEqual({ uid: 0, gid: NOBODY, mode: 0o2750 });
    expect({ uid: sockStat.uid, gid: sockStat.gid, mode: sockStat.mode & 0o7777 }).toEqual({ uid: 0, gid: NOBODY, mode: 0o660 });

    const outcome = await master.reload();
    expect(outcome.event, outcome.error).toBe('reloaded');
    const [pid2] = outcome.status!.workers.filter((w) => w.generation === 2).map((w) => w.pid);
    expect(pid2).not.toBe(pid1);
    await pollUntil(() => !isAlive(pid1), `generation 1 worker ${pid1} to exit`);
    expect(await get(port)).toBe(pid2);
    expect(credentials(pid2).uid).toEqual([NOBODY, NOBODY, NOBODY, NOBODY]);
    expect(credentials(master.pid).uid).toEqual([0, 0, 0, 0]);

    const { code } = await master.stop();
    expect(code).toBe(0);
    expect(ourProcesses()).toEqual([]);
    expect(fs.existsSync(dir), 'the control directory is removed at stop').toBe(false);
  });

  it.skipIf(!isRoot)('a nobody process that is not a worker gets no fds and no admin access, even with a worker\'s token', async () => {
    const { master, port, parent } = await startPrivileged({ user: 'nobody' });
    const [worker] = master.workerPids;
    const { socket } = controlPaths(parent, master);
    const { pid, result } = await runAs(['--reuid=nobody', '--regid=nogroup'], PROBE, [socket, String(port), String(worker)]);
    const closed = { connect: 'ok', bytes: 0, fds: 0 }; // EOF, nothing sent, no fd
    expect(result).toEqual({
      uid: NOBODY,
      stolen: 'read', // same uid: it can read the worker's environment...
      fakeToken: closed,
      stolenToken: closed, // ...but the token is one-time and bound to the worker's pid
      stolenTokenAndPid: closed, // and the kernel, not the frame, says who the peer is
      status: closed,
      stop: closed,
    });
    for (const why of ['not a process this master spawned', 'admin requests come from root only']) {
      const line = `control: refused pid ${pid} (uid ${NOBODY}): ${why}`;
      await pollUntil(() => master.stderr.includes(line), `the master to log "${line}"`);
    }

    // the master did not stop and still serves with the same worker
    expect(isAlive(master.pid)).toBe(true);
    expect(master.events.some((e) => e.event === 'stop')).toBe(false);
    expect(await get(port)).toBe(worker);
    expect((await master.stop()).code).toBe(0);
  });

  it.skipIf(!isRoot)('a process of another uid cannot even connect to the control socket (EACCES)', async () => {
    const { master, port, parent } = await startPrivileged({ user: 'nobody' });
    const { socket } = controlPaths(parent, master);
    const { result } = await runAs(['--reuid=1000', '--regid=1000'], PROBE, [socket, String(port), String(master.workerPids[0])]);
    expect(result).toMatchObject({
      uid: 1000,
      stolen: 'unreadable: EACCES',
      fakeToken: { connect: 'EACCES' },
      status: { connect: 'EACCES' },
      stop: { connect: 'EACCES' },
    });
    expect(await get(port)).toBe(master.workerPids[0]);
    expect((await master.stop()).code).toBe(0);
  });

  it.skipIf(!isRoot)('a worker that asks for an address the master\'s program did not register gets nothing bound: a privileged port stays closed', async () => {
    const port = await privilegedPort();
    const extra = await privilegedPort(port + 1);
    const master = await startMaster({
      script: SCRIPT,
      fixture: { user: 'nobody', addresses: [`127.0.0.1:${port}`], workerOnlyAddresses: [`127.0.0.1:${extra}`], controlDir: controlParent() },
      waitReady: false,
    });
    const { code } = await master.exited;
    await outputDone(master);
    expect(code).not.toBe(0);
    expect(master.stderr).toContain(`asked for 127.0.0.1:${extra}, which the master's program did not register`);
    await expect(get(extra)).rejects.toMatchObject({ code: 'ECONNREFUSED' });
  });

  it.skipIf(!isRoot)('without `user`, workers run as root', async () => {
    const { master, port, parent } = await startPrivileged({});
    const pid = await get(port);
    expect(credentials(pid).uid).toEqual([0, 0, 0, 0]);
    const { dir, socket } = controlPaths(parent, master);
    expect({ uid: fs.statSync(dir).uid, mode: fs.statSync(dir).mode & 0o7777 }).toEqual({ uid: 0, mode: 0o700 });
    expect({ uid: fs.statSync(socket).uid, mode: fs.statSync(socket).mode & 0o7777 }).toEqual({ uid: 0, mode: 0o600 });
    expect((await master.stop()).code).toBe(0);
  });
});

describe('an unknown user', () => {
  it('`user: \'no-such-user-xyz\'` fails at construction with a message naming it; nothing starts', async () => {
    const master = await startMaster({ script: SCRIPT, fixture: { user: 'no-such-user-xyz' }, waitReady: false });
    const { code } = await master.exited;
    await outputDone(master);
    expect(code).toBe(1);
    const fatal = master.events.find((e) => e.event === 'fatal') as { phase?: string; error?: string } | undefined;
    expect(fatal?.phase, master.stderr).toBe('construct');
    expect(fatal?.error).toBe('user "no-such-user-xyz" does not exist on this machine; set the `user`/`group` options to an existing account');
    expect(ourProcesses()).toEqual([]);
  });
});

// --- `handover start --user nobody`, and what nobody can do to it ------------

const CLI = path.join(PACKAGE, 'dist', 'cli', 'cli.js');
const PROGRAM = path.join(PACKAGE, 'test', 'fixtures', 'privileged-program.js');
const AS_NOBODY = ['--reuid=65534', '--regid=65534', '--clear-groups'];

interface Run {
  code: number | null;
  stdout: string;
  stderr: string;
}

/** Runs `command` as root (setpriv []), or as nobody (setpriv AS_NOBODY), to its end. */
function run(as: string[], command: string[], env: Record<string, string> = {}): Promise<Run> {
  return new Promise((resolve) => {
    const child = execFile('setpriv', [...as, ...command], { cwd: '/', timeout: 120_000, env: { ...process.env, ...env } },
      (error, stdout, stderr) => resolve({ code: error ? (typeof error.code === 'number' ? error.code : null) : 0, stdout, stderr }));
    cleanups.push(() => child.kill('SIGKILL'));
  });
}

/** A directory of `uid` (mode `mode`) in a fresh root-owned 0755 directory, so nobody can reach it. */
function dirOf(uid: number, mode: number): string {
  const parent = controlParent();
  const dir = path.join(parent, `owned-by-${uid}`);
  fs.mkdirSync(dir);
  fs.chownSync(dir, uid, uid);
  fs.chmodSync(dir, mode);
  return dir;
}

class Started {
  constructor(readonly master: Master, readonly name: string, readonly controlDir: string, private readonly runtime: string) {}

  /** `handover ...args` as root (AS_ROOT) or nobody (AS_NOBODY), with this master's registry. */
  cli(as: string[], ...args: string[]): Promise<Run> {
    return run(as, [process.execPath, CLI, ...args], { XDG_RUNTIME_DIR: this.runtime });
  }

  /** The addresses it serves once generation 1 is ready, from its log. */
  async ready(): Promise<string[]> {
    const line = await pollUntil(() => {
      if (this.master.proc.exitCode !== null) throw new Error(`the master exited ${this.master.proc.exitCode}:\n${this.master.stderr}`);
      return /ready: generation 1 serving on (.*)/.exec(this.master.stderr);
    }, 'generation 1 to serve', 60_000);
    return line[1].split(', ');
  }

  get socket(): string {
    return controlPaths(this.controlDir, this.master).socket;
  }
}

const AS_ROOT: string[] = [];

/** `handover start --user nobody [args] privileged-program.js` as root, with its own registry and control directory. */
async function handoverStart(args: string[], env: Record<string, string> = {}): Promise<Started> {
  const controlDir = controlParent();
  const runtime = controlParent();
  const name = `priv-${process.pid}-${cleanups.length}`;
  const master = await startMaster({
    script: path.relative(ROOT, CLI),
    args: ['start', '--user', 'nobody', '--control-dir', controlDir, '--name', name, ...args, PROGRAM],
    // a fixed port: under handover start, listen(0) stays private to each worker
    env: { XDG_RUNTIME_DIR: runtime, PORT: String(await freePort()), ...env },
    waitReady: false,
  });
  return new Started(master, name, controlDir, runtime);
}

function getFrom(port: number): Promise<{ pid: number; uid: number; body: string }> {
  return new Promise((resolve, reject) => {
    http.get({ host: '127.0.0.1', port, path: '/', agent: false, timeout: 20_000 }, (res) => {
      let body = '';
      res.setEncoding('utf8').on('data', (chunk: string) => (body += chunk));
      res.on('end', () => resolve({ pid: Number(res.headers['x-pid']), uid: Number(res.headers['x-uid']), body }));
    }).on('error', reject);
  });
}

/** Whether a started master gave up ('exited') or came up ('ready'). */
function startOutcome(app: Started): Promise<'exited' | 'ready'> {
  return pollUntil(() => (app.master.proc.exitCode !== null ? 'exited' : /ready: generation 1/.test(app.master.stderr) ? 'ready' : undefined), 'the start to end', 60_000);
}

function portOf(address: string): number {
  return Number(address.slice(address.lastIndexOf(':') + 1));
}

describe('handover start --user nobody', () => {
  it.skipIf(!isRoot)('root administers it (status, reload, scale, stop); nobody is refused with who may', async () => {
    const app = await handoverStart([]);
    const port = portOf((await app.ready())[0]);
    const first = await getFrom(port);
    expect(first.uid).toBe(NOBODY);

    const status = await app.cli(AS_ROOT, 'status', app.name, '--json');
    expect(status.stderr).toBe('');
    expect(JSON.parse(status.stdout)).toMatchObject({ pid: app.master.pid, generation: 1, workers: [{ pid: first.pid, state: 'ready' }] });
    expect(await app.cli(AS_ROOT, 'reload', app.name)).toMatchObject({ code: 0, stdout: 'reloaded\n' });
    await pollUntil(async () => (await getFrom(port)).pid !== first.pid, 'the new generation to answer');
    expect(await app.cli(AS_ROOT, 'scale', app.name, '2')).toMatchObject({ code: 0, stdout: 'scaled to 2 worker(s)\n' });

    // nobody: refused by the command, which says who may, and by the master
    for (const args of [['status', '--socket', app.socket], ['reload', '--socket', app.socket], ['stop', '--socket', app.socket]]) {
      const refused = await app.cli(AS_NOBODY, ...args);
      expect(refused.code, refused.stdout).toBe(2);
      expect(refused.stderr).toContain(`the master at ${app.socket} runs as root, and only root may administer it (you are nobody); run the command as root`);
    }
    const direct = await runAs(['--reuid=65534', '--regid=65534'], PROBE, [app.socket, String(port), '0']);
    expect(direct.result.status).toEqual({ connect: 'ok', bytes: 0, fds: 0 });
    await pollUntil(() => app.master.stderr.includes(`control: refused pid ${direct.pid} (uid ${NOBODY}): admin requests come from root only`), 'the refusal line');
    expect(isAlive(app.master.pid)).toBe(true);

    expect(await app.cli(AS_ROOT, 'stop', app.name)).toMatchObject({ code: 0, stdout: 'stopped\n' });
    expect((await app.master.exited).code).toBe(0);
  });

  it.skipIf(!isRoot)('binds neither port < 1024 nor a path in a root-only directory for the program unless --allow-listen names it', async () => {
    const port = await privilegedPort();
    const rootOnly = dirOf(0, 0o700);
    const sock = path.join(rootOnly, 'app.sock');
    const refused = await handoverStart([], { PORT: String(port), SOCK: sock });
    expect(await startOutcome(refused), refused.master.stderr).toBe('exited');
    await outputDone(refused.master);
    expect(refused.master.proc.exitCode).not.toBe(0);
    expect(refused.master.stderr).toContain(
      `cannot listen on 127.0.0.1:${port}: refused: the program runs as nobody:65534 (65534:65534), and port ${port} is below 1024, which that user cannot bind itself; ` +
        `allow it with --allow-listen 127.0.0.1:${port} (the \`allowListen\` option)`,
    );
    expect(refused.master.stderr, 'nothing was bound: the master never listened').not.toMatch(/listening on|serving on/);
    expect(fs.readdirSync(rootOnly)).toEqual([]);

    const onlyPath = await handoverStart([], { SOCK: sock });
    expect(await startOutcome(onlyPath), onlyPath.master.stderr).toBe('exited');
    expect((await onlyPath.master.exited).code).not.toBe(0);
    await outputDone(onlyPath.master);
    expect(onlyPath.master.stderr).toContain(
      `cannot listen on unix:${sock}: refused: the program runs as nobody:65534 (65534:65534), and that user cannot create files in ${rootOnly} (owner uid 0, mode 0700); ` +
        `allow it with --allow-listen unix:${sock}`,
    );
    expect(fs.readdirSync(rootOnly)).toEqual([]);

    const allowed = await handoverStart([`--allow-listen=127.0.0.1:${port},unix:${sock}`], { PORT: String(port), SOCK: sock });
    await allowed.ready();
    expect(await getFrom(port)).toMatchObject({ uid: NOBODY });
    expect(fs.statSync(sock).isSocket()).toBe(true);
    expect((await allowed.master.stop()).code).toBe(0);
  });

  it.skipIf(!isRoot)('does not replace another user\'s stale socket file that the program\'s user could not remove itself', async () => {
    const shared = controlParent();
    fs.chmodSync(shared, 0o1777); // like /tmp: nobody may create files here, not remove uid 1000's
    const sock = path.join(shared, 'other-service.sock');
    // uid 1000's socket, left behind (bound, never unlinked: its process is gone)
    const stale = await run(['--reuid=1000', '--regid=1000', '--clear-groups'], [process.execPath, '-e',
      `require(${JSON.stringify(path.join(PACKAGE, 'dist/platform/native.js'))}).bindUnix({ path: ${JSON.stringify(sock)} })`]);
    expect(stale.code, stale.stderr).toBe(0);
    const before = fs.lstatSync(sock);
    expect({ socket: before.isSocket(), uid: before.uid }).toEqual({ socket: true, uid: 1000 });

    const app = await handoverStart([], { SOCK: sock });
    expect(await startOutcome(app), app.master.stderr).toBe('exited');
    await outputDone(app.master);
    expect(app.master.stderr).toContain(
      `cannot listen on unix:${sock}: bind EADDRINUSE ${sock} (a stale socket file nobody:65534 (65534:65534) could not remove itself, so root leaves it; ` +
        `remove it, or allow the address with --allow-listen unix:${sock})`,
    );
    expect(fs.lstatSync(sock).ino, 'uid 1000\'s file is still there').toBe(before.ino);
  });

  it.skipIf(!isRoot)('nobody cannot remove the control socket; 2,000 silent connections do not exhaust the master, and a crashed worker is respawned', async () => {
    const app = await handoverStart([]);
    const port = portOf((await app.ready())[0]);
    const { pid: worker } = await getFrom(port);
    // a small fd table, so a flood that the master held would fill it
    execFileSync('prlimit', ['--pid', String(app.master.pid), '--nofile=256:256']);
    const baseline = fdCount(app.master.pid);
    const attacker = spawn('setpriv', [...AS_NOBODY, process.execPath, '-e', FLOOD, app.socket, '2000'], { cwd: '/', stdio: ['pipe', 'pipe', 'pipe'] });
    cleanups.push(() => attacker.kill('SIGKILL'));
    let out = '';
    attacker.stdout!.setEncoding('utf8').on('data', (chunk: string) => (out += chunk));
    attacker.stderr!.setEncoding('utf8').on('data', (chunk: string) => (out += chunk));
    const report = await pollUntil(() => /^(\{.*\})$/m.exec(out)?.[1], 'the attacker to report', 90_000);
    const flood = JSON.parse(report);
    expect(flood.unlink, 'nobody removing control.sock').toBe('EACCES');
    expect(flood.connected).toBe(2000);
    // what the master holds for nobody's connections stays bounded, far below its 256 fds
    const during = fdCount(app.master.pid);
    expect(during, `master fds during the flood (baseline ${baseline})`).toBeLessThan(baseline + 64);

    // while the flood goes on: the worker crashes, and is respawned, and serves
    process.kill(worker, 'SIGKILL');
    const respawned = await pollUntil(async () => {
      const answer = await getFrom(port).catch(() => undefined);
      return answer && answer.pid !== worker ? answer : undefined;
    }, 'a respawned worker to answer', 60_000);
    expect(respawned.uid).toBe(NOBODY);
    attacker.stdin!.end();
    const [attempts] = (await once(attacker.stdout!, 'end').then(() => /attempts (\d+)/.exec(out)?.slice(1) ?? ['0']));
    expect(Number(attempts)).toBeGreaterThanOrEqual(2000);
    expect(isAlive(app.master.pid)).toBe(true);
    expect(app.master.stderr).not.toMatch(/EMFILE/);
    expect(app.master.stderr, 'refused with a reason').toContain('connections of this uid have not said who they are yet');
    expect((await app.master.stop()).code).toBe(0);
  });
});

// As nobody: unlink the control socket, then keep `count` silent connections
// open (reconnecting each one the master closes) until stdin ends, at most
// 20,000 attempts or 90 s; report once all `count` have connected.
const FLOOD = `
const fs = require('fs'), net = require('net');
const [socketPath, count] = [process.argv[1], Number(process.argv[2])];
let unlink = 'removed';
try { fs.unlinkSync(socketPath); } catch (error) { unlink = error.code; }
let attempts = 0, connected = 0, reported = false, stopping = false;
const open = new Set();
function one() {
  if (stopping || attempts >= 20000) return;
  attempts++;
  const socket = net.connect(socketPath);
  open.add(socket);
  socket.on('connect', () => {
    if (++connected === count && !reported) { reported = true; console.log(JSON.stringify({ unlink, connected })); }
  });
  socket.on('error', () => {});
  socket.on('close', () => { open.delete(socket); setImmediate(one); });
}
for (let i = 0; i < count; i++) one();
const end = () => { stopping = true; for (const s of open) s.destroy(); console.log('attempts ' + attempts); process.exit(0); };
process.stdin.on('end', end).resume();
setTimeout(end, 90000);
`;

describe('--env-file under --user nobody', () => {
  it.skipIf(!isRoot)('a root-only env file works: the workers get its variables through their environment', async () => {
    const secrets = dirOf(0, 0o700);
    const envFile = path.join(secrets, '.env');
    fs.writeFileSync(envFile, 'GREETING=from a root-only file\n', { mode: 0o600 });
    const app = await handoverStart([`--env-file=${envFile}`]);
    const port = portOf((await app.ready())[0]);
    expect(await getFrom(port)).toMatchObject({ uid: NOBODY, body: 'from a root-only file' });
    const worker = (await getFrom(port)).pid;
    const argv = fs.readFileSync(`/proc/${worker}/cmdline`, 'utf8').split('\0');
    expect(argv.some((arg) => arg.startsWith('--env-file')), 'the env file is not in the worker\'s command line').toBe(false);
    expect((await app.master.stop()).code).toBe(0);
  });

  it.skipIf(!isRoot)('nobody flipping .env to a symlink at a root-only file never gets its contents into a worker', async () => {
    // the operator's env file, root's, in a directory of nobody's (the app's)
    const appDir = dirOf(NOBODY, 0o755);
    const envFile = path.join(appDir, '.env');
    fs.writeFileSync(envFile, 'GREETING=public\n', { mode: 0o644 });
    const secret = path.join(dirOf(0, 0o700), 'secret.env');
    fs.writeFileSync(secret, 'GREETING=TOPSECRET\n', { mode: 0o600 });
    const app = await handoverStart([`--env-file=${envFile}`]);
    const port = portOf((await app.ready())[0]);
    expect((await getFrom(port)).body).toBe('public');

    // nobody swaps .env for a symlink to the secret and back, as fast as it can
    const flipper = spawn('setpriv', [...AS_NOBODY, process.execPath, '-e', FLIP, envFile, secret], { cwd: '/', stdio: ['pipe', 'ignore', 'inherit'] });
    cleanups.push(() => flipper.kill('SIGKILL'));
    const bodies = new Set<string>();
    for (let i = 0; i < 5; i++) {
      const outcome = await reloadVia(app);
      if (outcome.code === 0) bodies.add((await getFrom(port)).body);
      else expect(outcome.stdout).toMatch(new RegExp(`(refused to read|cannot read) --env-file ${envFile}`)); // cannot: caught between rename and symlink
      for (const pid of childrenOf(app.master.pid)) expect(environOf(pid)).not.toContain('TOPSECRET');
    }
    flipper.stdin!.end(); // it leaves .env a symlink to the secret
    if (flipper.exitCode === null) await once(flipper, 'exit');
    expect(fs.lstatSync(envFile).isSymbolicLink()).toBe(true);
    const last = await reloadVia(app);
    expect(last.code).toBe(1);
    expect(last.stdout).toContain(`refused to read --env-file ${envFile}: it is a symbolic link`);
    bodies.add((await getFrom(port)).body);
    expect([...bodies]).not.toContain('TOPSECRET');
    expect(app.master.stderr).not.toContain('TOPSECRET');
    expect((await app.master.stop()).code).toBe(0);
  });
});

/** `handover reload` as root, its exit status and output. */
function reloadVia(app: Started): Promise<Run> {
  return app.cli(AS_ROOT, 'reload', app.name);
}

function environOf(pid: number): string {
  try {
    return fs.readFileSync(`/proc/${pid}/environ`, 'latin1');
  } catch {
    return ''; // gone
  }
}

// As nobody: swap `file` for a symlink to `target` and back until stdin ends,
// then leave the symlink in place.
const FLIP = `
const fs = require('fs');
const [file, target] = process.argv.slice(1);
const aside = file + '.aside';
let stopping = false;
process.stdin.on('end', () => (stopping = true)).resume();
function flip() {
  fs.renameSync(file, aside);
  fs.symlinkSync(target, file);
  if (stopping) return process.exit(0);
  fs.unlinkSync(file);
  fs.renameSync(aside, file);
  setImmediate(flip);
}
flip();
`;

describe('mode: \'single\' with user', () => {
  it.skipIf(!isRoot)('is refused at construction, with the alternatives; nothing answers, as root or otherwise', async () => {
    const master = await startMaster({
      script: SCRIPT,
      fixture: { mode: 'single', user: 'nobody', addresses: ['127.0.0.1:0'], controlDir: controlParent() },
      waitReady: false,
    });
    const outcome = await master.waitFor((e) => e.event === 'fatal' || e.event === 'ready', 'the start to end');
    expect(outcome.event, `it served: ${JSON.stringify(outcome)}`).toBe('fatal');
    expect((await master.exited).code).toBe(1);
    await outputDone(master);
    const fatal = outcome as { phase?: string; error?: string };
    expect(fatal.phase, master.stderr).toBe('construct');
    expect(fatal.error).toMatch(/^mode: 'single' cannot run as nobody.*use the default mode \(a root master binds, workers run as `user`\)/);
    expect(master.stderr).not.toMatch(/ready|serving/);
    expect(ourProcesses()).toEqual([]);
  });
});

describe('a root master in a shared temp directory', () => {
  it.skipIf(!isRoot)('5 starts racing nobody\'s planted directory (swapped for a symlink and back) delete nothing outside their own', async () => {
    const shared = controlParent();
    fs.chmodSync(shared, 0o1777); // like /tmp
    const victim = dirOf(0, 0o755);
    const victims = Array.from({ length: 20 }, (_, i) => path.join(victim, `file-${i}`));
    for (const file of victims) fs.writeFileSync(file, 'root\'s');
    // nobody's directory, named and locked (stale) like a dead master's, with its own files
    const planted = path.join(shared, 'handover-1-planted');
    const plant = await run(AS_NOBODY, [process.execPath, '-e', `
      const fs = require('fs'), path = require('path');
      fs.mkdirSync(${JSON.stringify(planted)});
      for (const name of ['lock', 'control.sock', 'a', 'b']) fs.writeFileSync(path.join(${JSON.stringify(planted)}, name), 'nobody\\'s');
      const old = new Date(Date.now() - 3600e3);
      fs.utimesSync(${JSON.stringify(planted)}, old, old);
    `]);
    expect(plant.code, plant.stderr).toBe(0);
    const flipper = spawn('setpriv', [...AS_NOBODY, process.execPath, '-e', FLIP, planted, victim], { cwd: '/', stdio: ['pipe', 'ignore', 'inherit'] });
    cleanups.push(() => flipper.kill('SIGKILL'));

    const masters = await Promise.all(Array.from({ length: 5 }, () => startMaster({ script: SCRIPT, fixture: { controlDir: shared } })));
    for (const master of masters) expect((await master.stop()).code).toBe(0);
    flipper.stdin!.end();
    if (flipper.exitCode === null) await once(flipper, 'exit');
    expect(flipper.exitCode, 'the flipper failed: its directory was removed under it').toBe(0);

    expect(victims.filter((file) => !fs.existsSync(file)), 'root\'s files deleted').toEqual([]);
    expect(fs.readdirSync(victim).sort()).toEqual(victims.map((file) => path.basename(file)).sort());
    // nobody's directory is untouched too (it ends aside, the symlink in its place)
    expect(fs.readdirSync(`${planted}.aside`).sort()).toEqual(['a', 'b', 'control.sock', 'lock']);
    // and each master removed its own directory
    expect(fs.readdirSync(shared).sort()).toEqual(['handover-1-planted', 'handover-1-planted.aside']);
  });
});

describe('a master at its fd limit', () => {
  it('a respawn that fails with EMFILE is retried, never fatal; with fds again, the crashed slot is served', async () => {
    const master = await startMaster({ fixture: { controlDir: controlParent() } });
    const [worker] = master.workerPids;
    const socket = controlSocketOf(master);
    // below its lowest free fd: every new fd fails with EMFILE, the ones it has keep working
    execFileSync('prlimit', ['--pid', String(master.pid), '--nofile=3:']);
    const conns = Array.from({ length: 5 }, () => net.connect(socket).on('error', () => {}));
    cleanups.push(() => conns.forEach((c) => c.destroy()));
    process.kill(worker, 'SIGKILL');
    await pollUntil(() => /worker pid -1 \(slot 0, generation 1\) exited before it was ready; respawning/.test(master.stderr), 'a respawn to fail');
    expect(isAlive(master.pid)).toBe(true);
    conns.forEach((c) => c.destroy());
    execFileSync('prlimit', ['--pid', String(master.pid), '--nofile=4096:']);
    await pollUntil(async () => {
      const pid = await get(master.port).catch(() => undefined);
      return pid !== undefined && pid !== worker;
    }, 'a respawned worker to answer', 60_000);
    expect((await master.stop()).code).toBe(0);
  });
});

describe('unixSocketMode', () => {
  it('is the socket file\'s mode from its bind (set by the umask, not a chmod on the path afterwards)', async () => {
    const dir = controlParent();
    const sock = path.join(dir, 'app.sock');
    const master = await startMaster({ fixture: { addresses: [`unix:${sock}`], unixSocketMode: 0o660, controlDir: controlParent() } });
    expect(fs.lstatSync(sock).mode & 0o7777).toBe(0o660);
    const body = await new Promise<number>((resolve, reject) => {
      http.get({ socketPath: sock, path: '/', agent: false }, (res) => {
        res.resume();
        resolve(res.statusCode!);
      }).on('error', reject);
    });
    expect(body).toBe(200);
    const umask = /^Umask:\s*(\d+)$/m.exec(fs.readFileSync(`/proc/${master.pid}/status`, 'utf8'))?.[1];
    expect(umask, 'the master\'s own umask is back as it was').toBe('0022');
    expect((await master.stop()).code).toBe(0);
  });
});
