// `handover start` reload latency against the library API's, for the same
// hello app (issue 24): the library API (apps/handover.js: listenAndServe)
// and `handover start apps/plain.js` (the unmodified program), workers 1.
// Each of --pairs pairs starts a fresh master per side and reloads them in
// turn (A B A B ..., B A B A ... in the next pair), --reloads each, 100 ms
// apart. A reload's time is what the master logs (signal handled to every
// new worker ready); a boot's CPU is the new worker's user + system time
// (/proc, 10 ms ticks) read as soon as that line is seen: what it cost to
// start Node, load the code and get ready. With --before DIR each round also
// reloads `handover start` from another checkout (built), e.g. the code
// before a change, as a third column.
// Writes the `start-reload` section of bench/RESULTS.md.
//
//   node bench/start-reload.js [--pairs 3] [--reloads 10] [--before DIR] [--out FILE]
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');
const P = require('./lib/procs');
const R = require('./lib/report');
const S = require('./lib/stats');
const { HandoverServer, StartServer } = require('./lib/servers');

function parseArgs(argv) {
  const o = { pairs: 3, reloads: 10, before: undefined, out: path.join(__dirname, 'RESULTS.md') };
  for (let i = 0; i < argv.length; i++) {
    const flag = argv[i];
    const value = argv[++i];
    if (flag === '--pairs') o.pairs = Number(value);
    else if (flag === '--reloads') o.reloads = Number(value);
    else if (flag === '--before') o.before = path.resolve(value);
    else if (flag === '--out') o.out = path.resolve(value);
    else throw new Error(`unknown flag ${flag} (--pairs N, --reloads N, --before DIR, --out FILE)`);
  }
  return o;
}

/** One reload of `server`: the master-logged ms, and the new worker's CPU ms by then. */
async function reloadOnce(server) {
  const before = new Set(server.workerPids());
  const { ms } = await server.reload();
  const fresh = server.workerPids().filter((pid) => !before.has(pid));
  return { ms, cpu: fresh.length === 1 ? P.cpuMs(fresh[0]) : undefined };
}

/**
 * One pair: a fresh master for each side, all idle but the one reloading;
 * `reloads` rounds, each reloading every side once in turn (A B A B ...,
 * `order` reversed every other pair), 100 ms apart, so that the machine's
 * drift falls on every side alike.
 */
async function pairOf(sides, reloads) {
  const servers = sides.map((side) => side.make());
  try {
    for (const server of servers) await server.start();
    const out = sides.map(() => ({ times: [], cpu: [] }));
    for (let i = 0; i < reloads; i++) {
      for (let k = 0; k < servers.length; k++) {
        const r = await reloadOnce(servers[k]);
        out[k].times.push(r.ms);
        if (r.cpu !== undefined) out[k].cpu.push(r.cpu);
        await P.sleep(100);
      }
    }
    return out;
  } finally {
    await Promise.all(servers.map((server) => server.stop()));
  }
}

async function main() {
  const o = parseArgs(process.argv.slice(2));
  const command = `node bench/start-reload.js${process.argv.length > 2 ? ` ${process.argv.slice(2).join(' ')}` : ''}`;
  const hostLines = R.hostLines();
  const sides = [
    { key: 'api', label: 'library API (listenAndServe)', make: () => new HandoverServer({ workers: 1 }) },
    { key: 'start', label: '`handover start` (this tree)', make: () => new StartServer({ workers: 1 }) },
  ];
  if (o.before) sides.push({ key: 'before', label: `\`handover start\` (${path.basename(o.before)})`, make: () => new StartServer({ workers: 1, dir: o.before }) });
  const rounds = [];
  for (let pair = 0; pair < o.pairs; pair++) {
    const order = pair % 2 === 0 ? sides : sides.slice().reverse();
    const results = await pairOf(order, o.reloads);
    const round = {};
    order.forEach((side, k) => {
      const { times, cpu } = results[k];
      round[side.key] = times;
      round[`${side.key}Cpu`] = cpu;
      process.stderr.write(`[start-reload] pair ${pair + 1} ${side.key}: median ${S.median(times)} ms (${times.join(' ')}); worker CPU median ${S.median(cpu)} ms\n`);
    });
    rounds.push(round);
  }
  const medians = (key) => rounds.map((r) => S.median(r[key]));
  const ratios = rounds.map((r) => S.median(r.start) / S.median(r.api));
  const spread = (xs) => `${Math.min(...xs)}-${Math.max(...xs)}`;
  const all = (key) => rounds.flatMap((r) => r[key]);
  const md = [
    '## `handover start` reload latency against the library API (hello app, workers 1)',
    '',
    `Command: \`${command}\`. Each pair: a fresh master per column, then ${o.reloads} rounds, each reloading every master once in turn ` +
      '(A B A B ..., the order reversed every other pair; 100 ms between reloads; the masters not reloading stay idle), each reload timed as the master logs it ' +
      '("generation N ready in X ms": from the reload signal handled to every new worker ready). ' +
      'The machine was shared with other engineers\' work while measuring.',
    '',
    ...hostLines,
    `- load average at the end: ${os.loadavg().map((l) => l.toFixed(2)).join(' ')}`,
    '',
    S.table(['pair', ...sides.map((s) => `${s.label}: median ms (min-max)`), 'start / API'], rounds.map((r, i) => [
      i + 1, ...sides.map((s) => `${S.median(r[s.key])} (${spread(r[s.key])})`), S.fixed(ratios[i], 2),
    ])),
    '',
    S.table(['worker boot, CPU ms (user + system) when its generation is ready', 'n', 'median', 'p25-p75'], sides.map((s) => {
      const cpu = all(`${s.key}Cpu`);
      return [s.label, cpu.length, S.median(cpu), `${S.pct(cpu, 25)}-${S.pct(cpu, 75)}`];
    })),
    '',
    `Median of the per-pair ratios \`handover start\` / library API: **${S.fixed(S.median(ratios), 2)}x** (range ${S.fixed(Math.min(...ratios), 2)}-${S.fixed(Math.max(...ratios), 2)}); ` +
      sides.map((s) => `${s.label}: median of run medians ${S.median(medians(s.key))} ms, p95 of all ${S.pct(all(s.key), 95)} ms`).join('; ') + '.',
  ].join('\n');
  fs.writeFileSync(o.out, R.putMarkedSection(R.readIfExists(o.out), 'start-reload', md));
  process.stdout.write(`${md}\n`);
}

main().then(() => P.stopAll(), async (error) => {
  process.stderr.write(`${error.stack}\n`);
  await P.stopAll();
  process.exitCode = 1;
});
