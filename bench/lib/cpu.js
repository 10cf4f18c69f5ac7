// The `cpu` scenario (issue 24): the CPU time one reload costs, handover
// against Node cluster's rolling restart, the same hello app and worker count.
// Each round starts a fresh master of each, lets them settle, then reloads
// them in turn, RELOADS times each (each reload waited for, and the old
// generation gone, before the next), no load. CPU is read from /proc/<master>/stat: the master's own
// utime + stime, and cutime + cstime, which the kernel adds up for every
// child the master has reaped (so every exited worker counts, whole), plus
// the live workers' utime + stime. The rate of the same reading over IDLE_MS
// afterwards, times the reloads' duration, is subtracted (heartbeats,
// timers), so what is left is what the reloads cost. The servers run side
// by side and are reloaded in turn, one reload each (oneRound).
const fs = require('node:fs');
const P = require('./procs');
const S = require('./stats');
const { HandoverServer, ClusterServer } = require('./servers');

const TICK_MS = 10; // USER_HZ is 100 on Linux
const IDLE_MS = 5_000;

/** CPU ms of `pid`: {self: utime + stime, reaped: cutime + cstime}. */
function cpuOf(pid) {
  const stat = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
  const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  return { self: (Number(f[11]) + Number(f[12])) * TICK_MS, reaped: (Number(f[13]) + Number(f[14])) * TICK_MS };
}

/** The master, its reaped children and its live children, ms. */
function treeCpu(server) {
  const master = cpuOf(server.pid);
  let live = 0;
  for (const pid of server.workerPids()) {
    try {
      live += cpuOf(pid).self;
    } catch {} // exited between the scan and the read: counted once reaped
  }
  return { master: master.self, workers: master.reaped + live };
}

const minus = (a, b) => ({ master: a.master - b.master, workers: a.workers - b.workers });

/** Waits until the master has exactly `n` children, none of them in `old`. */
async function onlyNew(server, n, old, timeoutMs = 60_000) {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const pids = server.workerPids();
    if (pids.length === n && !pids.some((p) => old.has(p))) return pids;
    if (Date.now() > deadline) throw new Error(`${server.label}: the old generation did not exit within ${timeoutMs} ms`);
    await P.sleep(20);
  }
}

/**
 * One round: every server started side by side, then `reloads` turns, each
 * reloading every server once in turn (the reload waited for, and the old
 * generation gone, before the next server's). Reload by reload, so a change
 * in what the machine gives this VM (other tenants, clock speed) falls on
 * every server alike; the servers not reloading meanwhile are idle, which
 * the idle rate takes off.
 */
async function oneRound(ctx, makers, reloads, workers) {
  const servers = makers.map((make) => make());
  try {
    for (const server of servers) await server.start();
    const pids = [];
    for (const server of servers) pids.push(await onlyNew(server, workers, new Set()));
    await P.sleep(1000);
    const t0 = servers.map(treeCpu);
    const started = Date.now();
    const ms = servers.map(() => []);
    for (let i = 0; i < reloads; i++) {
      for (const [k, server] of servers.entries()) {
        P.checkAborted();
        ms[k].push((await server.reload()).ms);
        pids[k] = await onlyNew(server, workers, new Set(pids[k]));
      }
    }
    await P.sleep(300); // the masters' work after the last exit (reaping, a collection) counts too
    const t1 = servers.map(treeCpu);
    const wall = Date.now() - started;
    await P.sleep(IDLE_MS);
    return servers.map((server, k) => {
      const idle = minus(treeCpu(server), t1[k]);
      const scale = wall / IDLE_MS;
      const cost = minus(minus(t1[k], t0[k]), { master: idle.master * scale, workers: idle.workers * scale });
      return { label: server.label, master: cost.master / reloads, workers: cost.workers / reloads, idle: (idle.master + idle.workers) / IDLE_MS * 1000, reloadMs: S.median(ms[k]) };
    });
  } finally {
    await Promise.allSettled(servers.map((server) => server.stop()));
  }
}

/** The handover servers to compare (the default, or what `variants` names) and the cluster peer. */
async function cpuPerReload(ctx, variants = [{}]) {
  const o = ctx.o;
  const reloads = o.cpuReloads;
  const w = o.workers;
  const makers = [
    ...variants.map((env) => () => new HandoverServer({ workers: w, env, verbose: o.verbose })),
    () => new ClusterServer({ workers: w, verbose: o.verbose }),
  ];
  const runs = makers.map(() => []);
  for (let round = 0; round < o.pairs; round++) {
    ctx.log(`cpu round ${round + 1}/${o.pairs}: ${makers.length} servers side by side, ${reloads} reloads each, in turn`);
    try {
      const results = await oneRound(ctx, makers, reloads, w);
      results.forEach((r, i) => runs[i].push(r));
    } finally {
      await P.stopAll();
    }
  }
  const total = (r) => r.master + r.workers;
  const cluster = runs[runs.length - 1].map(total);
  const spread = (xs) => `${S.fixed(Math.min(...xs), 0)}–${S.fixed(Math.max(...xs), 0)}`;
  const rows = runs.map((rs) => {
    const t = rs.map(total);
    return [
      rs[0].label, t.map((x) => S.fixed(x, 0)).join(', '), `**${S.fixed(S.median(t), 0)}** (${spread(t)})`,
      S.fixed(S.median(rs.map((r) => r.master)), 1), S.fixed(S.median(rs.map((r) => r.workers)), 1),
      S.ratio(S.median(rs.map((r, k) => total(r) / cluster[k])), 1), rs.map((r, k) => S.ratio(total(r), cluster[k])).join(', '),
      S.fixed(S.median(rs.map((r) => r.idle)), 1), S.int(S.median(rs.map((r) => r.reloadMs))),
    ];
  });
  const md = [
    `${o.pairs} rounds; in each, the ${makers.length} servers below run side by side, each a fresh master with ${w} workers of the hello app, ` +
      `and ${reloads} times in turn each is reloaded once (SIGHUP, the new generation ready and the old one exited before the next server's reload), no load. ` +
      'Reload by reload, so what the machine gives this VM (other tenants, clock speed) changes alike for all of them. ' +
      'CPU = the master\'s utime + stime, plus cutime + cstime (every worker it reaped, whole) and the live workers\' utime + stime, from /proc in 10 ms ticks; ' +
      `the rate of the same reading over ${IDLE_MS / 1000} s idle afterwards, times the rounds' duration, is subtracted. Per reload = that ÷ reloads. ` +
      'The ratio divides by the cluster figure of the same round; its median is over the rounds.',
    '',
    S.table(['server', 'CPU ms per reload, by round', 'median (range)', 'master ms', 'workers ms', 'median ratio to cluster', 'per round / cluster', 'idle CPU ms per s', 'reload ms (median)'], rows),
  ].join('\n');
  return { md, runs };
}

module.exports = { cpuPerReload, cpuOf };
