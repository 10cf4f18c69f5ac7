// The `faults` scenario (issue 9): what clients see when workers die under
// load, for handover, a Node cluster and pm2, each with 2 workers.
//   kill:       the longest-lived worker is SIGKILLed every 2 s
//   crash-loop: slot 1's worker is SIGKILLed once and every new worker of
//               slot 1 then throws at start (apps/fault.js)
// The load is the Node client (lib/load.js) with `Connection: close`, so every
// request is a new connection; a request not answered within the client
// timeout fails. Before each kill the victim is frozen (SIGSTOP) and the
// connections it holds are read (its socket inodes matched against `ss`):
// a failed request on one of those, in flight at the kill, is counted as
// "in flight on a killed worker"; every other failure is a new connection the
// server lost. The slowest new connection is the longest time from request
// start (connect included) to the response headers among the answered ones.
const { execFileSync } = require('node:child_process');
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');
const P = require('./procs');
const S = require('./stats');
const { HandoverServer, ClusterServer, Pm2Server } = require('./servers');
const { startLoad } = require('./load');

const CASES = {
  kill: 'a worker SIGKILLed every 2 s',
  'crash-loop': 'slot 1 crash-looping (killed once, then every new worker of slot 1 throws at start)',
};

/** Client ports of the established connections `pid` holds on the server's `port` (call while it is stopped). */
function heldPorts(pid, port) {
  const inodes = new Set();
  for (const fd of fs.readdirSync(`/proc/${pid}/fd`)) {
    try {
      const m = /^socket:\[(\d+)\]$/.exec(fs.readlinkSync(`/proc/${pid}/fd/${fd}`));
      if (m) inodes.add(m[1]);
    } catch {}
  }
  const out = execFileSync('ss', ['-tnHe', 'state', 'established', 'sport', '=', `:${port}`], { encoding: 'utf8' });
  const ports = new Set();
  for (const line of out.split('\n')) {
    const ino = /\bino:(\d+)/.exec(line);
    const peer = /\s127\.0\.0\.1:\d+\s+127\.0\.0\.1:(\d+)\s/.exec(line);
    if (ino && peer && inodes.has(ino[1])) ports.add(Number(peer[1]));
  }
  return ports;
}

/** SIGSTOP, note the connections it holds, SIGKILL. */
function killCounting(pid, port) {
  try {
    process.kill(pid, 'SIGSTOP');
  } catch {
    return undefined;
  }
  const at = Date.now();
  let ports = new Set();
  try {
    ports = heldPorts(pid, port);
  } finally {
    process.kill(pid, 'SIGKILL');
  }
  return { pid, at, ports };
}

/** Start time of a pid (clock ticks since boot), for "longest-lived". */
function startTime(pid) {
  try {
    const stat = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
    return Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[19]);
  } catch {
    return Infinity;
  }
}

function readPid(file) {
  try {
    return Number(fs.readFileSync(file, 'utf8')) || undefined;
  } catch {
    return undefined;
  }
}

/** One server, one case: returns the table row's numbers. */
async function runCase(ctx, make, kind) {
  const o = ctx.o;
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'handover-bench-faults-'));
  const server = make({ FAULT_DIR: dir });
  const kills = [];
  let r;
  try {
    ctx.log(`faults ${kind} ${server.label}: ${o.duration} s, ${o.faultConnections} loops of Connection: close, ${o.faultTimeout} ms timeout`);
    await server.start();
    await P.sleep(300);
    const load = startLoad({
      port: server.port, connections: o.faultConnections, mode: 'close', timeoutMs: o.faultTimeout, record: true, durationMs: o.duration * 1000,
    });
    try {
      const end = Date.now() + o.duration * 1000 - 1000;
      await P.sleep(1000);
      if (kind === 'kill') {
        while (Date.now() < end - 500) {
          P.checkAborted();
          const pids = server.workerPids().sort((a, b) => startTime(a) - startTime(b));
          const k = pids.length ? killCounting(pids[0], server.port) : undefined;
          if (k) kills.push(k);
          await P.sleep(Math.min(2000, end - Date.now()));
        }
      } else {
        fs.writeFileSync(path.join(dir, 'crash-slot-1'), '');
        const pid = readPid(path.join(dir, 'slot-1.pid'));
        const k = pid && killCounting(pid, server.port);
        if (!k) throw new Error(`no live worker of slot 1 to kill (pid file ${path.join(dir, 'slot-1.pid')})`);
        kills.push(k);
      }
    } finally {
      r = await load.result.catch((error) => {
        load.child.kill('SIGKILL');
        throw error;
      });
    }
  } finally {
    await server.stop();
    fs.rmSync(dir, { recursive: true, force: true });
  }
  const inFlight = {};
  const fresh = {};
  for (const f of r.failures) {
    const held = kills.some((k) => k.ports.has(f.port) && f.start <= k.at && f.end >= k.at);
    const into = held ? inFlight : fresh;
    into[f.code] = (into[f.code] || 0) + 1;
  }
  for (const [status, n] of Object.entries(r.statuses)) if (status !== '200') fresh[`HTTP ${status}`] = n;
  return { label: server.label, r, kills: kills.length, inFlight, fresh };
}

/** Both cases for handover, the cluster peer and pm2 (2 workers each); returns {md}. */
async function faults(ctx) {
  const o = ctx.o;
  const w = 2;
  const makers = [(env) => new HandoverServer({ workers: w, env: { ...env, ...o.handoverEnv }, verbose: o.verbose })];
  if (o.peers) makers.push((env) => new ClusterServer({ workers: w, env, verbose: o.verbose }));
  if (o.peers && ctx.pm2) makers.push((env) => new Pm2Server({ bin: ctx.pm2.bin, workers: w, env, verbose: o.verbose }));
  const sections = [];
  const results = {};
  for (const kind of Object.keys(CASES)) {
    const rows = [];
    results[kind] = [];
    for (const make of makers) {
      P.checkAborted();
      let x;
      try {
        x = await runCase(ctx, make, kind);
      } catch (error) {
        ctx.log(`faults ${kind}: ${error.stack}`);
        rows.push([make({}).label, `failed: ${error.message.split('\n')[0]}`, '', '', '', '', '', '', '']);
        continue;
      } finally {
        await P.stopAll();
      }
      results[kind].push(x);
      const fb = x.r.firstByte;
      rows.push([
        x.label, x.kills, S.int(x.r.requests), S.int(x.r.ok),
        `${S.sum(x.inFlight)}${S.sum(x.inFlight) ? ` (${S.codes(x.inFlight)})` : ''}`,
        `**${S.sum(x.fresh)}**${S.sum(x.fresh) ? ` (${S.codes(x.fresh)})` : ''}`,
        S.fixed(fb.max, 0), S.fixed(fb.p99, 1), fb.over1s,
      ]);
    }
    sections.push([
      `### ${CASES[kind]}`,
      '',
      S.table(['server (2 workers)', 'kills', 'requests', '200', 'failed: in flight on a killed worker', 'failed: other (new connections)',
        'slowest answered ms (connect + first byte)', 'p99 first byte ms', 'answered after > 1 s'], rows),
    ].join('\n'));
  }
  const md = [
    `Load: bench/lib/load.js, ${o.faultConnections} closed loops, each request on a new connection (\`Connection: close\`), ` +
      `GET /, a request not answered within ${o.faultTimeout} ms fails (ETIMEDOUT); ${o.duration} s per run, the faults from 1 s in ` +
      'to 1 s before the end. "Kills": SIGKILLs the bench sent (kill case: the longest-lived worker every 2 s; crash-loop case: ' +
      'slot 1\'s worker once, after FAULT_DIR/crash-slot-1 was created, so every later worker of slot 1 throws at start; see ' +
      'bench/apps/fault.js). Each victim is frozen (SIGSTOP) just before its SIGKILL and the connections it holds are read ' +
      '(its socket inodes matched in `ss -tne`); a failed request on one of those, in flight at that kill, counts as "in flight ' +
      'on a killed worker". Every other failure is a connection the server lost although no process holding it was killed ' +
      '(it waited in an accept queue nobody served, or was refused). Slowest answered: longest time from request start ' +
      '(connect included) to the response headers among the 200s; it cannot exceed the timeout. Cluster: ' +
      'bench/peers/cluster-rolling.js (a dead worker is re-forked at once, in the same slot); pm2: cluster mode with its ' +
      'default restart policy; handover: bench/apps/handover.js with its default options.',
    '',
    sections.join('\n\n'),
  ].join('\n');
  return { md, results };
}

module.exports = { faults };
