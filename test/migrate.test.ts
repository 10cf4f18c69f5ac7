// Established connections move to the new generation (issue 20, invariant
// 15): real masters, real workers, real reloads, clients on loopback that
// count every close. A connection that moved is the same TCP connection (same
// local port, never closed) answered by a new-generation pid.
import * as fs from 'node:fs';
import * as net from 'node:net';
import * as path from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { WebSocket } from 'ws';
import { type Master, cleanUp, isAlive, pollUntil, scratch, startMaster, workerProcessesOf } from './helpers/processes';
import { FIXTURES, start as startApp } from './helpers/start';

afterEach(cleanUp);

const FIXTURE = 'test/fixtures/migrate-app.js';

interface Answer {
  status: number;
  pid: number;
  body: string;
  connection?: string;
}

/** One keep-alive HTTP/1.1 connection, spoken by hand so that every close is seen. */
class Conn {
  closed = false;
  private buffer = Buffer.alloc(0);
  private wake?: () => void;

  private constructor(readonly socket: net.Socket) {
    socket.on('data', (chunk) => {
      this.buffer = Buffer.concat([this.buffer, chunk]);
      this.wake?.();
    });
    socket.on('error', () => {});
    socket.on('close', () => {
      this.closed = true;
      this.wake?.();
    });
  }

  static open(port: number): Promise<Conn> {
    return new Promise((resolve, reject) => {
      const socket = net.connect(port, '127.0.0.1', () => resolve(new Conn(socket)));
      socket.once('error', reject);
    });
  }

  get localPort(): number {
    return this.socket.localPort!;
  }

  send(urlPath: string): void {
    this.socket.write(`GET ${urlPath} HTTP/1.1\r\nHost: x\r\n\r\n`);
  }

  /** The next response on this connection; rejects if it closes first. */
  async response(): Promise<Answer> {
    for (;;) {
      const end = this.buffer.indexOf('\r\n\r\n');
      if (end >= 0) {
        const head = this.buffer.subarray(0, end).toString('latin1');
        const length = Number(/content-length: (\d+)/i.exec(head)?.[1] ?? 0);
        if (this.buffer.length >= end + 4 + length) {
          const body = this.buffer.subarray(end + 4, end + 4 + length).toString();
          this.buffer = this.buffer.subarray(end + 4 + length);
          return {
            status: Number(head.split(' ')[1]),
            pid: Number(/x-pid: (\d+)/i.exec(head)?.[1]),
            body,
            connection: /connection: ([\w-]+)/i.exec(head)?.[1]?.toLowerCase(),
          };
        }
      }
      if (this.closed) throw new Error(`connection from port ${this.localPort} closed before its response`);
      await new Promise<void>((resolve) => (this.wake = resolve));
    }
  }

  async get(urlPath: string): Promise<Answer> {
    this.send(urlPath);
    return this.response();
  }
}

function portOf(address: string | undefined): number {
  return Number(address!.slice(address!.lastIndexOf(':') + 1));
}

async function start(fixture: Record<string, unknown> = {}): Promise<{ master: Master; http: number; echo: number }> {
  const master = await startMaster({ script: FIXTURE, fixture: { workers: 2, ...fixture } });
  const ready = master.events.find((e) => e.event === 'ready')!;
  return { master, http: portOf(ready.addresses![0]), echo: portOf(ready.addresses![1]) };
}

interface Reloaded {
  generation: number;
  connections?: { moved: number; closed: number; notMoved: Record<string, number>; open?: number };
  status?: {
    workers: { pid: number; generation: number; state: string }[];
    lastReload?: { connections?: Reloaded['connections'] };
  };
}

/** Reloads and returns the reloaded event, which comes once the drained workers have said what moved. */
async function reload(master: Master): Promise<Reloaded> {
  const event = await master.reload();
  expect(event.event, event.error).toBe('reloaded');
  return event as unknown as Reloaded;
}

function pidsOf(event: Reloaded, generation: number): number[] {
  return event.status!.workers.filter((w) => w.generation === generation && w.state === 'ready').map((w) => w.pid);
}

/** Waits until each pid has exited (their worker-exit events). */
async function exited(master: Master, pids: number[]): Promise<void> {
  for (const pid of pids) await master.waitFor((e) => e.event === 'worker-exit' && e.pid === pid, `worker ${pid} to exit`);
}

describe('HTTP/1.1 keep-alive connections move on a reload', () => {
  it('200 idle connections, workers: 2: each answers its next request on the same connection from a new-generation pid; none closes; the old workers exit', async () => {
    const { master, http } = await start();
    const conns = await Promise.all(Array.from({ length: 200 }, () => Conn.open(http)));
    const first = await Promise.all(conns.map((c, i) => c.get(`/first/${i}`)));
    const oldPids = [...new Set(first.map((a) => a.pid))];
    expect(oldPids.length).toBe(2);

    const event = await reload(master);
    // Said in the reloaded event, the status (`handover status --json`) and the log line.
    expect(event.connections).toMatchObject({ moved: 200, closed: 0 });
    expect(event.status?.lastReload?.connections).toMatchObject({ moved: 200, closed: 0 });
    // (the log line comes on stderr, a pipe of its own: it may arrive after the event)
    await pollUntil(() => /reload: generation 2: connections 200 moved, 0 closed/.test(master.stderr) || undefined, "the master's log line on the 200 moved connection(s)");
    const newPids = pidsOf(event, 2);

    const second = await Promise.all(conns.map((c, i) => c.get(`/second/${i}`)));
    second.forEach((a, i) => {
      expect(a.body).toBe(`/second/${i}`);
      expect(newPids).toContain(a.pid);
      expect(a.connection).toBe('keep-alive');
    });
    expect(conns.filter((c) => c.closed).length).toBe(0);
    await exited(master, oldPids); // nothing left to drain: they go at once
    expect(conns.filter((c) => c.closed).length).toBe(0);
    for (const c of conns) c.socket.destroy();
  });

  it('64 clients looping requests across 5 reloads: every request answered once, in order, 0 failed, 0 reconnects', async () => {
    const { master, http } = await start();
    const conns = await Promise.all(Array.from({ length: 64 }, () => Conn.open(http)));
    let running = true;
    const failures: string[] = [];
    const pids = new Set<number>();
    const loops = conns.map(async (c, i) => {
      for (let n = 0; running; n++) {
        try {
          const a = await c.get(`/${i}/${n}`);
          if (a.body !== `/${i}/${n}`) failures.push(`client ${i} asked /${i}/${n}, got ${a.body}`);
          pids.add(a.pid);
        } catch (error) {
          failures.push(`client ${i}: ${(error as Error).message}`);
          return;
        }
      }
    });
    let last: Reloaded | undefined;
    for (let r = 0; r < 5; r++) last = await reload(master);
    running = false;
    await Promise.all(loops);
    expect(failures).toEqual([]);
    expect(conns.filter((c) => c.closed).length).toBe(0);
    // Every connection ends up with the newest generation (busy ones move after a response).
    const newest = pidsOf(last!, 6);
    await pollUntil(async () => (await Promise.all(conns.map((c) => c.get('/last')))).every((a) => newest.includes(a.pid)), 'every connection to reach generation 6', 60_000);
    expect(conns.filter((c) => c.closed).length).toBe(0);
    expect(pids.size).toBeGreaterThan(2);
    for (const c of conns) c.socket.destroy();
  });

  it('a request in flight at the drain is answered by the old worker without Connection: close, and the connection then moves', async () => {
    const { master, http } = await start({ workers: 1 });
    const conn = await Conn.open(http);
    const before = await conn.get('/before');
    conn.send('/slow'); // answered by the old worker once it drains
    const event = await reload(master);
    const slow = await conn.response();
    expect(slow).toMatchObject({ pid: before.pid, body: '/slow', connection: 'keep-alive' });
    await exited(master, [before.pid]); // it moved the connection after the response, so nothing is left to drain
    const after = await conn.get('/after');
    expect(after.pid).toBe(pidsOf(event, 2)[0]);
    expect(conn.closed).toBe(false);
    conn.socket.destroy();
  });

  it('a request answered before its body has all arrived: the connection stays with the old worker, which reads the rest', async () => {
    const { master, http } = await start({ workers: 1 });
    const conn = await Conn.open(http);
    const before = await conn.get('/before');
    conn.socket.write('POST /early HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\nabc'); // the app answers at once
    expect(await conn.response()).toMatchObject({ pid: before.pid, body: '/early' });
    const event = await reload(master);
    expect(event.connections).toMatchObject({ moved: 0, open: 1 }); // it may move once a response ends it
    conn.socket.write('defghij'); // the rest of the body: moved, it would reach the new worker as a request line
    expect(await conn.get('/after')).toMatchObject({ status: 200, pid: before.pid, body: '/after' });
  });

  it('migrate: false keeps today\'s drain: the next request is answered by the old worker with Connection: close', async () => {
    const { master, http } = await start({ workers: 1, migrate: false });
    const conn = await Conn.open(http);
    const before = await conn.get('/before');
    const event = await reload(master);
    expect(event.connections?.moved ?? 0).toBe(0);
    const after = await conn.get('/after');
    expect(after.pid).toBe(before.pid);
    expect(after.connection).toBe('close');
    await pollUntil(() => conn.closed, 'the old worker to close the connection after its response');
  });

  it('a new worker SIGKILLed while it is being handed connections: the old worker keeps them and drains them as before', async () => {
    const blockFile = path.join(scratch(), 'block');
    // A keep-alive timeout longer than the test: the old worker must keep the connection, not time it out.
    const { master, http } = await start({ workers: 1, blockFile, stopTimeout: 60_000, keepAliveTimeout: 120_000 });
    const conn = await Conn.open(http);
    const before = await conn.get('/before');
    fs.writeFileSync(blockFile, ''); // the next generation blocks its event loop once ready: it never answers
    master.proc.kill('SIGHUP');
    // Once the old worker drains, it has offered the connection (or is about
    // to) and waits for an answer that cannot come.
    await pollUntil(() => new RegExp(`\\[${before.pid}\\] worker info: draining`).test(master.stderr), 'the old worker to drain');
    const stuck = workerProcessesOf(master.pid).find((pid) => pid !== before.pid)!;
    fs.rmSync(blockFile);
    process.kill(stuck, 'SIGKILL');
    const after = await conn.get('/after').catch((error: Error) => {
      throw new Error(`${error.message}; the master's log:\n${master.stderr}`);
    });
    expect(after.pid).toBe(before.pid); // still the old worker, which kept it
    expect(after.connection).toBe('close'); // and drains it as before
    await pollUntil(() => conn.closed, 'the old worker to end the connection after that response');
  });
});

describe('raw TCP and WebSockets move with migrate()', () => {
  it('a raw TCP echo stream of 10 MB per connection across 5 reloads comes back byte-exact, never closed', async () => {
    const { master, echo } = await start();
    const CHUNK = 64 * 1024;
    const CHUNKS_PER_STEP = 16; // 5 reloads x 2 steps x 16 x 64 KiB = 10 MiB
    const streams = await Promise.all(Array.from({ length: 4 }, async (_, id) => {
      const socket = await new Promise<net.Socket>((resolve) => {
        const s = net.connect(echo, '127.0.0.1', () => resolve(s));
      });
      let received = 0;
      let closed = false;
      let mismatch = -1;
      const pattern = (offset: number) => (offset * 31 + id) & 0xff;
      socket.on('data', (chunk) => {
        for (let i = 0; i < chunk.length; i++) if (mismatch < 0 && chunk[i] !== pattern(received + i)) mismatch = received + i;
        received += chunk.length;
      });
      socket.on('close', () => (closed = true));
      let sent = 0;
      const step = async () => {
        for (let k = 0; k < CHUNKS_PER_STEP; k++) {
          const chunk = Buffer.alloc(CHUNK);
          for (let i = 0; i < CHUNK; i++) chunk[i] = pattern(sent + i);
          sent += CHUNK;
          socket.write(chunk);
          await pollUntil(() => received === sent || closed, 'the echo', 60_000);
        }
      };
      return { socket, step, state: () => ({ received, sent, closed, mismatch }) };
    }));
    for (let r = 0; r < 5; r++) {
      await Promise.all(streams.map((s) => s.step()));
      const reloading = reload(master);
      await Promise.all(streams.map((s) => s.step())); // while the reload drains and moves them
      await reloading;
    }
    for (const s of streams) {
      expect(s.state()).toEqual({ received: 10 * 1024 * 1024, sent: 10 * 1024 * 1024, closed: false, mismatch: -1 });
      s.socket.destroy();
    }
  });

  it('200 ws clients talking across 3 reloads: 0 closes, 0 lost messages, each connection\'s count continuous, served by every generation', async () => {
    const { master, http } = await start();
    const clients = await Promise.all(Array.from({ length: 200 }, () => new Promise<WebSocket>((resolve, reject) => {
      const ws = new WebSocket(`ws://127.0.0.1:${http}/`);
      ws.once('open', () => resolve(ws));
      ws.once('error', reject);
    })));
    const closes: number[] = [];
    const last = clients.map(() => ({ count: 0, pids: new Set<number>() }));
    const gaps: string[] = [];
    clients.forEach((ws, i) => {
      ws.on('close', (code) => closes.push(code));
      ws.on('message', (data) => {
        const { count, pid } = JSON.parse(String(data)) as { count: number; pid: number };
        if (count !== last[i].count + 1) gaps.push(`client ${i}: ${last[i].count} then ${count}`);
        last[i].count = count;
        last[i].pids.add(pid);
      });
    });
    let running = true;
    const talking = clients.map(async (ws, i) => {
      while (running) {
        const want = last[i].count + 1;
        ws.send('next');
        await pollUntil(() => last[i].count >= want || closes.length > 0, 'the answer', 60_000);
        if (closes.length > 0) return;
      }
    });
    for (let r = 0; r < 3; r++) await reload(master);
    running = false;
    await Promise.all(talking);
    expect(closes).toEqual([]);
    expect(gaps).toEqual([]);
    expect(last.every((l) => l.pids.size >= 3)).toBe(true); // the old generation, then at least two new ones
    for (const ws of clients) ws.terminate();
  });
});

describe('handover start', () => {
  it('an unmodified Express app: a keep-alive connection answers from the new generation after a reload', async () => {
    const { master } = await startApp(path.join(FIXTURES, 'express.js'), ['--workers', '1']);
    const port = await pollUntil(() => Number(/serving on \S*:(\d+)/.exec(master.stderr)?.[1]), 'the port', 120_000);
    const conn = await Conn.open(port);
    const before = await conn.get('/');
    master.proc.kill('SIGHUP');
    await pollUntil(() => /reload: generation 2: connections/.test(master.stderr), 'the reload to say what moved', 120_000);
    // (the log line comes on stderr, a pipe of its own: it may arrive after the event)
    await pollUntil(() => /reload: generation 2: connections 1 moved, 0 closed/.test(master.stderr) || undefined, "the master's log line on the 1 moved connection(s)");
    const after = await conn.get('/');
    expect(after.status).toBe(200);
    expect(after.pid).not.toBe(before.pid);
    expect(conn.closed).toBe(false);
    conn.socket.destroy();
  });
});
