// The connecting side of the control socket: say hello, receive the listening
// fds with recvmsg before any other reader touches the socket, then carry on
// with a plain Node socket (nothing else carries fds).
import { EventEmitter } from 'node:events';
import * as net from 'node:net';
import { FrameDecoder, type Hello, type ListenerInfo, MAX_FDS_PER_MESSAGE, MAX_FRAME_BYTES, type Message, encode } from '../protocol';
import * as native from '../platform/native';
import type { WireTicketKeys } from '../ticket-keys';

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

/** An established control connection. Emits 'message' (Message) and 'close'. */
export class ControlClient extends EventEmitter {
  /**
   * `early`: frames that came in the same read as the answer to the hello (a
   * `closing` or `cover` sent right after it). They are emitted first, to
   * the first 'message' listener, before any frame read later.
   */
  private constructor(private readonly socket: net.Socket, decoder: FrameDecoder, early: Message[]) {
    super();
    const flushEarly = (event: string | symbol) => {
      if (event !== 'message') return;
      this.off('newListener', flushEarly);
      // A microtask: after the listener is added, before any socket read.
      queueMicrotask(() => {
        for (const message of early) this.emit('message', message);
      });
    };
    if (early.length > 0) this.on('newListener', flushEarly);
    socket.on('error', () => {});
    socket.on('data', (chunk) => {
      let messages: Message[];
      try {
        messages = decoder.push(chunk);
      } catch (error) {
        this.emit('protocol-error', error);
        socket.destroy();
        return;
      }
      for (const message of messages) this.emit('message', message);
    });
    socket.on('close', () => this.emit('close'));
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
      const socket = new net.Socket({ fd, readable: true, writable: true });
      return { client: new ControlClient(socket, decoder, early), listeners: answer.listeners, fds, ticketKeys: answer.ticketKeys };
    } catch (error) {
      received.forEach(native.closeFd);
      native.closeFd(fd);
      throw error;
    }
  }

  /** Nothing after end(): a frame written then would only fail (and destroy the socket). */
  send(message: Message): void {
    if (this.socket.writable) this.socket.write(encode(message));
  }

  /** Ends the connection; `flushed` runs once everything sent is written and the socket is shut down (or it failed). */
  end(flushed?: () => void): void {
    this.socket.end(flushed);
  }
}
