// The connecting side of the control socket: say hello, receive the listening
// fds with recvmsg before any other reader touches the socket, then go on
// reading and writing frames the same way, through the addon (Connection).
import { EventEmitter } from 'node:events';
import { FrameDecoder, type Hello, type ListenerInfo, MAX_FDS_PER_MESSAGE, MAX_FRAME_BYTES, type Message, encode } from '../protocol';
import * as native from '../platform/native';
import type { WireTicketKeys } from '../ticket-keys';

/** How long one read waits before it is simply started again (the addon's limit: a day). */
const READ_WAIT_MS = 86_400_000;
/** While the master does not read (its socket buffer full), the next write is tried after this, doubling up to the maximum. */
const RETRY_FIRST_MS = 5;
const RETRY_MAX_MS = 200;

/** Writes all of `data` on a non-blocking fd that no Node handle owns yet. */
async function writeAll(fd: number, data: Buffer, deadline: number): Promise<void> {
  let offset = 0;
  while (offset < data.length) {
    try {
      offset += native.sendFds(fd, data.subarray(offset), []);
    } catch (error) {
      if (!native.isSystemError(error, 'EAGAIN') || Date.now() > deadline) throw error;
      await new Promise((resolve) => setTimeout(resolve, 5));
    }
  }
}

/** Connects without blocking, retrying while the listener's backlog is full. */
async function connect(socketPath: string, deadline: number): Promise<number> {
  for (;;) {
    try {
      return native.connectUnix(socketPath);
    } catch (error) {
      if (!native.isSystemError(error, 'EAGAIN') || Date.now() > deadline) throw error;
      await new Promise((resolve) => setTimeout(resolve, 5));
    }
  }
}

/**
 * The connected control socket after the handshake, read with recvmsg and
 * written with sendmsg as the handshake was, not wrapped in a net.Socket: a
 * worker's only use of Node's stream machinery would otherwise be this
 * connection, and setting it up (a Pipe handle, a Duplex, its first read and
 * write) cost every worker about 1 ms of CPU at every reload (issue 24;
 * bench/RESULTS.md, "cost-control"). A frame or two a second pass here.
 *
 * One read waits at a time; it ends with the connection (end of file or an
 * error), which closes the fd and calls `onClose` once. Writes go out at
 * once; what the socket cannot take waits here, in order, and is tried again
 * shortly (a master that does not read: stopped, or busy). end() shuts down
 * only this side's writing: the master reads every frame, then its own end
 * comes back, and that is when the connection is over. (Shutting down both
 * ways, a write of the master's at that moment would fail, and its socket be
 * destroyed with the last frames unread.)
 */
class Connection {
  private queue: Buffer[] = [];
  private retryMs = RETRY_FIRST_MS;
  private retry?: NodeJS.Timeout;
  private ended?: () => void;
  private closed = false;

  constructor(
    private readonly fd: number,
    private readonly onData: (chunk: Buffer) => void,
    private readonly onClose: () => void,
  ) {
    setImmediate(() => void this.read()); // once the caller, resuming from connect(), has its listeners on
  }

  /** False once end() was called or the connection is gone: then nothing more is written. */
  get writable(): boolean {
    return !this.closed && this.ended === undefined;
  }

  write(data: Buffer): void {
    if (!this.writable) return;
    this.queue.push(data);
    if (this.queue.length === 1) this.flush();
  }

  /**
   * Ends the writing side once everything written is sent; `flushed` runs
   * when the master's end of file has come back too (it has read it all),
   * or as soon as the connection is gone.
   */
  end(flushed: () => void = () => {}): void {
    if (this.closed) return flushed();
    this.ended = flushed;
    if (this.queue.length === 0) this.shutDown('write');
  }

  /** Ends the connection now, unsent frames dropped; the waiting read sees end of file. */
  destroy(): void {
    this.queue = [];
    this.shutDown('both');
  }

  private async read(): Promise<void> {
    for (;;) {
      let chunk: Buffer;
      try {
        // no fds after the handshake: any that came would be closed, and the read rejected
        chunk = (await native.recvFds(this.fd, MAX_FRAME_BYTES + 4, 0, READ_WAIT_MS)).data;
      } catch (error) {
        if (native.isSystemError(error, 'ETIMEDOUT')) continue;
        break;
      }
      if (chunk.length === 0) break;
      this.onData(chunk);
    }
    this.close();
  }

  private flush(): void {
    this.retry = undefined;
    while (this.queue.length > 0 && !this.closed) {
      const head = this.queue[0]!;
      let sent: number;
      try {
        sent = native.sendFds(this.fd, head, []);
      } catch (error) {
        if (!native.isSystemError(error, 'EAGAIN')) return this.destroy(); // EPIPE: the master is gone
        this.retry = setTimeout(() => this.flush(), this.retryMs);
        this.retryMs = Math.min(RETRY_MAX_MS, this.retryMs * 2);
        return;
      }
      this.retryMs = RETRY_FIRST_MS;
      if (sent < head.length) this.queue[0] = head.subarray(sent);
      else this.queue.shift();
    }
    if (this.ended && this.queue.length === 0) this.shutDown('write');
  }

  private shutDown(direction: 'both' | 'write'): void {
    if (this.closed) return;
    try {
      native.shutdownSocket(this.fd, direction);
    } catch {
      // not connected any more: the read sees that too
    }
  }

  private close(): void {
    if (this.closed) return;
    this.closed = true;
    clearTimeout(this.retry);
    this.queue = [];
    native.closeFd(this.fd);
    this.ended?.();
    this.ended = undefined;
    this.onClose();
  }
}

/** An established control connection. Emits 'message' (Message) and 'close'. */
export class ControlClient extends EventEmitter {
  private readonly connection: Connection;

  /**
   * `early`: frames that came in the same read as the answer to the hello (a
   * `closing` or `cover` sent right after it). They are emitted first, to
   * the first 'message' listener, before any frame read later.
   */
  private constructor(fd: number, decoder: FrameDecoder, early: Message[]) {
    super();
    const flushEarly = (event: string | symbol) => {
      if (event !== 'message') return;
      this.off('newListener', flushEarly);
      // A microtask: after the listener is added, before any later read.
      queueMicrotask(() => {
        for (const message of early) this.emit('message', message);
      });
    };
    if (early.length > 0) this.on('newListener', flushEarly);
    this.connection = new Connection(fd, (chunk) => {
      let messages: Message[];
      try {
        messages = decoder.push(chunk);
      } catch (error) {
        this.emit('protocol-error', error);
        this.connection.destroy();
        return;
      }
      for (const message of messages) this.emit('message', message);
    }, () => this.emit('close'));
  }

  /**
   * Says hello and waits (without blocking the loop) for the listeners and
   * their fds: `fds[i]` holds address i's sockets, one per slot (or a single
   * shared one). Every fd received is closed again if anything fails.
   */
  static async connect(
    socketPath: string,
    hello: Hello,
    timeoutMs: number,
  ): Promise<{ client: ControlClient; listeners: ListenerInfo[]; fds: number[][]; ticketKeys?: WireTicketKeys }> {
    const deadline = Date.now() + timeoutMs;
    const fd = await connect(socketPath, deadline);
    const received: number[] = [];
    const decoder = new FrameDecoder();
    try {
      await writeAll(fd, encode(hello), deadline);
      let messages: Message[] = [];
      while (messages.length === 0) {
        const chunk = await native.recvFds(fd, MAX_FRAME_BYTES + 4, MAX_FDS_PER_MESSAGE, Math.max(1, deadline - Date.now()));
        received.push(...chunk.fds);
        if (chunk.data.length === 0) throw new Error(`${socketPath} closed the connection during the handshake (see its log)`);
        messages = decoder.push(chunk.data);
      }
      const [answer, ...early] = messages;
      if (answer.type === 'refused') throw new Error(answer.message);
      const expected = answer.type === 'listeners' ? answer.listeners.reduce((n, l) => n + l.fds, 0) : 0;
      if (answer.type !== 'listeners' || answer.listeners.length !== hello.addresses.length || received.length !== expected) {
        throw new Error(`the hello was answered with ${answer.type} and ${received.length} fds for ${hello.addresses.length} address(es)`);
      }
      let next = 0;
      const fds = answer.listeners.map((l) => received.slice(next, (next += l.fds)));
      return { client: new ControlClient(fd, decoder, early), listeners: answer.listeners, fds, ticketKeys: answer.ticketKeys };
    } catch (error) {
      received.forEach(native.closeFd);
      native.closeFd(fd);
      throw error;
    }
  }

  /** Nothing after end(): the master reads no more of this connection. */
  send(message: Message): void {
    if (this.connection.writable) this.connection.write(encode(message));
  }

  /** Ends the connection; `flushed` runs once the master has read everything sent (or the connection is gone). */
  end(flushed?: () => void): void {
    this.connection.end(flushed);
  }
}
