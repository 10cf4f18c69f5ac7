// Idle keep-alive connections across reloads (issue 20): does a reload cost
// the clients their connections? For each server, CONNECTIONS idle keep-alive
// connections (keepAliveTimeout 600 s, workers 2), then RELOADS reloads; after
// each one every connection sends its next request. A connection the server
// closed (FIN, `Connection: close`, a reset) reconnects and asks again.
// Counted per reload: answered on the same connection (moved), closed by the
// server, reconnects, failures, the first request's p99 (send to last byte),
// the client's CPU for that wave, and the time from the reload signal until
// every worker of the old generation has exited.
//
//   node bench/migrate.js [--connections 10000] [--reloads 5] [--servers handover,handover-no-migrate,cluster]
//   node bench/migrate.js --websockets 2000 [--reloads 5]
//
// --websockets: N `ws` clients of test/fixtures/migrate-app.js (workers 2), each
// sending a message after every reload: with migrate() and adoptWebSocket(),
// and with the application closing them on 'handover:drain' (1001, today's
// way); a closed client reconnects and sends again.
//
// The client holds every connection in this process (raw sockets, a minimal
// HTTP/1.1 parser); the fd limit must allow them (`ulimit -n`, checked).
// Traffic goes to 127.0.0.1 only.
const { spawn, execFileSync } = require('node:child_process');
const fs = require('node:fs');
const net = require('node:net');
const path = require('node:path');

const ROOT = path.join(__dirname, '..');
const args = process.argv.slice(2);
const flag = (name, fallback) => {
  const i = args.indexOf(`--${name}`);
  return i >= 0 ? args[i + 1] : fallback;
};
const CONNECTIONS = Number(flag('connections', 10_000));
const RELOADS = Number(flag('reloads', 5));
const SERVERS = flag('servers', 'handover,handover-no-migrate,cluster').split(',');

const limit = Number(execFileSync('bash', ['-c', 'ulimit -n']).toString().trim());
if (limit < CONNECTIONS + 1000) {
  console.error(`ulimit -n is ${limit}: ${CONNECTIONS} connections (and reconnects) need at least ${CONNECTIONS + 1000} (a closed one is let go before its reconnect); raise it (ulimit -n ${CONNECTIONS + 1000}) or pass --connections`);
  process.exit(1);
}

function freePort() {
  return new Promise((resolve) => {
    const s = net.createServer().listen(0, '127.0.0.1', () => {
      const { port } = s.address();
      s.close(() => resolve(port));
    });
  });
}

function childrenOf(pid) {
  try {
    return fs.readFileSync(`/proc/${pid}/task/${pid}/children`, 'utf8').trim().split(/\s+/).filter(Boolean).map(Number);
  } catch {
    return [];
  }
}

const alive = (pid) => {
  try {
    return !/^\d+ \(.*\) Z/.test(fs.readFileSync(`/proc/${pid}/stat`, 'utf8'));
  } catch {
    return false;
  }
};

async function startServer(name) {
  const port = await freePort();
  const env = { ...process.env, WORKERS: '2', KEEPALIVE_MS: '600000', PORT: String(port), ADDRESS: `127.0.0.1:${port}` };
  const script = name === 'cluster' ? 'bench/peers/cluster-rolling.js' : 'bench/apps/handover.js';
  const proc = spawn(process.execPath, [path.join(ROOT, script)], {
    cwd: ROOT, env: { ...env, ...(name === 'handover-no-migrate' ? { NO_MIGRATE: '1' } : {}) }, stdio: ['ignore', 'ignore', 'pipe'],
  });
  let stderr = '';
  proc.stderr.setEncoding('utf8').on('data', (chunk) => (stderr += chunk));
  const server = { name, proc, port, log: () => stderr, mark: 0 };
  await until(() => /ready: generation 1 serving/.test(stderr), 'the server to be ready', server);
  return server;
}

async function until(check, what, server, ms = 120_000) {
  const deadline = Date.now() + ms;
  while (!check()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}; output:\n${server?.log().slice(-2000)}`);
    await new Promise((resolve) => setTimeout(resolve, 10));
  }
}

class Conn {
  constructor(port) {
    this.port = port;
    this.buf = Buffer.alloc(0);
    this.closed = false;
    this.socket = net.connect(port, '127.0.0.1');
    this.socket.on('data', (chunk) => {
      this.buf = this.buf.length ? Buffer.concat([this.buf, chunk]) : chunk;
      this.parse();
    });
    const gone = (e) => {
      this.closed = true;
      const p = this.pending;
      this.pending = undefined;
      p?.reject(e instanceof Error ? e : new Error('closed'));
    };
    this.socket.on('end', gone);
    this.socket.on('error', gone);
    this.socket.on('close', gone);
  }

  parse() {
    const end = this.buf.indexOf('\r\n\r\n');
    if (!this.pending || end < 0) return;
    const head = this.buf.subarray(0, end).toString('latin1');
    const length = Number(/content-length: *(\d+)/i.exec(head)?.[1] ?? 0);
    if (this.buf.length < end + 4 + length) return;
    this.buf = this.buf.subarray(end + 4 + length);
    const p = this.pending;
    this.pending = undefined;
    p.resolve({ close: /connection: *close/i.test(head) });
  }

  get() {
    return new Promise((resolve, reject) => {
      if (this.closed) return reject(new Error('closed'));
      this.pending = { resolve, reject };
      this.socket.write('GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n');
    });
  }
}

async function pool(items, concurrency, task) {
  let next = 0;
  await Promise.all(Array.from({ length: Math.min(concurrency, items.length) }, async () => {
    while (next < items.length) await task(items[next++], next - 1);
  }));
}

const p99 = (values) => {
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.min(sorted.length - 1, Math.floor(sorted.length * 0.99))] ?? 0;
};

const started = new Set();
process.on('exit', () => {
  for (const proc of started) proc.kill('SIGKILL');
});

async function run(name) {
  const server = await startServer(name);
  started.add(server.proc);
  // Opened 200 at a time; one refused or reset while the accept queue is full tries again.
  const conns = [];
  await pool(Array.from({ length: CONNECTIONS }, (_, i) => i), 200, async (i) => {
    for (let attempt = 0; ; attempt++) {
      conns[i] = new Conn(server.port);
      try {
        return await conns[i].get();
      } catch (error) {
        conns[i].socket.destroy();
        if (attempt >= 5) throw error;
      }
    }
  });
  const rows = [];
  for (let r = 1; r <= RELOADS; r++) {
    const old = childrenOf(server.proc.pid);
    const before = (server.log().match(/reload: generation \d+ ready/g) ?? []).length;
    const t0 = Date.now();
    server.proc.kill('SIGHUP');
    await until(() => (server.log().match(/reload: generation \d+ ready/g) ?? []).length > before, `reload ${r}`, server);
    // handover says what moved once the drained workers have reported; the cluster has no such line
    if (name.startsWith('handover')) await until(() => (server.log().match(/connections \d+ moved/g) ?? []).length >= r, `reload ${r}'s moves`, server);
    const exited = until(() => old.every((pid) => !alive(pid)), 'the old generation to exit', server, 60_000).then(() => Date.now() - t0);
    const row = { reload: r, same: 0, closed: 0, reconnects: 0, failed: 0, latencies: [] };
    const cpu = process.cpuUsage();
    await pool(conns.map((c, i) => i), 1000, async (i) => {
      const started = process.hrtime.bigint();
      let c = conns[i];
      let wasClosed = c.closed;
      try {
        if (!c.closed) {
          const answer = await c.get();
          if (answer.close) wasClosed = true;
          else row.same++;
        }
      } catch {
        wasClosed = true;
      }
      if (wasClosed) {
        row.closed++;
        row.reconnects++;
        c.socket.destroy();
        c = conns[i] = new Conn(server.port);
        try {
          await c.get();
        } catch {
          row.failed++;
        }
      }
      row.latencies.push(Number(process.hrtime.bigint() - started) / 1e6);
    });
    const used = process.cpuUsage(cpu);
    row.cpuMs = Math.round((used.user + used.system) / 1000);
    row.p99 = p99(row.latencies).toFixed(1);
    row.oldExitMs = await exited.catch(() => 'did not exit');
    delete row.latencies;
    rows.push(row);
    console.error(`${name} reload ${r}: ${JSON.stringify(row)}`);
  }
  for (const c of conns) c.socket.destroy();
  server.proc.kill('SIGTERM');
  await new Promise((resolve) => server.proc.once('exit', resolve));
  started.delete(server.proc);
  return rows;
}

async function runWebSockets(count, closeWebSockets) {
  const { WebSocket } = require('ws');
  const proc = spawn(process.execPath, [path.join(ROOT, 'test/fixtures/migrate-app.js')], {
    cwd: ROOT, env: { ...process.env, FIXTURE_OPTIONS: JSON.stringify({ workers: 2, closeWebSockets }) }, stdio: ['ignore', 'ignore', 'pipe'],
  });
  started.add(proc);
  let stderr = '';
  proc.stderr.setEncoding('utf8').on('data', (chunk) => (stderr += chunk));
  const server = { log: () => stderr };
  await until(() => /serving on 127\.0\.0\.1:\d+/.test(stderr), 'the server to be ready', server);
  const port = Number(/serving on 127\.0\.0\.1:(\d+)/.exec(stderr)[1]);
  const open = () => new Promise((resolve, reject) => {
    const ws = new WebSocket(`ws://127.0.0.1:${port}/`);
    ws.closed = false;
    ws.on('close', () => (ws.closed = true));
    ws.once('open', () => resolve(ws));
    ws.once('error', reject);
  });
  const ask = (ws) => new Promise((resolve, reject) => {
    if (ws.closed) return reject(new Error('closed'));
    ws.once('message', resolve);
    ws.once('close', reject);
    ws.send('next');
  });
  const clients = [];
  await pool(Array.from({ length: count }, (_, i) => i), 100, async (i) => {
    clients[i] = await open();
    await ask(clients[i]);
  });
  const rows = [];
  for (let r = 1; r <= RELOADS; r++) {
    const old = childrenOf(proc.pid);
    const t0 = Date.now();
    proc.kill('SIGHUP');
    await until(() => (stderr.match(/connections \d+ moved/g) ?? []).length >= r, `reload ${r}`, server);
    // The closes of the old generation's sockets reach the clients a moment later.
    await new Promise((resolve) => setTimeout(resolve, 500));
    const exited = until(() => old.every((pid) => !alive(pid)), 'the old generation to exit', server, 60_000).then(() => Date.now() - t0);
    const row = { reload: r, same: 0, closed: 0, reconnects: 0, failed: 0, latencies: [] };
    const cpu = process.cpuUsage();
    await pool(clients.map((c, i) => i), 500, async (i) => {
      const t = process.hrtime.bigint();
      try {
        await ask(clients[i]);
        row.same++;
      } catch {
        row.closed++;
        row.reconnects++;
        try {
          clients[i] = await open();
          await ask(clients[i]);
        } catch {
          row.failed++;
        }
      }
      row.latencies.push(Number(process.hrtime.bigint() - t) / 1e6);
    });
    const used = process.cpuUsage(cpu);
    row.cpuMs = Math.round((used.user + used.system) / 1000);
    row.p99 = p99(row.latencies).toFixed(1);
    row.oldExitMs = await exited.catch(() => 'did not exit');
    delete row.latencies;
    rows.push(row);
    console.error(`ws ${closeWebSockets ? 'closed on drain' : 'migrate()'} reload ${r}: ${JSON.stringify(row)}`);
  }
  for (const ws of clients) ws.terminate();
  proc.kill('SIGTERM');
  await new Promise((resolve) => proc.once('exit', resolve));
  started.delete(proc);
  return rows;
}

(async () => {
  const results = {};
  const websockets = Number(flag('websockets', 0));
  if (websockets > 0) {
    results['ws, migrate()'] = await runWebSockets(websockets, false);
    results['ws, closed on drain (1001)'] = await runWebSockets(websockets, true);
    console.log([
      `### WebSockets across reloads (\`node bench/migrate.js --websockets ${websockets} --reloads ${RELOADS}\`)`,
      '',
      `${websockets} \`ws\` clients of test/fixtures/migrate-app.js, workers 2; after each reload every client sends a message. Node ${process.version}, ${require('node:os').cpus().length} cores, ${new Date().toISOString().slice(0, 10)}.`,
      '',
      '| application | reload | same connection | closed | reconnects | failed | first message p99 (ms) | client CPU (ms) | old generation exited after (ms) |',
      '| --- | --- | --- | --- | --- | --- | --- | --- | --- |',
      ...Object.entries(results).flatMap(([name, rows]) => rows.map((r) =>
        `| ${name} | ${r.reload} | ${r.same} | ${r.closed} | ${r.reconnects} | ${r.failed} | ${r.p99} | ${r.cpuMs} | ${r.oldExitMs} |`)),
    ].join('\n'));
    return;
  }
  for (const name of SERVERS) results[name] = await run(name);
  const lines = [
    `### Idle keep-alive connections across reloads (\`node bench/migrate.js --connections ${CONNECTIONS} --reloads ${RELOADS}\`)`,
    '',
    `${CONNECTIONS} idle keep-alive connections (keepAliveTimeout 600 s), workers 2; after each reload every connection sends its next request. Node ${process.version}, ${require('node:os').cpus().length} cores, ${new Date().toISOString().slice(0, 10)}.`,
    '',
    '| server | reload | same connection | closed by the server | reconnects | failed | first request p99 (ms) | client CPU (ms) | old generation exited after (ms) |',
    '| --- | --- | --- | --- | --- | --- | --- | --- | --- |',
  ];
  for (const [name, rows] of Object.entries(results)) {
    for (const r of rows) lines.push(`| ${name} | ${r.reload} | ${r.same} | ${r.closed} | ${r.reconnects} | ${r.failed} | ${r.p99} | ${r.cpuMs} | ${r.oldExitMs} |`);
  }
  console.log(lines.join('\n'));
})().catch((error) => {
  console.error(error);
  process.exit(1);
});
