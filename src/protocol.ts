// The control protocol between the master and its workers (and admin tools),
// over a Unix stream socket. Each frame is a 4-byte big-endian length followed
// by that many bytes of UTF-8 JSON. Only `listeners` carries fds (SCM_RIGHTS,
// sent with the frame's first byte), and it is the master's first and only
// frame before the worker speaks again, so the worker reads it with recvmsg
// before any other reader touches the socket.
//
// A worker receives, for each address, the socket of every slot (one per slot
// on Linux, a single shared one elsewhere). It accepts from its own slot's
// socket; the others stay dormant until the master asks it to `cover` a slot
// that has no ready worker (invariant 11). So no fd travels on this socket
// after hello; connections that move between workers (invariant 15) go over
// a channel of their own between the two workers (worker/handoff.ts).
import { ProtocolError } from './errors';
import { type WireTicketKeys, isWireTicketKeys } from './ticket-keys';

/** Frames larger than this are a protocol error; the connection is dropped. */
export const MAX_FRAME_BYTES = 64 * 1024;

/** SCM_MAX_FD: the most fds one SCM_RIGHTS message can carry on Linux. */
export const MAX_FDS_PER_MESSAGE = 253;

/** What a listening fd is, so the worker knows how to serve it. */
export interface ListenerInfo {
  /** The address as registered, e.g. '127.0.0.1:0'. */
  address: string;
  /** The address as bound, e.g. '127.0.0.1:41234'. */
  bound: string;
  backlog: number;
  /** How many fds follow for this address: one per slot, or 1 when every slot shares one socket. */
  fds: number;
  /** The sender created this Unix socket file (so whoever closes it last unlinks it); false for systemd's. */
  owned?: boolean;
}

export type Message =
  /** worker -> master, first frame: who I am, which addresses my code registered, and my code's version (version.ts). */
  | { type: 'hello'; token: string; pid: number; slot: number; generation: number; addresses: string[]; version?: string }
  /**
   * master -> worker: per address in the order asked, `fds` fds (slot 0, 1, ...) attached to this frame;
   * and the TLS session-ticket keys every TLS server uses (src/ticket-keys.ts).
   */
  | { type: 'listeners'; listeners: ListenerInfo[]; ticketKeys?: WireTicketKeys }
  /** master -> worker: the ticket keys rotated; from now on use these. */
  | { type: 'ticket-keys'; keys: WireTicketKeys }
  /** master -> worker: the hello was understood but cannot be served (e.g. a bind failed). */
  | { type: 'refused'; message: string }
  /**
   * worker -> master: listening on every fd and the application's ready hook
   * resolved; `handoff`: where it takes over connections from the worker it
   * replaces (worker/handoff.ts).
   */
  | { type: 'ready'; handoff?: HandoffEndpoint }
  /** worker -> master: start-up failed; the message is shown in the master's report. */
  | { type: 'failed'; message: string }
  /**
   * master -> worker: stop accepting, finish what is in flight, exit.
   * `handoff`: the ready worker that replaces it, to move connections to
   * instead of closing them (invariant 15).
   */
  | { type: 'drain'; handoff?: HandoffEndpoint }
  /** worker -> master, draining: what became of its connections so far (see ConnectionTally). */
  | { type: 'moves'; tally: ConnectionTally }
  /**
   * master -> worker: the master is about to exec a fresh image of itself in
   * the same pid (an upgrade): when this connection closes, keep serving
   * until the new image sends a stop signal (its generation is ready).
   */
  | { type: 'upgrading' }
  /** master -> worker: a stop is coming (stopDelay): keep accepting, but each response says Connection: close. */
  | { type: 'closing' }
  /** master -> worker: stop accepting and finish in-flight work, but stay (keepPrevious) / accept again (rollback). */
  | { type: 'park' }
  | { type: 'resume' }
  /**
   * worker -> master, the answer to each `drain` and `park`: it accepts from
   * none of its listening sockets any more (its own slot's and every slot it
   * covered), so every new connection goes to another worker. A reload or
   * rollback resolves only once the workers it replaced have said so.
   */
  | { type: 'stopped-accepting' }
  /** admin -> master: put the kept previous generation back; answered with reload-result of the same id. */
  | { type: 'rollback'; id: number }
  /** master -> worker: answer with `pong` (heartbeat; a worker that cannot is taken out of service). */
  | { type: 'ping' }
  /**
   * worker -> master: alive; with what recycling (maxRequests, maxMemory),
   * metrics and the canary look at (WorkerSample: counters since it started).
   */
  | ({ type: 'pong' } & WorkerSample)
  /** master -> worker: send your program's prom-client metrics; answered with app-metrics (also sent unasked once drained). */
  | { type: 'metrics' }
  /** `metrics`: prom-client's getMetricsAsJSON(); `error`: why there are none this time (e.g. too large for a frame). */
  | { type: 'app-metrics'; metrics: unknown[]; error?: string }
  /** master -> worker: also accept from `slot`'s sockets (no ready worker there) / stop again. */
  | { type: 'cover'; slot: number }
  | { type: 'uncover'; slot: number }
  /**
   * worker or admin -> master: please reload; answered with reload-result of
   * the same id. In single mode the predecessor sends it to its successor to
   * pass on a reload that was requested during the handover.
   */
  | { type: 'reload'; id: number }
  | { type: 'reload-result'; id: number; ok: boolean; message?: string }
  /** admin -> master: run `workers` workers from now on; answered with scale-result of the same id. */
  | { type: 'scale'; id: number; workers: number }
  | { type: 'scale-result'; id: number; ok: boolean; message?: string }
  /** admin -> master: describe yourself; answered with status-result. */
  | { type: 'status' }
  /** master -> worker: how many connections are open? answered with connections. */
  | { type: 'count' }
  | { type: 'connections'; count: number }
  | { type: 'status-result'; status: MasterStatus }
  /** admin -> master: stop gracefully. */
  | { type: 'stop' }
  /**
   * admin -> master: the last `lines` lines of output, then (`follow`) every
   * new one; answered with log-lines frames, the first batch's last with `end`.
   */
  | { type: 'logs'; lines: number; follow: boolean }
  | { type: 'log-lines'; lines: LogLine[]; end?: boolean }
  /**
   * admin -> master: exec a fresh image of the master in the same pid (under
   * `node` if given). Answered with upgrade-result: not ok means nothing
   * changed (the new image failed its probe); ok means the exec comes next,
   * this connection closes with it, and the new image's status shows
   * `upgrades` one higher once its generation serves.
   */
  | { type: 'upgrade'; id: number; node?: string }
  | { type: 'upgrade-result'; id: number; ok: boolean; message?: string };

/** One line the master wrote or relayed; `generation` only for a worker's. */
export interface LogLine {
  /** ms since the epoch. */
  time: number;
  stream: 'stdout' | 'stderr';
  /** The process that wrote it: the master or a worker. */
  pid: number;
  generation?: number;
  text: string;
}

export type Hello = Extract<Message, { type: 'hello' }>;

/** A worker's hand-off channel: a Unix socket path ('@name': abstract, Linux) and the token a sender presents. */
export interface HandoffEndpoint {
  path: string;
  token: string;
}

/**
 * What a drain did with connections: moved to the new generation, or
 * closed, and for each one that did not move, why ('tls', 'http2',
 * 'busy', 'no answer'...): counted by reason.
 */
export interface ConnectionTally {
  moved: number;
  closed: number;
  notMoved: Record<string, number>;
  /** Still open when this was counted (they close, or move, later). */
  open?: number;
}

/**
 * What a worker reports with each heartbeat answer. Counters run from its
 * start: the master keeps the last one per worker and adds up the increases.
 */
export interface WorkerSample {
  /** Requests served (connections, on a plain net server). */
  requests?: number;
  /** Resident memory, bytes. */
  rss?: number;
  /** CPU time (user + system), microseconds. */
  cpu?: number;
  /** Mean event-loop delay (ms) since the previous heartbeat (worker/loop-delay.ts). */
  loopDelayMs?: number;
  /** HTTP responses with a 5xx status. */
  errors?: number;
  /** Responses by duration: cumulative counts per bucket of LATENCY_BUCKETS_S, then the sum of durations in microseconds. */
  latency?: number[];
}

/** Upper bounds (seconds) of the response-duration buckets of WorkerSample.latency (the last one is +Inf). */
export const LATENCY_BUCKETS_S = [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10];

export interface MasterStatus {
  pid: number;
  generation: number;
  uptimeMs: number;
  reloading: boolean;
  addresses: string[];
  /** `connections`: open connections the worker reported (absent if it did not answer in time). */
  workers: {
    pid: number;
    slot: number;
    generation: number;
    state: string;
    connections?: number;
    /** Requests served so far, and the mean event-loop delay (ms) at the last heartbeat, as the worker reported them. */
    requests?: number;
    loopDelayMs?: number;
    /** When it was spawned (ms since the epoch). */
    startedAt?: number;
    /** The version of the code it runs, recorded when it started (src/master/version.ts). */
    version?: string;
  }[];
  /** The control socket admin tools connect to (the `handover` command registers it). */
  controlSocket?: string;
  /** The last reload's outcome; absent before the first. `error`: why it failed, with the new worker's own error output. */
  lastReload?: {
    generation: number;
    startedAt: number;
    durationMs: number;
    ok: boolean;
    error?: string;
    /** What became of the drained workers' connections so far (moved, closed, why not moved). */
    connections?: ConnectionTally;
  };
  /**
   * Each slot's truth: 'ready' (its own worker serves), 'starting',
   * 'backing-off' (waiting to respawn after a crash), 'unresponsive', or
   * 'stopped'; `coveredBy` is the sibling pid accepting its connections meanwhile;
   * `held`: why the slot's own worker is refused (its code is not its generation's).
   */
  slots?: { slot: number; state: string; pid?: number; coveredBy?: number; restarts: number; recycles: number; held?: string }[];
  /** In-place upgrades (exec of a fresh image, same pid) since this pid started. */
  upgrades?: number;
  /** The master's own full collections after worker exits (src/master/memory.ts), and the CPU they took in all (ms). */
  memory?: { collections: number; collectCpuMs: number };
  /** The version each generation runs: the committed one and any other still alive. */
  versions?: Record<number, string>;
  /** Entries cut from `workers` and `slots` so that the reply fits one frame (MAX_FRAME_BYTES). */
  omitted?: { workers: number; slots: number };
}

export { ProtocolError };

export function encode(message: Message): Buffer {
  return encodeFrame(message, MAX_FRAME_BYTES);
}

/** One frame of any JSON value, for this protocol and the hand-off channel's (worker/handoff.ts). */
export function encodeFrame(value: unknown, maxBytes: number): Buffer {
  const body = Buffer.from(JSON.stringify(value), 'utf8');
  if (body.length > maxBytes) throw new ProtocolError(`frame of ${body.length} bytes exceeds ${maxBytes}`);
  const frame = Buffer.allocUnsafe(4 + body.length);
  frame.writeUInt32BE(body.length, 0);
  body.copy(frame, 4);
  return frame;
}

const isInt = (v: unknown): v is number => Number.isSafeInteger(v);
const isString = (v: unknown): v is string => typeof v === 'string';
const isCount = (v: unknown): v is number => isInt(v) && v >= 0;

function isEndpoint(v: unknown): v is HandoffEndpoint {
  const e = v as Record<string, unknown>;
  return typeof v === 'object' && v !== null && isString(e.path) && e.path.length <= 256 && isString(e.token) && e.token.length <= 128;
}

function isTally(v: unknown): v is ConnectionTally {
  const t = v as Record<string, unknown>;
  if (typeof v !== 'object' || v === null || !isInt(t.moved) || !isInt(t.closed) || !(t.open === undefined || isInt(t.open))) return false;
  const reasons = t.notMoved as Record<string, unknown>;
  return typeof reasons === 'object' && reasons !== null && Object.keys(reasons).length <= 32 &&
    Object.entries(reasons).every(([k, n]) => k.length <= 64 && isInt(n));
}

/** Checks a decoded value field by field; anything unexpected is a ProtocolError. */
export function validate(value: unknown): Message {
  if (typeof value !== 'object' || value === null || Array.isArray(value)) throw new ProtocolError('frame is not an object');
  const m = value as Record<string, unknown>;
  const ok = (() => {
    switch (m.type) {
      case 'hello':
        return isString(m.token) && isInt(m.pid) && isInt(m.slot) && isInt(m.generation) &&
          Array.isArray(m.addresses) && m.addresses.every(isString) && (m.version === undefined || isString(m.version));
      case 'listeners':
        return Array.isArray(m.listeners) && m.listeners.every((l: unknown) => {
          const x = l as Record<string, unknown>;
          return typeof l === 'object' && l !== null && isString(x.address) && isString(x.bound) && isInt(x.backlog) &&
            isInt(x.fds) && x.fds >= 1 && (x.owned === undefined || typeof x.owned === 'boolean');
        }) && (m.ticketKeys === undefined || isWireTicketKeys(m.ticketKeys));
      case 'ticket-keys':
        return isWireTicketKeys(m.keys);
      case 'refused':
      case 'failed':
        return isString(m.message);
      case 'cover':
      case 'uncover':
        return isInt(m.slot) && m.slot >= 0;
      case 'ready':
        return m.handoff === undefined || isEndpoint(m.handoff);
      case 'drain':
        return m.handoff === undefined || isEndpoint(m.handoff);
      case 'moves':
        return isTally(m.tally);
      case 'pong':
        return (['requests', 'rss', 'cpu', 'errors'] as const).every((k) => m[k] === undefined || isCount(m[k])) &&
          (m.loopDelayMs === undefined || (typeof m.loopDelayMs === 'number' && m.loopDelayMs >= 0)) &&
          (m.latency === undefined || (Array.isArray(m.latency) && m.latency.length === LATENCY_BUCKETS_S.length + 2 && m.latency.every(isCount)));
      case 'app-metrics':
        return Array.isArray(m.metrics) && (m.error === undefined || isString(m.error));
      case 'metrics':
      case 'ping':
      case 'closing':
      case 'upgrading':
      case 'park':
      case 'resume':
      case 'stopped-accepting':
      case 'count':
      case 'status':
      case 'stop':
        return true;
      case 'reload':
        return isInt(m.id);
      case 'connections':
        return isInt(m.count);
      case 'scale':
        return isInt(m.id) && isInt(m.workers);
      case 'rollback':
        return isInt(m.id);
      case 'upgrade':
        return isInt(m.id) && (m.node === undefined || isString(m.node));
      case 'reload-result':
      case 'scale-result':
      case 'upgrade-result':
        return isInt(m.id) && typeof m.ok === 'boolean' && (m.message === undefined || isString(m.message));
      case 'status-result':
        return typeof m.status === 'object' && m.status !== null;
      case 'logs':
        return isInt(m.lines) && typeof m.follow === 'boolean';
      case 'log-lines':
        return Array.isArray(m.lines) && (m.end === undefined || typeof m.end === 'boolean');
      default:
        return false;
    }
  })();
  if (!ok) throw new ProtocolError(`malformed or unknown frame (type ${JSON.stringify(m.type)})`);
  return m as unknown as Message;
}

/** Accumulates bytes and yields whole, validated messages. Throws ProtocolError. */
export class FrameDecoder<T = Message> {
  private buffer: Buffer = Buffer.alloc(0);

  constructor(
    private readonly check: (value: unknown) => T = validate as (value: unknown) => T,
    private readonly maxBytes = MAX_FRAME_BYTES,
  ) {}

  push(chunk: Buffer): T[] {
    this.buffer = this.buffer.length === 0 ? chunk : Buffer.concat([this.buffer, chunk]);
    const messages: T[] = [];
    while (this.buffer.length >= 4) {
      const length = this.buffer.readUInt32BE(0);
      if (length > this.maxBytes) throw new ProtocolError(`frame of ${length} bytes exceeds ${this.maxBytes}`);
      if (this.buffer.length < 4 + length) break;
      const body = this.buffer.subarray(4, 4 + length);
      this.buffer = this.buffer.subarray(4 + length);
      let value: unknown;
      try {
        value = JSON.parse(body.toString('utf8'));
      } catch {
        throw new ProtocolError('frame is not valid JSON');
      }
      messages.push(this.check(value));
    }
    return messages;
  }

  /** Bytes received but not yet part of a whole frame. */
  get pending(): number {
    return this.buffer.length;
  }
}

/** Environment variables that make a process a worker; set by the master at spawn (main.ts names two of them again). */
export const ENV = {
  socket: 'HANDOVER_CONTROL_SOCKET',
  token: 'HANDOVER_TOKEN',
  slot: 'HANDOVER_SLOT',
  generation: 'HANDOVER_GENERATION',
  masterPid: 'HANDOVER_MASTER_PID',
} as const;
