// The README's examples, run as written (`node examples/<name>.js`, addresses
// from the environment variables they read): every endpoint answers, SIGHUP
// reloads (new worker pids answer, the old ones exit), and SIGTERM exits 0
// with nothing left running.
//
// Sensitivity, checked by hand on a private copy of the repository:
//   - dist/drain.js not emitting 'handover:drain' on raw sockets: the multi.js reload
//     test times out waiting for the echo connection's "bye";
//   - dist/master.js not installing the reload signal handlers: every test
//     fails (SIGHUP's default action kills the master);
//   - dist/listeners.js not unlinking the Unix socket at stop: the multi.js
//     test fails on the socket file left behind;
//   - with the socket event named 'drain' (as it first was) in dist/drain.js
//     and examples/multi.js, the 64 MB echo test fails: the worker crashes.
import { execFileSync } from 'node:child_process';
import * as crypto from 'node:crypto';
import { once } from 'node:events';
import * as fs from 'node:fs';
import * as http from 'node:http';
import * as https from 'node:https';
import * as net from 'node:net';
import * as path from 'node:path';
import * as tls from 'node:tls';
import { afterEach, describe, expect, it } from 'vitest';
import { Load } from './helpers/load';
import { type Master, ROOT, isAlive, ourProcesses, pollUntil, reapAll, startMaster, tempDir } from './helpers/processes';

const cleanups: (() => void)[] = [];
afterEach(async () => {
  await reapAll();
  for (const cleanup of cleanups.splice(0).reverse()) cleanup();
});

function scratch(): string {
  const dir = tempDir('handover-examples-');
  cleanups.push(() => fs.rmSync(dir, { recursive: true, force: true }));
  return dir;
}

/** Polls `text()` for `pattern` until the deadline; fails at once if the master exits meanwhile. */
async function waitText(master: Master, text: () => string, pattern: RegExp, what: string, timeoutMs = 30_000): Promise<RegExpMatchArray> {
  return pollUntil(() => {
    const match = text().match(pattern);
    if (match) return match;
    if (master.proc.exitCode !== null || master.proc.signalCode !== null) {
      throw new Error(`master exited while waiting for ${what}; stderr:\n${master.stderr}`);
    }
    return undefined;
  }, `${what}; stderr so far:\n${master.stderr}`, timeoutMs);
}

/** Everything the master prints on stdout (the helper keeps only JSON lines). */
function captureStdout(master: Master): () => string {
  let stdout = '';
  master.proc.stdout!.on('data', (chunk: string) => (stdout += chunk));
  return () => stdout;
}

/** Live child pids of `pid`, from /proc/<child>/stat. */
function childrenOf(pid: number): number[] {
  const children: number[] = [];
  for (const entry of fs.readdirSync('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    try {
      const stat = fs.readFileSync(`/proc/${entry}/stat`, 'utf8');
      const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
      if (Number(fields[1]) === pid && fields[0] !== 'Z') children.push(Number(entry));
    } catch {
      // gone
    }
  }
  return children.sort((a, b) => a - b);
}

interface Reply {
  status: number;
  headers: http.IncomingHttpHeaders;
  body: string;
}

/** One request on a fresh connection (no agent reuse). */
function request(options: http.RequestOptions | https.RequestOptions, secure = false): Promise<Reply> {
  return new Promise((resolve, reject) => {
    const req = (secure ? https : http).request({ agent: false, timeout: 20_000, ...options }, (res) => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (chunk: string) => (body += chunk));
      res.on('end', () => resolve({ status: res.statusCode!, headers: res.headers, body }));
      res.on('error', reject);
    });
    req.on('timeout', () => req.destroy(new Error('request timed out')));
    req.on('error', reject);
    req.end();
  });
}

/** A raw TCP connection that records what it receives and whether the server ended it. */
class RawClient {
  received = '';
  ended = false;
  error?: Error;
  readonly socket: net.Socket;
  readonly connected: Promise<void>;

  constructor(port: number) {
    this.socket = net.connect(port, '127.0.0.1');
    this.socket.setEncoding('utf8');
    this.socket.on('data', (chunk: string) => (this.received += chunk));
    this.socket.on('end', () => (this.ended = true));
    this.socket.on('error', (error) => (this.error = error));
    this.connected = new Promise((resolve, reject) => {
      this.socket.once('connect', () => resolve());
      this.socket.once('error', reject);
    });
    cleanups.push(() => this.socket.destroy());
  }
}

/** Sends SIGHUP and waits for the master's "generation N ready" line. */
async function reload(master: Master, generation: number): Promise<void> {
  master.proc.kill('SIGHUP');
  await waitText(master, () => master.stderr, new RegExp(`reload: generation ${generation} ready in \\d+ ms`), `reload to generation ${generation}`);
}

/** Asks until a worker not in `old` answers; returns that answer. */
async function answerFromNewWorker(ask: () => Promise<string>, old: number[]): Promise<number> {
  return pollUntil(async () => {
    const pid = Number(await ask());
    return old.includes(pid) ? undefined : pid;
  }, `a worker other than ${old.join(', ')} to answer`);
}

/** Resolves once the master's stdout and stderr have ended (its exit may be seen before their last bytes). */
async function outputDone(master: Master): Promise<void> {
  await Promise.all([master.proc.stdout!, master.proc.stderr!].map((s) => (s.readableEnded ? undefined : once(s, 'end'))));
}

async function expectCleanStop(master: Master): Promise<void> {
  const { code, signal } = await master.stop('SIGTERM');
  await outputDone(master);
  expect(signal, master.stderr).toBeNull();
  expect(code, master.stderr).toBe(0);
  expect(master.stderr).toMatch(/master info: stopped/);
  await pollUntil(() => ourProcesses().length === 0, 'every process of the example to exit', 10_000);
}

describe('examples/hello.js (the drop-in)', () => {
  it('serves, reloads on SIGHUP with no failed request, and exits 0 on SIGTERM', async () => {
    const master = await startMaster({ script: 'examples/hello.js', env: { ADDRESS: '127.0.0.1:0' }, waitReady: false });
    const [, port] = await waitText(master, () => master.stderr, /ready: generation 1 serving on 127\.0\.0\.1:(\d+)/, 'the ready line');
    const hello = () => request({ host: '127.0.0.1', port: Number(port), path: '/' });

    const first = await hello();
    expect(first.status).toBe(200);
    expect(first.body).toBe('hello\n');
    const pid1 = Number(first.headers['x-worker-pid']);
    expect(pid1).not.toBe(master.pid);
    expect(childrenOf(master.pid)).toEqual([pid1]);

    // keep-alive clients hammer it through the reload
    const load = new Load({ port: Number(port), connections: 8 });
    await pollUntil(() => load.stats.ok > 0, 'the load to get answers');
    await reload(master, 2);
    const pid2 = await answerFromNewWorker(async () => (await hello()).headers['x-worker-pid'] as string, [pid1]);
    await pollUntil(() => !isAlive(pid1), `old worker ${pid1} to exit`);
    expect(childrenOf(master.pid)).toEqual([pid2]);
    const okBefore = load.stats.ok;
    await pollUntil(() => load.stats.ok > okBefore, 'the load to get answers from generation 2');
    const stats = await load.stop();
    expect(stats.errors).toEqual({});
    expect(stats.failed).toBe(0);

    await expectCleanStop(master);
  });
});

describe('examples/multi.js (several servers, workers: 2)', () => {
  async function startMulti() {
    const dir = scratch();
    const socketPath = path.join(dir, 'multi.sock');
    const master = await startMaster({
      script: 'examples/multi.js',
      env: { API_ADDRESS: '127.0.0.1:0', ADMIN_ADDRESS: '127.0.0.1:0', ECHO_ADDRESS: '127.0.0.1:0', SOCKET_PATH: socketPath },
      waitReady: false,
    });
    const stdout = captureStdout(master);
    const [, api, admin, echo, unix] = await waitText(
      master,
      stdout,
      /serving on 127\.0\.0\.1:(\d+), 127\.0\.0\.1:(\d+), 127\.0\.0\.1:(\d+), unix:(\S+)\n/,
      'the "serving on" line',
    );
    expect(unix).toBe(socketPath);
    return { master, stdout, socketPath, api: Number(api), admin: Number(admin), echo: Number(echo) };
  }

  it('every endpoint answers, SIGHUP reloads all of them, a raw connection gets "bye", SIGTERM exits 0', async () => {
    const { master, stdout, socketPath, api, admin, echo } = await startMulti();
    const apiPid = async (options: http.RequestOptions) => {
      const reply = await request({ ...options, path: '/x?y=1' });
      expect(reply.status).toBe(200);
      const body = JSON.parse(reply.body) as { pid: number; url: string };
      expect(body.url).toBe('/x?y=1');
      return body.pid;
    };

    await pollUntil(() => childrenOf(master.pid).length === 2, 'two workers');
    const gen1 = childrenOf(master.pid);
    expect(gen1).toContain(await apiPid({ host: '127.0.0.1', port: api }));
    expect(gen1).toContain(await apiPid({ socketPath }));
    const adminReply = await request({ host: '127.0.0.1', port: admin, path: '/' });
    expect(adminReply.status).toBe(200);
    expect(adminReply.body).toBe('admin ok\n');

    // a raw echo connection, opened (and echoing) before the reload
    const raw = new RawClient(echo);
    await raw.connected;
    raw.socket.write('ping\n');
    await pollUntil(() => raw.received === 'ping\n', 'the echo of "ping"');

    await reload(master, 2);
    await waitText(master, stdout, /generation 2 ready in \d+ ms\n/, 'the example\'s "generation 2 ready" line');
    // the old worker asks the raw connection to finish; the example says bye and ends it
    await pollUntil(() => raw.ended, 'the raw connection to be ended by the old worker');
    expect(raw.received).toBe('ping\nbye\n');
    expect(raw.error).toBeUndefined();

    await pollUntil(() => gen1.every((pid) => !isAlive(pid)), 'generation 1 to exit');
    await pollUntil(() => childrenOf(master.pid).length === 2, 'two workers in generation 2');
    const gen2 = childrenOf(master.pid);
    expect(gen2.filter((pid) => gen1.includes(pid))).toEqual([]);
    expect(gen2).toContain(await apiPid({ host: '127.0.0.1', port: api }));
    expect(gen2).toContain(await apiPid({ socketPath }));
    expect((await request({ host: '127.0.0.1', port: admin, path: '/' })).body).toBe('admin ok\n');
    const fresh = new RawClient(echo);
    await fresh.connected;
    fresh.socket.write('again\n');
    await pollUntil(() => fresh.received === 'again\n', 'the echo of "again" from generation 2');
    fresh.socket.end();
    await pollUntil(() => fresh.ended, 'the second raw connection to close');

    await expectCleanStop(master);
    expect(fs.existsSync(socketPath), 'the Unix socket file is removed at stop').toBe(false);
  });

  // The echo server is `socket.pipe(socket)` with `socket.on('handover:drain', ...)`.
  // Were it 'drain', the event every Writable emits when its buffer has emptied
  // after write() returned false, so ordinary back-pressure (a client that
  // reads slower than it sends) triggers the example's goodbye mid-stream,
  // with no reload at all. The client here stops reading until the worker is
  // back-pressured (its kernel send queue holds >= 64 kB the client has not
  // taken, and >= 64 kB wait unread in its own receive queue), then reads
  // everything.
  it('the echo server echoes 64 MB intact to a client that reads late, with no reload and no worker crash', async () => {
    const { master, echo } = await startMulti();
    const size = 64 * 1024 * 1024;
    const raw = new RawClient(echo);
    await raw.connected;
    let received = 0;
    let wrong = false;
    raw.socket.setEncoding('latin1');
    raw.socket.removeAllListeners('data');
    raw.socket.on('data', (chunk: string) => {
      // the payload is all 'e'; anything else (such as "bye\n") is not an echo
      if (!wrong && /[^e]/.test(chunk)) wrong = true;
      received += chunk.length;
    });
    raw.socket.pause();
    raw.socket.write(Buffer.alloc(size, 'e'));
    const serverSide = { local: echo, remote: raw.socket.localPort! };
    await pollUntil(() => {
      const queues = tcpQueues(serverSide);
      return queues && queues.tx >= 64 * 1024 && queues.rx >= 64 * 1024;
    }, 'the worker to be back-pressured (64 kB in its send queue, 64 kB unread in its receive queue)');
    raw.socket.resume();
    await pollUntil(() => received >= size || raw.ended || raw.error, 'the echo of 64 MB, or the end of the connection');
    const crash = /worker pid \d+ .*(exited with code|killed by).*/.exec(master.stderr)?.[0];
    expect({ error: raw.error?.message, endedByServer: raw.ended, foreignBytes: wrong, received, crash }).toEqual({
      error: undefined, endedByServer: false, foreignBytes: false, received: size, crash: undefined,
    });
    raw.socket.end();
    await pollUntil(() => raw.ended, 'the echo connection to close');
    await expectCleanStop(master);
  });
});

/** tx/rx queue sizes of the IPv4 loopback TCP connection local:remote, from /proc/net/tcp. */
function tcpQueues({ local, remote }: { local: number; remote: number }): { tx: number; rx: number } | undefined {
  const hex = (port: number) => `0100007F:${port.toString(16).toUpperCase().padStart(4, '0')}`;
  for (const line of fs.readFileSync('/proc/net/tcp', 'utf8').split('\n').slice(1)) {
    const fields = line.trim().split(/\s+/);
    if (fields[1] === hex(local) && fields[2] === hex(remote)) {
      const [tx, rx] = fields[4].split(':').map((n) => parseInt(n, 16));
      return { tx, rx };
    }
  }
  return undefined;
}

describe('examples/tls.js (HTTPS)', () => {
  const certFile = path.join(ROOT, 'examples/tls/cert.pem');

  function fingerprint(pem: string | Buffer): string {
    return new crypto.X509Certificate(pem).fingerprint256;
  }

  /** One HTTPS request verified against `ca`; returns the body and the served certificate's fingerprint. */
  async function get(port: number, ca: Buffer): Promise<{ body: string; served: string }> {
    let served = '';
    const reply = await new Promise<Reply>((resolve, reject) => {
      const req = https.request({ host: '127.0.0.1', port, path: '/', ca, agent: false, timeout: 20_000 }, (res) => {
        served = (res.socket as tls.TLSSocket).getPeerCertificate().fingerprint256;
        let body = '';
        res.setEncoding('utf8');
        res.on('data', (chunk: string) => (body += chunk));
        res.on('end', () => resolve({ status: res.statusCode!, headers: res.headers, body }));
      });
      req.on('timeout', () => req.destroy(new Error('request timed out')));
      req.on('error', reject);
      req.end();
    });
    expect(reply.status).toBe(200);
    return { body: reply.body, served };
  }

  const pidOf = (body: string) => Number(/^hello over TLS from (\d+)\n$/.exec(body)?.[1]);

  it('answers over verified TLS, reloads on SIGHUP and exits 0 on SIGTERM', async () => {
    const master = await startMaster({ script: 'examples/tls.js', env: { ADDRESS: '127.0.0.1:0' }, waitReady: false });
    const [, port] = await waitText(master, () => master.stderr, /ready: generation 1 serving on 127\.0\.0\.1:(\d+)/, 'the ready line');
    const ca = fs.readFileSync(certFile);
    const first = await get(Number(port), ca);
    const pid1 = pidOf(first.body);
    expect(childrenOf(master.pid)).toEqual([pid1]);
    expect(first.served).toBe(fingerprint(ca));

    await reload(master, 2);
    const pid2 = await answerFromNewWorker(async () => String(pidOf((await get(Number(port), ca)).body)), [pid1]);
    await pollUntil(() => !isAlive(pid1), `old worker ${pid1} to exit`);
    expect(childrenOf(master.pid)).toEqual([pid2]);

    await expectCleanStop(master);
  });

  const openssl = (() => {
    try {
      execFileSync('openssl', ['version'], { stdio: 'ignore' });
      return true;
    } catch {
      return false;
    }
  })();
  if (!openssl) console.log('skipping the certificate renewal test: no openssl to make a new certificate');

  it.skipIf(!openssl)('a renewed certificate on disk is served after SIGHUP', async () => {
    const dir = scratch();
    const cert = path.join(dir, 'cert.pem');
    const key = path.join(dir, 'key.pem');
    fs.copyFileSync(certFile, cert);
    fs.copyFileSync(path.join(ROOT, 'examples/tls/key.pem'), key);
    const master = await startMaster({ script: 'examples/tls.js', env: { ADDRESS: '127.0.0.1:0', CERT: cert, KEY: key }, waitReady: false });
    const [, port] = await waitText(master, () => master.stderr, /ready: generation 1 serving on 127\.0\.0\.1:(\d+)/, 'the ready line');
    const old = fs.readFileSync(cert);
    const before = await get(Number(port), old);
    expect(before.served).toBe(fingerprint(old));
    const pid1 = pidOf(before.body);

    // renew: a new key and certificate for the same names, written in place
    execFileSync('openssl', [
      'req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-days', '2', '-subj', '/CN=localhost',
      '-addext', 'subjectAltName=DNS:localhost,IP:127.0.0.1', '-keyout', key, '-out', cert,
    ], { stdio: 'ignore' });
    const renewed = fs.readFileSync(cert);
    expect(fingerprint(renewed)).not.toBe(fingerprint(old));

    await reload(master, 2);
    // once generation 1 is gone, only the renewed certificate is served
    await pollUntil(() => !isAlive(pid1), `old worker ${pid1} to exit`);
    const after = await get(Number(port), renewed);
    expect(after.served).toBe(fingerprint(renewed));
    expect(pidOf(after.body)).not.toBe(pid1);
    await expectCleanStop(master);
  });
});
