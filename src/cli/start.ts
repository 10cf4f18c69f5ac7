// `handover start [options] <script> [args...]`: an unmodified program served
// with zero-downtime reloads. This process is the master (the library's
// Server with no registrations: its addresses come from what the workers'
// program listens on); each worker re-runs this same command line, and there
// src/run/ runs the program with its listen() calls routed to the master.
import * as fs from 'node:fs';
import * as path from 'node:path';
import { type Logger, createLogger } from '../log';
import type { ServerOptions } from '../options';
import { runProgram } from '../run/worker';
import { Server } from '../server';
import { type OptionSpec, type ParsedArgs, UsageError, parseArgs } from './args';
import { OPTION_FLAGS, optionFlagsUsage, optionsFromFlags } from './option-flags';

// The master's own modules load in start() (tsc turns these import()s into
// require()s): a worker runs this file at every reload and needs none of them.
const masterModules = () => Promise.all([
  import('../master/spawn-self'), import('../master/upgrade'), import('../master/registry'), import('../platform/pidfile'), import('./watch'), import('./launch'),
]);

/** Flags about how the masters are started, not what they serve (launch.ts acts on them). */
const LAUNCH_OPTIONS: OptionSpec[] = [
  { name: 'daemon', alias: 'd', value: 'none' },
  { name: 'env', value: 'required' },
  { name: 'only', value: 'required' },
  { name: 'log-size', value: 'required' },
  { name: 'log-files', value: 'required' },
];

const LAUNCH_USAGE = `  -d, --daemon           run in the background; returns once every app serves (exit 0, names and
                         pids) or one failed (exit 1, its error); output to rotated log files
                         in $XDG_STATE_HOME/handover/logs (default ~/.local/state/handover/logs)
  --log-size SIZE        with --daemon: rotate the log file at this size (default 10mb)
  --log-files N          with --daemon: files kept per app, the current one included (default 5)
  --env NAME             with a config file: lay each app's env_NAME over its env
  --only NAME[,NAME]     with a config file: start only these apps`;

export const START_OPTIONS: OptionSpec[] = [
  ...OPTION_FLAGS,
  { name: 'name', alias: 'n', value: 'required' },
  { name: 'user', value: 'required' },
  { name: 'group', value: 'required' },
  { name: 'env-file', value: 'required' },
  { name: 'watch', value: 'optional' },
  { name: 'wait-ready', value: 'none' },
  { name: 'no-migrate', value: 'none' },
  { name: 'json-logs', value: 'none' },
  { name: 'pid-file', value: 'required' },
  ...LAUNCH_OPTIONS,
  { name: 'help', alias: 'h', value: 'none' },
];

export const START_USAGE = `usage: handover start [options] [-- NODE_FLAGS...] <script> [args...]
       handover start [options] ecosystem.config.js | handover.config.{js,mjs,json}

Runs <script> (an unmodified server: Express, Fastify, Koa, http, net...) as a
master with workers. Every listen() in a worker gets the master's socket for
that address, so \`handover reload\` (or SIGHUP) swaps in new code without
dropping a connection. A worker is ready once its program's entry has finished
(top-level await included) having listened, and the event loop has turned
with no new listen(); if it had not listened by then, once it has listened and
made no further listen() call for 200 ms; with --wait-ready, when the program
calls require('handover').ready().

${optionFlagsUsage()}
  -n, --name NAME        the name for handover status|reload|stop NAME (default: the script's name)
  --env-file FILE        KEY=VALUE lines added to the workers' environment; read again at every reload
  --watch[=PATH,...]     reload when a file changes (default: the script's directory); for development
  --wait-ready           ready only when the program calls require('handover').ready()
  --no-migrate           on a reload, close keep-alive connections (Connection: close)
                         instead of moving them to the new generation
  --json-logs            the master's output as one JSON object per line
  --user USER            run workers as USER (the master must run as root)
  --group GROUP          with --user: the workers' group
  --pid-file FILE        write the master's pid here
${LAUNCH_USAGE}
  -- NODE_FLAGS          Node flags for the workers, e.g. -- --max-old-space-size=512 app.js

Signals to the master: SIGHUP/SIGUSR1 reload, SIGTERM/SIGINT stop gracefully (the
same signal again within 1 s is the same stop; a later one forces), SIGTTIN/SIGTTOU
add or remove a worker, SIGUSR2 upgrades the master in place (handover upgrade).`;

/** One JSON object per line on stderr, for --json-logs. */
function jsonLogger(): Logger {
  const line = (level: string) => (msg: string) => {
    if (!process.stderr.destroyed) process.stderr.write(`${JSON.stringify({ time: new Date().toISOString(), level, pid: process.pid, role: 'master', msg })}\n`);
  };
  return { info: line('info'), warn: line('warn'), error: line('error') };
}

function watchList(option: string | true | undefined, script: string): string[] | undefined {
  if (option === undefined) return undefined;
  if (option === true) return [path.dirname(path.resolve(script))];
  const paths = option.split(',').filter(Boolean);
  for (const p of paths) {
    if (!fs.existsSync(p)) throw new UsageError(`--watch: ${p} does not exist`);
  }
  return paths;
}

/** --no-migrate: the table's flags only turn a boolean on, and migrate is on by default. */
function withMigrate(options: ServerOptions, given: ParsedArgs['options']): ServerOptions {
  return given.has('no-migrate') ? { ...options, migrate: false } : options;
}

/**
 * In a worker: runs the program. Synchronously, outside any promise, so an
 * exception at its start-up is uncaught and printed exactly as under `node
 * script` (message, stack, file:line), which the master puts in the failed
 * reload's report. The master parsed this same command line, so it parses.
 */
export function startWorker(argv: string[]): void {
  const parsed = parseArgs('start', argv, START_OPTIONS, true);
  runProgram({ script: parsed.positionals[0], args: parsed.programArgs, waitReady: parsed.options.has('wait-ready'), server: withMigrate(optionsFromFlags(parsed.options), parsed.options) });
}

/** In the master (the process the user started): serves until stopped; resolves with the exit status. */
export async function start(parsed: ParsedArgs): Promise<number> {
  const [script] = parsed.positionals;
  if (!script) throw new UsageError(`name the program to run: handover start [options] <script> [args...]\n${START_USAGE}`);
  const o = parsed.options;
  const [{ configureSpawn }, { isProbe }, { liveMasters, register, unregister }, { removePidFile, writePidFile }, { watchPaths }, { prepareMaster }] = await masterModules();
  prepareMaster(parsed);
  const envFile = o.get('env-file');
  const jsonLogs = o.has('json-logs');
  configureSpawn({
    execArgv: parsed.nodeFlags,
    envFile: typeof envFile === 'string' ? path.resolve(envFile) : undefined,
    output: jsonLogs ? 'json' : 'text',
  });
  const options = withMigrate(optionsFromFlags(o), o);
  if (!fs.existsSync(script)) throw new UsageError(`cannot find ${script} (in ${process.cwd()}): handover start runs a Node program, e.g. handover start server.js`);
  if (typeof envFile === 'string' && !fs.existsSync(envFile)) throw new UsageError(`--env-file: ${envFile} does not exist`);
  const watch = watchList(o.get('watch'), script);
  const name = (o.get('name') as string | undefined) ?? path.basename(script).replace(/\.[cm]?[jt]s$/, '');
  const running = (await liveMasters()).find((e) => e.name === name);
  if (running && !isProbe()) { // a probe is the running master checking its own next image
    throw new UsageError(`a master named ${name} is already running (pid ${running.pid}, in ${running.cwd}); give this one another --name, or \`handover stop ${name}\` first`);
  }
  const user = o.get('user');
  const group = o.get('group');
  const pidOption = o.get('pid-file');
  const pidFile = typeof pidOption === 'string' ? path.resolve(pidOption) : undefined;
  const log = jsonLogs ? jsonLogger() : undefined;
  const server = new Server({
    ...options,
    logger: log,
    user: typeof user === 'string' ? user : undefined,
    group: typeof group === 'string' ? group : undefined,
    dynamicAddresses: true,
  } as ServerOptions);
  let stopWatching: (() => void) | undefined;
  server.once('ready', () => {
    // Written once ready, not at run(): this master's addresses are bound
    // only when its first worker asks, so a second start whose port is taken
    // fails after run() began and must not have replaced the running
    // master's pid file on its way (removing only its own is not enough).
    if (pidFile) writePidFile(pidFile);
    const status = server.status();
    register({
      name,
      pid: process.pid,
      cwd: process.cwd(),
      socket: status.controlSocket!, // open before 'ready'
      command: [script, ...parsed.programArgs].join(' '),
      started: Date.now() - status.uptimeMs,
    });
    if (watch) {
      stopWatching = watchPaths(watch, (file) => {
        createLogger(log, 'master').info(`--watch: ${path.relative(process.cwd(), file) || file} changed; reloading`);
        server.reload().catch(() => {}); // the master logs the outcome
      });
    }
  });
  try {
    await server.run();
    return 0;
  } catch {
    return 1; // the master has logged why
  } finally {
    stopWatching?.();
    unregister();
    if (pidFile) removePidFile(pidFile);
  }
}
