// `handover logs [NAME] [--lines N] [--follow] [--json]`: the last lines a
// master kept (its ring, log-ring.ts), then with --follow every new one until
// Ctrl-C. Without NAME and with several masters running: all of them,
// ordered by time, each line prefixed with its app's name.
import * as net from 'node:net';
import { liveMasters } from '../master/registry';
import { FrameDecoder, type LogLine, encode } from '../protocol';
import { ReachError, checkOwner } from './admin';
import { UsageError } from './args';
import { type Target, locate } from './locate';

const DEFAULT_LINES = 100;

function format(line: LogLine, name: string | undefined, json: boolean): string {
  if (json) return `${JSON.stringify({ ...(name ? { name } : {}), ...line, time: new Date(line.time).toISOString() })}\n`;
  // the master's own lines name it already (handover[pid] master ...)
  const who = line.generation === undefined ? '' : `[g${line.generation} ${line.pid}] `;
  return `${name ? `${name} | ` : ''}${who}${line.text}\n`;
}

/**
 * Asks one master for its lines; `onLines` gets the first batch (ended by
 * the `end` frame) once, then, following, each later line.
 */
function request(target: Target, lines: number, follow: boolean, onBacklog: (lines: LogLine[]) => void, onLine: (line: LogLine) => void): Promise<void> {
  checkOwner(target.socket);
  return new Promise((resolve, reject) => {
    const conn = net.connect(target.socket);
    const decoder = new FrameDecoder();
    let backlog: LogLine[] | undefined = [];
    conn.on('connect', () => conn.write(encode({ type: 'logs', lines, follow })));
    conn.on('data', (chunk) => {
      for (const frame of decoder.push(chunk)) {
        if (frame.type !== 'log-lines') continue;
        if (backlog === undefined) {
          frame.lines.forEach(onLine);
          continue;
        }
        backlog.push(...frame.lines);
        if (frame.end) {
          onBacklog(backlog);
          backlog = undefined;
          if (!follow) conn.end();
        }
      }
    });
    conn.on('error', (error) => reject(new ReachError(`cannot reach the master at ${target.socket}: ${error.message}`)));
    conn.on('close', () => {
      if (backlog !== undefined) reject(new ReachError(`the master at ${target.socket} closed the connection before sending its log (a master from before \`handover logs\`? restart it)`));
      else resolve();
    });
  });
}

export async function logs(name: string | undefined, options: Map<string, string | true>): Promise<number> {
  const count = options.get('lines');
  if (count !== undefined && (typeof count !== 'string' || !/^\d+$/.test(count))) throw new UsageError(`--lines needs a number of lines, e.g. --lines 50 (got ${count === true ? 'nothing' : count})`);
  const lines = count === undefined ? DEFAULT_LINES : Number(count);
  const follow = options.has('follow');
  const json = options.has('json');
  const live = name === undefined && !options.has('pid') && !options.has('socket') ? await liveMasters() : [];
  const targets: Target[] = live.length > 1 ? live.map((entry) => ({ socket: entry.socket, entry })) : [await locate(name, options)];
  const prefix = targets.length > 1;
  const write = (line: LogLine, target: Target) => process.stdout.write(format(line, prefix ? target.entry?.name : undefined, json));
  // every master's backlog first, merged by time, then the live lines as they come
  const backlogs: { line: LogLine; target: Target }[] = [];
  let waiting = targets.length;
  let flushed = false;
  const queued: [LogLine, Target][] = [];
  const flush = () => {
    flushed = true;
    backlogs.sort((a, b) => a.line.time - b.line.time).slice(-lines).forEach(({ line, target }) => write(line, target));
    queued.forEach(([line, target]) => write(line, target));
  };
  await Promise.all(targets.map((target) => request(target, lines, follow, (batch) => {
    backlogs.push(...batch.map((line) => ({ line, target })));
    if (--waiting === 0) flush();
  }, (line) => (flushed ? write(line, target) : queued.push([line, target])))));
  return 0;
}
