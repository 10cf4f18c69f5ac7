// The worker's side of the control socket (src/worker/control-client.ts):
// frames the master sends right behind its answer to the hello, which the
// kernel may deliver in the same read as that answer, reach the worker in
// order (a `closing` racing `listeners` at a stop with stopDelay, a `cover`
// right after a sibling died). After the handshake the connection is read
// and written through the addon, not a net.Socket: frames a master that does
// not read cannot take yet wait and go out in order, end() flushes before it
// shuts down, and the connection's end (the master's, or a frame that makes
// no sense) emits 'close' once and closes the fd.
import * as fs from 'node:fs';
import * as net from 'node:net';
import * as path from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { FrameDecoder, type Message, encode } from '../src/protocol';
import { ControlClient } from '../src/worker/control-client';
import { cleanUp, onCleanUp, pollUntil, scratch } from './helpers/processes';
import { within } from './helpers/wait';

afterEach(cleanUp);

/**
 * A master that answers the hello with `frames`, all in one write; then
 * `afterHello` gets the connection and every frame the client sends after.
 */
async function fakeMaster(
  frames: Message[],
  afterHello: (conn: net.Socket, received: Message[]) => void = () => {},
): Promise<string> {
  const socketPath = path.join(scratch('handover-client-'), 'control.sock');
  const server = net.createServer((conn) => {
    const decoder = new FrameDecoder();
    const received: Message[] = [];
    let greeted = false;
    conn.on('data', (chunk) => {
      for (const message of decoder.push(chunk)) {
        if (greeted) {
          received.push(message);
        } else if (message.type === 'hello') {
          greeted = true;
          conn.write(Buffer.concat(frames.map(encode)));
          afterHello(conn, received);
        }
      }
    });
    conn.on('error', () => {});
  });
  await new Promise<void>((resolve) => server.listen(socketPath, resolve));
  onCleanUp(() => server.close());
  return socketPath;
}

const HELLO = { type: 'hello', token: 'ab'.repeat(32), pid: process.pid, slot: 0, generation: 1, addresses: [] } as const;

/** The fds open in this process. */
function openFds(): number {
  return fs.readdirSync('/proc/self/fd').length;
}

describe('the control client', () => {
  it('emits the frames that came in the same read as the answer to its hello, in order', async () => {
    const socketPath = await fakeMaster([
      { type: 'listeners', listeners: [] },
      { type: 'closing' },
      { type: 'cover', slot: 1 },
    ]);
    const { client } = await ControlClient.connect(socketPath, {
      type: 'hello', token: 'ab'.repeat(32), pid: process.pid, slot: 0, generation: 1, addresses: [],
    }, 10_000);
    onCleanUp(() => client.end());
    const seen: Message[] = [];
    await within(new Promise<void>((resolve) => client.on('message', (message) => {
      seen.push(message);
      if (seen.length === 2) resolve();
    })), 10_000, 'the two frames behind the answer');
    expect(seen).toEqual([{ type: 'closing' }, { type: 'cover', slot: 1 }]);
  });

  it('sends, in order, the frames a master that does not read could not take yet, once it reads again', async () => {
    let master!: { conn: net.Socket; received: Message[] };
    const socketPath = await fakeMaster([{ type: 'listeners', listeners: [] }], (conn, received) => {
      conn.pause(); // a stopped or busy master: the socket's buffers fill up
      master = { conn, received };
    });
    const { client } = await ControlClient.connect(socketPath, HELLO, 10_000);
    onCleanUp(() => client.end());
    // 64 KB frames: far more than the kernel buffers of a Unix socket hold
    const big = 'x'.repeat(60_000);
    const COUNT = 40;
    for (let i = 0; i < COUNT; i++) client.send({ type: 'failed', message: `${i} ${big}` });
    master.conn.resume();
    await pollUntil(() => master.received.length === COUNT, 'every frame at the master', 30_000);
    expect(master.received.map((m) => (m.type === 'failed' ? Number(m.message.split(' ')[0]) : -1)))
      .toEqual(Array.from({ length: COUNT }, (_, i) => i));
  });

  it('end() sends what is queued, then shuts down; the master reads every frame and then the end', async () => {
    let master!: { conn: net.Socket; received: Message[]; ended: Promise<number> };
    const socketPath = await fakeMaster([{ type: 'listeners', listeners: [] }], (conn, received) => {
      conn.pause();
      master = { conn, received, ended: new Promise((resolve) => conn.on('end', () => resolve(received.length))) };
    });
    const { client } = await ControlClient.connect(socketPath, HELLO, 10_000);
    const before = openFds();
    const big = 'y'.repeat(60_000);
    for (let i = 0; i < 10; i++) client.send({ type: 'failed', message: big });
    let flushed = false;
    client.end(() => (flushed = true));
    client.send({ type: 'failed', message: 'after end' }); // nothing after end()
    master.conn.resume();
    expect(await within(master.ended, 30_000, "the master's end of file")).toBe(10);
    await pollUntil(() => flushed, "end()'s callback");
    master.conn.end();
    // both ends close: the client's fd, and the fake master's (in this process too)
    await pollUntil(() => openFds() === before - 2, 'the control fd closed', 10_000);
  });

  it("emits 'close' once and closes its fd when the master ends the connection", async () => {
    let conn!: net.Socket;
    const socketPath = await fakeMaster([{ type: 'listeners', listeners: [] }], (c) => (conn = c));
    const { client } = await ControlClient.connect(socketPath, HELLO, 10_000);
    const before = openFds();
    let closes = 0;
    client.on('close', () => closes++);
    conn.destroy();
    await pollUntil(() => closes === 1, "the client's 'close'");
    expect(openFds()).toBe(before - 2); // the client's fd, and the fake master's (in this process too)
    client.send({ type: 'ready' }); // a gone connection: nothing, no throw
    await new Promise((resolve) => setTimeout(resolve, 100));
    expect(closes).toBe(1);
  });

  it("reports a frame that makes no sense as a protocol error, then ends the connection and emits 'close'", async () => {
    let master!: { conn: net.Socket; ended: Promise<void> };
    const socketPath = await fakeMaster([{ type: 'listeners', listeners: [] }], (conn) => {
      master = { conn, ended: new Promise((resolve) => conn.on('end', () => resolve())) };
    });
    const { client } = await ControlClient.connect(socketPath, HELLO, 10_000);
    const errors: Error[] = [];
    client.on('protocol-error', (error: Error) => errors.push(error));
    const closed = new Promise<void>((resolve) => client.on('close', () => resolve()));
    const junk = Buffer.from('{"not": "a frame"}');
    const frame = Buffer.alloc(4 + junk.length);
    frame.writeUInt32BE(junk.length, 0);
    junk.copy(frame, 4);
    master.conn.write(frame);
    await within(closed, 10_000, "the client's 'close'");
    expect(errors.length).toBe(1);
    await within(master.ended, 10_000, 'the end of file at the master');
  });

  it("end() waits for the master's end: a master that writes to it meanwhile still reads every frame sent before", async () => {
    let master!: { conn: net.Socket; received: Message[]; closed: Promise<void> };
    let pinging: NodeJS.Timeout | undefined;
    const socketPath = await fakeMaster([{ type: 'listeners', listeners: [] }], (conn, received) => {
      conn.pause(); // busy: the frames wait unread in its socket
      // and it keeps writing (heartbeats, metrics requests), as the master does to a draining worker
      pinging = setInterval(() => conn.writable && conn.write(encode({ type: 'ping' })), 5);
      master = { conn, received, closed: new Promise((resolve) => conn.on('close', () => resolve())) };
    });
    onCleanUp(() => clearInterval(pinging));
    const { client } = await ControlClient.connect(socketPath, HELLO, 10_000);
    for (let i = 0; i < 20; i++) client.send({ type: 'failed', message: String(i) });
    let flushed = false;
    client.end(() => (flushed = true));
    await new Promise((resolve) => setTimeout(resolve, 200)); // 40 pings written after the end
    expect(flushed).toBe(false); // the master has not read it all yet
    master.conn.resume();
    await within(master.closed, 10_000, "the master's side closing");
    expect(master.received.map((m) => (m.type === 'failed' ? m.message : m.type))).toEqual(Array.from({ length: 20 }, (_, i) => String(i)));
    await pollUntil(() => flushed, "end()'s callback, after the master's end");
  });
});
