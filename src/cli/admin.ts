// The operator's commands against running masters: list, status, reload,
// stop. They talk to a master over its control socket, which answers only
// root and its own uid (privilege.ts): another caller is told so before it
// connects.
import * as fs from 'node:fs';
import * as net from 'node:net';
import * as os from 'node:os';
import { administrators, mayAdminister } from '../master/privilege';
import { type RegistryEntry, liveMasters } from '../master/registry';
import { FrameDecoder, MAX_FRAME_BYTES, type MasterStatus, type Message, encode } from '../protocol';
import { type Target, locate } from './locate';
import { cpuPercent, rssBytes, startedAt } from './proc';

/** CPU % in status is the use over this window. */
const CPU_WINDOW_MS = 250;

/** How long `status` and `list` wait for a master's answer. */
const STATUS_TIMEOUT_MS = 10_000;

/** Why a master cannot be reached; exit status 2 like a usage error, but not one. */
export class ReachError extends Error {}

function userName(uid: number): string {
  try {
    const line = fs.readFileSync('/etc/passwd', 'utf8').split('\n').find((l) => l.split(':')[2] === String(uid));
    return line ? line.split(':')[0] : `uid ${uid}`;
  } catch {
    return `uid ${uid}`;
  }
}

/**
 * The master accepts admin requests from root and its own uid only, and
 * closes any other caller's connection without a word (logging why on its
 * side); so the socket's owner (the master's uid) is checked first and a
 * refusal explained here.
 */
export function checkOwner(socket: string): void {
  let stat: fs.Stats;
  try {
    stat = fs.statSync(socket);
  } catch (error) {
    const code = (error as NodeJS.ErrnoException).code;
    if (code === 'EACCES') {
      throw new ReachError(`cannot reach the master at ${socket} (EACCES): its directory belongs to another user; run handover as root or as the user the master runs as`);
    }
    if (code === 'ENOENT') throw new ReachError(`cannot reach the master at ${socket}: no such socket (ENOENT); the master has stopped (\`handover list\` shows the running ones)`);
    throw new ReachError(`cannot reach the master at ${socket} (${code})`);
  }
  const uid = process.getuid!();
  if (!mayAdminister(uid, stat.uid)) {
    const owner = userName(stat.uid);
    throw new ReachError(
      `the master at ${socket} runs as ${owner}, and only ${administrators(stat.uid, userName)} may administer it (you are ${userName(uid)}); ` +
        `run the command as ${stat.uid === 0 ? 'root, e.g. sudo handover ...' : `one of them, e.g. sudo -u ${owner} handover ...`}`,
    );
  }
}

/** Sends one request and resolves with the first answer, or undefined at EOF. */
export function ask(socket: string, request: Message, timeoutMs?: number): Promise<Message | undefined> {
  checkOwner(socket);
  return new Promise((resolve, reject) => {
    const conn = net.connect(socket);
    const decoder = new FrameDecoder();
    const timer = timeoutMs === undefined ? undefined : setTimeout(() => {
      conn.destroy();
      reject(new ReachError(`the master at ${socket} did not answer within ${timeoutMs} ms; it may be overloaded or stopped (is its event loop blocked?)`));
    }, timeoutMs);
    conn.on('connect', () => conn.write(encode(request)));
    conn.on('data', (chunk) => {
      const [answer] = decoder.push(chunk);
      if (answer) {
        clearTimeout(timer);
        conn.end();
        resolve(answer);
      }
    });
    conn.on('error', (error) => {
      clearTimeout(timer);
      reject(new ReachError(`cannot reach the master at ${socket}: ${error.message}`));
    });
    conn.on('close', () => {
      clearTimeout(timer);
      resolve(undefined);
    });
  });
}

function noAnswer(socket: string): ReachError {
  return new ReachError(`the master at ${socket} closed the connection without answering; it refused the request, and its log says why`);
}

export interface WorkerReport {
  pid: number;
  slot: number;
  generation: number;
  state: string;
  uptimeMs?: number;
  rssBytes?: number;
  connections?: number;
  restarts?: number;
  version?: string;
  /** CPU use over CPU_WINDOW_MS, 100 = one core. */
  cpuPercent?: number;
  requests?: number;
  loopDelayMs?: number;
}

/** What `status --json` prints: the master's status plus what /proc tells about each process. */
export interface StatusReport extends Omit<MasterStatus, 'workers'> {
  name?: string;
  rssBytes?: number;
  cpuPercent?: number;
  workers: WorkerReport[];
}

export async function fetchStatus(target: Target): Promise<StatusReport> {
  const answer = await ask(target.socket, { type: 'status' }, STATUS_TIMEOUT_MS);
  if (answer?.type !== 'status-result') throw noAnswer(target.socket);
  const status = answer.status;
  const now = Date.now();
  const cpu = await cpuPercent([status.pid, ...status.workers.map((w) => w.pid)], CPU_WINDOW_MS);
  return {
    ...status,
    name: target.entry?.name,
    rssBytes: rssBytes(status.pid),
    cpuPercent: cpu.get(status.pid),
    workers: status.workers.map((w) => {
      const started = w.startedAt ?? startedAt(w.pid);
      return {
        pid: w.pid,
        slot: w.slot,
        generation: w.generation,
        state: w.state,
        uptimeMs: started === undefined ? undefined : Math.max(0, now - started),
        rssBytes: rssBytes(w.pid),
        connections: w.connections,
        restarts: status.slots?.find((s) => s.slot === w.slot)?.restarts,
        version: w.version,
        cpuPercent: cpu.get(w.pid),
        requests: w.requests,
        loopDelayMs: w.loopDelayMs,
      };
    }),
  };
}

export function formatDuration(ms: number): string {
  const s = Math.floor(ms / 1000);
  const parts = [[Math.floor(s / 86400), 'd'], [Math.floor(s / 3600) % 24, 'h'], [Math.floor(s / 60) % 60, 'm'], [s % 60, 's']];
  const shown = parts.filter(([n], i) => n !== 0 || i === parts.length - 1);
  return shown.map(([n, u]) => `${n}${u}`).join(' ');
}

export function formatBytes(bytes: number | undefined): string {
  return bytes === undefined ? '?' : `${(bytes / (1024 * 1024)).toFixed(1)} MB`;
}

export function formatPercent(percent: number | undefined): string {
  return percent === undefined ? '?' : `${percent.toFixed(1)}%`;
}

/** `status` as text: the master, each worker, each slot without its own ready worker, the last reload. */
export function formatStatus(s: StatusReport): string {
  const last = s.lastReload;
  const lines = [
    `master pid ${s.pid}${s.name ? ` (${s.name})` : ''}, generation ${s.generation}${s.reloading ? ' (reloading)' : ''}, up ${formatDuration(s.uptimeMs)}`,
    `listening on ${s.addresses.join(', ')}`,
    ...s.workers.map((w) => [
      `  worker pid ${w.pid}`,
      `slot ${w.slot}`,
      `generation ${w.generation}`,
      w.state,
      `${w.connections ?? '?'} open connection(s)`,
      `up ${w.uptimeMs === undefined ? '?' : formatDuration(w.uptimeMs)}`,
      `rss ${formatBytes(w.rssBytes)}`,
      `cpu ${formatPercent(w.cpuPercent)}`,
      `${w.restarts ?? '?'} restart(s)`,
      `version ${w.version ?? '?'}`,
    ].join('  ')),
  ];
  // the slots without their own ready worker, and who serves their connections meanwhile
  for (const slot of s.slots ?? []) {
    if (slot.state === 'ready') continue;
    const by = slot.coveredBy === undefined ? 'no worker accepts its connections' : `worker pid ${slot.coveredBy} accepts its connections`;
    const held = slot.held ? `  HELD: ${slot.held}` : '';
    lines.push(`  slot ${slot.slot}  ${slot.state}${slot.pid ? ` (pid ${slot.pid})` : ''}  ${by}  ${slot.restarts} restart(s)${held}`);
  }
  // the master cuts its reply to fit one frame: say what is missing, and where to see everything
  const cut = [[s.omitted?.workers ?? 0, 'worker(s)'], [s.omitted?.slots ?? 0, 'slot(s)']].filter(([n]) => n !== 0);
  if (cut.length > 0) {
    lines.push(`  ... and ${cut.map(([n, what]) => `${n} more ${what}`).join(' and ')} not shown: the master's status reply is capped at ${MAX_FRAME_BYTES / 1024} KiB; ` +
      'handover_workers on the metrics endpoint (--metrics) counts them all');
  }
  if (last) {
    const when = `${formatDuration(Date.now() - last.startedAt)} ago`;
    lines.push(last.ok
      ? `last reload: generation ${last.generation}, ${when}, ready in ${Math.round(last.durationMs)} ms`
      : `last reload: generation ${last.generation}, ${when}, FAILED after ${Math.round(last.durationMs)} ms: ${last.error ?? ''}`);
  }
  return `${lines.join('\n')}\n`;
}

export async function status(name: string | undefined, options: Map<string, string | true>): Promise<number> {
  const report = await fetchStatus(await locate(name, options));
  process.stdout.write(options.has('json') ? `${JSON.stringify(report, null, 2)}\n` : formatStatus(report));
  return 0;
}

/**
 * Sends a request that the master answers with an outcome: prints `done` and
 * returns 0, or prints why it failed and returns 1.
 */
async function act(name: string | undefined, options: Map<string, string | true>, request: Message, done: string, what: string): Promise<number> {
  const { socket } = await locate(name, options);
  const answer = await ask(socket, request);
  if (answer?.type !== 'reload-result' && answer?.type !== 'scale-result') throw noAnswer(socket);
  if (answer.ok) {
    process.stdout.write(`${done}\n`);
    return 0;
  }
  process.stdout.write(`${what} failed: ${answer.message ?? 'no reason given'}\n`);
  return 1;
}

export function reload(name: string | undefined, options: Map<string, string | true>): Promise<number> {
  return act(name, options, { type: 'reload', id: 1 }, 'reloaded', 'reload');
}

export function rollback(name: string | undefined, options: Map<string, string | true>): Promise<number> {
  return act(name, options, { type: 'rollback', id: 1 }, 'rolled back', 'rollback');
}

export function scale(name: string | undefined, workers: number, options: Map<string, string | true>): Promise<number> {
  return act(name, options, { type: 'scale', id: 1, workers }, `scaled to ${workers} worker(s)`, 'scaling');
}

/** Whether something still accepts connections on `socket`. */
function accepting(socket: string): Promise<boolean> {
  return new Promise((resolve) => {
    const conn = net.connect(socket, () => {
      conn.destroy();
      resolve(true);
    });
    conn.on('error', () => resolve(false));
  });
}

export async function stop(name: string | undefined, options: Map<string, string | true>): Promise<number> {
  const { socket } = await locate(name, options);
  // The master closes the connection once it has stopped, its control socket
  // closed first; a connection it refused is closed too, with the master and
  // its socket still there.
  await ask(socket, { type: 'stop' });
  if (await accepting(socket)) {
    process.stdout.write(`stop failed: the master at ${socket} closed the connection without stopping; it refused the request, and its log says why\n`);
    return 1;
  }
  process.stdout.write('stopped\n');
  return 0;
}

export async function list(options: Map<string, string | true>): Promise<number> {
  const entries = await liveMasters();
  const rows = await Promise.all(entries.map(async (entry: RegistryEntry) => {
    const report = await fetchStatus({ socket: entry.socket, entry }).catch(() => undefined);
    return { entry, report };
  }));
  if (options.has('json')) {
    process.stdout.write(`${JSON.stringify(rows.map(({ entry, report }) => ({ ...entry, status: report })), null, 2)}\n`);
    return 0;
  }
  if (rows.length === 0) {
    process.stdout.write(`no masters running as ${os.userInfo().username}\n`);
    return 0;
  }
  const table = [['NAME', 'PID', 'GENERATION', 'WORKERS', 'UPTIME', 'ADDRESSES', 'DIRECTORY']];
  for (const { entry, report } of rows) {
    const ready = report?.workers.filter((w) => w.state === 'ready' && w.generation === report.generation).length;
    table.push([
      entry.name,
      String(entry.pid),
      report ? String(report.generation) : '?',
      report ? `${ready}/${report.workers.length}` : '?',
      formatDuration(Date.now() - entry.started),
      report ? report.addresses.join(',') : '?',
      entry.cwd,
    ]);
  }
  const widths = table[0].map((_, i) => Math.max(...table.map((r) => r[i].length)));
  process.stdout.write(table.map((r) => r.map((cell, i) => cell.padEnd(widths[i])).join('  ').trimEnd()).join('\n') + '\n');
  return 0;
}
