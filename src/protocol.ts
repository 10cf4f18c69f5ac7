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
// that has no ready worker (invariant 11). So no fd ever travels after hello.
import { timingSafeEqual } from 'node:crypto';
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
  /** worker -> master, first frame: who I am and which addresses my code registered. */
  | { type: 'hello'; token: string; pid: number; slot: number; generation: number; addresses: string[] }
  /**
   * master -> worker: per address in the order asked, `fds` fds (slot 0, 1, ...) attached to this frame;
   * and the TLS session-ticket keys every TLS server uses (src/ticket-keys.ts).
   */
  | { type: 'listeners'; listeners: ListenerInfo[]; ticketKeys?: WireTicketKeys }
  /** master -> worker: the ticket keys rotated; from now on use these. */
  | { type: 'ticket-keys'; keys: WireTicketKeys }
  /** master -> worker: the hello was understood but cannot be served (e.g. a bind failed). */
  | { type: 'refused'; message: string }
  /** worker -> master: listening on every fd and the application's ready hook resolved. */
  | { type: 'ready' }
  /** worker -> master: start-up failed; the message is shown in the master's report. */
  | { type: 'failed'; message: string }
  /** master -> worker: stop accepting, finish what is in flight, exit. */
  | { type: 'drain' }
  /** master -> worker: a stop is coming (stopDelay): keep accepting, but each response says Connection: close. */
  | { type: 'closing' }
  /** master -> worker: stop accepting and finish in-flight work, but stay (keepPrevious) / accept again (rollback). */
  | { type: 'park' }
  | { type: 'resume' }
  /** admin -> master: put the kept previous generation back; answered with reload-result of the same id. */
  | { type: 'rollback'; id: number }
  /** master -> worker: answer with `pong` (heartbeat; a worker that cannot is taken out of service). */
  | { type: 'ping' }
  /** worker -> master: alive; with what recycling (maxRequests, maxMemory) looks at. */
  | { type: 'pong'; requests?: number; rss?: number; loopDelayMs?: number }
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
  | { type: 'log-lines'; lines: LogLine[]; end?: boolean };

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
  }[];
  /** The control socket admin tools connect to (the `handover` command registers it). */
  controlSocket?: string;
  /** The last reload's outcome; absent before the first. `error`: why it failed, with the new worker's own error output. */
  lastReload?: { generation: number; startedAt: number; durationMs: number; ok: boolean; error?: string };
  /**
   * Each slot's truth: 'ready' (its own worker serves), 'starting',
   * 'backing-off' (waiting to respawn after a crash), 'unresponsive', or
   * 'stopped'; `coveredBy` is the sibling pid accepting its connections meanwhile.
   */
  slots?: { slot: number; state: string; pid?: number; coveredBy?: number; restarts: number; recycles: number }[];
  /** Entries cut from `workers` and `slots` so that the reply fits one frame (MAX_FRAME_BYTES). */
  omitted?: { workers: number; slots: number };
}

export { ProtocolError };

export function encode(message: Message): Buffer {
  const body = Buffer.from(JSON.stringify(message), 'utf8');
  if (body.length > MAX_FRAME_BYTES) throw new ProtocolError(`frame of ${body.length} bytes exceeds ${MAX_FRAME_BYTES}`);
  const frame = Buffer.allocUnsafe(4 + body.length);
  frame.writeUInt32BE(body.length, 0);
  body.copy(frame, 4);
  return frame;
}

const isInt = (v: unknown): v is number => Number.isSafeInteger(v);
const isString = (v: unknown): v is string => typeof v === 'string';

/** Checks a decoded value field by field; anything unexpected is a ProtocolError. */
export function validate(value: unknown): Message {
  if (typeof value !== 'object' || value === null || Array.isArray(value)) throw new ProtocolError('frame is not an object');
  const m = value as Record<string, unknown>;
  const ok = (() => {
    switch (m.type) {
      case 'hello':
        return isString(m.token) && isInt(m.pid) && isInt(m.slot) && isInt(m.generation) &&
          Array.isArray(m.addresses) && m.addresses.every(isString);
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
      case 'pong':
        return (m.requests === undefined || isInt(m.requests)) && (m.rss === undefined || isInt(m.rss)) &&
          (m.loopDelayMs === undefined || (typeof m.loopDelayMs === 'number' && m.loopDelayMs >= 0));
      case 'ping':
      case 'closing':
      case 'park':
      case 'resume':
      case 'drain':
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
      case 'reload-result':
      case 'scale-result':
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
export class FrameDecoder {
  private buffer: Buffer = Buffer.alloc(0);

  push(chunk: Buffer): Message[] {
    this.buffer = this.buffer.length === 0 ? chunk : Buffer.concat([this.buffer, chunk]);
    const messages: Message[] = [];
    while (this.buffer.length >= 4) {
      const length = this.buffer.readUInt32BE(0);
      if (length > MAX_FRAME_BYTES) throw new ProtocolError(`frame of ${length} bytes exceeds ${MAX_FRAME_BYTES}`);
      if (this.buffer.length < 4 + length) break;
      const body = this.buffer.subarray(4, 4 + length);
      this.buffer = this.buffer.subarray(4 + length);
      let value: unknown;
      try {
        value = JSON.parse(body.toString('utf8'));
      } catch {
        throw new ProtocolError('frame is not valid JSON');
      }
      messages.push(validate(value));
    }
    return messages;
  }

  /** Bytes received but not yet part of a whole frame. */
  get pending(): number {
    return this.buffer.length;
  }
}

/** Constant-time comparison of two tokens (hex strings). */
export function tokensEqual(a: string, b: string): boolean {
  const x = Buffer.from(a, 'utf8');
  const y = Buffer.from(b, 'utf8');
  return x.length === y.length && timingSafeEqual(x, y);
}

/** Environment variables that make a process a worker; set by the master at spawn. */
export const ENV = {
  socket: 'HANDOVER_CONTROL_SOCKET',
  token: 'HANDOVER_TOKEN',
  slot: 'HANDOVER_SLOT',
  generation: 'HANDOVER_GENERATION',
  masterPid: 'HANDOVER_MASTER_PID',
} as const;
