// What the `metrics` option costs the master under load: the master's CPU
// time (utime + stime from /proc) during the same wrk load with metrics off
// and on, a Prometheus-like scrape of /metrics every second when on.
// Interleaved A/B in ABBA order (off on, on off, off on...) so that drift in
// the machine's other load falls on both sides; each pair is one ratio.
// Writes the `metrics-cost-<interval>s` section of bench/RESULTS.md.
//
//   node bench/metrics-cost.js [--pairs 3] [--duration 10] [--workers 2] [--scrape-every 1] [--out FILE]
const fs = require('node:fs');
const http = require('node:http');
const path = require('node:path');
const P = require('./lib/procs');
const R = require('./lib/report');
const { HandoverServer } = require('./lib/servers');
const { runLoad, commandLine, wrkVersion } = require('./lib/wrk');

function parseArgs(argv) {
  const o = { pairs: 3, duration: 10, workers: 2, scrapeEvery: 1, out: path.join(__dirname, 'RESULTS.md') };
  for (let i = 0; i < argv.length; i++) {
    const flag = argv[i];
    const value = argv[++i];
    if (flag === '--pairs') o.pairs = Number(value);
    else if (flag === '--duration') o.duration = Number(value);
    else if (flag === '--workers') o.workers = Number(value);
    else if (flag === '--scrape-every') o.scrapeEvery = Number(value);
    else if (flag === '--out') o.out = path.resolve(value);
    else throw new Error(`unknown flag ${flag} (--pairs N, --duration S, --workers N, --scrape-every S, --out FILE)`);
  }
  return o;
}

function scrapeEvery(url, ms) {
  let scrapes = 0;
  let failed = 0;
  let running = true;
  const done = (async () => {
    while (running) {
      await new Promise((resolve) => {
        http.get(url, { agent: false }, (res) => {
          res.resume();
          res.on('end', () => {
            if (res.statusCode === 200) scrapes++;
            else failed++;
            resolve();
          });
        }).on('error', () => {
          failed++;
          resolve();
        });
      });
      await P.sleep(ms);
    }
  })();
  return { stop: async () => { running = false; await done; return { scrapes, failed }; } };
}

async function measure(metrics, o) {
  const port = metrics ? await P.freePort() : undefined;
  const server = new HandoverServer({ workers: o.workers, env: metrics ? { METRICS: `127.0.0.1:${port}` } : {} });
  await server.start();
  try {
    const scraper = metrics ? scrapeEvery(`http://127.0.0.1:${port}/metrics`, o.scrapeEvery * 1000) : undefined;
    const before = P.cpuMs(server.pid);
    const load = await runLoad({ port: server.port, connections: 64, seconds: o.duration });
    const masterMs = P.cpuMs(server.pid) - before;
    const scraped = await scraper?.stop();
    return { metrics, masterMs, rps: load.rps, requests: load.requests, scrapes: scraped?.scrapes ?? 0, scrapeFailures: scraped?.failed ?? 0 };
  } finally {
    await server.stop();
  }
}

async function main() {
  const o = parseArgs(process.argv.slice(2));
  const command = `node bench/metrics-cost.js${process.argv.length > 2 ? ` ${process.argv.slice(2).join(' ')}` : ''}`;
  const hostLines = R.hostLines();
  const runs = [];
  for (let pair = 0; pair < o.pairs; pair++) {
    const order = pair % 2 === 0 ? [false, true] : [true, false];
    const results = [];
    for (const metrics of order) {
      const r = await measure(metrics, o);
      process.stderr.write(`[metrics-cost] pair ${pair + 1} metrics ${metrics ? 'on ' : 'off'}: master ${r.masterMs} ms CPU, ${Math.round(r.rps)} req/s\n`);
      results.push(r);
    }
    runs.push({ pair: pair + 1, off: results.find((r) => !r.metrics), on: results.find((r) => r.metrics) });
  }
  const perSecond = (r) => r.masterMs / o.duration;
  const diffs = runs.map((p) => perSecond(p.on) - perSecond(p.off));
  const offs = runs.map((p) => perSecond(p.off));
  const mean = (xs) => xs.reduce((a, b) => a + b, 0) / xs.length;
  const md = [
    `## The master's CPU with \`metrics\` on and off, under load, a scrape every ${o.scrapeEvery} s`,
    '',
    `Command: \`${command}\`; interleaved A/B (ABBA order), ${o.pairs} pairs; each run: a fresh master with ${o.workers} workers, ` +
      `\`${commandLine({ threads: 2, connections: 64, seconds: o.duration })}\` (${await wrkVersion()}), and with metrics on a GET of /metrics every ${o.scrapeEvery} s (a new connection each time). ` +
      'The master\'s CPU is utime + stime from /proc (10 ms ticks) over the load. The master serves no request itself, so its CPU is per second, not per request. ' +
      'Heartbeat answers carry the workers\' counters either way; what `metrics` adds is the endpoint and the scrapes.',
    '',
    ...hostLines,
    '',
    '| pair | off: master CPU (ms) | off: req/s | on: master CPU (ms) | on: req/s | on: scrapes | on - off (ms of CPU per s) |',
    '|---|---|---|---|---|---|---|',
    ...runs.map((p, i) => `| ${p.pair} | ${p.off.masterMs} | ${Math.round(p.off.rps)} | ${p.on.masterMs} | ${Math.round(p.on.rps)} | ` +
      `${p.on.scrapes}${p.on.scrapeFailures ? ` (${p.on.scrapeFailures} failed)` : ''} | ${diffs[i].toFixed(2)} |`),
    '',
    `Mean difference on - off: ${mean(diffs).toFixed(2)} ms of master CPU per second of load (${(mean(diffs) / 10).toFixed(3)}% of one core); ` +
      `metrics off alone ranged ${Math.min(...offs).toFixed(2)}-${Math.max(...offs).toFixed(2)} ms per second across its ${o.pairs} runs.`,
  ].join('\n');
  fs.writeFileSync(o.out, R.putMarkedSection(R.readIfExists(o.out), `metrics-cost-${o.scrapeEvery}s`, md));
  process.stdout.write(`${md}\n`);
}

main().then(() => P.stopAll(), async (error) => {
  process.stderr.write(`${error.stack}\n`);
  await P.stopAll();
  process.exitCode = 1;
});
