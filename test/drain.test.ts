// Invariant 4, one client at a time, on the wire: draining never breaks a
// request. In-flight requests finish (and the old worker exits as soon as they
// have, not at stopTimeout); the next request on a keep-alive connection is
// answered with `Connection: close` and the server ends it with a FIN; raw and
// upgraded sockets get a 'handover:drain' event and close when the application says so;
// stopTimeout is the only hard deadline. test/fixtures/drain-app.js is the app;
// its workers print `in-flight` and `worker-drain` events, so the test waits
// for the state it needs instead of sleeping.
//
// The clients are raw sockets with a tiny HTTP/1.1 reader, so a test sees
// exactly which connection a response came on, its headers, and whether the
// server closed with a FIN ('end') or a reset ('error').
import * as net from 'node:net';
import { afterEach, describe, expect, it } from 'vitest';
import { type Master, type MasterEvent, isAlive, pollUntil, reapAll, startMaster } from './helpers/processes';
import { within } from './helpers/wait';

afterEach(async () => {
  for (const conn of Conn.all) conn.socket.destroy();
  Conn.all.clear();
  await reapAll();
});

const FIXTURE = 'test/fixtures/drain-app.js';

/** Events the drain fixture adds to the helper's (worker-exit's code is a number here). */
type Event = Omit<MasterEvent, 'code'> & { path?: string; code?: number | null; signal?: string | null };

function events(master: Master): Event[] {
  return master.events as unknown as Event[];
}

function waitEvent(master: Master, match: (e: Event) => boolean, what: string, timeoutMs?: number): Promise<Event> {
  return master.waitFor((e) => match(e as unknown as Event), what, timeoutMs) as unknown as Promise<Event>;
}

/** The port of the n-th bound address (0: the HTTP server, 1: the raw net.Server). */
function portOf(master: Master, index: number): number {
  const address = master.events.find((e) => e.event === 'ready')!.addresses![index];
  return Number(address.slice(address.lastIndexOf(':') + 1));
}

interface Response {
  status: number;
  headers: Record<string, string>;
  body: string;
}

/** Parses one complete HTTP/1.1 response at the start of `text`; undefined if incomplete. */
function parseResponse(text: string): { response: Response; length: number } | undefined {
  const end = text.indexOf('\r\n\r\n');
  if (end < 0) return undefined;
  const [statusLine, ...lines] = text.slice(0, end).split('\r\n');
  const status = Number(statusLine.split(' ')[1]);
  const headers: Record<string, string> = {};
  for (const line of lines) {
    const colon = line.indexOf(':');
    headers[line.slice(0, colon).trim().toLowerCase()] = line.slice(colon + 1).trim();
  }
  let offset = end + 4;
  if (status === 101) return { response: { status, headers, body: '' }, length: offset };
  if (headers['content-length'] !== undefined) {
    const length = Number(headers['content-length']);
    if (text.length < offset + length) return undefined;
    return { response: { status, headers, body: text.slice(offset, offset + length) }, length: offset + length };
  }
  if (headers['transfer-encoding'] === 'chunked') {
    let body = '';
    for (;;) {
      const lineEnd = text.indexOf('\r\n', offset);
      if (lineEnd < 0) return undefined;
      const size = parseInt(text.slice(offset, lineEnd), 16);
      if (text.length < lineEnd + 2 + size + 2) return undefined;
      body += text.slice(lineEnd + 2, lineEnd + 2 + size);
      offset = lineEnd + 2 + size + 2;
      if (size === 0) return { response: { status, headers, body }, length: offset };
    }
  }
  throw new Error(`cannot tell where this response ends: ${text.slice(0, end)}`);
}

/** One client connection; everything the server sends is buffered and read on demand. */
class Conn {
  /** Every connection a test opened, destroyed after each test. */
  static readonly all = new Set<Conn>();
  private text = '';
  /** The server closed its side with a FIN. */
  ended = false;
  closed = false;
  /** A socket error ('ECONNRESET' is a reset, not a FIN). */
  error?: string;
  private waiters: (() => void)[] = [];

  private constructor(readonly socket: net.Socket) {
    socket.setEncoding('latin1');
    socket.on('data', (chunk: string) => {
      this.text += chunk;
      this.wake();
    });
    socket.on('end', () => {
      this.ended = true;
      this.wake();
    });
    socket.on('error', (error: NodeJS.ErrnoException) => {
      this.error = error.code ?? error.message;
      this.wake();
    });
    socket.on('close', () => {
      this.closed = true;
      this.wake();
    });
  }

  static open(port: number): Promise<Conn> {
    return new Promise((resolve, reject) => {
      const socket = net.connect({ host: '127.0.0.1', port }, () => {
        socket.removeListener('error', reject);
        const conn = new Conn(socket);
        Conn.all.add(conn);
        resolve(conn);
      });
      socket.once('error', reject);
    });
  }

  private wake(): void {
    const waiters = this.waiters;
    this.waiters = [];
    for (const w of waiters) w();
  }

  /** Waits until `take` finds what it wants in the buffer (it may consume it). */
  async until<T>(take: () => T | undefined, what: string, timeoutMs = 30_000): Promise<T> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const value = take();
      if (value !== undefined) return value;
      if (this.closed) throw new Error(`connection closed (${this.error ?? 'FIN'}) while waiting for ${what}; got ${JSON.stringify(this.text)}`);
      const remaining = deadline - Date.now();
      if (remaining <= 0) throw new Error(`timed out waiting for ${what}; got ${JSON.stringify(this.text)}`);
      await new Promise<void>((resolve) => {
        const timer = setTimeout(resolve, remaining);
        this.waiters.push(() => {
          clearTimeout(timer);
          resolve();
        });
      });
    }
  }

  send(path: string, headers: Record<string, string> = {}): void {
    const lines = Object.entries({ host: '127.0.0.1', ...headers }).map(([k, v]) => `${k}: ${v}\r\n`);
    this.socket.write(`GET ${path} HTTP/1.1\r\n${lines.join('')}\r\n`);
  }

  response(what = 'a response', timeoutMs?: number): Promise<Response> {
    return this.until(() => {
      const parsed = parseResponse(this.text);
      if (!parsed) return undefined;
      this.text = this.text.slice(parsed.length);
      return parsed.response;
    }, what, timeoutMs);
  }

  request(path: string, headers?: Record<string, string>): Promise<Response> {
    this.send(path, headers);
    return this.response(`the response to ${path}`);
  }

  line(what = 'a line'): Promise<string> {
    return this.until(() => {
      const newline = this.text.indexOf('\n');
      if (newline < 0) return undefined;
      const line = this.text.slice(0, newline);
      this.text = this.text.slice(newline + 1);
      return line;
    }, what);
  }

  /** Resolves once the socket is fully closed, whichever side closed it. */
  async whenClosed(what: string, timeoutMs?: number): Promise<void> {
    await this.until(() => (this.closed ? true : undefined), what, timeoutMs).catch((error: Error) => {
      if (!this.closed) throw error;
    });
  }

  /** Closes the client side (FIN) and waits for the server to close its side. */
  async close(): Promise<void> {
    this.socket.end();
    await this.whenClosed('the connection to close');
  }

  /** Whatever arrived and was not read yet. */
  get unread(): string {
    return this.text;
  }
}

async function upgrade(port: number): Promise<{ conn: Conn; pid: number }> {
  const conn = await Conn.open(port);
  const response = await conn.request('/chat', { connection: 'Upgrade', upgrade: 'line-echo' });
  expect(response.status).toBe(101);
  return { conn, pid: Number(response.headers['x-pid']) };
}

/** Reloads and returns the pid of the new generation's (only) worker. */
async function reloadOk(master: Master): Promise<number> {
  const outcome = await master.reload();
  expect(outcome.event, outcome.error).toBe('reloaded');
  const pids = outcome.status!.workers.filter((w) => w.generation === outcome.generation).map((w) => w.pid);
  expect(pids).toHaveLength(1);
  return pids[0];
}

const exitOf = (master: Master, pid: number, timeoutMs?: number) =>
  waitEvent(master, (e) => e.event === 'worker-exit' && e.pid === pid, `worker ${pid} to exit`, timeoutMs);
const drainOf = (master: Master, pid: number) =>
  waitEvent(master, (e) => e.event === 'worker-drain' && e.pid === pid, `worker ${pid} to start draining`);
const inFlight = (master: Master, path: string, pid: number) =>
  waitEvent(master, (e) => e.event === 'in-flight' && e.path === path && e.pid === pid, `${path} to reach worker ${pid}`);

/**
 * stopTimeout of the fixture in the tests where the old worker must leave on
 * its own: no wait below can last that long, so an exit seen at all was not
 * the stopTimeout (the worker's, or the master's kill shortly after it).
 */
const LONG_STOP = 60_000;
const EXIT_DEADLINE = 20_000;

describe('drain', () => {
  it('a slow request in flight during a reload completes, and the old worker exits right after it', async () => {
    // migrate: false, the drain as it was (with migrate the connection moves after the response: migrate.test.ts)
    const master = await startMaster({ script: FIXTURE, fixture: { stopTimeout: LONG_STOP, migrate: false } });
    const conn = await Conn.open(master.port);
    // the connection belongs to generation 1 before the slow request goes out on it
    const first = await conn.request('/');
    const oldPid = Number(first.headers['x-pid']);
    expect(master.workerPids).toEqual([oldPid]);
    conn.send('/slow?afterDrain=1000');
    await inFlight(master, '/slow?afterDrain=1000', oldPid);

    const newPid = await reloadOk(master);
    expect(newPid).not.toBe(oldPid);
    await drainOf(master, oldPid);
    // the precondition: the drain began while the request was still in flight
    expect(conn.unread).toBe('');
    expect(isAlive(oldPid)).toBe(true);

    const slow = await conn.response('the slow response');
    expect(slow.status).toBe(200);
    expect(slow.body).toBe('slow done');
    expect(slow.headers['x-pid']).toBe(String(oldPid));

    // it left by itself (code 0, no signal), long before stopTimeout could have ended it
    const exit = await exitOf(master, oldPid, EXIT_DEADLINE);
    expect({ code: exit.code, signal: exit.signal }).toEqual({ code: 0, signal: null });
    await pollUntil(() => !isAlive(oldPid), `worker ${oldPid} to be gone`, 5_000);
    await conn.whenClosed('the server to close the connection');
    expect(conn.error).toBeUndefined();

    const fresh = await Conn.open(master.port);
    const next = await fresh.request('/');
    expect(next.status).toBe(200);
    expect(next.headers['x-pid']).toBe(String(newPid));
    await fresh.close();
    expect((await master.stop()).code).toBe(0);
  });

  it('stopTimeout ends a request that never finishes; the new generation serves', async () => {
    const master = await startMaster({ script: FIXTURE, fixture: { stopTimeout: 1500 } });
    const hanging = await Conn.open(master.port);
    hanging.send('/hang');
    // headers and the first chunk: the request is in the old worker's hands
    await hanging.until(() => (hanging.unread.includes('started') ? true : undefined), 'the /hang response to start');
    const oldPid = Number(/x-pid: (\d+)/i.exec(hanging.unread)![1]);
    expect(master.workerPids).toEqual([oldPid]);

    const newPid = await reloadOk(master);
    await drainOf(master, oldPid);
    // no request ever ends, so only stopTimeout (or the master's kill right after it) can end this worker
    await exitOf(master, oldPid);
    await pollUntil(() => !isAlive(oldPid), `worker ${oldPid} to be gone`, 5_000);
    await hanging.whenClosed('the hanging connection to be closed');
    expect(hanging.unread).not.toMatch(/\r\n0\r\n\r\n$/); // it was cut, not completed

    const fresh = await Conn.open(master.port);
    const next = await fresh.request('/');
    expect(next.status).toBe(200);
    expect(next.headers['x-pid']).toBe(String(newPid));
    expect(isAlive(master.pid)).toBe(true);
    await fresh.close();
    expect((await master.stop()).code).toBe(0);
  });

  it('answers with Connection: close: the next request on an idle keep-alive connection, and one in flight', async () => {
    // migrate: false, the drain as it was (with migrate both connections move: migrate.test.ts)
    const master = await startMaster({ script: FIXTURE, fixture: { stopTimeout: LONG_STOP, migrate: false } });
    const idle = await Conn.open(master.port);
    const busy = await Conn.open(master.port);
    const before = await idle.request('/');
    const oldPid = Number(before.headers['x-pid']);
    expect(before.headers.connection).toBe('keep-alive');
    expect((await busy.request('/')).headers['x-pid']).toBe(String(oldPid));
    busy.send('/slow?afterDrain=1000');
    await inFlight(master, '/slow?afterDrain=1000', oldPid);

    const newPid = await reloadOk(master);
    await drainOf(master, oldPid);
    expect(busy.unread).toBe(''); // still in flight: its headers are not sent yet
    expect(idle.closed).toBe(false); // draining did not close the idle connection

    // the idle connection's next request: served by the old worker, then closed with a FIN
    const after = await idle.request('/');
    expect(after.status).toBe(200);
    expect(after.headers['x-pid']).toBe(String(oldPid));
    expect(after.headers.connection).toBe('close');
    await idle.whenClosed('the server to end the idle connection');
    expect(idle.ended).toBe(true);
    expect(idle.error).toBeUndefined();

    const slow = await busy.response('the slow response');
    expect(slow.status).toBe(200);
    expect(slow.body).toBe('slow done');
    expect(slow.headers.connection).toBe('close');
    await busy.whenClosed('the server to end the busy connection');
    expect(busy.ended).toBe(true);
    expect(busy.error).toBeUndefined();

    // with both connections closed the old worker leaves by itself
    const exit = await exitOf(master, oldPid, EXIT_DEADLINE);
    expect({ code: exit.code, signal: exit.signal }).toEqual({ code: 0, signal: null });
    const fresh = await Conn.open(master.port);
    const next = await fresh.request('/');
    expect(next.headers['x-pid']).toBe(String(newPid));
    expect(next.headers.connection).toBe('keep-alive');
    await fresh.close();
    expect((await master.stop()).code).toBe(0);
  });

  it('a raw net.Server: open sockets get a drain event, new connections go to the new generation', async () => {
    const master = await startMaster({ script: FIXTURE, fixture: { stopTimeout: LONG_STOP } });
    const port = portOf(master, 1);
    const conn = await Conn.open(port);
    const oldPid = master.workerPids[0];
    expect(await conn.line('the greeting')).toBe(`hello ${oldPid}`);
    conn.socket.write('ping\n');
    expect(await conn.line('the echo')).toBe(`echo ${oldPid} ping`);

    const newPid = await reloadOk(master);
    // the application's goodbye on 'handover:drain', then a FIN
    expect(await conn.line('the goodbye')).toBe('bye');
    await conn.whenClosed('the server to end the raw connection');
    expect(conn.ended).toBe(true);
    expect(conn.error).toBeUndefined();

    const next = await Conn.open(port);
    expect(await next.line('the greeting')).toBe(`hello ${newPid}`);
    const exit = await exitOf(master, oldPid, EXIT_DEADLINE);
    expect({ code: exit.code, signal: exit.signal }).toEqual({ code: 0, signal: null });
    next.socket.write('quit\n');
    expect(await next.line('the goodbye')).toBe('bye');
    expect((await master.stop()).code).toBe(0);
  });

  it('an upgraded socket gets a drain event and stays open until the application ends it', async () => {
    const master = await startMaster({ script: FIXTURE, fixture: { stopTimeout: LONG_STOP } });
    const old = await upgrade(master.port);
    expect(master.workerPids).toEqual([old.pid]);
    old.conn.socket.write('ping\n');
    expect(await old.conn.line('the echo')).toBe(`echo ${old.pid} ping`);

    const newPid = await reloadOk(master);
    expect(await old.conn.line('the drain notice')).toBe('draining');
    // still open and still served by the old worker, which is still there
    old.conn.socket.write('ping\n');
    expect(await old.conn.line('the echo after the drain')).toBe(`echo ${old.pid} ping`);
    expect(isAlive(old.pid)).toBe(true);
    expect(events(master).some((e) => e.event === 'worker-exit' && e.pid === old.pid)).toBe(false);

    // a new upgrade is the new generation's
    const fresh = await upgrade(master.port);
    expect(fresh.pid).toBe(newPid);
    fresh.conn.socket.write('ping\n');
    expect(await fresh.conn.line('the echo')).toBe(`echo ${newPid} ping`);

    // the application ends the old one (here: the client asks it to); then the old worker leaves
    old.conn.socket.write('quit\n');
    expect(await old.conn.line('the goodbye')).toBe('bye');
    await old.conn.whenClosed('the server to end the upgraded connection');
    expect(old.conn.ended).toBe(true);
    expect(old.conn.error).toBeUndefined();
    const exit = await exitOf(master, old.pid, EXIT_DEADLINE);
    expect({ code: exit.code, signal: exit.signal }).toEqual({ code: 0, signal: null });

    fresh.conn.socket.write('quit\n');
    expect(await fresh.conn.line('the goodbye')).toBe('bye');
    expect((await master.stop()).code).toBe(0);
  });

  it('stop (SIGTERM) with a slow request in flight: it completes, then the master exits 0', async () => {
    const master = await startMaster({ script: FIXTURE, fixture: { stopTimeout: LONG_STOP } });
    const conn = await Conn.open(master.port);
    const pid = Number((await conn.request('/')).headers['x-pid']);
    conn.send('/slow?afterDrain=1000');
    await inFlight(master, '/slow?afterDrain=1000', pid);

    let exited = false;
    void master.exited.then(() => (exited = true));
    master.proc.kill('SIGTERM');
    await drainOf(master, pid);
    expect(conn.unread).toBe(''); // still in flight when the stop began

    const slow = await conn.response('the slow response');
    expect(exited).toBe(false);
    expect(slow.status).toBe(200);
    expect(slow.body).toBe('slow done');
    expect(slow.headers['x-pid']).toBe(String(pid));
    expect(slow.headers.connection).toBe('close');

    expect(await within(master.exited, EXIT_DEADLINE, 'the master to exit')).toEqual({ code: 0, signal: null });
    expect(events(master).some((e) => e.event === 'stop')).toBe(true);
    expect(isAlive(pid)).toBe(false);
  });
});
