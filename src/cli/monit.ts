// `handover monit`: every master this user runs (or the one named), redrawn
// every second: each worker's pid, slot, generation, state, CPU %, RSS,
// requests per second, open connections, event-loop delay and restarts.
// `q` (or Ctrl-C) quits.
import { liveMasters } from '../master/registry';
import { type StatusReport, fetchStatus, formatBytes, formatDuration, formatPercent } from './admin';
import { locate } from './locate';

const REFRESH_MS = 1_000;

/** Requests a worker had served at the previous refresh, and when: for req/s. */
type Seen = Map<number, { requests: number; at: number }>;

function table(rows: string[][]): string[] {
  const widths = rows[0].map((_, i) => Math.max(...rows.map((r) => r[i].length)));
  return rows.map((r) => r.map((cell, i) => (i === 0 ? cell.padEnd(widths[i]) : cell.padStart(widths[i]))).join('  '));
}

export function render(reports: StatusReport[], seen: Seen, now = Date.now()): string {
  const lines = [`handover monit  ${new Date(now).toISOString().slice(11, 19)}  (q quits)`, ''];
  if (reports.length === 0) lines.push('no masters running (handover start app.js)');
  for (const r of reports) {
    lines.push(`${r.name ?? 'master'}  master pid ${r.pid}  generation ${r.generation}${r.reloading ? ' (reloading)' : ''}  up ${formatDuration(r.uptimeMs)}  ` +
      `cpu ${formatPercent(r.cpuPercent)}  rss ${formatBytes(r.rssBytes)}  ${r.addresses.join(', ')}`);
    const rows = [['PID', 'SLOT', 'GEN', 'STATE', 'CPU', 'RSS', 'REQ/S', 'CONNS', 'LOOP', 'RESTARTS']];
    for (const w of r.workers) {
      const before = seen.get(w.pid);
      const rate = w.requests !== undefined && before ? ((w.requests - before.requests) * 1000) / Math.max(1, now - before.at) : undefined;
      if (w.requests !== undefined) seen.set(w.pid, { requests: w.requests, at: now });
      rows.push([
        String(w.pid), String(w.slot), String(w.generation), w.state, formatPercent(w.cpuPercent), formatBytes(w.rssBytes),
        rate === undefined ? '-' : rate.toFixed(1), String(w.connections ?? '?'),
        w.loopDelayMs === undefined ? '?' : `${w.loopDelayMs} ms`, String(w.restarts ?? '?'),
      ]);
    }
    lines.push(...table(rows).map((l) => `  ${l}`), '');
  }
  return lines.join('\n');
}

export async function monit(name: string | undefined, options: Map<string, string | true>): Promise<number> {
  const seen: Seen = new Map();
  const tty = process.stdin.isTTY;
  let stopped = false;
  let resolveDone: () => void = () => {};
  const done = new Promise<void>((resolve) => (resolveDone = resolve));
  const quit = () => {
    stopped = true;
    resolveDone();
  };
  if (tty) {
    process.stdin.setRawMode(true);
    process.stdin.resume();
    process.stdin.on('data', (key: Buffer) => {
      if (key[0] === 0x71 || key[0] === 0x51 || key[0] === 0x03) quit(); // q, Q, Ctrl-C
    });
  }
  process.once('SIGINT', quit);
  process.stdout.write('\x1b[?25l'); // no cursor while drawing
  try {
    while (!stopped) {
      const started = Date.now();
      const targets = name !== undefined || options.has('pid') || options.has('socket')
        ? [await locate(name, options)]
        : (await liveMasters()).map((entry) => ({ socket: entry.socket, entry }));
      const reports = (await Promise.all(targets.map((t) => fetchStatus(t).catch(() => undefined)))).filter((r): r is StatusReport => r !== undefined);
      if (stopped) break;
      process.stdout.write(`\x1b[H\x1b[2J${render(reports, seen)}\n`);
      await Promise.race([done, new Promise((resolve) => setTimeout(resolve, Math.max(0, REFRESH_MS - (Date.now() - started))))]);
    }
  } finally {
    process.stdout.write('\x1b[?25h');
    if (tty) {
      process.stdin.setRawMode(false);
      process.stdin.pause();
    }
  }
  return 0;
}
