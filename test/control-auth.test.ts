// Invariant 6 with real processes: only our own workers get listening
// sockets. The control socket lives in a private directory (0700, socket
// 0600); the master admits a hello only from a process it spawned (the
// kernel's peer pid, not the pid the frame claims), of the workers' uid, with
// that process's one-time token. Everything else is refused, logged with the
// peer's pid, and closed; silence and oversize frames are dropped; fds sent to
// the master are not kept (invariant 7); garbage never hurts the master or the
// requests it serves.
//
// Who can send what:
//   - this test process (a same-uid process the master did not spawn) sends
//     made-up tokens, a worker's pid, and tokens read from a worker's
//     /proc/<pid>/environ (a same-uid process can read them: the peer pid
//     check is what stops it);
//   - test/fixtures/auth-app.js makes the real workers forge hellos from
//     their own pid, the one the master expects: a wrong token, an exited
//     worker's token, and their own token a second time. Only a worker can
//     do that, since the kernel reports the peer pid.
//
// Sensitivity, checked by hand on a copy of the tree with dist/ edited: each
// of these made the named test fail and nothing else: chmod 0755 / 0666
// (modes); looking the token up by the frame's pid instead of the peer's
// (stolen live token); skipping tokensEqual (wrong token; exited worker's
// token); not deleting a used token (wrong token / replay); no handshake timer
// (silent peer); no length cap in the decoder (length prefix); not catching
// the decoder's error (garbage: the master dies); no refusal log line (the
// two made-up-token tests); both uid checks removed (another uid); the gate
// off with onHello trusting the claimed pid (claiming a worker's pid); an
// accept() that recvmsg's the first frame and keeps its fds (fds test and
// garbage test).
import { execFileSync, spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import * as fs from 'node:fs';
import * as http from 'node:http';
import * as net from 'node:net';
import * as path from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { FrameDecoder, MAX_FRAME_BYTES, type Message, encode, validate } from '../src/protocol';
import * as native from '../src/platform/native';
import { Load } from './helpers/load';
import { type Master, fdCount, isAlive, pollUntil, reapAll, startMaster, tempDir } from './helpers/processes';
// eslint-disable-next-line @typescript-eslint/no-require-imports
const fuzz = require('./fixtures/auth-fuzz-frames.js');

const AUTH_APP = 'test/fixtures/auth-app.js';
/** How the fixtures' Server names its one registration ('127.0.0.1:0', first ephemeral). */
const ADDRESS_KEY = '127.0.0.1:0#0';

const scratchDirs: string[] = [];
const openConns = new Set<Raw>();

afterEach(reapAll);
afterEach(() => {
  for (const conn of openConns) conn.close();
  for (const dir of scratchDirs.splice(0)) fs.rmSync(dir, { recursive: true, force: true });
});

function scratch(): string {
  const dir = tempDir('handover-auth-');
  scratchDirs.push(dir);
  return dir;
}

/** The master's control socket: <controlDir>/handover-<pid>-XXXXXX/control.sock. */
function controlSocket(controlDir: string): string {
  const entries = fs.readdirSync(controlDir).filter((e) => e.startsWith('handover-'));
  expect(entries, `one private directory in ${controlDir}`).toHaveLength(1);
  return path.join(controlDir, entries[0], 'control.sock');
}

/** A variable from a live process's environment (same uid can read it). */
function envOf(pid: number, name: string): string {
  const entry = fs.readFileSync(`/proc/${pid}/environ`, 'utf8').split('\0').find((e) => e.startsWith(`${name}=`));
  if (entry === undefined) throw new Error(`pid ${pid} has no ${name} in its environment`);
  return entry.slice(name.length + 1);
}

function hello(token: string, pid: number): Buffer {
  return encode({ type: 'hello', token, pid, slot: 0, generation: 1, addresses: [ADDRESS_KEY] });
}

function header(length: number): Buffer {
  const b = Buffer.alloc(4);
  b.writeUInt32BE(length >>> 0, 0);
  return b;
}

/**
 * A raw control connection from this process, through the native addon (so
 * fds can be attached, and any fds the master sends are seen and counted).
 */
class Raw {
  readonly fd: number;
  fdsReceived = 0;
  bytes = 0;
  readonly messages: Message[] = [];
  /** 'eof' or 'reset' once the master closed it; undefined while open. */
  end?: string;
  private readonly decoder = new FrameDecoder();
  private closedHere = false;

  constructor(socketPath: string) {
    this.fd = native.connectUnix(socketPath);
    openConns.add(this);
  }

  /** Small writes only: all of `data` in one sendmsg, `fds` attached. */
  send(data: Buffer, fds: number[] = []): void {
    expect(native.sendFds(this.fd, data, fds)).toBe(data.length);
  }

  /** Reads until the master closes the connection, `until()` holds, or `timeoutMs` passes. */
  async read(timeoutMs: number, until?: () => boolean): Promise<this> {
    const deadline = Date.now() + timeoutMs;
    while (this.end === undefined && !until?.()) {
      let got: native.Received;
      try {
        got = await native.recvFds(this.fd, MAX_FRAME_BYTES + 4, 16, Math.max(1, deadline - Date.now()));
      } catch (error) {
        const code = (error as { code?: string }).code;
        if (code === 'ETIMEDOUT') break; // still open
        this.end = code === 'ECONNRESET' ? 'reset' : String(code);
        break;
      }
      this.fdsReceived += got.fds.length + got.surplusClosed;
      got.fds.forEach((fd) => native.closeFd(fd));
      if (got.data.length === 0) {
        this.end = 'eof';
        break;
      }
      this.bytes += got.data.length;
      try {
        this.messages.push(...this.decoder.push(got.data));
      } catch {
        // counted in `bytes`; the caller decides whether any data was allowed
      }
    }
    return this;
  }

  get closed(): boolean {
    return this.end === 'eof' || this.end === 'reset';
  }

  close(): void {
    if (this.closedHere) return;
    this.closedHere = true;
    openConns.delete(this);
    native.closeFd(this.fd);
  }
}

/**
 * Sends `data` (with `fds`) on a fresh connection and expects the master to
 * close it without sending a single fd (at most a `refused` frame).
 */
async function expectRefused(socketPath: string, data: Buffer | null, why: string, fds: number[] = []): Promise<Raw> {
  const conn = new Raw(socketPath);
  if (data) conn.send(data, fds);
  await conn.read(30_000);
  conn.close();
  expect(conn.fdsReceived, `${why}: fds received`).toBe(0);
  expect(conn.messages.filter((m) => m.type !== 'refused'), `${why}: frames received`).toEqual([]);
  expect(conn.end, `${why}: the master should have closed the connection`).toMatch(/^(eof|reset)$/);
  return conn;
}

/** The master's 'refused' log lines that name `pid` as the peer. */
function refusals(master: Master, pid: number): string[] {
  const pattern = new RegExp(`master warn: .*refused pid ${pid}\\b`);
  return master.stderr.split('\n').filter((line) => pattern.test(line));
}

function waitRefusals(master: Master, pid: number, count: number): Promise<string[]> {
  return pollUntil(
    () => (refusals(master, pid).length >= count ? refusals(master, pid) : undefined),
    `${count} 'refused pid ${pid}' line(s) in the master's log; it has:\n${master.stderr}`,
  );
}

function get(port: number): Promise<{ status: number; pid: number }> {
  return new Promise((resolve, reject) => {
    http.get({ host: '127.0.0.1', port, path: '/', agent: false }, (res) => {
      res.resume();
      res.on('end', () => resolve({ status: res.statusCode ?? 0, pid: Number(res.headers['x-pid']) }));
    }).on('error', reject);
  });
}

interface ForgedOutcome {
  attempt: string;
  fds: number;
  bytes: number;
  end: string;
}

/** What a worker of auth-app.js recorded about its forged hellos. */
function forgedBy(resultsDir: string, pid: number): ForgedOutcome[] {
  return JSON.parse(fs.readFileSync(path.join(resultsDir, `${pid}.json`), 'utf8'));
}

const closedConnection = expect.stringMatching(/^(eof|reset)$/);

describe('invariant 6: only our own workers get listening sockets', () => {
  it('the control directory is 0700 and the socket 0600, both the master\'s own', async () => {
    const controlDir = scratch();
    const master = await startMaster({ fixture: { controlDir } });
    const socketPath = controlSocket(controlDir);
    // the socket the workers were told to use is this one
    expect(envOf(master.workerPids[0], 'HANDOVER_CONTROL_SOCKET')).toBe(socketPath);
    const dir = fs.lstatSync(path.dirname(socketPath));
    const socket = fs.lstatSync(socketPath);
    expect(dir.isDirectory()).toBe(true);
    expect((dir.mode & 0o7777).toString(8)).toBe('700');
    expect(socket.isSocket()).toBe(true);
    expect((socket.mode & 0o7777).toString(8)).toBe('600');
    expect([dir.uid, socket.uid]).toEqual([process.getuid!(), process.getuid!()]);
    // a reload changes neither
    expect((await master.reload()).event).toBe('reloaded');
    expect((fs.lstatSync(path.dirname(socketPath)).mode & 0o7777).toString(8)).toBe('700');
    expect((fs.lstatSync(socketPath).mode & 0o7777).toString(8)).toBe('600');
  });

  it('a same-uid process the master did not spawn gets no fds for a made-up token, and is logged once', async () => {
    const controlDir = scratch();
    const master = await startMaster({ fixture: { controlDir } });
    const socketPath = controlSocket(controlDir);
    await expectRefused(socketPath, hello(randomBytes(32).toString('hex'), process.pid), 'made-up token, own pid');
    await waitRefusals(master, process.pid, 1);
    // the master and its worker carry on
    const answer = await get(master.port);
    expect(answer).toEqual({ status: 200, pid: master.workerPids[0] });
    expect(refusals(master, process.pid)).toHaveLength(1);
  });

  it("a hello claiming a real worker's pid, from another process, is refused: made-up token or the worker's own", async () => {
    const controlDir = scratch();
    const master = await startMaster({ fixture: { controlDir } });
    const socketPath = controlSocket(controlDir);
    const [worker] = master.workerPids;
    const token = envOf(worker, 'HANDOVER_TOKEN');
    await expectRefused(socketPath, hello(randomBytes(32).toString('hex'), worker), "worker's pid, made-up token");
    await expectRefused(socketPath, hello(token, worker), "worker's pid and token, from this process");
    // The log names the kernel's peer pid (this process), not the claimed one.
    await waitRefusals(master, process.pid, 2);
    expect(refusals(master, worker)).toEqual([]);
    expect(await get(master.port)).toEqual({ status: 200, pid: worker });
  });

  it("a worker's live, unused token, read from its environment, is refused from any other pid; the worker still starts", async () => {
    // The worker waits before its hello, so its token is still expected.
    const controlDir = scratch();
    const resultsDir = scratch();
    const holdFile = path.join(resultsDir, 'go');
    const master = await startMaster({ script: AUTH_APP, fixture: { controlDir, resultsDir, holdFile }, waitReady: false });
    const waiting = await pollUntil(
      () => fs.readdirSync(resultsDir).find((f) => f.startsWith('waiting-')),
      'the worker to wait before its hello',
    );
    const worker = Number(waiting.slice('waiting-'.length));
    const token = envOf(worker, 'HANDOVER_TOKEN');
    const socketPath = controlSocket(controlDir);
    await expectRefused(socketPath, hello(token, worker), "the waiting worker's pid and token, from this process");
    await expectRefused(socketPath, hello(token, process.pid), "the waiting worker's token with this process's pid");
    await waitRefusals(master, process.pid, 2);
    // The forgeries did not use up the token: the real worker is admitted.
    fs.writeFileSync(holdFile, '');
    await master.waitFor((e) => e.event === 'ready', 'the master to be ready');
    expect(master.workerPids).toEqual([worker]);
    expect(await get(master.port)).toEqual({ status: 200, pid: worker });
    expect(refusals(master, worker)).toEqual([]);
  });

  it('a spawned worker presenting a wrong token gets no fds, and a used token does not work twice', async () => {
    const controlDir = scratch();
    const resultsDir = scratch();
    const master = await startMaster({
      script: AUTH_APP,
      fixture: { controlDir, resultsDir, attempts: ['wrong-token', 'replay'] },
    });
    const [worker] = master.workerPids;
    // From the worker's own pid: with a wrong token before its real hello,
    // with its real (used) token again after it.
    expect(forgedBy(resultsDir, worker)).toEqual([
      { attempt: 'wrong-token', fds: 0, bytes: expect.any(Number), end: closedConnection },
      { attempt: 'replay', fds: 0, bytes: expect.any(Number), end: closedConnection },
    ]);
    const lines = await waitRefusals(master, worker, 2);
    expect(lines[0]).toMatch(/token/);
    // a wrong guess does not lock the real worker out
    expect(await get(master.port)).toEqual({ status: 200, pid: worker });
  });

  it("an exited worker's token opens nothing: not from a new worker's pid, not from another process", async () => {
    // What this cannot construct: a hello from the exited worker's own pid,
    // which would need the kernel to reuse that pid for a process of ours.
    // The master drops the token at the worker's hello (one-time: the
    // 'replay' case above shows a used token fails even from its own pid) and
    // forgets the pid when the worker exits, so a reused pid finds nothing.
    const controlDir = scratch();
    const resultsDir = scratch();
    const staleTokenFile = path.join(resultsDir, 'stale-token');
    const master = await startMaster({
      script: AUTH_APP,
      fixture: { controlDir, resultsDir, staleTokenFile, attempts: ['stale-token'] },
    });
    const socketPath = controlSocket(controlDir);
    const [old] = master.workerPids;
    const stale = envOf(old, 'HANDOVER_TOKEN');
    fs.writeFileSync(staleTokenFile, stale);
    const outcome = await master.reload();
    expect(outcome.event, outcome.error).toBe('reloaded');
    const fresh = outcome.status!.workers.find((w) => w.generation === outcome.generation)!.pid;
    await master.waitFor((e) => e.event === 'worker-exit' && e.pid === old, `old worker ${old} to exit`);
    expect(isAlive(old)).toBe(false);
    // The new worker, a pid the master was expecting, tried the old token first.
    expect(forgedBy(resultsDir, fresh)).toEqual([{ attempt: 'stale-token', fds: 0, bytes: expect.any(Number), end: closedConnection }]);
    expect((await waitRefusals(master, fresh, 1))[0]).toMatch(/token/);
    // This process, claiming the exited worker's pid or its own.
    await expectRefused(socketPath, hello(stale, old), "the exited worker's pid and token");
    await expectRefused(socketPath, hello(stale, process.pid), "the exited worker's token, this process's pid");
    await waitRefusals(master, process.pid, 2);
    expect(await get(master.port)).toEqual({ status: 200, pid: fresh });
  });

  it('a peer that sends nothing, or half a frame, is dropped after the handshake timeout and logged', async () => {
    const controlDir = scratch();
    const master = await startMaster({ fixture: { controlDir } });
    const socketPath = controlSocket(controlDir);
    const silent = new Raw(socketPath);
    const half = new Raw(socketPath);
    half.send(Buffer.concat([header(100), Buffer.from('{"type":"hel')]));
    // No deadline of ours decides this: each read ends when the master closes
    // the connection (or fails the test after 60 s, far past any handshake timeout).
    await Promise.all([silent.read(60_000), half.read(60_000)]);
    for (const [name, conn] of [['silent', silent], ['half a frame', half]] as const) {
      expect(conn.end, `${name}: the master should have closed it`).toMatch(/^(eof|reset)$/);
      expect(conn.fdsReceived, name).toBe(0);
      expect(conn.bytes, name).toBe(0);
    }
    await waitRefusals(master, process.pid, 2);
    expect(isAlive(master.pid)).toBe(true);
  });

  it('a length prefix over MAX_FRAME_BYTES closes the connection, before or after a handshake', async () => {
    const controlDir = scratch();
    const master = await startMaster({ fixture: { controlDir } });
    const socketPath = controlSocket(controlDir);
    await expectRefused(socketPath, header(MAX_FRAME_BYTES + 1), 'first frame over the cap');
    await expectRefused(socketPath, Buffer.concat([header(0xffffffff), randomBytes(64)]), 'a 4 GiB length prefix');
    await waitRefusals(master, process.pid, 2);
    // After an admin request the handshake timer is gone: only the cap can
    // close this connection, and it must, at once.
    const conn = new Raw(socketPath);
    conn.send(encode({ type: 'status' }));
    await conn.read(30_000, () => conn.messages.length > 0);
    expect(conn.messages.map((m) => m.type)).toEqual(['status-result']);
    expect(conn.end).toBeUndefined();
    conn.send(Buffer.concat([header(MAX_FRAME_BYTES + 1), Buffer.alloc(16, 0x20)]));
    await conn.read(30_000);
    conn.close();
    expect(conn.end, 'the master should have closed the connection').toMatch(/^(eof|reset)$/);
    expect(conn.fdsReceived).toBe(0);
    await waitRefusals(master, process.pid, 3);
    expect(await get(master.port)).toEqual({ status: 200, pid: master.workerPids[0] });
  });

  it('fds sent to the master are closed, not kept (invariant 7)', async () => {
    const controlDir = scratch();
    const master = await startMaster({ fixture: { controlDir } });
    const socketPath = controlSocket(controlDir);
    const baseline = fdCount(master.pid);

    // A FIFO's reader sees EOF (read returns 0) only once every copy of every
    // write end is closed, in any process: the master, or a message in flight.
    const fifo = path.join(scratch(), 'fifo');
    execFileSync('mkfifo', [fifo]);
    const reader = fs.openSync(fifo, fs.constants.O_RDONLY | fs.constants.O_NONBLOCK);
    try {
      const writersGone = (): boolean => {
        try {
          return fs.readSync(reader, Buffer.alloc(16)) === 0;
        } catch (error) {
          if ((error as NodeJS.ErrnoException).code === 'EAGAIN') return false;
          throw error;
        }
      };
      /** `n` fds of one write end; `release` closes this process's copies. */
      const writeEnds = (n: number) => {
        const first = fs.openSync(fifo, fs.constants.O_WRONLY | fs.constants.O_NONBLOCK);
        const fds = [first, ...Array.from({ length: n - 1 }, () => native.dup(first))];
        return { fds, release: () => fds.forEach((fd) => native.closeFd(fd)) };
      };

      // The detector works: no writer yet, EOF; a writer open, no EOF.
      expect(writersGone()).toBe(true);
      const probe = writeEnds(1);
      expect(writersGone()).toBe(false);
      probe.release();
      expect(writersGone()).toBe(true);

      // 1. On a connection the master accepts (an admin status request) and
      //    keeps open: the fds must be gone while it is still open.
      const admin = writeEnds(4);
      const conn = new Raw(socketPath);
      conn.send(encode({ type: 'status' }), admin.fds);
      admin.release();
      await conn.read(30_000, () => conn.messages.length > 0);
      expect(conn.messages.map((m) => m.type)).toEqual(['status-result']);
      await pollUntil(writersGone, 'the 4 fds sent with a status request to be closed', 15_000);
      expect(conn.end, 'the admin connection stays open').toBeUndefined();
      conn.close();

      // 2. On connections the master refuses: a forged hello, garbage, a
      //    frame over the cap, and an unexpected frame type.
      const sets = [writeEnds(3), writeEnds(3), writeEnds(3), writeEnds(3)];
      const refused = Promise.all([
        expectRefused(socketPath, hello(randomBytes(32).toString('hex'), process.pid), 'hello with fds', sets[0].fds),
        expectRefused(socketPath, Buffer.concat([header(8), Buffer.from('not json')]), 'garbage with fds', sets[1].fds),
        expectRefused(socketPath, header(MAX_FRAME_BYTES + 1), 'oversize with fds', sets[2].fds),
        expectRefused(socketPath, encode({ type: 'listeners', listeners: [] }), 'a listeners frame with fds', sets[3].fds),
      ]);
      sets.forEach((s) => s.release());
      await refused;
      await pollUntil(writersGone, 'the fds sent on refused connections to be closed', 15_000);

      // and the master's own fd table is what it was
      await pollUntil(() => fdCount(master.pid) === baseline, `master fd count back to ${baseline} (now ${fdCount(master.pid)})`, 15_000);
      expect(isAlive(master.pid)).toBe(true);
    } finally {
      fs.closeSync(reader);
    }
  });

  it('garbage on many control connections under load: no failed request, the master lives, fds back to baseline', async () => {
    const SEED = Number(process.env.HANDOVER_FUZZ_SEED ?? 0xa117);
    const CONNECTIONS = 600;
    const CONCURRENCY = 16;
    const controlDir = scratch();
    const master = await startMaster({ fixture: { controlDir } });
    const socketPath = controlSocket(controlDir);
    const baseline = fdCount(master.pid);
    const [worker] = master.workerPids;
    const load = new Load({ port: master.port, connections: 8 });
    await load.servedBy(worker);

    // Inputs: noise, big noise, and the decoder fuzz inputs. Valid `stop` and
    // `reload` frames are left out: from this uid those are legitimate admin
    // requests, not garbage.
    const rng = fuzz.makeRng(SEED);
    const harmless = (input: Buffer): boolean => {
      for (let at = 0; at + 4 <= input.length;) {
        const length = input.readUInt32BE(at);
        if (length > MAX_FRAME_BYTES || at + 4 + length > input.length) return true;
        let message: Message;
        try {
          message = validate(JSON.parse(input.subarray(at + 4, at + 4 + length).toString('utf8')));
        } catch {
          return true; // the master stops reading here
        }
        if (message.type === 'stop' || message.type === 'reload') return false;
        at += 4 + length;
      }
      return true;
    };
    const inputs: Buffer[] = [];
    while (inputs.length < CONNECTIONS) {
      const kind = rng.int(10);
      const input: Buffer = kind < 3
        ? rng.bytes(1 + rng.int(4096))
        : kind === 3
          ? rng.bytes(64 * 1024 + rng.int(256 * 1024))
          : fuzz.fuzzInput(rng, MAX_FRAME_BYTES);
      if (input.length > 0 && harmless(input)) inputs.push(input);
    }

    // Every 10th connection also carries fds (FIFO write ends; see the test above).
    const fifo = path.join(scratch(), 'fifo');
    execFileSync('mkfifo', [fifo]);
    const reader = fs.openSync(fifo, fs.constants.O_RDONLY | fs.constants.O_NONBLOCK);
    const writer = fs.openSync(fifo, fs.constants.O_WRONLY | fs.constants.O_NONBLOCK);
    const writersGone = (): boolean => {
      try {
        return fs.readSync(reader, Buffer.alloc(16)) === 0;
      } catch (error) {
        if ((error as NodeJS.ErrnoException).code === 'EAGAIN') return false;
        throw error;
      }
    };

    let stuck = 0; // native connections neither closed nor answered
    const viaNode = (input: Buffer) =>
      new Promise<void>((resolve) => {
        const socket = net.createConnection(socketPath);
        socket.on('error', () => {}); // a reset is one of the master's answers
        socket.on('close', () => resolve());
        socket.resume(); // a `status` frame gets an answer
        socket.end(input);
      });
    const viaNative = async (input: Buffer) => {
      const conn = new Raw(socketPath);
      const fds = [native.dup(writer), native.dup(writer)];
      try {
        const chunk = input.subarray(0, 2048); // one sendmsg, fds on its first byte
        conn.send(chunk, fds);
      } finally {
        fds.forEach((fd) => native.closeFd(fd));
      }
      // The master closes it (bad frame, or the handshake timeout) unless the
      // bytes were a valid admin request, which it answers; then this side closes.
      await conn.read(20_000, () => conn.messages.length > 0);
      if (!conn.closed && conn.messages.length === 0) stuck++;
      conn.close();
      expect(conn.fdsReceived).toBe(0);
    };

    const okBefore = load.stats.ok;
    let next = 0;
    await Promise.all(Array.from({ length: CONCURRENCY }, async () => {
      while (next < inputs.length) {
        const i = next++;
        if (i % 10 === 0) await viaNative(inputs[i]);
        else await viaNode(inputs[i]);
      }
    }));
    const okDuring = load.stats.ok - okBefore;
    expect(stuck, 'control connections the master neither answered nor closed').toBe(0);

    // The master still answers admin requests, still reloads, and still
    // serves, without a single failed request.
    expect(isAlive(master.pid)).toBe(true);
    const status = new Raw(socketPath);
    status.send(encode({ type: 'status' }));
    await status.read(30_000, () => status.messages.length > 0);
    status.close();
    expect(status.messages[0]).toMatchObject({ type: 'status-result', status: { pid: master.pid } });
    expect(master.count('worker-exit'), 'the garbage made no worker exit').toBe(0);
    const reloaded = await master.reload();
    expect(reloaded.event, reloaded.error).toBe('reloaded');
    const fresh = reloaded.status!.workers.find((w) => w.generation === reloaded.generation)!.pid;
    await load.servedBy(fresh);
    const stats = await load.stop();
    expect(stats.errors).toEqual({});
    expect(stats.failed).toBe(0);
    expect(okDuring, 'requests answered while the garbage flew').toBeGreaterThan(0);
    // Refusals are logged in a burst, then at most one line a second counting the rest.
    const refused = () => refusals(master, process.pid).length + master.stderr.split('\n')
      .reduce((n, line) => n + Number(/refused (\d+) more connection/.exec(line)?.[1] ?? 0), 0);
    await pollUntil(() => refused() > CONNECTIONS / 2, 'the master to refuse (and log or count) the garbage');
    expect(master.events.filter((e) => e.event === 'fatal')).toEqual([]);

    native.closeFd(writer);
    await pollUntil(writersGone, 'every fd sent with the garbage to be closed', 15_000);
    fs.closeSync(reader);
    await pollUntil(() => fdCount(master.pid) === baseline, `master fd count back to ${baseline} (now ${fdCount(master.pid)})`, 15_000);
    expect((await master.stop()).code).toBe(0);
  });

  it.skipIf(process.getuid?.() !== 0)(
    "a process of another uid is refused even when the files' modes let it connect (run as root)",
    async () => {
      // Defence in depth: loosen the directory and socket modes (root may),
      // then connect as nobody. The uid check alone must refuse it, even for
      // an admin request, which any process of the master's own uid may make.
      const controlDir = scratch();
      const master = await startMaster({ fixture: { controlDir } });
      const socketPath = controlSocket(controlDir);
      fs.chmodSync(controlDir, 0o755);
      fs.chmodSync(path.dirname(socketPath), 0o755);
      fs.chmodSync(socketPath, 0o666);
      const script = `
        const net = require('node:net');
        const [socketPath, hex] = process.argv.slice(1);
        let bytes = 0, error;
        const socket = net.connect(socketPath, () => socket.write(Buffer.from(hex, 'hex')));
        socket.on('data', (d) => (bytes += d.length));
        socket.on('error', (e) => (error = e.code));
        socket.on('close', () => { console.log(JSON.stringify({ bytes, error, closed: true })); process.exit(0); });
        // bounds the test if the master never closes it
        setTimeout(() => { console.log(JSON.stringify({ bytes, error, closed: false })); process.exit(0); }, 30000).unref();
      `;
      for (const message of [encode({ type: 'status' }), hello(randomBytes(32).toString('hex'), 0)]) {
        const child = spawn(process.execPath, ['-e', script, socketPath, message.toString('hex')], {
          uid: 65534,
          gid: 65534,
          cwd: '/',
          stdio: ['ignore', 'pipe', 'pipe'],
        });
        let out = '';
        let err = '';
        child.stdout!.on('data', (d) => (out += d));
        child.stderr!.on('data', (d) => (err += d));
        const code = await new Promise((resolve) => child.once('exit', resolve));
        expect(code, err).toBe(0);
        const result = JSON.parse(out);
        expect(result.error, `nobody could not even connect: ${JSON.stringify(result)}`).not.toBe('EACCES');
        expect(result).toMatchObject({ bytes: 0, closed: true });
        // the uid gate's own reason: with it gone, the token or admin check would refuse with another one
        const [line] = await waitRefusals(master, child.pid!, 1);
        expect(line).toContain(`refused pid ${child.pid} (uid 65534): not the workers' uid (0), nor root`);
      }
      expect(await get(master.port)).toEqual({ status: 200, pid: master.workerPids[0] });
    },
  );
});
