// The public API: a Server that is the master in the process you start and a
// worker in every process the master spawns, plus the one-line helpers.
import { EventEmitter } from 'node:events';
import * as fs from 'node:fs';
import * as http from 'node:http';
import * as https from 'node:https';
import * as net from 'node:net';
import { parseAddress } from './platform/address';
import type { MasterStatus } from './protocol';
import { createLogger } from './log';
import { Master, reported } from './master/master';
import { type ResolvedOptions, type ServerOptions, resolveOptions } from './options';
import type { Registration } from './worker/serving';
import { SingleProcess } from './single';
import { Worker, isWorkerProcess } from './worker/worker';

/** A request listener (`(req, res) => void`, so an Express or Koa app works as is) or any net.Server. */
export type Handler = http.RequestListener | net.Server;

/** True in the process you started (the master); false in the workers it spawns. */
export function isMaster(): boolean {
  return !isWorkerProcess();
}

/** True in a worker process; put heavy start-up (db pools, caches) behind this. */
export function isWorker(): boolean {
  return isWorkerProcess();
}

function toServer(handler: Handler): net.Server {
  if (handler instanceof net.Server) return handler;
  if (typeof handler === 'function') return http.createServer(handler);
  throw new TypeError('handler must be a request listener (req, res) => void or a net.Server');
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
 * Events in the master: `ready`, `reload`, `reloaded`, `reload-failed`,
 * `worker-exit`, `stop`. In a worker: `drain`.
 */
export class Server extends EventEmitter {
  private readonly options: ResolvedOptions;
  private readonly registrations: Registration[] = [];
  private runtime?: Master | Worker | SingleProcess;

  constructor(options: ServerOptions = {}) {
    super();
    this.options = resolveOptions(options);
  }

  /** Serves `handler` on `address` (':9222', '127.0.0.1:0', '[::1]:443', 'unix:/path'). */
  register(address: string | number, handler: Handler): this {
    this.registrations.push({ address: this.key(address), create: () => toServer(handler) });
    return this;
  }

  /**
   * The address string that names a registration to the master across
   * reloads. Ephemeral ports may repeat, so each gets its ordinal ('#1').
   */
  private key(address: string | number): string {
    const parsed = parseAddress(address);
    const taken = (k: string) => this.registrations.some((r) => r.address === k);
    if (parsed.kind === 'tcp' && parsed.port === 0) {
      let n = 0;
      while (taken(`${parsed.text}#${n}`)) n++;
      return `${parsed.text}#${n}`;
    }
    if (taken(parsed.text)) throw new Error(`${parsed.text} is registered twice`);
    return parsed.text;
  }

  /** Same as `register('unix:' + path, handler)`. */
  registerUnix(path: string, handler: Handler): this {
    return this.register(`unix:${path}`, handler);
  }

  /**
   * Serves HTTPS. Each worker reads the files when it starts, so a reload
   * picks up a renewed certificate.
   */
  registerTLS(address: string | number, certFile: string, keyFile: string, handler: http.RequestListener): this {
    const text = this.key(address);
    if (isMaster()) {
      for (const file of [certFile, keyFile]) {
        try {
          fs.accessSync(file, fs.constants.R_OK);
        } catch (error) {
          const code = (error as NodeJS.ErrnoException).code;
          throw Object.assign(new Error(`cannot read TLS file ${file} for ${text} (${code}); check the path and permissions`), { code });
        }
      }
    }
    this.registrations.push({
      address: text,
      create: () => https.createServer({ cert: fs.readFileSync(certFile), key: fs.readFileSync(keyFile) }, handler),
    });
    return this;
  }

  /**
   * Master: binds, starts the workers and resolves after a clean stop; rejects
   * if it cannot start. Worker: serves and resolves once drained, after which
   * the process exits.
   */
  run(): Promise<void> {
    if (this.runtime) return Promise.reject(new Error('run() was already called'));
    if (isWorkerProcess()) {
      this.runtime = new Worker(this.options, this.registrations, this);
    } else if (this.options.mode === 'single') {
      this.runtime = new SingleProcess(this.options, this.registrations, this);
    } else {
      this.runtime = new Master(this.options, this.registrations.map((r) => r.address), this);
    }
    return this.runtime.run();
  }

  /** Starts a reload (from master or worker code); resolves when the new generation serves. */
  reload(): Promise<void> {
    if (!this.runtime) return Promise.reject(new Error('call run() before reload()'));
    return this.runtime.reload();
  }

  /** Master only: a graceful stop, as a stop signal does. */
  stop(): Promise<void> {
    if (!this.runtime || this.runtime instanceof Worker) return Promise.reject(new Error('stop() is for the master; workers drain on their own'));
    return this.runtime.stop();
  }

  /** Master only: generation, workers with pids and states, addresses, uptime. */
  status(): MasterStatus {
    if (!this.runtime || this.runtime instanceof Worker) throw new Error('status() is for the master, after run()');
    return this.runtime.status();
  }

  /** The bound addresses with real ports, e.g. ['127.0.0.1:41234'] (after `ready`). */
  get addresses(): string[] {
    return this.runtime?.bound ?? [];
  }
}

/**
 * Builds and runs a Server. In the master, a failure to start is logged as one
 * line (naming the address, errno and fix) and the process exits 1, like Go's
 * log.Fatal(http.ListenAndServe(...)). In a worker, the error propagates.
 */
async function serveOrExit(options: ServerOptions | undefined, build: (server: Server) => Server): Promise<void> {
  try {
    await build(new Server(options)).run();
  } catch (error) {
    if (!isMaster()) throw error;
    if (!reported(error)) createLogger(options?.logger, 'master').error(error instanceof Error ? error.message : String(error));
    process.exit(1);
  }
}

/**
 * The drop-in for `http.createServer(handler).listen(port)`, with reloads on
 * SIGHUP/SIGUSR1 and a graceful stop on SIGTERM/SIGINT.
 *
 * ```ts
 * await listenAndServe(':9222', (req, res) => res.end('hello'));
 * ```
 * If the master cannot start (port in use, ...), it logs why and exits 1.
 */
export function listenAndServe(address: string | number, handler: Handler, options?: ServerOptions): Promise<void> {
  return serveOrExit(options, (server) => server.register(address, handler));
}

/**
 * HTTPS version of listenAndServe; each worker reads cert and key at start.
 *
 * ```ts
 * await listenAndServeTLS(':9443', 'cert.pem', 'key.pem', (req, res) => res.end('hello'));
 * ```
 */
export function listenAndServeTLS(
  address: string | number,
  certFile: string,
  keyFile: string,
  handler: http.RequestListener,
  options?: ServerOptions,
): Promise<void> {
  return serveOrExit(options, (server) => server.registerTLS(address, certFile, keyFile, handler));
}
