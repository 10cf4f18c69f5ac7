// A closed-loop Node HTTP load client, run as a child process (fork) so it has
// its own event loop: `connections` loops, each on its own connection
// (http.Agent keepAlive, maxSockets 1) or a new one per request (mode 'close'),
// each sending its next request when the last is answered, optionally after a
// random idle gap. Every outcome is counted: 200s, other statuses, socket
// errors by code. Runs for durationMs or until the parent sends 'stop';
// then sends its totals to the parent and exits. Besides p50/p99 the totals
// hold the slowest 200 (max, maxAt) and the longest pause the client saw: the
// longest gap between two consecutive 200s across all connections (maxGap,
// and maxGapAt, the epoch ms at which that gap ended). With `record`, it
// also keeps every failure as {port (the client's local port), start, end
// (epoch ms), code}, so the caller can tell requests on connections a killed
// process had accepted from the rest, and the time to first byte (request
// start, connect included, to the response headers) of every 200.
//
// In the parent: const load = startLoad({port, connections, ...}); ... const r = await load.stop();
const { fork } = require('node:child_process');
const http = require('node:http');

/** Parent side. */
function startLoad(options) {
  const P = require('./procs');
  P.checkAborted();
  const child = fork(__filename, [JSON.stringify(options)], { stdio: ['ignore', 'inherit', 'inherit', 'ipc'], detached: true });
  P.adoptGroup(child.pid);
  child.once('exit', () => P.releaseGroup(child.pid));
  const result = new Promise((resolve, reject) => {
    child.once('message', resolve);
    child.once('exit', (code) => reject(new Error(`load client exited (${code}) without a result`)));
  });
  result.catch(() => {});
  const handle = {
    child,
    result,
    async stop() {
      if (child.connected) child.send('stop');
      const timer = setTimeout(() => child.kill('SIGKILL'), 90_000);
      try {
        return await result;
      } finally {
        clearTimeout(timer);
      }
    },
  };
  return handle;
}

function pct(sorted, p) {
  return sorted.length ? sorted[Math.max(0, Math.ceil((p / 100) * sorted.length) - 1)] : NaN;
}

/** Child side. */
async function main(options) {
  const {
    port, connections = 64, mode = 'keep-alive', postBytes = 0, gaps, durationMs, path = '/', timeoutMs = 30_000, record = false,
  } = options;
  const keepAlive = mode === 'keep-alive';
  const body = postBytes ? Buffer.alloc(postBytes, 'x') : undefined;
  const stats = { requests: 0, ok: 0, errors: {}, statuses: {}, pids: new Set() };
  const latencies = [];
  const firstBytes = [];
  const failures = [];
  const slowest = { ms: 0, at: NaN };
  const pause = { last: 0n, ms: 0, at: NaN };
  let running = true;
  const started = Date.now();
  if (durationMs) setTimeout(() => (running = false), durationMs);
  process.on('message', (m) => m === 'stop' && (running = false));
  process.on('disconnect', () => (running = false));
  function request(agent) {
    return new Promise((resolve) => {
      const t0 = process.hrtime.bigint();
      const start = Date.now();
      let localPort;
      let firstByte;
      const fail = (code) => {
        stats.errors[code] = (stats.errors[code] || 0) + 1;
        if (record) failures.push({ port: localPort ?? req.socket?.localPort, start, end: Date.now(), code });
      };
      const req = http.request({
        host: '127.0.0.1', port, path, method: body ? 'POST' : 'GET', agent, timeout: timeoutMs,
        headers: { ...(keepAlive ? {} : { connection: 'close' }), ...(body ? { 'content-length': body.length } : {}) },
      });
      if (record) req.on('socket', (socket) => socket.once('connect', () => (localPort = socket.localPort)));
      req.on('response', (res) => {
        firstByte = Number(process.hrtime.bigint() - t0) / 1e6;
        res.resume();
        res.on('end', () => {
          stats.statuses[res.statusCode] = (stats.statuses[res.statusCode] || 0) + 1;
          if (res.statusCode === 200) {
            stats.ok++;
            stats.pids.add(res.headers['x-worker-pid']);
            const now = process.hrtime.bigint();
            const ms = Number(now - t0) / 1e6;
            latencies.push(ms);
            if (record) firstBytes.push({ ms: firstByte, at: Date.now() });
            if (ms > slowest.ms) Object.assign(slowest, { ms, at: Date.now() });
            const gap = pause.last ? Number(now - pause.last) / 1e6 : 0;
            if (gap > pause.ms) Object.assign(pause, { ms: gap, at: Date.now() });
            pause.last = now;
          }
          resolve();
        });
        res.on('error', (e) => (fail(e.code || e.message), resolve()));
      });
      req.on('timeout', () => req.destroy(Object.assign(new Error('timeout'), { code: 'ETIMEDOUT' })));
      req.on('error', (e) => (fail(e.code || e.message), resolve()));
      req.end(body);
    });
  }

  async function loop(index) {
    const agent = new http.Agent({ keepAlive, maxSockets: 1 });
    const maxGap = gaps ? gaps[index % gaps.length] : 0;
    while (running) {
      if (maxGap) await new Promise((resolve) => setTimeout(resolve, Math.random() * maxGap));
      if (!running) break;
      stats.requests++;
      await request(agent);
    }
    agent.destroy();
  }

  await Promise.all(Array.from({ length: connections }, (_, i) => loop(i)));
  const seconds = (Date.now() - started) / 1000;
  latencies.sort((a, b) => a - b);
  firstBytes.sort((a, b) => a.ms - b.ms);
  if (!process.connected) process.exit(1);
  process.send({
    requests: stats.requests,
    ok: stats.ok,
    failed: stats.requests - stats.ok,
    errors: stats.errors,
    statuses: stats.statuses,
    pids: stats.pids.size,
    seconds,
    rps: stats.requests / seconds,
    p50: pct(latencies, 50),
    p99: pct(latencies, 99),
    max: latencies.length ? latencies[latencies.length - 1] : NaN,
    maxAt: slowest.at,
    maxGap: pause.ms,
    maxGapAt: pause.at,
    ...(record ? {
      failures,
      firstByte: {
        p50: pct(firstBytes, 50)?.ms, p99: pct(firstBytes, 99)?.ms, max: firstBytes[firstBytes.length - 1]?.ms,
        maxAt: firstBytes[firstBytes.length - 1]?.at, over1s: firstBytes.filter((f) => f.ms > 1000).length,
      },
    } : {}),
  }, () => process.exit(0));
}

if (require.main === module) main(JSON.parse(process.argv[2]));

module.exports = { startLoad, pct };
