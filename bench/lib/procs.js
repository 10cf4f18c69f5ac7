// Processes the bench starts: each in its own process group (so Ctrl-C reaches
// only the bench, which stops them in order), tracked until stopped, and
// killed as a group if the bench exits any other way.
const { spawn, execFile } = require('node:child_process');
const fs = require('node:fs');
const net = require('node:net');

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

/** Things to stop at the end: anything with stop(); plus raw child pgids for the last-resort kill. */
const live = new Set();
const groups = new Set();

function track(thing) {
  live.add(thing);
  return thing;
}
function untrack(thing) {
  live.delete(thing);
}

/** Set once the bench is shutting down (Ctrl-C, SIGTERM): nothing new may start after it. */
let aborted = false;
function abort() {
  aborted = true;
}
function isAborted() {
  return aborted;
}
function checkAborted() {
  if (aborted) throw new Error('the bench is stopping');
}

/** Stops everything still tracked (servers gracefully, then their groups by force). */
async function stopAll() {
  await Promise.allSettled([...live].map((thing) => thing.stop()));
  for (const pgid of groups) killGroup(pgid, 'SIGKILL');
  for (const pid of strays) try { process.kill(pid, 'SIGKILL'); } catch {}
  strays.clear();
}

/** Single pids (outside our groups, e.g. pm2's daemon and apps) to kill if the bench exits before stopping them. */
const strays = new Set();
function adoptPid(pid) {
  if (pid > 0) strays.add(pid);
}
function releasePid(pid) {
  strays.delete(pid);
}

process.on('exit', () => {
  for (const pgid of groups) killGroup(pgid, 'SIGKILL');
  for (const pid of strays) try { process.kill(pid, 'SIGKILL'); } catch {}
});

function killGroup(pgid, signal) {
  try {
    process.kill(-pgid, signal);
    return true;
  } catch {
    return false;
  }
}

function groupAlive(pgid) {
  return killGroup(pgid, 0);
}

/** Remembers a detached child's group for the last-resort kill. */
function adoptGroup(pid) {
  if (pid) groups.add(pid);
}

function releaseGroup(pid) {
  groups.delete(pid);
}

/** spawn() in a new process group, remembered until the whole group is gone. */
function spawnGroup(command, args, options = {}) {
  checkAborted();
  const child = spawn(command, args, { ...options, detached: true });
  if (child.pid) groups.add(child.pid);
  child.exited = new Promise((resolve) => {
    child.once('exit', (code, signal) => resolve({ code, signal }));
    child.once('error', (error) => resolve({ code: null, signal: null, error }));
  });
  return child;
}

/** After the group leader exited: waits for the rest of its group, then kills what is left. */
async function reapGroup(pgid, graceMs = 5_000) {
  const deadline = Date.now() + graceMs;
  while (groupAlive(pgid) && Date.now() < deadline) await sleep(50);
  if (groupAlive(pgid)) killGroup(pgid, 'SIGKILL');
  while (groupAlive(pgid) && Date.now() < deadline + 2_000) await sleep(20);
  groups.delete(pgid);
}

/** Signal the leader, wait for it; force after timeoutMs; then reap the group. */
async function stopGroup(child, { signal = 'SIGTERM', timeoutMs = 30_000, second = 'SIGTERM' } = {}) {
  if (child.exitCode === null && child.signalCode === null) {
    try { child.kill(signal); } catch {}
    const t1 = setTimeout(() => { try { child.kill(second); } catch {} }, timeoutMs);
    const t2 = setTimeout(() => killGroup(child.pid, 'SIGKILL'), timeoutMs + 5_000);
    await child.exited;
    clearTimeout(t1);
    clearTimeout(t2);
  }
  await reapGroup(child.pid);
}

/** Splits a stream into lines; waitFor(regexp) resolves with the match of a later line. */
class Lines {
  constructor(stream, { echo } = {}) {
    this.tail = [];
    this.waiters = [];
    this.listeners = [];
    let pending = '';
    stream.setEncoding('utf8');
    stream.on('data', (chunk) => {
      pending += chunk;
      let nl;
      while ((nl = pending.indexOf('\n')) >= 0) {
        const line = pending.slice(0, nl);
        pending = pending.slice(nl + 1);
        if (echo) process.stderr.write(`    | ${line}\n`);
        this.tail.push(line);
        if (this.tail.length > 30) this.tail.shift();
        for (const fn of this.listeners) fn(line);
        for (const w of this.waiters.slice()) {
          const m = w.regexp.exec(line);
          if (m) {
            this.waiters.splice(this.waiters.indexOf(w), 1);
            w.resolve(m);
          }
        }
      }
    });
    stream.on('close', () => {
      for (const w of this.waiters.splice(0)) w.reject(new Error(`stream closed while waiting for ${w.regexp}`));
    });
  }

  on(fn) {
    this.listeners.push(fn);
  }

  waitFor(regexp, timeoutMs = 30_000) {
    return new Promise((resolve, reject) => {
      const w = { regexp };
      const timer = setTimeout(() => {
        this.waiters.splice(this.waiters.indexOf(w), 1);
        reject(new Error(`timed out after ${timeoutMs} ms waiting for ${regexp}; last lines:\n${this.tail.slice(-8).join('\n')}`));
      }, timeoutMs);
      w.resolve = (m) => (clearTimeout(timer), resolve(m));
      w.reject = (e) => (clearTimeout(timer), reject(e));
      this.waiters.push(w);
    });
  }
}

/** A free TCP port on 127.0.0.1 (for servers that need a fixed port: plain, cluster, pm2). */
function freePort() {
  return new Promise((resolve, reject) => {
    const s = net.createServer();
    s.once('error', reject);
    s.listen(0, '127.0.0.1', () => {
      const { port } = s.address();
      s.close(() => resolve(port));
    });
  });
}

/** Pids whose parent is `pid` (scans /proc). */
function childrenOf(pid) {
  const out = [];
  for (const entry of fs.readdirSync('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    try {
      const stat = fs.readFileSync(`/proc/${entry}/stat`, 'utf8');
      const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
      if (Number(fields[1]) === pid && fields[0] !== 'Z') out.push(Number(entry));
    } catch {}
  }
  return out;
}

function alive(pid) {
  try {
    process.kill(pid, 0);
    const stat = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
    return stat.slice(stat.lastIndexOf(')') + 2)[0] !== 'Z';
  } catch {
    return false;
  }
}

const TICK_MS = 10; // USER_HZ is 100 on Linux

/** A pid's CPU time so far (user + system, from /proc/<pid>/stat), ms, in 10 ms ticks. */
function cpuMs(pid) {
  const stat = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
  const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  return (Number(fields[11]) + Number(fields[12])) * TICK_MS;
}

/** VmRSS of a pid in kB. */
function rssKb(pid) {
  const m = /VmRSS:\s+(\d+) kB/.exec(fs.readFileSync(`/proc/${pid}/status`, 'utf8'));
  return m ? Number(m[1]) : NaN;
}

/** VmRSS split as /proc/<pid>/status gives it: {anon, file, shmem} in kB (file: mapped files, e.g. node's own text). */
function rssPartsKb(pid) {
  const status = fs.readFileSync(`/proc/${pid}/status`, 'utf8');
  const kb = (name) => Number(new RegExp(`${name}:\\s+(\\d+) kB`).exec(status)?.[1] ?? NaN);
  return { anon: kb('RssAnon'), file: kb('RssFile'), shmem: kb('RssShmem') };
}

/**
 * A pid's anonymous RSS (kB) by who owns it, from /proc/<pid>/smaps: `mallocMain`
 * (glibc's main arena, the [heap] mapping), `mallocThreads` (glibc's per-thread
 * arenas: a 64 MiB-aligned read-write mapping followed by its PROT_NONE rest, the
 * two together 64 MiB), `stacks`, and `other` (the V8 heap, V8's code, large
 * mmap'd malloc chunks), plus `threadArenas`, how many per-thread arenas there are.
 */
function anonPartsKb(pid) {
  const maps = [];
  let cur;
  for (const line of fs.readFileSync(`/proc/${pid}/smaps`, 'utf8').split('\n')) {
    const m = /^([0-9a-f]+)-([0-9a-f]+) (\S+) \S+ \S+ \d+\s*(.*)$/.exec(line);
    if (m) {
      cur = { start: BigInt(`0x${m[1]}`), end: BigInt(`0x${m[2]}`), perms: m[3], name: m[4], anon: 0 };
      maps.push(cur);
    } else if (cur) {
      const a = /^Anonymous:\s+(\d+) kB/.exec(line);
      if (a) cur.anon = Number(a[1]);
    }
  }
  const arena = 64n << 20n;
  const out = { mallocMain: 0, mallocThreads: 0, stacks: 0, other: 0, threadArenas: 0 };
  maps.forEach((m, i) => {
    const next = maps[i + 1];
    if (m.name === '[heap]') out.mallocMain += m.anon;
    else if (m.name.startsWith('[stack')) out.stacks += m.anon;
    else if (m.name === '' && m.perms === 'rw-p' && m.start % arena === 0n &&
      (m.end - m.start === arena || (next && next.start === m.end && next.perms === '---p' && next.name === '' && next.end - m.start === arena))) {
      out.mallocThreads += m.anon;
      out.threadArenas++;
    } else out.other += m.anon;
  });
  return out;
}

/** How many fds a pid has open (entries of /proc/<pid>/fd). */
function fdCount(pid) {
  return fs.readdirSync(`/proc/${pid}/fd`).length;
}

/** The soft "Max open files" of a pid. */
function fdLimit(pid) {
  const m = /Max open files\s+(\d+)/.exec(fs.readFileSync(`/proc/${pid}/limits`, 'utf8'));
  return m ? Number(m[1]) : NaN;
}

/** Runs a command to completion; resolves {code, stdout, stderr, ms}. */
function run(command, args, options = {}) {
  const started = process.hrtime.bigint();
  return new Promise((resolve) => {
    const child = execFile(command, args, { maxBuffer: 64 << 20, detached: true, ...options }, (error, stdout, stderr) => {
      groups.delete(child.pid);
      resolve({ code: error ? error.code ?? 1 : 0, stdout, stderr, ms: Number(process.hrtime.bigint() - started) / 1e6 });
    });
    groups.add(child.pid);
  });
}

/** bash -c wrapper that raises the fd limit (65536, or the hard limit if lower) and execs node. */
function withFdLimit(nodeArgs) {
  return ['bash', ['-c', 'ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)"; exec "$0" "$@"', process.execPath, ...nodeArgs]];
}

module.exports = {
  sleep, abort, isAborted, checkAborted, adoptPid, releasePid, adoptGroup, releaseGroup, track, untrack, stopAll, spawnGroup, stopGroup, reapGroup, killGroup, Lines, freePort,
  childrenOf, alive, cpuMs, rssKb, rssPartsKb, anonPartsKb, fdCount, fdLimit, run, withFdLimit,
};
