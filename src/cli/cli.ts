#!/usr/bin/env node
// The `handover` command: `start` runs an unmodified program as a master with
// workers (and, in each worker it spawns, the program itself); `list`,
// `status`, `reload` and `stop` talk to running masters, found by name.
import * as fs from 'node:fs';
import * as path from 'node:path';
import { ReachError, list, reload, rollback, scale, status, stop } from './admin';
import { type OptionSpec, UsageError, closest, parseArgs } from './args';
import { isWorker } from '../server';
import { START_OPTIONS, START_USAGE, start, startWorker } from './start';
import { upgrade } from './upgrade';

const USAGE = `usage: handover <command> [options]

  start [options] <script> [args...]   run a program with zero-downtime reloads (handover start --help)
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
  stop [NAME]                          drain and stop; returns once the master has stopped
  upgrade [NAME] [--node PATH]         exec a fresh master image (the program on disk, under Node
                                       PATH) in the same pid, keeping the sockets; waits until its
                                       workers serve (exit 0), or says why it could not (exit 1;
                                       the old image keeps serving)

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

const COMMANDS = ['start', 'list', 'status', 'reload', 'rollback', 'scale', 'stop', 'upgrade'];

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
    return start(parsed);
  }
  const specs = command === 'list' ? [JSON_OPTION, TARGET_OPTIONS[3]]
    : command === 'status' ? [...TARGET_OPTIONS, JSON_OPTION]
    : command === 'upgrade' ? [...TARGET_OPTIONS, { name: 'node', value: 'required' } as OptionSpec]
    : TARGET_OPTIONS;
  const parsed = parseArgs(command, rest, specs);
  if (parsed.options.has('help')) {
    process.stdout.write(`${USAGE}\n`);
    return 0;
  }
  if (command === 'list') {
    if (parsed.positionals.length > 0) throw new UsageError(`handover list takes no NAME (got ${parsed.positionals[0]}); handover status NAME describes one`);
    return list(parsed.options);
  }
  if (command === 'scale') {
    const count = parsed.positionals.at(-1);
    if (parsed.positionals.length > 2 || !count || !/^[1-9]\d*$/.test(count)) {
      throw new UsageError(`handover scale takes [NAME] and a number of workers >= 1 (got ${parsed.positionals.join(' ') || 'nothing'})`);
    }
    return scale(parsed.positionals.length === 2 ? parsed.positionals[0] : undefined, Number(count), parsed.options);
  }
  if (parsed.positionals.length > 1) throw new UsageError(`handover ${command} takes one NAME (got ${parsed.positionals.join(' ')})`);
  const name = parsed.positionals[0];
  if (command === 'status') return status(name, parsed.options);
  if (command === 'reload') return reload(name, parsed.options);
  if (command === 'rollback') return rollback(name, parsed.options);
  if (command === 'upgrade') return upgrade(name, parsed.options);
  return stop(name, parsed.options);
}

const argv = process.argv.slice(2);
if (argv[0] === 'start' && isWorker()) startWorker(argv.slice(1));
else main(argv).then(
  (code) => process.exit(code),
  (error: unknown) => {
    if (error instanceof UsageError || error instanceof ReachError) {
      process.stderr.write(`handover: ${error.message}\n`);
      process.exit(2);
    }
    // Our own errors say what to do; a stack only helps with a bug in handover itself.
    const known = error instanceof Error && !(error instanceof TypeError && !('code' in error)) && !(error instanceof ReferenceError);
    process.stderr.write(`handover: ${known ? (error as Error).message : error instanceof Error ? error.stack : String(error)}\n`);
    process.exit(1);
  },
);
