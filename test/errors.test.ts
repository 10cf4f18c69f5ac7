// Start-up errors: each one is a single clear line on stderr that names the
// address (or the option), the errno and a hint, the master exits non-zero,
// and nothing it started is left running (no worker, no socket file).
//
// Every case runs through both ways a program starts handover: `new
// Server().run()` (the master logs the line, run() rejects, the fixture sets
// exit code 1) and `listenAndServe()` (logs the line and exits 1).
//
// Sensitivity, checked by hand on a private copy of the repository (dist/
// edited, then these tests run against it):
//   - the probe bind removed from dist/listeners.js (bindTcp without
//     probeTcp): "a second handover master" fails (the second master starts
//     and silently joins the SO_REUSEPORT group);
//   - removeStaleSocket unlinking whatever is at the path: "a regular file"
//     fails in both APIs (the file is deleted and the master starts);
//   - explain() without the hint: every errno case fails (both APIs);
//   - shutdown() skipping listeners.closeAll(): the controlDir case with a
//     Unix address fails (its socket file is left behind).
// A master that starts when it should have failed makes the test fail at
// once (exitOrStart), never hang.
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as http from 'node:http';
import * as net from 'node:net';
import * as path from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { ENV } from '../src/protocol';
import { type Master, ROOT, ourProcesses, pollUntil, reapAll, startMaster, tempDir } from './helpers/processes';

const APP = 'test/fixtures/lifecycle-app.js';
const LAUNCH = 'test/fixtures/lifecycle-launch.js';
const APIS = ['server', 'listenAndServe'] as const;
type Api = (typeof APIS)[number];

const cleanups: (() => void | Promise<void>)[] = [];
afterEach(async () => {
  await reapAll();
  for (const cleanup of cleanups.splice(0).reverse()) await cleanup();
});

function scratch(): string {
  const dir = tempDir('handover-errors-');
  cleanups.push(() => fs.rmSync(dir, { recursive: true, force: true }));
  return dir;
}

/** A plain Node server in this process (not handover), closed after the test. */
async function plainServer(listenArgs: [number, string] | [string]): Promise<net.Server> {
  const server = net.createServer((socket) => socket.end());
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(...(listenArgs as [number, string]), () => resolve());
  });
  cleanups.push(() => new Promise<void>((resolve) => server.close(() => resolve())));
  return server;
}

/** True once `master` (or the master its launcher started) has a worker: it got past binding. */
function workerSpawned(master: Master): boolean {
  const masters = [master.pid, ...master.events.filter((e) => e.event === 'launched').map((e) => e.pid)];
  return ourProcesses().some((pid) => {
    try {
      const env = fs.readFileSync(`/proc/${pid}/environ`, 'utf8').split('\0');
      return masters.some((m) => env.includes(`${ENV.masterPid}=${m}`));
    } catch {
      return false;
    }
  });
}

/** 'exited', or 'started' if the master got going after all (then the test fails instead of hanging). */
async function exitOrStart(master: Master): Promise<'exited' | 'started'> {
  let exited = false;
  void master.exited.then(() => (exited = true));
  return pollUntil<'exited' | 'started' | undefined>(() => {
    if (exited) return 'exited';
    return master.events.some((e) => e.event === 'ready') || workerSpawned(master) ? 'started' : undefined;
  }, 'the master to exit (or start)');
}

interface Failure {
  code: number | null;
  lines: string[];
  master: Master;
}

/** Starts a master that must fail, waits for its exit, and checks that nothing is left running. */
async function startFailing(fixture: Record<string, unknown>, api: Api, launch?: string[]): Promise<Failure> {
  const master = await startMaster({
    script: launch ? LAUNCH : APP,
    args: launch ? [...launch, process.execPath, path.join(ROOT, APP)] : [],
    fixture: { ...fixture, api },
    waitReady: false,
  });
  expect(await exitOrStart(master), 'a master that should have failed started').toBe('exited');
  const { code } = await master.exited;
  expect(ourProcesses(), 'processes left running after a failed start').toEqual([]);
  const lines = master.stderr.split('\n').filter((line) => line.trim() !== '');
  return { code, lines, master };
}

/** The one stderr line: names what failed, the errno and a hint; no stack trace, nothing else. */
function expectOneLine(failure: Failure, mentions: (string | RegExp)[]): void {
  expect(failure.code, `exit code; stderr:\n${failure.lines.join('\n')}`).not.toBe(0);
  expect(failure.code).not.toBeNull();
  expect(failure.lines, 'stderr should be exactly one line').toHaveLength(1);
  const [line] = failure.lines;
  expect(line).toMatch(/error/);
  for (const m of mentions) {
    if (typeof m === 'string') expect(line).toContain(m);
    else expect(line).toMatch(m);
  }
}

function get(target: { port: number } | { socketPath: string }, urlPath = '/'): Promise<{ status: number; body: string }> {
  return new Promise((resolve, reject) => {
    const req = http.request({ host: '127.0.0.1', ...target, path: urlPath, agent: false }, (res) => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (chunk: string) => (body += chunk));
      res.on('end', () => resolve({ status: res.statusCode!, body }));
      res.on('error', reject);
    });
    req.on('error', reject);
    req.end();
  });
}

/** A Unix socket file nobody listens on: a listener killed before it could clean up. */
function staleSocket(socketPath: string): void {
  const child = spawnSync(process.execPath, [
    '-e',
    `require('net').createServer().listen(${JSON.stringify(socketPath)}, () => process.kill(process.pid, 'SIGKILL'))`,
  ]);
  expect(child.signal).toBe('SIGKILL');
}

function connectError(socketPath: string): Promise<string | undefined> {
  return new Promise((resolve) => {
    const socket = net.connect(socketPath);
    socket.once('connect', () => {
      socket.destroy();
      resolve(undefined);
    });
    socket.once('error', (error: NodeJS.ErrnoException) => resolve(error.code));
  });
}

// Running as an unprivileged user: root runs the master as nobody through setpriv.
const NOBODY = ['setpriv', '--reuid=nobody', '--regid=nogroup', '--clear-groups'];
function unprivilegedSkipReason(): string | undefined {
  if (process.getuid?.() !== 0) return undefined; // already unprivileged: run directly
  const version = spawnSync('setpriv', ['--version']);
  if (version.error || version.status !== 0) return 'setpriv (util-linux) is not installed';
  const probe = spawnSync(NOBODY[0], [
    ...NOBODY.slice(1), process.execPath, '-e',
    `require(${JSON.stringify(ROOT)}); require('fs').accessSync(${JSON.stringify(path.join(ROOT, APP))}, require('fs').constants.R_OK)`,
  ], { cwd: ROOT, encoding: 'utf8' });
  if (probe.status !== 0) return `nobody cannot load handover from ${ROOT} (not readable or traversable): ${probe.stderr.trim().split('\n')[0]}`;
  return undefined;
}
const unprivileged = unprivilegedSkipReason();
const launchUnprivileged = process.getuid?.() === 0 ? NOBODY : [];
if (unprivileged) console.warn(`errors.test.ts: skipping the tests run as nobody: ${unprivileged}`);

function privilegedPortsSkipReason(): string | undefined {
  try {
    const start = Number(fs.readFileSync('/proc/sys/net/ipv4/ip_unprivileged_port_start', 'utf8'));
    if (start <= 80) return `net.ipv4.ip_unprivileged_port_start is ${start}: port 80 is not privileged here`;
  } catch {
    // older kernels: ports below 1024 are privileged
  }
  return undefined;
}
const privilegedPorts = privilegedPortsSkipReason();
if (privilegedPorts) console.warn(`errors.test.ts: skipping the EACCES test: ${privilegedPorts}`);

describe.each(APIS)('start-up errors through %s', (api) => {
  it('a port another (plain Node) server listens on: EADDRINUSE naming 127.0.0.1:<port>', async () => {
    const other = await plainServer([0, '127.0.0.1']);
    const { port } = other.address() as net.AddressInfo;
    const failure = await startFailing({ addresses: [`127.0.0.1:${port}`] }, api);
    expectOneLine(failure, [`127.0.0.1:${port}`, 'EADDRINUSE', /another process is listening/]);
    // the other server is untouched
    await new Promise<void>((resolve, reject) => net.connect(port, '127.0.0.1', resolve).on('error', reject));
  });

  it('a bad address string: a clear error quoting it', async () => {
    if (api === 'server') {
      // Server.register() throws an AddressError synchronously: the fixture's
      // top level dies with it (Node prints its stack), so only check it quotes the address.
      const master = await startMaster({ script: APP, fixture: { addresses: ['nonsense'], api }, waitReady: false });
      expect((await master.exited).code).not.toBe(0);
      expect(master.stderr).toContain('invalid address "nonsense"');
      expect(master.stderr).toMatch(/expected ':PORT'/);
      expect(ourProcesses()).toEqual([]);
      return;
    }
    const failure = await startFailing({ addresses: ['nonsense'] }, api);
    expectOneLine(failure, ['"nonsense"', /expected ':PORT'/]);
  });

  it('a Unix path that is too long: ENAMETOOLONG naming the path', async () => {
    const socketPath = path.join(scratch(), `${'x'.repeat(120)}.sock`);
    const failure = await startFailing({ addresses: [`unix:${socketPath}`] }, api);
    expectOneLine(failure, [socketPath, 'ENAMETOOLONG', /shorter Unix socket path/]);
    expect(fs.existsSync(socketPath)).toBe(false);
  });

  it('a Unix path whose directory does not exist: ENOENT naming the path', async () => {
    const socketPath = path.join(scratch(), 'missing', 'app.sock');
    const failure = await startFailing({ addresses: [`unix:${socketPath}`] }, api);
    expectOneLine(failure, [socketPath, 'ENOENT', /directory of the Unix socket path does not exist/]);
  });

  it('a regular file at the Unix path is refused and not deleted', async () => {
    const socketPath = path.join(scratch(), 'app.sock');
    fs.writeFileSync(socketPath, 'precious');
    const failure = await startFailing({ addresses: [`unix:${socketPath}`] }, api);
    expectOneLine(failure, [socketPath, /EEXIST|ENOTSOCK/, /never deletes/]);
    expect(fs.readFileSync(socketPath, 'utf8')).toBe('precious');
  });

  it('a live Unix socket at the path: EADDRINUSE, and the live one keeps its file and its clients', async () => {
    const socketPath = path.join(scratch(), 'app.sock');
    await plainServer([socketPath]);
    const inode = fs.lstatSync(socketPath).ino;
    const failure = await startFailing({ addresses: [`unix:${socketPath}`] }, api);
    expectOneLine(failure, [socketPath, 'EADDRINUSE', /another process is listening/]);
    expect(fs.lstatSync(socketPath).ino).toBe(inode);
    expect(await connectError(socketPath)).toBeUndefined();
  });

  it('the control directory cannot be created (nonexistent parent): names it and the option; removes the socket file it bound', async () => {
    const dir = scratch();
    const controlDir = path.join(dir, 'no', 'such', 'dir');
    const socketPath = path.join(dir, 'app.sock');
    // listenAndServe serves one address; the Server path also binds a Unix one first
    const addresses = api === 'server' ? [`unix:${socketPath}`, '127.0.0.1:0'] : ['127.0.0.1:0'];
    const failure = await startFailing({ addresses, controlDir }, api);
    expectOneLine(failure, [controlDir, 'ENOENT', 'controlDir']);
    expect(fs.existsSync(socketPath), 'the Unix socket file bound before the failure').toBe(false);
  });

  it.skipIf(unprivileged !== undefined || privilegedPorts !== undefined)(
    'permission denied: 127.0.0.1:80 as an unprivileged user is EACCES with the hint',
    async () => {
      const failure = await startFailing({ addresses: ['127.0.0.1:80'] }, api, launchUnprivileged);
      // the launcher relays the master's exit code and adds no stderr of its own
      expect(failure.master.events.find((e) => e.event === 'launched-exit')).toMatchObject({ code: 1 });
      expectOneLine(failure, ['127.0.0.1:80', 'EACCES', /below 1024 need root or CAP_NET_BIND_SERVICE/]);
    },
  );

  it.skipIf(unprivileged !== undefined)(
    'the control directory\'s parent is not writable: names it, the errno and the option',
    async () => {
      const controlDir = scratch();
      fs.chmodSync(controlDir, 0o755); // root's; nobody may look but not write
      if (process.getuid?.() !== 0) fs.chmodSync(controlDir, 0o555);
      const failure = await startFailing({ addresses: ['127.0.0.1:0'], controlDir }, api, launchUnprivileged);
      expectOneLine(failure, [controlDir, 'EACCES', 'controlDir']);
      expect(fs.readdirSync(controlDir)).toEqual([]);
    },
  );
});

describe('SO_REUSEPORT never shares a port by accident', () => {
  it('a second handover master on the same port without `shared` fails with EADDRINUSE; the first keeps serving', async () => {
    const first = await startMaster({ script: APP, fixture: { workers: 2 } });
    const port = first.port;
    const running = [first.pid, ...first.workerPids].sort();
    expect(ourProcesses().sort()).toEqual(running);

    const second = await startMaster({ script: APP, fixture: { addresses: [`127.0.0.1:${port}`] }, waitReady: false });
    expect(await exitOrStart(second), 'the second master started on a taken port').toBe('exited');
    const { code } = await second.exited;
    const lines = second.stderr.split('\n').filter((line) => line.trim() !== '');
    expect(code).not.toBe(0);
    expect(lines).toHaveLength(1);
    expect(lines[0]).toContain(`127.0.0.1:${port}`);
    expect(lines[0]).toContain('EADDRINUSE');
    expect(lines[0]).toMatch(/shared: true/);
    expect(lines[0], 'the hint names the CLI flag too').toMatch(/handover start --shared/);
    // nothing of the second master is left, the first is whole and serves
    expect(ourProcesses().sort()).toEqual(running);
    expect((await get({ port })).status).toBe(200);
  });

  it('control: with `shared: true` the same second master joins the group (what the check above prevents)', async () => {
    const first = await startMaster({ script: APP });
    const second = await startMaster({ script: APP, fixture: { addresses: [`127.0.0.1:${first.port}`], shared: true } });
    expect(second.port).toBe(first.port);
    expect((await second.stop()).code).toBe(0);
    expect((await first.stop()).code).toBe(0);
  });
});

describe('Unix socket files', () => {
  it('a stale socket file (nothing listens) is replaced and served', async () => {
    const socketPath = path.join(scratch(), 'app.sock');
    staleSocket(socketPath);
    expect(fs.lstatSync(socketPath).isSocket()).toBe(true);
    expect(await connectError(socketPath)).toBe('ECONNREFUSED');
    const master = await startMaster({ script: APP, fixture: { addresses: [`unix:${socketPath}`] } });
    // (not an inode comparison: tmpfs hands the unlinked inode number straight back)
    expect(fs.lstatSync(socketPath).isSocket()).toBe(true);
    expect(await get({ socketPath })).toEqual({ status: 200, body: 'ok' });
    expect((await master.stop()).code).toBe(0);
    expect(fs.existsSync(socketPath)).toBe(false);
  });
});
