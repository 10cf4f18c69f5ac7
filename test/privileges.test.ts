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
import { execFileSync, spawn } from 'node:child_process';
import { once } from 'node:events';
import * as fs from 'node:fs';
import * as http from 'node:http';
import * as net from 'node:net';
import * as path from 'node:path';
import { afterAll, afterEach, describe, expect, it } from 'vitest';
import { type Master, ROOT, isAlive, ourProcesses, pollUntil, reapAll, startMaster, tempDir } from './helpers/processes';

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
    'test/fixtures/eco-privileged.js', 'test/fixtures/report.js']) copy(entry);
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
