// Starting another copy of this program: the same Node binary, flags and
// arguments, so it loads the code now on disk. `handover start` configures
// more (configureSpawn): Node flags for the children, an env file read again
// at every spawn, and the children's output routed through this process with
// each line prefixed by generation and pid.
import { type ChildProcess, spawn } from 'node:child_process';
import * as path from 'node:path';
import type { Readable, Writable } from 'node:stream';
import { parseEnv } from 'node:util';
import { boundedLines } from '../log';
import { ENV } from '../protocol';
import { markCloseOnExec } from '../platform/native';
import { spawnLowered } from './boot-priority';
import { readFileForWorkers } from './privilege';
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

/**
 * The variables of the env file, or a message saying why it cannot be used.
 * The master (maybe root) reads it for the workers, so privilege.ts decides
 * whether it may: a root-only file works, a symlink or another user's file
 * is refused.
 */
function readEnvFile(file: string): Record<string, string> | { error: string } {
  try {
    return parseEnv(readFileForWorkers(file, '--env-file')) as Record<string, string>;
  } catch (error) {
    return { error: `${(error as Error).message}; fix the file and reload` };
  }
}

/**
 * `--env-file` in a child's command line: Node itself reads it there even
 * after the script name (nodejs/node#54232), as the workers' user, following
 * symlinks; a root-only file then kills every worker (exit 9). The
 * variables reach the children through their environment instead: Node's
 * own flag (the master's process.env has them already) and handover's
 * (`envFile`, read by readEnvFile).
 */
function withoutEnvFile(args: string[], envFile: string | undefined): string[] {
  const out: string[] = [];
  for (let i = 0; i < args.length; i++) {
    const arg = args[i];
    const [flag, value] = arg.startsWith('--') && arg.includes('=') ? [arg.slice(0, arg.indexOf('=')), arg.slice(arg.indexOf('=') + 1)] : [arg, undefined];
    if (flag !== '--env-file' && flag !== '--env-file-if-exists') {
      out.push(arg);
      continue;
    }
    const file = value ?? args[i + 1];
    // handover's own --env-file, or Node's in the master's execArgv (envFile undefined)
    if (envFile !== undefined && (file === undefined || path.resolve(file) !== envFile)) {
      out.push(arg);
      continue;
    }
    if (value === undefined) i++;
  }
  return out;
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
 * Fds this process inherited are marked close-on-exec at the first spawn;
 * every fd opened later is close-on-exec already. So a respawn at the fd
 * limit needs no fd to list /proc/self/fd, and fails (EMFILE, an 'error' on
 * the child) instead of throwing in the master.
 */
let inheritedMarked = false;

/**
 * Spawns this program again with `env` added. Only stdio crosses the spawn:
 * listening sockets travel over the control socket (invariant 5). Every fd
 * handover opens is close-on-exec; fds this process inherited may not be, so
 * they are marked first. The inspector port cannot be shared, so inspector
 * flags stay with the parent.
 */
export function spawnSelf(env: Record<string, string>, identity?: { uid: number; gid: number }): ChildProcess {
  if (!inheritedMarked) {
    markCloseOnExec(3);
    inheritedMarked = true;
  }
  const inherited = withoutEnvFile(process.execArgv.filter((arg) => !/^--inspect(-brk|-port)?(=|$)/.test(arg)), undefined);
  const fromFile = settings.envFile ? readEnvFile(settings.envFile) : {};
  const childEnv: Record<string, string | undefined> = { ...process.env };
  if ('error' in fromFile) childEnv[SPAWN_ERROR_ENV] = fromFile.error as string;
  else Object.assign(childEnv, fromFile);
  // A master's worker (not a single-mode successor, which becomes the
  // service's main process) is not what systemd supervises: it must not
  // notify it, and it leads a process group of its own (process-group.ts).
  const worker = ENV.token in env;
  if (worker) delete childEnv.NOTIFY_SOCKET;
  // It boots at a lower priority, raised when it is ready (boot-priority.ts).
  const child = spawnLowered(() => spawn(process.execPath, [...inherited, ...settings.execArgv, ...withoutEnvFile(process.argv.slice(1), settings.envFile)], {
    env: { ...childEnv, ...env },
    stdio: settings.output === 'inherit' ? ['ignore', 'inherit', 'inherit'] : ['ignore', 'pipe', 'pipe'],
    uid: identity?.uid,
    gid: identity?.gid,
    detached: worker,
  }), worker);
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
