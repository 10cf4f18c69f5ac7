// The servers the bench compares, behind one shape:
//   start() -> sets .port     reload() -> {ms, wallMs}     workerPids()     stop()
//   reloadEvery(ms) -> {stop() -> {reloads, failed}}
// handover and the cluster peer are masters that log alike; pm2 is driven by its CLI.
const fs = require('node:fs');
const http = require('node:http');
const os = require('node:os');
const path = require('node:path');
const P = require('./procs');

const ROOT = path.resolve(__dirname, '..', '..');
const APPS = path.join(ROOT, 'bench', 'apps');
const ENDED = /reload(?:: generation (\d+) ready in (\d+) ms| to generation (\d+) failed|: generation (\d+) failed)/;
const STARTED = /reload: starting generation (\d+)/;

/**
 * A master process (handover or the cluster peer) that logs `ready:` and
 * `reload:` lines on stderr. `args`: after the script. `fixedPort`: the
 * program listens on $PORT, a free port picked at each start.
 */
class MasterServer {
  constructor(label, script, { env = {}, args = [], fixedPort = false, fdLimit = false, verbose = false } = {}) {
    this.label = label;
    this.script = script;
    this.args = args;
    this.fixedPort = fixedPort;
    this.env = env;
    this.fdLimit = fdLimit;
    this.verbose = verbose;
    this.generation = 1;
    /** The highest generation the master said it started (a failed reload uses a number up too). */
    this.highest = 1;
    this.started = 0;
    this.ended = 0;
    this.failed = 0;
  }

  async start() {
    P.checkAborted();
    if (this.fixedPort) this.env.PORT = String(await P.freePort());
    const nodeArgs = [this.script, ...this.args];
    const [command, args] = this.fdLimit ? P.withFdLimit(nodeArgs) : [process.execPath, nodeArgs];
    this.child = P.spawnGroup(command, args, {
      cwd: ROOT,
      env: { ...process.env, ...this.env },
      stdio: ['ignore', this.verbose ? 'inherit' : 'ignore', 'pipe'],
    });
    P.track(this);
    this.lines = new P.Lines(this.child.stderr, { echo: this.verbose });
    this.lines.on((line) => {
      const s = STARTED.exec(line);
      if (s) {
        this.started++;
        this.highest = Math.max(this.highest, Number(s[1]));
      }
      const m = ENDED.exec(line);
      if (!m) return;
      this.ended++;
      if (m[1]) this.generation = Math.max(this.generation, Number(m[1]));
      else this.failed++;
    });
    const exited = this.child.exited.then(({ code, signal }) => {
      throw new Error(`${this.label} exited (${signal || code}) before it was ready:\n${this.lines.tail.join('\n')}`);
    });
    const ready = await Promise.race([this.lines.waitFor(/ready: generation 1 serving on 127\.0\.0\.1:(\d+)/, 60_000), exited]);
    exited.catch(() => {});
    this.port = Number(ready[1]);
    return this;
  }

  get pid() {
    return this.child.pid;
  }

  workerPids() {
    return P.childrenOf(this.pid);
  }

  signal() {
    process.kill(this.pid, 'SIGHUP');
  }

  /** One reload, waited for: ms as the master logs it, wallMs from the signal to the log line read here. */
  async reload(timeoutMs = 60_000) {
    const g = Math.max(this.generation, this.highest) + 1;
    const line = this.lines.waitFor(new RegExp(`reload(?:: generation ${g} ready in (\\d+) ms| to generation ${g} failed|: generation ${g} failed)`), timeoutMs);
    const t0 = process.hrtime.bigint();
    this.signal();
    const m = await line;
    const wallMs = Number(process.hrtime.bigint() - t0) / 1e6;
    if (m[1] === undefined) throw new Error(`${this.label}: reload to generation ${g} failed:\n${this.lines.tail.slice(-5).join('\n')}`);
    return { ms: Number(m[1]), wallMs };
  }

  /** SIGHUP every intervalMs (the master coalesces); stop() waits for the last reload to settle. */
  reloadEvery(intervalMs) {
    const before = { ended: this.ended, failed: this.failed };
    let signals = 0;
    const timer = setInterval(() => {
      signals++;
      this.signal();
    }, intervalMs);
    return {
      stop: async () => {
        clearInterval(timer);
        let quietSince = Date.now();
        const deadline = Date.now() + 60_000;
        while (Date.now() < deadline) {
          if (this.started > this.ended) quietSince = Date.now();
          if (Date.now() - quietSince > 300) break;
          await P.sleep(50);
        }
        return { signals, reloads: this.ended - before.ended - (this.failed - before.failed), failed: this.failed - before.failed };
      },
    };
  }

  stop() {
    this.stopping ??= (async () => {
      if (!this.child) return;
      await P.stopGroup(this.child, { timeoutMs: 30_000 });
      P.untrack(this);
    })();
    return this.stopping;
  }
}

class HandoverServer extends MasterServer {
  /** env ROLLOUT / MAX_MEMORY set handover's options (bench/apps/handover.js); the label says which. */
  constructor({ workers = 1, env = {}, ...rest } = {}) {
    const options = [`workers ${workers}`, env.ROLLOUT && `rollout ${env.ROLLOUT}`, env.MAX_MEMORY && `maxMemory ${env.MAX_MEMORY}`,
      env.BENCH_HANDOVER && `from ${env.BENCH_HANDOVER}`];
    super(`handover (${options.filter(Boolean).join(', ')})`, path.join(APPS, 'handover.js'), {
      env: { ADDRESS: '127.0.0.1:0', WORKERS: String(workers), ...env }, ...rest,
    });
  }
}

class ClusterServer extends MasterServer {
  constructor({ workers = 2, env = {}, ...rest } = {}) {
    super(`node cluster (${workers} workers, rolling restart)`, path.join(ROOT, 'bench', 'peers', 'cluster-rolling.js'), {
      env: { WORKERS: String(workers), ...env }, fixedPort: true, ...rest,
    });
  }
}

let starts = 0;

/**
 * `handover start` running apps/plain.js, the unmodified program (env
 * APP_MODULE: its handler's module), named for this run and instance (a
 * master named `plain` from another checkout may be running, and a run may
 * hold several). `dir`: the handover package whose CLI runs it (built;
 * default this repository).
 */
class StartServer extends MasterServer {
  constructor({ workers = 1, dir = ROOT, label = `handover start (workers ${workers})`, env = {}, ...rest } = {}) {
    super(label, path.join(dir, 'dist', 'cli', 'cli.js'), {
      args: ['start', '--name', `bench-${process.pid}-${++starts}`, '--workers', String(workers), path.join(APPS, 'plain.js')], env, fixedPort: true, ...rest,
    });
  }
}

/** Plain Node: http.createServer(handler).listen(), one process, no reloads. */
class PlainServer {
  constructor({ env = {}, fdLimit = false, verbose = false } = {}) {
    this.label = 'plain node (1 process)';
    this.env = env;
    this.fdLimit = fdLimit;
    this.verbose = verbose;
  }

  async start() {
    const nodeArgs = [path.join(APPS, 'plain.js')];
    const [command, args] = this.fdLimit ? P.withFdLimit(nodeArgs) : [process.execPath, nodeArgs];
    this.child = P.spawnGroup(command, args, {
      cwd: ROOT, env: { ...process.env, PORT: '0', ...this.env }, stdio: ['ignore', 'pipe', this.verbose ? 'inherit' : 'ignore'],
    });
    P.track(this);
    const lines = new P.Lines(this.child.stdout);
    this.port = Number((await lines.waitFor(/listening on 127\.0\.0\.1:(\d+)/, 30_000))[1]);
    return this;
  }

  get pid() {
    return this.child.pid;
  }

  workerPids() {
    return [this.pid];
  }

  stop() {
    this.stopping ??= (async () => {
      if (!this.child) return;
      await P.stopGroup(this.child, { timeoutMs: 10_000, second: 'SIGKILL' });
      P.untrack(this);
    })();
    return this.stopping;
  }
}

/** Installs pm2 into a temp dir (or reuses `dir`); resolves the path of its CLI script. */
async function installPm2(dir, log) {
  const version = (d) => JSON.parse(fs.readFileSync(path.join(d, 'node_modules', 'pm2', 'package.json'), 'utf8')).version;
  const existing = dir && path.join(dir, 'node_modules', 'pm2', 'bin', 'pm2');
  if (existing && fs.existsSync(existing)) return { bin: existing, dir, temporary: false, version: version(dir) };
  const target = dir || fs.mkdtempSync(path.join(os.tmpdir(), 'handover-bench-pm2-'));
  log(`installing pm2 into ${target} (npm install --prefix ${target} pm2)`);
  const r = await P.run('npm', ['install', '--prefix', target, 'pm2', '--no-audit', '--no-fund', '--loglevel=error'], { timeout: 300_000 });
  const bin = path.join(target, 'node_modules', 'pm2', 'bin', 'pm2');
  if (r.code !== 0 || !fs.existsSync(bin)) throw new Error(`npm install pm2 failed (${r.code}):\n${r.stderr.slice(-2000)}`);
  return { bin, dir: target, temporary: !dir, version: version(target) };
}

/** pm2 in cluster mode with its own PM2_HOME; reload = `pm2 reload`; stop = `pm2 kill`. */
class Pm2Server {
  /** startArgs: more `pm2 start` flags (e.g. --max-memory-restart 200M). */
  constructor({ bin, workers = 2, env = {}, verbose = false, startArgs = [] }) {
    this.label = `pm2 reload (cluster mode, ${workers} instances${startArgs.length ? `, ${startArgs.join(' ')}` : ''})`;
    this.startArgs = startArgs;
    this.extraEnv = env;
    this.inflight = new Set();
    this.adopted = new Set();
    this.bin = bin;
    this.workers = workers;
    this.verbose = verbose;
  }

  /**
   * Runs the pm2 CLI against this PM2_HOME. Any pm2 command spawns a daemon if
   * none runs, so after stop() began only the kill of a live daemon may run.
   */
  pm2(...args) {
    if (this.stopping && args[0] !== 'kill') return Promise.resolve({ code: 1, stdout: '', stderr: 'stopped', ms: 0 });
    const command = P.run(process.execPath, [this.bin, ...args], { env: this.env, timeout: 180_000 });
    this.inflight.add(command);
    command.then(() => this.inflight.delete(command));
    return command;
  }

  async start() {
    this.port = await P.freePort();
    P.checkAborted();
    P.track(this);
    this.home = fs.mkdtempSync(path.join(os.tmpdir(), 'handover-bench-pm2-home-'));
    this.env = { ...process.env, ...this.extraEnv, PM2_HOME: this.home, PORT: String(this.port) };
    const r = await this.pm2('start', path.join(APPS, 'plain.js'), '-i', String(this.workers), '--name', 'bench-hello', ...this.startArgs);
    if (this.verbose) process.stderr.write(r.stdout + r.stderr);
    this.readDaemonPid();
    if (r.code !== 0) throw new Error(`pm2 start failed (${r.code}):\n${(r.stdout + r.stderr).slice(-2000)}`);
    const deadline = Date.now() + 30_000;
    while (this.workerPids().length < this.workers || !(await get(this.port))) {
      if (Date.now() > deadline) throw new Error('pm2: the app did not answer within 30 s');
      await P.sleep(100);
    }
    return this;
  }

  workerPids() {
    return this.daemonPid ? P.childrenOf(this.daemonPid) : [];
  }

  /** Reads the daemon's pid and remembers it and its apps for the last-resort kill. */
  readDaemonPid() {
    try {
      this.daemonPid = Number(fs.readFileSync(path.join(this.home, 'pm2.pid'), 'utf8')) || this.daemonPid;
    } catch {}
    for (const pid of [this.daemonPid, ...this.workerPids()]) {
      P.adoptPid(pid);
      this.adopted.add(pid);
    }
  }

  async reload() {
    const r = await this.pm2('reload', 'bench-hello');
    if (r.code !== 0) throw new Error(`pm2 reload failed (${r.code}):\n${(r.stdout + r.stderr).slice(-1000)}`);
    return { ms: r.ms, wallMs: r.ms };
  }

  /** `pm2 reload` back to back, each at least intervalMs after the last one started. */
  reloadEvery(intervalMs) {
    let running = true;
    let reloads = 0;
    let failed = 0;
    const loop = (async () => {
      while (running) {
        const t0 = Date.now();
        try {
          await this.reload();
          reloads++;
        } catch {
          failed++;
        }
        if (running) await P.sleep(Math.max(0, intervalMs - (Date.now() - t0)));
      }
    })();
    return {
      stop: async () => {
        running = false;
        await loop;
        return { signals: reloads + failed, reloads, failed };
      },
    };
  }

  stop() {
    this.stopping ??= (async () => {
      if (!this.home) return;
      // pm2 commands still running (start, reload) finish first: a daemon being
      // spawned right now must not escape the kill
      await Promise.all([...this.inflight]);
      this.readDaemonPid();
      const pids = [...this.workerPids(), this.daemonPid].filter(Boolean);
      if (this.daemonPid && P.alive(this.daemonPid)) await this.pm2('kill');
      const deadline = Date.now() + 5_000;
      while (pids.some(P.alive) && Date.now() < deadline) await P.sleep(50);
      for (const pid of pids.filter(P.alive)) try { process.kill(pid, 'SIGKILL'); } catch {}
      for (const pid of this.adopted) P.releasePid(pid);
      fs.rmSync(this.home, { recursive: true, force: true });
      P.untrack(this);
    })();
    return this.stopping;
  }
}

/** GET / once; resolves true on a 200. */
function get(port, pathname = '/') {
  return new Promise((resolve) => {
    const req = http.get({ host: '127.0.0.1', port, path: pathname, agent: false, timeout: 2_000 }, (res) => {
      res.resume();
      res.on('end', () => resolve(res.statusCode === 200 && { pid: Number(res.headers['x-worker-pid']) }));
    });
    req.on('timeout', () => req.destroy());
    req.on('error', () => resolve(false));
  });
}

module.exports = { HandoverServer, ClusterServer, PlainServer, Pm2Server, StartServer, installPm2, get, ROOT };
