// listen() interception for `handover start`: in a worker, every listen() on
// a fixed TCP port or a Unix path (net, http, https, http2 and everything
// built on them) is recorded instead of bound; port 0 stays the process's own. The worker then asks the master for
// those addresses and each server listens on the master's socket, as Node's
// cluster does with its primary, but with sockets that outlive every worker.
import * as dns from 'node:dns';
import * as net from 'node:net';
import * as path from 'node:path';
import { LateListenError } from '../errors';

/** A server the program asked to listen, and the handover address for it. */
export interface Capture {
  server: net.Server;
  /** ':3000', '127.0.0.1:0', '[::1]:443', 'unix:/abs/path.sock'. */
  address: string;
}

type Listen = (this: net.Server, ...args: unknown[]) => net.Server;

/** listen()'s arguments as Node reads them, minus the forms we pass through. */
interface Wanted {
  port?: number;
  host?: string;
  path?: string;
  callback?: () => void;
}

function badPort(value: unknown): RangeError {
  return Object.assign(new RangeError(`options.port should be >= 0 and < 65536. Received ${JSON.stringify(value)}.`), {
    code: 'ERR_SOCKET_BAD_PORT',
  });
}

function toPort(value: unknown): number {
  if (value === undefined || value === null || value === '') return 0;
  const port = typeof value === 'number' ? value : typeof value === 'string' && /^\d+$/.test(value) ? Number(value) : NaN;
  if (!Number.isInteger(port) || port < 0 || port > 65535) throw badPort(value);
  return port;
}

/**
 * What a listen() call asks for, or undefined for the forms handover does not
 * serve from the master and passes to Node as they are: an existing handle
 * or fd (`{fd}`: also how the worker finally listens on the master's socket),
 * and port 0. An ephemeral port is a private one (a helper server, a test
 * harness, a debug endpoint whose port the process reports itself): routed
 * to the master it would be one port shared by every worker and generation,
 * and a process would reach its siblings on it instead of itself.
 */
function parseListenArgs(args: unknown[]): Wanted | undefined {
  const callback = typeof args[args.length - 1] === 'function' ? (args.pop() as () => void) : undefined;
  const [first, second] = args;
  let wanted: Wanted;
  if (first !== null && typeof first === 'object') {
    const o = first as Record<string, unknown>;
    if ('fd' in o || '_handle' in o || 'handle' in o) return undefined;
    if (typeof o.path === 'string' && o.port === undefined) return { path: o.path, callback };
    wanted = { port: toPort(o.port), host: typeof o.host === 'string' ? o.host : undefined, callback };
  } else if (typeof first === 'string' && !/^\d+$/.test(first)) {
    return { path: first, callback };
  } else {
    wanted = { port: toPort(first), host: typeof second === 'string' ? second : undefined, callback };
  }
  return wanted.port === 0 ? undefined : wanted;
}

function hostPort(host: string, port: number): string {
  return net.isIPv6(host) ? `[${host}]:${port}` : `${host}:${port}`;
}

/** The handover address for a request, resolving a host name the way Node's listen() does (first lookup result). */
async function addressOf(wanted: Wanted): Promise<string> {
  if (wanted.path !== undefined) return `unix:${path.resolve(wanted.path)}`;
  const port = wanted.port ?? 0;
  if (!wanted.host) return `:${port}`;
  if (net.isIP(wanted.host)) return hostPort(wanted.host, port);
  const { address } = await dns.promises.lookup(wanted.host);
  return hostPort(address, port);
}

export class ListenInterceptor {
  private readonly original: Listen;
  private readonly captures: Promise<Capture>[] = [];
  private closed = false;
  /** The quiet window's timer (see restartQuietWindow); open from a recorded listen() until it ends. */
  private quietTimer?: NodeJS.Timeout;
  private quietWindow?: Promise<void>;
  private quietOpen = false;
  private endQuiet: () => void = () => {};
  private wake?: () => void;
  /** What each listen() so far waits for: a passed-through one to bind, a recorded one its address. */
  private readonly pending: Promise<unknown>[] = [];
  /** listen() calls left to Node (port 0, an fd): private to this process. */
  passedThrough = 0;

  /** `settleMs`: the quiet window, how long after its last listen() a program is taken to have listened on everything. */
  constructor(private readonly settleMs: number) {
    this.original = net.Server.prototype.listen as unknown as Listen;
  }

  /** From now on, listen() on a port or path in this process is recorded, not bound. */
  install(): void {
    const interceptor = this;
    net.Server.prototype.listen = function listen(this: net.Server, ...args: unknown[]): net.Server {
      const wanted = parseListenArgs([...args]);
      if (!wanted) {
        interceptor.passedThrough++;
        // Not on 'error': a listener of ours would keep an unhandled one from
        // being thrown. One that fails leaves the quiet window to decide.
        interceptor.pending.push(new Promise((resolve) => this.once('listening', resolve)));
        return interceptor.original.apply(this, args);
      }
      interceptor.record(this, wanted);
      return this;
    } as typeof net.Server.prototype.listen;
  }

  private record(server: net.Server, wanted: Wanted): void {
    // As Node does: the callback runs on 'listening', which comes when the
    // server listens on the master's socket.
    if (wanted.callback) server.once('listening', wanted.callback);
    if (this.closed) {
      // The worker has told the master its addresses; one more cannot be added.
      const error = new LateListenError('handover start: listen() called after this worker became ready; only addresses listened on at start-up are served ' +
        '(listen on every address before ready, or use --wait-ready and call ready() after the last listen())');
      process.nextTick(() => server.emit('error', error));
      return;
    }
    this.restartQuietWindow();
    const capture = addressOf(wanted).then((address) => ({ server, address }));
    capture.catch(() => {}); // surfaced by captured()
    this.captures.push(capture);
    this.pending.push(capture);
    this.wake?.();
  }

  /** Every listen() call so far, recorded or passed through. */
  get calls(): number {
    return this.pending.length;
  }

  /**
   * Resolves once every listen() made so far is bound: a passed-through one
   * has emitted 'listening' (so its callback has run), a recorded one knows
   * its address (its callback waits for the master's socket).
   */
  async bound(): Promise<void> {
    await Promise.allSettled(this.pending);
  }

  /** How many listen() calls have been recorded. */
  get count(): number {
    return this.captures.length;
  }

  /**
   * The window is a timer, started once the code that called listen() has run
   * to its end (a module's synchronous part, say), and then only after the
   * rest of the timers phase in which it fires. Either way a worker starved
   * of CPU (booting at low priority on a saturated machine) would otherwise
   * see the window end before the program's own next step had had a chance
   * to run: a timer it set right after listen(), leading to its next listen().
   */
  private restartQuietWindow(): void {
    if (!this.quietOpen) {
      this.quietOpen = true;
      this.quietWindow = new Promise((resolve) => (this.endQuiet = resolve));
    }
    process.nextTick(() => {
      if (this.closed) return;
      if (this.quietTimer) return void this.quietTimer.refresh(); // re-arms it, even if it has just fired
      this.quietTimer = setTimeout(() => {
        const seen = this.captures.length;
        setImmediate(() => {
          if (this.captures.length !== seen) return; // a listen() since, which has re-armed the timer
          this.quietTimer = undefined;
          this.quietOpen = false;
          this.endQuiet();
        });
      }, this.settleMs);
    });
  }

  /** True once the quiet window has passed since the last recorded listen() (false before the first). */
  get quiet(): boolean {
    return this.quietWindow !== undefined && !this.quietOpen;
  }

  /** Resolves when the current quiet window ends (never before the first recorded listen()). */
  quietEnds(): Promise<void> {
    return this.quietWindow ?? new Promise(() => {});
  }

  /** Resolves at the next recorded listen(). */
  nextListen(): Promise<void> {
    return new Promise((resolve) => (this.wake = resolve));
  }

  /**
   * Stops recording (a later listen() gets an 'error' event) and resolves
   * with what was recorded; rejects if a host name did not resolve.
   */
  async close(): Promise<Capture[]> {
    this.closed = true;
    clearTimeout(this.quietTimer);
    return Promise.all(this.captures);
  }
}
