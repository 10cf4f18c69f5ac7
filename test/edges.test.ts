// Invariant 13: the master survives its surroundings.
//   - a log flood into a stream that cannot keep up holds at most
//     MAX_PENDING_LOG_BYTES (plus one line) and says how many lines it dropped;
//   - a closed stderr pipe (a log reader that exits, `node app.js 2>&1 | head -2`)
//     never takes the master or its workers down: the next log line's EPIPE is
//     swallowed and the service keeps reloading and serving;
//   - a starting master removes a control directory only once it has proven
//     its master dead by taking the directory's lock: a live master's
//     directory survives even when its pid does not exist here (another pid
//     namespace sharing /tmp), a directory whose lock is free is removed, a
//     young one with no lock yet is left to the master creating it;
//   - 1,000 same-uid admin connections that ask for a status and then stay
//     idle do not pile up: beyond 64 open at once they are refused, the rest
//     are closed once idle for 30 s, and the refusals are logged in a burst of
//     lines, then at most one a second with a count of the lines left out;
//   - a second copy started by mistake, failing with EADDRINUSE, leaves the
//     running master's pid file alone (src/platform/pidfile.ts: the master
//     removes only a pid file it wrote).
// test/fixtures/app.js is the app; its master prints lifecycle events on stdout.
import { type ChildProcess, spawn } from 'node:child_process';
import { once } from 'node:events';
import * as fs from 'node:fs';
import * as http from 'node:http';
import * as net from 'node:net';
import * as path from 'node:path';
import { Writable } from 'node:stream';
import { afterEach, describe, expect, it } from 'vitest';
import { MAX_PENDING_LOG_BYTES, streamLogger } from '../src/log';
import { FrameDecoder, encode } from '../src/protocol';
import { cleanUp, isAlive, onCleanUp, pollUntil, scratch, startMaster } from './helpers/processes';
import { within } from './helpers/wait';

afterEach(cleanUp);

/** A pid no process here has (as a master in another pid namespace looks). */
function deadPid(): number {
  for (let pid = 4_000_000; ; pid--) if (!isAlive(pid)) return pid;
}

/** A process holding the flock on `lockPath` until the test ends. */
async function holdLock(lockPath: string): Promise<ChildProcess> {
  const holder = spawn(process.execPath, [path.join(__dirname, 'fixtures', 'lock-holder.js'), lockPath], {
    stdio: ['ignore', 'pipe', 'inherit'],
  });
  onCleanUp(() => holder.kill('SIGKILL'));
  const [line] = await once(holder.stdout!.setEncoding('utf8'), 'data');
  expect(line).toBe('locked\n');
  return holder;
}

/** One GET on a fresh connection; resolves with the status and the worker pid. */
function get(port: number): Promise<{ status: number; pid: number }> {
  return new Promise((resolve, reject) => {
    const req = http.get({ host: '127.0.0.1', port, path: '/', agent: false }, (res) => {
      res.resume();
      res.on('end', () => resolve({ status: res.statusCode!, pid: Number(res.headers['x-pid']) }));
    });
    req.setTimeout(30_000, () => req.destroy(new Error('no answer within 30 s')));
    req.on('error', reject);
  });
}

describe('a closed log pipe', () => {
  it('does not take the master down: after its stderr reader is gone it still reloads and serves', async () => {
    const master = await startMaster();
    const port = master.port;
    // The reader of the master's (and its workers') stderr goes away.
    master.proc.stderr!.destroy();
    for (let i = 0; i < 2; i++) {
      const outcome = await master.reload(); // logs "reload requested", workers log their drain
      expect(outcome.event).toBe('reloaded');
    }
    const reply = await get(port);
    expect(reply.status).toBe(200);
    expect(master.proc.exitCode).toBeNull();
    expect(master.proc.signalCode).toBeNull();
  });
});

describe('a log flood', () => {
  it('buffers a bounded amount in a stream that cannot keep up, then reports what it dropped', () => {
    const written: string[] = [];
    let release: (() => void) | undefined;
    // A reader that is stuck: the first write never completes until released.
    const stuck = new Writable({
      write(chunk: Buffer, _encoding, callback) {
        written.push(chunk.toString());
        if (release) callback();
        else release = callback;
      },
    });
    const log = streamLogger(stuck, 'master');
    const message = 'x'.repeat(200);
    for (let i = 0; i < 100_000; i++) log.info(message); // 20 MB of lines
    expect(stuck.writableLength).toBeLessThanOrEqual(MAX_PENDING_LOG_BYTES + 300);
    release!();
    log.warn('after the flood');
    const tail = written.slice(-2).join('');
    expect(tail).toMatch(/master warn: \d+ log line\(s\) dropped/);
    expect(tail).toMatch(/master warn: after the flood\n$/);
  });
});

describe('stale control directories', () => {
  it('are removed only when their lock proves their master gone', async () => {
    const parent = scratch('handover-edges-');
    const pid = deadPid();
    // A live master elsewhere: its pid does not exist here, its lock is held.
    const live = path.join(parent, `handover-${pid}-live`);
    fs.mkdirSync(live);
    fs.writeFileSync(path.join(live, 'control.sock'), '');
    await holdLock(path.join(live, 'lock'));
    // A dead master's directory: its lock file is there, nobody holds it.
    const dead = path.join(parent, `handover-${pid}-dead`);
    fs.mkdirSync(dead);
    fs.writeFileSync(path.join(dead, 'lock'), '');
    // A master between mkdtemp and its lock: no lock file, just made.
    const young = path.join(parent, `handover-${pid}-young`);
    fs.mkdirSync(young);
    // A directory that never got a lock, two minutes old, nothing listening.
    const abandoned = path.join(parent, `handover-${pid}-abandoned`);
    fs.mkdirSync(abandoned);
    const twoMinutesAgo = new Date(Date.now() - 120_000);
    fs.utimesSync(abandoned, twoMinutesAgo, twoMinutesAgo);
    // A live master of an older handover (no lock file), two minutes old: its
    // control socket still listens.
    const older = path.join(parent, `handover-${pid}-older`);
    fs.mkdirSync(older);
    const listener = net.createServer().listen(path.join(older, 'control.sock'));
    await once(listener, 'listening');
    fs.utimesSync(older, twoMinutesAgo, twoMinutesAgo);

    const master = await startMaster({ fixture: { controlDir: parent } });
    expect(fs.existsSync(path.join(live, 'control.sock'))).toBe(true);
    expect(fs.existsSync(young)).toBe(true);
    expect(fs.existsSync(dead)).toBe(false);
    expect(fs.existsSync(abandoned)).toBe(false);
    expect(fs.existsSync(path.join(older, 'control.sock')), 'an older live master\'s directory').toBe(true);
    listener.close();
    // The master's own directory carries its lock, held: a second sweep leaves it.
    const own = fs.readdirSync(parent).find((name) => name.startsWith(`handover-${master.pid}-`));
    expect(own).toBeDefined();
    expect(fs.readdirSync(path.join(parent, own!))).toContain('lock');
    const second = await startMaster({ fixture: { controlDir: parent } });
    expect(fs.existsSync(path.join(parent, own!, 'control.sock'))).toBe(true);
    expect((await master.reload()).event).toBe('reloaded');
    await second.stop();
  });
});

describe('a failed second start', () => {
  it('leaves the running master\'s pid file alone', async () => {
    const pidFile = path.join(scratch('handover-edges-'), 'app.pid');
    const first = await startMaster({ fixture: { pidFile } });
    expect(fs.readFileSync(pidFile, 'utf8')).toBe(`${first.pid}\n`);
    const second = await startMaster({
      fixture: { pidFile, addresses: [`127.0.0.1:${first.port}`] },
      waitReady: false,
    });
    const fatal = await second.waitFor((e) => e.event === 'fatal', 'the second copy to fail');
    expect(fatal.code).toBe('EADDRINUSE');
    expect((await second.exited).code).not.toBe(0);
    expect(fs.readFileSync(pidFile, 'utf8')).toBe(`${first.pid}\n`);
  });
});

describe('idle admin connections', () => {
  /** Asks for a status on a new connection; resolves once answered (or closed by the master), leaving it open. */
  function askStatus(socketPath: string): Promise<{ socket: net.Socket; answered: boolean }> {
    return new Promise((resolve) => {
      const decoder = new FrameDecoder();
      const socket = net.connect(socketPath, () => socket.write(encode({ type: 'status' })));
      socket.on('data', (chunk) => {
        if (decoder.push(chunk).some((m) => m.type === 'status-result')) resolve({ socket, answered: true });
      });
      socket.on('error', () => {});
      socket.on('close', () => resolve({ socket, answered: false }));
    });
  }

  it('do not keep a stopped master alive: its stop closes them and it exits', async () => {
    const parent = scratch('handover-edges-');
    const master = await startMaster({ fixture: { controlDir: parent } });
    const dir = fs.readdirSync(parent).find((name) => name.startsWith(`handover-${master.pid}-`))!;
    const idle = await Promise.all([1, 2, 3].map(() => askStatus(path.join(parent, dir, 'control.sock'))));
    onCleanUp(() => idle.forEach((r) => r.socket.destroy()));
    expect(idle.map((r) => r.answered)).toEqual([true, true, true]);
    const closed = Promise.all(idle.map((r) => once(r.socket, 'close')));
    // Idle admin connections are closed after 30 s; a master that waited for
    // them after its stop would still be running at this deadline.
    expect((await within(master.stop(), 20_000, 'the master to exit with admin connections open')).code).toBe(0);
    await within(closed, 5_000, 'the admin connections to be closed');
  });

  it('a status whose client left before the answer leaves nothing behind that delays the exit', async () => {
    const parent = scratch('handover-edges-');
    const master = await startMaster({ fixture: { controlDir: parent } });
    const dir = fs.readdirSync(parent).find((name) => name.startsWith(`handover-${master.pid}-`))!;
    // The master asks its worker for its connection count before it answers
    // (giving up after 1 s): with the worker frozen, the client is long gone
    // by the time the answer is ready.
    const [worker] = master.workerPids;
    process.kill(worker, 'SIGSTOP');
    onCleanUp(() => void (isAlive(worker) && process.kill(worker, 'SIGCONT')));
    await new Promise<void>((resolve) => {
      const socket = net.connect(path.join(parent, dir, 'control.sock'), () => socket.end(encode({ type: 'status' })));
      socket.on('error', () => {});
      socket.resume();
      socket.on('close', () => resolve());
    });
    await new Promise((resolve) => setTimeout(resolve, 1_500)); // the answer, too late
    process.kill(worker, 'SIGCONT');
    // (an idle timer started for that answer after its connection closed held the master 30 s)
    expect((await within(master.stop(), 20_000, 'the master to exit')).code).toBe(0);
  });

  it('1,000 of them are capped, closed once idle, and their refusals logged without flooding the log', async () => {
    const parent = scratch('handover-edges-');
    // idle admin connections closed after 3 s instead of 30 (the internal adminIdleTimeout)
    const master = await startMaster({ fixture: { controlDir: parent, adminIdleTimeout: 3_000 } });
    const dir = fs.readdirSync(parent).find((name) => name.startsWith(`handover-${master.pid}-`))!;
    const socketPath = path.join(parent, dir, 'control.sock');
    const sockets: net.Socket[] = [];
    onCleanUp(() => sockets.forEach((s) => s.destroy()));
    let answered = 0;
    for (let batch = 0; batch < 10; batch++) {
      const results = await Promise.all(Array.from({ length: 100 }, () => askStatus(socketPath)));
      for (const r of results) {
        sockets.push(r.socket);
        if (r.answered) answered++;
      }
    }
    expect(answered).toBe(64); // the cap: the rest were refused
    const open = () => sockets.filter((s) => !s.destroyed && !s.readableEnded).length;
    await pollUntil(() => open() <= 64, 'the refused connections to be closed');
    // Idle with nothing pending: closed after adminIdleTimeout (the deadline only ends a broken run).
    await pollUntil(() => open() === 0, 'the idle admin connections to be closed', 90_000);
    // 936 refusals: a burst of lines, then at most one a second, every one accounted for.
    const tally = () => {
      const lines = master.stderr.split('\n');
      const logged = lines.filter((l) => l.includes('control: refused pid')).length;
      const counted = lines.reduce((n, l) => n + Number(/refused (\d+) more connection/.exec(l)?.[1] ?? 0), 0);
      return { logged, counted };
    };
    await pollUntil(() => tally().logged + tally().counted >= 936, 'every refusal to be logged or counted');
    expect(tally().logged + tally().counted).toBe(936);
    expect(tally().logged).toBeLessThan(100);
    expect((await master.reload()).event).toBe('reloaded'); // and the master serves on
  });
});
