// `npm run demo`: examples/hello.js under handover, 64 keep-alive clients in a
// closed loop, 20 reloads (SIGHUP) while they run, then a report. Exits 1 if
// any request failed. Flags: --reloads N, --connections N, --verbose.
const { spawn } = require('node:child_process');
const http = require('node:http');
const path = require('node:path');

const args = process.argv.slice(2);
const flag = (name, fallback) => {
  const i = args.indexOf(`--${name}`);
  return i >= 0 ? Number(args[i + 1]) : fallback;
};
const RELOADS = flag('reloads', 20);
const CONNECTIONS = flag('connections', 64);
const VERBOSE = args.includes('--verbose');
const TTY = process.stdout.isTTY;
const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

// --- the master: its own process group, so Ctrl-C reaches only us and we stop it in order
const master = spawn(process.execPath, [path.join(__dirname, 'hello.js')], {
  env: { ...process.env, ADDRESS: '127.0.0.1:0' },
  stdio: ['ignore', 'inherit', 'pipe'],
  detached: true,
});
const exited = new Promise((resolve) => master.once('exit', (code, signal) => resolve({ code, signal })));
let masterGone = false;
exited.then(() => (masterGone = true));
const waiters = []; // [regexp, onMatch]
let pending = '';
master.stderr.setEncoding('utf8').on('data', (chunk) => {
  pending += chunk;
  let nl;
  while ((nl = pending.indexOf('\n')) >= 0) {
    const line = pending.slice(0, nl);
    pending = pending.slice(nl + 1);
    if (VERBOSE || / (warn|error): /.test(line)) print(`  ${line}`);
    for (const w of waiters.slice()) {
      const m = w[0].exec(line);
      if (m) waiters.splice(waiters.indexOf(w), 1), w[1](m);
    }
  }
});
function waitLine(regexp, what, timeoutMs = 30_000) {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`no "${what}" from the master within ${timeoutMs} ms`)), timeoutMs);
    waiters.push([regexp, (m) => (clearTimeout(timer), resolve(m))]);
    exited.then(({ code, signal }) => reject(new Error(`the master exited (${signal || code}) while waiting for "${what}"`)));
  });
}

// --- the load: one keep-alive connection per loop, next request when the last is answered
const stats = { ok: 0, failed: 0, errors: {}, pids: new Set(), latencies: [] };
let running = true;
let port = 0;
function request(agent) {
  return new Promise((resolve) => {
    const req = http.get({ host: '127.0.0.1', port, path: '/', agent, timeout: 30_000 }, (res) => {
      res.resume();
      res.on('end', () => resolve(res.statusCode === 200 ? { pid: Number(res.headers['x-worker-pid']) } : { error: `HTTP ${res.statusCode}` }));
      res.on('error', (e) => resolve({ error: e.code || e.message }));
    });
    req.on('timeout', () => req.destroy(Object.assign(new Error('timeout'), { code: 'ETIMEDOUT' })));
    req.on('error', (e) => resolve({ error: e.code || e.message }));
  });
}
async function loop() {
  const agent = new http.Agent({ keepAlive: true, maxSockets: 1 });
  while (running) {
    const started = process.hrtime.bigint();
    const r = await request(agent);
    if (r.error) {
      stats.failed++;
      stats.errors[r.error] = (stats.errors[r.error] || 0) + 1;
    } else {
      stats.ok++;
      stats.pids.add(r.pid);
      stats.latencies.push(Number(process.hrtime.bigint() - started) / 1e6);
    }
  }
  agent.destroy();
}

// --- output
let live = '';
function print(line) {
  if (TTY && live) process.stdout.write('\r\x1b[K');
  process.stdout.write(`${line}\n`);
  if (TTY && live) process.stdout.write(live);
}
function status(text) {
  if (!TTY) return;
  live = text;
  process.stdout.write(`\r\x1b[K${text}`);
}
const pct = (sorted, p) => (sorted.length ? sorted[Math.max(0, Math.ceil((p / 100) * sorted.length) - 1)] : NaN);
const fmt = (n) => Math.round(n).toLocaleString('en-US');

async function main() {
  const ready = await waitLine(/ready: generation 1 serving on 127\.0\.0\.1:(\d+)/, 'ready');
  port = Number(ready[1]);
  print(`handover master pid ${master.pid} serving examples/hello.js on 127.0.0.1:${port}`);
  print(`${CONNECTIONS} keep-alive connections, ${RELOADS} reloads (SIGHUP) under load${VERBOSE ? '' : '; --verbose shows the master\'s log'}`);
  const started = Date.now();
  const loops = Array.from({ length: CONNECTIONS }, loop);
  const ticker = setInterval(() => {
    const secs = (Date.now() - started) / 1000;
    status(`  ${fmt(stats.ok + stats.failed)} requests, ${stats.failed} failed, ${fmt((stats.ok + stats.failed) / secs)} req/s, ${stats.pids.size} worker pids`);
  }, 200);
  const reloadMs = [];
  try {
    await sleep(1000);
    for (let i = 1; i <= RELOADS; i++) {
      const generation = i + 1;
      const line = waitLine(new RegExp(`reload: generation ${generation} ready in (\\d+) ms`), `generation ${generation} ready`);
      process.kill(master.pid, 'SIGHUP');
      reloadMs.push(Number((await line)[1]));
      // with workers: 1 every generation is one new pid: wait until it has answered
      const deadline = Date.now() + 10_000;
      while (stats.pids.size < generation) {
        if (Date.now() > deadline) throw new Error(`generation ${generation} served nothing within 10 s`);
        await sleep(5);
      }
      if (!TTY) print(`  reload ${i}/${RELOADS}: generation ${generation} ready in ${reloadMs.at(-1)} ms and serving; ${fmt(stats.ok)} ok, ${stats.failed} failed so far`);
      await sleep(200);
    }
    await sleep(1000);
  } finally {
    clearInterval(ticker);
    running = false;
    await Promise.all(loops);
    if (TTY) process.stdout.write('\r\x1b[K'), (live = '');
  }
  const secs = (Date.now() - started) / 1000;
  const lat = stats.latencies.sort((a, b) => a - b);
  const rel = reloadMs.slice().sort((a, b) => a - b);
  const errors = Object.entries(stats.errors).map(([code, n]) => `${code} ${n}`).join(', ');
  print('');
  print(`requests          ${fmt(stats.ok + stats.failed)} in ${secs.toFixed(1)} s (${fmt((stats.ok + stats.failed) / secs)} req/s)`);
  print(`failed            ${stats.failed}${errors ? ` (${errors})` : ''}`);
  print(`generations seen  ${stats.pids.size} distinct worker pids over ${RELOADS} reloads`);
  print(`latency           p50 ${pct(lat, 50).toFixed(2)} ms, p99 ${pct(lat, 99).toFixed(2)} ms`);
  print(`reload time       p50 ${pct(rel, 50)} ms, p95 ${pct(rel, 95)} ms (signal to new generation ready, master log)`);
  return stats.failed === 0 ? 0 : 1;
}

let stopping;
function stopMaster() {
  stopping ??= (async () => {
    if (masterGone) return;
    process.kill(master.pid, 'SIGTERM');
    const late = setTimeout(() => { try { process.kill(-master.pid, 'SIGKILL'); } catch {} }, 30_000);
    await exited;
    clearTimeout(late);
    // workers share the master's process group: none may outlive the demo
    await sleep(100);
    try { process.kill(-master.pid, 'SIGKILL'); } catch {}
  })();
  return stopping;
}
let interrupted = false;
process.on('SIGINT', () => {
  interrupted = true;
  running = false;
  print('\ninterrupted: stopping the master');
  stopMaster().then(() => process.exit(130));
});
main().then(
  (code) => stopMaster().then(() => process.exit(code)),
  (error) => {
    running = false;
    if (interrupted) return; // the SIGINT handler exits
    print(`\ndemo failed: ${error.message}`);
    stopMaster().then(() => process.exit(2));
  },
);
