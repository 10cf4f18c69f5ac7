// Lifecycle lines. Default: one line each to stderr, prefixed with role and pid.
//
// Logging never takes a process down (invariant 13): Node ignores SIGPIPE, so
// a write to a stdout/stderr pipe whose reader has gone (`node app.js | head`,
// a log shipper restarting) surfaces as an 'error' event on the stream, and an
// unhandled one kills the process: for the master, the whole service. And a
// log flood into a stream that cannot keep up is cut, not buffered without end.
import type { Writable } from 'node:stream';

/** Anything with info/warn/error taking one string plugs in (console, pino, winston...). */
export interface Logger {
  info(message: string): void;
  warn(message: string): void;
  error(message: string): void;
}

/** Bytes a log stream may hold unwritten before further lines are dropped (and counted). */
export const MAX_PENDING_LOG_BYTES = 1 << 20;

const silent: Logger = { info() {}, warn() {}, error() {} };

const guarded = new WeakSet<Writable>();

/** Swallows write errors (EPIPE, EBADF...) on `stream`, once per stream. */
function ignoreWriteErrors(stream: Writable): void {
  if (guarded.has(stream)) return;
  guarded.add(stream);
  stream.on('error', () => {});
}

let stdioGuarded = false;

/**
 * Swallows write errors on process.stdout and process.stderr, whoever
 * writes to them (a logger here, the application's console), from the
 * moment each exists. Node creates each stream when it is first read, which
 * costs a process about 1 ms of CPU (a worker, at every reload); one that
 * never writes to it never pays.
 */
function guardStdio(): void {
  if (stdioGuarded) return;
  stdioGuarded = true;
  for (const name of ['stdout', 'stderr'] as const) {
    const own = Object.getOwnPropertyDescriptor(process, name);
    if (!own?.get || !own.configurable) {
      ignoreWriteErrors(process[name]);
      continue;
    }
    const create = own.get;
    Object.defineProperty(process, name, {
      configurable: true,
      enumerable: own.enumerable,
      get() {
        const stream = create.call(process) as Writable;
        ignoreWriteErrors(stream);
        Object.defineProperty(process, name, own);
        return stream;
      },
    });
  }
}

/**
 * Writes lines to `target` (a stream, or a function that gives it when the
 * first line comes; each line formatted only when it is written) without
 * ever letting it hold more than MAX_PENDING_LOG_BYTES unwritten: past that,
 * lines are dropped and counted, and the next line written is preceded by
 * `dropped(count)`. A closed stream loses the lines, never the process.
 */
export function boundedLines(target: Writable | (() => Writable), dropped: (count: number) => string): (line: () => string) => void {
  let stream: Writable | undefined;
  let count = 0;
  return (line) => {
    if (!stream) {
      stream = typeof target === 'function' ? target() : target;
      ignoreWriteErrors(stream);
    }
    if (stream.destroyed || !stream.writable) return;
    if (stream.writableLength > MAX_PENDING_LOG_BYTES) {
      count++;
      return;
    }
    if (count > 0) {
      stream.write(dropped(count));
      count = 0;
    }
    stream.write(line());
  };
}

/** One line per call to `target` (as boundedLines() takes it), bounded as boundedLines() says. */
export function streamLogger(target: Writable | (() => Writable), role: string): Logger {
  const prefix = `handover[${process.pid}] ${role}`;
  const write = boundedLines(target, (count) => `${prefix} warn: ${count} log line(s) dropped: the log stream could not keep up\n`);
  const line = (level: string) => (message: string) => write(() => `${prefix} ${level}: ${message}\n`);
  return { info: line('info'), warn: line('warn'), error: line('error') };
}

export function createLogger(option: Logger | false | undefined, role: 'master' | 'worker' | 'single'): Logger {
  // Whatever logs (this logger, the application's own console), a closed
  // stdout or stderr must not be fatal.
  guardStdio();
  if (option === false) return silent;
  return option ?? streamLogger(() => process.stderr, role);
}
