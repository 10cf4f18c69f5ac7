// The native binding through its typed wrappers (src/native.ts): every
// syscall the master and workers rely on, its Node-style errors, and that it
// neither leaks fds nor blocks the event loop (invariants 7 and 10).
//
// Fd passing uses a Unix stream connection from a Node server with
// pauseOnConnect: the client end is a raw fd from connectUnix (no libuv reader
// that could swallow SCM_RIGHTS), the accepted end is a paused net.Socket whose
// fd is only ever used natively.
//
// Sensitivity, checked by hand: 33 one-line mutations of this file's
// expectations (wrong flag bits, errno sign, syscall, subject, dup == fd, no
// closeFd, a fresh socket instead of the received fd, the timer scheduled after
// the receive timeout, maxFds 3, a dropped closeFd in the 1000-cycle loop, one
// leaked dup among the 1000 timeouts, data before EOF, the fixture setting
// signal 0, ...) each failed the test it targets (the flag-bit and errno-sign
// mutations fail every test that uses them, 4 to 16 tests).
import { spawn, spawnSync } from 'node:child_process';
import { once } from 'node:events';
import * as fs from 'node:fs';
import * as net from 'node:net';
import * as os from 'node:os';
import * as path from 'node:path';
import * as readline from 'node:readline';
import * as util from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  bindTcp,
  bindUnix,
  closeFd,
  connectUnix,
  dup,
  fixMallocThresholds,
  localAddress,
  lockFile,
  peerCredentials,
  probeTcp,
  recvFds,
  sendDatagram,
  sendFds,
  sendWhole,
  setParentDeathSignal,
  setParentDeathStop,
  type SystemError,
} from '../src/platform/native';
import { isAlive, pollUntil } from './helpers/processes';

const O_NONBLOCK = 0o4000;
const O_CLOEXEC = 0o2000000;
const RECV_TIMEOUT = 10_000; // a receive that should succeed; only bounds a broken run

let dir: string;
beforeAll(() => {
  dir = fs.mkdtempSync(path.join(os.tmpdir(), 'handover-native-'));
});
afterAll(() => fs.rmSync(dir, { recursive: true, force: true }));

// --- small helpers ----------------------------------------------------------

/** The open-file flags of one of our fds, from /proc/self/fdinfo (octal). */
function fdFlags(fd: number): number {
  const match = /^flags:\s+([0-7]+)$/m.exec(fs.readFileSync(`/proc/self/fdinfo/${fd}`, 'utf8'));
  if (!match) throw new Error(`no flags line in /proc/self/fdinfo/${fd}`);
  return parseInt(match[1], 8);
}

/** What fd points at ('socket:[1234]'), or null when it is not open. */
function fdTarget(fd: number): string | null {
  try {
    return fs.readlinkSync(`/proc/self/fd/${fd}`);
  } catch {
    return null;
  }
}

function fdCount(): number {
  return fs.readdirSync('/proc/self/fd').length;
}

/** The error `fn` throws; fails the test if it throws nothing. */
function thrown(fn: () => unknown): SystemError {
  try {
    fn();
  } catch (error) {
    return error as SystemError;
  }
  throw new Error('expected the call to throw');
}

/** A Node-style system error: errno is minus the platform's errno for `code`, and the message names the subject. */
function expectSystemError(error: unknown, code: string, syscall: string, subject: string): void {
  expect(error).toBeInstanceOf(Error);
  const errnos = os.constants.errno as Record<string, number>;
  expect(error).toMatchObject({ code, syscall, errno: -errnos[code] });
  // the same errno -> code mapping Node's own system errors use
  expect(util.getSystemErrorName((error as SystemError).errno)).toBe(code);
  expect((error as Error).message).toContain(subject);
}

/** Connects with Node's own client and disconnects: proves something listens. */
async function canConnect(port: number, host: string): Promise<void> {
  const socket = net.connect({ host, port });
  try {
    await once(socket, 'connect');
  } finally {
    socket.destroy();
  }
}

/** Everything a server sends on one connection, until it ends it. */
async function readAll(port: number, host = '127.0.0.1'): Promise<string> {
  const socket = net.connect({ host, port });
  let text = '';
  socket.setEncoding('utf8').on('data', (chunk: string) => (text += chunk));
  try {
    await once(socket, 'end');
  } finally {
    socket.destroy();
  }
  return text;
}

let pairs = 0;

/** A connected Unix stream pair: `raw` from connectUnix, `peerFd` the paused accepted end. */
interface UnixPair {
  raw: number;
  peer: net.Socket;
  peerFd: number;
  /** Closes the peer (the raw end sees EOF). */
  closePeer(): Promise<void>;
  close(): Promise<void>;
}

async function unixPair(): Promise<UnixPair> {
  const socketPath = path.join(dir, `pair-${++pairs}.sock`);
  const server = net.createServer({ pauseOnConnect: true });
  server.listen(socketPath);
  await once(server, 'listening');
  const accepted = once(server, 'connection');
  const raw = connectUnix(socketPath);
  const [peer] = (await accepted) as [net.Socket];
  server.close(); // one connection is all we need; it outlives the server
  const peerFd = (peer as unknown as { _handle: { fd: number } })._handle.fd;
  let rawOpen = true;
  const closePeer = async () => {
    if (peer.destroyed) return;
    const closed = once(peer, 'close');
    peer.destroy();
    await closed;
  };
  return {
    raw,
    peer,
    peerFd,
    closePeer,
    async close() {
      if (rawOpen) closeFd(raw);
      rawOpen = false;
      await closePeer();
    },
  };
}

const ipv6Loopback =
  fs.existsSync('/proc/net/if_inet6') &&
  /^0{31}1 /m.test(fs.readFileSync('/proc/net/if_inet6', 'utf8'));

const hasPython = spawnSync('python3', ['--version']).status === 0;

/** A python3 process bound to a Unix datagram address; resolves once it is bound. */
async function datagramReceiver(address: string): Promise<{ datagram: Promise<Buffer>; kill(): void }> {
  const child = spawn('python3', [path.join(__dirname, 'fixtures', 'native-dgram-receiver.py'), address], {
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let stderr = '';
  child.stderr.setEncoding('utf8').on('data', (chunk: string) => (stderr += chunk));
  const lines = readline.createInterface({ input: child.stdout })[Symbol.asyncIterator]();
  const first = await lines.next();
  if (first.value !== 'ready') throw new Error(`datagram receiver did not start: ${stderr}`);
  const datagram = (async () => {
    const line = await lines.next();
    if (line.done) throw new Error(`datagram receiver exited without a datagram: ${stderr}`);
    return Buffer.from(line.value, 'hex');
  })();
  return { datagram, kill: () => child.kill('SIGKILL') };
}

// --- bindTcp / probeTcp -----------------------------------------------------

describe('bindTcp and probeTcp', () => {
  it('binds IPv4 port 0 to a real port that accepts connections; the fd is close-on-exec and non-blocking', async () => {
    const fd = bindTcp({ host: '127.0.0.1', port: 0 });
    try {
      const address = localAddress(fd);
      expect(address).toMatchObject({ family: 'IPv4', address: '127.0.0.1' });
      const port = (address as { port: number }).port;
      expect(port).toBeGreaterThan(0);
      await canConnect(port, '127.0.0.1'); // it listens, not merely binds
      expect(fdFlags(fd) & O_CLOEXEC).toBe(O_CLOEXEC);
      expect(fdFlags(fd) & O_NONBLOCK).toBe(O_NONBLOCK);
    } finally {
      closeFd(fd);
    }
  });

  it('binds IPv6 ::1 port 0 to a real port; errors name it as [::1]:PORT', async (ctx) => {
    ctx.skip(!ipv6Loopback, 'no IPv6 loopback (::1 is not in /proc/net/if_inet6)');
    const fd = bindTcp({ host: '::1', port: 0 });
    try {
      const address = localAddress(fd) as { family: string; address: string; port: number };
      expect(address).toMatchObject({ family: 'IPv6', address: '::1' });
      expect(address.port).toBeGreaterThan(0);
      await canConnect(address.port, '::1');
      expect(fdFlags(fd) & (O_CLOEXEC | O_NONBLOCK)).toBe(O_CLOEXEC | O_NONBLOCK);
      // an IPv6 address is named in brackets
      expectSystemError(thrown(() => bindTcp({ host: '::1', port: address.port })), 'EADDRINUSE', 'bind', `[::1]:${address.port}`);
    } finally {
      closeFd(fd);
    }
  });

  it('refuses a second bind of the same address without reusePort: EADDRINUSE naming it, no fd leaked', () => {
    const fd = bindTcp({ host: '127.0.0.1', port: 0 });
    try {
      const port = (localAddress(fd) as { port: number }).port;
      const before = fdCount();
      const error = thrown(() => bindTcp({ host: '127.0.0.1', port }));
      expectSystemError(error, 'EADDRINUSE', 'bind', `127.0.0.1:${port}`);
      expect(error.errno).toBeLessThan(0);
      expect(fdCount()).toBe(before); // the failed socket was closed
    } finally {
      closeFd(fd);
    }
  });

  it('binds the same address twice with reusePort (one SO_REUSEPORT group)', () => {
    const first = bindTcp({ host: '127.0.0.1', port: 0, reusePort: true });
    try {
      const port = (localAddress(first) as { port: number }).port;
      const second = bindTcp({ host: '127.0.0.1', port, reusePort: true });
      try {
        expect(second).not.toBe(first);
        expect(localAddress(second)).toEqual(localAddress(first));
        // a different socket on the same address, not a dup of the first
        expect(fdTarget(second)).not.toBe(fdTarget(first));
      } finally {
        closeFd(second);
      }
    } finally {
      closeFd(first);
    }
  });

  it('probeTcp throws EADDRINUSE while a listener (even a reusePort one) exists', () => {
    for (const reusePort of [false, true]) {
      const fd = bindTcp({ host: '127.0.0.1', port: 0, reusePort });
      try {
        const port = (localAddress(fd) as { port: number }).port;
        const before = fdCount();
        const error = thrown(() => probeTcp({ host: '127.0.0.1', port, reusePort: true }));
        expectSystemError(error, 'EADDRINUSE', 'bind', `127.0.0.1:${port}`);
        expect(fdCount()).toBe(before);
      } finally {
        closeFd(fd);
      }
    }
  });

  it('probeTcp succeeds when nothing listens and leaves the port free', () => {
    const fd = bindTcp({ host: '127.0.0.1', port: 0 });
    const port = (localAddress(fd) as { port: number }).port;
    closeFd(fd);
    const before = fdCount();
    expect(() => probeTcp({ host: '127.0.0.1', port })).not.toThrow();
    expect(fdCount()).toBe(before);
    // the probe held nothing: a plain bind (no reusePort) of the same port still works
    const again = bindTcp({ host: '127.0.0.1', port });
    closeFd(again);
  });

  it('rejects a host that is not a numeric address with EINVAL naming it', () => {
    const error = thrown(() => bindTcp({ host: 'localhost', port: 80 }));
    expectSystemError(error, 'EINVAL', 'bind', 'localhost:80');
    expect(error.message).toMatch(/not a numeric IPv4\/IPv6 address/);
    expectSystemError(thrown(() => probeTcp({ host: '127.0.0.1.5', port: 1 })), 'EINVAL', 'bind', '127.0.0.1.5:1');
    expect(() => bindTcp({ port: 0 } as never)).toThrow(TypeError);
  });

  it('rejects ports and backlogs that are not integers in range instead of wrapping them', () => {
    for (const port of [65536, -1, 2 ** 32 + 80, 0.5, Number.NaN, Number.POSITIVE_INFINITY]) {
      expect(() => bindTcp({ host: '127.0.0.1', port }), String(port)).toThrow(RangeError);
    }
    expect(() => bindTcp({ host: '127.0.0.1', port: 0, backlog: 0 })).toThrow(RangeError);
  });
});

// --- bindUnix ---------------------------------------------------------------

describe('bindUnix', () => {
  it('binds a path with the given file mode; the fd is close-on-exec and non-blocking', () => {
    for (const mode of [0o600, 0o660]) {
      const socketPath = path.join(dir, `mode-${mode.toString(8)}.sock`);
      const fd = bindUnix({ path: socketPath, mode });
      try {
        const stat = fs.statSync(socketPath);
        expect(stat.isSocket()).toBe(true);
        expect((stat.mode & 0o777).toString(8)).toBe(mode.toString(8));
        expect(localAddress(fd)).toEqual({ family: 'unix', path: socketPath });
        expect(fdFlags(fd) & (O_CLOEXEC | O_NONBLOCK)).toBe(O_CLOEXEC | O_NONBLOCK);
        closeFd(connectUnix(socketPath)); // it listens
      } finally {
        closeFd(fd);
      }
    }
  });

  it('fails with ENOENT naming the path when its directory is missing', () => {
    const socketPath = path.join(dir, 'no-such-dir', 'app.sock');
    const before = fdCount();
    expectSystemError(thrown(() => bindUnix({ path: socketPath })), 'ENOENT', 'bind', socketPath);
    expect(fdCount()).toBe(before);
  });

  it('fails with ENAMETOOLONG naming a path longer than sun_path', () => {
    const socketPath = path.join(dir, 'x'.repeat(120) + '.sock');
    expectSystemError(thrown(() => bindUnix({ path: socketPath })), 'ENAMETOOLONG', 'bind', socketPath);
  });

  it('fails with EINVAL on an empty path, saying it is empty', () => {
    const error = thrown(() => bindUnix({ path: '' }));
    expectSystemError(error, 'EINVAL', 'bind', 'empty Unix socket path');
    expect(error.message).not.toMatch(/at most/);
  });

  it('fails with EADDRINUSE on an existing socket file and leaves that file alone', () => {
    const socketPath = path.join(dir, 'taken.sock');
    const fd = bindUnix({ path: socketPath });
    try {
      expectSystemError(thrown(() => bindUnix({ path: socketPath })), 'EADDRINUSE', 'bind', socketPath);
      expect(fs.statSync(socketPath).isSocket()).toBe(true);
      closeFd(connectUnix(socketPath)); // the first listener still answers
    } finally {
      closeFd(fd);
    }
  });

  it('binds an abstract @name on linux', (ctx) => {
    ctx.skip(process.platform !== 'linux', 'the abstract namespace is linux-only');
    const name = `@handover-native-${process.pid}-${Date.now()}`;
    const fd = bindUnix({ path: name });
    try {
      expect(localAddress(fd)).toEqual({ family: 'unix', path: name });
      const client = connectUnix(name);
      closeFd(client);
      expectSystemError(thrown(() => bindUnix({ path: name })), 'EADDRINUSE', 'bind', name);
    } finally {
      closeFd(fd);
    }
  });
});

// --- dup / closeFd ----------------------------------------------------------

describe('dup and closeFd', () => {
  it('dup gives a different, close-on-exec fd for the same socket; closeFd closes only that copy', async () => {
    const fd = bindTcp({ host: '127.0.0.1', port: 0 });
    try {
      const copy = dup(fd);
      const socket = fdTarget(fd);
      expect(copy).not.toBe(fd);
      expect(fdTarget(copy)).toBe(socket); // same socket inode
      expect(localAddress(copy)).toEqual(localAddress(fd));
      expect(fdFlags(copy) & O_CLOEXEC).toBe(O_CLOEXEC);
      closeFd(copy);
      // gone (or, if another thread reused the number at once, something else)
      expect(fdTarget(copy)).not.toBe(socket);
      // the original still listens
      await canConnect((localAddress(fd) as { port: number }).port, '127.0.0.1');
    } finally {
      closeFd(fd);
    }
  });

  it('dup and closeFd of a bad fd throw EBADF naming the fd', () => {
    const bad = 1_000_000; // above any fd limit here, so never someone else's fd
    expectSystemError(thrown(() => dup(bad)), 'EBADF', 'dup', `fd ${bad}`);
    expectSystemError(thrown(() => closeFd(bad)), 'EBADF', 'close', `fd ${bad}`);
    expect(() => closeFd(-1)).toThrow(RangeError);
    expect(() => dup(2 ** 32 + 3)).toThrow(RangeError);
  });
});

// --- connectUnix / peerCredentials ------------------------------------------

describe('connectUnix and peerCredentials', () => {
  it('gives this process on both ends of a connection to a Node server', async () => {
    const socketPath = path.join(dir, 'creds.sock');
    const server = net.createServer({ pauseOnConnect: true });
    server.listen(socketPath);
    await once(server, 'listening');
    const accepted = once(server, 'connection');
    const client = connectUnix(socketPath);
    const [socket] = (await accepted) as [net.Socket];
    try {
      expect(fdFlags(client) & (O_CLOEXEC | O_NONBLOCK)).toBe(O_CLOEXEC | O_NONBLOCK);
      const me = { pid: process.pid, uid: process.geteuid!(), gid: process.getegid!() };
      const acceptedFd = (socket as unknown as { _handle: { fd: number } })._handle.fd;
      expect(peerCredentials(acceptedFd)).toEqual(me);
      expect(peerCredentials(client)).toEqual(me);
    } finally {
      closeFd(client);
      socket.destroy();
      server.close();
      await once(server, 'close');
    }
  });

  it('connectUnix fails with ENOENT / ECONNREFUSED naming the path', () => {
    const missing = path.join(dir, 'missing.sock');
    expectSystemError(thrown(() => connectUnix(missing)), 'ENOENT', 'connect', missing);
    const notListening = path.join(dir, 'plain-file');
    fs.writeFileSync(notListening, '');
    expectSystemError(thrown(() => connectUnix(notListening)), 'ECONNREFUSED', 'connect', notListening);
  });

  it('peerCredentials of an fd that is not a socket throws ENOTSOCK naming the fd', () => {
    const file = fs.openSync(__filename, 'r');
    try {
      expectSystemError(thrown(() => peerCredentials(file)), 'ENOTSOCK', 'getsockopt', `fd ${file}`);
    } finally {
      fs.closeSync(file);
    }
  });
});

// --- sendFds / recvFds ------------------------------------------------------

describe('sendFds and recvFds', () => {
  let pair: UnixPair;
  let listener: number;
  beforeAll(async () => {
    pair = await unixPair();
    listener = bindTcp({ host: '127.0.0.1', port: 0 });
  });
  afterAll(async () => {
    closeFd(listener);
    await pair.close();
  });

  it('passes a dup of a bindTcp listener that Node then serves', async () => {
    const port = (localAddress(listener) as { port: number }).port;
    const copy = dup(listener);
    expect(sendFds(pair.peerFd, Buffer.from('listen'), [copy])).toBe(6);
    closeFd(copy); // the sender's copy; the one in flight is the receiver's now
    const got = await recvFds(pair.raw, 64, 4, RECV_TIMEOUT);
    expect(got.data.toString()).toBe('listen');
    expect(got.fds).toHaveLength(1);
    expect(got.surplusClosed).toBe(0);
    expect(fdTarget(got.fds[0])).toBe(fdTarget(listener)); // the very same socket
    expect(fdFlags(got.fds[0]) & O_CLOEXEC).toBe(O_CLOEXEC);

    const server = net.createServer((socket) => socket.end('served from a received fd'));
    server.listen({ fd: got.fds[0] });
    await once(server, 'listening');
    try {
      expect((server.address() as net.AddressInfo).port).toBe(port);
      expect(await readAll(port)).toBe('served from a received fd');
    } finally {
      server.close(); // closes the received fd
      await once(server, 'close');
    }
  });

  it('waits on the event loop for a message sent after the receive started', async () => {
    const pending = recvFds(pair.raw, 64, 1, RECV_TIMEOUT); // nothing there yet: it must poll
    sendFds(pair.peerFd, Buffer.from('late'), [listener]);
    const got = await pending;
    expect(got.data.toString()).toBe('late');
    expect(got.fds).toHaveLength(1);
    expect(fdFlags(got.fds[0]) & O_CLOEXEC).toBe(O_CLOEXEC); // MSG_CMSG_CLOEXEC
    closeFd(got.fds[0]);
  });

  it('passes data alone (no fds)', async () => {
    expect(sendFds(pair.peerFd, Buffer.from('{"hello":1}\n'), [])).toBe(12);
    const got = await recvFds(pair.raw, 64, 4, RECV_TIMEOUT);
    expect(got).toEqual({ data: Buffer.from('{"hello":1}\n'), fds: [], surplusClosed: 0 });
  });

  it('rejects with ETIMEDOUT after the timeout while the event loop keeps running', async () => {
    const order: string[] = [];
    // Scheduled for 1 ms, before the 50 ms receive timeout: it fires first unless
    // the receive blocks the loop (then the rejection is seen first).
    const timer = setTimeout(() => order.push('timer'), 1);
    const error = await recvFds(pair.raw, 64, 1, 50).then(
      () => new Error('resolved'),
      (e: unknown) => e,
    );
    order.push('rejected');
    clearTimeout(timer);
    expectSystemError(error, 'ETIMEDOUT', 'recvmsg', `fd ${pair.raw}`);
    expect(order).toEqual(['timer', 'rejected']);
  });

  it('closes fds beyond maxFds on the receiving side', async () => {
    const before = fdCount();
    sendFds(pair.peerFd, Buffer.from('m'), [listener, listener, listener]);
    const got = await recvFds(pair.raw, 64, 1, RECV_TIMEOUT);
    expect(got.fds).toHaveLength(1);
    expect(got.surplusClosed).toBe(2);
    expect(fdCount()).toBe(before + 1);
    closeFd(got.fds[0]);
    expect(fdCount()).toBe(before);
  });

  it('rejects a truncated control message (MSG_CTRUNC) with EMSGSIZE and closes what arrived', async () => {
    const before = fdCount();
    sendFds(pair.peerFd, Buffer.from('t'), Array.from({ length: 20 }, () => listener));
    const error = await recvFds(pair.raw, 64, 1, RECV_TIMEOUT).then(
      () => new Error('resolved'),
      (e: unknown) => e,
    );
    expectSystemError(error, 'EMSGSIZE', 'recvmsg', 'MSG_CTRUNC');
    expect(fdCount()).toBe(before);
  });

  it('leaks no fd over 1000 send/receive cycles', async () => {
    const before = fdCount();
    for (let i = 0; i < 1000; i++) {
      // alternate the two receive paths: message already queued, and waiting for it
      let pending: Promise<{ fds: number[] }>;
      if (i % 2 === 0) {
        sendFds(pair.peerFd, Buffer.from('c'), [listener]);
        pending = recvFds(pair.raw, 16, 1, RECV_TIMEOUT);
      } else {
        pending = recvFds(pair.raw, 16, 1, RECV_TIMEOUT);
        sendFds(pair.peerFd, Buffer.from('c'), [listener]);
      }
      const got = await pending;
      if (got.fds.length !== 1) throw new Error(`cycle ${i}: received ${got.fds.length} fds`);
      closeFd(got.fds[0]);
    }
    expect(fdCount()).toBe(before);
  });

  it('leaks no fd over 1000 receives that time out', async () => {
    const before = fdCount();
    const codes = new Map<string, number>();
    for (let i = 0; i < 1000; i++) {
      const code = await recvFds(pair.raw, 16, 1, 1).then(
        () => 'resolved',
        (e: SystemError) => e.code,
      );
      codes.set(code, (codes.get(code) ?? 0) + 1);
    }
    expect(Object.fromEntries(codes)).toEqual({ ETIMEDOUT: 1000 });
    expect(fdCount()).toBe(before);
  });

  // Last in this group: it closes the shared pair's peer.
  it('resolves with empty data at EOF, while waiting and after; 1000 EOF receives leak nothing', async () => {
    const pending = recvFds(pair.raw, 64, 4, RECV_TIMEOUT);
    await pair.closePeer();
    expect(await pending).toEqual({ data: Buffer.alloc(0), fds: [], surplusClosed: 0 });
    const before = fdCount();
    for (let i = 0; i < 1000; i++) {
      const got = await recvFds(pair.raw, 64, 4, RECV_TIMEOUT);
      if (got.data.length !== 0 || got.fds.length !== 0) throw new Error(`receive ${i} after EOF got data`);
    }
    expect(fdCount()).toBe(before);
    // and sending to the closed peer is a Node-style EPIPE, not a SIGPIPE
    expectSystemError(thrown(() => sendFds(pair.raw, Buffer.from('x'), [])), 'EPIPE', 'sendmsg', `fd ${pair.raw}`);
  });

  it('validates its arguments', () => {
    expect(() => sendFds(listener, Buffer.alloc(0), [listener])).toThrow(TypeError);
    expect(() => sendFds(listener, Buffer.from('x'), [-1])).toThrow(RangeError);
    expect(() => recvFds(listener, 0, 1, 10)).toThrow(RangeError);
    expect(() => recvFds(listener, 2 ** 32 + 1, 1, 10)).toThrow(RangeError);
    expect(() => recvFds(listener, 16, 254, 10)).toThrow(RangeError);
    // every wait has a real timeout (invariant 10): no NaN, no infinity
    expect(() => recvFds(listener, 16, 1, Number.NaN)).toThrow(RangeError);
    expect(() => recvFds(listener, 16, 1, Number.POSITIVE_INFINITY)).toThrow(RangeError);
  });
});

// --- setParentDeathSignal ---------------------------------------------------

describe('setParentDeathSignal', () => {
  it('returns true on linux', (ctx) => {
    ctx.skip(process.platform !== 'linux', 'PR_SET_PDEATHSIG is linux-only');
    // signal 0 clears the setting: harmless for this test worker
    expect(setParentDeathSignal(0)).toBe(true);
    expectSystemError(thrown(() => setParentDeathSignal(1000)), 'EINVAL', 'prctl', 'PR_SET_PDEATHSIG');
  });

  it('kills a child whose parent exits (linux)', async (ctx) => {
    ctx.skip(process.platform !== 'linux', 'PR_SET_PDEATHSIG is linux-only');
    const parent = spawn(process.execPath, [path.join(__dirname, 'fixtures', 'native-pdeathsig.js')], {
      stdio: ['ignore', 'pipe', 'inherit'],
    });
    let report = '';
    parent.stdout.setEncoding('utf8').on('data', (chunk: string) => (report += chunk));
    const [[code]] = await Promise.all([once(parent, 'exit'), once(parent.stdout, 'end')]);
    expect(code).toBe(0);
    const [pidText, result] = report.trim().split(' ');
    const child = Number(pidText);
    try {
      expect(result).toBe('true');
      await pollUntil(() => !isAlive(child), 'the orphaned child to die of its parent-death signal');
    } finally {
      if (isAlive(child)) process.kill(child, 'SIGKILL');
    }
  });
});

// --- setParentDeathStop ----------------------------------------------------

describe('setParentDeathStop', () => {
  /** Runs the fixture in `mode`; returns the orphaned child's pid once its parent has exited. */
  async function orphan(mode: 'spin' | 'idle', file: string): Promise<number> {
    const parent = spawn(process.execPath, [path.join(__dirname, 'fixtures', 'native-pdeathstop.js'), mode, file], {
      stdio: ['ignore', 'pipe', 'inherit'],
    });
    let report = '';
    parent.stdout.setEncoding('utf8').on('data', (chunk: string) => (report += chunk));
    const [[code]] = await Promise.all([once(parent, 'exit'), once(parent.stdout, 'end')]);
    expect(code).toBe(0);
    const [pidText, result] = report.trim().split(' ');
    expect(result).toBe('true');
    return Number(pidText);
  }

  it('validates its arguments', (ctx) => {
    ctx.skip(process.platform !== 'linux', 'PR_SET_PDEATHSIG is linux-only');
    expect(() => setParentDeathStop(64, 1)).toThrow(RangeError);
    expect(() => setParentDeathStop(15, 0)).toThrow(RangeError);
    expect(() => setParentDeathStop(15, Number.NaN)).toThrow(RangeError);
  });

  it('ends an orphan whose event loop is blocked for good (the alarm)', async (ctx) => {
    ctx.skip(process.platform !== 'linux', 'PR_SET_PDEATHSIG is linux-only');
    const child = await orphan('spin', path.join(dir, 'spin-stopped'));
    try {
      await pollUntil(() => !isAlive(child), 'the orphan with a blocked loop to end', 30_000);
    } finally {
      if (isAlive(child)) process.kill(child, 'SIGKILL');
    }
  });

  it('raises the stop signal for an orphan whose loop turns, and still ends it', async (ctx) => {
    ctx.skip(process.platform !== 'linux', 'PR_SET_PDEATHSIG is linux-only');
    const file = path.join(dir, 'idle-stopped');
    const child = await orphan('idle', file);
    try {
      await pollUntil(() => fs.existsSync(file), 'the orphan\'s SIGTERM listener to run', 30_000);
      await pollUntil(() => !isAlive(child), 'the orphan that ignores its stop signal to end', 30_000);
    } finally {
      if (isAlive(child)) process.kill(child, 'SIGKILL');
    }
  });
});

// --- fixMallocThresholds ---------------------------------------------------

describe('fixMallocThresholds', () => {
  const glibc = Boolean((process.report.getReport() as { header?: { glibcVersionRuntime?: string } }).header?.glibcVersionRuntime);

  it('takes the thresholds under glibc, and says false under another allocator', () => {
    expect(fixMallocThresholds(128 * 1024)).toBe(glibc);
  });

  it('validates its argument: 4 KiB to 32 MiB (glibc refuses a larger mmap threshold)', () => {
    expect(() => fixMallocThresholds(0)).toThrow(RangeError);
    expect(() => fixMallocThresholds(64 << 20)).toThrow(RangeError);
    expect(() => fixMallocThresholds(Number.NaN)).toThrow(RangeError);
  });
});

// --- lockFile ---------------------------------------------------------------

describe('lockFile', () => {
  it('holds an exclusive lock until its fd closes, close-on-exec, and fails with EAGAIN naming the path while held', () => {
    const lockPath = path.join(dir, 'held.lock');
    const before = fdCount();
    const fd = lockFile(lockPath);
    expect(fs.statSync(lockPath).mode & 0o777).toBe(0o600);
    expect(fdFlags(fd) & O_CLOEXEC).toBe(O_CLOEXEC);
    // Another open file (here the same process, which flock treats alike) cannot take it.
    expectSystemError(thrown(() => lockFile(lockPath)), 'EAGAIN', 'flock', lockPath);
    expect(fdCount()).toBe(before + 1); // the failed attempt closed what it opened
    closeFd(fd);
    const again = lockFile(lockPath);
    closeFd(again);
    expect(fdCount()).toBe(before);
  });

  it('fails with ENOENT naming a path whose directory is missing', () => {
    const missing = path.join(dir, 'no-such-dir', 'lock');
    expectSystemError(thrown(() => lockFile(missing)), 'ENOENT', 'open', missing);
  });
});

// --- sendDatagram -----------------------------------------------------------

describe('sendDatagram', () => {
  it('delivers the bytes to a Unix datagram socket at a path', async (ctx) => {
    ctx.skip(!hasPython, 'python3 is not installed (it hosts the datagram receiver)');
    const socketPath = path.join(dir, 'notify.sock');
    const receiver = await datagramReceiver(socketPath);
    try {
      sendDatagram(socketPath, Buffer.from('READY=1\nSTATUS=ok'));
      expect((await receiver.datagram).toString()).toBe('READY=1\nSTATUS=ok');
    } finally {
      receiver.kill();
    }
  });

  it('delivers to an abstract @name on linux', async (ctx) => {
    ctx.skip(!hasPython, 'python3 is not installed (it hosts the datagram receiver)');
    ctx.skip(process.platform !== 'linux', 'the abstract namespace is linux-only');
    const name = `@handover-notify-${process.pid}-${Date.now()}`;
    const receiver = await datagramReceiver(name);
    try {
      sendDatagram(name, Buffer.from([0, 1, 2, 255]));
      expect([...(await receiver.datagram)]).toEqual([0, 1, 2, 255]);
    } finally {
      receiver.kill();
    }
  });

  it('fails with ENOENT naming a missing path, closing its socket', () => {
    const missing = path.join(dir, 'no-notify.sock');
    const before = fdCount();
    expectSystemError(thrown(() => sendDatagram(missing, Buffer.from('x'))), 'ENOENT', 'sendmsg', missing);
    expect(fdCount()).toBe(before);
  });
});

describe('sendWhole', () => {
  /** A loopback TCP connection: the client's fd, and the server's end, paused until read. */
  async function tcpPair(): Promise<{ client: net.Socket; fd: number; server: net.Socket; close: () => void }> {
    const listener = net.createServer({ pauseOnConnect: true });
    await new Promise<void>((resolve) => listener.listen(0, '127.0.0.1', resolve));
    const accepted = once(listener, 'connection');
    const client = net.connect((listener.address() as net.AddressInfo).port, '127.0.0.1');
    await once(client, 'connect');
    const [server] = (await accepted) as [net.Socket];
    const fd = (client as net.Socket & { _handle: { fd: number } })._handle.fd;
    return { client, fd, server, close: () => { client.destroy(); server.destroy(); listener.close(); } };
  }

  /** Everything the server's end receives until the client ends. */
  async function received(server: net.Socket): Promise<Buffer> {
    const chunks: Buffer[] = [];
    server.on('data', (chunk: Buffer) => chunks.push(chunk));
    server.resume();
    await once(server, 'end');
    return Buffer.concat(chunks);
  }

  it('writes all of a small buffer at once on an idle connection', async () => {
    const pair = await tcpPair();
    try {
      expect(sendWhole(pair.fd, Buffer.from('whole frame'))).toBe(true);
      pair.client.end();
      expect((await received(pair.server)).toString()).toBe('whole frame');
    } finally {
      pair.close();
    }
  });

  it('writes nothing and returns false while the kernel still holds unsent bytes', async () => {
    const pair = await tcpPair();
    try {
      const bulk = Buffer.alloc(1 << 20, 0x61);
      // the reader is paused: its window fills and the client's bytes wait in its kernel
      let written = bulk.length;
      while (pair.client.write(bulk)) written += bulk.length;
      expect(sendWhole(pair.fd, Buffer.from('XYZ'))).toBe(false);
      pair.client.end();
      const got = await received(pair.server);
      expect(got.length).toBe(written);
      expect(got.includes('XYZ')).toBe(false);
    } finally {
      pair.close();
    }
  });

  it('throws EBADF naming a bad fd, and validates its arguments', () => {
    const fd = dup(0);
    closeFd(fd);
    expectSystemError(thrown(() => sendWhole(fd, Buffer.from('x'))), 'EBADF', 'ioctl', `fd ${fd}`);
    expect(() => sendWhole(-1, Buffer.from('x'))).toThrow(RangeError);
    expect(() => sendWhole(3, 'x' as unknown as Buffer)).toThrow(TypeError);
  });
});
