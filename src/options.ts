// Server options as one table (OPTIONS: name, check, default, doc, CLI flag),
// from which validation, defaults, `handover start`'s flags and the README's
// options table follow: a new option is one row.
import * as os from 'node:os';
import { type Identity, resolveIdentity } from './platform/identity';
import { parseAddress } from './platform/address';
import { checkSingleMode } from './master/privilege';
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
  /** Signals that upgrade the master in place (exec a fresh image, same pid). Default ['SIGUSR2']. */
  upgradeSignals?: NodeJS.Signals[];
  /**
   * Store every listening socket in systemd's file descriptor store (needs
   * `FileDescriptorStoreMax=` in the unit) and adopt them again after a
   * restart or a crash, so connections that arrive while no master runs wait
   * in the queue instead of being refused. On by itself when systemd sets
   * `$FDSTORE`. Default false.
   */
  fdStore?: boolean;
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
   * 'canary': the new generation first replaces `canarySlots` slots and
   * serves beside the old generation for `canaryWindow` ms; if its error rate
   * and p99 stay within `canaryMaxErrorRate` and `canaryMaxLatencyRatio` of the
   * old generation's and none of its workers crashed, the rollout continues
   * phased; otherwise the old workers of those slots (parked meanwhile) serve
   * again and the reload fails with the verdict in numbers.
   */
  rollout?: 'parallel' | 'phased' | 'canary';
  /** rollout 'canary': how many slots the canary replaces first. Default 1. */
  canarySlots?: number;
  /** rollout 'canary': ms the canary serves before it is judged (the reload waits for the verdict). Default 30_000. */
  canaryWindow?: number;
  /**
   * rollout 'canary': how far the canary's 5xx rate may exceed the old
   * generation's over the window, as a fraction (0.01: one percentage point).
   * Default 0.01.
   */
  canaryMaxErrorRate?: number;
  /** rollout 'canary': how many times the old generation's p99 (at least 50 ms) the canary's p99 may be. Default 2. */
  canaryMaxLatencyRatio?: number;
  /**
   * The version of the code, shown by status, the log and metrics. Default:
   * $APP_VERSION, else the program's package.json version plus a digest of
   * its entry file (`1.4.0+3f9a0c1b2d4e`). A worker whose version differs from
   * its generation's (a respawn after a rollback, with newer code on disk)
   * does not serve; see the README's "Versions".
   */
  version?: string;
  /**
   * Serve Prometheus metrics at `/metrics`, and `/healthz` and `/readyz`, on
   * this address from the master (`'127.0.0.1:9464'`). Default: off.
   */
  metrics?: string;
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
   * When a worker drains (reload, recycle, scale-down, rollback), its idle
   * HTTP/1.1 keep-alive connections move to the worker that replaces it
   * instead of being closed, and one with a request in flight moves right
   * after its response: clients keep their connection. false: they drain as
   * before (`Connection: close`, keep-alive timeout). WebSockets and raw TCP
   * move only through `migrate()`, either way. Default true.
   */
  migrate?: boolean;
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
   * `handover start --user`: addresses the master may bind for the program
   * although its user could not bind them itself (a port below 1024, a path
   * in a directory it cannot write), e.g. [':443']. Default: none.
   */
  allowListen?: string[];
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
  upgradeSignals: NodeJS.Signals[];
  fdStore: boolean;
  workers: number;
  heartbeatTimeout: number;
  stopDelay: number;
  rollout: 'parallel' | 'phased' | 'canary';
  canarySlots: number;
  canaryWindow: number;
  canaryMaxErrorRate: number;
  canaryMaxLatencyRatio: number;
  version?: string;
  metrics?: string;
  maxMemory?: number;
  maxRequests?: number;
  maxLifetime?: number;
  maxDraining: number;
  keepPrevious: number;
  migrate: boolean;
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
  allowListen: string[];
  dynamicAddresses: boolean;
  adminIdleTimeout: number;
}

const UNCATCHABLE = new Set(['SIGKILL', 'SIGSTOP']);

/** The largest delay Node's timers take; anything longer fires after 1 ms (TimeoutOverflowWarning). */
export const MAX_DURATION_MS = 2 ** 31 - 1;

/** The most workers (slots) a master runs: each slot costs one socket per TCP address, kept for the master's life. */
export const MAX_WORKERS = 1024;

/** What a value must be; one kind, one checker (checkValue). */
export type Check =
  | { kind: 'duration'; min: 0 | 1 }
  | { kind: 'integer'; min: number; max: number; what?: string }
  | { kind: 'number'; min: number; max: number; what: string }
  | { kind: 'address' }
  | { kind: 'bytes' }
  | { kind: 'mode' }
  | { kind: 'choice'; values: readonly string[] }
  | { kind: 'boolean' }
  | { kind: 'string' }
  | { kind: 'signals' }
  | { kind: 'function'; why: string }
  | { kind: 'logger' }
  | { kind: 'account'; of: 'user' | 'group' }
  | { kind: 'addresses' };

/** The `handover start` flag of an option. */
export interface CliFlag {
  /** `--<flag>`. */
  flag: string;
  alias?: string;
  /** The value's placeholder in --help (none for a boolean flag). */
  arg?: string;
  /** The line in `handover start --help`. */
  help: string;
}

export interface OptionRow {
  check: Check;
  /** The value when the option is left out; a function for one computed at run time. */
  default?: unknown;
  /** The README's "default" cell. */
  shown: string;
  /** The README's "meaning" cell. */
  doc: string;
  cli?: CliFlag;
  /** For handover's own use (the CLI, tests): no README row, never suggested. */
  internal?: true;
}

/**
 * Every option, in the README's order. Keyed by name, so the type checker
 * makes sure each ServerOptions key has exactly one row.
 */
export const OPTIONS: { [K in keyof ServerOptions]-?: OptionRow } = {
  mode: {
    check: { kind: 'choice', values: ['master', 'single'] }, default: 'master', shown: "`'master'`",
    doc: "`'single'`: no master, the process serves itself (see below)",
  },
  stopTimeout: {
    check: { kind: 'duration', min: 1 }, default: 20_000, shown: '`20_000`',
    doc: 'ms a draining worker has to finish in-flight requests; then it is closed',
    cli: { flag: 'stop-timeout', arg: 'T', help: 'time a draining worker has to finish (default 20s; 500ms, 30s, 2m)' },
  },
  stopDelay: {
    check: { kind: 'duration', min: 0 }, default: 0, shown: '`0`',
    doc: 'ms after a stop signal during which new connections are still accepted and answered with `Connection: close`, before the listeners close (Kubernetes removes endpoints a few seconds after SIGTERM)',
    cli: { flag: 'stop-delay', arg: 'T', help: 'after a stop signal, keep accepting this long, answering with\nConnection: close, before the listeners close (Kubernetes; default 0)' },
  },
  heartbeatTimeout: {
    check: { kind: 'duration', min: 1 }, default: 5_000, shown: '`5_000`',
    doc: "ms a ready worker may go without answering the master's heartbeat; then its slot's connections go to a sibling and it is replaced (killed at `stopTimeout`). Counted in heartbeat intervals while the master runs (a monotonic clock), so a pause of the whole process group (Ctrl-Z, `docker pause`, a VM freeze) or a wall-clock step is not silence",
    cli: { flag: 'heartbeat-timeout', arg: 'T', help: 'a worker silent this long is taken out of service and replaced (default 5s)' },
  },
  startTimeout: {
    check: { kind: 'duration', min: 1 }, default: 30_000, shown: '`30_000`',
    doc: 'ms a new worker has to become ready; else it is killed and the reload fails',
    cli: { flag: 'start-timeout', arg: 'T', help: 'time a new worker has to become ready (default 30s)' },
  },
  workers: {
    check: { kind: 'integer', min: 1, max: MAX_WORKERS }, default: 1, shown: '`1`',
    doc: 'worker processes per generation, 1 to 1024 (`MAX_WORKERS`, also the bound of `scale()`); on Linux each has its own SO_REUSEPORT socket',
    cli: { flag: 'workers', alias: 'w', arg: 'N', help: "worker processes per generation (default 1; max: one per CPU; -i N too)" },
  },
  ready: {
    check: { kind: 'function', why: 'it runs in each worker before it serves' }, shown: 'none',
    doc: '`async () => {}` run in each worker before it listens and reports ready (warm-up)',
  },
  reloadSignals: {
    check: { kind: 'signals' }, default: ['SIGHUP', 'SIGUSR1'], shown: "`['SIGHUP', 'SIGUSR1']`",
    doc: 'signals that reload',
  },
  stopSignals: {
    check: { kind: 'signals' }, default: ['SIGTERM', 'SIGINT'], shown: "`['SIGTERM', 'SIGINT']`",
    doc: 'signals that stop gracefully (SIGKILL/SIGSTOP are rejected: uncatchable)',
  },
  upgradeSignals: {
    check: { kind: 'signals' }, default: ['SIGUSR2'], shown: "`['SIGUSR2']`",
    doc: 'signals that upgrade the master in place: a fresh image of the program in the same pid, keeping the sockets (see [Upgrades in place](#upgrades-in-place))',
  },
  logger: {
    check: { kind: 'logger' }, shown: 'stderr',
    doc: '`false` silences; any `{ info, warn, error }` (console, pino) plugs in',
  },
  pidFile: {
    check: { kind: 'string' }, shown: 'none',
    doc: 'the master writes its pid here and removes it at stop',
  },
  backlog: {
    check: { kind: 'integer', min: 1, max: 2 ** 31 - 1 }, default: 1024, shown: '`1024`',
    doc: 'listen backlog of every socket the master binds',
    cli: { flag: 'backlog', arg: 'N', help: 'listen() backlog of every socket the master binds (default 1024)' },
  },
  shared: {
    check: { kind: 'boolean' }, default: false, shown: '`false`',
    doc: 'join an existing SO_REUSEPORT group on purpose instead of failing with EADDRINUSE',
    cli: { flag: 'shared', help: 'join an existing SO_REUSEPORT group on purpose instead of failing with EADDRINUSE' },
  },
  migrate: {
    check: { kind: 'boolean' }, default: true, shown: '`true`',
    doc: 'when a worker drains (reload, recycle, scale-down, rollback), its idle HTTP/1.1 keep-alive connections move to the worker that replaces it, and one with a request in flight right after its response; `false`: they drain as before (see [Moving connections](#moving-connections))',
  },
  fdStore: {
    check: { kind: 'boolean' }, default: false, shown: '`false` (on when `$FDSTORE` is set)',
    doc: 'store every listening socket in systemd\'s file descriptor store and adopt them after a restart or crash (see [Deployments](#deployments))',
    cli: { flag: 'fd-store', help: 'keep the listening sockets in systemd\'s fd store (FileDescriptorStoreMax=): a restart or crash refuses no connection' },
  },
  unixSocketMode: {
    check: { kind: 'mode' }, shown: 'umask',
    doc: 'file mode of Unix sockets the master creates, e.g. `0o660` (set by the umask at bind, never a `chmod` afterwards)',
    cli: { flag: 'unix-socket-mode', arg: 'MODE', help: 'file mode of Unix sockets the master creates, in octal (660)' },
  },
  controlDir: {
    check: { kind: 'string' }, default: () => os.tmpdir(), shown: '`os.tmpdir()`',
    doc: 'where the control directory is made (0700; with `user` 02750, see [Privileges](#privileges)); refused if another user could rename entries in it or above it',
    cli: { flag: 'control-dir', arg: 'DIR', help: 'where the private control directory is made (default: the temp dir)' },
  },
  rollout: {
    check: { kind: 'choice', values: ['parallel', 'phased', 'canary'] }, default: 'parallel', shown: "`'parallel'`",
    doc: "`'phased'`: a reload replaces one worker at a time; `'canary'`: one slot first, judged against the old generation, then phased or rolled back (see [Rollouts](#rollouts))",
    cli: { flag: 'rollout', arg: 'phased|canary', help: 'phased: reload one worker at a time (at most N+1 workers) instead of all at once;\ncanary: one slot first, judged against the old workers, then on or rolled back' },
  },
  canarySlots: {
    check: { kind: 'integer', min: 1, max: MAX_WORKERS }, default: 1, shown: '`1`',
    doc: "with `rollout: 'canary'`: slots the new generation replaces first",
    cli: { flag: 'canary-slots', arg: 'N', help: 'with --rollout canary: slots the canary replaces first (default 1)' },
  },
  canaryWindow: {
    check: { kind: 'duration', min: 1 }, default: 30_000, shown: '`30_000`',
    doc: "with `rollout: 'canary'`: ms the canary serves before its verdict; the reload (and any reload requested meanwhile) waits for it",
    cli: { flag: 'canary-window', arg: 'T', help: 'with --rollout canary: how long the canary serves before its verdict (default 30s)' },
  },
  canaryMaxErrorRate: {
    check: { kind: 'number', min: 0, max: 1, what: 'a fraction (0.01: one percentage point)' }, default: 0.01, shown: '`0.01`',
    doc: "with `rollout: 'canary'`: how far the canary's 5xx rate may exceed the old generation's over the window (0.01: one percentage point)",
  },
  canaryMaxLatencyRatio: {
    check: { kind: 'number', min: 1, max: 1000, what: 'a ratio' }, default: 2, shown: '`2`',
    doc: "with `rollout: 'canary'`: how many times the old generation's p99 (taken as at least 50 ms) the canary's p99 may be",
  },
  version: {
    check: { kind: 'string' }, shown: 'see [Versions](#versions)',
    doc: 'the version of the code, shown by `status`, the log and metrics; default `$APP_VERSION`, else the package.json version plus a digest of the entry file',
  },
  metrics: {
    check: { kind: 'address' }, shown: 'none',
    doc: "an address (`'127.0.0.1:9464'`) where the master serves `/metrics`, `/healthz` and `/readyz` (see [Metrics and probes](#metrics-and-probes))",
    cli: { flag: 'metrics', arg: 'ADDR', help: 'serve Prometheus /metrics, /healthz and /readyz from the master (127.0.0.1:9464)' },
  },
  maxMemory: {
    check: { kind: 'bytes' }, shown: 'none',
    doc: 'bytes of RSS above which a worker is recycled (its replacement is ready before it drains)',
    cli: { flag: 'max-memory', arg: 'SIZE', help: 'recycle a worker above this RSS (512mb, 1gb): its replacement is ready first' },
  },
  maxRequests: {
    check: { kind: 'integer', min: 1, max: Number.MAX_SAFE_INTEGER }, shown: 'none',
    doc: 'requests after which a worker is recycled (plus up to 10% at random per worker)',
    cli: { flag: 'max-requests', arg: 'N', help: 'recycle a worker after N requests (plus up to 10%, so workers do not recycle together)' },
  },
  maxLifetime: {
    check: { kind: 'duration', min: 1 }, shown: 'none',
    doc: 'ms after which a worker is recycled (plus up to 10%)',
    cli: { flag: 'max-lifetime', arg: 'T', help: 'recycle a worker after this long (plus up to 10%)' },
  },
  keepPrevious: {
    check: { kind: 'duration', min: 0 }, default: 0, shown: '`0`',
    doc: 'ms the generation a reload replaced stays alive, not accepting, for an instant `rollback()`',
    cli: { flag: 'keep-previous', arg: 'T', help: 'keep the replaced generation parked this long: handover rollback is instant' },
  },
  maxDraining: {
    check: { kind: 'integer', min: 1, max: 1024 }, default: 10, shown: '`10`',
    doc: 'old generations that may drain at once; past it the oldest is closed at once, cutting what it still has open, and that is logged: a bound for reloads far faster than requests finish',
    cli: { flag: 'max-draining', arg: 'N', help: 'old generations draining at once; past it the oldest is closed (default 10)' },
  },
  allowListen: {
    check: { kind: 'addresses' }, default: [], shown: '`[]`',
    doc: "`handover start --user` only: addresses the master binds for the program although its user could not bind them itself, e.g. `[':443']`",
    cli: { flag: 'allow-listen', arg: 'A,B', help: 'with --user: addresses the program may listen on although USER could not\nbind them itself (a port < 1024, a path in a directory USER cannot write)' },
  },
  closeSpread: {
    check: { kind: 'duration', min: 0 }, shown: '`min(stopTimeout / 2, 10_000)`',
    doc: "ms over which a drain (a reload's, a stop's) spreads the closes of connections that cannot move to the new generation (TLS, HTTP/2): each idle HTTPS connection gets its FIN, each HTTP/2 session its GOAWAY, each TLS raw or upgraded socket its `handover:drain`, at its own moment in the window, so clients do not all reconnect (and handshake) in the same second. `0`: all at once. At most `stopTimeout`",
    cli: { flag: 'close-spread', arg: 'T', help: 'spread the closes of TLS and HTTP/2 connections in a drain over this long (default: half of --stop-timeout, at most 10s)' },
  },
  ticketKeyRotation: {
    check: { kind: 'duration', min: 1 }, default: 3_600_000, shown: '`3_600_000`',
    doc: "ms between rotations of the TLS session-ticket keys the master makes and every TLS server of every worker uses, so a session resumes on any worker and after any reload; a ticket resumes for at least one interval, so keep a TLS server's `sessionTimeout` (seconds, Node's default 300) at most this (a worker warns otherwise). At least 1 s",
    cli: { flag: 'ticket-key-rotation', arg: 'T', help: 'rotate the TLS session-ticket keys all workers share this often (default 1h)' },
  },
  user: {
    check: { kind: 'account', of: 'user' }, shown: "the master's",
    doc: "workers run as this user (name or uid) while a root master binds privileged ports (see [Privileges](#privileges)); not with `mode: 'single'`",
  },
  group: {
    check: { kind: 'account', of: 'group' }, shown: "`user`'s group",
    doc: "with `user`: the workers' group (name or gid)",
  },
  dynamicAddresses: { check: { kind: 'boolean' }, default: false, shown: '', doc: '', internal: true },
  adminIdleTimeout: { check: { kind: 'duration', min: 1 }, default: 30_000, shown: '', doc: '', internal: true },
};

const NAMES = Object.keys(OPTIONS) as (keyof ServerOptions)[];

/** Suggested for a typo; the internal ones never are. */
const PUBLIC_NAMES = NAMES.filter((name) => !OPTIONS[name].internal);

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
    if (key in OPTIONS) continue;
    const names = PUBLIC_NAMES;
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

/** Checks one option's value by its row; TypeError for a wrong type, RangeError out of range. */
export function checkValue(name: string, check: Check, value: unknown): unknown {
  switch (check.kind) {
    case 'duration': return checkDuration(name, value, check.min);
    case 'integer': return checkInteger(name, value, check.min, check.max, check.what);
    case 'bytes': return checkInteger(name, value, 1 << 20, Number.MAX_SAFE_INTEGER, 'a number of bytes');
    case 'mode': return checkInteger(name, value, 0, 0o777, 'a file mode such as 0o660');
    case 'string': return checkString(name, value);
    case 'number':
      if (typeof value !== 'number' || !Number.isFinite(value)) throw new TypeError(`${name} must be ${check.what}, got ${show(value)}`);
      if (value < check.min || value > check.max) throw new RangeError(`${name} must be ${check.what} from ${check.min} to ${check.max}, got ${value}`);
      return value;
    case 'address': {
      const address = checkString(name, value);
      try {
        parseAddress(address);
      } catch (error) {
        throw new TypeError(`${name}: ${(error as Error).message}`);
      }
      return address;
    }
    case 'signals': return checkSignals(name, value);
    case 'logger': return checkLogger(value);
    case 'addresses':
      if (!Array.isArray(value)) throw new TypeError(`${name} must be an array of addresses such as [':443'], got ${show(value)}`);
      for (const address of value) parseAddress(checkString(name, address));
      return value;
    case 'account':
      return typeof value === 'number' ? checkInteger(name, value, 0, 2 ** 32 - 2, `a ${check.of} name or a numeric id`) : checkString(name, value);
    case 'choice':
      if (!check.values.includes(value as string)) {
        throw new TypeError(`${name} must be ${check.values.map((v) => `'${v}'`).join(' or ')}, got ${show(value)}`);
      }
      return value;
    case 'boolean':
      if (typeof value !== 'boolean') throw new TypeError(`${name} must be true or false, got ${show(value)}`);
      return value;
    case 'function':
      if (typeof value !== 'function') throw new TypeError(`${name} must be a function (${check.why}), got ${show(value)}`);
      return value;
  }
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
  const values: Record<string, unknown> = {};
  for (const name of NAMES) {
    const row = OPTIONS[name];
    const given = (options as Record<string, unknown>)[name];
    if (given !== undefined) values[name] = checkValue(name, row.check, given);
    else values[name] = typeof row.default === 'function' ? (row.default as () => unknown)() : row.default;
  }
  const { user, group, ...rest } = values;
  const resolved = { ...rest, identity: resolveIdentity(user as string | number | undefined, group as string | number | undefined) } as unknown as ResolvedOptions;
  // closeSpread's default follows stopTimeout
  resolved.closeSpread ??= Math.min(Math.floor(resolved.stopTimeout / 2), 10_000);
  if (resolved.closeSpread > resolved.stopTimeout) {
    throw new RangeError(`closeSpread (${resolved.closeSpread} ms) must be at most stopTimeout (${resolved.stopTimeout} ms): ` +
      'connections still open at stopTimeout are cut, not closed gently');
  }
  if (resolved.ticketKeyRotation < 1_000) {
    throw new RangeError(`ticketKeyRotation must be at least 1000 ms (every rotation is a frame to every worker), got ${resolved.ticketKeyRotation}`);
  }
  const overlap = resolved.reloadSignals.filter((s) => resolved.stopSignals.includes(s));
  if (overlap.length > 0) throw new TypeError(`${overlap.join(', ')} cannot both reload and stop; list each signal in reloadSignals or stopSignals, not both`);
  const upgradeOverlap = resolved.upgradeSignals.filter((s) => resolved.reloadSignals.includes(s) || resolved.stopSignals.includes(s));
  if (upgradeOverlap.length > 0) {
    throw new TypeError(`${upgradeOverlap.join(', ')} is in upgradeSignals and in reloadSignals or stopSignals; list each signal in one of them`);
  }
  checkSingleMode(resolved.mode, resolved.identity);
  if (resolved.mode === 'single' && resolved.workers !== 1) throw new TypeError('mode: \'single\' serves in one process; leave workers at 1');
  if (resolved.mode === 'single') {
    const masterOnly = [
      ...(['maxMemory', 'maxRequests', 'maxLifetime'] as const).filter((k) => resolved[k] !== undefined),
      ...(resolved.keepPrevious > 0 ? ['keepPrevious'] : []),
      ...(resolved.rollout === 'canary' ? ["rollout: 'canary'"] : []),
    ];
    if (masterOnly.length > 0) {
      throw new TypeError(`${masterOnly.join(', ')}: recycling, keeping workers and canaries are for a master's workers; mode: 'single' has none (use the default mode)`);
    }
  }
  return resolved;
}

/** The README's options table, row by row from OPTIONS (a test keeps the README equal to it). */
export function optionsTable(): string {
  const rows = PUBLIC_NAMES.map((name) => {
    const { cli, shown, doc } = OPTIONS[name];
    return `| \`${name}\` | ${cli ? `\`--${cli.flag}\`` : ''} | ${shown} | ${doc} |`;
  });
  return ['| option | `handover start` | default | meaning |', '|---|---|---|---|', ...rows].join('\n');
}
