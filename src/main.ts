// The package's entry at run time (package.json "main"; the types are
// index.ts's, which this file re-exports). In a worker that a library-API
// master spawned, it loads the API from dist/bundle/index.js instead: all of
// index.ts's modules in one file (scripts/bundle.js), compiled with a V8 code
// cache. Every reload boots new workers, and in each of them loading ~30
// modules one by one was most of the CPU a reload costs beyond Node cluster's
// (issue 24; bench/RESULTS.md, sections "cost-where" and "cost-boot"). Everywhere
// else (the master, single mode, `handover start`, whose workers have loaded
// handover before the program's own require('handover')) it loads the
// modules as they are, so each process holds one copy of them.
//
// The code cache is written next to the bundle by the first worker that
// finds none (or one V8 rejects: another Node version or flags), if that
// directory is writable; it is named by the bundle's size and mtime and the
// Node version, as V8 itself checks only the source's length. Without it
// (a read-only install) the bundle loads as plain JavaScript.
import * as fs from 'node:fs';
import * as path from 'node:path';
import * as vm from 'node:vm';

/**
 * CommonJS's Module class, as every module's `module` is one: node:module
 * (the same class) would also load the ES module loader and the source-map
 * support in every worker.
 */
const Module = module.constructor as typeof import('node:module');

type Api = typeof import('./index');

/** When a worker writes the cache: after its start-up, so the functions it ran are in it too. */
const CACHE_AFTER_MS = 1_000;

const BUNDLE = path.join(__dirname, 'bundle', 'index.js');

/**
 * Two of the variables that make a process a worker (protocol.ts: ENV.socket
 * and ENV.token), by name here rather than imported, as this file is all a
 * worker loads besides the bundle: a module of their own cost 0.4 ms of
 * every worker's boot. test/worker-footprint.test.ts sets them from ENV and checks
 * that a worker loads the bundle, so a rename there fails it.
 */
const WORKER_VARIABLES = ['HANDOVER_CONTROL_SOCKET', 'HANDOVER_TOKEN'];

/**
 * The master's variables are still in process.env: no copy of handover's
 * modules has loaded in this process yet (worker/spawned.ts takes them out
 * as it loads, as `handover start`'s worker does before the program runs).
 */
function inWorkerOfApiMaster(): boolean {
  return WORKER_VARIABLES.every((name) => process.env[name] !== undefined);
}

function cacheFile(stat: fs.Stats): string {
  return `${BUNDLE}.${stat.size}-${Math.floor(stat.mtimeMs)}-${process.version}-${process.arch}.cache`;
}

function writeCache(script: vm.Script, file: string): void {
  const tmp = `${file}.${process.pid}.tmp`;
  try {
    fs.writeFileSync(tmp, script.createCachedData(), { mode: 0o644 });
    fs.renameSync(tmp, file);
  } catch {
    fs.rmSync(tmp, { force: true }); // a read-only install: the bundle loads without a cache
  }
}

function loadBundle(): Api | undefined {
  // Without it (Node before 20.12) the bundle's import() of an ES module handler could not load
  const mainContextLoader = (vm.constants as Partial<typeof vm.constants> | undefined)?.USE_MAIN_CONTEXT_DEFAULT_LOADER;
  if (mainContextLoader === undefined) return undefined;
  let source: string;
  let stat: fs.Stats;
  let fd: number;
  try {
    fd = fs.openSync(BUNDLE, 'r');
  } catch {
    return undefined; // built without the bundle (tsc alone)
  }
  try {
    // one open file for both, so the cache's name always describes the source read (a rebuild makes a new file)
    stat = fs.fstatSync(fd);
    source = fs.readFileSync(fd, 'utf8');
  } finally {
    fs.closeSync(fd);
  }
  const cache = cacheFile(stat);
  let cachedData: Buffer | undefined;
  try {
    cachedData = fs.readFileSync(cache);
  } catch {
    // none yet
  }
  // The bundle is a function expression already (scripts/bundle.js): compiled as it is, one copy of the source.
  const script = new vm.Script(source, {
    filename: BUNDLE,
    cachedData,
    importModuleDynamically: mainContextLoader,
  });
  // A module in require.cache as Node's own loader would make it (and take out again if it throws).
  const bundle = new Module(BUNDLE, module);
  bundle.filename = BUNDLE;
  require.cache[BUNDLE] = bundle;
  try {
    (script.runInThisContext() as (...args: unknown[]) => void)
      .call(bundle.exports, bundle.exports, Module.createRequire(BUNDLE), bundle, BUNDLE, path.dirname(BUNDLE));
  } catch (error) {
    delete require.cache[BUNDLE];
    throw error;
  }
  bundle.loaded = true;
  if (cachedData === undefined || script.cachedDataRejected) {
    setTimeout(() => writeCache(script, cache), CACHE_AFTER_MS).unref();
    // Again at its exit, with the functions its drain ran: every worker drains once, at a reload.
    process.once('exit', () => writeCache(script, cache));
  }
  return bundle.exports as Api;
}

const bundled = inWorkerOfApiMaster() ? loadBundle() : undefined;
// In this form, so that Node finds the names for `import { Server } from 'handover'` (cjs-module-lexer follows the re-export).
if (bundled) module.exports = bundled;
else module.exports = require('./index');
