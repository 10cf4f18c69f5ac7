// Server options, their defaults, and their validation.
import * as os from 'node:os';
import { type Identity, resolveIdentity } from './platform/identity';
import type { Logger } from './log';

export interface ServerOptions {
  /**
   * 'master' (default): a master process with a stable pid owns the sockets
   * and spawns workers. 'single': no master; this process serves, and a reload
   * hands the sockets to a successor copy of the program (the pid changes).
   */
  mode?: 'master' | 'single';
  /** ms a draining worker has to finish in-flight work before it is killed. Default 20_000. */
  stopTimeout?: number;
  /** ms a new worker has to become ready (listening, `ready()` resolved). Default 30_000. */
  startTimeout?: number;
  /** Signals that start a reload in the master. Default ['SIGHUP', 'SIGUSR1']. */
  reloadSignals?: NodeJS.Signals[];
  /** Signals that stop gracefully; a second one forces. Default ['SIGTERM', 'SIGINT']. */
  stopSignals?: NodeJS.Signals[];
  /** Worker processes per generation. Default 1. */
  workers?: number;
  /**
   * ms a ready worker may go without answering the master's heartbeat before
   * it is taken out of service (its slot's socket goes to a sibling) and
   * replaced. Default 5_000.
   */
  heartbeatTimeout?: number;
  /**
   * ms after a stop begins during which new connections are still accepted
   * (and answered with `Connection: close`) before the listening sockets
   * close, for load balancers that take a few seconds to stop routing here
   * (Kubernetes endpoints). Default 0.
   */
  stopDelay?: number;
  /** Runs in each worker before it listens and reports ready (warm caches here); a throw fails the start. */
  ready?: () => void | Promise<void>;
  /** Lifecycle lines. Default: stderr. `false` silences; any {info, warn, error} plugs in. */
  logger?: Logger | false;
  /** The master writes its pid here at start and removes it at stop. */
  pidFile?: string;
  /** listen() backlog of every socket the master binds. Default 1024. */
  backlog?: number;
  /** Join an existing SO_REUSEPORT group on purpose instead of failing with EADDRINUSE. Default false. */
  shared?: boolean;
  /** File mode of Unix socket files the master creates, e.g. 0o660. Default: the umask decides. */
  unixSocketMode?: number;
  /** Where the private control directory is created. Default os.tmpdir(). */
  controlDir?: string;
  /**
   * Run workers as this user (name or uid) while the master, started as root,
   * binds privileged ports. Default: the master's own user.
   */
  user?: string | number;
  /** Group for the workers (name or gid). Default: the `user`'s primary group. */
  group?: string | number;
}

export interface ResolvedOptions {
  mode: 'master' | 'single';
  stopTimeout: number;
  startTimeout: number;
  reloadSignals: NodeJS.Signals[];
  stopSignals: NodeJS.Signals[];
  workers: number;
  heartbeatTimeout: number;
  stopDelay: number;
  ready?: () => void | Promise<void>;
  logger: Logger | false | undefined;
  pidFile?: string;
  backlog: number;
  shared: boolean;
  unixSocketMode?: number;
  controlDir: string;
  /** Who workers run as; undefined: the master's own identity. */
  identity?: Identity;
}

const UNCATCHABLE = new Set(['SIGKILL', 'SIGSTOP']);

function checkSignals(name: string, signals: NodeJS.Signals[]): void {
  for (const signal of signals) {
    if (!(signal in os.constants.signals)) throw new TypeError(`${name}: ${signal} is not a signal name`);
    if (UNCATCHABLE.has(signal)) {
      throw new TypeError(`${name}: ${signal} cannot be caught, so it can never start a reload or a graceful stop; remove it`);
    }
  }
}

function checkDuration(name: string, value: number): void {
  if (!Number.isFinite(value) || value <= 0) throw new TypeError(`${name} must be a positive number of milliseconds, got ${value}`);
}

export function resolveOptions(options: ServerOptions = {}): ResolvedOptions {
  const resolved: ResolvedOptions = {
    mode: options.mode ?? 'master',
    stopTimeout: options.stopTimeout ?? 20_000,
    startTimeout: options.startTimeout ?? 30_000,
    reloadSignals: options.reloadSignals ?? ['SIGHUP', 'SIGUSR1'],
    stopSignals: options.stopSignals ?? ['SIGTERM', 'SIGINT'],
    workers: options.workers ?? 1,
    heartbeatTimeout: options.heartbeatTimeout ?? 5_000,
    stopDelay: options.stopDelay ?? 0,
    ready: options.ready,
    logger: options.logger,
    pidFile: options.pidFile,
    backlog: options.backlog ?? 1024,
    shared: options.shared ?? false,
    unixSocketMode: options.unixSocketMode,
    controlDir: options.controlDir ?? os.tmpdir(),
    identity: resolveIdentity(options.user, options.group),
  };
  checkDuration('stopTimeout', resolved.stopTimeout);
  checkDuration('startTimeout', resolved.startTimeout);
  checkDuration('heartbeatTimeout', resolved.heartbeatTimeout);
  if (!Number.isFinite(resolved.stopDelay) || resolved.stopDelay < 0) {
    throw new TypeError(`stopDelay must be a number of milliseconds >= 0, got ${resolved.stopDelay}`);
  }
  checkSignals('reloadSignals', resolved.reloadSignals);
  checkSignals('stopSignals', resolved.stopSignals);
  const overlap = resolved.reloadSignals.filter((s) => resolved.stopSignals.includes(s));
  if (overlap.length > 0) throw new TypeError(`${overlap.join(', ')} cannot both reload and stop`);
  if (!Number.isInteger(resolved.workers) || resolved.workers < 1) {
    throw new TypeError(`workers must be an integer >= 1, got ${resolved.workers}`);
  }
  if (resolved.mode !== 'master' && resolved.mode !== 'single') throw new TypeError(`mode must be 'master' or 'single', got ${resolved.mode}`);
  if (resolved.mode === 'single' && resolved.workers !== 1) throw new TypeError('mode: \'single\' serves in one process; leave workers at 1');
  if (!Number.isInteger(resolved.backlog) || resolved.backlog < 1) {
    throw new TypeError(`backlog must be an integer >= 1, got ${resolved.backlog}`);
  }
  return resolved;
}
