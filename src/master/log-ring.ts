// The master's recent output for `handover logs`: every line this process
// writes to stdout or stderr (its own lifecycle lines and, relayed by
// spawn-self, its workers' output) is kept in a ring bounded in lines and
// bytes, so it works the same in the foreground, under systemd and in the
// background, and costs the same after a day as after a minute. Optionally
// the lines also go to a sink (the background mode's log file) instead of
// the terminal. The tap is the one place all output passes: the two streams'
// write().
import type * as net from 'node:net';
import { type LogLine, type Message, encode, MAX_FRAME_BYTES } from '../protocol';

/** Lines kept; older ones are dropped first. */
export const RING_LINES = 5_000;
/** Bytes kept in all (a few long lines must not hold megabytes). */
export const RING_BYTES = 2 * 1024 * 1024;
/** A longer line is kept cut to this, with a note. */
const MAX_KEPT_LINE = 8 * 1024;

type Listener = (line: LogLine) => void;

class LogRing {
  private readonly lines: LogLine[] = [];
  private bytes = 0;
  private readonly listeners = new Set<Listener>();

  push(line: LogLine): void {
    this.lines.push(line);
    this.bytes += line.text.length;
    while (this.lines.length > RING_LINES || this.bytes > RING_BYTES) this.bytes -= this.lines.shift()!.text.length;
    for (const listener of this.listeners) listener(line);
  }

  last(count: number): LogLine[] {
    return count <= 0 ? [] : this.lines.slice(-count);
  }

  subscribe(listener: Listener): () => void {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }
}

const ring = new LogRing();
let capturing = false;

/** `[g<generation> <pid>] ` at the start of a relayed worker line. */
const WORKER_PREFIX = /^\[g(\d+) (\d+)\] /;

function toLine(stream: 'stdout' | 'stderr', text: string): LogLine {
  const cut = text.length > MAX_KEPT_LINE ? `${text.slice(0, MAX_KEPT_LINE)}... (${text.length - MAX_KEPT_LINE} more characters)` : text;
  const worker = WORKER_PREFIX.exec(cut);
  return worker
    ? { time: Date.now(), stream, generation: Number(worker[1]), pid: Number(worker[2]), text: cut.slice(worker[0].length) }
    : { time: Date.now(), stream, pid: process.pid, text: cut };
}

/**
 * From now on every line written to process.stdout and process.stderr is
 * kept in the ring; with `sink`, written there instead of to the stream.
 * Once per process (`handover start`'s master).
 */
export function captureOutput(sink?: (chunk: string) => void): void {
  if (capturing) return;
  capturing = true;
  for (const name of ['stdout', 'stderr'] as const) {
    const stream = process[name];
    const write = stream.write.bind(stream);
    let pending = '';
    stream.write = ((chunk: string | Uint8Array, ...rest: unknown[]) => {
      const text = typeof chunk === 'string' ? chunk : Buffer.from(chunk).toString('utf8');
      pending += text;
      let newline: number;
      while ((newline = pending.indexOf('\n')) >= 0) {
        ring.push(toLine(name, pending.slice(0, newline)));
        pending = pending.slice(newline + 1);
      }
      if (pending.length > MAX_KEPT_LINE) {
        ring.push(toLine(name, pending));
        pending = '';
      }
      if (!sink) return (write as (...args: unknown[]) => boolean)(chunk, ...rest);
      sink(text);
      const callback = rest.find((r) => typeof r === 'function') as (() => void) | undefined;
      if (callback) process.nextTick(callback);
      return true;
    }) as typeof stream.write;
  }
}

/** Frames of lines, each under the protocol's frame limit. */
function framesOf(lines: LogLine[]): Message[] {
  const frames: Message[] = [];
  let batch: LogLine[] = [];
  let size = 0;
  for (const line of lines) {
    const bytes = Buffer.byteLength(line.text) + 100;
    if (batch.length > 0 && size + bytes > MAX_FRAME_BYTES / 2) {
      frames.push({ type: 'log-lines', lines: batch });
      [batch, size] = [[], 0];
    }
    batch.push(line);
    size += bytes;
  }
  frames.push({ type: 'log-lines', lines: batch, end: true });
  return frames;
}

/**
 * Answers a `logs` request on an admin connection: the last `lines` lines,
 * the last frame marked `end`; with `follow`, then every new line until the
 * client goes. Written on the socket itself: a follower is a request that is
 * never answered, so the admin idle timer never cuts it.
 */
export function serveLogs(request: Extract<Message, { type: 'logs' }>, socket: net.Socket): void {
  for (const frame of framesOf(ring.last(request.lines))) socket.write(encode(frame));
  if (!request.follow) return;
  // A follower that stops reading must not grow the master: past this much unsent, it is cut off.
  const unsubscribe = ring.subscribe((line) => {
    if (socket.writableLength > RING_BYTES) socket.destroy();
    else socket.write(encode({ type: 'log-lines', lines: [line] }));
  });
  socket.once('close', unsubscribe);
}
