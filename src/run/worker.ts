// A worker of `handover start`: runs the unmodified program as `node script
// args` would, records its listen() calls, and once it is ready serves each
// recorded server on the master's socket for that address (through the
// library's Server, so drain, signals and readiness are the library's).
//
// Ready means one of:
// - the program's entry has finished (a CommonJS main returned, an ES
//   module's top-level await settled), every listen() it made is bound, and
//   the event loop has turned once more with no new listen() (a framework
//   that listens after a short async boot, e.g. fastify's `await
//   app.listen()` in an async main, is caught by that turn), and it had
//   listened by then: the common case, with no fixed wait;
// - otherwise (no listen() yet when the entry finished, or an entry still
//   running, e.g. an ES module awaiting its own listen() at top level, or one
//   whose end this worker cannot see: see entryStartsLater): it has listened
//   at least once and then made no listen() call for SETTLE_MS;
// - or it called `require('handover').ready()` after listening.
// With --wait-ready the worker also waits for ready() before it accepts
// anything, for a program that warms up after listen(): its listen callbacks
// then run after ready(), so ready() belongs in its start-up code, not in a
// listen callback.
import type { Cluster } from 'node:cluster';
import Module = require('node:module');
import * as fs from 'node:fs';
import * as path from 'node:path';
import { pathToFileURL } from 'node:url';
import { SPAWN_ERROR_ENV } from '../master/spawn-self';
import type { ServerOptions } from '../options';
import { rememberEntry } from '../master/version';
import { importEsm } from '../platform/import-esm';
import { Server } from '../server';
import { ListenInterceptor } from './intercept';
import { readyState } from './ready';
import { drainOnClose } from './shutdown';

// (the module is the cluster object itself; its types describe it as a default export)
const cluster = require('node:cluster') as Cluster;

/** Quiet time after the last listen() before the worker reports ready, when its entry did not settle having listened. */
export const SETTLE_MS = 200;

export interface ProgramOptions {
  script: string;
  args: string[];
  /** Ready only when the program calls ready(). */
  waitReady: boolean;
  /** For the worker's own Server: stopTimeout, logger... */
  server: ServerOptions;
}

function die(message: string): never {
  process.stderr.write(`handover: ${message}\n`);
  process.exit(1);
}

/** How long a worker waits for a listen() it can serve, or for ready(), before it says what it waits for. */
const READY_HINT_MS = 5_000;

/**
 * Resolves once the entry has finished, every listen() made so far is bound
 * and a turn of the event loop (setImmediate) has passed with no new
 * listen(); with whether the program had listened by then.
 */
async function entrySettled(interceptor: ListenInterceptor, entry: Promise<void>): Promise<boolean> {
  await entry;
  for (let seen = -1; seen !== interceptor.calls;) {
    seen = interceptor.calls;
    await interceptor.bound();
    await new Promise((resolve) => setImmediate(resolve));
  }
  return interceptor.count > 0;
}

/** Resolves once the program is ready (see the top of this file). */
async function programReady(interceptor: ListenInterceptor, entry: Promise<void>, readyCalled: Promise<void>): Promise<void> {
  const state = readyState();
  let warned = false;
  let settled: boolean | undefined; // entrySettled's answer, once it has one
  const entryDone = entrySettled(interceptor, entry).then((listened) => void (settled = listened));
  const hint = setTimeout(() => {
    if (interceptor.count > 0 || interceptor.passedThrough === 0) return;
    process.stderr.write('handover: the program has listened only on port 0 so far, which stays private to each worker process; ' +
      'listen on a fixed port (e.g. app.listen(3000)) or a Unix path for handover to serve it\n');
  }, READY_HINT_MS);
  try {
    for (;;) {
      if (interceptor.count > 0 && (settled || state.called)) return;
      if (interceptor.quiet) return;
      const waits: Promise<unknown>[] = [interceptor.nextListen()];
      if (settled === undefined) waits.push(entryDone);
      if (!state.called) waits.push(readyCalled);
      else if (!warned) {
        warned = true;
        process.stderr.write('handover: ready() was called before the program listened on any port or Unix path; waiting for its listen()\n');
      }
      if (interceptor.count > 0) waits.push(interceptor.quietEnds());
      await Promise.race(waits);
    }
  } finally {
    clearTimeout(hint);
  }
}

function awaitReadyCall(readyCalled: Promise<void>): Promise<void> {
  const hint = setTimeout(() => {
    process.stderr.write('handover: --wait-ready: still waiting for require(\'handover\').ready(); listen callbacks run only after it, so call it from start-up code\n');
  }, READY_HINT_MS);
  return readyCalled.finally(() => clearTimeout(hint));
}

/**
 * A program that forks its own `cluster` would run workers of its own inside
 * each of ours, which the master neither sees nor drains: every reload would
 * cut their connections while reporting success. So it is refused when it
 * tries, at start-up, with the fix.
 */
function refuseOwnCluster(script: string): void {
  cluster.fork = () => die(
    `${script} forks its own cluster (cluster.fork()); under handover start each worker process already runs your program, ` +
      'and workers it forks itself would be cut at every reload. Remove the cluster code (run only what a cluster worker runs: ' +
      'its listen()) and set the number of processes with `handover start --workers N`',
  );
  Module.syncBuiltinESMExports(); // `import { fork } from 'node:cluster'` sees it too
}

/**
 * Where Node's ES module loader keeps `script` when it is the entry: the URL
 * of its file as `node script` resolves it (the real path, unless
 * --preserve-symlinks-main). Another URL would evaluate the program twice.
 */
function entryUrl(script: string): string {
  const found = (Module as unknown as { _findPath(request: string, paths: null, isMain: boolean): string | false })._findPath(script, null, true) || script;
  return pathToFileURL(nodeFlags().some((f) => f === '--preserve-symlinks-main') ? found : fs.realpathSync(found)).href;
}

/** This process's Node flags: its command line's and NODE_OPTIONS'. */
function nodeFlags(): string[] {
  return [...process.execArgv, ...(process.env.NODE_OPTIONS ?? '').split(/\s+/)];
}

/**
 * Whether Node's flags load something before the entry (--import, --loader):
 * the ES module loader then starts the entry only some turns after runMain,
 * so an import() of ours could reach it first, and Node would take the module
 * for one imported by us (require.main would not be a CommonJS entry). Such a
 * worker does without the entry's end and is ready by the quiet window.
 */
function entryStartsLater(): boolean {
  return nodeFlags().some((f) => /^--(import|(experimental-)?loader)(=|$)/.test(f));
}

/**
 * Runs the program in this worker process and serves what it listens on.
 * The program is loaded as `node script` loads it (Module.runMain), so an
 * exception or SyntaxError at start-up is printed and exits 1 exactly as it
 * would there (and the master shows it in the failed reload's report).
 */
export function runProgram(options: ProgramOptions): void {
  const spawnError = process.env[SPAWN_ERROR_ENV];
  delete process.env[SPAWN_ERROR_ENV];
  if (spawnError) die(spawnError);
  refuseOwnCluster(options.script);
  const interceptor = new ListenInterceptor(SETTLE_MS);
  interceptor.install();
  const script = path.resolve(options.script);
  process.argv = [process.argv[0], script, ...options.args];
  process.once('beforeExit', () => {
    if (interceptor.count === 0) die(`${options.script} finished without listening on a TCP port or Unix path; nothing to serve`);
  });
  // As `node script`: require.main is the program's module, ESM or CommonJS.
  const before = process.mainModule;
  rememberEntry(script); // its version, as it is on disk when it starts (master/version.ts)
  (Module as unknown as { runMain(main?: string): void }).runMain(script);
  // A CommonJS main has run by now. An ES module is still loading there (its
  // module job already made): importing the same URL waits for that same
  // evaluation, top-level await included. If it throws, Node reports it as
  // for `node script` and exits; a top-level await that never settles leaves
  // readiness to the quiet window.
  const never = new Promise<void>(() => {});
  const ranAsCommonJS = process.mainModule !== undefined && process.mainModule !== before && process.mainModule.loaded;
  const entry = ranAsCommonJS ? Promise.resolve() : entryStartsLater() ? never : importEsm(entryUrl(script)).then(() => {}, () => never);
  const state = readyState();
  const readyCalled = new Promise<void>((resolve) => (state.called ? resolve() : (state.onReady = resolve)));
  void (async () => {
    await programReady(interceptor, entry, readyCalled);
    const captures = await interceptor.close();
    for (const { server: app } of captures) drainOnClose(app);
    // --wait-ready: the library's ready hook, so no connection reaches this
    // worker (and its listen callbacks do not run) before ready().
    const server = new Server({ ...options.server, ready: options.waitReady ? () => awaitReadyCall(readyCalled) : undefined });
    for (const { address, server: app } of captures) server.register(address, app);
    await server.run();
  })().catch((error: unknown) => die(error instanceof Error ? error.message : String(error)));
}
