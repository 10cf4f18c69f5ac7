// A stop with one frozen worker (issue 19, item 6): how long a new connection
// waits for its answer or its refusal, and whether any is reset. Each run: the
// hello app under handover, 2 workers; slot 1's worker is frozen (SIGSTOP; it
// holds every slot's socket, received for covering); 10 connections are
// opened (about half wait in the frozen worker's queue); 100 ms later the
// master gets SIGTERM, and a new connection is opened every 5 ms for 1.5 s.
// Each is timed from connect() to its response or its ECONNREFUSED (5 s
// timeout). Prints each run's worst and median, how long new SYNs were
// dropped (the span of the connections refused only at their retry), and,
// over all runs, the max and p50 of the worst. With --base DIR (another checkout, built) runs
// alternate: that checkout's handover, then this one's.
//
//   node bench/stop-frozen.js [--runs 20] [--workers 2] [--base DIR]
const fs = require('node:fs');
const http = require('node:http');
const os = require('node:os');
const path = require('node:path');
const P = require('./lib/procs');

const args = process.argv.slice(2);
const flag = (name, fallback) => {
  const at = args.indexOf(`--${name}`);
  return at < 0 ? fallback : args[at + 1];
};
const RUNS = Number(flag('runs', 20));
const WORKERS = Number(flag('workers', 2));
const BASE = flag('base', undefined);
const QUEUED = 10;
const KNOCK_EVERY_MS = 5;
const KNOCK_FOR_MS = 1_500;
const TIMEOUT_MS = 5_000;
const APP = path.join(__dirname, 'apps', 'handover.js');

const now = () => Number(process.hrtime.bigint()) / 1e6;

function knock(port) {
  const started = now();
  return new Promise((resolve) => {
    const done = (outcome) => resolve({ outcome, started, ms: now() - started });
    const req = http.get({ host: '127.0.0.1', port, agent: false, timeout: TIMEOUT_MS }, (res) => {
      res.resume();
      res.on('end', () => done(`status ${res.statusCode}`));
      res.on('error', (error) => done(error.code || error.message));
    });
    req.on('timeout', () => req.destroy(Object.assign(new Error('timeout'), { code: 'TIMEOUT' })));
    req.on('error', (error) => done(error.code || error.message));
  });
}

const quantile = (sorted, q) => sorted[Math.min(sorted.length - 1, Math.floor(q * sorted.length))];

async function run(handover) {
  const port = await P.freePort();
  const faults = fs.mkdtempSync(path.join(os.tmpdir(), 'bench-stop-frozen-'));
  const master = P.spawnGroup(process.execPath, [APP], {
    env: { ...process.env, ADDRESS: `127.0.0.1:${port}`, WORKERS: String(WORKERS), FAULT_DIR: faults, ...(handover ? { BENCH_HANDOVER: handover } : {}) },
    stdio: ['ignore', 'ignore', 'pipe'],
  });
  let stderr = '';
  master.stderr.on('data', (chunk) => (stderr += chunk));
  const exited = new Promise((resolve) => master.on('exit', resolve));
  const pidFile = path.join(faults, `slot-${WORKERS - 1}.pid`);
  const deadline = Date.now() + 30_000;
  while (!/generation 1 ready|ready/.test(stderr) || !fs.existsSync(pidFile)) {
    if (Date.now() > deadline) throw new Error(`the master did not start:\n${stderr}`);
    await P.sleep(20);
  }
  if ((await knock(port)).outcome !== 'status 200') throw new Error('the app does not answer');
  const frozen = Number(fs.readFileSync(pidFile, 'utf8'));
  process.kill(frozen, 'SIGSTOP');
  const knocks = Array.from({ length: QUEUED }, () => knock(port));
  await P.sleep(100);
  const stopAt = now();
  process.kill(master.pid, 'SIGTERM');
  for (const end = Date.now() + KNOCK_FOR_MS; Date.now() < end;) {
    knocks.push(knock(port));
    await P.sleep(KNOCK_EVERY_MS);
  }
  const outcomes = await Promise.all(knocks);
  process.kill(frozen, 'SIGCONT');
  await exited;
  fs.rmSync(faults, { recursive: true, force: true });
  const tally = {};
  for (const { outcome } of outcomes) tally[outcome] = (tally[outcome] ?? 0) + 1;
  const sorted = outcomes.map((o) => o.ms).sort((a, b) => a - b);
  // A connection whose SYN the stop dropped is refused at its client's retry, about 1 s later:
  // the span of their start times is how long new SYNs were dropped.
  const dropped = outcomes.filter((o) => o.started >= stopAt && o.ms >= 900).map((o) => o.started);
  const window = dropped.length ? Math.max(...dropped) - Math.min(...dropped) : 0;
  return { worst: sorted[sorted.length - 1], median: quantile(sorted, 0.5), over1s: sorted.filter((ms) => ms >= 1_000).length, window, tally };
}

async function main() {
  const sides = BASE ? [['base', path.resolve(BASE)], ['this', undefined]] : [['this', undefined]];
  const worsts = Object.fromEntries(sides.map(([name]) => [name, []]));
  const windows = Object.fromEntries(sides.map(([name]) => [name, []]));
  const failed = Object.fromEntries(sides.map(([name]) => [name, {}]));
  for (let i = 1; i <= RUNS; i++) {
    for (const [name, handover] of sides) {
      const r = await run(handover);
      worsts[name].push(r.worst);
      windows[name].push(r.window);
      for (const [outcome, n] of Object.entries(r.tally)) {
        if (outcome !== 'status 200' && outcome !== 'ECONNREFUSED') failed[name][outcome] = (failed[name][outcome] ?? 0) + n;
      }
      const total = Object.values(r.tally).reduce((a, b) => a + b);
      console.log(`${name} run ${i}: worst ${r.worst.toFixed(1)} ms, median ${r.median.toFixed(1)} ms, ${r.over1s} of ${total} at >= 1 s (SYNs dropped for ${r.window.toFixed(0)} ms), ${JSON.stringify(r.tally)}`);
    }
  }
  console.log('');
  for (const [name] of sides) {
    const sorted = worsts[name].sort((a, b) => a - b);
    const spans = windows[name].sort((a, b) => a - b);
    console.log(`${name}: ${RUNS} runs, worst connection per run: max ${sorted[sorted.length - 1].toFixed(1)} ms, p50 ${quantile(sorted, 0.5).toFixed(1)} ms; ` +
      `SYNs dropped for p50 ${quantile(spans, 0.5).toFixed(0)} ms (max ${spans[spans.length - 1].toFixed(0)}); neither answered nor refused: ${JSON.stringify(failed[name])}`);
  }
}

main().then(() => P.stopAll(), async (error) => {
  console.error(error);
  await P.stopAll();
  process.exit(1);
});
