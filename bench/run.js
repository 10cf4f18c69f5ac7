#!/usr/bin/env node
// `npm run bench` (or `node bench/run.js [flags]`): handover side by side with
// plain Node, a Node cluster rolling restart and pm2 reload, on 127.0.0.1 only.
// Prints a markdown report and writes it to bench/RESULTS.md. See --help.
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');
const P = require('./lib/procs');
const S = require('./lib/stats');
const R = require('./lib/report');
const scenarios = require('./lib/scenarios');
const { faults } = require('./lib/faults');
const { rollouts } = require('./lib/rollouts');
const { cpuPerReload } = require('./lib/cpu');
const { installPm2, HandoverServer, ClusterServer, Pm2Server } = require('./lib/servers');
const { wrkVersion, haveWrk, disableWrk } = require('./lib/wrk');

const HELP = `usage: node bench/run.js [flags]      (npm run bench -- [flags])
       node bench/run.js faults [flags] (npm run bench -- faults [flags])
       node bench/run.js rollouts [flags]
       node bench/run.js cost [flags]
  faults             only the faults scenario (issue 9: a worker SIGKILLed every 2 s, one slot
                     crash-looping; handover, cluster and pm2 with 2 workers, 20 s each by default);
                     its report goes into its own section of the results file (faults-LABEL),
                     and a full run keeps that section
  rollouts           only the rollouts scenario (issue 13): peak workers and RSS during a reload of 4 workers,
                     parallel vs phased; R1 for handover parallel and phased, cluster and pm2; a leaking worker
                     under handover's maxMemory vs pm2's max_memory_restart. Its own section (rollouts) of the
                     results file; --duration (default 30) is each load's length, --workers R1's worker count
  cost               only the cost scenario (issue 24): R1 for pm2, handover parallel and phased and cluster,
                     interleaved over --pairs rounds (default 3); then the CPU one reload costs, handover
                     parallel and phased against cluster's rolling restart, --cpu-reloads reloads a run (default 30),
                     --pairs rounds (servers side by side, reloaded in turn). Its own section (cost) of the
                     results file; with --cpu-only, the section cost-cpu
  --pairs N          cost: interleaved rounds (default 3)
  --cpu-only         cost: only the CPU part, no R1
  --by-path          cost: the CPU part loads this checkout by path too, as it does --handover DIR (a
                     require('handover') also pays Node's exports resolution, about 2 ms a worker)
  --cpu-reloads N    cost: reloads per CPU run (default 30)
  --label TEXT       faults: names the section and says what was measured (default: the last
                     commit touching src/master of the handover package run)
  --handover DIR     faults: the handover package to run (another checkout, built); default this repository.
                     cost: a second handover package (rollout parallel) in the CPU part too, interleaved (before/after)
                     memory: a second handover package whose worker is measured too, interleaved (before/after)
  --memory-rounds N  memory: rounds of every case (default 3)
  --fault-connections N  faults: closed loops of Connection: close requests (default 32)
  --fault-timeout MS     faults: a request not answered within MS fails (default 3000)
  --only LIST        a subset, comma-separated: R1,R2,R3,R4,throughput,latency,memory,connections
  --quick            smoke test: 3 s loads, 10 reloads, 1 throughput run, 1,000 connections
  --duration S       seconds of each wrk run (default 30; faults: of each run, default 20)
  --interval MS      reload interval during R1/R2 (default 1000)
  --reloads N        reloads in R3 (default 100)
  --latency-reloads N  reloads (and node -e 0 runs) for the reload latency (default 30)
  --runs N           throughput runs per server, the median is reported (default 3)
  --connections N    idle connections in the many-connections scenario (default 10000)
  --workers N        workers of handover and the peers in R1-R4 (default 2)
  --no-peers         handover only in R1-R4 (no cluster, no pm2)
  --no-pm2           no pm2 (no install)
  --no-wrk           the Node load client even where wrk exists
  --pm2-dir DIR      use (or install into and keep) pm2 in DIR instead of a fresh temp dir
  --out FILE         where the report goes (default bench/RESULTS.md)
  --verbose          stream the servers' logs`;

const ALL = ['R1', 'R2', 'R3', 'R4', 'throughput', 'latency', 'memory', 'connections'];

function parseArgs(argv) {
  const o = {
    only: ALL, quick: false, duration: 30, interval: 1000, reloads: 100, latencyReloads: 30, runs: 3,
    connections: 10_000, workers: 2, peers: true, pm2: true, pm2Dir: undefined, memoryReloads: 10, memoryRounds: 3,
    out: path.join(__dirname, 'RESULTS.md'), verbose: false, command: 'all', label: undefined, handover: undefined,
    faultConnections: 32, faultTimeout: 3000, pairs: 3, cpuReloads: 30,
  };
  const set = {};
  if (argv[0] === 'faults' || argv[0] === 'rollouts' || argv[0] === 'cost') {
    o.command = argv[0];
    o.only = [];
    if (o.command === 'faults') o.duration = 20;
    argv = argv.slice(1);
  }
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    const value = () => {
      if (i + 1 >= argv.length) throw new Error(`${a} needs a value`);
      return argv[++i];
    };
    const number = () => {
      const n = Number(value());
      if (!Number.isFinite(n) || n <= 0) throw new Error(`${a} needs a positive number`);
      return n;
    };
    if (a === '--help' || a === '-h') return { help: true };
    else if (a === '--only') {
      o.only = value().split(',').map((s) => ALL.find((n) => n.toLowerCase() === s.trim().toLowerCase()) ?? s.trim());
      const bad = o.only.filter((s) => !ALL.includes(s));
      if (bad.length) throw new Error(`--only: unknown ${bad.join(', ')} (known: ${ALL.join(', ')})`);
    } else if (a === '--quick') o.quick = true;
    else if (a === '--duration') set.duration = number();
    else if (a === '--interval') set.interval = number();
    else if (a === '--reloads') set.reloads = number();
    else if (a === '--latency-reloads') set.latencyReloads = number();
    else if (a === '--runs') set.runs = number();
    else if (a === '--connections') set.connections = number();
    else if (a === '--workers') set.workers = number();
    else if (a === '--no-peers') o.peers = false;
    else if (a === '--no-pm2') o.pm2 = false;
    else if (a === '--no-wrk') o.wrk = false;
    else if (a === '--pm2-dir') o.pm2Dir = path.resolve(value());
    else if (a === '--out') o.out = path.resolve(value());
    else if (a === '--verbose') o.verbose = true;
    else if (a === '--label' && o.command === 'faults') o.label = value();
    else if (a === '--handover') o.handover = path.resolve(value());
    else if (a === '--memory-rounds') set.memoryRounds = number();
    else if (a === '--fault-connections' && o.command === 'faults') set.faultConnections = number();
    else if (a === '--fault-timeout' && o.command === 'faults') set.faultTimeout = number();
    else if (a === '--pairs' && o.command === 'cost') set.pairs = number();
    else if (a === '--cpu-reloads' && o.command === 'cost') set.cpuReloads = number();
    else if (a === '--cpu-only' && o.command === 'cost') o.cpuOnly = true;
    else if (a === '--by-path' && o.command === 'cost') o.byPath = true;
    else throw new Error(`unknown flag ${a}\n\n${HELP}`);
  }
  if (o.quick) Object.assign(o, { duration: 3, reloads: 10, latencyReloads: 5, runs: 1, connections: 1000, memoryReloads: 3, memoryRounds: 1 });
  return Object.assign(o, set);
}

const log = (message) => process.stderr.write(`[bench ${new Date().toISOString().slice(11, 19)}] ${message}\n`);

function machine(wrk, pm2, peers) {
  return [
    ...R.hostLines(),
    `- load tool: ${wrk}; Node clients (bench/lib/load.js, bench/lib/manyconn.js) for R3, R4 and the many-connections scenario`,
    peers
      ? `- peers: Node cluster rolling restart (bench/peers/cluster-rolling.js)${pm2 ? `, pm2 ${pm2} (cluster mode, \`pm2 reload\`)` : ', pm2 not run'}`
      : '- peers: not run (--no-peers)',
    '- app: bench/apps/handler.js (examples/hello.js\'s handler, plus `/slow?ms=N`); plain, cluster and pm2 run bench/apps/plain.js, which closes with `server.close()` on SIGINT/SIGTERM',
  ].join('\n');
}

function summary(r, o) {
  const rows = [];
  const add = (target, measured, met) => rows.push([target, measured, met === undefined ? 'not run' : met ? 'yes' : '**no**']);
  const parts = ['R1', 'R2', 'R3', 'R4'].filter((k) => r[k] && !r[k].error);
  if (parts.length) {
    const failed = parts.map((k) => `${k} ${r[k].handoverFailed}`).join(', ');
    add('R1–R4: 0 failed requests for handover', `${failed}${parts.length < 4 ? ' (others not run)' : ''}`, parts.every((k) => r[k].handoverFailed === 0));
  } else add('R1–R4: 0 failed requests for handover', '–');
  const t = r.throughput && !r.throughput.error ? r.throughput : undefined;
  add('throughput, handover workers 1 >= 0.95x plain node', t ? `${S.int(t.h1)} vs ${S.int(t.plain)} req/s = ${S.ratio(t.h1, t.plain)}` : '–', t && t.h1 >= 0.95 * t.plain);
  add('throughput, handover workers 2 >= node cluster of 2', t ? `${S.int(t.h2)} vs ${S.int(t.cluster)} req/s = ${S.ratio(t.h2, t.cluster)}` : '–', t && t.h2 >= t.cluster);
  const l = r.latency && !r.latency.error ? r.latency : undefined;
  add('reload p50 <= bare node start-up p50 + 50 ms', l ? `${S.fixed(l.reloadP50)} ms vs ${S.fixed(l.nodeP50)} + 50 ms` : '–', l && l.reloadP50 <= l.nodeP50 + 50);
  const m = r.memory && !r.memory.error ? r.memory : undefined;
  add('master RSS <= plain node RSS', m ? `${S.mb(m.master)} vs ${S.mb(m.plain)}` : '–', m && m.master <= m.plain);
  add('heavy app: API master with a module path within 10 MB of the `handover start` master', m ? `${S.mb(m.lazyVsStart)} more (median)` : '–', m && m.lazyVsStart <= 10 * 1024);
  const c = r.connections && !r.connections.error ? r.connections : undefined;
  add(`${S.int(o.connections)} idle connections across a reload: none errors`, c ? (c.ok ? `all checks met (${S.int(c.count)} connections)` : 'see below') : '–', c && c.ok);
  return S.table(['target', 'measured', 'met'], rows);
}

const TITLES = {
  R1: 'R1 — keep-alive load under reloads',
  R2: 'R2 — connection churn (`Connection: close`) under reloads',
  R3: 'R3 — idle keep-alive race',
  R4: 'R4 — in-flight requests across a reload',
  throughput: 'Throughput overhead',
  latency: 'Reload latency',
  memory: 'Memory',
  connections: 'Many idle connections across a reload',
};

async function main() {
  const o = parseArgs(process.argv.slice(2));
  if (o.help) return void console.log(HELP);
  const quote = (a) => (/^[\w@%+=:,./-]+$/.test(a) ? a : `'${a.replace(/'/g, "'\\''")}'`);
  const command = `node bench/run.js${process.argv.length > 2 ? ` ${process.argv.slice(2).map(quote).join(' ')}` : ''}`;
  const ctx = { o, log };
  if (o.wrk === false) disableWrk();
  if (!haveWrk()) log(`${o.wrk === false ? 'wrk not used (--no-wrk)' : 'wrk not found (looked in /usr/bin, /usr/local/bin)'}: the Node load client stands in for it, and the report says so`);
  const wrk = await wrkVersion();
  const needsPeers = o.peers && o.pm2 && (o.command !== 'all' || o.only.some((s) => ['R1', 'R2', 'R3', 'R4'].includes(s)));
  let pm2error;
  if (needsPeers) {
    try {
      ctx.pm2 = pm2Install = await installPm2(o.pm2Dir, log);
    } catch (error) {
      pm2error = error.message;
      log(`pm2 unavailable, running without it: ${error.message.split('\n')[0]}`);
    }
  }
  if (o.command === 'faults') return runFaults(ctx, command, wrk);
  if (o.command === 'rollouts') return runRollouts(ctx, command, wrk);
  if (o.command === 'cost') return runCost(ctx, command, wrk);
  const results = {};
  const sections = [];
  const runners = {
    R1: () => scenarios.underReloads(ctx, false),
    R2: () => scenarios.underReloads(ctx, true),
    R3: () => scenarios.idleRace(ctx),
    R4: () => scenarios.inFlight(ctx),
    throughput: () => scenarios.throughput(ctx),
    latency: () => scenarios.reloadLatency(ctx),
    memory: () => scenarios.memory(ctx),
    connections: () => scenarios.manyConnections(ctx),
  };
  const started = Date.now();
  for (const name of ALL.filter((n) => o.only.includes(n))) {
    if (P.isAborted()) break;
    try {
      results[name] = await runners[name]();
      sections.push(`## ${TITLES[name]}\n\n${results[name].md}`);
    } catch (error) {
      results[name] = { error };
      log(`${name} failed: ${error.stack}`);
      sections.push(`## ${TITLES[name]}\n\n**The scenario failed:** \`${error.message.split('\n')[0]}\``);
    } finally {
      await P.stopAll();
    }
  }
  const report = [
    '# handover benchmark results',
    '',
    `Command: \`${command}\` (the same as \`npm run bench${process.argv.length > 2 ? ` -- ${process.argv.slice(2).join(' ')}` : ''}\`), ` +
      `${((Date.now() - started) / 60000).toFixed(1)} min, all traffic on 127.0.0.1.`,
    o.quick ? '\n**Quick mode: a smoke test with short runs. These numbers are not representative.**' : '',
    '',
    machine(wrk, ctx.pm2?.version ?? (ctx.pm2 ? 'installed' : pm2error ? `unavailable (${pm2error.split('\n')[0]})` : undefined), o.peers),
    '',
    '## Targets',
    '',
    summary(results, o),
    '',
    sections.join('\n\n'),
    '',
  ].join('\n');
  // bench/soak.js and `faults` keep their sections between markers in the same file: carry them over
  const previous = R.readIfExists(o.out);
  fs.writeFileSync(o.out, R.markedNames(previous).reduce((text, name) => R.keepMarkedSection(text, previous, name), report));
  process.stdout.write(`${report}\n`);
  log(`wrote ${path.relative(process.cwd(), o.out)}`);
  return Object.values(results).some((r) => r.error) ? 1 : 0;
}

/** The last commit touching src/master/ in the handover checkout at `root`. */
async function masterCommit(root) {
  const r = await P.run('git', ['-C', root, 'log', '-1', '--format=%h %s', '--', 'src/master/']);
  return r.code === 0 && r.stdout.trim() ? r.stdout.trim() : 'unknown (not a git checkout: say which commit in --label)';
}

/** `node bench/run.js faults`: the faults scenario alone, into its own marked section of the results file. */
async function runFaults(ctx, command, wrk) {
  const { o } = ctx;
  const root = o.handover ?? path.resolve(__dirname, '..');
  const commit = await masterCommit(root);
  const label = o.label ?? commit;
  o.handoverEnv = o.handover ? { BENCH_HANDOVER: o.handover } : {};
  const started = Date.now();
  const r = await faults(ctx);
  await P.stopAll();
  const name = `faults-${label.toLowerCase().replace(/[^a-z0-9]+/g, '-').replace(/^-|-$/g, '').slice(0, 40) || 'run'}`;
  const md = [
    `## Faults under load — ${label}`,
    '',
    `Command: \`${command}\`${o.handover ? '' : ` (the same as \`npm run bench -- ${command.replace(/^node bench\/run\.js /, '')}\`, which builds first)`}, ` +
      `${((Date.now() - started) / 60000).toFixed(1)} min, all traffic on 127.0.0.1.`,
    '',
    ...R.hostLines(),
    `- handover: ${root}${o.handover ? ' (--handover)' : ''}, src/master at ${commit}`,
    `- peers: Node cluster (bench/peers/cluster-rolling.js)${ctx.pm2 ? `, pm2 ${ctx.pm2.version}` : ', pm2 not run'}; load: the Node client (${wrk.startsWith('wrk') ? 'wrk cannot attribute failures to connections' : wrk})`,
    '',
    r.md,
  ].join('\n');
  fs.writeFileSync(o.out, R.putMarkedSection(R.readIfExists(o.out), name, md));
  process.stdout.write(`${md}\n`);
  log(`wrote section ${name} of ${path.relative(process.cwd(), o.out)}`);
  return 0;
}

/** `node bench/run.js rollouts`: the rollouts scenario alone, into the `rollouts` section of the results file. */
async function runRollouts(ctx, command, wrk) {
  const { o } = ctx;
  const commit = await masterCommit(path.resolve(__dirname, '..'));
  const started = Date.now();
  const r = await rollouts(ctx);
  await P.stopAll();
  const md = [
    '## Rollouts: phased vs parallel, recycling a leaking worker (issue 13)',
    '',
    `Command: \`${command}\`, ${((Date.now() - started) / 60000).toFixed(1)} min, all traffic on 127.0.0.1. ` +
      'The parts ran one after the other in this one run; compare within it only (other work shares the machine: see the load averages).',
    '',
    ...R.hostLines(),
    `- handover: src/master at ${commit}`,
    `- load: ${wrk} (R1); the Node client bench/lib/load.js (leak); peers: Node cluster (bench/peers/cluster-rolling.js)${ctx.pm2 ? `, pm2 ${ctx.pm2.version}` : ', pm2 not run'}`,
    '',
    r.md,
  ].join('\n');
  fs.writeFileSync(o.out, R.putMarkedSection(R.readIfExists(o.out), 'rollouts', md));
  process.stdout.write(`${md}\n`);
  log(`wrote section rollouts of ${path.relative(process.cwd(), o.out)}`);
  return 0;
}

/** `node bench/run.js cost`: R1 p99 and CPU per reload (issue 24), into the `cost` section of the results file. */
async function runCost(ctx, command, wrk) {
  const { o } = ctx;
  const commit = await masterCommit(path.resolve(__dirname, '..'));
  const started = Date.now();
  const load = () => os.loadavg().map((l) => l.toFixed(2)).join(' ');
  const w = o.workers;
  const r1Load = load();
  const r1 = o.cpuOnly ? undefined : await scenarios.underReloads(ctx, false, [
    ...(ctx.pm2 ? [() => new Pm2Server({ bin: ctx.pm2.bin, workers: w, verbose: o.verbose })] : []),
    () => new HandoverServer({ workers: w, env: { ROLLOUT: 'parallel' }, verbose: o.verbose }),
    () => new HandoverServer({ workers: w, env: { ROLLOUT: 'phased' }, verbose: o.verbose }),
    () => new ClusterServer({ workers: w, verbose: o.verbose }),
  ], o.pairs);
  await P.stopAll();
  const cpuLoad = load();
  const before = o.handover ? [{ ROLLOUT: 'parallel', BENCH_HANDOVER: o.handover }] : [];
  const own = o.byPath ? { BENCH_HANDOVER: path.resolve(__dirname, '..') } : {};
  const cpu = await cpuPerReload(ctx, [...before, { ROLLOUT: 'parallel', ...own }, { ROLLOUT: 'phased', ...own }]);
  await P.stopAll();
  const md = [
    o.cpuOnly ? '## The CPU a reload costs (issue 24)' : '## The cost of a reload: R1 p99 and CPU per reload (issue 24)',
    '',
    `Command: \`${command}\`, ${((Date.now() - started) / 60000).toFixed(1)} min, all traffic on 127.0.0.1. ` +
      'The machine was shared with other work while this ran (see the load averages): compare within a round only.',
    '',
    ...R.hostLines(),
    `- handover: src/master at ${commit}`,
    `- load: ${wrk}; peers: Node cluster (bench/peers/cluster-rolling.js)${ctx.pm2 ? `, pm2 ${ctx.pm2.version}` : ', pm2 not run'}`,
    '',
    ...(r1 ? [`### R1, ${w} workers each, ${o.pairs} interleaved rounds`, '', `Load average before: ${r1Load}. ${r1.md}`, ''] : []),
    '### CPU per reload',
    '',
    `Load average before: ${cpuLoad}. ${cpu.md}`,
  ].join('\n');
  // --cpu-only has a section of its own, so the last R1 figures stay
  const section = o.cpuOnly ? 'cost-cpu' : 'cost';
  fs.writeFileSync(o.out, R.putMarkedSection(R.readIfExists(o.out), section, md));
  process.stdout.write(`${md}\n`);
  log(`wrote section ${section} of ${path.relative(process.cwd(), o.out)}`);
  return 0;
}

let pm2Install;
let cleaning;
/** Stops every server still running and removes the temporary pm2 install. */
function cleanup() {
  cleaning ??= (async () => {
    await P.stopAll();
    if (pm2Install?.temporary) fs.rmSync(pm2Install.dir, { recursive: true, force: true });
  })();
  return cleaning;
}

for (const signal of ['SIGINT', 'SIGTERM']) {
  process.on(signal, () => {
    log(`${signal}: stopping every server the bench started`);
    P.abort();
    cleanup().finally(() => process.exit(130));
  });
}

main().then(
  async (code) => {
    await cleanup();
    process.exit(code);
  },
  async (error) => {
    log(error.message);
    await cleanup();
    process.exit(2);
  },
);
