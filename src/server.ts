// The public API: a Server that is the master in the process you start and a
// worker in every process the master spawns, plus the one-line helpers. The
// master's code, single mode's and the worker's runtime load at run(), only
// in the process that runs them: a worker never holds the master's code.
import { crypto } from './platform/crypto';
import { EventEmitter } from 'node:events';
import * as fs from 'node:fs';
import * as http from 'node:http';
import type * as https from 'node:https';
import * as net from 'node:net';
import * as path from 'node:path';
import { type Address, parseAddress } from './platform/address';
import type { ConnectionTally, MasterStatus } from './protocol';
import { AddressOverlapError, SecondServerError, TLSFileError } from './errors';
import { createLogger } from './log';
import type { Master } from './master/master';
import { type ResolvedOptions, type ServerOptions, resolveOptions } from './options';
import type { Registration } from './worker/serving';
import type { SingleProcess } from './single';
import type { Worker } from './worker/worker';
import { isWorkerProcess } from './worker/spawned';

/** A request listener (`(req, res) => void`, so an Express or Koa app works as is) or any net.Server. */
export type Handler = http.RequestListener | net.Server;

/**
 * What register() takes: a Handler, or the absolute path of a module that
 * exports one (`module.exports = app`, or a default export). A path keeps the
 * application out of the master: only the processes that serve (workers, a
 * single process) load it, when they start serving.
 *
 * ```ts
 * server.register(':8080', require.resolve('./app'));
 * ```
 */
export type HandlerOrModule = Handler | string;

/** The events a Server emits and their payloads: `server.on('reloaded', (e) => e.durationMs)`. */
export interface ServerEvents {
  /** Master or single process: every address is bound and generation 1 serves. */
  ready: [event: { generation: number; addresses: string[] }];
  /** A reload began: generation `generation` is starting. */
  reload: [event: { generation: number }];
  /**
   * The new generation serves and the old one drains. `pid`: single mode's
   * successor. `connections`: what the drained workers did with their
   * connections as they first reported it (moved, closed, and why not moved,
   * by reason); idle ones have moved by then, busy ones move after their
   * response and show as `open` (`status().lastReload.connections` has the
   * running total).
   */
  reloaded: [event: { generation: number; durationMs: number; pid?: number; connections?: ConnectionTally }];
  /** The new generation did not become ready; the old one keeps serving. */
  'reload-failed': [event: { generation: number; error: Error }];
  /** Master: a worker process exited. */
  'worker-exit': [event: { pid: number; slot: number; generation: number; code: number | null; signal: NodeJS.Signals | null }];
  /**
   * Master: a worker crossed maxMemory, maxRequests or maxLifetime, and its
   * replacement (`replacedBy`) is ready; the old one (`pid`) drains.
   */
  recycled: [event: { slot: number; pid: number; replacedBy: number; reason: string }];
  /** Master: rollback() put generation `generation` back; generation `from` drains. */
  'rolled-back': [event: { generation: number; from: number }];
  /** Master: an upgrade in place did not happen (the new image cannot start); the same image and generation keep serving. */
  'upgrade-failed': [event: { error: Error }];
  /** Master: the number of workers changed (scale(), SIGTTIN/SIGTTOU, `handover scale`). */
  scaled: [event: { workers: number; from: number }];
  /** Master or single process: the stop is complete. */
  stop: [];
  /** Worker or single process: this process drains; close your own resources (db pools, timers). */
  drain: [];
}

/** True in the process you started (the master); false in the workers it spawns. */
export function isMaster(): boolean {
  return !isWorkerProcess();
}

/**
 * True in a worker process spawned by a master. In single mode there are no
 * workers: there use isServing(), or better the `ready` option.
 */
export function isWorker(): boolean {
  return isWorkerProcess();
}

/** Set once a `mode: 'single'` Server exists in this process: it serves itself. */
let singleMode = false;

/**
 * True in a process that serves requests: a worker, or a single-mode process
 * (once its `new Server({ mode: 'single' })` exists). False in a master, which
 * only holds the sockets. Heavy start-up (db pools, caches) belongs here, or in
 * the `ready` option, which runs in exactly these processes before they serve.
 *
 * ```ts
 * const server = new Server({ mode: 'single' });
 * const db = isServing() ? await connect() : undefined;
 * ```
 */
export function isServing(): boolean {
  return isWorkerProcess() || singleMode;
}

function describe(value: unknown): string {
  if (value === null) return 'null';
  if (typeof value !== 'object') return typeof value === 'string' ? JSON.stringify(value) : String(value);
  return `an object (${value.constructor?.name ?? 'no constructor'})`;
}

/**
 * The handler check, in the master at register() so a mistake stops the start
 * with the fix rather than failing in each worker. Fastify and Koa instances
 * are the usual mistakes: they are objects, not request listeners.
 */
function checkHandler(address: string, handler: unknown, tlsOnly = false, module?: string): void {
  if (typeof handler === 'function' || (!tlsOnly && handler instanceof net.Server)) return;
  const wanted = tlsOnly ? 'a request listener (req, res) => void' : 'a request listener (req, res) => void or a net.Server';
  let hint = 'Express: pass `app`; Koa: `app.callback()`; Fastify: `app.server` (or `app.routing`) with the option `ready: () => app.ready()`';
  if (typeof handler === 'object' && handler !== null) {
    const o = handler as Record<string, unknown>;
    if (o.server instanceof net.Server && typeof o.routing === 'function') {
      hint = tlsOnly
        ? 'this is a Fastify instance: pass `app.routing` (create the app with { https } for TLS of its own) with the option `ready: () => app.ready()`'
        : 'this is a Fastify instance: pass `app.server` (or `app.routing`) and the option `ready: () => app.ready()` so each worker boots the app before it serves';
    } else if (typeof o.callback === 'function' && typeof o.use === 'function') {
      hint = 'this is a Koa app: pass `app.callback()`';
    }
  }
  const got = module ? `module ${module} exports ${describe(handler)}` : `got ${describe(handler)}`;
  throw new TypeError(`handler for ${address} must be ${wanted}, ${got}; ${hint}`);
}

/**
 * How a serving process gets the handler for `address`. A module path is
 * resolved in the master (a missing file stops the start, naming it) but
 * required only where it serves, so the master never holds the application.
 */
function handlerFor(address: string, handler: HandlerOrModule, tlsOnly = false): () => Handler {
  if (typeof handler !== 'string') {
    checkHandler(address, handler, tlsOnly);
    return () => handler;
  }
  if (!path.isAbsolute(handler)) {
    throw new TypeError(`handler module for ${address} must be an absolute path, got ${JSON.stringify(handler)}; pass \`require.resolve('${handler}')\` (or path.join(__dirname, ...)) from your program`);
  }
  let file: string;
  try {
    file = require.resolve(handler);
  } catch (error) {
    throw Object.assign(new Error(`cannot find the handler module ${handler} for ${address} (${(error as NodeJS.ErrnoException).code}); check the path`), { code: 'MODULE_NOT_FOUND' });
  }
  return () => {
    const exported: unknown = require(file);
    const value = typeof exported === 'object' && exported !== null && !(exported instanceof net.Server) && 'default' in exported
      ? (exported as { default: unknown }).default
      : exported;
    checkHandler(address, value, tlsOnly, file);
    return value as Handler;
  };
}

function toServer(handler: Handler): net.Server {
  return handler instanceof net.Server ? handler : http.createServer(handler);
}

/** Where two addresses of one program would bind the same port twice. */
function overlaps(a: Address, b: Address): boolean {
  if (a.kind !== 'tcp' || b.kind !== 'tcp' || a.port === 0 || a.port !== b.port) return false;
  const covers = (wide: Address & { kind: 'tcp' }, other: Address & { kind: 'tcp' }) =>
    wide.anyHost || (wide.host === '0.0.0.0' && net.isIPv4(other.host)) || (wide.host === '::' && net.isIPv6(other.host));
  return a.host === b.host || covers(a, b) || covers(b, a);
}

/**
 * Reads and parses a TLS certificate and key, so a bad file is named: the
 * master checks them at registerTLS(), each worker again when it starts (a
 * reload picks up a renewed certificate).
 */
function readTLS(address: string, certFile: string, keyFile: string): { cert: Buffer; key: Buffer } {
  const read = (file: string, what: string) => {
    try {
      return fs.readFileSync(file);
    } catch (error) {
      const code = (error as NodeJS.ErrnoException).code;
      throw Object.assign(new Error(`cannot read TLS ${what} file ${file} for ${address} (${code}); check the path and permissions`), { code });
    }
  };
  const cert = read(certFile, 'certificate');
  const key = read(keyFile, 'key');
  const parse = (file: string, what: string, pem: string, check: () => void) => {
    try {
      check();
    } catch (error) {
      throw new TLSFileError(`TLS ${what} file ${file} for ${address} is not a PEM ${what} (${(error as Error).message}); ` +
        `it must hold a "-----BEGIN ${pem}-----" block: check that the certificate and key files are not swapped`);
    }
  };
  const { X509Certificate, createPrivateKey } = crypto();
  parse(certFile, 'certificate', 'CERTIFICATE', () => new X509Certificate(cert));
  parse(keyFile, 'key', 'PRIVATE KEY', () => createPrivateKey(key));
  if (!new X509Certificate(cert).checkPrivateKey(createPrivateKey(key))) {
    throw new TLSFileError(`TLS key file ${keyFile} does not belong to the certificate in ${certFile} (for ${address}); use the key the certificate was issued for`);
  }
  return { cert, key };
}

/** The Server whose run() was called in this process: handover runs one per program. */
let running: Server | undefined;

const ONE_SERVER_FIX =
  'serve every address from one Server: `const server = new Server(); server.register(\':8080\', api); ' +
  'server.register(\':9090\', metrics); server.run();`';

/** Typed listeners: an unknown event name or a wrong payload is a type error. */
type Listener<E extends keyof ServerEvents> = (...args: ServerEvents[E]) => void;

// Declaration merging narrows EventEmitter's string-keyed methods to ServerEvents.
// eslint-disable-next-line @typescript-eslint/no-unsafe-declaration-merging
export interface Server {
  on<E extends keyof ServerEvents>(event: E, listener: Listener<E>): this;
  once<E extends keyof ServerEvents>(event: E, listener: Listener<E>): this;
  off<E extends keyof ServerEvents>(event: E, listener: Listener<E>): this;
  addListener<E extends keyof ServerEvents>(event: E, listener: Listener<E>): this;
  prependListener<E extends keyof ServerEvents>(event: E, listener: Listener<E>): this;
  prependOnceListener<E extends keyof ServerEvents>(event: E, listener: Listener<E>): this;
  removeListener<E extends keyof ServerEvents>(event: E, listener: Listener<E>): this;
  emit<E extends keyof ServerEvents>(event: E, ...args: ServerEvents[E]): boolean;
}

/**
 * Several servers in one program, reloaded together.
 *
 * ```ts
 * const server = new Server({ stopTimeout: 30_000, workers: 2 });
 * server.register('0.0.0.0:9223', app);
 * server.register('unix:/run/app.sock', app);
 * await server.run();
 * ```
 *
 * Events (typed in ServerEvents) in the master: `ready`, `reload`,
 * `reloaded`, `reload-failed`, `worker-exit`, `stop`. In a worker: `drain`.
 */
export class Server extends EventEmitter {
  private readonly options: ResolvedOptions;
  private readonly registrations: Registration[] = [];
  private runtime?: Master | Worker | SingleProcess;
  /** The runtime when this process is the master. */
  private master?: Master;

  constructor(options: ServerOptions = {}) {
    super();
    this.options = resolveOptions(options);
    if (this.options.mode === 'single') singleMode = true;
  }

  /**
   * Serves `handler` on `address` (':9222', '127.0.0.1:0', '[::1]:443',
   * 'unix:/path'). `handler` may be a module's absolute path instead
   * (`require.resolve('./app')`): only workers load it, so the master stays
   * small however large the application.
   */
  register(address: string | number, handler: HandlerOrModule): this {
    const key = this.key(address);
    const load = handlerFor(key, handler);
    this.registrations.push({ address: key, create: () => toServer(load()) });
    return this;
  }

  /**
   * The address string that names a registration to the master across
   * reloads. Ephemeral ports may repeat, so each gets its ordinal ('#1').
   */
  private key(address: string | number): string {
    const parsed = parseAddress(address);
    const clash = this.registrations.find((r) => overlaps(parseAddress(r.address.replace(/#\d+$/, '')), parsed));
    if (clash && clash.address !== parsed.text) {
      throw new AddressOverlapError(
        `'${clash.address}' and '${parsed.text}' are both registered in this program and overlap: both would listen ` +
          `on port ${(parsed as { port: number }).port} of the same address. Register one of them; ':PORT' alone listens on every address`,
      );
    }
    const taken = (k: string) => this.registrations.some((r) => r.address === k);
    if (parsed.kind === 'tcp' && parsed.port === 0) {
      let n = 0;
      while (taken(`${parsed.text}#${n}`)) n++;
      return `${parsed.text}#${n}`;
    }
    if (taken(parsed.text)) throw new Error(`${parsed.text} is registered twice in this program; register each address once`);
    return parsed.text;
  }

  /** Same as `register('unix:' + path, handler)`. */
  registerUnix(socketPath: string, handler: HandlerOrModule): this {
    return this.register(`unix:${socketPath}`, handler);
  }

  /**
   * Serves HTTPS. Each worker reads the files when it starts, so a reload
   * picks up a renewed certificate. `handler`: a request listener, or the
   * absolute path of a module that exports one (see register()).
   */
  registerTLS(address: string | number, certFile: string, keyFile: string, handler: http.RequestListener | string): this {
    const text = this.key(address);
    const load = handlerFor(text, handler, true) as () => http.RequestListener;
    if (isMaster()) readTLS(text, certFile, keyFile);
    this.registrations.push({ address: text, create: () => (require('node:https') as typeof https).createServer(readTLS(text, certFile, keyFile), load()) });
    return this;
  }

  /**
   * Master: binds, starts the workers and resolves after a clean stop; rejects
   * if it cannot start. Worker: serves and resolves once drained, after which
   * the process exits.
   */
  run(): Promise<void> {
    if (this.runtime) return Promise.reject(new Error('run() was already called'));
    if (running && running !== this) {
      return Promise.reject(new SecondServerError(
        `a second Server was started in this program; handover runs one per program (one master, one control directory): ${ONE_SERVER_FIX}`,
      ));
    }
    running = this;
    if (isWorkerProcess()) {
      const { Worker } = require('./worker/worker') as typeof import('./worker/worker');
      this.runtime = new Worker(this.options, this.registrations, this);
      return this.runtime.run();
    }
    const { isProbe, reportProbe } = require('./master/upgrade') as typeof import('./master/upgrade');
    if (isProbe()) return reportProbe(this.registrations.map((r) => r.address)); // an upgrade checks the new image
    if (this.options.mode === 'single') {
      const { SingleProcess } = require('./single') as typeof import('./single');
      this.runtime = new SingleProcess(this.options, this.registrations, this);
    } else {
      const { Master } = require('./master/master') as typeof import('./master/master');
      this.runtime = this.master = new Master(this.options, this.registrations.map((r) => r.address), this);
    }
    return this.runtime.run();
  }

  /** Starts a reload (from master or worker code); resolves when the new generation serves. */
  reload(): Promise<void> {
    if (!this.runtime) return Promise.reject(new Error('call run() before reload()'));
    return this.runtime.reload();
  }

  /**
   * Master only: run `workers` workers from now on (SIGTTIN/SIGTTOU add or
   * remove one). New workers start one at a time, each ready before the next;
   * removed ones drain. Resolves once the change is done.
   *
   * ```ts
   * await server.scale(4);
   * ```
   */
  scale(workers: number): Promise<void> {
    if (!this.master) return Promise.reject(new Error('scale() is for the master (mode: \'master\'), after run()'));
    return this.master.scale(workers);
  }

  /**
   * Master only: with `keepPrevious`, puts the generation the last reload
   * replaced back to accepting and drains the current one, starting no
   * process. Rejects when no previous generation is kept.
   */
  rollback(): Promise<void> {
    if (!this.master) return Promise.reject(new Error('rollback() is for the master (mode: \'master\'), after run()'));
    return this.master.rollback();
  }

  /**
   * Master only: upgrade in place, as SIGUSR2 does. The master starts the
   * program now on disk once in probe mode (under `node`, default the current
   * binary); if that loads, it execs it in the same pid, keeping the listening
   * sockets, and the new image's generation takes over. Rejects if the new
   * image cannot start (nothing changed then); on success this process image
   * is replaced, so the promise never settles: the new image emits `ready`.
   *
   * ```ts
   * process.on('SIGUSR2', () => server.upgrade('/opt/node-22/bin/node'));
   * ```
   */
  upgrade(node?: string): Promise<void> {
    if (!this.master) return Promise.reject(new Error('upgrade() is for the master (mode: \'master\'), after run()'));
    return this.master.upgrade(node);
  }

  /** Master only: a graceful stop, as a stop signal does. */
  stop(): Promise<void> {
    const runtime = this.runtime;
    if (!runtime || isWorkerProcess()) return Promise.reject(new Error('stop() is for the master; workers drain on their own'));
    return (runtime as Master | SingleProcess).stop();
  }

  /** Master only: generation, workers with pids and states, addresses, uptime. */
  status(): MasterStatus {
    const runtime = this.runtime;
    if (!runtime || isWorkerProcess()) throw new Error('status() is for the master, after run()');
    return (runtime as Master | SingleProcess).status();
  }

  /** The bound addresses with real ports, e.g. ['127.0.0.1:41234'] (after `ready`). */
  get addresses(): string[] {
    return this.runtime?.bound ?? [];
  }
}

/** listenAndServe/listenAndServeTLS calls so far in this program; more than one is a mistake. */
let helperCalls = 0;

/**
 * Builds and runs a Server. In the master, a failure to start is logged as one
 * line (naming the address, errno and fix) and the process exits 1, like Go's
 * log.Fatal(http.ListenAndServe(...)). In a worker, the error propagates.
 * The run waits one turn of the event loop, so that a program calling the
 * helper twice (an API port and a metrics port) is told so before either
 * starts, with nothing bound and no control directory left behind.
 */
async function serveOrExit(options: ServerOptions | undefined, build: (server: Server) => Server): Promise<void> {
  const call = ++helperCalls;
  try {
    const server = build(new Server(options));
    await new Promise<void>((resolve) => setImmediate(resolve));
    if (helperCalls > 1) {
      if (call > 1) return new Promise<void>(() => {}); // the first call reports it, once
      throw new SecondServerError(
        `listenAndServe()/listenAndServeTLS() was called ${helperCalls} times in this program; each call would start its own master. Instead, ${ONE_SERVER_FIX}`,
      );
    }
    await server.run();
  } catch (error) {
    if (!isMaster()) throw error;
    const { reported } = require('./master/master') as typeof import('./master/master');
    if (!reported(error)) createLogger(options?.logger, 'master').error(error instanceof Error ? error.message : String(error));
    process.exit(1);
  }
}

/**
 * The drop-in for `http.createServer(handler).listen(port)`, with reloads on
 * SIGHUP/SIGUSR1 and a graceful stop on SIGTERM/SIGINT.
 *
 * ```ts
 * listenAndServe(':9222', (req, res) => res.end('hello'));
 * ```
 * If the master cannot start (port in use, ...), it logs why and exits 1.
 * One call per program: for several addresses, use one Server with a
 * register() call each.
 */
export function listenAndServe(address: string | number, handler: HandlerOrModule, options?: ServerOptions): Promise<void> {
  return serveOrExit(options, (server) => server.register(address, handler));
}

/**
 * HTTPS version of listenAndServe; each worker reads cert and key at start.
 *
 * ```ts
 * listenAndServeTLS(':9443', 'cert.pem', 'key.pem', (req, res) => res.end('hello'));
 * ```
 */
export function listenAndServeTLS(
  address: string | number,
  certFile: string,
  keyFile: string,
  handler: http.RequestListener | string,
  options?: ServerOptions,
): Promise<void> {
  return serveOrExit(options, (server) => server.registerTLS(address, certFile, keyFile, handler));
}
