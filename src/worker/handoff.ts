// The hand-off channel: how a draining worker gives its established
// connections to the worker that replaces it, so that a connection has exactly
// one owner at every moment (invariant 15).
//
// Node reads its sockets with read(2), which drops SCM_RIGHTS, so this channel
// is a Unix socket that both ends read and write only natively (sendFds,
// recvFds). The new worker listens on it (an abstract address on Linux, a file
// in a private directory elsewhere) and names it, with a one-time token, in its
// `ready` frame; the master passes that on in the `drain` frame of the worker
// it replaces. Fds then go worker to worker: the master holds none of them
// (invariant 18).
//
// One exchange per batch (at most 253 connections, one fd each), one batch at
// a time:
//   old -> new  offer {batch, items} + the fds   the old worker has stopped reading each one
//   new -> old  taken {batch, refused}           the new worker holds each fd, not reading it yet
//   old -> new  commit {batch}                   the old worker has closed its copies (close, never
//                                                a FIN); the new one starts reading
//            or cancel {batch}                   no answer in time: the old worker reads again and
//                                                the new one closes its copies
// The old worker decides; the new one reads only once told to. The old worker
// closes the channel only after its decision is written, so a channel that
// ends before the decision means the old worker died, and its copies with it:
// the new worker adopts. A new worker that is gone, refuses, or does not answer
// in time leaves the connection with the old worker, which drains it as before.
import * as fs from 'node:fs';
import * as net from 'node:net';
import * as os from 'node:os';
import * as path from 'node:path';
import { FrameDecoder, type HandoffEndpoint, MAX_FDS_PER_MESSAGE, ProtocolError, encodeFrame } from '../protocol';
import { randomHex, tokensEqual } from '../platform/crypto';
import * as native from '../platform/native';
import { listenOnFd } from './listen-fd';

/** How long the old worker waits for `taken` before it keeps the batch. */
export const HANDOFF_TIMEOUT_MS = 5_000;

/** The largest frame on the channel; a batch is cut before its JSON grows past half of it. */
const MAX_HANDOFF_FRAME_BYTES = 1024 * 1024;
const BATCH_BYTES = MAX_HANDOFF_FRAME_BYTES / 2;

/** How long one native read waits before it looks again (and notices a close). */
const READ_SLICE_MS = 500;

/** What the new worker needs to know about one connection besides its fd. */
export interface Item {
  /** The address it was accepted on, as bound ('127.0.0.1:41234'): which server takes it. */
  address: string;
  /** 'http': an idle HTTP/1.1 connection, for the server's 'connection'; 'app': migrate(), for 'handover:adopt'. */
  kind: 'http' | 'app';
  /** migrate()'s state, for 'handover:adopt'. */
  state?: unknown;
  /** A WebSocket's negotiated subprotocol, for adoptWebSocket(). */
  protocol?: string;
}

type HandoffMessage =
  | { type: 'hello'; token: string }
  | { type: 'offer'; batch: number; items: Item[] }
  /** One entry per item: null when held, or why it was refused (its fd is closed). */
  | { type: 'taken'; batch: number; refused: (string | null)[] }
  | { type: 'commit'; batch: number }
  | { type: 'cancel'; batch: number };

function isItem(v: unknown): v is Item {
  const i = v as Record<string, unknown>;
  return typeof v === 'object' && v !== null && typeof i.address === 'string' && (i.kind === 'http' || i.kind === 'app') &&
    (i.protocol === undefined || typeof i.protocol === 'string');
}

function validate(value: unknown): HandoffMessage {
  const m = value as Record<string, unknown>;
  const batch = typeof value === 'object' && value !== null && Number.isSafeInteger(m.batch);
  const ok = typeof value === 'object' && value !== null && (
    (m.type === 'hello' && typeof m.token === 'string') ||
    (m.type === 'offer' && batch && Array.isArray(m.items) && m.items.length <= MAX_FDS_PER_MESSAGE && m.items.every(isItem)) ||
    (m.type === 'taken' && batch && Array.isArray(m.refused) && m.refused.every((r) => r === null || typeof r === 'string')) ||
    ((m.type === 'commit' || m.type === 'cancel') && batch));
  if (!ok) throw new ProtocolError(`malformed hand-off frame (type ${JSON.stringify(m?.type)})`);
  return value as HandoffMessage;
}

const encode = (message: HandoffMessage): Buffer => encodeFrame(message, MAX_HANDOFF_FRAME_BYTES);

/** Bytes and fds in the order they arrived; the fds of a frame come with its first byte. */
export interface Chunk {
  data: Buffer;
  fds: number[];
}

/** A connected stream that carries fds: a native Unix socket, or a fake in the unit tests. */
export interface Wire {
  /** Writes all of `data`, with `fds` attached to its first byte. */
  write(data: Buffer, fds: number[]): Promise<void>;
  /** The next bytes (empty at the end of the stream) and the fds that came with them. */
  read(): Promise<Chunk>;
  close(): void;
}

/** A Wire over a non-blocking Unix socket fd that no Node handle owns. */
export class FdWire implements Wire {
  private closing = false;
  private closed = false;
  private reading = false;
  private writes: Promise<void> = Promise.resolve();

  constructor(readonly fd: number) {}

  write(data: Buffer, fds: number[]): Promise<void> {
    const write = async () => {
      const deadline = Date.now() + HANDOFF_TIMEOUT_MS;
      let offset = 0;
      let attached = fds;
      while (offset < data.length) {
        if (this.closed) throw new Error('hand-off channel closed');
        try {
          offset += native.sendFds(this.fd, data.subarray(offset), attached);
          attached = [];
        } catch (error) {
          if (!native.isSystemError(error, 'EAGAIN') || Date.now() > deadline) throw error;
          await new Promise((resolve) => setTimeout(resolve, 1));
        }
      }
    };
    // Frames never interleave: each goes out whole before the next.
    const result = this.writes.then(write);
    this.writes = result.catch(() => {});
    return result;
  }

  async read(): Promise<Chunk> {
    this.reading = true;
    try {
      for (;;) {
        if (this.closing) return { data: Buffer.alloc(0), fds: [] };
        try {
          const { data, fds } = await native.recvFds(this.fd, MAX_HANDOFF_FRAME_BYTES, MAX_FDS_PER_MESSAGE, READ_SLICE_MS);
          return { data, fds };
        } catch (error) {
          if (!native.isSystemError(error, 'ETIMEDOUT')) throw error;
        }
      }
    } finally {
      this.reading = false;
      if (this.closing) this.closeNow();
    }
  }

  /**
   * Closes the fd once the writes queued so far are out and a pending read
   * has settled: a read's poll must never watch a reused fd number.
   */
  close(): void {
    if (this.closing) return;
    this.closing = true;
    if (!this.reading) this.closeNow();
  }

  private closeNow(): void {
    void this.writes.then(() => {
      if (this.closed) return;
      this.closed = true;
      native.closeFd(this.fd);
    });
  }
}

/** Frames off a Wire, each with the fds its first byte carried. */
class Reader {
  private readonly decoder = new FrameDecoder<HandoffMessage>(validate, MAX_HANDOFF_FRAME_BYTES);
  private readonly fds: number[] = [];
  private readonly frames: HandoffMessage[] = [];
  private waiter?: () => void;
  /** Set once the stream has ended or failed; the frames already read are still delivered. */
  ended?: Error;

  constructor(private readonly wire: Wire) {
    void this.pump();
  }

  private async pump(): Promise<void> {
    try {
      for (;;) {
        const chunk = await this.wire.read();
        this.fds.push(...chunk.fds);
        if (chunk.data.length === 0) throw new Error('the other worker closed the hand-off channel');
        this.frames.push(...this.decoder.push(chunk.data));
        this.waiter?.();
      }
    } catch (error) {
      this.ended = error instanceof Error ? error : new Error(String(error));
      this.waiter?.();
    }
  }

  /** The next frame and, for an offer, its fds; undefined once the stream ended. */
  async next(): Promise<{ message: HandoffMessage; fds: number[] } | undefined> {
    while (this.frames.length === 0 && !this.ended) await new Promise<void>((resolve) => (this.waiter = resolve));
    this.waiter = undefined;
    const message = this.frames.shift();
    if (!message) return undefined;
    const count = message.type === 'offer' ? message.items.length : 0;
    if (this.fds.length < count) throw new ProtocolError(`an offer of ${count} connection(s) came with ${this.fds.length} fd(s)`);
    return { message, fds: this.fds.splice(0, count) };
  }

  /** Fds that arrived with no frame to claim them (a stream cut short): closed. */
  closeStray(): void {
    this.fds.splice(0).forEach(closeQuietly);
  }
}

function closeQuietly(fd: number): void {
  try {
    native.closeFd(fd);
  } catch {
    // already closed with its socket
  }
}

// --- the old worker's side -------------------------------------------------

/** One connection the old worker offers, with what to do once the new worker has answered. */
export interface Outgoing {
  item: Item;
  /** The old worker's copy of the connection. */
  fd: number;
  /** Why it cannot move after all (checked right before its fd is sent), or undefined. */
  check(): string | undefined;
  /** The new worker holds it: close this copy now, with close(2) (never a FIN), and never touch it again. */
  moved(): void;
  /** It stays here: read it again and drain it as before. */
  kept(reason: string): void;
}

export interface SenderOptions {
  /** Connects to the new worker's channel. */
  connect?: (socketPath: string) => Promise<Wire>;
  timeoutMs?: number;
}

async function connectWire(socketPath: string): Promise<Wire> {
  const deadline = Date.now() + HANDOFF_TIMEOUT_MS;
  for (;;) {
    try {
      return new FdWire(native.connectUnix(socketPath));
    } catch (error) {
      if (!native.isSystemError(error, 'EAGAIN') || Date.now() > deadline) throw error;
      await new Promise((resolve) => setTimeout(resolve, 5));
    }
  }
}

/** The old worker's end: offers connections in batches, one exchange at a time. */
export class HandoffSender {
  private readonly queue: Outgoing[] = [];
  private running?: Promise<void>;
  private channel?: { wire: Wire; reader: Reader };
  private broken?: string;
  private nextBatch = 1;
  private closed = false;
  private readonly connect: (socketPath: string) => Promise<Wire>;
  private readonly timeoutMs: number;

  constructor(private readonly endpoint: HandoffEndpoint, options: SenderOptions = {}) {
    this.connect = options.connect ?? connectWire;
    this.timeoutMs = options.timeoutMs ?? HANDOFF_TIMEOUT_MS;
  }

  /** Queues a connection; connections offered in the same tick go in one batch. */
  offer(outgoing: Outgoing): void {
    if (this.broken || this.closed) return outgoing.kept(this.broken ?? 'the worker is exiting');
    this.queue.push(outgoing);
    this.running ??= new Promise<void>((resolve) => setImmediate(resolve)).then(() => this.run()).finally(() => {
      this.running = undefined;
    });
  }

  /** Resolves when nothing is queued or being offered. */
  async settled(): Promise<void> {
    while (this.running) await this.running;
  }

  /** Ends the channel once every offer has been decided (and that decision written). */
  async close(): Promise<void> {
    this.closed = true;
    await this.settled();
    this.channel?.wire.close();
    this.channel = undefined;
  }

  private async run(): Promise<void> {
    while (this.queue.length > 0) {
      const batch: Outgoing[] = [];
      let bytes = 0;
      while (this.queue.length > 0 && batch.length < MAX_FDS_PER_MESSAGE) {
        const next = this.queue[0];
        const size = JSON.stringify(next.item).length;
        if (batch.length > 0 && bytes + size > BATCH_BYTES) break;
        this.queue.shift();
        batch.push(next);
        bytes += size;
      }
      if (batch.length > 0) await this.exchange(batch);
    }
  }

  /**
   * No more offers on this channel. `closeWire` false: a cancel could not be
   * written, so the channel stays open (its end would tell the new worker to
   * adopt) until this process exits.
   */
  private fail(reason: string, closeWire = true): void {
    this.broken = reason;
    if (closeWire) this.channel?.wire.close();
    this.channel = undefined;
    for (const outgoing of this.queue.splice(0)) outgoing.kept(reason);
  }

  private async open(): Promise<{ wire: Wire; reader: Reader }> {
    if (this.channel) return this.channel;
    const wire = await this.connect(this.endpoint.path);
    const channel = { wire, reader: new Reader(wire) };
    this.channel = channel;
    await wire.write(encode({ type: 'hello', token: this.endpoint.token }), []);
    return channel;
  }

  private async exchange(batch: Outgoing[]): Promise<void> {
    const number = this.nextBatch++;
    const keepAll = (reason: string) => batch.forEach((o) => o.kept(reason));
    let channel: { wire: Wire; reader: Reader };
    try {
      channel = await this.open();
      // Checked right before its fd goes: one that read a byte meanwhile stays.
      const late = batch.filter((o) => o.check() !== undefined);
      for (const o of late) o.kept(o.check()!);
      batch = batch.filter((o) => !late.includes(o));
      if (batch.length === 0) return;
      await channel.wire.write(encode({ type: 'offer', batch: number, items: batch.map((o) => o.item) }), batch.map((o) => o.fd));
    } catch (error) {
      // By its errno (ECONNREFUSED, EPIPE...): a reason is counted by name, so it stays short.
      const code = (error as NodeJS.ErrnoException).code;
      const reason = `the new worker is gone${code ? ` (${code})` : ''}`;
      keepAll(reason);
      return this.fail(reason);
    }
    const answer = await this.taken(channel.reader, number);
    if (answer === 'timeout') {
      // Decided: it stays here. The cancel tells the new worker to close its copies.
      keepAll(`the new worker did not answer within ${this.timeoutMs} ms`);
      try {
        await channel.wire.write(encode({ type: 'cancel', batch: number }), []);
      } catch {
        return this.fail('the new worker is gone', false);
      }
      return;
    }
    if (answer === undefined) {
      keepAll('the new worker is gone');
      return this.fail('the new worker is gone');
    }
    batch.forEach((o, i) => {
      const refused = answer.refused[i];
      if (refused) o.kept(`the new worker refused it: ${refused}`);
      else o.moved();
    });
    try {
      await channel.wire.write(encode({ type: 'commit', batch: number }), []);
    } catch {
      this.fail('the new worker is gone'); // it adopts on the channel's end: our copies are closed already
    }
  }

  /** The answer to batch `number`, 'timeout', or undefined if the channel ended first. */
  private async taken(reader: Reader, number: number): Promise<Extract<HandoffMessage, { type: 'taken' }> | 'timeout' | undefined> {
    let timedOut = false;
    let timer: NodeJS.Timeout | undefined;
    // Judged after I/O (invariant 19): when the timer fires, a `taken` that is
    // already waiting in the socket (say, after the whole process group was
    // stopped) is read first, in the poll phase before setImmediate runs.
    const timeout = new Promise<'timeout'>((resolve) => {
      timer = setTimeout(() => setImmediate(() => {
        timedOut = true;
        resolve('timeout');
      }), this.timeoutMs);
    });
    try {
      for (;;) {
        const next = await Promise.race([reader.next().catch(() => undefined), timeout]);
        if (next === 'timeout' || next === undefined) return next;
        if (timedOut) return 'timeout';
        if (next.message.type === 'taken' && next.message.batch === number) return next.message;
      }
    } finally {
      clearTimeout(timer);
    }
  }
}

// --- the new worker's side -------------------------------------------------

/** A connection the new worker holds but does not read yet. */
export interface Held {
  /** Start serving it: the old worker has closed its copy. */
  commit(): void;
  /** Close this copy (close(2)): the old worker keeps it. */
  cancel(): void;
}

/** Takes one offered connection: a Held, or why not (then the fd is closed by the caller). */
export type Adopt = (item: Item, fd: number) => Held | string;

function settle(held: Held, decision: 'commit' | 'cancel'): void {
  try {
    if (decision === 'commit') held.commit();
    else held.cancel();
  } catch (error) {
    // The application's handler threw: uncaught, as it would be anywhere else.
    process.nextTick(() => {
      throw error;
    });
  }
}

/** Serves one hand-off channel: checks the token, holds what is offered, adopts on commit. */
export class HandoffReceiver {
  private readonly reader: Reader;
  private readonly undecided = new Map<number, Held[]>();
  /** Resolves when the channel has ended and every batch was decided. */
  readonly done: Promise<void>;

  constructor(private readonly wire: Wire, private readonly token: string, private readonly adopt: Adopt) {
    this.reader = new Reader(wire);
    this.done = this.serve();
  }

  private async serve(): Promise<void> {
    try {
      const hello = await this.reader.next();
      if (hello?.message.type !== 'hello' || !tokensEqual(hello.message.token, this.token)) return;
      for (;;) {
        const next = await this.reader.next();
        if (!next) break;
        const { message, fds } = next;
        if (message.type === 'offer') this.hold(message.batch, message.items, fds);
        else if (message.type === 'commit' || message.type === 'cancel') {
          const held = this.undecided.get(message.batch) ?? [];
          this.undecided.delete(message.batch);
          for (const h of held) settle(h, message.type);
        }
      }
    } catch {
      // a malformed frame ends the channel like its end does
    } finally {
      // The channel ended before a decision: the old worker died, and its
      // copies with it. Ours is the only one left: serve it.
      for (const held of this.undecided.values()) for (const h of held) settle(h, 'commit');
      this.undecided.clear();
      this.reader.closeStray();
      this.wire.close();
    }
  }

  private hold(batch: number, items: Item[], fds: number[]): void {
    const held: Held[] = [];
    const refused = items.map((item, i) => {
      let result: Held | string;
      try {
        result = this.adopt(item, fds[i]);
      } catch (error) {
        result = error instanceof Error ? error.message : String(error);
      }
      if (typeof result === 'string') {
        closeQuietly(fds[i]);
        return result;
      }
      held.push(result);
      return null;
    });
    this.undecided.set(batch, held);
    void this.wire.write(encode({ type: 'taken', batch, refused }), []).catch(() => {});
  }
}

/**
 * The new worker's listening end of the channel: accepts connections from
 * processes of our own uid (peer credentials) that present the token.
 */
export class HandoffListener {
  private readonly receivers = new Set<HandoffReceiver>();

  private constructor(
    private readonly server: net.Server,
    readonly endpoint: HandoffEndpoint,
    private readonly dir: string | undefined,
  ) {}

  /** Listens in `parentDir` (darwin) or on an abstract address (Linux). */
  static async open(parentDir: string, adopt: Adopt): Promise<HandoffListener> {
    const token = randomHex(24);
    const id = `handover-handoff-${process.pid}-${randomHex(6)}`;
    const dir = process.platform === 'linux' ? undefined : fs.mkdtempSync(path.join(parentDir || os.tmpdir(), `${id}-`));
    const socketPath = dir ? path.join(dir, 's') : `@${id}`;
    let listener: HandoffListener | undefined;
    // Paused: Node must never read from it (that would drop the fds).
    const server = net.createServer({ pauseOnConnect: true }, (socket) => listener?.accept(socket, adopt));
    let fd = -1;
    try {
      // Bound natively (Node pads an abstract name to the whole sun_path),
      // and listened on by fd (listenOnFd: `handover start`'s listen() interception lets an fd through).
      fd = native.bindUnix({ path: socketPath, mode: 0o600 });
      await new Promise<void>((resolve, reject) => {
        server.once('error', reject);
        listenOnFd(server, fd, undefined, () => {
          server.removeListener('error', reject);
          resolve();
        });
      });
    } catch (error) {
      if (fd >= 0 && !server.listening) native.closeFd(fd);
      if (dir) fs.rmSync(dir, { recursive: true, force: true });
      throw error;
    }
    server.unref();
    listener = new HandoffListener(server, { path: socketPath, token }, dir);
    return listener;
  }

  private accept(socket: net.Socket, adopt: Adopt): void {
    const handle = (socket as net.Socket & { _handle?: { fd?: number } })._handle;
    let fd = -1;
    try {
      if (typeof handle?.fd === 'number' && handle.fd >= 0) fd = native.dup(handle.fd);
    } catch {
      // out of fds: refused like a stranger
    }
    socket.destroy();
    if (fd < 0) return;
    try {
      if (native.peerCredentials(fd).uid !== process.getuid!()) throw new Error('not our uid');
    } catch {
      return native.closeFd(fd);
    }
    const receiver = new HandoffReceiver(new FdWire(fd), this.endpoint.token, adopt);
    this.receivers.add(receiver);
    void receiver.done.then(() => this.receivers.delete(receiver));
  }

  /** Stops listening (connections already offered stay ours). */
  close(): void {
    this.server.close();
    if (this.dir) fs.rmSync(this.dir, { recursive: true, force: true });
  }
}
