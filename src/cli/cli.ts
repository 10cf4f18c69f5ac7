#!/usr/bin/env node
// The `handover` command: `start` runs an unmodified program as a master with
// workers (and, in each worker it spawns, the program itself); `list`,
// `status`, `reload` and `stop` talk to running masters, found by name.
import * as fs from 'node:fs';
import * as path from 'node:path';
import { type OptionSpec, UsageError, closest, parseArgs } from './args';
import { isWorker } from '../server';
import { START_OPTIONS, START_USAGE, startWorker } from './start';

// Each command's module is loaded when it runs (tsc turns these import()s
// into require()s): a worker of `handover start` runs this file too, at every
// reload, and needs none of them.
const admin = () => import('./admin');
const appCommands = () => import('./app-commands');

const USAGE = `usage: handover <command> [options]

  start [options] <script> [args...]   run a program with zero-downtime reloads (handover start --help)
  start [options] CONFIG               every app of ecosystem.config.js or handover.config.{js,mjs,json}
                                       (--env NAME, --only NAME,NAME; -d: in the background)
  list [--json]                        the masters this user runs
  status [NAME] [--json]               generation, workers (pid, state, uptime, memory, connections,
                                       restarts), addresses and the last reload
  reload [NAME]                        start a reload and wait for its outcome (exit 0: the new
                                       generation serves; exit 1: it failed, the old one keeps
                                       serving, and why is printed)
  rollback [NAME]                      put back the generation the last reload replaced (kept
                                       alive by the keepPrevious option), starting no process
  scale [NAME] N                       run N workers: new ones start one at a time, each ready
                                       before the next; removed ones drain (SIGTTIN/SIGTTOU: one)
  restart [NAME]                       the same as reload (no downtime), as pm2 users type it
  stop [NAME] [--if-running]           drain and stop; returns once the master has stopped (a NAME
                                       that is not running: exit 0 with a note; --if-running: silently)
  logs [NAME] [--lines N] [--follow] [--json]
                                       the master's and its workers' last output lines (default
                                       100), then with --follow the new ones; every master without NAME
  monit [NAME]                         live view every second: each worker's pid, slot, generation,
                                       state, CPU, RSS, req/s, connections, event-loop delay, restarts
  startup [NAME|CONFIG] [--install]    a systemd unit per app (with --install: written and enabled)
  upgrade [NAME] [--node PATH]         exec a fresh master image (the program on disk, under Node
                                       PATH) in the same pid, keeping the sockets; waits until its
                                       workers serve (exit 0), or says why it could not (exit 1;
                                       the old image keeps serving)

NAME can also be a config file for reload, restart and stop: each of its apps.

NAME is what \`handover start --name\` gave (default: the script's name). Without
NAME: the only master this user runs, or the one started in this directory.
A master started from code (listenAndServe, new Server) is not registered:
  -p, --pid PID          find it by its pid (its control directory is in --control-dir)
  -s, --socket PATH      its control socket
  --control-dir DIR      where it made its control directory (default: the temp dir)

  -h, --help             this text        -v, --version   the version`;

const TARGET_OPTIONS: OptionSpec[] = [
  { name: 'pid', alias: 'p', value: 'required' },
  { name: 'socket', alias: 's', value: 'required' },
  { name: 'control-dir', value: 'required' },
  { name: 'help', alias: 'h', value: 'none' },
];
const JSON_OPTION: OptionSpec = { name: 'json', value: 'none' };

const COMMANDS = ['start', 'list', 'status', 'reload', 'restart', 'rollback', 'scale', 'stop', 'logs', 'monit', 'startup', 'upgrade'];

/** Each command's own options beside TARGET_OPTIONS. */
const COMMAND_OPTIONS: Record<string, OptionSpec[]> = {
  upgrade: [{ name: 'node', value: 'required' }],
  status: [JSON_OPTION],
  logs: [{ name: 'lines', alias: 'n', value: 'required' }, { name: 'follow', alias: 'f', value: 'none' }, JSON_OPTION],
  startup: [{ name: 'install', value: 'none' }, { name: 'env', value: 'required' }, { name: 'only', value: 'required' }],
  reload: [{ name: 'only', value: 'required' }],
  restart: [{ name: 'only', value: 'required' }],
  stop: [{ name: 'only', value: 'required' }, { name: 'if-running', value: 'none' }],
};

function version(): string {
  const pkg = JSON.parse(fs.readFileSync(path.join(__dirname, '..', '..', 'package.json'), 'utf8')) as { version: string };
  return pkg.version;
}

async function main(argv: string[]): Promise<number> {
  const [command, ...rest] = argv;
  if (command === undefined) {
    process.stderr.write(`${USAGE}\n`);
    return 2;
  }
  if (command === '--help' || command === '-h' || command === 'help') {
    process.stdout.write(`${USAGE}\n`);
    return 0;
  }
  if (command === '--version' || command === '-v' || command === 'version') {
    process.stdout.write(`${version()}\n`);
    return 0;
  }
  if (!COMMANDS.includes(command)) {
    const guess = closest(command, COMMANDS);
    const what = command.startsWith('-') ? `${command} is not a command` : `unknown command ${command}`;
    throw new UsageError(`${what}${guess ? `; did you mean \`handover ${guess}\`?` : ''}; commands: ${COMMANDS.join(', ')} (handover --help)`);
  }
  if (command === 'start') {
    const parsed = parseArgs(command, rest, START_OPTIONS, true);
    if (parsed.options.has('help')) {
      process.stdout.write(`${START_USAGE}\n`);
      return 0;
    }
    return (await import('./apps')).startCommand(rest, parsed);
  }
  const specs = command === 'list' ? [JSON_OPTION, TARGET_OPTIONS[3]] : [...TARGET_OPTIONS, ...(COMMAND_OPTIONS[command] ?? [])];
  const parsed = parseArgs(command, rest, specs);
  if (parsed.options.has('help')) {
    process.stdout.write(`${USAGE}\n`);
    return 0;
  }
  if (command === 'list') {
    if (parsed.positionals.length > 0) throw new UsageError(`handover list takes no NAME (got ${parsed.positionals[0]}); handover status NAME describes one`);
    return (await admin()).list(parsed.options);
  }
  if (command === 'scale') {
    const count = parsed.positionals.at(-1);
    if (parsed.positionals.length > 2 || !count || !/^[1-9]\d*$/.test(count)) {
      throw new UsageError(`handover scale takes [NAME] and a number of workers >= 1 (got ${parsed.positionals.join(' ') || 'nothing'})`);
    }
    return (await admin()).scale(parsed.positionals.length === 2 ? parsed.positionals[0] : undefined, Number(count), parsed.options);
  }
  if (parsed.positionals.length > 1) throw new UsageError(`handover ${command} takes one NAME (got ${parsed.positionals.join(' ')})`);
  const name = parsed.positionals[0];
  if (command === 'status') return (await admin()).status(name, parsed.options);
  if (command === 'reload' || command === 'restart') return (await appCommands()).reloadCommand(name, parsed.options, command);
  if (command === 'rollback') return (await admin()).rollback(name, parsed.options);
  if (command === 'upgrade') return (await import('./upgrade')).upgrade(name, parsed.options);
  if (command === 'logs') return (await import('./logs')).logs(name, parsed.options);
  if (command === 'monit') return (await import('./monit')).monit(name, parsed.options);
  if (command === 'startup') return (await import('./startup')).startup(parsed);
  return (await appCommands()).stopCommand(name, parsed.options);
}

const argv = process.argv.slice(2);
if (argv[0] === 'start' && isWorker()) startWorker(argv.slice(1));
else main(argv).then(
  (code) => process.exit(code),
  async (error: unknown) => {
    if (error instanceof UsageError || error instanceof (await admin()).ReachError) {
      process.stderr.write(`handover: ${error.message}\n`);
      process.exit(2);
    }
    // Our own errors say what to do; a stack only helps with a bug in handover itself.
    const known = error instanceof Error && !(error instanceof TypeError && !('code' in error)) && !(error instanceof ReferenceError);
    process.stderr.write(`handover: ${known ? (error as Error).message : error instanceof Error ? error.stack : String(error)}\n`);
    process.exit(1);
  },
);
