// systemd's file descriptor store (invariant 16), with the test as the
// service manager: test/fixtures/fdstore-manager.py receives the sockets the
// master stores on NOTIFY_SOCKET and keeps them while the master is SIGKILLed;
// the master is started again with them at fd 3.. and LISTEN_FDS /
// LISTEN_FDNAMES / LISTEN_PID (test/fixtures/fdstore-launch.js), as systemd
// does after a crash with Restart=on-failure.
import { type ChildProcess, spawn } from 'node:child_process';
import * as fs from 'node:fs';
import * as net from 'node:net';
import * as path from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import * as native from '../src/platform/native';
import { type Master, ROOT, cleanUp, isAlive, onCleanUp, onJsonLines, ourProcesses, pollUntil, scratch, startMaster, writeJson } from './helpers/processes';

afterEach(cleanUp);

type Record = { ready?: true; stored?: string; inode?: number; removed?: string; message?: string };

/** The fake service manager: its records, and the stored fds on request. */
class FdStoreManager {
  readonly records: Record[] = [];
  readonly notifyPath: string;
  private readonly handoutPath: string;
  private readonly proc: ChildProcess;
  private stderr = '';

  constructor(dir: string) {
    this.notifyPath = path.join(dir, 'notify.sock');
    this.handoutPath = path.join(dir, 'handout.sock');
    this.proc = spawn('python3', [path.join(ROOT, 'test/fixtures/fdstore-manager.py'), this.notifyPath, this.handoutPath], {
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    onCleanUp(() => this.proc.kill('SIGKILL'));
    this.proc.stderr!.setEncoding('utf8').on('data', (chunk: string) => (this.stderr += chunk));
    onJsonLines(this.proc.stdout!, (record) => this.records.push(record as Record));
  }

  async ready(): Promise<void> {
    await pollUntil(() => {
      if (this.proc.exitCode !== null) throw new Error(`the fd store manager exited: ${this.stderr}`);
      return this.records.some((r) => r.ready);
    }, 'the fd store manager to bind');
  }

  /** The stored socket's inode per name, once `names` are all stored. */
  async stored(names: string[]): Promise<Map<string, number>> {
    return pollUntil(() => {
      const inodes = new Map(this.records.filter((r) => r.stored).map((r) => [r.stored!, r.inode!]));
      return names.every((n) => inodes.has(n)) ? inodes : undefined;
    }, `${names.join(', ')} to be stored (records: ${JSON.stringify(this.records)})`);
  }

  /** What systemd passes at the next start: every stored fd (ours now, close-on-exec) and its name. */
  async handOut(): Promise<{ fds: number[]; names: string[] }> {
    const fd = native.connectUnix(this.handoutPath);
    try {
      const { data, fds } = await native.recvFds(fd, 65536, 253, 10_000);
      return { fds, names: JSON.parse(data.toString()) as string[] };
    } finally {
      native.closeFd(fd);
    }
  }
}

/** Inodes of the sockets listening on 127.0.0.1:port, from /proc/net/tcp. */
function listeningInodes(port: number): number[] {
  const local = `0100007F:${port.toString(16).toUpperCase().padStart(4, '0')}`;
  return fs.readFileSync('/proc/net/tcp', 'utf8').split('\n').slice(1)
    .map((line) => line.trim().split(/\s+/))
    .filter((f) => f[1] === local && f[3] === '0A')
    .map((f) => Number(f[9]))
    .sort((a, b) => a - b);
}

/**
 * The socket inodes among `of` that `pid` accepts from: those in its epoll
 * sets (a worker holds every slot's socket, but watches only the ones it
 * serves).
 */
function acceptingFrom(pid: number, of: number[]): number[] {
  const watched = new Set<number>();
  for (const fd of fs.readdirSync(`/proc/${pid}/fdinfo`)) {
    let info: string;
    try {
      info = fs.readFileSync(`/proc/${pid}/fdinfo/${fd}`, 'utf8');
    } catch {
      continue;
    }
    for (const match of info.matchAll(/^tfd:\s+(\d+)/gm)) {
      try {
        const inode = /^socket:\[(\d+)\]$/.exec(fs.readlinkSync(`/proc/${pid}/fd/${match[1]}`))?.[1];
        if (inode && of.includes(Number(inode))) watched.add(Number(inode));
      } catch {
        // closed meanwhile
      }
    }
  }
  return [...watched].sort((a, b) => a - b);
}

/**
 * Opens `count` connections and sends a request on each; resolves once every
 * one is connected (the kernel completed the handshake from the accept
 * queue) with a promise of each outcome: the x-pid of a 200, else what went wrong.
 */
async function connectAll(port: number, count: number): Promise<Promise<string>[]> {
  const connected: Promise<void>[] = [];
  const outcomes = Array.from({ length: count }, () => {
    const socket = net.connect(port, '127.0.0.1');
    let response = '';
    connected.push(new Promise((resolve) => socket.once('connect', resolve).once('error', () => resolve())));
    socket.on('connect', () => socket.write('GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n'));
    socket.setEncoding('utf8').on('data', (chunk: string) => (response += chunk));
    socket.setTimeout(60_000, () => socket.destroy(Object.assign(new Error('no answer within 60 s'), { code: 'TIMEOUT' })));
    return new Promise<string>((resolve) => {
      socket.on('error', (error: NodeJS.ErrnoException) => resolve(error.code ?? error.message));
      socket.on('end', () => resolve(/^HTTP\/1\.1 200 /.test(response) ? 'ok' : `answered: ${response.split('\r\n')[0] || 'nothing'}`));
    });
  });
  await Promise.all(connected);
  return outcomes;
}

/** SIGKILLs the master and waits until neither it nor any of its workers accepts. */
async function crash(master: Master): Promise<void> {
  const workers = master.workerPids;
  master.proc.kill('SIGKILL');
  await master.exited;
  await pollUntil(() => workers.every((pid) => !isAlive(pid)), 'the workers to notice and exit');
}

/** Starts the master again from the store, as systemd does. */
async function restartFromStore(manager: FdStoreManager, fixture: object): Promise<{ master: Master; names: string[] }> {
  const { fds, names } = await manager.handOut();
  try {
    const master = await startMaster({
      script: 'test/fixtures/fdstore-launch.js',
      args: [path.join(ROOT, 'test/fixtures/app.js')],
      fds,
      env: { NOTIFY_SOCKET: manager.notifyPath, LISTEN_FDS: String(fds.length), LISTEN_FDNAMES: names.join(':') },
      fixture,
    });
    return { master, names };
  } finally {
    fds.forEach(native.closeFd);
  }
}

const slotName = (slot: number, key = '127.0.0.1:0#0') => `handover.${slot}.${encodeURIComponent(key)}`;

describe('the fd store', () => {
  it('fdStore: true, workers 2: SIGKILLed master, 40 connections during the outage, restarted from the store: 40 of 40 answered, each slot gets its own socket back', async () => {
    const manager = new FdStoreManager(scratch());
    await manager.ready();
    const fixture = { workers: 2, fdStore: true };
    const first = await startMaster({ fixture, env: { NOTIFY_SOCKET: manager.notifyPath } });
    const port = first.port;
    const inodes = await manager.stored([slotName(0), slotName(1)]);
    const bySlot = [inodes.get(slotName(0))!, inodes.get(slotName(1))!];
    expect(listeningInodes(port)).toEqual([...bySlot].sort((a, b) => a - b));

    await crash(first);
    // nobody runs, the store keeps the sockets: every connection waits in a queue
    const outcomes = await connectAll(port, 40);
    const { master, names } = await restartFromStore(manager, fixture);
    expect(names.sort()).toEqual([slotName(0), slotName(1)]);
    const results = await Promise.all(outcomes);
    expect(results.filter((r) => r !== 'ok')).toEqual([]);
    expect(results).toHaveLength(40);

    expect(master.port).toBe(port);
    expect(listeningInodes(port), 'no new socket bound').toEqual([...bySlot].sort((a, b) => a - b));
    const ready = master.events.find((e) => e.event === 'ready')!;
    for (const worker of ready.status!.workers) {
      await pollUntil(
        () => JSON.stringify(acceptingFrom(worker.pid, bySlot)) === JSON.stringify([bySlot[worker.slot]]),
        `slot ${worker.slot}'s worker ${worker.pid} to accept from its own stored socket ${bySlot[worker.slot]} only (now: ${acceptingFrom(worker.pid, bySlot)})`,
      );
    }
    expect(manager.records.filter((r) => r.removed)).toEqual([]);
    expect((await master.stop()).code).toBe(0);
    expect(ourProcesses()).toEqual([]);
    // a graceful stop leaves them stored for the next start (systemd drops them when the unit stops for good)
    expect(manager.records.filter((r) => r.removed)).toEqual([]);
  });

  it('$FDSTORE turns it on; an address a reload retires leaves the store (FDSTOREREMOVE=1)', async () => {
    const manager = new FdStoreManager(scratch());
    await manager.ready();
    const behaviourFile = path.join(scratch(), 'behaviour.json');
    const master = await startMaster({
      fixture: { addresses: ['127.0.0.1:0', '127.0.0.1:0'], behaviourFile },
      env: { NOTIFY_SOCKET: manager.notifyPath, FDSTORE: '4' },
    });
    await manager.stored([slotName(0, '127.0.0.1:0#0'), slotName(0, '127.0.0.1:0#1')]);
    writeJson(behaviourFile, { addresses: ['127.0.0.1:0'] });
    expect((await master.reload()).event).toBe('reloaded');
    await pollUntil(() => manager.records.some((r) => r.removed === slotName(0, '127.0.0.1:0#1')), 'the retired socket to leave the store');
    expect(manager.records.filter((r) => r.removed)).toEqual([{ removed: slotName(0, '127.0.0.1:0#1') }]);
    expect((await master.stop()).code).toBe(0);
  });
});
