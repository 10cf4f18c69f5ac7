// Server options, their defaults, and their validation.
import * as os from 'node:os';
import { type Identity, resolveIdentity } from './platform/identity';
import type { Logger } from './log';

/**
 * Options of `new Server()`, `listenAndServe()` and `listenAndServeTLS()`.
 * Every one is checked at run time: a wrong type throws a TypeError, a value
 * out of range a RangeError, an unknown name a TypeError that suggests the
 * closest one. Durations are milliseconds, at most 2_147_483_647 (2^31-1, about
 * 24.8 days: the longest a Node timer waits).
 */
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
  /**
   * How a reload replaces the workers. 'parallel' (default): start a whole new
   * generation, and drain the old one once every new worker is ready (2N
   * workers for a moment). 'phased': one slot at a time, start its new worker,
   * and once it is ready drain that slot's old one: at most N+1 workers, never
   * fewer than N serving. A failure stops the rollout; see the README.
   */
  rollout?: 'parallel' | 'phased';
  /**
   * Recycle a worker whose resident memory (RSS, bytes) exceeds this: a
   * replacement starts, and once it is ready the old worker drains. Sampled
   * with each heartbeat (at least every second). Default: never.
   */
  maxMemory?: number;
  /**
   * Recycle a worker after it has served this many requests (connections, for
   * a plain net server), plus a random extra of up to 10% so that slots do not
   * recycle together. Default: never.
   */
  maxRequests?: number;
  /** Recycle a worker after it has been ready this many ms (plus up to 10% at random). Default: never. */
  maxLifetime?: number;
  /**
   * ms a generation replaced by a reload stays alive, not accepting, so that
   * `rollback()` (`handover rollback`) can put it back at once without
   * starting a process. With `rollout: 'phased'`, a failed rollout then also
   * restores every slot already switched. Costs its memory meanwhile.
   * Default 0: the old generation drains and exits.
   */
  keepPrevious?: number;
  /**
   * Old generations that may be draining at once. Reloads faster than
   * requests finish pile them up; past this bound the oldest one's workers
   * are closed at once (and that is logged): their requests in flight and
   * idle keep-alive connections are cut, so this is a bound on memory for
   * reloads far faster than requests finish, not a tool for normal use. A
   * generation usually drains within Node's 5 s keep-alive timeout. Default 10.
   */
  maxDraining?: number;
  /**
   * ms over which a drain spreads the closes of connections that cannot move
   * to the new generation (TLS and HTTP/2): each idle one is closed with a FIN
   * (an HTTP/2 session gets its GOAWAY) at its own moment in the first
   * `closeSpread` ms, so clients do not all reconnect in the same second. 0
   * closes them all at once. At most stopTimeout. Default: min(stopTimeout / 2, 10_000).
   */
  closeSpread?: number;
  /**
   * ms between rotations of the TLS session-ticket keys that the master makes
   * and every TLS server of every worker uses (so sessions resume on any
   * worker and across reloads). A ticket resumes for at least one interval,
   * so keep TLS servers' `sessionTimeout` (seconds, Node's default 300) at
   * most this. At least 1_000. Default 3_600_000 (1 hour).
   */
  ticketKeyRotation?: number;
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
  /**
   * @internal For `handover start`: the master registers nothing itself and
   * binds the addresses its workers' programs listen on (each hello names them).
   */
  dynamicAddresses?: boolean;
  /**
   * @internal How long an admin connection may stay idle after its last
   * answer (default 30 s). Tests shorten it; nobody else needs to.
   */
  adminIdleTimeout?: number;
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
  rollout: 'parallel' | 'phased';
  maxMemory?: number;
  maxRequests?: number;
  maxLifetime?: number;
  maxDraining: number;
  keepPrevious: number;
  closeSpread: number;
  ticketKeyRotation: number;
  ready?: () => void | Promise<void>;
  logger: Logger | false | undefined;
  pidFile?: string;
  backlog: number;
  shared: boolean;
  unixSocketMode?: number;
  controlDir: string;
  /** Who workers run as; undefined: the master's own identity. */
  identity?: Identity;
  dynamicAddresses: boolean;
  adminIdleTimeout: number;
}

const UNCATCHABLE = new Set(['SIGKILL', 'SIGSTOP']);

/** The largest delay Node's timers take; anything longer fires after 1 ms (TimeoutOverflowWarning). */
export const MAX_DURATION_MS = 2 ** 31 - 1;

const DEFAULTS = {
  mode: 'master',
  stopTimeout: 20_000,
  startTimeout: 30_000,
  reloadSignals: ['SIGHUP', 'SIGUSR1'],
  stopSignals: ['SIGTERM', 'SIGINT'],
  workers: 1,
  heartbeatTimeout: 5_000,
  stopDelay: 0,
  rollout: 'parallel',
  maxDraining: 10,
  keepPrevious: 0,
  ticketKeyRotation: 3_600_000,
  backlog: 1024,
  shared: false,
} as const;

/** Every option name, for the unknown-key check; `satisfies` keeps it in step with ServerOptions. */
const KNOWN = {
  mode: true, stopTimeout: true, startTimeout: true, reloadSignals: true, stopSignals: true, workers: true,
  heartbeatTimeout: true, stopDelay: true, rollout: true, maxMemory: true, maxRequests: true, maxLifetime: true, maxDraining: true, keepPrevious: true, closeSpread: true, ticketKeyRotation: true, ready: true, logger: true, pidFile: true, backlog: true, shared: true,
  unixSocketMode: true, controlDir: true, user: true, group: true, dynamicAddresses: true, adminIdleTimeout: true,
} satisfies Record<keyof ServerOptions, true>;

/** Options for handover's own use (the CLI, tests), left out of suggestions. */
const INTERNAL = new Set(['dynamicAddresses', 'adminIdleTimeout']);

function show(value: unknown): string {
  if (typeof value === 'string') return JSON.stringify(value);
  if (typeof value === 'function') return 'a function';
  if (Array.isArray(value)) return 'an array';
  if (value === null) return 'null';
  if (typeof value === 'object') return 'an object';
  return String(value);
}

/** Edit distance, for "did you mean". */
function distance(a: string, b: string): number {
  const row = Array.from({ length: b.length + 1 }, (_, j) => j);
  for (let i = 1; i <= a.length; i++) {
    let diagonal = row[0];
    row[0] = i;
    for (let j = 1; j <= b.length; j++) {
      const above = row[j];
      row[j] = Math.min(row[j] + 1, row[j - 1] + 1, diagonal + (a[i - 1].toLowerCase() === b[j - 1].toLowerCase() ? 0 : 1));
      diagonal = above;
    }
  }
  return row[b.length];
}

function checkKeys(options: object): void {
  for (const key of Object.keys(options)) {
    if (key in KNOWN) continue;
    const names = Object.keys(KNOWN).filter((name) => !INTERNAL.has(name)); // never suggested
    // a truncated name ('heartbeat') is its own kind of typo
    const prefixed = names.find((n) => key.length >= 4 && n.toLowerCase().startsWith(key.toLowerCase()));
    const [closest] = prefixed ? [prefixed] : [...names].sort((a, b) => distance(key, a) - distance(key, b));
    const hint = prefixed || distance(key, closest) <= Math.max(2, Math.floor(closest.length / 3))
      ? `did you mean \`${closest}\`?`
      : `the options are ${names.join(', ')}`;
    throw new TypeError(`unknown option \`${key}\`: ${hint}`);
  }
}

/** A number of milliseconds a Node timer can wait: finite, >= min, <= MAX_DURATION_MS. */
function checkDuration(name: string, value: unknown, min: 0 | 1): number {
  if (typeof value !== 'number' || Number.isNaN(value)) {
    throw new TypeError(`${name} must be a number of milliseconds, got ${show(value)}`);
  }
  if (value < min) throw new RangeError(`${name} must be ${min === 1 ? '> 0' : '>= 0'} ms, got ${value}`);
  if (value > MAX_DURATION_MS) {
    throw new RangeError(
      `${name} is ${value} ms, more than Node's timers can wait (${MAX_DURATION_MS} ms, about 24.8 days; ` +
        `a longer delay would fire after 1 ms); use at most ${MAX_DURATION_MS}`,
    );
  }
  return value;
}

function checkInteger(name: string, value: unknown, min: number, max: number, what = 'an integer'): number {
  if (typeof value !== 'number' || Number.isNaN(value)) throw new TypeError(`${name} must be ${what}, got ${show(value)}`);
  if (!Number.isInteger(value) || value < min || value > max) {
    throw new RangeError(`${name} must be ${what} from ${min} to ${max}, got ${value}`);
  }
  return value;
}

function checkString(name: string, value: unknown): string {
  if (typeof value !== 'string' || value === '') throw new TypeError(`${name} must be a non-empty string, got ${show(value)}`);
  return value;
}

function checkSignals(name: string, value: unknown): NodeJS.Signals[] {
  if (!Array.isArray(value)) throw new TypeError(`${name} must be an array of signal names such as ['SIGHUP'], got ${show(value)}`);
  for (const signal of value) {
    if (typeof signal !== 'string' || !(signal in os.constants.signals)) {
      throw new TypeError(`${name}: ${show(signal)} is not a signal name (write it as Node does, e.g. 'SIGHUP')`);
    }
    if (UNCATCHABLE.has(signal)) {
      throw new TypeError(`${name}: ${signal} cannot be caught, so it can never start a reload or a graceful stop; remove it`);
    }
  }
  return value as NodeJS.Signals[];
}

function checkRollout(value: unknown): 'parallel' | 'phased' {
  if (value !== 'parallel' && value !== 'phased') throw new TypeError(`rollout must be 'parallel' or 'phased', got ${show(value)}`);
  return value;
}

function checkLogger(value: unknown): Logger | false | undefined {
  if (value === undefined || value === false) return value;
  const methods = ['info', 'warn', 'error'] as const;
  if (typeof value !== 'object' || value === null || methods.some((m) => typeof (value as Logger)[m] !== 'function')) {
    throw new TypeError(
      `logger must be an object with info, warn and error methods (console, pino, winston...) or false to silence; ` +
        `got ${show(value)}${value === true ? ' (leave the option out for the default: lines on stderr)' : ''}`,
    );
  }
  return value as Logger;
}

function checkAccount(name: 'user' | 'group', value: unknown): string | number | undefined {
  if (value === undefined) return undefined;
  if (typeof value === 'number') return checkInteger(name, value, 0, 2 ** 32 - 2, `a ${name} name or a numeric id`);
  return checkString(name, value);
}

/**
 * Checks every option at run time (JavaScript callers have no type checker):
 * a wrong type is a TypeError, a value out of range a RangeError, each naming
 * the option; an unknown key suggests the closest known one.
 */
export function resolveOptions(options: ServerOptions = {}): ResolvedOptions {
  if (typeof options !== 'object' || options === null || Array.isArray(options)) {
    throw new TypeError(`options must be an object such as { workers: 2 }, got ${show(options)}`);
  }
  checkKeys(options);
  const o = { ...DEFAULTS, ...Object.fromEntries(Object.entries(options).filter(([, v]) => v !== undefined)) } as Record<string, unknown>;
  if (o.mode !== 'master' && o.mode !== 'single') throw new TypeError(`mode must be 'master' or 'single', got ${show(o.mode)}`);
  if (o.ready !== undefined && typeof o.ready !== 'function') {
    throw new TypeError(`ready must be a function (it runs in each worker before it serves), got ${show(o.ready)}`);
  }
  if (typeof o.shared !== 'boolean') throw new TypeError(`shared must be true or false, got ${show(o.shared)}`);
  const resolved: ResolvedOptions = {
    mode: o.mode,
    stopTimeout: checkDuration('stopTimeout', o.stopTimeout, 1),
    startTimeout: checkDuration('startTimeout', o.startTimeout, 1),
    reloadSignals: checkSignals('reloadSignals', o.reloadSignals),
    stopSignals: checkSignals('stopSignals', o.stopSignals),
    workers: checkInteger('workers', o.workers, 1, 1024),
    heartbeatTimeout: checkDuration('heartbeatTimeout', o.heartbeatTimeout, 1),
    stopDelay: checkDuration('stopDelay', o.stopDelay, 0),
    rollout: checkRollout(o.rollout),
    maxMemory: o.maxMemory === undefined ? undefined : checkInteger('maxMemory', o.maxMemory, 1 << 20, Number.MAX_SAFE_INTEGER, 'a number of bytes'),
    maxRequests: o.maxRequests === undefined ? undefined : checkInteger('maxRequests', o.maxRequests, 1, Number.MAX_SAFE_INTEGER),
    maxLifetime: o.maxLifetime === undefined ? undefined : checkDuration('maxLifetime', o.maxLifetime, 1),
    maxDraining: checkInteger('maxDraining', o.maxDraining, 1, 1024),
    keepPrevious: checkDuration('keepPrevious', o.keepPrevious, 0),
    closeSpread: o.closeSpread === undefined
      ? Math.min(Math.floor(Number(o.stopTimeout) / 2), 10_000)
      : checkDuration('closeSpread', o.closeSpread, 0),
    ticketKeyRotation: checkDuration('ticketKeyRotation', o.ticketKeyRotation, 1),
    ready: o.ready as ResolvedOptions['ready'],
    logger: checkLogger(o.logger),
    pidFile: o.pidFile === undefined ? undefined : checkString('pidFile', o.pidFile),
    backlog: checkInteger('backlog', o.backlog, 1, 2 ** 31 - 1),
    shared: o.shared,
    unixSocketMode: o.unixSocketMode === undefined ? undefined : checkInteger('unixSocketMode', o.unixSocketMode, 0, 0o777, 'a file mode such as 0o660'),
    controlDir: o.controlDir === undefined ? os.tmpdir() : checkString('controlDir', o.controlDir),
    identity: resolveIdentity(checkAccount('user', o.user), checkAccount('group', o.group)),
    dynamicAddresses: o.dynamicAddresses === true,
    adminIdleTimeout: o.adminIdleTimeout === undefined ? 30_000 : checkDuration('adminIdleTimeout', o.adminIdleTimeout, 1),
  };
  if (resolved.closeSpread > resolved.stopTimeout) {
    throw new RangeError(`closeSpread (${resolved.closeSpread} ms) must be at most stopTimeout (${resolved.stopTimeout} ms): ` +
      'connections still open at stopTimeout are cut, not closed gently');
  }
  if (resolved.ticketKeyRotation < 1_000) {
    throw new RangeError(`ticketKeyRotation must be at least 1000 ms (every rotation is a frame to every worker), got ${resolved.ticketKeyRotation}`);
  }
  const overlap = resolved.reloadSignals.filter((s) => resolved.stopSignals.includes(s));
  if (overlap.length > 0) throw new TypeError(`${overlap.join(', ')} cannot both reload and stop; list each signal in reloadSignals or stopSignals, not both`);
  if (resolved.mode === 'single' && resolved.workers !== 1) throw new TypeError('mode: \'single\' serves in one process; leave workers at 1');
  if (resolved.mode === 'single') {
    const masterOnly = [
      ...(['maxMemory', 'maxRequests', 'maxLifetime'] as const).filter((k) => resolved[k] !== undefined),
      ...(resolved.keepPrevious > 0 ? ['keepPrevious'] : []),
    ];
    if (masterOnly.length > 0) {
      throw new TypeError(`${masterOnly.join(', ')}: recycling and keeping workers are for a master's workers; mode: 'single' has none (use the default mode)`);
    }
  }
  return resolved;
}
