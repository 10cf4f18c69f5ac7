// The `rollouts` scenario (issue 13): what `rollout: 'phased'` and `maxMemory`
// change, each part against the same app under every server.
//   peak:    a reload of 4 workers that each hold HOLD_MB (touched at start):
//            the most worker processes and the most total worker VmRSS alive at
//            once (the master's children, read from /proc every 50 ms),
//            parallel vs phased; no load, so old workers drain at once
//   latency: R1 (wrk -t2 -c128, keep-alive, a reload every second) for handover
//            parallel, handover phased, the cluster peer and pm2, one after the other
//   leak:    every request retains LEAK_KB on the JS heap, heap capped at
//            LEAK_HEAP_MB for every server; handover's maxMemory against pm2's
//            max_memory_restart at the same threshold, 2 workers, the same
//            Node client load; failed requests, recycles, restarts, crashes
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');
const P = require('./procs');
const S = require('./stats');
const { HandoverServer, ClusterServer, Pm2Server } = require('./servers');
const { underReloads } = require('./scenarios');
const { startLoad } = require('./load');

const PEAK = { workers: 4, holdMb: 50, sampleMs: 50, reloads: 3 };
const LEAK = { workers: 2, leakKb: 1024, heapMb: 512, thresholdMb: 200, connections: 16, gapMs: 200, timeoutMs: 5000 };

/** Samples the master's children every `everyMs`: count and summed VmRSS, their peaks, and the longest gap between samples. */
function sampler(masterPid, everyMs) {
  const s = { peakCount: 0, peakKb: 0, samples: 0, maxGapMs: 0, last: Date.now() };
  const timer = setInterval(() => {
    const now = Date.now();
    s.maxGapMs = Math.max(s.maxGapMs, now - s.last);
    s.last = now;
    let kb = 0;
    const pids = P.childrenOf(masterPid);
    for (const pid of pids) {
      try {
        kb += P.rssKb(pid);
      } catch {} // exited between the scan and the read
    }
    s.samples++;
    s.peakCount = Math.max(s.peakCount, pids.length);
    s.peakKb = Math.max(s.peakKb, kb);
  }, everyMs);
  return { stats: s, stop: () => clearInterval(timer) };
}

const totalKb = (pids) => pids.reduce((n, pid) => n + (P.alive(pid) ? P.rssKb(pid) : 0), 0);

/** Waits until the master has exactly `n` children, none of them in `gone`, each holding at least `minKb`. */
async function settled(server, n, gone, minKb, timeoutMs = 60_000) {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const pids = server.workerPids();
    if (pids.length === n && !pids.some((p) => gone.has(p)) && pids.every((p) => P.rssKb(p) >= minKb)) return pids;
    if (Date.now() > deadline) throw new Error(`${server.label}: not back to ${n} workers holding ${minKb} kB within ${timeoutMs} ms (children ${pids.join(', ')})`);
    await P.sleep(50);
  }
}

async function peak(ctx, rollout) {
  const server = new HandoverServer({ workers: PEAK.workers, env: { ROLLOUT: rollout, HOLD_MB: String(PEAK.holdMb) }, verbose: ctx.o.verbose });
  ctx.log(`rollouts peak ${server.label}: ${PEAK.reloads} reloads, /proc sampled every ${PEAK.sampleMs} ms`);
  const runs = [];
  try {
    await server.start();
    let pids = await settled(server, PEAK.workers, new Set(), PEAK.holdMb * 1024);
    for (let i = 0; i < PEAK.reloads; i++) {
      P.checkAborted();
      const before = totalKb(pids);
      const s = sampler(server.pid, PEAK.sampleMs);
      let reload;
      try {
        reload = await server.reload();
        pids = await settled(server, PEAK.workers, new Set(pids), PEAK.holdMb * 1024);
      } finally {
        s.stop();
      }
      runs.push({ before, after: totalKb(pids), ms: reload.ms, ...s.stats });
    }
  } finally {
    await server.stop();
  }
  return { label: server.label, runs };
}

/** pm2's log lines since start: memory restarts and exits by code/signal. */
function pm2Events(home) {
  let text = '';
  try {
    text = fs.readFileSync(path.join(home, 'pm2.log'), 'utf8');
  } catch {}
  const exits = {};
  for (const m of text.matchAll(/App \[[^\]]+\] exited with code \[(\w+)\] via signal \[(\w+)\]/g)) {
    const key = `code ${m[1]} ${m[2]}`;
    exits[key] = (exits[key] || 0) + 1;
  }
  return { memoryRestarts: (text.match(/restarted because it exceeds --max-memory-restart/g) || []).length, exits };
}

async function leakCase(ctx, server) {
  ctx.log(`rollouts leak ${server.label}: ${LEAK.connections} keep-alive loops, ${ctx.o.duration} s`);
  const events = { recycled: 0, recycleFailed: 0, crashed: 0 };
  let r;
  let pm2;
  try {
    await server.start();
    server.lines?.on((line) => {
      if (/recycled slot \d+/.test(line)) events.recycled++;
      if (/recycling .* failed/.test(line)) events.recycleFailed++;
      if (/respawning slot \d+/.test(line)) events.crashed++;
    });
    await P.sleep(300);
    const load = startLoad({
      port: server.port, connections: LEAK.connections, mode: 'keep-alive', gaps: [LEAK.gapMs], timeoutMs: LEAK.timeoutMs, durationMs: ctx.o.duration * 1000,
    });
    r = await load.result;
    if (server instanceof Pm2Server) {
      pm2 = pm2Events(server.home);
      const list = await server.pm2('jlist');
      try {
        pm2.restarts = JSON.parse(list.stdout).reduce((n, p) => n + p.pm2_env.restart_time, 0);
      } catch {}
    }
  } finally {
    await server.stop();
  }
  const failed = { ...r.errors };
  for (const [status, n] of Object.entries(r.statuses)) if (status !== '200') failed[`HTTP ${status}`] = n;
  return { label: server.label, r, failed, events, pm2 };
}

async function leak(ctx) {
  const env = { LEAK_KB: String(LEAK.leakKb), NODE_OPTIONS: `--max-old-space-size=${LEAK.heapMb}` };
  const threshold = LEAK.thresholdMb * 2 ** 20;
  const o = ctx.o;
  const makers = [() => new HandoverServer({ workers: LEAK.workers, env: { ...env, MAX_MEMORY: String(threshold) }, verbose: o.verbose })];
  if (ctx.pm2) {
    const startArgs = ['--max-memory-restart', `${LEAK.thresholdMb}M`];
    makers.push(() => new Pm2Server({ bin: ctx.pm2.bin, workers: LEAK.workers, env, startArgs, verbose: o.verbose }));
    makers.push(() => Object.assign(
      new Pm2Server({ bin: ctx.pm2.bin, workers: LEAK.workers, env: { ...env, PM2_WORKER_INTERVAL: '1000' }, startArgs, verbose: o.verbose }),
      { label: `pm2 (cluster mode, ${LEAK.workers} instances, ${startArgs.join(' ')}, PM2_WORKER_INTERVAL=1000)` },
    ));
  }
  const rows = [];
  for (const make of makers) {
    P.checkAborted();
    let x;
    try {
      x = await leakCase(ctx, make());
    } catch (error) {
      ctx.log(`rollouts leak: ${error.stack}`);
      rows.push([make().label, `failed: ${error.message.split('\n')[0]}`, '', '', '', '', '', '']);
      continue;
    } finally {
      await P.stopAll();
    }
    const restarts = x.pm2
      ? `${x.pm2.memoryRestarts} memory restarts (pm2 restart_time total ${x.pm2.restarts ?? '?'}; exits: ${S.codes(x.pm2.exits) || 'none'})`
      : `${x.events.recycled} recycles${x.events.recycleFailed ? `, ${x.events.recycleFailed} failed recycles` : ''}, ${x.events.crashed} crashes`;
    rows.push([
      x.label, S.int(x.r.requests), S.int(x.r.ok), `**${S.sum(x.failed)}**${S.sum(x.failed) ? ` (${S.codes(x.failed)})` : ''}`,
      restarts, S.fixed(x.r.p99, 1), S.fixed(x.r.max, 0), S.fixed(x.r.maxGap, 0),
    ]);
  }
  return [
    `Every request retains ${LEAK.leakKb} kB on the JS heap (bench/apps/handler.js, LEAK_KB=${LEAK.leakKb}); every server's ` +
      `processes run with NODE_OPTIONS=--max-old-space-size=${LEAK.heapMb}, so a worker nobody recycles dies of V8's heap limit. ` +
      `Threshold ${LEAK.thresholdMb} MB RSS for both: handover \`maxMemory: ${threshold}\`, pm2 \`--max-memory-restart ${LEAK.thresholdMb}M\` ` +
      `(pm2 checks every 30 s by default, PM2_WORKER_INTERVAL; the last row sets it to 1 s). ${LEAK.workers} workers each. ` +
      `Load: bench/lib/load.js, ${LEAK.connections} keep-alive loops, each waiting a random 0–${LEAK.gapMs} ms before its next GET ` +
      `(so the leak rate is bounded: requests ÷ duration × 1 MB, shared by the ${LEAK.workers} workers), a request not answered within ${LEAK.timeoutMs} ms fails; ${o.duration} s per server. ` +
      'Failed = every request that did not end in a 200. handover counts: master log lines "recycled slot" and "respawning slot" (a crash); ' +
      'pm2: its log\'s "exceeds --max-memory-restart" and "exited with code" lines.',
    '',
    S.table(['server', 'requests', '200', 'failed', 'recycles / restarts', 'p99 ms', 'max ms', 'longest pause ms'], rows),
  ].join('\n');
}

/** The three parts; returns {md}. */
async function rollouts(ctx) {
  const o = ctx.o;
  const sections = [];
  const load = () => os.loadavg().map((l) => l.toFixed(2)).join(' ');
  const peaks = [];
  const peakLoad = load();
  for (const rollout of ['parallel', 'phased']) {
    try {
      peaks.push(await peak(ctx, rollout));
    } finally {
      await P.stopAll();
    }
  }
  const rows = peaks.map(({ label, runs }) => [
    label, runs.map((x) => x.peakCount).join(', '), runs.map((x) => S.mb(x.peakKb)).join(', '),
    S.mb(S.median(runs.map((x) => x.before))), S.ratio(Math.max(...runs.map((x) => x.peakKb)), S.median(runs.map((x) => x.before))),
    runs.map((x) => S.int(x.ms)).join(', '), Math.max(...runs.map((x) => x.maxGapMs)),
  ]);
  sections.push([
    `### Peak workers and RSS during a reload of ${PEAK.workers} workers`,
    '',
    `Load average before: ${peakLoad}. Each worker touches ${PEAK.holdMb} MB at start (HOLD_MB=${PEAK.holdMb}) and holds it. ` +
      `${PEAK.reloads} reloads each (SIGHUP, waited for), no load. During each reload, until the master has ${PEAK.workers} ` +
      `children again, none of them an old one, every ${PEAK.sampleMs} ms the bench lists the master's children (/proc/*/stat) ` +
      'and sums their VmRSS. A value per reload.',
    '',
    S.table(['server', 'peak worker processes', 'peak total worker RSS', 'total RSS before (median)', 'peak / before', 'reload ms (master log)', 'longest sample gap ms'], rows),
  ].join('\n'));
  const latencyLoad = load();
  const w = o.workers;
  const r1 = await underReloads(ctx, false, [
    () => new HandoverServer({ workers: w, env: { ROLLOUT: 'parallel' }, verbose: o.verbose }),
    () => new HandoverServer({ workers: w, env: { ROLLOUT: 'phased' }, verbose: o.verbose }),
    () => new ClusterServer({ workers: w, verbose: o.verbose }),
    ...(ctx.pm2 ? [() => new Pm2Server({ bin: ctx.pm2.bin, workers: w, verbose: o.verbose })] : []),
  ]);
  await P.stopAll();
  sections.push(`### R1 latency: parallel vs phased, next to the peers (${w} workers each)\n\nLoad average before: ${latencyLoad}. ${r1.md}`);
  const leakLoad = load();
  sections.push(`### A leaking worker: maxMemory vs pm2's max_memory_restart\n\nLoad average before: ${leakLoad}. ${await leak(ctx)}`);
  return { md: sections.join('\n\n') };
}

module.exports = { rollouts };
