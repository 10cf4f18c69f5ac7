// Running apps as masters of their own: `handover start --daemon` detaches
// each one (its output to a rotated log file, see log-file.ts) and returns
// once every one serves or one has failed; a config file with several apps
// in the foreground runs each as a child and passes stop and reload signals
// on. A detached master learns where to log from LOG_FILE_ENV.
import { type ChildProcess, spawn } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { liveMasters } from '../master/registry';
import type { AppPlan } from './config';
import { logFileOf } from './log-file';

/** Set in a detached master: its log file. Read once and removed, so its workers do not see it. */
export const LOG_FILE_ENV = 'HANDOVER_LOG_FILE';

/** How long `--daemon` waits for every app to serve: longer than any start timeout one would set. */
const DAEMON_WAIT_MS = 10 * 60_000;

/** Lines of a failed app's log shown with the failure. */
const FAILURE_LINES = 30;

const CLI = path.join(__dirname, 'cli.js');

function spawnMaster(app: AppPlan, stdio: 'inherit' | ['ignore', 'ignore', number], extraEnv: Record<string, string>): ChildProcess {
  return spawn(process.execPath, [CLI, 'start', ...app.argv], {
    cwd: app.cwd,
    env: { ...process.env, ...app.env, ...extraEnv },
    stdio,
    detached: stdio !== 'inherit',
  });
}

/** The lines a log file gained since `offset`, the last `count` of them. */
function tailSince(file: string, offset: number, count: number): string {
  try {
    const lines = fs.readFileSync(file).subarray(offset).toString('utf8').trimEnd().split('\n');
    return lines.slice(-count).join('\n');
  } catch {
    return '';
  }
}

interface Outcome {
  app: AppPlan;
  pid?: number;
  error?: string;
  log: string;
}

/** Starts one detached master; resolves once it is registered (serving) or has exited. */
async function detach(app: AppPlan): Promise<Outcome> {
  const log = logFileOf(app.name);
  const fd = fs.openSync(log, 'a', 0o600);
  const offset = fs.fstatSync(fd).size;
  const child = spawnMaster(app, ['ignore', 'ignore', fd], { [LOG_FILE_ENV]: log });
  fs.closeSync(fd);
  let exited: { code: number | null; signal: NodeJS.Signals | null } | undefined;
  child.once('exit', (code, signal) => (exited = { code, signal }));
  const failure = await new Promise<string | undefined>((resolve) => {
    child.once('error', (error) => resolve(`cannot start a master: ${error.message}`));
    const deadline = Date.now() + DAEMON_WAIT_MS;
    const poll = async () => {
      if (exited) return resolve(`the master exited (${exited.signal ?? `code ${exited.code}`}) before serving`);
      if ((await liveMasters()).some((e) => e.pid === child.pid)) return resolve(undefined);
      if (Date.now() > deadline) return resolve(`not serving after ${DAEMON_WAIT_MS / 1000} s; it keeps trying (handover logs ${app.name})`);
      setTimeout(() => void poll(), 100);
    };
    void poll();
  });
  child.unref();
  if (failure === undefined) return { app, pid: child.pid, log };
  const tail = tailSince(log, offset, FAILURE_LINES);
  return { app, pid: child.pid, log, error: `${failure}${tail ? `; its output:\n${tail}` : ''}` };
}

/**
 * `handover start --daemon`: every app detached at once; exit 0 once all
 * serve (names and pids printed), 1 if one failed (its error printed; the
 * ones that serve keep serving).
 */
export async function startDetached(apps: AppPlan[]): Promise<number> {
  const outcomes = await Promise.all(apps.map(detach));
  for (const o of outcomes) {
    if (o.error) process.stderr.write(`handover: ${o.app.name} failed: ${o.error}\n`);
    else process.stdout.write(`${o.app.name}: serving, master pid ${o.pid} (logs: handover logs ${o.app.name}; file ${o.log})\n`);
  }
  return outcomes.some((o) => o.error) ? 1 : 0;
}

/**
 * Several apps in the foreground: a master child each, sharing this
 * terminal; stop and reload signals go to every one. Resolves with the worst
 * exit status once all have exited.
 */
export function runForeground(apps: AppPlan[]): Promise<number> {
  const children = apps.map((app) => spawnMaster(app, 'inherit', {}));
  const forward = (signal: NodeJS.Signals) => () => {
    for (const child of children) if (child.exitCode === null) child.kill(signal);
  };
  const signals: NodeJS.Signals[] = ['SIGINT', 'SIGTERM', 'SIGHUP', 'SIGUSR1'];
  const handlers = signals.map((s) => [s, forward(s)] as const);
  for (const [s, h] of handlers) process.on(s, h);
  return Promise.all(children.map((child) => new Promise<number>((resolve) => {
    child.once('error', () => resolve(1));
    child.once('exit', (code) => resolve(code ?? 1));
  }))).then((codes) => {
    for (const [s, h] of handlers) process.off(s, h);
    return Math.max(...codes);
  });
}
