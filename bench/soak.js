#!/usr/bin/env node
// `npm run soak` (or `node bench/soak.js [flags]`): the handover hello app
// reloaded 500 times, one after the other (each waited for until the new
// generation is ready), under steady keep-alive load from the Node client, all
// on 127.0.0.1. Reports the requests and failures by error, the master's VmRSS
// and open fds at reload 1, 100 and the last, the longest pause the client saw
// and the slowest request. Prints a markdown section and puts it between the
// soak markers of bench/RESULTS.md (run.js keeps that section when it rewrites
// the file). Everything it starts is stopped at the end, also on failure and
// on Ctrl-C. See --help.
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');
const P = require('./lib/procs');
const S = require('./lib/stats');
const R = require('./lib/report');
const { HandoverServer, StartServer } = require('./lib/servers');
const { startLoad } = require('./lib/load');

const HELP = `usage: node bench/soak.js [flags]      (npm run soak -- [flags])
  --reloads N        reloads, one after the other (default 500)
  --every N          a checkpoint (old generation gone, then sampled) every N reloads (default 100)
  --connections N    keep-alive connections of the load client (default 32)
  --no-load          no load client (isolates what reloads alone cost the master)
  --workers N        handover workers (default 1)
  --start            run the CLI master, \`handover start\` with the plain hello app (bench/apps/plain.js),
                     instead of the library API's (bench/apps/handover.js)
  --memory           at each checkpoint also run a full GC in the master and read its
                     process.memoryUsage(), live handles and /proc/<pid>/smaps_rollup (apps/memory.js);
                     that GC flattens the heap later checkpoints see: compare runs with it only to runs with it
  --env NAME=VALUE   extra environment for the master (and so its workers), e.g. MALLOC_ARENA_MAX=2; repeatable
  --handover DIR     the handover package to run (another checkout, built); default this repository
  --out FILE         the results file whose soak section is replaced (default bench/RESULTS.md)
  --section NAME     the marked section of the results file to write (default soak)
  --no-write         print the report only; leave the results file alone
  --verbose          stream the master's log`;

function parseArgs(argv) {
  const o = {
    reloads: 500, every: 100, connections: 32, load: true, workers: 1, memory: false, env: {}, handover: undefined,
    out: path.join(__dirname, 'RESULTS.md'), section: 'soak', write: true, verbose: false,
  };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    const value = () => {
      if (i + 1 >= argv.length) throw new Error(`${a} needs a value`);
      return argv[++i];
    };
    const count = () => {
      const n = Number(value());
      if (!Number.isInteger(n) || n <= 0) throw new Error(`${a} needs a positive integer`);
      return n;
    };
    if (a === '--help' || a === '-h') return { help: true };
    else if (a === '--reloads') o.reloads = count();
    else if (a === '--every') o.every = count();
    else if (a === '--connections') o.connections = count();
    else if (a === '--no-load') o.load = false;
    else if (a === '--workers') o.workers = count();
    else if (a === '--memory') o.memory = true;
    else if (a === '--start') o.start = true;
    else if (a === '--env') {
      const m = /^([A-Za-z_][A-Za-z0-9_]*)=(.*)$/.exec(value());
      if (!m) throw new Error('--env needs NAME=VALUE');
      o.env[m[1]] = m[2];
    } else if (a === '--handover') o.handover = path.resolve(value());
    else if (a === '--out') o.out = path.resolve(value());
    else if (a === '--section') o.section = value();
    else if (a === '--no-write') o.write = false;
    else if (a === '--verbose') o.verbose = true;
    else throw new Error(`unknown flag ${a}\n\n${HELP}`);
  }
  return o;
}

const log = (message) => process.stderr.write(`[soak ${new Date().toISOString().slice(11, 19)}] ${message}\n`);

/** The master's VmRSS (kB), its anonymous part by owner (procs.anonPartsKb), open fds and live children (its workers). */
function sample(server) {
  const parts = P.rssPartsKb(server.pid);
  return {
    rss: P.rssKb(server.pid), anon: parts.anon, file: parts.file, owners: P.anonPartsKb(server.pid),
    fds: P.fdCount(server.pid), workers: server.workerPids().length,
  };
}

/**
 * With --memory: SIGUSR2 makes the master (apps/memory.js) run a full GC and
 * append a line to `file`; resolves that line (undefined after 5 s).
 */
async function probe(server, file) {
  const before = R.readIfExists(file).split('\n').filter(Boolean).length;
  process.kill(server.pid, 'SIGUSR2');
  const deadline = Date.now() + 5_000;
  while (Date.now() < deadline) {
    const lines = R.readIfExists(file).split('\n').filter(Boolean);
    if (lines.length > before) return JSON.parse(lines[lines.length - 1]);
    await P.sleep(20);
  }
  return undefined;
}

/** Waits (up to timeoutMs) until only the serving generation is left, so that samples compare like with like. */
async function settle(server, workers, timeoutMs = 10_000) {
  const deadline = Date.now() + timeoutMs;
  while (server.workerPids().length > workers && Date.now() < deadline) await P.sleep(20);
  return server.workerPids().length <= workers;
}

/** Where the interval [from, to] (epoch ms) fell: the reload it overlaps, or how long after which reload. */
function whereIn(reloads, from, to) {
  if (!Number.isFinite(from) || !Number.isFinite(to)) return '–';
  const hit = reloads.find((r) => r.signalAt <= to && r.readyAt >= from);
  if (hit) return `overlaps reload ${hit.n} (signal to ready: ${S.int(hit.wallMs)} ms)`;
  const before = reloads.filter((r) => r.readyAt < from).pop();
  if (!before) return 'before the first reload';
  return `${S.int(from - before.readyAt)} ms after reload ${before.n} was ready${before.n === reloads.length ? ' (the last)' : ''}`;
}

function report(o, d) {
  const { r, reloads, failedReloads, checkpoints, peak, settled } = d;
  const errors = { ...(r?.errors ?? {}) };
  for (const [status, n] of Object.entries(r?.statuses ?? {})) if (status !== '200') errors[`HTTP ${status}`] = n;
  const first = checkpoints.find((c) => c.n === 1);
  const hundred = checkpoints.find((c) => c.n === 100);
  const last = checkpoints[checkpoints.length - 1];
  const signed = (n, unit = '') => `${n > 0 ? '+' : n < 0 ? '−' : '±'}${Math.abs(n)}${unit}`;
  const change = (from, to) => `${signed(Number(((to - from) / 1024).toFixed(1)), ' MB')} (${signed(Number(((100 * (to - from)) / from).toFixed(1)), '%')})`;
  const fdChange = last.fds - first.fds;
  const ratio = hundred && last.n > 100 ? last.rss / hundred.rss : undefined;
  const perReload = ratio !== undefined ? ((last.rss - hundred.rss) / (last.n - 100)).toFixed(1) : undefined;
  const times = reloads.map((x) => x.ms);
  const ok = (b) => (b ? 'yes' : '**no**');
  const targets = [
    r ? ['0 failed requests', `${S.int(r.failed)} of ${S.int(r.requests)}${r.failed ? ` (${S.codes(errors)})` : ''}`, ok(r.failed === 0)]
      : ['0 failed requests', 'no load (--no-load)', 'not run'],
    ['every reload succeeds', `${reloads.length} of ${o.reloads}${failedReloads ? ` (${failedReloads} failed)` : ''}`, ok(reloads.length === o.reloads)],
    ratio !== undefined
      ? [`master RSS flat, reload 100 → ${last.n} (within 5%)`, `${S.mb(hundred.rss)} → ${S.mb(last.rss)}: ratio ${ratio.toFixed(3)}, ${change(hundred.rss, last.rss)}`, ok(Math.abs(ratio - 1) <= 0.05)]
      : ['master RSS flat, reload 100 → last (within 5%)', 'fewer than 101 reloads', 'not run'],
    [`master RSS, reload 1 → ${last.n}`, `${S.mb(first.rss)} → ${S.mb(last.rss)}: ${change(first.rss, last.rss)}`, '–'],
    ...(ratio !== undefined ? [[`its parts, reload 100 → ${last.n}: anonymous (V8 heap, malloc) and file-backed (node's code)`,
      `anon ${S.mb(hundred.anon)} → ${S.mb(last.anon)} (ratio ${(last.anon / hundred.anon).toFixed(3)}); ` +
        `file ${S.mb(hundred.file)} → ${S.mb(last.file)} (ratio ${(last.file / hundred.file).toFixed(3)})`, '–']] : []),
    [`master open fds flat, reload 1 → ${last.n}`, `${first.fds} → ${last.fds}: ${signed(fdChange)}`, ok(fdChange === 0)],
    ['no worker left behind', `${last.workers} live worker(s) after the last reload settled (expected ${o.workers})`, ok(settled && last.workers === o.workers)],
  ];
  const memoryHeader = o.memory ? ['heap used after GC', 'heap total', 'external', 'arrayBuffers', 'anonymous (smaps)', 'live handles'] : [];
  const memoryCells = (m) => {
    if (!o.memory) return [];
    if (!m) return ['no answer', '', '', '', '', ''];
    const handles = Object.entries(m.handles).map(([k, n]) => `${k} ${n}`).join(', ');
    return [S.mb(m.heapUsed / 1024), S.mb(m.heapTotal / 1024), S.mb(m.external / 1024), S.mb(m.arrayBuffers / 1024), S.mb(m.smaps.Anonymous), handles];
  };
  const rows = checkpoints.map((c) => [
    c.n === 0 ? 'before the first reload' : `after reload ${c.n}`, S.mb(c.rss), S.int(c.rss), S.mb(c.anon),
    S.mb(c.owners.mallocMain), `${S.mb(c.owners.mallocThreads)} (${c.owners.threadArenas})`, S.mb(c.owners.other), S.mb(c.file), c.fds, c.workers, ...memoryCells(c.memory),
  ]);
  rows.push([`peak over all ${reloads.length} reloads, sampled as each became ready (old generation still draining)`,
    S.mb(peak.rss), S.int(peak.rss), '', '', '', '', '', peak.fds, peak.workers, ...memoryHeader.map(() => '')]);
  const env = Object.entries(o.env).map(([k, v]) => `${k}=${v}`).join(' ');
  return [
    '## Soak',
    '',
    `Command: \`${d.command}\`${d.npm}, ${(d.totalMs / 60000).toFixed(1)} min in all (${(d.reloadMs / 60000).toFixed(1)} min of reloads), ` +
      'all traffic on 127.0.0.1.',
    '',
    ...d.host,
    `- load average at end: ${d.loadEnd}`,
    `- server: ${o.start ? '`handover start` running bench/apps/plain.js (the hello app as plain Node)' : "bench/apps/handover.js (the hello app, examples/hello.js's handler)"} under handover${o.handover ? ` from ${o.handover}` : ''}, ` +
      `workers ${o.workers}${env ? `; master environment: ${env}` : ''}`,
    o.load
      ? `- load: bench/lib/load.js, ${o.connections} keep-alive connections (http.Agent keepAlive, maxSockets 1), closed loop, GET /, ` +
        '30 s request timeout; it runs from 1 s before the first reload to 1 s after the last'
      : '- load: none (--no-load)',
    `- reloads: ${o.reloads} SIGHUPs to the master, one after the other: the next is sent as soon as the master logs the previous ` +
      '`generation N ready` (the old generation drains meanwhile)',
    '',
    S.table(['target', 'measured', 'met'], targets),
    '',
    ...(r ? [
      '### Requests',
      '',
      S.table(['requests', '200', 'failed', 'failed by error', 'req/s', 'p50 ms', 'p99 ms', 'max ms'], [[
        S.int(r.requests), S.int(r.ok), S.int(r.failed), S.codes(errors) || 'none', S.int(r.rps), S.fixed(r.p50, 2), S.fixed(r.p99, 2), S.fixed(r.max, 1),
      ]]),
      '',
      `Longest pause the client saw (longest gap between two consecutive 200s, over all ${o.connections} connections, ` +
        `for the whole load): **${S.fixed(r.maxGap, 1)} ms**, ${whereIn(reloads, r.maxGapAt - r.maxGap, r.maxGapAt)}. ` +
        `Slowest single request: **${S.fixed(r.max, 1)} ms**, ${whereIn(reloads, r.maxAt - r.max, r.maxAt)}. ` +
        `Responses came from ${S.int(r.pids)} of the ${S.int((reloads.length + 1) * o.workers)} workers started ` +
        '(a keep-alive connection stays on the old generation until its next request is answered with `Connection: close`, ' +
        'so a generation replaced before the clients\' next round of requests can serve nothing).',
      '',
    ] : []),
    '### Master process',
    '',
    'VmRSS, and its parts RssAnon (anonymous memory: the V8 heap, malloc, stacks) and RssFile (pages of mapped files, ' +
      'mostly the node binary\'s own code, shared with every node process through the page cache), from /proc/<pid>/status; ' +
      'RssAnon split by owner from /proc/<pid>/smaps: glibc malloc\'s main arena ([heap]), its per-thread arenas ' +
      '(64 MiB-aligned reservations) and the rest (mostly the V8 heap and its code); ' +
      'open fds from /proc/<pid>/fd. At each checkpoint the sample is taken once the old ' +
      'generation has exited, so that every row counts one generation.' +
      (o.memory ? ' The memory columns come from the master itself (apps/memory.js, on SIGUSR2): `process.memoryUsage()` right after ' +
        'a full GC, `Anonymous` from /proc/self/smaps_rollup, and the live libuv handles by type.' : ''),
    '',
    S.table(['when', 'master VmRSS', 'kB', 'RssAnon', 'of it malloc main arena', 'malloc thread arenas (how many)', 'other anonymous (V8 heap and code)',
      'RssFile', 'open fds', 'live workers', ...memoryHeader], rows),
    '',
    `Change from reload 1 to reload ${last.n}: RSS ${change(first.rss, last.rss)}, open fds ${signed(fdChange)}` +
      (ratio !== undefined ? `; from reload 100 to ${last.n}: ${change(hundred.rss, last.rss)}, ratio **${ratio.toFixed(3)}** (${perReload} kB per reload).` : '.'),
    '',
    '### Reloads',
    '',
    S.table(['reloads', 'failed', 'p50 ms', 'p95 ms', 'max ms'], [[
      reloads.length, failedReloads, S.int(S.pct(times, 50)), S.int(S.pct(times, 95)), S.int(Math.max(...times)),
    ]]),
    '',
    'Signal handled to every new worker ready, as the master logs it.',
  ].join('\n');
}

async function soak(o) {
  const args = process.argv.slice(2).join(' ');
  const d = {
    command: `node bench/soak.js${args ? ` ${args}` : ''}`,
    npm: ` (the same as \`npm run soak${args ? ` -- ${args}` : ''}\`, which builds first)`,
    host: R.hostLines(),
  };
  const started = Date.now();
  const marks = new Set([1, o.reloads]);
  for (let n = o.every; n < o.reloads; n += o.every) marks.add(n);
  const memoryFile = o.memory ? path.join(fs.mkdtempSync(path.join(os.tmpdir(), 'handover-soak-')), 'memory.jsonl') : undefined;
  // --expose-gc: the master's full collection after worker exits is then a
  // plain gc(); `--env NODE_OPTIONS=` measures it without the flag, where it
  // is v8.queryObjects() (src/master/memory.ts).
  const env = {
    NODE_OPTIONS: '--expose-gc', ...o.env, ...(o.handover ? { BENCH_HANDOVER: o.handover } : {}), ...(memoryFile ? { MEMORY_FILE: memoryFile } : {}),
  };
  const server = o.start
    ? new StartServer({ workers: o.workers, env, verbose: o.verbose, dir: o.handover })
    : new HandoverServer({ workers: o.workers, env, verbose: o.verbose });
  const reloads = [];
  const checkpoints = [];
  const peak = { rss: 0, fds: 0, workers: 0 };
  let failedReloads = 0;
  let settled = true;
  let load;
  let r;
  const checkpoint = async (n) => {
    const c = { n, ...sample(server), memory: memoryFile ? await probe(server, memoryFile) : undefined };
    checkpoints.push(c);
    const m = c.memory ? `; heap ${S.mb(c.memory.heapUsed / 1024)} of ${S.mb(c.memory.heapTotal / 1024)}, external ${S.mb(c.memory.external / 1024)}, anonymous ${S.mb(c.memory.smaps.Anonymous)}` : '';
    log(`reload ${n}/${o.reloads}: master VmRSS ${S.mb(c.rss)} (anon ${S.mb(c.anon)}: malloc main ${S.mb(c.owners.mallocMain)}, malloc threads ${S.mb(c.owners.mallocThreads)} in ${c.owners.threadArenas}, other ${S.mb(c.owners.other)}; file ${S.mb(c.file)}), ${c.fds} open fds, ${c.workers} worker(s)${m}${settled ? '' : ' (old generation not gone after 10 s)'}`);
  };
  try {
    log(`starting handover (workers ${o.workers})`);
    await server.start();
    let loadGone = false;
    if (o.load) {
      log(`load: ${o.connections} keep-alive connections to 127.0.0.1:${server.port}`);
      load = startLoad({ port: server.port, connections: o.connections, mode: 'keep-alive' });
      load.child.once('exit', () => (loadGone = true));
    }
    await P.sleep(1000);
    await checkpoint(0);
    const reloadStarted = Date.now();
    for (let n = 1; n <= o.reloads; n++) {
      P.checkAborted();
      if (loadGone) throw new Error('the load client exited during the soak');
      const signalAt = Date.now();
      try {
        const x = await server.reload();
        reloads.push({ n: reloads.length + 1, signalAt, readyAt: Date.now(), ms: x.ms, wallMs: x.wallMs });
      } catch (error) {
        if (P.isAborted()) throw error;
        failedReloads++;
        log(`reload ${n} failed: ${error.message.split('\n').slice(0, 4).join(' | ')}`);
        if (!P.alive(server.pid)) throw new Error('the master exited');
      }
      const now = sample(server);
      for (const k of ['rss', 'fds', 'workers']) peak[k] = Math.max(peak[k], now[k]);
      if (marks.has(n)) {
        settled = await settle(server, o.workers);
        await checkpoint(n);
      }
    }
    d.reloadMs = Date.now() - reloadStarted;
    await P.sleep(1000);
  } finally {
    if (load) {
      try {
        r = await load.stop();
      } catch (error) {
        log(`load client: ${error.message}`);
      }
    }
    log('stopping handover');
    await server.stop();
    if (memoryFile) log(`the master's memory probes (one JSON line per checkpoint) are in ${memoryFile}`);
  }
  if (o.load && !r) throw new Error('the load client sent no result');
  if (!checkpoints.some((c) => c.n === 1)) throw new Error('reload 1 did not complete; nothing to compare');
  d.loadEnd = os.loadavg().map((l) => l.toFixed(2)).join(' ');
  Object.assign(d, { r, reloads, failedReloads, checkpoints, peak, settled, totalMs: Date.now() - started });
  const md = report(o, d);
  if (o.write) {
    fs.writeFileSync(o.out, R.putMarkedSection(R.readIfExists(o.out), o.section, md));
    log(`wrote the ${o.section} section of ${path.relative(process.cwd(), o.out)}`);
  }
  process.stdout.write(`${md}\n`);
  return (r?.failed ?? 0) === 0 && failedReloads === 0 ? 0 : 1;
}

let cleaning;
/** Stops everything still running (the server, then the groups by force: the load client). */
function cleanup() {
  cleaning ??= P.stopAll();
  return cleaning;
}

for (const signal of ['SIGINT', 'SIGTERM']) {
  process.on(signal, () => {
    log(`${signal}: stopping everything the soak started`);
    P.abort();
    cleanup().finally(() => process.exit(130));
  });
}

(async () => {
  const o = parseArgs(process.argv.slice(2));
  if (!o.help) return soak(o);
  console.log(HELP);
  return 0;
})().then(
  async (code) => {
    await cleanup();
    process.exit(code);
  },
  async (error) => {
    log(error.stack || error.message);
    await cleanup();
    process.exit(2);
  },
);
