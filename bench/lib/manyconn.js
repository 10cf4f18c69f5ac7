// The client of the many-connections scenario, a child process run under a
// raised fd limit (bash -c 'ulimit -n ...; exec node manyconn.js') and driven
// by the parent over IPC:
//   {cmd:'open', port, count, concurrency}  open `count` keep-alive connections, one GET each, keep them idle
//   {cmd:'fresh', count}                    new connections, one GET each (who serves them now?)
//   {cmd:'again'}                           one more GET on every idle connection; expect 200 + Connection: close + FIN
//   {cmd:'exit'}
// Raw sockets and a minimal HTTP/1.1 parser: 10,000 http.Agents would measure the client, not the server.
const net = require('node:net');

let port = 0;
const idle = [];

class Conn {
  constructor() {
    this.socket = net.connect(port, '127.0.0.1');
    this.socket.setNoDelay(true);
    this.buf = Buffer.alloc(0);
    this.ended = false;
    this.pending = undefined;
    this.socket.on('data', (chunk) => {
      this.buf = Buffer.concat([this.buf, chunk]);
      this.parse();
    });
    this.socket.on('end', () => {
      this.ended = true;
      this.onEnd?.();
      this.fail('closed before a response');
    });
    this.socket.on('error', (e) => this.fail(e.code || e.message));
    this.socket.on('close', () => this.fail('closed before a response'));
  }

  fail(code) {
    const p = this.pending;
    this.pending = undefined;
    p?.reject(Object.assign(new Error(code), { code }));
  }

  parse() {
    if (!this.pending) return;
    const end = this.buf.indexOf('\r\n\r\n');
    if (end < 0) return;
    const head = this.buf.subarray(0, end).toString('latin1').split('\r\n');
    const headers = {};
    for (const line of head.slice(1)) {
      const i = line.indexOf(':');
      headers[line.slice(0, i).trim().toLowerCase()] = line.slice(i + 1).trim();
    }
    const length = Number(headers['content-length'] || 0);
    if (this.buf.length < end + 4 + length) return;
    this.buf = this.buf.subarray(end + 4 + length);
    const p = this.pending;
    this.pending = undefined;
    p.resolve({ status: Number(head[0].split(' ')[1]), headers });
  }

  request(timeoutMs = 20_000) {
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => this.fail('timeout'), timeoutMs);
      this.pending = { resolve: (r) => (clearTimeout(timer), resolve(r)), reject: (e) => (clearTimeout(timer), reject(e)) };
      if (this.socket.destroyed || this.ended) return this.fail('closed before the request');
      this.socket.write('GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n');
    });
  }

  /** Resolves true when the server ends the connection (FIN) within timeoutMs. */
  serverCloses(timeoutMs = 5_000) {
    if (this.ended) return Promise.resolve(true);
    return new Promise((resolve) => {
      const timer = setTimeout(() => resolve(false), timeoutMs);
      this.onEnd = () => (clearTimeout(timer), resolve(true));
    });
  }
}

/** Runs `task(i)` for i < count with at most `concurrency` at once; tallies ok/errors/pids. */
async function pool(count, concurrency, task) {
  const tally = { ok: 0, errors: {}, pids: {} };
  let next = 0;
  async function lane() {
    while (next < count) {
      const i = next++;
      try {
        const pid = await task(i);
        tally.ok++;
        tally.pids[pid] = (tally.pids[pid] || 0) + 1;
      } catch (e) {
        tally.errors[e.code || e.message] = (tally.errors[e.code || e.message] || 0) + 1;
      }
    }
  }
  await Promise.all(Array.from({ length: Math.min(concurrency, count) }, lane));
  return tally;
}

async function handle(m) {
  const t0 = Date.now();
  if (m.cmd === 'open') {
    port = m.port;
    const tally = await pool(m.count, m.concurrency || 200, async () => {
      const c = new Conn();
      const r = await c.request().catch((e) => (c.socket.destroy(), Promise.reject(e)));
      if (r.status !== 200) throw Object.assign(new Error(`HTTP ${r.status}`), { code: `HTTP ${r.status}` });
      if (/close/i.test(r.headers.connection || '')) throw Object.assign(new Error('Connection: close'), { code: 'closed by the server at once' });
      idle.push(c);
      return r.headers['x-worker-pid'];
    });
    return { ...tally, ms: Date.now() - t0 };
  }
  if (m.cmd === 'fresh') {
    return pool(m.count, 50, async () => {
      const c = new Conn();
      const r = await c.request();
      c.socket.end();
      if (r.status !== 200) throw Object.assign(new Error(`HTTP ${r.status}`), { code: `HTTP ${r.status}` });
      return r.headers['x-worker-pid'];
    });
  }
  if (m.cmd === 'again') {
    let closeHeader = 0;
    let closedByServer = 0;
    const tally = await pool(idle.length, 500, async (i) => {
      const c = idle[i];
      const r = await c.request();
      if (r.status !== 200) throw Object.assign(new Error(`HTTP ${r.status}`), { code: `HTTP ${r.status}` });
      if (/close/i.test(r.headers.connection || '')) closeHeader++;
      if (await c.serverCloses()) closedByServer++;
      return r.headers['x-worker-pid'];
    });
    for (const c of idle) c.socket.destroy();
    idle.length = 0;
    return { ...tally, closeHeader, closedByServer, ms: Date.now() - t0 };
  }
  if (m.cmd === 'exit') {
    for (const c of idle) c.socket.destroy();
    setImmediate(() => process.exit(0));
    return {};
  }
  throw new Error(`unknown command ${m.cmd}`);
}

process.on('message', (m) => {
  handle(m).then(
    (result) => process.send({ result }),
    (e) => process.send({ error: e.message }),
  );
});
process.on('disconnect', () => process.exit(0));
process.send({ ready: true });
