// `handover start` reload latency against the library API's, for the same
// hello app (issue 24): the library API (apps/handover.js: listenAndServe)
// and `handover start apps/plain.js` (the unmodified program), workers 1,
// interleaved A B (A B ...) for --pairs pairs; each run is a fresh master and
// --reloads sequential reloads 100 ms apart. A reload's time is what the
// master logs (signal handled to every new worker ready). With --before DIR
// each round also runs `handover start` from another checkout (built), e.g.
// the code before a change, as a third column in the same rounds.
// Writes the `start-reload` section of bench/RESULTS.md.
//
//   node bench/start-reload.js [--pairs 3] [--reloads 10] [--before DIR] [--out FILE]
const fs = require('node:fs');
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

/** One fresh master: `reloads` sequential reloads; the master-logged ms of each. */
async function reloadTimes(server, reloads) {
  await server.start();
  try {
    const times = [];
    for (let i = 0; i < reloads; i++) {
      times.push((await server.reload()).ms);
      await P.sleep(100);
    }
    return times;
  } finally {
    await server.stop();
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
    const round = {};
    // A B, then B A: drift in the machine's other load falls on both sides
    for (const side of pair % 2 === 0 ? sides : sides.slice().reverse()) {
      const times = await reloadTimes(side.make(), o.reloads);
      round[side.key] = times;
      process.stderr.write(`[start-reload] pair ${pair + 1} ${side.key}: median ${S.median(times)} ms (${times.join(' ')})\n`);
    }
    rounds.push(round);
  }
  const medians = (key) => rounds.map((r) => S.median(r[key]));
  const ratios = rounds.map((r) => S.median(r.start) / S.median(r.api));
  const spread = (xs) => `${Math.min(...xs)}-${Math.max(...xs)}`;
  const all = (key) => rounds.flatMap((r) => r[key]);
  const md = [
    '## `handover start` reload latency against the library API (hello app, workers 1)',
    '',
    `Command: \`${command}\`. Each run: a fresh master, ${o.reloads} sequential reloads 100 ms apart, each timed as the master logs it ` +
      '("generation N ready in X ms": from the reload signal handled to every new worker ready). Runs interleaved, the order reversed every other pair. ' +
      'The machine was shared with other engineers\' work while measuring.',
    '',
    ...hostLines,
    '',
    S.table(['pair', ...sides.map((s) => `${s.label}: median ms (min-max)`), 'start / API'], rounds.map((r, i) => [
      i + 1, ...sides.map((s) => `${S.median(r[s.key])} (${spread(r[s.key])})`), S.fixed(ratios[i], 2),
    ])),
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
