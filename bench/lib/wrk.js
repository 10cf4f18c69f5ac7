// wrk (or, without it, the Node load client standing in for it) with one result shape:
// {tool, command, requests, rps, socket: {connect, read, write, timeout}, non2xx, p50, p99, max}
const fs = require('node:fs');
const P = require('./procs');
const { startLoad } = require('./load');

let WRK = ['/usr/bin/wrk', '/usr/local/bin/wrk'].find((p) => fs.existsSync(p));
let missing = 'wrk not found';
/** --no-wrk: use the Node client even where wrk exists (tests the fallback). */
function disableWrk() {
  WRK = undefined;
  missing = 'wrk not used (--no-wrk)';
}
const haveWrk = () => Boolean(WRK);

function args({ threads, connections, seconds, close }) {
  return [`-t${threads}`, `-c${connections}`, `-d${seconds}s`, '--latency', ...(close ? ['-H', 'Connection: close'] : [])];
}

/** The command as a person would type it (port shown as PORT). */
function commandLine(options) {
  const quoted = args(options).map((a) => (a.includes(' ') ? `'${a}'` : a));
  if (!WRK) return `node bench/lib/load.js (${missing}): ${options.connections} connections, ${options.seconds} s${options.close ? ', Connection: close' : ', keep-alive'}`;
  return `wrk ${quoted.join(' ')} http://127.0.0.1:PORT/`;
}

function ms(value, unit) {
  return Number(value) * { us: 0.001, ms: 1, s: 1000, m: 60000 }[unit];
}

/** The Max column of wrk's "Latency avg stdev max +/-stdev" line, in ms. */
function latencyMax(out) {
  const m = /^\s+Latency\s+\S+\s+\S+\s+([\d.]+)(us|ms|s|m)\b/m.exec(out);
  return m ? ms(m[1], m[2]) : NaN;
}

function parse(out) {
  const num = (re) => {
    const m = re.exec(out);
    return m ? Number(m[1]) : 0;
  };
  const lat = (p) => {
    const m = new RegExp(`^\\s+${p}%\\s+([\\d.]+)(us|ms|s|m)\\s*$`, 'm').exec(out);
    return m ? ms(m[1], m[2]) : NaN;
  };
  const sock = /Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)/.exec(out);
  return {
    requests: num(/(\d+) requests in/),
    rps: num(/Requests\/sec:\s+([\d.]+)/),
    socket: sock ? { connect: +sock[1], read: +sock[2], write: +sock[3], timeout: +sock[4] } : { connect: 0, read: 0, write: 0, timeout: 0 },
    non2xx: num(/Non-2xx or 3xx responses: (\d+)/),
    p50: lat(50),
    p99: lat(99),
    max: latencyMax(out),
  };
}

/** Runs one load for `seconds` against 127.0.0.1:port. */
async function runLoad({ port, threads = 2, connections = 128, seconds = 30, close = false }) {
  const options = { threads, connections, seconds, close };
  if (!WRK) {
    const r = await startLoad({ port, connections, mode: close ? 'close' : 'keep-alive', durationMs: seconds * 1000 }).result;
    const e = (...codes) => codes.reduce((n, c) => n + (r.errors[c] || 0), 0);
    const non2xx = Object.entries(r.statuses).reduce((n, [s, c]) => n + (s >= 200 && s < 400 ? 0 : c), 0);
    return {
      tool: 'node', command: commandLine(options), requests: r.requests, rps: r.rps, non2xx, p50: r.p50, p99: r.p99, max: r.max,
      socket: { connect: e('ECONNREFUSED'), read: e('ECONNRESET', 'socket hang up'), write: e('EPIPE'), timeout: e('ETIMEDOUT') },
      other: Object.fromEntries(Object.entries(r.errors).filter(([c]) => !['ECONNREFUSED', 'ECONNRESET', 'socket hang up', 'EPIPE', 'ETIMEDOUT'].includes(c))),
    };
  }
  const child = P.spawnGroup(WRK, [...args(options), `http://127.0.0.1:${port}/`], { stdio: ['ignore', 'pipe', 'pipe'] });
  const killer = { stop: async () => P.killGroup(child.pid, 'SIGKILL') };
  P.track(killer);
  let out = '';
  child.stdout.setEncoding('utf8').on('data', (c) => (out += c));
  child.stderr.setEncoding('utf8').on('data', (c) => (out += c));
  const { code } = await child.exited;
  await P.reapGroup(child.pid, 1_000);
  P.untrack(killer);
  if (code !== 0 || !/Requests\/sec/.test(out)) throw new Error(`wrk failed (${code}):\n${out}`);
  return { tool: 'wrk', command: commandLine(options), other: {}, ...parse(out) };
}

async function wrkVersion() {
  if (!WRK) return `${missing}: the Node load client (bench/lib/load.js) stands in, ${'`'}http.Agent${'`'} keep-alive or Connection: close, closed loop`;
  const r = await P.run(WRK, ['-v']);
  return (/wrk (\S+)/.exec(r.stdout + r.stderr) || [, 'unknown'])[1].replace(/^/, 'wrk ');
}

/** What the error columns mean, for the report. */
function errorColumns() {
  return WRK
    ? 'Socket errors as wrk counts them; non-2xx is wrk\'s "Non-2xx or 3xx responses".'
    : 'Errors as the Node client counts them: connect = ECONNREFUSED, read = ECONNRESET or "socket hang up", write = EPIPE, ' +
        'timeout = no answer in 30 s; any other code is listed next to non-2xx (responses other than 2xx/3xx).';
}

module.exports = { errorColumns, runLoad, commandLine, wrkVersion, haveWrk, disableWrk, parse };
