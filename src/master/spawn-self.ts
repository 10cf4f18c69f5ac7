// Starting another copy of this program: the same Node binary, flags and
// arguments, so it loads the code now on disk. `handover start` configures
// more (configureSpawn): Node flags for the children, an env file read again
// at every spawn, and the children's output routed through this process with
// each line prefixed by generation and pid.
import { type ChildProcess, spawn } from 'node:child_process';
import * as fs from 'node:fs';
import type { Readable, Writable } from 'node:stream';
import { parseEnv } from 'node:util';
import { boundedLines } from '../log';
import { ENV } from '../protocol';
import { markCloseOnExec } from '../platform/native';
import { endGroupWith } from './process-group';

/** Lines of a child's stderr kept for its failure report (stderrTail). */
const TAIL_LINES = 20;
/** How long stderrTail waits, after the child's exit, for the rest of its stderr. */
const TAIL_SETTLE_MS = 500;
/** A "line" longer than this is passed on in pieces rather than held in memory. */
const MAX_LINE_BYTES = 64 * 1024;
/** Set in a child whose environment could not be prepared; that child reports it and exits 1. */
export const SPAWN_ERROR_ENV = 'HANDOVER_SPAWN_ERROR';

export interface SpawnSettings {
  /** Node flags for the children, after this process's own (`handover start -- --max-old-space-size=512`). */
  execArgv: string[];
  /**
   * Read at every spawn (so a reload picks up its changes); its variables
   * override this process's environment, and a variable removed from it is
   * gone in the next generation.
   */
  envFile?: string;
  /**
   * 'text' or 'json': pipe the children's stdout and stderr through this
   * process, line by line, each line prefixed with `[g<generation> <pid>] `
   * ('text') or as one JSON object per line ('json'), and keep the last lines
   * of stderr for stderrTail(). 'inherit' (default): the children share this
   * process's stdio and nothing passes through the master.
   */
  output: 'inherit' | 'text' | 'json';
}

const settings: SpawnSettings = { execArgv: [], output: 'inherit' };

export function configureSpawn(changes: Partial<SpawnSettings>): void {
  Object.assign(settings, changes);
}

const tails = new WeakMap<ChildProcess, { lines: string[]; ended: Promise<void> }>();

/**
 * The last lines the child wrote to stderr (Node's internal stack frames
 * left out), for a report of why it failed: the thrown message and its stack,
 * or a SyntaxError with file and line. '' when its output is not captured.
 * Call it on 'exit': it waits for the rest of the child's stderr (which can
 * arrive after 'exit') up to TAIL_SETTLE_MS, since a grandchild holding the
 * pipe open would delay 'close' for ever.
 */
export async function stderrTail(child: ChildProcess): Promise<string> {
  const tail = tails.get(child);
  if (!tail) return '';
  let timer: NodeJS.Timeout | undefined;
  await Promise.race([tail.ended, new Promise((resolve) => (timer = setTimeout(resolve, TAIL_SETTLE_MS)))]);
  clearTimeout(timer);
  return tail.lines.join('\n');
}

/** The variables of the env file, or a message saying why it cannot be used. */
function readEnvFile(file: string): Record<string, string> | { error: string } {
  try {
    return parseEnv(fs.readFileSync(file, 'utf8')) as Record<string, string>;
  } catch (error) {
    const code = (error as NodeJS.ErrnoException).code ?? 'error';
    return { error: `cannot read --env-file ${file} (${code}): ${(error as Error).message}; fix the file and reload` };
  }
}

/** One line of a child's output as this process writes it. */
type Format = (line: string) => string;

function formatFor(generation: string, pid: number | undefined, stream: 'stdout' | 'stderr'): Format {
  if (settings.output === 'json') {
    return (line) => `${JSON.stringify({ time: new Date().toISOString(), generation: Number(generation), pid, stream, msg: line })}\n`;
  }
  return (line) => `[g${generation} ${pid}] ${line}\n`;
}

/**
 * Copies `from` to `to` line by line, formatted; a line that arrives in
 * pieces is written whole. The master reads as fast as the worker writes and
 * holds at most MAX_PENDING_LOG_BYTES for `to`: when `to` cannot keep up (a
 * pipe nobody reads, a slow terminal), lines are dropped and counted
 * (invariant 18), so the worker is never blocked and the master never grows.
 * A closed `to` loses the output, never the master.
 */
function relayLines(from: Readable, to: Writable, format: Format, tail?: string[]): void {
  const write = boundedLines(to, (count) => format(`handover: ${count} line(s) of this worker's output dropped: the master's output could not keep up`));
  let pending = '';
  const emit = (line: string) => {
    write(() => format(line));
    if (tail && !/^\s+at .*\(?node:internal\//.test(line)) {
      tail.push(line);
      if (tail.length > TAIL_LINES) tail.shift();
    }
  };
  from.setEncoding('utf8');
  from.on('data', (chunk: string) => {
    pending += chunk;
    let newline: number;
    while ((newline = pending.indexOf('\n')) >= 0) {
      emit(pending.slice(0, newline));
      pending = pending.slice(newline + 1);
    }
    if (pending.length > MAX_LINE_BYTES) {
      emit(pending);
      pending = '';
    }
  });
  from.on('end', () => {
    if (pending) emit(pending);
    pending = '';
  });
}

/**
 * Spawns this program again with `env` added. Only stdio crosses the spawn:
 * listening sockets travel over the control socket (invariant 5). Every fd
 * handover opens is close-on-exec; fds this process inherited may not be, so
 * they are marked first. The inspector port cannot be shared, so inspector
 * flags stay with the parent.
 */
export function spawnSelf(env: Record<string, string>, identity?: { uid: number; gid: number }): ChildProcess {
  markCloseOnExec(3);
  const inherited = process.execArgv.filter((arg) => !/^--inspect(-brk|-port)?(=|$)/.test(arg));
  const fromFile = settings.envFile ? readEnvFile(settings.envFile) : {};
  const childEnv: Record<string, string | undefined> = { ...process.env };
  if ('error' in fromFile) childEnv[SPAWN_ERROR_ENV] = fromFile.error as string;
  else Object.assign(childEnv, fromFile);
  // A master's worker (not a single-mode successor, which becomes the
  // service's main process) is not what systemd supervises: it must not
  // notify it, and it leads a process group of its own (process-group.ts).
  const worker = ENV.token in env;
  if (worker) delete childEnv.NOTIFY_SOCKET;
  const child = spawn(process.execPath, [...inherited, ...settings.execArgv, ...process.argv.slice(1)], {
    env: { ...childEnv, ...env },
    stdio: settings.output === 'inherit' ? ['ignore', 'inherit', 'inherit'] : ['ignore', 'pipe', 'pipe'],
    uid: identity?.uid,
    gid: identity?.gid,
    detached: worker,
  });
  if (worker) endGroupWith(child);
  if (child.stdout && child.stderr) {
    const generation = env[ENV.generation] ?? '?';
    const lines: string[] = [];
    const ended = new Promise<void>((resolve) => child.stderr!.once('close', () => resolve()));
    tails.set(child, { lines, ended });
    relayLines(child.stdout, process.stdout, formatFor(generation, child.pid, 'stdout'));
    relayLines(child.stderr, process.stderr, formatFor(generation, child.pid, 'stderr'), lines);
  }
  return child;
}
