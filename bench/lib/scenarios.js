// The scenarios. Each takes the run context and returns {md, ...numbers the
// summary checks}. Every server is started and stopped inside its scenario.
const fs = require('node:fs');
const http = require('node:http');
const path = require('node:path');
const P = require('./procs');
const S = require('./stats');
const { HandoverServer, ClusterServer, PlainServer, Pm2Server, StartServer, ROOT } = require('./servers');
const { writeHeavyApp } = require('./heavy');
const { runLoad, commandLine, errorColumns } = require('./wrk');
const { startLoad } = require('./load');

/** Starts a server, runs fn(server), always stops it. */
async function using(server, fn) {
  try {
    await server.start();
    return await fn(server);
  } finally {
    await server.stop();
  }
}

/** handover plus the peers that take reloads, as factories. */
function reloadables(ctx) {
  const w = ctx.o.workers;
  const list = [() => new HandoverServer({ workers: w, verbose: ctx.o.verbose })];
  if (ctx.o.peers) list.push(() => new ClusterServer({ workers: w, verbose: ctx.o.verbose }));
  if (ctx.o.peers && ctx.pm2) list.push(() => new Pm2Server({ bin: ctx.pm2.bin, workers: w, verbose: ctx.o.verbose }));
  return list;
}

// R1 / R2: wrk under a reload every second. `factories`: the servers (default
// handover, the peers and plain node; the rollouts and cost scenarios pass
// their own). `pairs` > 1 runs them all that many times, interleaved (A B C, A
// B C, ...), and adds each server's median p99 and its ratio to the first
// factory's server of the same round.
async function underReloads(ctx, close, factories = [...reloadables(ctx), () => new PlainServer({ verbose: ctx.o.verbose })], pairs = 1) {
  const o = ctx.o;
  const wrkOptions = { threads: 2, connections: 128, seconds: o.duration, close };
  const rows = [];
  const byServer = factories.map(() => []);
  let handoverFailed = 0;
  const runs = [];
  for (let round = 0; round < pairs; round++) factories.forEach((make, i) => runs.push({ make, i, round }));
  for (const { make, i, round } of runs) {
    const server = make();
    const baseline = server instanceof PlainServer;
    ctx.log(`${close ? 'R2' : 'R1'} ${server.label}: ${commandLine(wrkOptions)}${baseline ? ', no reloads' : `, a reload every ${o.interval} ms`}`);
    await using(server, async () => {
      await P.sleep(300);
      const driver = baseline ? undefined : server.reloadEvery(o.interval);
      let r;
      let reloads;
      try {
        r = await runLoad({ port: server.port, ...wrkOptions });
      } finally {
        reloads = await driver?.stop();
      }
      const failed = r.socket.connect + r.socket.read + r.socket.write + r.socket.timeout + r.non2xx + S.sum(r.other);
      if (server instanceof HandoverServer) handoverFailed += failed;
      byServer[i].push({ label: server.label, p99: r.p99, failed, reloads: reloads?.reloads });
      rows.push([
        `${baseline ? `${server.label} — baseline, no reloads` : server.label}${pairs > 1 ? ` (round ${round + 1})` : ''}`,
        baseline ? '–' : `${reloads.reloads}${reloads.failed ? ` (+${reloads.failed} failed)` : ''}`,
        S.int(r.requests), S.int(r.rps), r.socket.connect, r.socket.read, r.socket.write, r.socket.timeout,
        `${r.non2xx}${S.sum(r.other) ? ` (other: ${S.codes(r.other)})` : ''}`,
        S.fixed(r.p50, 2), S.fixed(r.p99, 2), S.fixed(r.max, 1),
      ]);
    });
  }
  const md = [
    `Command: \`${commandLine(wrkOptions)}\`; ${close ? 'every request on a new connection (`Connection: close`)' : 'keep-alive'}; ` +
      `a reload every ${o.interval} ms while it runs (SIGHUP to handover and the cluster master; \`pm2 reload\` back to back, ` +
      `at most one a second, since each takes longer). ${errorColumns()}`,
    '',
    S.table(['server', 'reloads', 'requests', 'req/s', 'connect', 'read', 'write', 'timeout', 'non-2xx', 'p50 ms', 'p99 ms', 'max ms'], rows),
  ];
  if (pairs > 1) {
    const first = byServer[0];
    md.push('', `Per server over the ${pairs} rounds: p99 median (range), and p99 ÷ the p99 of ${first[0].label} in the same round.`, '',
      S.table(['server', 'p99 ms median (range)', 'p99 ÷ first, by round', 'failed, by round', 'reloads, by round'], byServer.map((xs) => {
        const p99s = xs.map((x) => x.p99);
        return [
          xs[0].label, `**${S.fixed(S.median(p99s), 1)}** (${S.fixed(Math.min(...p99s), 1)}–${S.fixed(Math.max(...p99s), 1)})`,
          xs.map((x, k) => S.ratio(x.p99, first[k].p99)).join(', '), xs.map((x) => x.failed).join(', '), xs.map((x) => x.reloads ?? '–').join(', '),
        ];
      })));
  }
  return { md: md.join('\n'), handoverFailed, byServer };
}

// R3: keep-alive clients POSTing after random idle gaps, across many reloads.
async function idleRace(ctx) {
  const o = ctx.o;
  const gaps = [5, 50, 500, 2000];
  const rows = [];
  let handoverFailed = 0;
  for (const make of reloadables(ctx)) {
    const server = make();
    ctx.log(`R3 ${server.label}: 64 keep-alive clients, POST after idle gaps, ${o.reloads} reloads`);
    await using(server, async () => {
      const load = startLoad({ port: server.port, connections: 64, mode: 'keep-alive', postBytes: 512, gaps });
      const times = [];
      let reloadFailed = 0;
      let r;
      try {
        await P.sleep(500);
        for (let i = 0; i < o.reloads; i++) {
          P.checkAborted();
          try {
            times.push((await server.reload()).ms);
          } catch (error) {
            reloadFailed++;
            ctx.log(`  reload ${i + 1} failed: ${error.message.split('\n')[0]}`);
          }
          await P.sleep(Math.random() * 300);
        }
        await P.sleep(500);
      } finally {
        r = await load.stop();
      }
      const e = r.errors;
      const other = Object.fromEntries(Object.entries(e).filter(([c]) => !['ECONNRESET', 'socket hang up', 'EPIPE'].includes(c)));
      for (const [status, n] of Object.entries(r.statuses)) if (status !== '200') other[`HTTP ${status}`] = n;
      if (server instanceof HandoverServer) handoverFailed += r.failed;
      rows.push([
        server.label, `${times.length}${reloadFailed ? ` (+${reloadFailed} failed)` : ''}`, S.int(r.requests), S.int(r.ok),
        e.ECONNRESET || 0, e['socket hang up'] || 0, e.EPIPE || 0, S.codes(other) || 0, S.int(S.median(times)),
      ]);
    });
  }
  const md = [
    `64 Node keep-alive clients (http.Agent keepAlive, maxSockets 1), each POSTing 512 bytes after a random idle gap ` +
      `(uniform in 0..${gaps.join(' / 0..')} ms, by client), while the server is reloaded ${o.reloads} times, one after the other ` +
      `(each waited for, then 0–300 ms pause). Gaps stay under Node's 5 s keepAliveTimeout, so any error here comes from the reload.`,
    '',
    S.table(['server', 'reloads', 'requests', '200', 'ECONNRESET', 'socket hang up', 'EPIPE', 'other', 'reload p50 ms'], rows),
  ].join('\n');
  return { md, handoverFailed };
}

function slowRequest(port, ms) {
  return new Promise((resolve) => {
    const t0 = Date.now();
    const req = http.get({ host: '127.0.0.1', port, path: `/slow?ms=${ms}`, agent: false, timeout: 60_000 }, (res) => {
      res.resume();
      res.on('end', () => resolve({ status: res.statusCode, pid: res.headers['x-worker-pid'], ms: Date.now() - t0 }));
      res.on('error', (e) => resolve({ error: e.code || e.message }));
    });
    req.on('timeout', () => req.destroy(Object.assign(new Error('timeout'), { code: 'ETIMEDOUT' })));
    req.on('error', (e) => resolve({ error: e.code || e.message, ms: Date.now() - t0 }));
  });
}

// R4: 20 parallel 3-second requests; a reload 0.5 s in; all must return 200.
async function inFlight(ctx) {
  const rows = [];
  let handoverFailed = 0;
  for (const make of reloadables(ctx)) {
    const server = make();
    ctx.log(`R4 ${server.label}: 20 parallel 3 s requests, reload after 0.5 s`);
    await using(server, async () => {
      const before = server.workerPids();
      const requests = Array.from({ length: 20 }, () => slowRequest(server.port, 3000));
      await P.sleep(500);
      let reload = '–';
      try {
        reload = S.int((await server.reload()).ms);
      } catch (error) {
        reload = `failed: ${error.message.split('\n')[0]}`;
      }
      const results = await Promise.all(requests);
      const ok = results.filter((r) => r.status === 200);
      const errors = {};
      for (const r of results) if (r.status !== 200) errors[r.error || `HTTP ${r.status}`] = (errors[r.error || `HTTP ${r.status}`] || 0) + 1;
      const deadline = Date.now() + 5_000;
      while (before.some(P.alive) && Date.now() < deadline) await P.sleep(50);
      if (server instanceof HandoverServer) handoverFailed += results.length - ok.length;
      rows.push([
        server.label, results.length, ok.length, S.codes(errors) || 0, `${ok.filter((r) => before.includes(Number(r.pid))).length}/${ok.length}`,
        S.int(Math.max(...results.map((r) => r.ms || 0))), reload, before.some(P.alive) ? 'no (still running 5 s later)' : 'yes',
      ]);
    });
  }
  const md = [
    '20 parallel `GET /slow?ms=3000` on their own connections; a reload 0.5 s later (waited for); every request must answer 200.',
    '',
    S.table(['server', 'requests', '200', 'failed', 'answered by the old generation', 'slowest ms', 'reload ms', 'old generation exited'], rows),
  ].join('\n');
  return { md, handoverFailed };
}

// Throughput: the same wrk command against each server, round-robin, median of N runs.
async function throughput(ctx) {
  const o = ctx.o;
  const wrkOptions = { threads: 2, connections: 128, seconds: o.duration };
  const servers = [
    new HandoverServer({ workers: 1, verbose: o.verbose }),
    new HandoverServer({ workers: 2, verbose: o.verbose }),
    new PlainServer({ verbose: o.verbose }),
    new ClusterServer({ workers: 2, verbose: o.verbose }),
  ];
  servers[3].label = 'node cluster (2 workers)';
  const rps = servers.map(() => []);
  try {
    for (const s of servers) await s.start();
    for (const s of servers) await runLoad({ port: s.port, threads: 2, connections: 128, seconds: Math.min(2, o.duration) }); // warm-up
    for (let run = 1; run <= o.runs; run++) {
      for (const [i, s] of servers.entries()) {
        ctx.log(`throughput run ${run}/${o.runs}: ${s.label}`);
        rps[i].push((await runLoad({ port: s.port, ...wrkOptions })).rps);
      }
    }
  } finally {
    for (const s of servers) await s.stop();
  }
  const med = rps.map(S.median);
  const [h1, h2, plain, cluster] = med;
  const rows = servers.map((s, i) => [s.label, ...rps[i].map(S.int), S.int(med[i]), S.ratio(med[i], plain), S.ratio(med[i], cluster)]);
  const md = [
    `Command: \`${commandLine(wrkOptions)}\`, keep-alive, no reloads; the servers run side by side and take turns ` +
      `(after a ${Math.min(2, o.duration)} s warm-up each); median of ${o.runs} run${o.runs > 1 ? 's' : ''}.`,
    '',
    S.table(['server', ...rps[0].map((_, i) => `run ${i + 1} req/s`), 'median req/s', 'vs plain', 'vs cluster'], rows),
  ].join('\n');
  return { md, h1, h2, plain, cluster };
}

// Reload latency next to bare `node -e 0` start-up.
async function reloadLatency(ctx) {
  const o = ctx.o;
  ctx.log(`reload latency: node -e 0 x${o.latencyReloads}, then ${o.latencyReloads} reloads of handover (workers 1)`);
  const bare = [];
  for (let i = 0; i < o.latencyReloads; i++) bare.push((await P.run(process.execPath, ['-e', '0'])).ms);
  const logged = [];
  const wall = [];
  await using(new HandoverServer({ workers: 1, verbose: o.verbose }), async (server) => {
    for (let i = 0; i < o.latencyReloads; i++) {
      const r = await server.reload();
      logged.push(r.ms);
      wall.push(r.wallMs);
      await P.sleep(100);
    }
  });
  const row = (what, v) => [what, v.length, S.fixed(S.pct(v, 50)), S.fixed(S.pct(v, 95)), S.fixed(Math.max(...v))];
  const md = [
    `Sequential reloads of the idle hello app under handover (workers 1), 100 ms apart. "master log" is the time the master ` +
      `reports (signal handled to every new worker ready); "signal to line" is measured here, from kill(SIGHUP) to reading that line.`,
    '',
    S.table(['what', 'n', 'p50 ms', 'p95 ms', 'max ms'], [
      row('handover reload (master log)', logged),
      row('handover reload (signal to line, measured here)', wall),
      row('bare `node -e 0` start-up (spawn to exit)', bare),
    ]),
  ].join('\n');
  return { md, reloadP50: S.pct(logged, 50), reloadP95: S.pct(logged, 95), nodeP50: S.pct(bare, 50) };
}

// Memory: VmRSS of masters and workers after a warm-up, next to plain Node, in
// rounds (each round starts the cases in another order): the hello app under
// the library API (and, with --handover DIR, under that checkout's), and a
// heavy app (bench/lib/heavy.js, about 45 MB of modules) under the library API
// with its handler as a module path and required, under `handover start`, and
// as plain Node. Differences are taken within a round, then the median.
async function memory(ctx) {
  const o = ctx.o;
  const v = o.verbose;
  const warm = { threads: 1, connections: 16, seconds: Math.min(3, o.duration) };
  const heavy = writeHeavyApp();
  const app = { APP_MODULE: heavy.module };
  const cases = [
    { key: 'hello', label: 'hello app, library API', make: () => new HandoverServer({ workers: 1, verbose: v }) },
    { key: 'helloPlain', label: 'hello app, plain node', make: () => new PlainServer({ verbose: v }) },
    ...(o.handover ? [{ key: 'helloOther', label: `hello app, library API of ${o.handover}`, make: () => new HandoverServer({ workers: 1, env: { BENCH_HANDOVER: o.handover }, verbose: v }) }] : []),
    { key: 'lazy', label: 'heavy app, library API, handler as a module path', make: () => new HandoverServer({ workers: 1, env: { ...app, APP_LAZY: '1' }, verbose: v }) },
    { key: 'start', label: 'heavy app, `handover start`', make: () => new StartServer({ workers: 1, env: app, verbose: v }) },
    { key: 'eager', label: 'heavy app, library API, handler required', make: () => new HandoverServer({ workers: 1, env: app, verbose: v }) },
    { key: 'plain', label: 'heavy app, plain node', make: () => new PlainServer({ env: app, verbose: v }) },
  ];
  ctx.log(`memory: ${cases.length} cases x ${o.memoryRounds} rounds (workers 1), ${warm.seconds} s warm-up each`);
  const rss = Object.fromEntries(cases.map((c) => [c.key, { master: [], worker: [] }]));
  const parts = Object.fromEntries(cases.map((c) => [c.key, { master: [], worker: [] }])); // {anon, file} kB
  const sample = (key, side, pid) => {
    rss[key][side].push(P.rssKb(pid));
    parts[key][side].push(P.rssPartsKb(pid));
  };
  const m = {};
  try {
    for (let round = 0; round < o.memoryRounds; round++) {
      for (let i = 0; i < cases.length; i++) {
        const c = cases[(i + round) % cases.length];
        await using(c.make(), async (server) => {
          const plain = server instanceof PlainServer;
          if (c.key === 'hello' && round === 0) m.masterStart = P.rssKb(server.pid);
          await runLoad({ port: server.port, ...warm });
          await P.sleep(1000);
          if (!plain) sample(c.key, 'master', server.pid);
          sample(c.key, 'worker', plain ? server.pid : server.workerPids()[0]);
          if (c.key !== 'hello' || round > 0) return;
          for (let n = 0; n < o.memoryReloads; n++) await server.reload();
          await P.sleep(1000);
          m.masterAfter = P.rssKb(server.pid);
        });
      }
    }
  } finally {
    fs.rmSync(heavy.dir, { recursive: true, force: true });
  }
  const spread = (values) => `${S.mb(Math.min(...values))} – ${S.mb(Math.max(...values))}`;
  const rows = [];
  for (const c of cases) {
    for (const side of ['master', 'worker']) {
      const values = rss[c.key][side];
      if (!values.length) continue;
      const what = side === 'master' ? 'master' : c.key === 'plain' || c.key === 'helloPlain' ? 'the process' : 'worker';
      const part = (name) => S.mb(S.median(parts[c.key][side].map((p) => p[name])));
      rows.push([`${c.label}: ${what}`, values.length, S.mb(S.median(values)), spread(values), part('anon'), part('file')]);
    }
  }
  /** Per round a - b (kB), as [median, min, max]. */
  const diff = (a, b) => {
    const d = a.map((x, i) => x - b[i]);
    return [S.median(d), Math.min(...d), Math.max(...d)];
  };
  const diffs = [
    ['API master (module path) − `handover start` master, heavy app', rss.lazy.master, rss.start.master],
    ['API master (handler required) − `handover start` master, heavy app', rss.eager.master, rss.start.master],
    ['API master (handler required) − API master (module path), heavy app', rss.eager.master, rss.lazy.master],
    ['API worker − plain node, hello app', rss.hello.worker, rss.helloPlain.worker],
    ...(o.handover ? [[`API worker of ${o.handover} − plain node, hello app`, rss.helloOther.worker, rss.helloPlain.worker]] : []),
    ...(o.handover ? [[`API worker − API worker of ${o.handover}, hello app`, rss.hello.worker, rss.helloOther.worker]] : []),
    ['API worker (module path) − plain node, heavy app', rss.lazy.worker, rss.plain.worker],
    ['`handover start` worker − plain node, heavy app', rss.start.worker, rss.plain.worker],
    ['plain node, heavy app − plain node, hello app (the heavy modules)', rss.plain.worker, rss.helloPlain.worker],
  ].map(([what, a, b]) => {
    const [med, lo, hi] = diff(a, b);
    return [what, S.mb(med), `${S.mb(lo)} – ${S.mb(hi)}`];
  });
  m.master = S.median(rss.hello.master);
  m.plain = S.median(rss.helloPlain.worker);
  m.lazyVsStart = diff(rss.lazy.master, rss.start.master)[0];
  const md = [
    `VmRSS from /proc/<pid>/status, after a warm-up (\`${commandLine(warm)}\`) and 1 s of rest, workers 1. The master serves no traffic itself. ` +
      `${o.memoryRounds} round(s); each round starts every case once, in an order shifted by one each round; a difference is taken within each round, then the median and the spread over rounds. ` +
      'RssAnon: anonymous memory (V8 heap, malloc); RssFile: mapped files (the node binary\'s code, the addon), shared through the page cache. ' +
      'The heavy app is bench/lib/heavy.js: generated modules (code, strings, tables) behind the hello handler.',
    '',
    S.table(['process', 'n', 'median VmRSS', 'min – max', 'median RssAnon', 'median RssFile'], rows),
    '',
    S.table(['difference', 'median', 'min – max'], diffs),
    '',
    S.table(['hello app, library API master (first round)', 'VmRSS'], [
      ['just ready', S.mb(m.masterStart)],
      [`after the warm-up and ${o.memoryReloads} more reloads`, S.mb(m.masterAfter)],
    ]),
  ].join('\n');
  return { md, ...m };
}

/** Starts the many-connections client under a raised fd limit; returns ask(message) -> reply. */
async function manyConnClient() {
  const [command, args] = P.withFdLimit([path.join(ROOT, 'bench', 'lib', 'manyconn.js')]);
  const child = P.spawnGroup(command, args, { stdio: ['ignore', 'inherit', 'inherit', 'ipc'] });
  const replies = [];
  let waiting;
  child.on('message', (m) => (waiting ? (waiting(m), (waiting = undefined)) : replies.push(m)));
  const next = (timeoutMs) => new Promise((resolve, reject) => {
    if (replies.length) return resolve(replies.shift());
    const timer = setTimeout(() => reject(new Error(`the many-connections client did not answer within ${timeoutMs} ms`)), timeoutMs);
    waiting = (m) => (clearTimeout(timer), resolve(m));
    child.exited.then(() => reject(new Error('the many-connections client exited')));
  });
  await next(10_000);
  const ask = async (message, timeoutMs = 120_000) => {
    child.send(message);
    const m = await next(timeoutMs);
    if (m.error) throw new Error(`many-connections client: ${m.error}`);
    return m.result;
  };
  const stop = async () => {
    if (child.connected) child.send({ cmd: 'exit' });
    const t = setTimeout(() => P.killGroup(child.pid, 'SIGKILL'), 5_000);
    await child.exited;
    clearTimeout(t);
    await P.reapGroup(child.pid, 1_000);
  };
  return { ask, stop, pid: child.pid };
}

// Many idle keep-alive connections across a reload, drained as before
// (`migrate: false`); bench/migrate.js measures them moving.
async function manyConnections(ctx) {
  const o = ctx.o;
  const rows = [];
  let ok = true;
  const check = (what, expected, result, good) => {
    ok = ok && good;
    rows.push([what, expected, result, good ? 'yes' : '**no**']);
  };
  const server = new HandoverServer({ workers: 1, fdLimit: true, env: { KEEPALIVE_MS: '120000', NO_MIGRATE: '1' }, verbose: o.verbose });
  let count = o.connections;
  let limits;
  await using(server, async () => {
    const client = await manyConnClient();
    P.track(client);
    try {
      const oldPids = server.workerPids();
      limits = { master: P.fdLimit(server.pid), worker: P.fdLimit(oldPids[0]), client: P.fdLimit(client.pid) };
      const room = Math.min(limits.worker, limits.client) - 200;
      if (count > room) {
        ctx.log(`many connections: the fd limit allows ${room}, not ${count}`);
        count = room;
      }
      ctx.log(`many connections: opening ${count} keep-alive connections`);
      const opened = await client.ask({ cmd: 'open', port: server.port, count, concurrency: 200 });
      check(`open ${S.int(count)} keep-alive connections, one GET each`, 'all 200, kept open',
        `${S.int(opened.ok)} in ${S.int(opened.ms)} ms${S.codes(opened.errors) ? `; ${S.codes(opened.errors)}` : ''}`, opened.ok === count);
      ctx.log('many connections: reload');
      const reload = await server.reload();
      const newPids = server.workerPids().filter((p) => !oldPids.includes(p));
      const fresh = await client.ask({ cmd: 'fresh', count: 200 });
      const byNew = Object.entries(fresh.pids).filter(([p]) => newPids.includes(Number(p))).reduce((n, [, c]) => n + c, 0);
      check('reload with all of them open', 'new generation ready', `ready in ${S.int(reload.ms)} ms`, true);
      check('200 new connections after the reload', 'all served by the new generation',
        `${byNew}/200 by the new generation${S.codes(fresh.errors) ? `; ${S.codes(fresh.errors)}` : ''}`, byNew === 200);
      ctx.log(`many connections: one more request on each of the ${count} old connections`);
      const again = await client.ask({ cmd: 'again' });
      const byOld = Object.entries(again.pids).filter(([p]) => oldPids.includes(Number(p))).reduce((n, [, c]) => n + c, 0);
      check('next request on every old connection', 'all 200 from the old generation',
        `${S.int(again.ok)} ok (${S.int(byOld)} by the old generation)${S.codes(again.errors) ? `; errors: ${S.codes(again.errors)}` : '; no errors'}`,
        again.ok === opened.ok && byOld === again.ok && S.sum(again.errors) === 0);
      check('... answered with `Connection: close`', 'all', S.int(again.closeHeader), again.closeHeader === opened.ok);
      check('... then closed by the server (FIN)', 'all', S.int(again.closedByServer), again.closedByServer === opened.ok);
      const deadline = Date.now() + 10_000;
      while (oldPids.some(P.alive) && Date.now() < deadline) await P.sleep(50);
      check('old generation exits once its connections are gone', 'within 10 s', oldPids.some(P.alive) ? 'still running' : 'exited', !oldPids.some(P.alive));
    } finally {
      await client.stop();
      P.untrack(client);
    }
  });
  const md = [
    `handover (workers 1) and the client both run under \`bash -c 'ulimit -n 65536 || ulimit -n <hard limit>; exec node ...'\` ` +
      `(fd limits in effect: master ${limits?.master}, worker ${limits?.worker}, client ${limits?.client}). ` +
      `The app's keepAliveTimeout is raised to 120 s so that the connections stay idle-open for the whole scenario ` +
      `(with Node's 5 s default they would be closed by normal operation before the reload).`,
    '',
    S.table(['check', 'expected', 'result', 'met'], rows),
  ].join('\n');
  return { md, ok, count };
}

module.exports = { underReloads, idleRace, inFlight, throughput, reloadLatency, memory, manyConnections };
