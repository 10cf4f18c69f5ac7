// systemd integration, for real: sd_notify datagrams received by a Unix
// datagram socket this test owns (a path and an abstract '@name'), and socket
// activation under systemd-socket-activate (the master adopts the inherited
// socket instead of binding, keeps its pid across reloads, and neither it nor
// any worker keeps the inherited fd 3).
//
// Sensitivity, checked by hand on a private copy of the repository:
//   - dist/master.js without the READY=1 after a reload: the sequence test
//     fails (RELOADING=1 not followed by READY=1);
//   - monotonicUsec() returning Date.now() * 1000 (the wrong clock): the
//     MONOTONIC_USEC check fails (the value is not between the receiver's
//     start and the datagram's arrival on CLOCK_MONOTONIC);
//   - takeActivatedSockets() using the inherited fd as is (no dup, no close):
//     the fd checks fail (the master holds the socket at fd 3, without
//     close-on-exec);
//   - takeActivatedSockets() leaving LISTEN_FDS/LISTEN_PID in the environment:
//     the worker environment check fails;
//   - the unclaimed-socket warning removed: the warning test fails;
//   - claimActivated() matching by address when the name does not match
//     (the fix for the bug the last test shows): every test passes.
import { type ChildProcess, spawn, spawnSync } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import { once } from 'node:events';
import * as fs from 'node:fs';
import * as http from 'node:http';
import * as net from 'node:net';
import * as path from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { Load } from './helpers/load';
import { Master, ROOT, onJsonLines, ourProcesses, pollUntil, reapAll, startMaster, tempDir } from './helpers/processes';

const cleanups: (() => void)[] = [];
afterEach(async () => {
  await reapAll();
  for (const cleanup of cleanups.splice(0).reverse()) cleanup();
});

function scratch(): string {
  const dir = tempDir('handover-systemd-');
  cleanups.push(() => fs.rmSync(dir, { recursive: true, force: true }));
  return dir;
}

// Binds AF_UNIX SOCK_DGRAM at argv[1] ('@name': the abstract namespace) and
// prints one JSON line per datagram with its arrival time on CLOCK_MONOTONIC.
const RECEIVER = `
import json, socket, sys, time
address = sys.argv[1]
sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
sock.bind(b"\\0" + address[1:].encode() if address.startswith("@") else address)
print(json.dumps({"ready": True, "usec": time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000}), flush=True)
while True:
    data = sock.recv(65536)
    print(json.dumps({"message": data.decode("utf-8", "replace"), "usec": time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000}), flush=True)
`;

interface Datagram {
  message: string;
  usec: number;
}

/** A NOTIFY_SOCKET the test owns: a python3 process that records every datagram. */
class NotifyReceiver {
  readonly datagrams: Datagram[] = [];
  startedUsec = 0;
  private readonly proc: ChildProcess;
  private stderr = '';

  private constructor(readonly address: string) {
    this.proc = spawn('python3', ['-c', RECEIVER, address], { stdio: ['ignore', 'pipe', 'pipe'] });
    cleanups.push(() => this.proc.kill('SIGKILL'));
    this.proc.stderr!.setEncoding('utf8').on('data', (chunk: string) => (this.stderr += chunk));
    onJsonLines(this.proc.stdout!, (value) => {
      const line = value as { ready?: true; message?: string; usec: number };
      if (line.ready) this.startedUsec = line.usec;
      else this.datagrams.push({ message: line.message!, usec: line.usec });
    });
  }

  static async open(address: string): Promise<NotifyReceiver> {
    const receiver = new NotifyReceiver(address);
    await pollUntil(() => {
      if (receiver.proc.exitCode !== null) throw new Error(`the python3 receiver exited: ${receiver.stderr}`);
      return receiver.startedUsec > 0;
    }, `the datagram receiver to bind ${address}`);
    return receiver;
  }

  get messages(): string[] {
    return this.datagrams.map((d) => d.message);
  }

  async waitForCount(count: number, what: string): Promise<string[]> {
    await pollUntil(() => this.datagrams.length >= count, `${what} (datagrams so far: ${JSON.stringify(this.messages)})`);
    return this.messages;
  }
}

const READY = (generation: number) => `READY=1\nSTATUS=generation ${generation}, 1/1 workers serving`;
const RELOADING = (generation: number) => new RegExp(`^RELOADING=1\\nMONOTONIC_USEC=(\\d+)\\nSTATUS=reloading: starting generation ${generation}$`);

describe('sd_notify', () => {
  it('READY=1 after start; RELOADING=1 with MONOTONIC_USEC then READY=1 per reload (failed ones too); STOPPING=1 at stop', async () => {
    const dir = scratch();
    const receiver = await NotifyReceiver.open(path.join(dir, 'notify.sock'));
    const behaviourFile = path.join(dir, 'behaviour.json');
    const master = await startMaster({ env: { NOTIFY_SOCKET: receiver.address }, fixture: { behaviourFile } });
    expect(await receiver.waitForCount(1, 'READY=1 after start')).toEqual([READY(1)]);

    expect((await master.reload()).event).toBe('reloaded');
    const afterReload = await receiver.waitForCount(3, 'RELOADING=1 and READY=1 for the reload');
    expect(afterReload[1]).toMatch(RELOADING(2));
    expect(afterReload[2]).toBe(READY(2));
    // MONOTONIC_USEC is CLOCK_MONOTONIC (systemd compares it with its own clock):
    // after the receiver started, no later than the datagram's arrival
    const usec = Number(RELOADING(2).exec(afterReload[1])![1]);
    expect(usec).toBeGreaterThanOrEqual(receiver.startedUsec);
    expect(usec).toBeLessThanOrEqual(receiver.datagrams[1].usec);

    // a broken deploy: systemd still needs READY=1 to leave the reloading state
    fs.writeFileSync(behaviourFile, JSON.stringify({ throwAtStartup: true }));
    expect((await master.reload()).event).toBe('reload-failed');
    const afterFailure = await receiver.waitForCount(5, 'RELOADING=1 and READY=1 for the failed reload');
    expect(afterFailure[3]).toMatch(RELOADING(3));
    expect(afterFailure[4]).toBe(READY(2));

    const { code } = await master.stop();
    expect(code).toBe(0);
    const all = await receiver.waitForCount(6, 'STOPPING=1');
    expect(all[5]).toBe('STOPPING=1');
    expect(all).toHaveLength(6); // nothing else, from the master or a worker
  });

  it('an abstract NOTIFY_SOCKET (@name) gets READY=1 and STOPPING=1', async () => {
    const receiver = await NotifyReceiver.open(`@handover-test-${randomUUID()}`);
    const master = await startMaster({ env: { NOTIFY_SOCKET: receiver.address } });
    expect(await receiver.waitForCount(1, 'READY=1')).toEqual([READY(1)]);
    expect((await master.stop()).code).toBe(0);
    expect(await receiver.waitForCount(2, 'STOPPING=1')).toEqual([READY(1), 'STOPPING=1']);
  });
});

// ---------------------------------------------------------------------------
// socket activation

const haveActivate = spawnSync('systemd-socket-activate', ['--version'], { stdio: 'ignore' }).status === 0;
if (!haveActivate) console.log('skipping the socket activation tests: systemd-socket-activate is not installed');

async function freePort(): Promise<number> {
  const server = net.createServer();
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', () => resolve()));
  const { port } = server.address() as net.AddressInfo;
  await new Promise<void>((resolve) => server.close(() => resolve()));
  return port;
}

/** This run's reaping marker, as the helpers give it to every process they start. */
async function runMarker(): Promise<string> {
  const probe = await startMaster({ script: 'test/fixtures/eco-marker.js', waitReady: false });
  const event = await probe.waitFor((e) => e.event === 'marker', 'the marker line');
  await probe.exited;
  return (event as unknown as { marker: string }).marker;
}

/**
 * `systemd-socket-activate -l 127.0.0.1:<port>... -E ... node test/fixtures/app.js`:
 * it binds, waits for the first connection, then execs node (same pid) with
 * LISTEN_FDS. Only -E variables reach the program, the marker among them.
 */
async function activate(ports: number[], fixture: Record<string, unknown>, extra: string[] = []): Promise<Master> {
  const marker = await runMarker();
  const args = [
    ...ports.flatMap((port) => ['-l', `127.0.0.1:${port}`]),
    ...extra,
    '-E', `FIXTURE_OPTIONS=${JSON.stringify(fixture)}`,
    '-E', `HANDOVER_TEST_RUN=${marker}`,
    process.execPath, path.join(ROOT, 'test/fixtures/app.js'),
  ];
  const proc = spawn('systemd-socket-activate', args, {
    cwd: ROOT,
    env: { ...process.env, HANDOVER_TEST_RUN: marker },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  const master = new Master(proc);
  for (const port of ports) {
    await pollUntil(() => {
      if (proc.exitCode !== null) throw new Error(`systemd-socket-activate exited: ${master.stderr}`);
      return new RegExp(`Listening on 127\\.0\\.0\\.1:${port} as \\d+`).test(master.stderr);
    }, `systemd-socket-activate to listen on ${port}`);
  }
  return master;
}

/** Inodes of the sockets listening on 127.0.0.1:port, from /proc/net/tcp. */
function listeningInodes(port: number): number[] {
  const local = `0100007F:${port.toString(16).toUpperCase().padStart(4, '0')}`;
  return fs.readFileSync('/proc/net/tcp', 'utf8').split('\n').slice(1)
    .map((line) => line.trim().split(/\s+/))
    .filter((f) => f[1] === local && f[3] === '0A')
    .map((f) => Number(f[9]));
}

const O_CLOEXEC = 0o2000000;

/** The fds of `pid` that are socket `inode`, each with its close-on-exec flag. */
function fdsOfSocket(pid: number, inode: number): { fd: number; cloexec: boolean }[] {
  const found: { fd: number; cloexec: boolean }[] = [];
  for (const fd of fs.readdirSync(`/proc/${pid}/fd`)) {
    let target: string;
    try {
      target = fs.readlinkSync(`/proc/${pid}/fd/${fd}`);
    } catch {
      continue; // closed meanwhile
    }
    if (target !== `socket:[${inode}]`) continue;
    const flags = /^flags:\s+([0-7]+)$/m.exec(fs.readFileSync(`/proc/${pid}/fdinfo/${fd}`, 'utf8'))![1];
    found.push({ fd: Number(fd), cloexec: (parseInt(flags, 8) & O_CLOEXEC) !== 0 });
  }
  return found;
}

/** Resolves once the master's stdout and stderr have ended (its exit may be seen before their last bytes). */
async function outputDone(master: Master): Promise<void> {
  await Promise.all([master.proc.stdout!, master.proc.stderr!].map((s) => (s.readableEnded ? undefined : once(s, 'end'))));
}

function fd3(pid: number): string | undefined {
  try {
    return fs.readlinkSync(`/proc/${pid}/fd/3`);
  } catch {
    return undefined;
  }
}

function get(port: number): Promise<number> {
  const answer = new Promise<number>((resolve, reject) => {
    http.get({ host: '127.0.0.1', port, path: '/', agent: false, timeout: 30_000 }, (res) => {
      res.resume();
      res.on('end', () => (res.statusCode === 200 ? resolve(Number(res.headers['x-pid'])) : reject(new Error(`status ${res.statusCode}`))));
    }).on('error', reject);
  });
  answer.catch(() => {}); // awaited later, possibly after it settles
  return answer;
}

/** The inherited socket is held once by the master (not at fd 3, close-on-exec) and by each worker (not at fd 3, close-on-exec). */
function expectFdsClean(master: Master, inode: number, workers: number[]): void {
  const held = fdsOfSocket(master.pid, inode);
  expect(held, `master ${master.pid}: fds of the activated socket`).toHaveLength(1);
  expect(held[0].fd).not.toBe(3);
  expect(held[0].cloexec, `master fd ${held[0].fd} is close-on-exec`).toBe(true);
  expect(fd3(master.pid), 'master fd 3').not.toBe(`socket:[${inode}]`);
  for (const pid of workers) {
    const inWorker = fdsOfSocket(pid, inode);
    expect(inWorker.length, `worker ${pid} holds the activated socket`).toBeGreaterThan(0);
    for (const { fd, cloexec } of inWorker) {
      expect(fd, `worker ${pid} has the activated socket at fd 3`).not.toBe(3);
      expect(cloexec, `worker ${pid} fd ${fd} is close-on-exec`).toBe(true);
    }
    expect(fd3(pid), `worker ${pid} fd 3`).not.toBe(`socket:[${inode}]`);
    const environ = fs.readFileSync(`/proc/${pid}/environ`, 'utf8').split('\0');
    expect(environ.filter((v) => /^LISTEN_(FDS|PID|FDNAMES)=/.test(v)), `worker ${pid} environment`).toEqual([]);
  }
}

describe('socket activation (systemd-socket-activate)', () => {
  it.skipIf(!haveActivate)('serves the inherited socket, 10 reloads under load fail no request, the pid stays, fd 3 is gone', async () => {
    const port = await freePort();
    const master = await activate([port], { addresses: [`127.0.0.1:${port}`] });
    const [inode] = listeningInodes(port);
    expect(inode).toBeGreaterThan(0);

    // the first connection makes systemd-socket-activate exec node; it waits in the queue meanwhile
    const first = get(port);
    const ready = await master.waitFor((e) => e.event === 'ready', 'the activated master to be ready');
    expect(ready.status!.pid, 'the master is the process systemd-socket-activate became').toBe(master.pid);
    expect(ready.addresses).toEqual([`127.0.0.1:${port}`]);
    expect(master.workerPids).toContain(await first);
    // no second socket was bound: the only listener on the port is the inherited one
    expect(listeningInodes(port)).toEqual([inode]);
    expectFdsClean(master, inode, master.workerPids);

    const load = new Load({ port, connections: 16 });
    await Promise.all(master.workerPids.map((pid) => load.servedBy(pid)));
    const served: number[] = [...master.workerPids];
    for (let i = 0; i < 10; i++) {
      const outcome = await master.reload();
      expect(outcome.event, outcome.error).toBe('reloaded');
      expect(outcome.status!.pid).toBe(master.pid);
      const fresh = outcome.status!.workers.filter((w) => w.generation === outcome.generation).map((w) => w.pid);
      await Promise.all(fresh.map((pid) => load.servedBy(pid)));
      served.push(...fresh);
    }
    const stats = await load.stop();
    expect(stats.errors).toEqual({});
    expect(stats.failed).toBe(0);
    expect(new Set(served).size).toBe(11);
    for (const pid of served) expect(stats.pids.get(pid), `responses from worker ${pid}`).toBeGreaterThan(0);

    const current = master.events.filter((e) => e.event === 'reloaded').at(-1)!;
    const live = current.status!.workers.filter((w) => w.generation === current.generation).map((w) => w.pid);
    expect(listeningInodes(port)).toEqual([inode]);
    expectFdsClean(master, inode, live);

    const { code, signal } = await master.stop();
    expect({ code, signal }).toEqual({ code: 0, signal: null });
    expect(ourProcesses()).toEqual([]);
    await outputDone(master);
    expect(master.stderr).not.toMatch(/which no registered address matches/);
  });

  it.skipIf(!haveActivate)('an activated socket that no registered address matches gets a warning naming it', async () => {
    const [served, stray] = [await freePort(), await freePort()];
    const master = await activate([served, stray], { addresses: [`127.0.0.1:${served}`] });
    const first = get(served);
    await master.waitFor((e) => e.event === 'ready', 'the activated master to be ready');
    expect(master.workerPids).toContain(await first);
    expect((await master.stop()).code).toBe(0);
    await outputDone(master);
    expect(master.stderr).toMatch(new RegExp(
      `master warn: systemd passed 127\\.0\\.0\\.1:${stray}, which no registered address matches; it is not served`,
    ));
    expect(master.stderr).not.toMatch(new RegExp(`systemd passed 127\\.0\\.0\\.1:${served}\\b`));
  });

  // systemd always sets LISTEN_FDNAMES: without FileDescriptorName= each fd is
  // named after its socket unit ('hello-activated.socket'), and a name may not
  // contain ':' so it can never equal an address string. The socket must still
  // be matched by its address (examples/systemd/hello-activated.socket relies
  // on it).
  it.skipIf(!haveActivate)('a socket named after its unit, as systemd names it by default, is matched by its address', async () => {
    const port = await freePort();
    const master = await activate([port], { addresses: [`127.0.0.1:${port}`] }, ['--fdname=hello-activated.socket']);
    const [inode] = listeningInodes(port);
    const first = get(port);
    await master.waitFor((e) => e.event === 'ready', 'the activated master to be ready');
    expect(master.workerPids).toContain(await first);
    expect(listeningInodes(port)).toEqual([inode]);
    expectFdsClean(master, inode, master.workerPids);
    expect((await master.stop()).code).toBe(0);
  });

  it.skipIf(!haveActivate)('single mode: a successor never removes the Unix socket file systemd made, at a handover or at its final stop', async () => {
    const dir = tempDir('handover-activate-');
    cleanups.push(() => fs.rmSync(dir, { recursive: true, force: true }));
    const socketPath = path.join(dir, 'app.sock');
    const pidFile = path.join(dir, 'app.pid');
    const marker = await runMarker();
    const fixture = { addresses: [`unix:${socketPath}`], pidFile };
    const proc = spawn('systemd-socket-activate', [
      '-l', socketPath, '-E', `FIXTURE_OPTIONS=${JSON.stringify(fixture)}`, '-E', `HANDOVER_TEST_RUN=${marker}`,
      process.execPath, path.join(ROOT, 'test/fixtures/single-app.js'),
    ], { cwd: ROOT, env: { ...process.env, HANDOVER_TEST_RUN: marker }, stdio: ['ignore', 'pipe', 'pipe'] });
    const first = new Master(proc);
    await pollUntil(() => fs.existsSync(socketPath), 'systemd-socket-activate to make the socket');
    const inode = fs.statSync(socketPath).ino;
    const ask = () => new Promise<number>((resolve, reject) => {
      http.get({ socketPath, path: '/', agent: false }, (res) => {
        res.resume();
        res.on('end', () => resolve(Number(res.headers['x-pid'])));
      }).on('error', reject);
    });
    expect(await ask()).toBe(first.pid); // systemd-socket-activate execs node in its own pid
    process.kill(first.pid, 'SIGHUP');
    const successor = await pollUntil(() => {
      const pid = fs.existsSync(pidFile) ? Number(fs.readFileSync(pidFile, 'utf8')) : 0;
      return pid !== first.pid && pid > 0 ? pid : undefined;
    }, 'the successor to take over');
    await first.exited;
    expect(fs.statSync(socketPath).ino).toBe(inode);
    expect(await ask()).toBe(successor);
    process.kill(successor, 'SIGTERM');
    await pollUntil(() => ourProcesses().length === 0, 'the successor to stop');
    expect(fs.statSync(socketPath).ino, 'systemd\'s socket file').toBe(inode);
  });
});
