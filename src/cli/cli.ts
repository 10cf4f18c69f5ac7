#!/usr/bin/env node
// `handover status|reload|stop`: talks to a running master over its control
// socket (same uid only: the master checks the peer's credentials).
import * as fs from 'node:fs';
import * as net from 'node:net';
import * as os from 'node:os';
import * as path from 'node:path';
import { FrameDecoder, type MasterStatus, type Message, encode } from '../protocol';

const USAGE = `usage: handover <status|reload|stop> (--pid PID | --socket PATH) [--control-dir DIR]

  status   print the master's generation, workers, addresses and uptime
  reload   start a reload and wait for its outcome (exit 0: new generation
           serving; exit 1: rolled back, the old generation keeps serving)
  stop     drain and stop gracefully; waits until the master has stopped

  --pid PID          the master's pid (finds <control-dir>/handover-PID-*/control.sock)
  --socket PATH      the control socket path
  --control-dir DIR  where the master made its control directory (default ${os.tmpdir()})`;

function fail(message: string): never {
  process.stderr.write(`handover: ${message}\n`);
  process.exit(2);
}

function findSocket(args: Map<string, string>): string {
  const socket = args.get('--socket');
  if (socket) return socket;
  const pid = args.get('--pid');
  if (!pid || !/^\d+$/.test(pid)) fail(`give --pid PID or --socket PATH\n${USAGE}`);
  const dir = args.get('--control-dir') ?? os.tmpdir();
  const match = fs.readdirSync(dir).find((name) => name.startsWith(`handover-${pid}-`));
  if (!match) fail(`no control socket for master pid ${pid} in ${dir} (is it running, as this user? --control-dir?)`);
  return path.join(dir, match, 'control.sock');
}

function formatDuration(ms: number): string {
  const s = Math.floor(ms / 1000);
  const parts = [[Math.floor(s / 86400), 'd'], [Math.floor(s / 3600) % 24, 'h'], [Math.floor(s / 60) % 60, 'm'], [s % 60, 's']];
  const shown = parts.filter(([n], i) => n !== 0 || i === parts.length - 1);
  return shown.map(([n, u]) => `${n}${u}`).join(' ');
}

function printStatus(status: MasterStatus): void {
  const lines = [
    `master pid ${status.pid}, generation ${status.generation}${status.reloading ? ' (reloading)' : ''}, up ${formatDuration(status.uptimeMs)}`,
    `listening on ${status.addresses.join(', ')}`,
    ...status.workers.map((w) =>
      `  worker pid ${w.pid}  slot ${w.slot}  generation ${w.generation}  ${w.state}  ${w.connections ?? '?'} open connection(s)`),
  ];
  process.stdout.write(`${lines.join('\n')}\n`);
}

/** Sends one request and resolves with the first answer (or EOF for stop). */
function ask(socketPath: string, request: Message): Promise<Message | undefined> {
  return new Promise((resolve, reject) => {
    const socket = net.connect(socketPath);
    const decoder = new FrameDecoder();
    socket.on('connect', () => socket.write(encode(request)));
    socket.on('data', (chunk) => {
      const [answer] = decoder.push(chunk);
      if (answer) {
        socket.end();
        resolve(answer);
      }
    });
    socket.on('error', reject);
    socket.on('close', () => resolve(undefined));
  });
}

async function main(argv: string[]): Promise<number> {
  const [command, ...rest] = argv;
  if (!command || command === '--help' || command === '-h') {
    process.stdout.write(`${USAGE}\n`);
    return command ? 0 : 2;
  }
  const args = new Map<string, string>();
  for (let i = 0; i < rest.length; i += 2) args.set(rest[i], rest[i + 1]);
  const socketPath = findSocket(args);
  let answer: Message | undefined;
  try {
    if (command === 'status') answer = await ask(socketPath, { type: 'status' });
    else if (command === 'reload') answer = await ask(socketPath, { type: 'reload', id: 1 });
    else if (command === 'stop') answer = await ask(socketPath, { type: 'stop' });
    else fail(`unknown command ${command}\n${USAGE}`);
  } catch (error) {
    fail(`cannot reach the master at ${socketPath}: ${(error as Error).message}`);
  }
  if (command === 'stop') {
    process.stdout.write('stopped\n');
    return 0;
  }
  if (answer?.type === 'status-result') {
    printStatus(answer.status);
    return 0;
  }
  if (answer?.type === 'reload-result') {
    process.stdout.write(answer.ok ? 'reloaded\n' : `reload failed: ${answer.message}\n`);
    return answer.ok ? 0 : 1;
  }
  fail('the master closed the connection without an answer');
}

main(process.argv.slice(2)).then((code) => process.exit(code));
