// Peer: a Node cluster with the usual rolling restart. WORKERS (default 2) on
// PORT. On SIGHUP: fork a new generation, wait for every 'listening', then
// disconnect the old one (killed if still there after 30 s). Reloads during a
// reload queue one more. SIGTERM/SIGINT: disconnect everything and exit.
// Logs the same lines as handover's master so the bench reads both alike.
// Each worker gets its slot as SLOT (0..WORKERS-1); a worker that dies on its
// own is replaced at once in the same slot (the usual cluster.on('exit') fork).
const cluster = require('node:cluster');
const path = require('node:path');

if (!cluster.isPrimary) {
  require(path.join(__dirname, '..', 'apps', 'plain.js'));
  return;
}
const WORKERS = Number(process.env.WORKERS || 2);
const log = (message) => process.stderr.write(`cluster[${process.pid}] master info: ${message}\n`);
let generation = 0;
let current = [];
let reloading = false;
let queued = false;
let stopping = false;

function startGeneration(g) {
  return Promise.all(Array.from({ length: WORKERS }, (_, slot) => new Promise((resolve, reject) => {
    const worker = fork(g, slot);
    worker.once('listening', () => resolve(worker));
    worker.once('exit', (code, signal) => reject(new Error(`worker ${worker.process.pid} exited (${signal || code}) before listening`)));
  })));
}

function fork(g, slot) {
  const worker = cluster.fork({ GENERATION: String(g), SLOT: String(slot) });
  worker.slot = slot;
  return worker;
}

function retire(workers) {
  for (const worker of workers) {
    const timer = setTimeout(() => worker.kill('SIGKILL'), 30_000);
    worker.once('exit', () => clearTimeout(timer));
    worker.disconnect();
  }
}

async function reload() {
  if (stopping) return;
  if (reloading) return void (queued = true);
  reloading = true;
  const started = process.hrtime.bigint();
  const g = ++generation;
  log(`reload: starting generation ${g}`);
  try {
    const next = await startGeneration(g);
    const old = current;
    current = next;
    retire(old);
    log(`reload: generation ${g} ready in ${(Number(process.hrtime.bigint() - started) / 1e6).toFixed(0)} ms; draining generation ${g - 1}`);
  } catch (error) {
    log(`reload: generation ${g} failed: ${error.message}`);
  }
  reloading = false;
  if (queued) {
    queued = false;
    void reload();
  }
}

// a worker of the serving generation that dies on its own is replaced
cluster.on('exit', (worker) => {
  if (stopping || worker.exitedAfterDisconnect || !current.includes(worker)) return;
  const replacement = fork(generation, worker.slot);
  current = current.map((w) => (w === worker ? replacement : w));
});

process.on('SIGHUP', () => void reload());
for (const signal of ['SIGTERM', 'SIGINT']) {
  process.on(signal, () => {
    if (stopping) process.exit(1);
    stopping = true;
    const workers = Object.values(cluster.workers);
    retire(workers);
    Promise.all(workers.map((w) => new Promise((resolve) => (w.isDead() ? resolve() : w.once('exit', resolve))))).then(() => process.exit(0));
  });
}

generation = 1;
startGeneration(1).then(
  (workers) => {
    current = workers;
    log(`ready: generation 1 serving on 127.0.0.1:${process.env.PORT}`);
  },
  (error) => {
    log(`error: ${error.message}`);
    process.exit(1);
  },
);
